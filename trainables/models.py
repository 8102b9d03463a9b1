"""Models of one trial: a registered backbone plus a linear head, and the transfer modes.

    model = create_model("resnet18", in_channels=2, num_outputs=3)   # DetectorNet: backbone -> (N, F) -> head
    load_init(model, "scans/pretrain/ray/.../checkpoint_000007")      # or a .pt file, or hub:<weights name>
    apply_mode(model, "frozen")                                       # once, after load_init
    optimizer = create_optimizer(param_groups(model, lr, wd, mult, "frozen"), cfg)
    set_train_mode(model, "frozen")                                   # at the start of every epoch

Registered names: torchvision resnet18/34/50, mobilenet_v2, mobilenet_v3_small/large; timm convnextv2_atto/femto/
nano; small_cnn; a tiny variant per family (``tiny_variant``) for tests; any timm architecture as ``timm:<name>``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainables._models_init import load_init
from trainables._models_zoo import MODELS, Backbone, timm_backbone
from trainables.config import MODES
from trainables.errors import BadInput

__all__ = [
    "MODELS",
    "DetectorNet",
    "apply_mode",
    "check_model",
    "create_model",
    "load_init",
    "param_groups",
    "set_train_mode",
    "tiny_variant",
]

TIMM_PREFIX = "timm:"
TIMM_TINY = {"convnext": "convnextv2_tiny_test", "resnet": "resnet_tiny", "mobilenet": "mobilenet_tiny"}


class DetectorNet(nn.Module):
    """``head(backbone(x))``; the split lets transfer modes treat the feature extractor and the task head apart."""

    def __init__(self, backbone: Backbone, model_name: str, in_channels: int, num_outputs: int):
        super().__init__()
        self.backbone = backbone.module
        self.head = nn.Linear(backbone.num_features, num_outputs)
        self.model_name = model_name
        self.in_channels = in_channels
        self.num_outputs = num_outputs
        self.num_features = backbone.num_features
        self.dropped_head = backbone.dropped_head  # prefix of the ImageNet classifier in hub state_dicts
        self.first_conv_key = _first_conv_key(self.backbone)  # the conv adapted when RGB weights meet C channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def _first_conv_key(backbone: nn.Module) -> str:
    for name, module in backbone.named_modules():
        if isinstance(module, nn.Conv2d):
            return f"{name}.weight"
    return ""


def check_model(name: str) -> None:
    """Raise BadInput for a name neither registered nor a timm architecture (for validating a search space)."""
    if name.startswith(TIMM_PREFIX):
        # timm only for timm: names
        import timm

        arch = name[len(TIMM_PREFIX) :]
        if not timm.is_model(arch):
            near = timm.list_models(f"*{arch.split('.')[0][:8]}*")[:5]
            raise BadInput(f"Unknown timm model '{arch}'; similar: {', '.join(near) or 'none'} (see timm.list_models)")
        return
    MODELS.check(name)


def create_model(name: str, in_channels: int, num_outputs: int) -> DetectorNet:
    """Build with random weights (``weights=None``, nothing is downloaded); ``load_init`` brings weights in."""
    check_model(name)
    if name.startswith(TIMM_PREFIX):
        backbone = timm_backbone(name[len(TIMM_PREFIX) :], in_channels)
    else:
        backbone = MODELS.create(name, in_channels)
    return DetectorNet(backbone, name, in_channels, num_outputs)


def tiny_variant(name: str) -> str:
    """The family's tiny model, for tests; ``timm:<name>`` maps by family prefix, anything else to small_cnn_tiny."""
    if name.startswith(TIMM_PREFIX):
        arch = name[len(TIMM_PREFIX) :]
        for prefix in TIMM_TINY:
            if arch.startswith(prefix):
                return TIMM_TINY[prefix]
        return "small_cnn_tiny"
    return MODELS.tags(name)["tiny"]


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise BadInput(f"mode '{mode}' is not one of {', '.join(MODES)}")


def apply_mode(model: DetectorNet, mode: str) -> None:
    """``frozen``: the backbone gets no gradients; ``finetune``/``scratch``: everything trains."""
    _check_mode(mode)
    for p in model.backbone.parameters():
        p.requires_grad_(mode != "frozen")
    for p in model.head.parameters():
        p.requires_grad_(True)


def set_train_mode(model: DetectorNet, mode: str) -> None:
    """``model.train()``, but a frozen backbone stays in eval mode: BatchNorm statistics must not drift either."""
    _check_mode(mode)
    model.train()
    if mode == "frozen":
        model.backbone.eval()


def _split_decay(module: nn.Module, prefix: str, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """Biases and norm scales/shifts (all 1-D) get no decay: decaying them only fights the normalisation (nanoGPT)."""
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"name": prefix, "params": decay, "lr": lr, "weight_decay": weight_decay},
        {"name": f"{prefix}_no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def param_groups(
    model: DetectorNet, lr: float, weight_decay: float, backbone_lr_mult: float, mode: str
) -> list[dict[str, Any]]:
    """Optimizer groups, head first (so ``param_groups[0]`` carries the trial's ``lr``, which the schedule reports).

    frozen: the head only. finetune: the backbone at ``lr * backbone_lr_mult``. scratch: everything at ``lr``
    (the multiplier is a transfer knob; a scratch backbone has nothing to protect).
    """
    _check_mode(mode)
    groups = _split_decay(model.head, "head", lr, weight_decay)
    if mode != "frozen":
        backbone_lr = lr * backbone_lr_mult if mode == "finetune" else lr
        groups += _split_decay(model.backbone, "backbone", backbone_lr, weight_decay)
    return groups
