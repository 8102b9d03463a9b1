"""Losses by name, each returning PER-SAMPLE values of shape (N,): the loop applies event weights and the mean.

    loss_fn = create_loss("focal", cfg, "classification", class_counts=counts)
    loss = (loss_fn(logits, labels) * w).sum() / w.sum()

classification (logits (N, K), labels (N,)): ce, weighted_ce, focal, label_smoothing.
regression (pred (N, K), targets (N, K)): mse, smooth_l1, huber (mean over the K targets), angular (radians).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from trainables.config import TrialConfig
from trainables.errors import BadInput
from trainables.physics import DIRECTIONS, WORST_ANGLE_DEG
from trainables.registry import Registry

__all__ = ["LOSSES", "create_loss", "class_weights", "theta_phi_to_unit", "opening_angle"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOSSES: Registry[Callable[..., LossFn]] = Registry("loss")
WORST_ANGLE_RAD = float(np.radians(WORST_ANGLE_DEG))


# --- classification ----------------------------------------------------------------------------------------------


@LOSSES.register("ce", task="classification")
def _ce(cfg: TrialConfig, **_) -> LossFn:
    return lambda logits, y: F.cross_entropy(logits, y.long(), reduction="none")


def class_weights(class_counts: np.ndarray) -> torch.Tensor:
    """Inverse training-set frequency, normalised to mean 1 so the LR means the same as with plain ce.

    An empty class counts as 1 event: it never appears in training, and a finite weight keeps val/loss finite.
    """
    counts = np.maximum(np.asarray(class_counts, dtype=np.float64), 1.0)
    inverse = 1.0 / counts
    return torch.as_tensor(inverse / inverse.mean(), dtype=torch.float32)


@LOSSES.register("weighted_ce", task="classification")
def _weighted_ce(cfg: TrialConfig, class_counts: np.ndarray | None = None, **_) -> LossFn:
    if class_counts is None:
        raise BadInput("loss 'weighted_ce' needs the training-set class counts (labels dataset)")
    weights = class_weights(class_counts)

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y.long(), weight=weights.to(logits.device), reduction="none")

    return loss


@LOSSES.register("focal", task="classification")
def _focal(cfg: TrialConfig, **_) -> LossFn:
    """Lin et al. 2017: (1 - p_t)^gamma * ce; gamma = 0 is ce. Down-weights the easy, well-classified events."""
    gamma = float(cfg.focal_gamma)

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, y.long(), reduction="none")
        # 1 - p_t via expm1 keeps precision for easy events; the floor keeps pow's gradient finite when ce == 0
        one_minus_p = (-torch.expm1(-ce)).clamp_min(1e-12)
        return one_minus_p**gamma * ce

    return loss


@LOSSES.register("label_smoothing", task="classification")
def _label_smoothing(cfg: TrialConfig, **_) -> LossFn:
    eps = float(cfg.label_smoothing)
    return lambda logits, y: F.cross_entropy(logits, y.long(), reduction="none", label_smoothing=eps)


# --- regression --------------------------------------------------------------------------------------------------


@LOSSES.register("mse", task="regression")
def _mse(cfg: TrialConfig, **_) -> LossFn:
    return lambda pred, t: F.mse_loss(pred, t.to(pred.dtype), reduction="none").mean(dim=1)


@LOSSES.register("smooth_l1", task="regression")
def _smooth_l1(cfg: TrialConfig, **_) -> LossFn:
    beta = float(cfg.smooth_l1_beta)
    return lambda pred, t: F.smooth_l1_loss(pred, t.to(pred.dtype), reduction="none", beta=beta).mean(dim=1)


@LOSSES.register("huber", task="regression")
def _huber(cfg: TrialConfig, **_) -> LossFn:
    delta = float(cfg.huber_delta)
    return lambda pred, t: F.huber_loss(pred, t.to(pred.dtype), reduction="none", delta=delta).mean(dim=1)


def theta_phi_to_unit(angles: torch.Tensor) -> torch.Tensor:
    """(θ, φ) in radians, θ from the z axis -> unit vector (as trainables/_metrics_regression.py does)."""
    theta, phi = angles[:, 0], angles[:, 1]
    return torch.stack([theta.sin() * phi.cos(), theta.sin() * phi.sin(), theta.cos()], dim=1)


def opening_angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle between rows of a and b in radians, atan2(|a×b|, a·b).

    Unlike acos(a·b) it has a finite gradient at 0 and π and keeps precision for small angles (acos' slope is
    infinite at 1). It is scale invariant; a is normalised anyway so a collapsing prediction cannot hide in it.
    A zero-length row has no direction: its angle is π, the worst answer, as in ``trainables.physics
    .opening_angle_deg`` (atan2(0, 0) would otherwise make an all-zero prediction the best one, at 0).
    """
    no_direction = (a == 0).all(dim=1) | (b == 0).all(dim=1)
    a = F.normalize(a, dim=1, eps=1e-12)
    b = F.normalize(b, dim=1, eps=1e-12)
    cross = torch.linalg.vector_norm(torch.linalg.cross(a, b, dim=1), dim=1)
    angle = torch.atan2(cross, (a * b).sum(dim=1))
    return torch.where(no_direction, torch.full_like(angle, WORST_ANGLE_RAD), angle)


@LOSSES.register("angular", task="regression")
def _angular(cfg: TrialConfig, direction: str | None = None, **_) -> LossFn:
    if direction not in DIRECTIONS:
        raise BadInput(
            f"loss 'angular' needs direction targets: the targets dataset's attribute direction = unit_vector (K=3) "
            f"or theta_phi (K=2), got {direction!r}; use mse/smooth_l1/huber for other targets"
        )
    if direction == "theta_phi":
        return lambda pred, t: opening_angle(theta_phi_to_unit(pred), theta_phi_to_unit(t.to(pred.dtype)))
    return lambda pred, t: opening_angle(pred, t.to(pred.dtype))


# --- factory -----------------------------------------------------------------------------------------------------


def create_loss(
    name: str,
    cfg: TrialConfig,
    task: str,
    direction: str | None = None,
    class_counts: np.ndarray | None = None,
) -> LossFn:
    """The per-sample loss ``name`` for ``task``; BadInput for an unknown name or one of the other task."""
    LOSSES.check(name)
    if LOSSES.tags(name)["task"] != task:
        raise BadInput(f"loss '{name}' is not a {task} loss; {task} losses: {', '.join(LOSSES.names(task=task))}")
    return LOSSES.create(name, cfg, direction=direction, class_counts=class_counts)
