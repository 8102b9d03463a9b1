"""ModelEMA: the warm-up formula, buffers averaged (counters copied), a 0.9999 EMA that follows a short run,
checkpoint keys, and an exact state round trip."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from trainables.ema import ModelEMA, warmup_decay
from trainables.models import create_model


class _Probe(nn.Module):
    """One weight and one BatchNorm, so every average can be written out by hand."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.bn = nn.BatchNorm1d(1)


def _set(probe: _Probe, w: float, running_mean: float, batches: int) -> None:
    with torch.no_grad():
        probe.w.fill_(w)
        probe.bn.running_mean.fill_(running_mean)
        probe.bn.num_batches_tracked.fill_(batches)


def test_warmup_decay_formula():
    assert warmup_decay(0.9999, 0) == pytest.approx(1 / 10)
    assert warmup_decay(0.9999, 1) == pytest.approx(2 / 11)
    assert warmup_decay(0.9999, 90) == pytest.approx(91 / 100)
    assert warmup_decay(0.9, 1000) == 0.9  # capped at the configured decay
    assert warmup_decay(0.0, 5) == 0.0


def test_updates_follow_the_warmed_up_decay_for_weights_and_buffers():
    live = _Probe()
    ema = ModelEMA(live, decay=0.5)
    _set(live, w=4.0, running_mean=10.0, batches=1)
    ema.update(live)  # first update: a copy
    _set(live, w=8.0, running_mean=20.0, batches=2)
    ema.update(live)  # 1 earlier update: decay min(0.5, 2/11) = 2/11
    d1 = 2 / 11
    w2, m2 = d1 * 4.0 + (1 - d1) * 8.0, d1 * 10.0 + (1 - d1) * 20.0
    _set(live, w=0.0, running_mean=0.0, batches=3)
    ema.update(live)  # 2 earlier updates: min(0.5, 3/12) = 0.25
    w3, m3 = 0.25 * w2, 0.25 * m2
    assert ema.updates == 3
    assert ema.module.w.item() == pytest.approx(w3)
    assert ema.module.bn.running_mean.item() == pytest.approx(m3)  # BatchNorm statistics are averaged too
    assert ema.module.bn.num_batches_tracked.item() == 3  # a counter: copied, not averaged into a fraction


def test_a_0_9999_ema_follows_a_20_step_run():
    """Without the warm-up a 0.9999 EMA would sit within 1/20 of the first step's weights after 20 steps."""
    torch.manual_seed(0)
    model = create_model("small_cnn_tiny", 2, 3)
    init = nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    ema = ModelEMA(model, decay=0.9999)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(20):
        loss = nn.functional.cross_entropy(model(torch.randn(8, 2, 16, 16)), torch.randint(0, 3, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(model)
    live = nn.utils.parameters_to_vector(model.parameters()).detach()
    averaged = nn.utils.parameters_to_vector(ema.module.parameters()).detach()
    assert (averaged - init).norm() > 0.5 * (live - init).norm()
    assert not torch.equal(averaged, live)


def test_module_is_an_eval_copy_and_checkpoint_keys_match_the_live_model():
    model = create_model("resnet_tiny", 2, 3)
    ema = ModelEMA(model, decay=0.99)
    ema.update(model)
    assert type(ema.module) is type(model) and not ema.module.training
    assert all(not p.requires_grad for p in ema.module.parameters())
    assert ema.module(torch.randn(2, 2, 32, 32)).shape == (2, 3)
    weights = ema.model_state_dict()
    assert list(weights) == list(model.state_dict())
    fresh = create_model("resnet_tiny", 2, 3)
    fresh.load_state_dict(weights)  # what evaluate_checkpoint does with "ema_model"
    assert torch.equal(fresh.backbone.conv1.weight, model.backbone.conv1.weight)


def test_state_round_trip_restores_the_update_count_and_continues_identically():
    torch.manual_seed(0)
    live = _Probe()
    ema = ModelEMA(live, decay=0.999)
    for step in range(5):
        _set(live, w=float(step), running_mean=float(step * 2), batches=step)
        ema.update(live)
    buffer = io.BytesIO()
    torch.save(ema.state_dict(), buffer)
    buffer.seek(0)
    restored = ModelEMA(_Probe(), decay=0.999)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.updates == 5
    _set(live, w=100.0, running_mean=50.0, batches=6)
    ema.update(live)
    restored.update(live)
    assert restored.module.w.item() == ema.module.w.item()
    assert restored.module.bn.running_mean.item() == ema.module.bn.running_mean.item()


def test_bad_decay_is_refused():
    with pytest.raises(ValueError, match="decay 1.0 must be in"):
        ModelEMA(_Probe(), decay=1.0)
