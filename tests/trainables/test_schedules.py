"""LR curves (warmup, cosine, step, onecycle, plateau), group ratios, optimizers, and exact resume."""

from __future__ import annotations

import io
import math

import pytest
import torch

from trainables.config import TrialConfig
from trainables.schedules import SCHEDULES, create_optimizer, create_schedule

LR = 0.1


def _optimizer(cfg: TrialConfig, mult: float = 1.0) -> torch.optim.Optimizer:
    """Two groups like param_groups' finetune: head at lr, backbone at lr * mult."""
    torch.manual_seed(0)
    head, backbone = torch.nn.Linear(3, 2), torch.nn.Linear(3, 3)
    groups = [
        {"name": "head", "params": list(head.parameters()), "lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"name": "backbone", "params": list(backbone.parameters()), "lr": cfg.lr * mult, "weight_decay": 0.0},
    ]
    return create_optimizer(groups, cfg)


def _curve(name: str, epochs: int, steps: int, val_losses=None, **cfg) -> tuple[list[float], object]:
    """The LR each optimizer step used, epoch by epoch, as the loop drives the schedule."""
    config = TrialConfig(lr=LR, **cfg)
    opt = _optimizer(config)
    schedule = create_schedule(name, opt, config, max_epochs=epochs, steps_per_epoch=steps)
    used = []
    for epoch in range(epochs):
        for _ in range(steps):
            used.append(schedule.current_lr)
            opt.step()
            schedule.after_step()
        schedule.after_epoch(val_losses[epoch] if val_losses else 1.0 / (epoch + 1))
    return used, schedule


def test_warmup_is_linear_then_the_schedule():
    used, _ = _curve("constant", epochs=3, steps=4, warmup_epochs=1.0)
    assert used == pytest.approx([LR * f for f in (1 / 5, 2 / 5, 3 / 5, 4 / 5)] + [LR] * 8)


def test_fractional_warmup_counts_steps():
    used, _ = _curve("constant", epochs=2, steps=4, warmup_epochs=0.5)  # 2 steps
    assert used == pytest.approx([LR / 3, 2 * LR / 3] + [LR] * 6)


def test_cosine_falls_from_lr_to_near_zero():
    used, schedule = _curve("cosine", epochs=4, steps=5)
    total = 20
    assert used == pytest.approx([LR * 0.5 * (1 + math.cos(math.pi * k / total)) for k in range(total)])
    assert all(a > b for a, b in zip(used, used[1:]))
    assert used[-1] < 0.01 * LR and schedule.current_lr == pytest.approx(0.0, abs=1e-12)


def test_cosine_after_warmup_starts_at_lr():
    used, _ = _curve("cosine", epochs=3, steps=4, warmup_epochs=1.0)
    assert used[:4] == pytest.approx([LR * f for f in (1 / 5, 2 / 5, 3 / 5, 4 / 5)])
    assert used[4] == pytest.approx(LR) and used[-1] < 0.05 * LR


def test_step_drops_tenfold_at_a_third_and_two_thirds():
    used, _ = _curve("step", epochs=3, steps=4)
    assert used == pytest.approx([LR] * 4 + [LR / 10] * 4 + [LR / 100] * 4)


def test_onecycle_rises_to_lr_at_30_percent_then_falls_far_below():
    used, _ = _curve("onecycle", epochs=4, steps=5)
    peak = max(range(len(used)), key=used.__getitem__)
    assert peak == 6 and used[peak] == pytest.approx(LR)  # round(0.3 * 20)
    assert used[0] == pytest.approx(LR / 25)
    assert all(a < b for a, b in zip(used[:peak], used[1 : peak + 1]))
    assert all(a > b for a, b in zip(used[peak:], used[peak + 1 :]))
    assert used[-1] == pytest.approx(LR / 25 / 1e4)  # torch OneCycleLR's end, on the last step


def test_onecycle_rise_is_the_warmup_when_one_is_given():
    used, _ = _curve("onecycle", epochs=4, steps=5, warmup_epochs=0.4)  # 2 steps
    assert max(range(len(used)), key=used.__getitem__) == 2


def test_plateau_halves_after_two_stagnant_epochs():
    # best 1.0, then 0.9 (better), 0.9 (1 bad), 0.9 (2 bad > patience 1: cut), 0.9 (1 bad again)
    used, schedule = _curve("plateau", epochs=5, steps=2, val_losses=[1.0, 0.9, 0.9, 0.9, 0.9])
    assert used == pytest.approx([LR] * 8 + [LR / 2] * 2)
    improving, _ = _curve("plateau", epochs=5, steps=2, val_losses=[1.0, 0.9, 0.8, 0.7, 0.6])
    assert improving == pytest.approx([LR] * 10)
    schedule.after_epoch(float("nan"))  # a NaN val loss is no improvement: 2 bad epochs now, cut again
    assert schedule.current_lr == pytest.approx(LR / 4)


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_group_lr_ratio_is_kept(name):
    cfg = TrialConfig(lr=LR, warmup_epochs=0.5)
    opt = _optimizer(cfg, mult=0.1)
    schedule = create_schedule(name, opt, cfg, max_epochs=3, steps_per_epoch=4)
    for epoch in range(3):
        for _ in range(4):
            opt.step()
            schedule.after_step()
            head, backbone = (g["lr"] for g in opt.param_groups)
            assert backbone == pytest.approx(0.1 * head, rel=1e-9, abs=1e-15)
        schedule.after_epoch(1.0)
    assert schedule.current_lr == opt.param_groups[0]["lr"]  # the head group's, documented


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_state_round_trip_continues_identically(name):
    """Straight through vs. stopped after 5 of 12 steps, saved, rebuilt from scratch and loaded."""
    cfg = TrialConfig(lr=LR, warmup_epochs=0.75)
    losses = [1.0, 1.0, 1.0, 1.0]  # stagnating: plateau cuts inside the window

    def run(opt, schedule, start: int, stop: int) -> list[float]:
        used = []
        for k in range(start, stop):
            used.append(schedule.current_lr)
            opt.step()
            schedule.after_step()
            if (k + 1) % 3 == 0:
                schedule.after_epoch(losses[k // 3])
        return used

    opt = _optimizer(cfg)
    straight = run(opt, create_schedule(name, opt, cfg, 4, 3), 0, 12)
    opt = _optimizer(cfg)
    schedule = create_schedule(name, opt, cfg, 4, 3)
    first = run(opt, schedule, 0, 6)
    buffer = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": schedule.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    opt = _optimizer(cfg)
    resumed = create_schedule(name, opt, cfg, 4, 3)
    opt.load_state_dict(saved["opt"])
    resumed.load_state_dict(saved["sched"])
    assert first + run(opt, resumed, 6, 12) == straight


def test_optimizers_keep_group_settings():
    adamw = _optimizer(TrialConfig(lr=LR, weight_decay=0.05), mult=0.5)
    assert isinstance(adamw, torch.optim.AdamW)
    assert [g["lr"] for g in adamw.param_groups] == [LR, LR * 0.5]
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.05, 0.0]
    sgd = _optimizer(TrialConfig(lr=LR, optimizer="sgd", momentum=0.8))
    assert isinstance(sgd, torch.optim.SGD)
    assert all(g["momentum"] == 0.8 and g["nesterov"] is False for g in sgd.param_groups)
