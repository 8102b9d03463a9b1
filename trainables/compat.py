"""Private torch/torchvision APIs the trainables cannot avoid, each behind one small function that a test pins
(tests/trainables/test_compat.py): when a library changes one of them, one place breaks, loudly.

    from trainables.compat import foreach_lerp_, mobilenet_v3_blocks, set_last_lr, shared_empty
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch.optim.lr_scheduler import LRScheduler


def set_last_lr(scheduler: LRScheduler, lrs: Sequence[float]) -> None:
    """Make ``scheduler.get_last_lr()`` (and the ``_last_lr`` its ``state_dict`` saves) say ``lrs``: for an LR that
    the caller set on the param groups between two ``step()`` calls. torch has no public setter."""
    scheduler._last_lr = [float(lr) for lr in lrs]


def shared_empty(shape: Sequence[int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An uninitialised CPU tensor in shared memory, made the way ``default_collate`` makes its batches in
    DataLoader workers: handing it to the main process costs no copy. (``share_memory_()`` on a fresh tensor would
    allocate and copy once more.)"""
    proto = torch.empty(0, dtype=dtype)
    storage = proto._typed_storage()._new_shared(math.prod(shape), device=proto.device)
    return proto.new(storage).resize_(*shape)


def mobilenet_v3_blocks(arch: str, width_mult: float) -> list:
    """torchvision's inverted-residual settings of ``mobilenet_v3_small``/``_large`` at a width (the
    ``InvertedResidualConfig`` list that ``MobileNetV3`` takes): torchvision builds only width 1.0 publicly."""
    from torchvision.models.mobilenetv3 import _mobilenet_v3_conf  # heavy: loads only for this model family

    blocks, _last_channel = _mobilenet_v3_conf(arch, width_mult=width_mult)
    return list(blocks)


def foreach_lerp_(targets: list[torch.Tensor], sources: list[torch.Tensor], weight: float) -> None:
    """``t += weight * (s - t)`` for every pair, in one fused kernel per device and dtype (``torch.lerp_`` per
    tensor is the public, slower equivalent)."""
    torch._foreach_lerp_(targets, sources, weight)
