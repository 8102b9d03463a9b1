"""The training loop of one trial: no Ray, no MLflow; it talks to a ``Reporter`` (trainables/reporting.py).

    from trainables.loop import train_trial, evaluate_checkpoint
    outcome = train_trial(spec, MemoryReporter())                 # spec: trainables.config.TrialSpec
    test = evaluate_checkpoint(ckpt_dir, spec.data, spec.task)    # test/... metrics of a saved epoch
    SCANNER_TEST_OOM_AT=1:3 python ...                             # tests: out of memory at epoch 1 step 3

Every epoch trains, recomputes the evaluated model's BatchNorm statistics (``precise_bn``), validates, saves a
checkpoint and reports. A diverged loss, a NaN/inf input pixel and an out-of-memory error end the trial as a failed
``TrialOutcome`` (its reported epochs and checkpoints stay); with ``oom: halve_batch`` an out-of-memory error first
restarts the trial from its last checkpoint at half the batch size and half the LR, at most twice.
"""

from __future__ import annotations

import dataclasses
import gc
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from trainables._epoch import (OOM_HOOK_ENV, Parts, amp_dtype_for, build, build_model, memory_format_for,
                               oom_hook_points, parameter_counts, train_epoch, validate)
from trainables._evaluate import physics_metrics, predict, write_artifacts
from trainables._state import best_block, data_meta, is_better, restore, resumed_config, trial_state
from trainables.checkpoint import evaluated_weights, load_state, save_state, seed_everything
from trainables.config import DataConfig, TrialConfig, TrialSpec, derived_seed
from trainables.data import EventFile, class_counts, make_loader, open_events
from trainables.device import pick_device
from trainables.errors import NonFiniteInput, TrialDiverged
from trainables.losses import create_loss
from trainables.metrics import prefixed
from trainables.reporting import Reporter, TrialOutcome, oom_record
from trainables.telemetry import GIB, EpochTelemetry

MAX_OOM_RETRIES = 2  # halvings: a quarter of the batch is still a fair trial of the config; less is another one

__all__ = ["MAX_OOM_RETRIES", "OOM_HOOK_ENV", "evaluate_checkpoint", "evaluate_state", "saved_config", "train_trial"]


class _Trial:
    """One trial across its out-of-memory restarts: the last checkpoint, the data description, the retries."""

    def __init__(self, spec: TrialSpec, reporter: Reporter, progress: bool, resume: Path | None,
                 state: dict[str, Any] | None):
        self.spec, self.reporter, self.progress = spec, reporter, progress
        self.resume = resume
        self.state = state  # where the next attempt starts (None: from scratch); dropped once loaded
        self.saved = False  # an epoch of this process is in workdir
        self.cfg, self.retries = resumed_config(spec.trial, state)
        self.oom_at = oom_hook_points()
        self.device = pick_device(spec.gpu_requested)  # once: it announces itself in the trial's log
        self.data: dict[str, Any] | None = None
        self.parts: Parts | None = None
        self.epoch, self.best = (int(state["epoch"]), dict(state.get("best") or {})) if state else (0, {})
        Path(spec.workdir).mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix="ckpt-", dir=spec.workdir))

    def outcome(self, status: str, failure: str | None = None) -> TrialOutcome:
        return TrialOutcome(status=status, epochs=self.epoch, failure=failure, best=self.best,
                            batch_size_final=self.cfg.batch_size, oom_retries=self.retries)

    def run(self) -> TrialOutcome:
        try:
            while True:
                try:
                    return self._attempt()
                except torch.OutOfMemoryError:
                    pass  # handled outside the except block, whose traceback holds the attempt's tensors
                failure = self._out_of_memory()
                if failure is not None:
                    return self.outcome("failed", failure)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _out_of_memory(self) -> str | None:
        """Free what the attempt held; the failure text, or None when the trial restarts at half the batch."""
        message = oom_message(self.parts.where if self.parts else "start-up", self.device, self.cfg, self.retries)
        self.parts = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if self.spec.oom != "halve_batch" or self.retries >= MAX_OOM_RETRIES or self.cfg.batch_size < 2:
            return message
        last = self.workdir if self.saved else self.resume
        self.state = load_state(last) if last is not None else None
        self.cfg = self.cfg.replace(batch_size=self.cfg.batch_size // 2, lr=self.cfg.lr / 2)  # linear scaling
        self.retries += 1
        return None

    def _attempt(self) -> TrialOutcome:
        spec = self.spec
        p = self.parts = build(spec, self.cfg, self.oom_at, self.device)
        if self.data is None:
            self.data = data_meta(spec, p.events)
        start = 0
        if self.state is not None:
            start, self.best, _ = restore(p, self.state)
            self.state = None
        telemetry = EpochTelemetry(p.device)
        try:
            for epoch in range(start + 1, spec.max_epochs + 1):
                self.epoch = epoch
                try:
                    metrics = self._epoch(p, epoch, telemetry)
                except TrialDiverged as exc:
                    return self.outcome("failed", str(exc))
                except NonFiniteInput as exc:
                    return dataclasses.replace(self.outcome("failed", str(exc)), bad_input=True)
                is_best = is_better(metrics.get(spec.objective), self.best.get(f"best/{spec.objective}"),
                                    spec.objective_mode)
                if is_best:
                    self.best = best_block(metrics, spec.objective, epoch, self.best)
                metrics.update(self.best)
                metrics.update(oom_record(self.retries, self.cfg.batch_size))
                save_state(self.workdir, trial_state(p, epoch, self.best, metrics, self.data, self.retries))
                self.saved = True
                self.reporter.report(epoch, metrics, self.workdir, is_best)
        finally:
            telemetry.close()
        return self.outcome("completed")

    def _epoch(self, p: Parts, epoch: int, telemetry: EpochTelemetry) -> dict[str, float]:
        seed_everything(derived_seed(p.cfg.seed, epoch))
        telemetry.start_epoch()
        train_loss = train_epoch(p, epoch, telemetry, self.progress)
        metrics = {"train/loss": train_loss, "train/lr": p.schedule.current_lr}
        if epoch == 1:
            metrics.update(parameter_counts(p.model))  # once: "frozen" shows as total > trainable
        metrics.update(telemetry.end_epoch(len(p.train_loader.dataset)))
        metrics.update(validate(p, epoch, self.workdir))
        p.schedule.after_epoch(metrics["val/loss"])
        return metrics


def oom_message(where: str, device: torch.device, cfg: TrialConfig, retries: int) -> str:
    """Where, how much, and what to try: the line a user reads in ``scan.failure``."""
    smaller = max(1, cfg.batch_size // 2)
    halved = f" (after {retries} halving{'s' if retries != 1 else ''} of the batch)" if retries else ""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_reserved(device) / GIB
        total = torch.cuda.get_device_properties(device).total_memory / GIB
        return (f"CUDA out of memory at {where}: peak {peak:.1f} of {total:.1f} GiB reserved{halved}; "
                f"try batch_size <= {smaller} or gpu: 1")
    return f"out of memory at {where}{halved}; try batch_size <= {smaller}"


def train_trial(spec: TrialSpec, reporter: Reporter, progress: bool = False) -> TrialOutcome:
    """Train ``spec.max_epochs`` epochs (continuing from ``reporter.resume_from()``), reporting every epoch."""
    resume = reporter.resume_from()
    state = load_state(Path(resume)) if resume is not None else None
    if state is not None and int(state["epoch"]) >= spec.max_epochs and state.get("metrics"):
        return _report_again(spec, reporter, state, Path(resume))
    return _Trial(spec, reporter, progress, None if resume is None else Path(resume), state).run()


def _report_again(spec: TrialSpec, reporter: Reporter, state: dict[str, Any], folder: Path) -> TrialOutcome:
    """A trial killed after its last epoch, before its end was recorded: say again how it ended, from a copy (the
    reporter may be handed the folder it gave out)."""
    epoch, best = int(state["epoch"]), dict(state.get("best") or {})
    Path(spec.workdir).mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="ckpt-", dir=spec.workdir))
    try:
        shutil.copytree(folder, workdir, dirs_exist_ok=True)
        reporter.report(epoch, dict(state["metrics"]), workdir, is_best=best.get("best/epoch") == epoch)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    cfg, retries = resumed_config(spec.trial, state)
    return TrialOutcome(status="completed", epochs=epoch, best=best, batch_size_final=cfg.batch_size,
                        oom_retries=retries)


def saved_config(state: dict[str, Any], where: str = "checkpoint config") -> TrialConfig:
    """The trial config of a checkpoint, as a scratch model (its weights come from the checkpoint). Checkpoints from
    before ``amp`` took bf16/fp16/off hold a bool or None there."""
    values = {**state["config"], "mode": "scratch", "init": None}
    if not isinstance(values.get("amp"), str):
        values["amp"] = "off" if values.get("amp") is False else "bf16"
    return TrialConfig.from_dict(values, where=where)


def evaluate_checkpoint(
    checkpoint_dir: Path, data: DataConfig, task: str, split: str = "test", out_dir: Path | None = None
) -> dict[str, float]:
    """Evaluate a saved epoch once on ``split`` (the held-out test split for the finals): ``<split>/...`` metrics.

    The model is the one that was evaluated during training (``eval_model``: EMA weights when EMA was on, with the
    recomputed BatchNorm statistics), so on the val split this reproduces the logged ``val/`` figures exactly."""
    figures = evaluate_state(load_state(Path(checkpoint_dir)), data, open_events(data, task), split, out_dir)
    return prefixed(figures, split)


def evaluate_state(state: dict[str, Any], data: DataConfig, events: EventFile, split: str,
                   out_dir: Path | None = None) -> dict[str, float]:
    """A checkpoint's evaluated weights on one split of ``events`` (which may be a prepared view: a detector
    variant read with the training file's pixel scale): ``loss`` and the physics figures, without a prefix;
    ``predictions.h5`` and ``confusion.json`` into ``out_dir``."""
    meta, cfg = state["meta"], saved_config(state)
    task = meta["task"]
    device = pick_device(announce=False)
    memory_format = memory_format_for(cfg, device)
    model = build_model(cfg.replace(model=meta["model"]), meta["in_channels"], meta["num_outputs"])
    model.load_state_dict(evaluated_weights(state))
    model.to(device, memory_format=memory_format)
    loader = make_loader(data, task, split, cfg.batch_size, 0, False, cfg.seed, events)
    counts = class_counts(events, data, "train") if task == "classification" else None
    loss_fn = create_loss(cfg.loss_name(task), cfg, task, events.direction, counts)
    outs = predict(model, loader, loss_fn, task, device, amp_dtype_for(cfg, device), memory_format)
    physics, confusion = physics_metrics(outs, events, events.has_weights)
    if out_dir is not None:
        write_artifacts(Path(out_dir), outs, events, data, confusion)
    return {"loss": outs.loss, **physics}
