"""One contract every registered model, loss and LR schedule must keep (Optuna's shared sampler tests style).

A new entry in a registry is picked up here automatically: it builds, takes an optimizer step on CPU, gives the
documented shapes and finite values, and (models) has a tiny variant for tests.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainables.config import TrialConfig
from trainables.errors import BadInput
from trainables.losses import LOSSES, create_loss
from trainables.models import MODELS, DetectorNet, create_model, param_groups, tiny_variant
from trainables.schedules import SCHEDULES, create_optimizer, create_schedule

TINY = sorted({MODELS.tags(n)["tiny"] for n in MODELS.names()})
FULL = [n for n in MODELS.names() if n not in TINY]
IMAGE = 64  # the smallest size every full-size net (stride 32) still pools from 2x2 with BatchNorm statistics

# Every channel count on the tiny nets and the scratch CNN; the full-size nets get the views' 2 and, as slow
# tests, 1 and 3 (their first conv is the only part that depends on it, and the tiny variants cover that code).
MODEL_CASES = (
    [pytest.param(n, c, id=f"{n}-c{c}") for n in TINY + ["small_cnn"] for c in (1, 2, 3)]
    + [pytest.param(n, 2, id=f"{n}-c2") for n in FULL if n != "small_cnn"]
    + [pytest.param(n, c, id=f"{n}-c{c}", marks=pytest.mark.slow) for n in FULL if n != "small_cnn" for c in (1, 3)]
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _loss_inputs(name: str, n: int = 4) -> tuple[str, dict, torch.Tensor, torch.Tensor]:
    """(task, create_loss kwargs, prediction, truth) for the loss's task."""
    g = torch.Generator().manual_seed(0)
    if LOSSES.tags(name)["task"] == "classification":
        logits, labels = torch.randn(n, 3, generator=g), torch.tensor([0, 1, 2, 1])
        return "classification", {"class_counts": np.array([5, 1, 2])}, logits, labels
    truth = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=1)
    return "regression", {"direction": "unit_vector"}, torch.randn(n, 3, generator=g), truth


class TestRegistryContract:
    @pytest.mark.parametrize("name,in_channels", MODEL_CASES)
    def test_model_builds_and_takes_a_step(self, name, in_channels):
        torch.manual_seed(0)
        model = create_model(name, in_channels, num_outputs=3)
        assert isinstance(model, DetectorNet)
        assert (model.model_name, model.in_channels, model.num_outputs) == (name, in_channels, 3)
        assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == 3
        x = torch.randn(2, in_channels, IMAGE, IMAGE)
        features = model.backbone(x)
        assert features.shape == (2, model.head.in_features)
        opt = create_optimizer(param_groups(model, 1e-3, 1e-4, 1.0, "scratch"), TrialConfig())
        before = model.head.weight.detach().clone()
        out = model(x)
        assert out.shape == (2, 3)
        loss = torch.nn.functional.cross_entropy(out, torch.tensor([0, 2]))
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
        assert not torch.equal(model.head.weight, before)

    @pytest.mark.parametrize("name", MODELS.names())
    def test_every_model_names_an_existing_tiny_variant_of_its_family(self, name):
        tags = MODELS.tags(name)
        assert {"family", "tiny", "pretrained_source"} <= set(tags)
        tiny = tiny_variant(name)
        assert tiny in MODELS and MODELS.tags(tiny)["family"] == tags["family"]
        assert tags["pretrained_source"] in ("torchvision", "timm", None)

    def test_every_family_has_a_tiny_variant(self):
        families = {MODELS.tags(n)["family"] for n in MODELS.names()}
        tiny_families = {MODELS.tags(n)["family"] for n in TINY}
        assert families == tiny_families == {"resnet", "mobilenet", "convnextv2", "small_cnn"}

    def test_a_timm_name_builds_and_a_wrong_one_is_bad_input(self):
        model = create_model("timm:resnet10t", 2, 4)
        assert model(torch.randn(2, 2, 32, 32)).shape == (2, 4)
        with pytest.raises(BadInput, match="Unknown timm model 'resnet_nope'"):
            create_model("timm:resnet_nope", 2, 4)
        with pytest.raises(BadInput, match="Unknown model 'resnet19'; known: .*resnet18"):
            create_model("resnet19", 2, 4)

    @pytest.mark.parametrize("name", LOSSES.names())
    def test_loss_is_per_sample_finite_and_differentiable(self, name):
        task, kwargs, pred, truth = _loss_inputs(name)
        loss_fn = create_loss(name, TrialConfig(), task, **kwargs)
        pred = pred.requires_grad_(True)
        loss = loss_fn(pred, truth)
        assert loss.shape == (4,)
        assert torch.isfinite(loss).all() and (loss >= 0).all()
        loss.sum().backward()
        assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0

    @pytest.mark.parametrize("name", LOSSES.names())
    def test_loss_of_the_other_task_is_bad_input_naming_the_right_ones(self, name):
        task = LOSSES.tags(name)["task"]
        other = "regression" if task == "classification" else "classification"
        with pytest.raises(BadInput) as err:
            create_loss(name, TrialConfig(), other, direction="unit_vector", class_counts=np.ones(3))
        assert f"'{name}'" in str(err.value)
        assert all(n in str(err.value) for n in LOSSES.names(task=other))

    @pytest.mark.parametrize("name", SCHEDULES.names())
    def test_schedule_steps_and_round_trips(self, name):
        torch.manual_seed(0)
        model = create_model("small_cnn_tiny", 2, 3)
        cfg = TrialConfig(warmup_epochs=0.5)
        opt = create_optimizer(param_groups(model, 1e-2, 0.0, 1.0, "scratch"), cfg)
        schedule = create_schedule(name, opt, cfg, max_epochs=3, steps_per_epoch=4)
        lrs = []
        for epoch in range(3):
            for _ in range(4):
                model(torch.randn(2, 2, 16, 16)).sum().backward()
                opt.step()
                opt.zero_grad()
                schedule.after_step()
                lrs.append(schedule.current_lr)
            schedule.after_epoch(1.0)  # a flat val loss: the plateau schedule must cut
        assert all(math.isfinite(lr) and 0.0 <= lr <= 1e-2 + 1e-12 for lr in lrs)
        assert schedule.current_lr == opt.param_groups[0]["lr"]
        fresh_opt = create_optimizer(param_groups(model, 1e-2, 0.0, 1.0, "scratch"), cfg)
        fresh = create_schedule(name, fresh_opt, cfg, max_epochs=3, steps_per_epoch=4)
        fresh.load_state_dict(schedule.state_dict())
        assert fresh.current_lr == schedule.current_lr
        with pytest.raises(BadInput, match="Unknown lr schedule 'linear'"):
            create_schedule("linear", opt, cfg, 3, 4)
