"""The training loop of one trial: no Ray, no MLflow; it talks to a ``Reporter`` (trainables/reporting.py).

    from trainables.loop import train_trial, evaluate_checkpoint
    outcome = train_trial(spec, MemoryReporter())                 # spec: trainables.config.TrialSpec
    test = evaluate_checkpoint(ckpt_dir, spec.data, spec.task)    # test/... metrics of a saved epoch
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainables._evaluate import physics_metrics, predict, write_artifacts
from trainables.checkpoint import load_state, rng_state, save_state, seed_everything
from trainables.config import DataConfig, TrialConfig, TrialSpec, derived_seed
from trainables.device import pick_device
from trainables.errors import TrialDiverged
from trainables.metrics import prefixed
from trainables.reporting import Reporter, TrialOutcome

NAN_CHECK_EVERY = 100  # steps between loss syncs: a NaN is caught early without a GPU sync every step
MAIN_PHYSICS = ("accuracy", "efficiency/", "purity/", "fom/", "resolution68_deg", "bias/", "rms/")


def amp_dtype_for(cfg: TrialConfig, device: torch.device) -> torch.dtype | None:
    """AMP only on CUDA (CPU autocast is slower than fp32 for these convnets); bf16 where the GPU has it."""
    if device.type != "cuda" or cfg.amp is False:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@dataclass
class _Parts:
    """Everything built for one trial, so the epoch functions take one argument instead of ten."""

    spec: TrialSpec
    events: Any
    device: torch.device
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Any
    ema: Any
    loss_fn: Any
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader
    amp_dtype: torch.dtype | None
    scaler: Any


def build_model(cfg: TrialConfig, in_channels: int, num_outputs: int) -> nn.Module:
    from trainables.models import apply_mode, create_model, load_init

    model = create_model(cfg.model, in_channels, num_outputs)
    if cfg.mode != "scratch":
        load_init(model, cfg.init)
        apply_mode(model, cfg.mode)
    return model


def num_outputs(events) -> int:
    return len(events.class_names) if events.class_names is not None else len(events.target_names)


def _build(spec: TrialSpec) -> _Parts:
    from trainables.data import class_counts, make_loader, open_events
    from trainables.ema import ModelEMA
    from trainables.losses import create_loss
    from trainables.models import param_groups
    from trainables.schedules import create_optimizer, create_schedule

    cfg, device = spec.trial, pick_device()
    seed_everything(cfg.seed)
    events = open_events(spec.data, spec.task)
    model = build_model(cfg, events.image_shape[0], num_outputs(events)).to(device)
    groups = param_groups(model, cfg.lr, cfg.weight_decay, cfg.backbone_lr_mult, cfg.mode)
    optimizer = create_optimizer(groups, cfg)

    def loader(split: str, shuffle: bool):
        return make_loader(spec.data, spec.task, split, cfg.batch_size, cfg.num_workers, shuffle, cfg.seed, events)

    train_loader, val_loader = loader("train", True), loader("val", False)
    counts = class_counts(events, spec.data, "train") if spec.task == "classification" else None
    amp_dtype = amp_dtype_for(cfg, device)
    return _Parts(
        spec=spec,
        events=events,
        device=device,
        model=model,
        optimizer=optimizer,
        schedule=create_schedule(cfg.lr_schedule, optimizer, cfg, spec.max_epochs, len(train_loader)),
        ema=ModelEMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None,
        loss_fn=create_loss(cfg.loss_name(spec.task), cfg, spec.task, events.direction, counts),
        train_loader=train_loader,
        val_loader=val_loader,
        amp_dtype=amp_dtype,
        scaler=torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None,
    )


def _check_finite(loss_sum: torch.Tensor, epoch: int, step: int) -> None:
    value = float(loss_sum.item())
    if not math.isfinite(value):
        raise TrialDiverged(f"training loss became {value} at epoch {epoch}, step {step}; lower lr or grad_clip")


def _reseed_order(loader: torch.utils.data.DataLoader, seed: int) -> None:
    """Each epoch's shuffle depends on (seed, epoch) only, so a resumed trial sees the same batches."""
    for source in (loader.batch_sampler, loader.sampler):
        generator = getattr(source, "generator", None)
        if isinstance(generator, torch.Generator):
            generator.manual_seed(seed)


def _train_epoch(p: _Parts, epoch: int, telemetry, progress: bool) -> float:
    from trainables.models import set_train_mode

    cfg = p.spec.trial
    set_train_mode(p.model, cfg.mode)
    _reseed_order(p.train_loader, derived_seed(cfg.seed, epoch))
    loss_sum = torch.zeros((), device=p.device, dtype=torch.float64)
    weight_sum = torch.zeros((), device=p.device, dtype=torch.float64)
    batches = telemetry.timed(p.train_loader)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, total=len(p.train_loader), desc=f"epoch {epoch}", leave=False, unit="batch")
    for step, (images, y, w) in enumerate(batches, start=1):
        images, y, w = (t.to(p.device, non_blocking=True) for t in (images, y, w))
        with torch.autocast(p.device.type, dtype=p.amp_dtype, enabled=p.amp_dtype is not None):
            out = p.model(images)
        loss = (p.loss_fn(out.float(), y) * w).sum() / w.sum().clamp_min(1e-12)
        p.optimizer.zero_grad(set_to_none=True)
        _backward_and_step(p, loss)
        loss_sum += loss.detach().double() * w.sum().double()
        weight_sum += w.sum().double()
        if step % NAN_CHECK_EVERY == 0:
            _check_finite(loss_sum, epoch, step)
    _check_finite(loss_sum, epoch, len(p.train_loader))
    return float((loss_sum / weight_sum.clamp_min(1e-12)).item())


def _backward_and_step(p: _Parts, loss: torch.Tensor) -> None:
    clip = p.spec.trial.grad_clip
    if p.scaler is not None:
        p.scaler.scale(loss).backward()
        p.scaler.unscale_(p.optimizer)
    else:
        loss.backward()
    if clip and clip > 0:
        torch.nn.utils.clip_grad_norm_(p.model.parameters(), clip)
    if p.scaler is not None:
        p.scaler.step(p.optimizer)
        p.scaler.update()
    else:
        p.optimizer.step()
    p.schedule.after_step()
    if p.ema is not None:
        p.ema.update(p.model)


def _validate(p: _Parts, folder: Path) -> dict[str, float]:
    """Evaluate the EMA model when EMA is on (its metrics are the ones reported), the live one under val_live/."""
    evaluated = p.ema.module if p.ema is not None else p.model
    outs = predict(evaluated, p.val_loader, p.loss_fn, p.spec.task, p.device, p.amp_dtype)
    physics, confusion = physics_metrics(outs, p.events, p.events.has_weights)
    metrics = {"val/loss": outs.loss, **prefixed(physics, "val")}
    write_artifacts(folder, outs, p.events, p.spec.data, confusion)
    if p.ema is not None:
        live = predict(p.model, p.val_loader, p.loss_fn, p.spec.task, p.device, p.amp_dtype)
        live_physics, _ = physics_metrics(live, p.events, p.events.has_weights)
        metrics["val_live/loss"] = live.loss
        metrics.update(prefixed(live_physics, "val_live"))
    return metrics


def _is_better(value: float | None, best: float | None, mode: str) -> bool:
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if mode == "max" else value < best


def _best_block(metrics: dict[str, float], objective: str, epoch: int) -> dict[str, float]:
    """``best/<metric>``: the objective and the main physics metrics of the best epoch (with their errors)."""
    keep = {objective, "val/loss"}
    keep |= {k for k in metrics if k.startswith("val/") and k[4:].startswith(MAIN_PHYSICS)}
    block = {f"best/{k}": v for k, v in metrics.items() if k in keep}
    block["best/epoch"] = float(epoch)
    return block


def _state(p: _Parts, epoch: int, best: dict[str, float], metrics: dict[str, float]) -> dict[str, Any]:
    spec = p.spec
    return {
        "model": p.model.state_dict(),
        "ema": p.ema.state_dict() if p.ema is not None else None,
        "ema_model": p.ema.model_state_dict() if p.ema is not None else None,
        "optimizer": p.optimizer.state_dict(),
        "scheduler": p.schedule.state_dict(),
        "scaler": p.scaler.state_dict() if p.scaler is not None else None,
        "epoch": epoch,
        "best": best,
        "metrics": metrics,  # this epoch's report: a trial restored at its last epoch reports it again
        "rng": rng_state(),
        "config": spec.trial.as_params(),
        "meta": {
            "model": spec.trial.model,
            "in_channels": p.events.image_shape[0],
            "num_outputs": num_outputs(p.events),
            "task": spec.task,
            "class_names": p.events.class_names,
            "target_names": p.events.target_names,
            "direction": p.events.direction,
        },
    }


def _restore(p: _Parts, folder: Path) -> tuple[int, dict[str, float], dict[str, float]]:
    state = load_state(folder)
    p.model.load_state_dict(state["model"])
    p.optimizer.load_state_dict(state["optimizer"])
    p.schedule.load_state_dict(state["scheduler"])
    if p.ema is not None and state.get("ema") is not None:
        p.ema.load_state_dict(state["ema"])
    if p.scaler is not None and state.get("scaler") is not None:
        p.scaler.load_state_dict(state["scaler"])
    return int(state["epoch"]), dict(state.get("best") or {}), dict(state.get("metrics") or {})


def train_trial(spec: TrialSpec, reporter: Reporter, progress: bool = False) -> TrialOutcome:
    """Train ``spec.max_epochs`` epochs (continuing from ``reporter.resume_from()``), reporting every epoch."""
    from trainables.telemetry import EpochTelemetry

    p = _build(spec)
    start, best, last = 0, {}, {}
    resume = reporter.resume_from()
    if resume is not None:
        start, best, last = _restore(p, Path(resume))
    Path(spec.workdir).mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="ckpt-", dir=spec.workdir))
    if resume is not None and start >= spec.max_epochs and last:
        # killed after its last epoch, before its end was recorded: say again how it ended, from a copy (the
        # reporter may be handed the folder it gave out)
        shutil.copytree(resume, workdir, dirs_exist_ok=True)
        try:
            reporter.report(start, last, workdir, is_best=best.get("best/epoch") == start)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return TrialOutcome(status="completed", epochs=start, best=best)
    telemetry = EpochTelemetry(p.device)
    epoch = start
    try:
        for epoch in range(start + 1, spec.max_epochs + 1):
            seed_everything(derived_seed(spec.trial.seed, epoch))
            telemetry.start_epoch()
            try:
                train_loss = _train_epoch(p, epoch, telemetry, progress)
            except TrialDiverged as exc:
                return TrialOutcome(status="failed", epochs=epoch, failure=str(exc), best=best)
            metrics = {"train/loss": train_loss, "train/lr": p.schedule.current_lr}
            metrics.update(telemetry.end_epoch(len(p.train_loader.dataset)))
            metrics.update(_validate(p, workdir))
            p.schedule.after_epoch(metrics["val/loss"])
            key = f"best/{spec.objective}"
            is_best = _is_better(metrics.get(spec.objective), best.get(key), spec.objective_mode)
            if is_best:
                best = _best_block(metrics, spec.objective, epoch)
            metrics.update(best)
            save_state(workdir, _state(p, epoch, best, metrics))
            reporter.report(epoch, metrics, workdir, is_best)
    finally:
        telemetry.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return TrialOutcome(status="completed", epochs=epoch, best=best)


def evaluate_checkpoint(
    checkpoint_dir: Path, data: DataConfig, task: str, split: str = "test", out_dir: Path | None = None
) -> dict[str, float]:
    """Evaluate a saved epoch once on ``split`` (the held-out test split for the finals): ``<split>/...`` metrics."""
    from trainables.data import class_counts, make_loader, open_events
    from trainables.losses import create_loss

    state = load_state(Path(checkpoint_dir))
    meta, cfg = state["meta"], TrialConfig.from_dict({**state["config"], "mode": "scratch", "init": None})
    events = open_events(data, task)
    device = pick_device()
    model = build_model(cfg.replace(model=meta["model"]), meta["in_channels"], meta["num_outputs"])
    model.load_state_dict(state["ema_model"] if state.get("ema_model") is not None else state["model"])
    model.to(device)
    loader = make_loader(data, task, split, cfg.batch_size, 0, False, cfg.seed, events)
    counts = class_counts(events, data, "train") if task == "classification" else None
    loss_fn = create_loss(cfg.loss_name(task), cfg, task, events.direction, counts)
    outs = predict(model, loader, loss_fn, task, device, amp_dtype_for(cfg, device))
    physics, confusion = physics_metrics(outs, events, events.has_weights)
    if out_dir is not None:
        write_artifacts(Path(out_dir), outs, events, data, confusion)
    return {f"{split}/loss": outs.loss, **prefixed(physics, split)}
