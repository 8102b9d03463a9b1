"""Precise BN: the recomputed statistics by hand, frozen layers and momenta kept; in the loop, training unchanged,
the evaluated model's statistics recomputed, and the checkpoint reproducing the logged validation figures."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fixtures_loop import KeepingReporter, make_spec
from trainables.checkpoint import load_state
from trainables.config import DataConfig, TrialConfig
from trainables.contract import logged_metrics
from trainables.errors import BadInput
from trainables.loop import evaluate_checkpoint, train_trial
from trainables.models import create_model, set_train_mode
from trainables.precise_bn import batch_norm_layers, recompute_bn_stats

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batches(n_batches: int, size: int = 8, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(size, 3, 4, 4, generator=g) * (1 + k) + k for k in range(n_batches)]


def test_statistics_are_the_equal_weight_average_over_the_batches():
    bn = nn.BatchNorm2d(3, momentum=0.1)
    bn.running_mean.fill_(100.0)  # what a lagging exponential average left behind
    bn.eval()
    batches = _batches(4)
    used = recompute_bn_stats(bn, batches, samples=32)
    assert used == 32
    means = torch.stack([b.mean(dim=(0, 2, 3)) for b in batches])
    variances = torch.stack([b.transpose(0, 1).reshape(3, -1).var(dim=1, unbiased=True) for b in batches])
    assert torch.allclose(bn.running_mean, means.mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, variances.mean(0), atol=1e-4)
    assert bn.momentum == 0.1 and not bn.training  # momentum and mode as they were
    assert int(bn.num_batches_tracked) == 4


def test_it_stops_after_the_samples_asked_for_in_whole_batches():
    bn = nn.BatchNorm2d(3)
    seen = []

    def counted():
        for b in _batches(10):
            seen.append(b)
            yield b

    assert recompute_bn_stats(bn, counted(), samples=20) == 24  # three batches of 8
    assert len(seen) == 3


def test_frozen_backbone_keeps_its_statistics_and_nothing_runs():
    model = create_model("small_cnn_tiny", 3, 2).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ran = []
    used = recompute_bn_stats(model, (ran.append(b) or b for b in _batches(3)), 16,
                              set_mode=lambda m: set_train_mode(m, "frozen"))
    assert used == 0 and ran == []  # every BatchNorm sits in the frozen backbone
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert recompute_bn_stats(model, _batches(3), samples=0) == 0
    assert recompute_bn_stats(model, [], samples=16) == 0  # no data: statistics kept, not reset
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert batch_norm_layers(model) == [] and not model.training  # eval mode restored


def test_precise_bn_is_a_validated_trial_key():
    assert TrialConfig().precise_bn > 0
    for bad in (-1, 1.5, True):
        with pytest.raises(BadInput, match="precise_bn"):
            TrialConfig.from_dict({"precise_bn": bad})


def _bn_buffers(state: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if "running_" in k or "num_batches_tracked" in k}


def test_the_loop_recomputes_only_the_statistics_of_the_evaluated_model(tiny_h5, tmp_path):
    off, on = KeepingReporter(tmp_path / "off"), KeepingReporter(tmp_path / "on")
    train_trial(make_spec(tiny_h5, tmp_path, epochs=1, precise_bn=0), off)
    train_trial(make_spec(tiny_h5, tmp_path, epochs=1, precise_bn=64), on)
    s_off, s_on = load_state(tmp_path / "off" / "epoch1"), load_state(tmp_path / "on" / "epoch1")
    weights = [k for k in s_on["model"] if k not in _bn_buffers(s_on["model"])]
    assert all(torch.equal(s_off["model"][k], s_on["model"][k]) for k in weights), "training must not change"
    recomputed = _bn_buffers(s_on["eval_model"])
    assert all(int(v) == math.ceil(64 / 32) for k, v in recomputed.items() if k.endswith("num_batches_tracked"))
    key = "backbone.0.1.running_var"
    assert not torch.equal(s_on["eval_model"][key], s_off["eval_model"][key])
    assert off.history[0][1]["val/loss"] != on.history[0][1]["val/loss"]


@pytest.mark.parametrize("trial", [{"precise_bn": 64}, {"precise_bn": 64, "ema_decay": 0.9}], ids=["live", "ema"])
def test_the_checkpoint_reproduces_the_logged_validation_figures(tiny_h5, tmp_path, trial):
    reporter = KeepingReporter(tmp_path / "kept")
    train_trial(make_spec(tiny_h5, tmp_path, epochs=2, **trial), reporter)
    logged = reporter.history[-1][1]
    for _, metrics in reporter.history:  # the contract lists every name a trial logs (model/, val_live/ included)
        assert set(metrics) <= logged_metrics("classification", ("NC", "nueCC", "numuCC")), set(metrics)
    again = evaluate_checkpoint(tmp_path / "kept" / "epoch2", DataConfig(path=str(tiny_h5)), "classification", "val")
    assert again and all(logged[k] == v for k, v in again.items()), {k: (logged[k], v) for k, v in again.items()}
    state = load_state(tmp_path / "kept" / "epoch2")
    source = state["ema_model"] if "ema_decay" in trial else state["model"]
    assert all(torch.equal(v, source[k]) for k, v in state["eval_model"].items())
