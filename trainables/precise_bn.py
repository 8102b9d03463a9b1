"""Precise BatchNorm statistics: recompute the running mean and variance of a model's BatchNorm layers over a few
hundred training samples with the current weights (detectron2's PreciseBN, Wu & Johnson 2021, "Rethinking 'Batch'
in BatchNorm").

    with torch.autocast(...):                       # as the training forward runs
        recompute_bn_stats(model, (x.to(device) for x, _, _ in train_loader), samples=512,
                           set_mode=lambda m: set_train_mode(m, "frozen"))

Why: the running statistics are an exponential average (momentum 0.1) over the last few dozen steps, taken while
the weights moved. Early in training they lag the weights, and in eval mode a short trial can score far below what
it learnt. Here each layer's statistics are reset and replaced by the cumulative (equal-weight) average over the
given batches (``momentum=None``), computed in a train-mode forward under ``no_grad``: the weights do not change.
Layers that ``set_mode`` leaves in eval mode (a frozen backbone) keep their statistics. Momenta and every module's
train/eval mode are restored afterwards.
"""

from __future__ import annotations

import itertools
from typing import Callable, Iterable

import torch
from torch import nn

__all__ = ["BATCH_NORMS", "batch_norm_layers", "recompute_bn_stats"]

# nn.BatchNorm* are the public classes; timm's BatchNormAct2d and torchvision's norms subclass them
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def batch_norm_layers(model: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers that keep running statistics and are in training mode (so would be recomputed)."""
    return [m for m in model.modules() if isinstance(m, BATCH_NORMS) and m.track_running_stats and m.training]


@torch.no_grad()
def recompute_bn_stats(
    model: nn.Module,
    inputs: Iterable[torch.Tensor],
    samples: int,
    set_mode: Callable[[nn.Module], None] = nn.Module.train,
) -> int:
    """Recompute the running statistics of ``model``'s BatchNorm layers over the first ``samples`` samples of
    ``inputs`` (model-ready batches; whole batches, so possibly a few more). Returns the number of samples used:
    0 when ``samples`` is 0, no layer is in training mode under ``set_mode`` or ``inputs`` is empty (nothing is run
    and nothing changes then)."""
    modes = [(m, m.training) for m in model.modules()]
    set_mode(model)
    layers = batch_norm_layers(model)
    batches = iter(inputs) if samples > 0 and layers else iter(())
    first = next(batches, None)
    if first is None:  # nothing to do, or no data: the statistics stay as they are
        _restore_modes(modes)
        return 0
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch counts the same
    seen = 0
    try:
        for batch in itertools.chain([first], batches):
            model(batch)
            seen += len(batch)
            if seen >= samples:
                break
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        _restore_modes(modes)
    return seen


def _restore_modes(modes: list[tuple[nn.Module, bool]]) -> None:
    for module, training in modes:
        module.training = training
