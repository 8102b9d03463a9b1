"""``scanner resume NAME``, and the bookkeeping that keeps MLflow and Optuna truthful after any ending.

After a SIGKILL, Tune restores from its last snapshot, which may predate the newest trials: MLflow and Optuna can
hold trials Tune never heard of. Child runs are found by ``scan.trial_id`` (one run per trial), runs of trials
Tune does not know are ended KILLED, Optuna's leftover RUNNING trials are failed, and the writer's journal keeps
each ``(run, metric, step)`` to one value.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from scanner._callbacks import TrialState
from scanner._tune_adapter import EPOCH_MARK, FAILURE_KEY
from scanner.tracking import PARENT_KEY
from trainables.errors import BadInput


def resume_sweep(name: str, tracking_uri: str | None = None, quiet: bool = False) -> int:
    from scanner.sweep import Sweep, execute, scans_root
    from search_spaces import load_space

    folder = scans_root() / name
    scan_json = folder / "scan.json"
    if not scan_json.exists():
        known = sorted(p.parent.name for p in scans_root().glob("*/scan.json")) if scans_root().exists() else []
        raise BadInput(f"{scan_json} does not exist: no sweep '{name}' here to resume; known: {', '.join(known) or 'none'}")
    info = json.loads(scan_json.read_text())
    if not (folder / "ray" / "tune" / "tuner.pkl").exists():
        raise BadInput(f"{folder}: Tune never saved its state (killed at start); remove the folder and run it again")
    space = load_space(folder / "space.yaml")
    uri = info["tracking_uri"]
    if tracking_uri and tracking_uri != uri and not quiet:
        print(f"scanner resume: using the sweep's own tracking URI {uri}", file=sys.stderr)
    from scanner.tracking import check_reachable

    check_reachable(uri)
    address = None if info.get("ray_address") in (None, "local") else info["ray_address"]
    sweep = Sweep(space, folder, uri, address, dict(info.get("init_map") or {}))
    return execute(sweep, restore=True, quiet=quiet)


def end_unfinished(callback, writer, interrupted: bool) -> None:
    """Ctrl-C (KILLED, "interrupted") or a driver error (FAILED): no run is left RUNNING; Tune's snapshot stays
    for ``scanner resume``."""
    why, status = ("interrupted by the user", "KILLED") if interrupted else ("the sweep's driver failed", "FAILED")
    for state in callback.trials.values():
        if state.status == "running":
            writer.set_tags(state.trial_id, {"scan.status": "failed", "scan.failure": why})
            writer.end_run(state.trial_id, status)
    writer.set_tags(PARENT_KEY, {"scan.status": "interrupted" if interrupted else "failed"})
    writer.end_run(PARENT_KEY, status)


def settle_from_grid(callback, grid) -> dict[str, TrialState]:
    """Every trial of the sweep, including those finished before a resume (the callback never saw them)."""
    max_epochs = callback.info.space.budget.max_epochs
    objective = callback.objective
    for result in grid:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id")
        if not trial_id or trial_id in callback.trials and callback.trials[trial_id].status != "running":
            continue
        state = callback.trials.get(trial_id) or _state_from_result(callback, trial_id, result)
        state.epochs = max(state.epochs, int(metrics.get("epoch", 0) or 0))
        best = metrics.get(f"best/{objective}")
        if best is not None and state.best_value is None:
            state.best_value, state.best_epoch = float(best), int(metrics.get("best/epoch", state.epochs) or 0)
        state.best_checkpoint = state.best_checkpoint or _best_checkpoint(result)
        if state.best_checkpoint:
            callback.writer.set_tags(trial_id, {"scan.checkpoint": state.best_checkpoint})
        if result.error is not None or FAILURE_KEY in metrics:
            state.failure = state.failure or str(metrics.get(FAILURE_KEY) or result.error)[-4000:]
            callback._finish(state, "failed")
        else:
            callback._finish(state, "completed" if state.epochs >= max_epochs else "stopped_early")
    return dict(callback.trials)


def _state_from_result(callback, trial_id: str, result) -> TrialState:
    class _Trial:  # the attributes the callback reads from a Tune Trial
        def __init__(self, trial_id, config, experiment_tag):
            self.trial_id, self.config, self.experiment_tag = trial_id, config, experiment_tag

    folder = Path(str(result.path)).name  # run_trial_<id>_<counter>_<params>_<date>
    tag = folder.split(f"_{trial_id}_", 1)[-1] if f"_{trial_id}_" in folder else ""
    return callback._adopt(_Trial(trial_id, dict(result.config or {}), tag))


def _best_checkpoint(result) -> str | None:
    """The kept checkpoint marked best with the highest epoch (best + latest are kept)."""
    found = []
    for checkpoint, _ in result.best_checkpoints or []:
        try:
            mark = json.loads((Path(checkpoint.path) / EPOCH_MARK).read_text())
        except (OSError, ValueError):
            continue
        if mark.get("is_best"):
            found.append((mark["epoch"], checkpoint.path))
    return str(max(found)[1]) if found else None


def close_leftovers(sweep, writer, known_trial_ids: set[str]) -> None:
    """Runs and Optuna trials of trials that Tune's snapshot never saw (driver killed): KILLED / FAIL."""
    from scanner.tracking import find_runs_by_tag

    try:
        runs = find_runs_by_tag(writer.client, _experiment_id(writer, sweep), {"scan.name": sweep.space.name})
    except Exception as exc:  # noqa: BLE001  MLflow away at the very end: the next resume tidies up
        print(f"scanner: could not check for orphaned runs ({type(exc).__name__})", file=sys.stderr)
        runs = []
    for run in runs:
        trial_id = run.data.tags.get("scan.trial_id")
        if not trial_id or trial_id in known_trial_ids or run.info.status != "RUNNING":
            continue
        client = writer.client
        client.set_tag(run.info.run_id, "scan.status", "failed")
        client.set_tag(run.info.run_id, "scan.failure", "orphan: the driver died before Tune recorded this trial")
        client.set_terminated(run.info.run_id, "KILLED")
    fail_running_optuna_trials(sweep.space.name)


def _experiment_id(writer, sweep) -> str:
    return writer.client.get_experiment_by_name(sweep.space.name).experiment_id


def fail_running_optuna_trials(study_name: str) -> int:
    """Every Tune trial has ended by now: an Optuna trial still RUNNING belongs to a killed driver."""
    import optuna

    from scanner.sweep import optuna_url

    study = optuna.load_study(study_name=study_name, storage=optuna_url())
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in running:
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return len(running)
