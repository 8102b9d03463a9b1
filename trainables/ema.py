"""Exponential moving average of the weights AND buffers (BatchNorm statistics), with a decay warm-up.

    ema = ModelEMA(model, decay=0.999)
    ... optimizer.step(); ema.update(model)     # every step
    evaluate(ema.module)                        # the averaged model is the one evaluated and reported
    state["ema_model"] = ema.model_state_dict() # same keys as model.state_dict()

Built on ``torch.optim.swa_utils.AveragedModel(use_buffers=True)``. The first update copies the live model; update
n+1 (n updates already folded in) uses decay min(decay, (1 + n) / (10 + n)): 0.1, 0.18, 0.25, ... rising towards the
configured decay, which it reaches after (10 decay - 1) / (1 - decay) updates. So a 0.9999 EMA of a short sweep trial
follows the training instead of staying near the random init for 10 000 steps. (The rule is the ``num_updates``
warm-up of TensorFlow's ``ExponentialMovingAverage``.) With ``precise_bn`` on, the loop replaces the averaged
model's BatchNorm statistics by recomputed ones before each evaluation, and the average continues from those.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from trainables.compat import foreach_lerp_

__all__ = ["ModelEMA", "warmup_decay"]


def warmup_decay(decay: float, updates: int) -> float:
    """The decay of the update after ``updates`` earlier ones: 0.1, 0.18, 0.25, ... up to ``decay``."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay {decay} must be in [0, 1)")
        self.decay = float(decay)
        self.updates = 0  # mirrors AveragedModel.n_averaged as a Python int: no device sync to read it
        self._now = self.decay
        self.averaged = AveragedModel(model, multi_avg_fn=self._average, use_buffers=True)
        self.averaged.eval()
        for p in self.averaged.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def _average(self, ema: list[torch.Tensor], live: list[torch.Tensor], _n: torch.Tensor) -> None:
        """Called by AveragedModel per (device, dtype) group. Integer buffers (BatchNorm's num_batches_tracked)
        are counters, not estimates: they take the live value."""
        if torch.is_floating_point(ema[0]) or torch.is_complex(ema[0]):
            foreach_lerp_(ema, live, 1.0 - self._now)
        else:
            for e, x in zip(ema, live):
                e.copy_(x)

    def update(self, model: nn.Module) -> None:
        self._now = warmup_decay(self.decay, self.updates)
        self.averaged.update_parameters(model)
        self.updates += 1

    @property
    def module(self) -> nn.Module:
        """The averaged model (same class as the live one), for evaluation."""
        return self.averaged.module

    def model_state_dict(self) -> dict[str, torch.Tensor]:
        """The plain averaged weights, keyed like the live model's state_dict: checkpoints' ``ema_model``."""
        return self.averaged.module.state_dict()

    def state_dict(self) -> dict[str, Any]:
        return {"averaged": self.averaged.state_dict(), "decay": self.decay, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.averaged.load_state_dict(state["averaged"])
        self.updates = int(state["updates"])
        self.decay = float(state.get("decay", self.decay))
