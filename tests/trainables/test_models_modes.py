"""Transfer modes: a frozen backbone is bit-identical after training (BatchNorm buffers too), finetune moves it at
lr x mult, scratch ignores init; weight decay spares norms and biases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainables._epoch import build_model
from trainables.config import TrialConfig
from trainables.errors import BadInput
from trainables.models import MODELS, apply_mode, create_model, param_groups, set_train_mode
from trainables.schedules import create_optimizer

TINY = sorted({MODELS.tags(n)["tiny"] for n in MODELS.names()})


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _train_epoch(model, mode: str, lr: float = 1e-2, mult: float = 1.0, steps: int = 4):
    """What the loop does for one epoch: groups, optimizer, train mode at the epoch start, a few steps."""
    torch.manual_seed(0)
    apply_mode(model, mode)
    groups = param_groups(model, lr, 1e-2, mult, mode)
    opt = create_optimizer(groups, TrialConfig(lr=lr))
    set_train_mode(model, mode)
    for _ in range(steps):
        x, y = torch.randn(4, model.in_channels, 32, 32) * 3 + 1, torch.randint(0, 3, (4,))
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return groups


@pytest.mark.parametrize("name", TINY)
def test_frozen_backbone_is_bit_identical_buffers_included(name):
    torch.manual_seed(1)
    model = create_model(name, 2, 3)
    backbone, head = _snapshot(model.backbone), _snapshot(model.head)
    groups = _train_epoch(model, "frozen")
    after = model.backbone.state_dict()
    assert after.keys() == backbone.keys()
    changed = [k for k in backbone if not torch.equal(after[k], backbone[k])]
    assert changed == []
    assert not torch.equal(model.head.weight, head["weight"])
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in model.head.parameters()}
    assert all(not p.requires_grad for p in model.backbone.parameters())


def test_the_frozen_check_can_fail_plain_train_mode_moves_batchnorm():
    """Without set_train_mode's eval backbone the running statistics drift, although no weight gets a gradient."""
    torch.manual_seed(1)
    model = create_model("small_cnn_tiny", 2, 3)
    apply_mode(model, "frozen")
    before = _snapshot(model.backbone)
    model.train()
    model(torch.randn(4, 2, 32, 32) * 3 + 1)
    moved = [k for k, v in model.backbone.state_dict().items() if not torch.equal(v, before[k])]
    assert any("running_mean" in k for k in moved) and any("num_batches_tracked" in k for k in moved)


def test_set_train_mode_keeps_the_head_training_and_the_backbone_in_eval():
    model = create_model("mobilenet_tiny", 2, 3)  # has Dropout in its backbone: frozen must switch it off too
    set_train_mode(model, "frozen")
    assert model.training and model.head.training
    assert not any(m.training for m in model.backbone.modules())
    set_train_mode(model, "finetune")
    assert all(m.training for m in model.modules())


def test_finetune_moves_the_backbone_at_lr_times_mult():
    torch.manual_seed(1)
    model = create_model("resnet_tiny", 2, 3)
    before = _snapshot(model.backbone)
    groups = _train_epoch(model, "finetune", lr=1e-2, mult=0.1)
    assert not torch.equal(model.backbone.conv1.weight, before["conv1.weight"])
    lrs = {g["name"]: g["lr"] for g in groups}
    backbone_lr = pytest.approx(1e-3)
    assert lrs == {"head": 1e-2, "head_no_decay": 1e-2, "backbone": backbone_lr, "backbone_no_decay": backbone_lr}
    assert groups[0]["name"] == "head"  # the schedule's current_lr reads group 0: the trial's lr
    covered = [id(p) for g in groups for p in g["params"]]
    assert sorted(covered) == sorted(id(p) for p in model.parameters())  # every parameter, exactly once


def test_scratch_trains_everything_at_lr_and_ignores_the_mult():
    model = create_model("small_cnn_tiny", 2, 3)
    groups = param_groups(model, 1e-3, 1e-4, 0.01, "scratch")
    assert {g["lr"] for g in groups} == {1e-3}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_no_weight_decay_on_norms_and_biases():
    model = create_model("convnextv2_tiny_test", 2, 3)
    groups = param_groups(model, 1e-3, 0.05, 1.0, "finetune")
    for g in groups:
        if g["name"].endswith("no_decay"):
            assert g["weight_decay"] == 0.0 and all(p.ndim <= 1 for p in g["params"])
        else:
            assert g["weight_decay"] == 0.05 and all(p.ndim > 1 for p in g["params"])
    head_bias = model.head.bias
    assert any(p is head_bias for g in groups if g["weight_decay"] == 0.0 for p in g["params"])


def test_scratch_ignores_init(tmp_path):
    """The loop builds a scratch model without reading init, even one that points nowhere."""
    cfg = TrialConfig(model="small_cnn_tiny", mode="scratch", init=str(tmp_path / "missing"))
    model = build_model(cfg, 2, 3)
    assert all(p.requires_grad for p in model.parameters())


def test_unknown_mode_is_bad_input():
    model = create_model("small_cnn_tiny", 2, 3)
    for call in (lambda: apply_mode(model, "thaw"), lambda: set_train_mode(model, "thaw"),
                 lambda: param_groups(model, 1e-3, 0.0, 1.0, "thaw")):
        with pytest.raises(BadInput, match="mode 'thaw' is not one of scratch, finetune, frozen"):
            call()
