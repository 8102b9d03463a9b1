"""Optimizers and learning-rate schedules, stepped per optimizer step so a resume lands on the exact same LR.

    optimizer = create_optimizer(param_groups(model, ...), cfg)
    schedule = create_schedule(cfg.lr_schedule, optimizer, cfg, max_epochs, len(train_loader))
    ... optimizer.step(); schedule.after_step()         # every step
    schedule.after_epoch(val_loss)                        # once per epoch (only plateau listens)

Every schedule is one ``LambdaLR`` multiplier on each group's own base LR, so the backbone/head LR ratio of
fine-tuning is preserved, times a plateau scale; both are in ``state_dict()``. A schedule factory in ``SCHEDULES``
takes (total_steps, warmup_steps) and returns the multiplier of step k (0-based: the LR of the k-th optimizer step).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch.optim.lr_scheduler import LambdaLR

from trainables.compat import set_last_lr
from trainables.config import TrialConfig
from trainables.errors import BadInput
from trainables.registry import Registry

__all__ = ["SCHEDULES", "LRSchedule", "create_optimizer", "create_schedule"]

Factor = Callable[[int], float]
SCHEDULES: Registry[Callable[[int, int], Factor]] = Registry("lr schedule")

ONECYCLE_RISE = 0.3  # torch OneCycleLR's pct_start: the share of training spent rising when no warmup is given
ONECYCLE_DIV = 25.0  # torch's div_factor: the cycle starts at lr / 25
ONECYCLE_FINAL_DIV = 1e4  # torch's final_div_factor: it ends at lr / 25 / 1e4
STEP_GAMMA = 0.1  # the ResNet recipe's x0.1 per milestone
PLATEAU_FACTOR = 0.5  # halve rather than /10: sweeps run few epochs, a /10 late in a short run ends learning
PLATEAU_PATIENCE = 1  # epochs without improvement tolerated before a cut (short runs again)
PLATEAU_THRESHOLD = 1e-4  # torch's relative improvement that counts as better


def _warmup(k: int, warmup: int) -> float:
    """Linear ramp 1/(W+1) ... W/(W+1), then 1: the first step is already > 0, the ramp never repeats a value."""
    return (k + 1) / (warmup + 1) if k < warmup else 1.0


def _cos_between(start: float, end: float, fraction: float) -> float:
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * min(max(fraction, 0.0), 1.0)))


@SCHEDULES.register("constant")
def constant(total: int, warmup: int) -> Factor:
    return lambda k: _warmup(k, warmup)


@SCHEDULES.register("cosine")
def cosine(total: int, warmup: int) -> Factor:
    """Half a cosine from 1 after the warmup to 0 at the end of training (no restarts, no floor)."""
    span = max(1, total - warmup)
    return lambda k: _warmup(k, warmup) if k < warmup else _cos_between(1.0, 0.0, (k - warmup) / span)


@SCHEDULES.register("step")
def step(total: int, warmup: int) -> Factor:
    """x0.1 at 1/3 and 2/3 of training: the ResNet recipe (x0.1 at epochs 30 and 60 of 90) expressed as fractions,
    so the curve keeps its shape whatever ``max_epochs`` a sweep picks, and the last third is the settled phase."""
    milestones = (round(total / 3), round(2 * total / 3))
    return lambda k: _warmup(k, warmup) * STEP_GAMMA ** sum(k >= m for m in milestones)


@SCHEDULES.register("onecycle")
def onecycle(total: int, warmup: int) -> Factor:
    """Smith's one-cycle (torch OneCycleLR's cosine shape, LR only): lr/25 -> lr -> lr/2.5e5. The rise lasts the
    warmup when one is given (it *is* a warmup), else 30 %. No momentum cycling: AdamW's betas stay put."""
    rise = warmup if warmup > 0 else max(1, round(ONECYCLE_RISE * total))
    low, final = 1.0 / ONECYCLE_DIV, 1.0 / (ONECYCLE_DIV * ONECYCLE_FINAL_DIV)

    def factor(k: int) -> float:
        if k < rise:
            return _cos_between(low, 1.0, k / rise)
        return _cos_between(1.0, final, (k - rise) / max(1, total - 1 - rise))  # the last step is at lr/2.5e5

    return factor


@SCHEDULES.register("plateau", on_plateau=True)
def plateau(total: int, warmup: int) -> Factor:
    """Flat after the warmup; ``LRSchedule.after_epoch`` halves it when val loss stagnates (ReduceLROnPlateau)."""
    return lambda k: _warmup(k, warmup)


class _Plateau:
    """torch ReduceLROnPlateau's rule (mode min, relative threshold, no cooldown), kept as plain numbers so it
    composes with the per-step warmup and lands in one state_dict."""

    def __init__(self) -> None:
        self.best = math.inf
        self.bad_epochs = 0

    def should_reduce(self, val_loss: float) -> bool:
        if math.isfinite(val_loss) and val_loss < self.best * (1.0 - PLATEAU_THRESHOLD):
            self.best, self.bad_epochs = val_loss, 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs > PLATEAU_PATIENCE:
            self.bad_epochs = 0
            return True
        return False


class LRSchedule:
    """Per-step multiplier on every group's base LR. ``current_lr`` is the FIRST group's LR: ``param_groups``
    puts the head first, so it is the trial's ``lr`` (with ``backbone_lr_mult`` the backbone runs at mult x it)."""

    def __init__(self, optimizer: torch.optim.Optimizer, factor: Factor, on_plateau: bool = False):
        self.optimizer = optimizer
        self.scale = 1.0  # the plateau cuts; 1 for every other schedule
        self._factor = factor
        self._plateau = _Plateau() if on_plateau else None
        self._lambda = LambdaLR(optimizer, lambda k: self._factor(k) * self.scale)

    def after_step(self) -> None:
        self._lambda.step()

    def after_epoch(self, val_loss: float) -> None:
        if self._plateau is not None and self._plateau.should_reduce(float(val_loss)):
            self.scale *= PLATEAU_FACTOR
            self._apply()  # now, not at the next step: the next epoch's first step must already use the cut

    @property
    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def steps(self) -> int:
        return int(self._lambda.last_epoch)

    def _apply(self) -> None:
        k = self._lambda.last_epoch
        for group, base in zip(self.optimizer.param_groups, self._lambda.base_lrs):
            group["lr"] = base * self._factor(k) * self.scale
        set_last_lr(self._lambda, [g["lr"] for g in self.optimizer.param_groups])

    def state_dict(self) -> dict[str, Any]:
        plateau = None
        if self._plateau is not None:
            plateau = {"best": self._plateau.best, "bad_epochs": self._plateau.bad_epochs}
        return {"lambda": self._lambda.state_dict(), "scale": self.scale, "plateau": plateau}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._lambda.load_state_dict(state["lambda"])
        self.scale = float(state["scale"])
        if self._plateau is not None and state.get("plateau") is not None:
            self._plateau.best = float(state["plateau"]["best"])
            self._plateau.bad_epochs = int(state["plateau"]["bad_epochs"])
        self._apply()  # the groups' LRs follow the restored step even if the optimizer state was not loaded


def create_optimizer(groups: list[dict[str, Any]], cfg: TrialConfig) -> torch.optim.Optimizer:
    """AdamW (decoupled decay) or SGD with momentum (no Nesterov: the plain recipe the physics papers report).
    Each group's own ``lr``/``weight_decay`` win over the config's, which only fill in missing ones."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=False)
    raise BadInput(f"optimizer '{cfg.optimizer}' is not one of adamw, sgd")


def create_schedule(
    name: str, optimizer: torch.optim.Optimizer, cfg: TrialConfig, max_epochs: int, steps_per_epoch: int
) -> LRSchedule:
    """``name`` over ``max_epochs * steps_per_epoch`` steps, after ``cfg.warmup_epochs`` (fractional) of warmup."""
    SCHEDULES.check(name)
    total = max(1, int(max_epochs) * int(steps_per_epoch))
    warmup = min(total, max(0, round(float(cfg.warmup_epochs) * steps_per_epoch)))
    factor = SCHEDULES.create(name, total, warmup)
    return LRSchedule(optimizer, factor, on_plateau=bool(SCHEDULES.tags(name).get("on_plateau")))
