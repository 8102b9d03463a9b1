"""One trial's parts (model, optimizer, schedule, EMA, loaders) and one epoch of it: training, then validation
(after the precise-BN recompute of the evaluated model)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from torch import nn

from trainables._evaluate import physics_metrics, predict, write_artifacts
from trainables.checkpoint import seed_everything
from trainables.config import TrialConfig, TrialSpec, derived_seed
from trainables.data import EventFile, class_counts, make_loader, open_events
from trainables.ema import ModelEMA
from trainables.errors import BadInput, TrialDiverged
from trainables.losses import create_loss
from trainables.metrics import prefixed
from trainables.models import apply_mode, create_model, load_init, param_groups, set_train_mode
from trainables.precise_bn import recompute_bn_stats
from trainables.schedules import LRSchedule, create_optimizer, create_schedule
from trainables.telemetry import EpochTelemetry

NAN_CHECK_EVERY = 100  # steps between loss syncs: a NaN is caught early without a GPU sync every step
OOM_HOOK_ENV = "SCANNER_TEST_OOM_AT"  # tests: "epoch:step[:min_batch][,...]" raises torch.OutOfMemoryError there


def amp_dtype_for(cfg: TrialConfig, device: torch.device) -> torch.dtype | None:
    """AMP on CUDA only (CPU autocast is slower than fp32 for these convnets). ``bf16`` falls back to fp16 (with a
    GradScaler) on a GPU without bf16; ``off`` is fp32."""
    if device.type != "cuda" or cfg.amp == "off":
        return None
    if cfg.amp == "bf16" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def memory_format_for(cfg: TrialConfig, device: torch.device) -> torch.memory_format:
    """channels_last on CUDA only: on the CPU these convnets gain nothing from it."""
    return torch.channels_last if cfg.channels_last and device.type == "cuda" else torch.contiguous_format


class OomPoint(NamedTuple):
    epoch: int
    step: int
    min_batch: int = 0  # only a trial whose batch is at least this large runs out, as a huge batch would


def oom_points(text: str | None) -> list[OomPoint]:
    """``SCANNER_TEST_OOM_AT`` = "3:120,3:120" -> two points, each passed once, in that order; "2:1:64" raises at
    epoch 2 step 1 only in a trial whose batch size is at least 64 (so a sweep can have one trial run out)."""
    points = []
    for item in (text or "").split(","):
        if item.strip():
            numbers = [n.strip() for n in item.split(":")]
            if len(numbers) not in (2, 3) or not all(n.isdigit() for n in numbers):
                raise BadInput(f"{OOM_HOOK_ENV}={text}: expected epoch:step[:min_batch][,...], e.g. 1:2 or 2:1:64")
            points.append(OomPoint(*map(int, numbers)))
    return points


@dataclass
class Parts:
    """Everything built for one trial, so the epoch functions take one argument instead of ten."""

    spec: TrialSpec
    cfg: TrialConfig  # spec.trial, or its halved batch size and LR after an out-of-memory retry
    events: EventFile
    device: torch.device
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    ema: ModelEMA | None
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None
    memory_format: torch.memory_format
    oom_at: list[OomPoint] = field(default_factory=list)
    where: str = "start-up"  # what the trial was doing, for an out-of-memory message

    @property
    def evaluated(self) -> nn.Module:
        """The model whose metrics are reported: the EMA model when EMA is on."""
        return self.ema.module if self.ema is not None else self.model

    def to_device(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(self.device, non_blocking=True, memory_format=self.memory_format)


def build_model(cfg: TrialConfig, in_channels: int, num_outputs: int) -> nn.Module:
    model = create_model(cfg.model, in_channels, num_outputs)
    if cfg.mode != "scratch":
        load_init(model, cfg.init)
        apply_mode(model, cfg.mode)
    return model


def num_outputs(events: EventFile) -> int:
    return len(events.class_names) if events.class_names is not None else len(events.target_names)


def build(spec: TrialSpec, cfg: TrialConfig, oom_at: list[OomPoint], device: torch.device) -> Parts:
    seed_everything(cfg.seed)
    events = open_events(spec.data, spec.task)
    memory_format = memory_format_for(cfg, device)
    model = build_model(cfg, events.image_shape[0], num_outputs(events)).to(device, memory_format=memory_format)
    optimizer = create_optimizer(param_groups(model, cfg.lr, cfg.weight_decay, cfg.backbone_lr_mult, cfg.mode), cfg)

    def loader(split: str, shuffle: bool) -> torch.utils.data.DataLoader:
        return make_loader(spec.data, spec.task, split, cfg.batch_size, cfg.num_workers, shuffle, cfg.seed, events)

    train_loader, val_loader = loader("train", True), loader("val", False)
    counts = class_counts(events, spec.data, "train") if spec.task == "classification" else None
    amp_dtype = amp_dtype_for(cfg, device)
    return Parts(
        spec=spec,
        cfg=cfg,
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
        memory_format=memory_format,
        oom_at=oom_at,
    )


def _check_finite(loss_sum: torch.Tensor, epoch: int, step: int) -> None:
    value = float(loss_sum.item())
    if not math.isfinite(value):
        raise TrialDiverged(f"training loss became {value} at epoch {epoch}, step {step}; lower lr or grad_clip")


def reseed_order(loader: torch.utils.data.DataLoader, seed: int) -> None:
    """Each epoch's shuffle depends on (seed, epoch) only, so a resumed trial sees the same batches."""
    for source in (loader.batch_sampler, loader.sampler):
        generator = getattr(source, "generator", None)
        if isinstance(generator, torch.Generator):
            generator.manual_seed(seed)


def _oom_hook(p: Parts, epoch: int, step: int) -> None:
    if not p.oom_at or (p.oom_at[0].epoch, p.oom_at[0].step) != (epoch, step):
        return
    point = p.oom_at.pop(0)  # passed once, whether this trial's batch is large enough to run out or not
    if p.cfg.batch_size >= point.min_batch:
        raise torch.OutOfMemoryError(f"{OOM_HOOK_ENV}: simulated out of memory at epoch {epoch} step {step}")


def train_epoch(p: Parts, epoch: int, telemetry: EpochTelemetry, progress: bool) -> float:
    """One pass over the training split; the weighted mean training loss."""
    set_train_mode(p.model, p.cfg.mode)
    reseed_order(p.train_loader, derived_seed(p.cfg.seed, epoch))
    loss_sum = torch.zeros((), device=p.device, dtype=torch.float64)
    weight_sum = torch.zeros((), device=p.device, dtype=torch.float64)
    batches = telemetry.timed(p.train_loader)
    if progress:
        from tqdm import tqdm  # only for a terminal

        batches = tqdm(batches, total=len(p.train_loader), desc=f"epoch {epoch}", leave=False, unit="batch")
    for step, (images, y, w) in enumerate(batches, start=1):
        p.where = f"epoch {epoch} step {step}"
        _oom_hook(p, epoch, step)
        images, y, w = p.to_device(images), y.to(p.device, non_blocking=True), w.to(p.device, non_blocking=True)
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


def _backward_and_step(p: Parts, loss: torch.Tensor) -> None:
    clip = p.cfg.grad_clip
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


def precise_bn(p: Parts, epoch: int) -> int:
    """Recompute the evaluated model's BatchNorm statistics over ``precise_bn`` training samples: the first ones of
    this epoch's order, so a resumed trial recomputes exactly what an uninterrupted one did."""
    if p.cfg.precise_bn <= 0:
        return 0
    p.where = f"epoch {epoch} (precise BN)"
    reseed_order(p.train_loader, derived_seed(p.cfg.seed, epoch))
    inputs = (p.to_device(images) for images, _, _ in p.train_loader)
    with torch.autocast(p.device.type, dtype=p.amp_dtype, enabled=p.amp_dtype is not None):
        return recompute_bn_stats(p.evaluated, inputs, p.cfg.precise_bn, lambda m: set_train_mode(m, p.cfg.mode))


def validate(p: Parts, epoch: int, folder: Path) -> dict[str, float]:
    """Evaluate the EMA model when EMA is on (its metrics are the ones reported), the live one under val_live/."""
    precise_bn(p, epoch)
    p.where = f"epoch {epoch} (validation)"
    outs = predict(p.evaluated, p.val_loader, p.loss_fn, p.spec.task, p.device, p.amp_dtype, p.memory_format)
    physics, confusion = physics_metrics(outs, p.events, p.events.has_weights)
    metrics = {"val/loss": outs.loss, **prefixed(physics, "val")}
    write_artifacts(folder, outs, p.events, p.spec.data, confusion)
    if p.ema is not None:
        live = predict(p.model, p.val_loader, p.loss_fn, p.spec.task, p.device, p.amp_dtype, p.memory_format)
        live_physics, _ = physics_metrics(live, p.events, p.events.has_weights)
        metrics["val_live/loss"] = live.loss
        metrics.update(prefixed(live_physics, "val_live"))
    return metrics


def parameter_counts(model: nn.Module) -> dict[str, float]:
    """``model/params_total`` and ``model/params_trainable`` (a frozen backbone shows as the difference)."""
    params = list(model.parameters())
    return {"model/params_total": float(sum(t.numel() for t in params)),
            "model/params_trainable": float(sum(t.numel() for t in params if t.requires_grad))}


def oom_hook_points() -> list[OomPoint]:
    return oom_points(os.environ.get(OOM_HOOK_ENV))
