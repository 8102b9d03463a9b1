"""The end of a sweep: the unbiased numbers (the baseline and the top trials, once, on the test split that no trial
saw), the Optuna study summary and the report, all logged to the parent run through the writer."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import optuna

from reports import load_sweep, report_files, write_report
from scanner.sweep.progress import ProgressLine
from scanner.sweep.searcher import StudyHandle
from scanner.sweep.standings import leader, ranked_trials
from scanner.sweep.states import TrialState
from scanner.tracking import PARENT_KEY, MlflowWriter, checkpoint_artifact_files
from search_spaces import SpaceFile
from trainables.contract import SWEEP_BEST_OBJECTIVE, Artifact, Status, Tag, tag_value
from trainables.files import atomic_write_text
from trainables.loop import evaluate_checkpoint

REPORT_NOTE = "**Report**: the `report/` artifacts of this run (index.html, report.md, ranking.csv)."


def finalists(states: list[TrialState], mode: str, top: int) -> list[TrialState]:
    """The baseline (when it finished an epoch) and the ``top`` best searched trials."""
    chosen = [s for s in ranked_trials(states, mode) if not s.baseline][:top]
    baseline = [s for s in states if s.baseline and s.best_checkpoint]
    return baseline + [s for s in chosen if s.best_checkpoint]


def evaluate_on_test(space: SpaceFile, chosen: list[tuple[TrialState, str | None]], writer: MlflowWriter,
                     out_root: Path, progress: ProgressLine) -> dict[str, dict]:
    """Evaluate each (trial, checkpoint) once on ``test``; log ``test/...`` at the checkpoint's epoch, the test
    artifacts, and ``scan.final``. Returns the test metrics by trial id."""
    results = {}
    shown_keys = (f"test/{space.objective.metric.split('/', 1)[-1]}", "test/loss")
    for state, checkpoint in chosen:
        if not checkpoint:
            continue
        out_dir = Path(out_root) / state.trial_id
        try:
            metrics = evaluate_checkpoint(Path(checkpoint), space.data, space.task, "test", out_dir)
        except Exception as exc:  # noqa: BLE001  one broken checkpoint must not cost the other finals; it is tagged
            print(f"final evaluation of {state.name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            writer.set_tags(state.trial_id, {Tag.FINAL_FAILURE: tag_value(f"{type(exc).__name__}: {exc}")})
            continue
        step = state.epochs if state.replica_of else (state.best_epoch or state.epochs)
        writer.log_metrics(state.trial_id, metrics, step=step)
        writer.log_artifacts(state.trial_id, checkpoint_artifact_files(out_dir), "test")
        writer.set_tags(state.trial_id, {Tag.FINAL: "true"})
        results[state.trial_id] = metrics
        shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k in shown_keys)
        progress.say(f"final  {state.name}: {shown}")
    return results


def run_finals(space: SpaceFile, finals: list[TrialState], replicas: list[TrialState], writer: MlflowWriter,
               out_root: Path, progress: ProgressLine) -> dict[str, dict]:
    """The finalists at their best checkpoint, then their seed replicas at their last (the original's best epoch)."""
    chosen = [(s, s.best_checkpoint) for s in finals] + [(r, r.last_checkpoint) for r in replicas]
    return evaluate_on_test(space, chosen, writer, out_root, progress)


def study_summary(study: StudyHandle) -> dict[str, Any]:
    """The Optuna study in a few lines, for the parent run (the full study is in scans/optuna.db)."""
    handle = study.study()
    trials = handle.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    if len(handle.directions) > 1:
        best = handle.best_trials
    else:
        best = [handle.best_trial] if states.get(optuna.trial.TrialState.COMPLETE.name) else []
    return {"study": study.study_name, "storage": study.storage_url, "trials": len(trials), "states": states,
            "best": [{"number": t.number, "values": t.values, "params": t.params} for t in best]}


def log_study_summary(study: StudyHandle, writer: MlflowWriter, folder: Path) -> None:
    path = atomic_write_text(folder / Artifact.OPTUNA_SUMMARY, json.dumps(study_summary(study), indent=2, default=str))
    writer.log_artifacts(PARENT_KEY, [path], "")


def log_best_objective(states: list[TrialState], mode: str, writer: MlflowWriter) -> TrialState | None:
    """``sweep/best_objective`` on the parent, so sweeps compare in MLflow (not a ``best/`` name: the ranking
    searches those on trial runs)."""
    best = leader(states, mode)
    if best is not None:
        writer.log_metrics(PARENT_KEY, {SWEEP_BEST_OBJECTIVE: best.best_value}, step=0)
    return best


def build_report(name: str, instance: str, tracking_uri: str, writer: MlflowWriter, out_dir: Path) -> Path | None:
    """The report into ``scans/<name>/report``, logged to the parent run by the writer; None if it failed."""
    try:
        index = write_report(load_sweep(name, tracking_uri, instance=instance), out_dir, at="best",
                             log_to_parent=False)
    except Exception as exc:  # noqa: BLE001  a report bug must not turn a finished sweep into a failure; it is said
        print(f"scanner: the report failed ({type(exc).__name__}: {exc}); run 'scanner report {name}' to retry",
              file=sys.stderr)
        return None
    out_dir = Path(out_dir)
    files = report_files(out_dir)  # the report's own files: never a user's file that lies beside them
    for folder in sorted({f.parent for f in files}):
        relative = folder.relative_to(out_dir)
        writer.log_artifacts(PARENT_KEY, [f for f in files if f.parent == folder],
                             "report" if relative == Path(".") else f"report/{relative.as_posix()}")
    writer.set_tags(PARENT_KEY, {Tag.NOTE: REPORT_NOTE})
    return index


def summary_line(name: str, states: list[TrialState], best: TrialState | None, objective: str,
                 report: Path | None, tracking_uri: str) -> str:
    failed = sum(s.status == Status.FAILED for s in states)
    stopped = sum(s.status == Status.STOPPED_EARLY for s in states)
    head = f"sweep {name}: {len(states)} trials ({stopped} stopped early, {failed} failed)"
    best_text = (f"best {best.name} with {objective} = {best.best_value:.4g}" if best is not None
                 else "no trial reached a value (see the failures above)")
    where = f"report {report}" if report is not None else f"report: scanner report {name}"
    return f"{head}; {best_text}; {where}; MLflow experiment '{name}' in {tracking_uri}"
