"""The unbiased numbers: the baseline and the top trials, once, on the test split that no trial saw."""

from __future__ import annotations

import sys
from pathlib import Path

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
