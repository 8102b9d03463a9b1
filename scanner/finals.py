"""The end of a sweep: the unbiased numbers (the baseline and the top trials, once, on the test split that no trial
saw), the Optuna study summary and the report, all logged to the parent run."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from scanner._callbacks import TrialState, ranked_trials
from scanner.tracking import checkpoint_artifact_files


def finalists(states: list[TrialState], mode: str, top: int) -> list[TrialState]:
    """The baseline (when it finished an epoch) and the ``top`` best searched trials."""
    ranked = ranked_trials(states, mode)
    chosen = [s for s in ranked if not s.baseline][:top]
    baseline = [s for s in states if s.baseline and s.best_checkpoint]
    return baseline + [s for s in chosen if s.best_checkpoint]


def run_finals(space, states: list[TrialState], writer, out_root: Path, quiet: bool = False) -> dict[str, dict]:
    """Evaluate each finalist's best checkpoint on ``test``; log ``test/...`` at its best epoch and the artifacts."""
    from trainables.loop import evaluate_checkpoint

    results = {}
    for state in finalists(states, space.objective.mode, space.budget.final_top):
        out_dir = Path(out_root) / state.trial_id
        try:
            metrics = evaluate_checkpoint(Path(state.best_checkpoint), space.data, space.task, "test", out_dir)
        except Exception as exc:  # noqa: BLE001  one broken checkpoint must not cost the other finals
            print(f"final evaluation of {state.name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            writer.set_tags(state.trial_id, {"scan.final_failure": f"{type(exc).__name__}: {exc}"[:4000]})
            continue
        writer.log_metrics(state.trial_id, metrics, step=state.best_epoch or state.epochs)
        writer.log_artifacts(state.trial_id, checkpoint_artifact_files(out_dir), "test")
        writer.set_tags(state.trial_id, {"scan.final": "true"})
        results[state.trial_id] = metrics
        if not quiet:
            shown = {k: v for k, v in metrics.items() if k in (f"test/{space.objective.metric.split('/', 1)[-1]}",
                                                                 "test/loss")}
            print(f"final  {state.name}: " + ", ".join(f"{k}={v:.4g}" for k, v in shown.items()), flush=True)
    return results


def finish(sweep, callback, writer, states, quiet: bool) -> int:
    from scanner.sweep import FLUSH_S, atomic_write
    from scanner.tracking import PARENT_KEY

    run_finals(sweep.space, states, writer, sweep.folder / "finals", quiet=quiet)
    summary = study_summary(sweep.space.name)
    atomic_write(sweep.folder / "optuna_study.json", json.dumps(summary, indent=2, default=str))
    writer.log_artifacts(PARENT_KEY, [sweep.folder / "optuna_study.json"], "")
    failed = sum(s.status == "failed" for s in states)
    writer.set_tags(PARENT_KEY, {"scan.status": "finished", "scan.trials_failed": str(failed)})
    writer.flush(FLUSH_S)
    build_report_into_parent(sweep, quiet)
    writer.end_run(PARENT_KEY, "FINISHED")
    if not quiet:
        best = callback.best() or next(iter(sorted(states, key=lambda s: s.index)), None)
        print(f"sweep {sweep.space.name}: {len(states)} trials, {failed} failed; best {best.name if best else '-'}; "
              f"MLflow experiment '{sweep.space.name}' in {sweep.tracking_uri}", flush=True)
    return 1 if failed else 0


def study_summary(name: str) -> dict[str, Any]:
    """The Optuna study in a few lines, for the parent run (the full study is in scans/optuna.db)."""
    import optuna

    from scanner.sweep import optuna_url

    study = optuna.load_study(study_name=name, storage=optuna_url())
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    best = study.best_trials if len(study.directions) > 1 else ([study.best_trial] if states.get("COMPLETE") else [])
    return {"study": name, "storage": optuna_url(), "trials": len(trials), "states": states,
            "best": [{"number": t.number, "values": t.values, "params": t.params} for t in best]}


def build_report_into_parent(sweep, quiet: bool) -> None:
    from reports import build_report

    try:
        build_report(sweep.space.name, sweep.tracking_uri, sweep.folder / "report", at="best", log_to_parent=True)
    except Exception as exc:  # noqa: BLE001  a report bug must not turn a finished sweep into a failure
        print(f"scanner: the report failed ({type(exc).__name__}: {exc}); run 'scanner report "
              f"{sweep.space.name}' to retry", file=sys.stderr)
