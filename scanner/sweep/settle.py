"""Settling a sweep after ``Tuner.fit``: every trial's final record, runs and Optuna trials left behind by a killed
driver, and the failure tags of runs that recovered. Also the end of an interrupted fit.

After a SIGKILL, Tune restores from its last snapshot, which may predate the newest trials: MLflow and Optuna can
hold trials Tune never heard of. Child runs are found by ``scan.trial_id`` within the sweep's instance (one run per
trial), runs of trials Tune does not know end KILLED, Optuna trials still RUNNING are failed, and the writer's
journal keeps each ``(run, metric, step)`` to one value. Every write goes through the writer.
"""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
from mlflow.exceptions import MlflowException
from ray.tune import ResultGrid

from scanner.sweep.driver import SweepDriver
from scanner.sweep.results import FAILURE_KEY, checkpoint_epoch, read_mark, result_epoch
from scanner.sweep.searcher import StudyHandle
from scanner.sweep.states import TrialState
from scanner.tracking import PARENT_KEY, MlflowWriter, find_runs_by_tag
from trainables.contract import Status, Tag, tag_value

ORPHAN = "orphan: the sweep stopped before Tune recorded this trial; a resume may have run its configuration again"
INTERRUPTED = "interrupted by the user"
DRIVER_FAILED = "the sweep's driver failed"


def end_unfinished(driver: SweepDriver, writer: MlflowWriter, interrupted: bool) -> None:
    """Ctrl-C (KILLED, "interrupted") or a driver error (FAILED): no run is left RUNNING; Tune's snapshot stays
    for ``scanner resume``."""
    why, status = (INTERRUPTED, "KILLED") if interrupted else (DRIVER_FAILED, "FAILED")
    for state in driver.trials.values():
        if state.status == Status.RUNNING:
            writer.set_tags(state.trial_id, {Tag.STATUS: Status.FAILED, Tag.FAILURE: why})
            writer.end_run(state.trial_id, status)
    writer.set_tags(PARENT_KEY, {Tag.STATUS: Status.INTERRUPTED if interrupted else Status.FAILED})
    writer.end_run(PARENT_KEY, status)


def settle_from_grid(driver: SweepDriver, grid: ResultGrid) -> dict[str, TrialState]:
    """Every trial of the sweep, including those finished before a resume (this driver never saw them)."""
    for result in grid:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id")
        if not trial_id or (trial_id in driver.trials and driver.trials[trial_id].status != Status.RUNNING):
            continue
        state = driver.trials.get(trial_id) or driver.adopt(trial_id, dict(result.config or {}),
                                                            _experiment_tag(result.path, trial_id))
        state.epochs = max(state.epochs, result_epoch(metrics), checkpoint_epoch(result.checkpoint))
        best = metrics.get(f"best/{driver.objective}")
        if best is not None and state.best_value is None:
            state.best_value, state.best_epoch = float(best), int(metrics.get("best/epoch", state.epochs) or 0)
        state.best_checkpoint = state.best_checkpoint or _best_checkpoint(result)
        if state.best_checkpoint:
            driver.writer.set_tags(trial_id, {Tag.CHECKPOINT: state.best_checkpoint})
        if result.error is not None or FAILURE_KEY in metrics:
            state.failure = state.failure or str(metrics.get(FAILURE_KEY) or result.error)
        driver.finish(state, driver.status_of(state))
    return dict(driver.trials)


def _experiment_tag(path: str, trial_id: str) -> str:
    """Tune's folder name is ``run_trial_<id>_<counter>_<params>_<date>``: the counter gives the trial's index."""
    folder = Path(str(path)).name
    return folder.split(f"_{trial_id}_", 1)[-1] if f"_{trial_id}_" in folder else ""


def _best_checkpoint(result) -> str | None:
    """The kept checkpoint marked best with the highest epoch (best + latest are kept)."""
    found = []
    for checkpoint, _ in result.best_checkpoints or []:
        mark = read_mark(Path(checkpoint.path))
        if mark and mark.get("is_best"):
            found.append((mark["epoch"], checkpoint.path))
    return str(max(found)[1]) if found else None


def close_leftovers(writer: MlflowWriter, experiment_id: str, instance: str, known_trial_ids: set[str],
                    replicas: bool = False) -> None:
    """Runs of this instance that Tune's snapshot never saw end KILLED, whatever their state: the driver was killed
    (RUNNING), ended them itself before the snapshot was written (FAILED: a full disk), or they even finished
    (FINISHED: Tune writes its state every few seconds, and a full disk can leave only an older copy). Tune searches
    those trials again, so each trial keeps one live run. Their failure goes to ``scan.failure_history``, and so does
    the earlier failure of runs that recovered. ``replicas`` picks the seed replicas' runs (their own Tune
    experiment) instead of the search's."""
    try:
        runs = find_runs_by_tag(writer.client, experiment_id, {Tag.INSTANCE: instance})
    except MlflowException as exc:  # MLflow away at the very end: the next resume tidies up
        print(f"scanner: could not check for orphaned runs ({type(exc).__name__}); 'scanner resume' will",
              file=sys.stderr)
        return
    for run in runs:
        tags, trial_id = run.data.tags, run.data.tags.get(Tag.TRIAL_ID)
        if not trial_id or (Tag.REPLICA_OF in tags) != replicas:
            continue
        key = f"run:{run.info.run_id}"
        if trial_id not in known_trial_ids and tags.get(Tag.FAILURE) != ORPHAN:  # an orphan is closed once
            writer.use_run(key, run.info.run_id)
            writer.set_tags(key, {Tag.STATUS: Status.FAILED, Tag.FAILURE: ORPHAN, **_history(tags)})
            writer.end_run(key, "KILLED")
        elif tags.get(Tag.STATUS) in (Status.COMPLETED, Status.STOPPED_EARLY) and tags.get(Tag.FAILURE):
            writer.use_run(key, run.info.run_id)
            writer.set_tags(key, _history(tags))
            writer.delete_tags(key, [Tag.FAILURE])


def _history(tags: dict[str, str]) -> dict[str, str]:
    """The run's failure appended to its ``scan.failure_history`` (empty when it has no failure)."""
    if not tags.get(Tag.FAILURE):
        return {}
    return {Tag.FAILURE_HISTORY: tag_value("; ".join(filter(None, [tags.get(Tag.FAILURE_HISTORY), tags[Tag.FAILURE]])))}


def fail_unfinished_study_trials(study: StudyHandle) -> int:
    """Every Tune trial has ended by now: an Optuna trial still RUNNING crashed for good, or belongs to a killed
    driver. It is failed, and says so."""
    handle = study.study()
    running = handle.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in running:
        study.set_attrs(trial.number, {"scan_status": Status.FAILED})
        handle.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return len(running)
