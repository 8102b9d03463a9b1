"""The Tune side of one trial: the loop's ``Reporter`` on top of ``ray.tune.report`` + ``tune.Checkpoint``.

Runs inside a Tune worker. Ray 2.60 runs Train V2: ``ray.tune.report`` / ``tune.get_checkpoint`` are the API here
(``ray.train.report`` is an error inside Tune).
"""

from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ray import tune

from scanner.sweep.results import EPOCH_KEY, FAILURE_KEY, IS_BEST_KEY, SCORE_KEY, is_baseline, replica_spec, write_mark
from search_spaces import SpaceFile, baseline_config, trial_config
from trainables.checkpoint import newest_loadable
from trainables.config import TrialConfig, TrialSpec
from trainables.errors import is_recurring
from trainables.loop import train_trial
from trainables.reporting import TrialOutcome, oom_record

WORST = 1e308  # a non-best epoch's score; finite, so every logger and comparison takes it
CHECKPOINT_GLOB = "checkpoint_*"  # Tune's folders of a trial's kept checkpoints


@dataclass
class SweepContext:
    """What every trial needs besides its sampled params; travels through ``tune.with_parameters``."""

    space: SpaceFile
    init_map: dict[str, str] = field(default_factory=dict)  # best-of:/run: -> checkpoint path, resolved by the driver
    threads: int = 1  # torch intra-op threads = the trial's CPUs
    scratch: str = ""  # the sweep's scratch folder: the loop's checkpoints before Tune copies them
    data_hash: str | None = None  # hashed once by the driver, not by every trial


def resolve_config(space: SpaceFile, config: dict[str, Any], init_map: dict[str, str] | None = None) -> TrialConfig:
    """The trial's full TrialConfig from its Tune config (the baseline marker, a replica's own config, or Optuna's
    sampled values)."""
    replica = replica_spec(config)
    if replica is not None:
        return TrialConfig.from_dict(replica["config"], where="replica")
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
        # the restored checkpoint, held while the trial runs: Tune's own folder when it is local (to_directory would
        # copy it into the system temp folder and leave it there); a remote one is downloaded, then removed
        self.held = contextlib.ExitStack()

    def resume_from(self) -> Path | None:
        """The newest kept checkpoint whose state loads: a truncated latest one (a kill during the copy, a full
        disk) falls back to the intact one beside it, and the trial's log says so."""
        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        latest = Path(self.held.enter_context(checkpoint.as_directory()))
        kept = sorted(Path(tune.get_context().get_trial_dir()).glob(CHECKPOINT_GLOB), reverse=True)
        folder, skipped = newest_loadable([latest, *[k for k in kept if k != latest]])
        for bad, why in skipped:
            print(f"scanner: checkpoint {bad} does not load ({why}); trying an earlier one", file=sys.stderr)
        if folder is not None and skipped:
            print(f"scanner: resuming from {folder}", file=sys.stderr)
        return folder

    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path, is_best: bool) -> None:
        write_mark(Path(checkpoint_dir), epoch, is_best)
        worst = -WORST if self.mode == "max" else WORST
        score = float(metrics.get(self.objective, worst)) if is_best else worst
        result = {**metrics, EPOCH_KEY: epoch, IS_BEST_KEY: bool(is_best), SCORE_KEY: score}
        tune.report(result, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))
        self.last_epoch = epoch


def run_trial(config: dict[str, Any], ctx: SweepContext) -> None:
    """The Tune function trainable."""
    torch.set_num_threads(max(1, ctx.threads))
    space = ctx.space
    reporter = TuneReporter(space.objective.metric, space.objective.mode)
    try:  # the spec too: a config that cannot resolve fails the same way on every retry
        with reporter.held:
            outcome = train_trial(trial_spec(config, ctx), reporter)
    except Exception as exc:  # noqa: BLE001  only errors no retry can change are caught; the rest go to Tune
        if not is_recurring(exc):
            raise  # a lost node, a killed worker: Tune retries from the last epoch checkpoint
        outcome = TrialOutcome(status="failed", epochs=reporter.last_epoch, failure=f"{type(exc).__name__}: {exc}")
    if outcome.status == "failed":
        # NaN is how Optuna learns of a failed trial (it marks it FAIL); the callback tags the run failed.
        final = {o.metric: math.nan for o in space.objectives}
        tune.report({**final, EPOCH_KEY: max(outcome.epochs, reporter.last_epoch),
                     FAILURE_KEY: outcome.failure or "failed", **oom_record(outcome.oom_retries,
                                                                             outcome.batch_size_final)})


def trial_spec(config: dict[str, Any], ctx: SweepContext) -> TrialSpec:
    """What one trial trains; a config that cannot resolve raises BadInput here."""
    space = ctx.space
    return TrialSpec(
        task=space.task,
        data=space.data,
        trial=resolve_config(space, config, ctx.init_map),
        max_epochs=int((replica_spec(config) or {}).get("epochs") or space.budget.max_epochs),
        objective=space.objective.metric,
        objective_mode=space.objective.mode,
        workdir=ctx.scratch,  # inside scans/<name>/: a killed trial leaves nothing in the system's temp folder
        oom=space.resources.oom,
        data_hash=ctx.data_hash,
        gpu_requested=space.resources.gpu > 0,
    )
