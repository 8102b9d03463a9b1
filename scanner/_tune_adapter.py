"""The Tune side of one trial: the loop's ``Reporter`` on top of ``ray.tune.report`` + ``tune.Checkpoint``.

Runs inside a Tune worker. Ray 2.60 runs Train V2: ``ray.tune.report`` / ``tune.get_checkpoint`` are the API here
(``ray.train.report`` is an error inside Tune).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EPOCH_MARK = "scan_epoch.json"  # written into each checkpoint, so the driver knows its epoch and whether it is best
FAILURE_KEY = "scan_failure"  # in the last result of a trial whose loss went NaN (a failure, not a crash)
SCORE_KEY = "scan_checkpoint_score"  # Tune keeps the checkpoint the loop called best, not a later tie
WORST = 1e308  # a non-best epoch's score; finite, so every logger and comparison takes it


@dataclass
class SweepContext:
    """What every trial needs besides its sampled params; travels through ``tune.with_parameters``."""

    space: Any  # search_spaces.SpaceFile
    init_map: dict[str, str] = field(default_factory=dict)  # best-of:/run: -> checkpoint path, resolved by the driver
    threads: int = 1  # torch intra-op threads = the trial's CPUs


def resolve_config(space, config: dict[str, Any], init_map: dict[str, str] | None = None):
    """The trial's full TrialConfig from its Tune config (the baseline marker or Optuna's sampled values)."""
    from scanner._searcher import is_baseline
    from search_spaces import baseline_config, trial_config

    sampled = {k: v for k, v in config.items() if not k.startswith("_scan")}
    cfg = baseline_config(space) if is_baseline(config) else trial_config(space, sampled)
    if init_map and cfg.init in init_map:
        cfg = cfg.replace(init=init_map[cfg.init])
    return cfg


class TuneReporter:
    """The loop reports an epoch; Tune stores the checkpoint (best + latest kept) and sees the metrics."""

    def __init__(self, objective: str = "val/accuracy", mode: str = "max"):
        self.objective, self.mode = objective, mode
        self.last_epoch = 0

    def resume_from(self) -> Path | None:
        from ray import tune

        checkpoint = tune.get_checkpoint()
        return Path(checkpoint.to_directory()) if checkpoint else None

    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path, is_best: bool) -> None:
        from ray import tune

        (Path(checkpoint_dir) / EPOCH_MARK).write_text(json.dumps({"epoch": epoch, "is_best": bool(is_best)}))
        worst = -WORST if self.mode == "max" else WORST
        score = float(metrics.get(self.objective, worst)) if is_best else worst
        result = {**metrics, "epoch": epoch, "scan_is_best": bool(is_best), SCORE_KEY: score}
        tune.report(result, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))
        self.last_epoch = epoch


def run_trial(config: dict[str, Any], ctx: SweepContext) -> None:
    """The Tune function trainable."""
    import tempfile

    import torch
    from ray import tune

    from trainables.config import TrialSpec
    from trainables.loop import train_trial

    torch.set_num_threads(max(1, ctx.threads))
    space = ctx.space
    cfg = resolve_config(space, config, ctx.init_map)
    spec = TrialSpec(
        task=space.task,
        data=space.data,
        trial=cfg,
        max_epochs=space.budget.max_epochs,
        objective=space.objective.metric,
        objective_mode=space.objective.mode,
        workdir=tempfile.gettempdir(),  # the loop's scratch folder; Tune copies each checkpoint to its storage
    )
    reporter = TuneReporter(space.objective.metric, space.objective.mode)
    outcome = train_trial(spec, reporter)
    if outcome.status == "failed":
        # NaN is how Optuna learns of a failed trial (it marks it FAIL); the callback tags the run failed.
        final = {o.metric: math.nan for o in space.objectives}
        tune.report({**final, "epoch": max(outcome.epochs, reporter.last_epoch), FAILURE_KEY: outcome.failure or "failed"})
