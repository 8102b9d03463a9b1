"""The architectures: one decorated factory per model name (timm's ``register_model`` pattern).

A factory takes ``in_channels`` and returns a ``Backbone``: a module mapping images to an (N, F) feature vector,
F, and the key prefix of the ImageNet classifier it dropped (so hub weights can be matched key for key).
Everything is built with ``weights=None``: nothing is ever downloaded here (``load_init`` does that, on request).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from trainables.compat import mobilenet_v3_blocks
from trainables.registry import Registry

MODELS: Registry[Callable[[int], "Backbone"]] = Registry("model")


@dataclass
class Backbone:
    module: nn.Module  # images (N, C, H, W) -> features (N, F)
    num_features: int
    dropped_head: str = ""  # key prefix of the ImageNet classifier in hub state_dicts ("fc", "head.fc", ...)


def _conv_like(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """The same convolution with another input-channel count, initialised as torchvision inits its convs."""
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    return new


def _set_in_channels(module: nn.Module, in_channels: int) -> None:
    """Swap the first conv for one taking ``in_channels`` (the views); torchvision models are hard-wired to RGB."""
    for name, child in module.named_modules():
        if isinstance(child, nn.Conv2d):
            if child.in_channels == in_channels:
                return
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, attr, _conv_like(child, in_channels))
            return
    raise ValueError("model has no Conv2d to take the input channels")


# --- torchvision: ResNet ---------------------------------------------------------------------------------------


def _resnet(model: nn.Module, in_channels: int) -> Backbone:
    _set_in_channels(model, in_channels)
    features = model.fc.in_features
    model.fc = nn.Identity()
    return Backbone(model, features, dropped_head="fc")


@MODELS.register("resnet18", family="resnet", tiny="resnet_tiny", pretrained_source="torchvision")
def resnet18(in_channels: int) -> Backbone:
    # torchvision/timm load when a model is built, not when the registry is read
    from torchvision.models import resnet18 as build

    return _resnet(build(weights=None), in_channels)


@MODELS.register("resnet34", family="resnet", tiny="resnet_tiny", pretrained_source="torchvision")
def resnet34(in_channels: int) -> Backbone:
    # torchvision/timm load when a model is built, not when the registry is read
    from torchvision.models import resnet34 as build

    return _resnet(build(weights=None), in_channels)


@MODELS.register("resnet50", family="resnet", tiny="resnet_tiny", pretrained_source="torchvision")
def resnet50(in_channels: int) -> Backbone:
    # torchvision/timm load when a model is built, not when the registry is read
    from torchvision.models import resnet50 as build

    return _resnet(build(weights=None), in_channels)


@MODELS.register("resnet_tiny", family="resnet", tiny="resnet_tiny", pretrained_source=None)
def resnet_tiny(in_channels: int) -> Backbone:
    """One BasicBlock per stage: the ResNet code path (stem, downsampling shortcuts, fc swap) at ~1/2 of resnet18."""
    # torchvision/timm load when a model is built, not when the registry is read
    from torchvision.models.resnet import BasicBlock, ResNet

    return _resnet(ResNet(BasicBlock, [1, 1, 1, 1]), in_channels)


# --- torchvision: MobileNet ------------------------------------------------------------------------------------


def _mobilenet(model: nn.Module, in_channels: int, last: int) -> Backbone:
    """Keep the classifier's hidden layers (V3's 1024-wide Linear is pretrained too); drop only the last Linear."""
    _set_in_channels(model, in_channels)
    features = model.classifier[last].in_features
    model.classifier[last] = nn.Identity()
    return Backbone(model, features, dropped_head=f"classifier.{last}")


@MODELS.register("mobilenet_v2", family="mobilenet", tiny="mobilenet_tiny", pretrained_source="torchvision")
def mobilenet_v2(in_channels: int) -> Backbone:
    # torchvision/timm load when a model is built, not when the registry is read
    from torchvision.models import mobilenet_v2 as build

    return _mobilenet(build(weights=None), in_channels, last=1)


@MODELS.register("mobilenet_v3_small", family="mobilenet", tiny="mobilenet_tiny", pretrained_source="torchvision")
def mobilenet_v3_small(in_channels: int) -> Backbone:
    # torchvision/timm load when a model is built, not when the registry is read
    from torchvision.models import mobilenet_v3_small as build

    return _mobilenet(build(weights=None), in_channels, last=3)


@MODELS.register("mobilenet_v3_large", family="mobilenet", tiny="mobilenet_tiny", pretrained_source="torchvision")
def mobilenet_v3_large(in_channels: int) -> Backbone:
    # torchvision/timm load when a model is built, not when the registry is read
    from torchvision.models import mobilenet_v3_large as build

    return _mobilenet(build(weights=None), in_channels, last=3)


@MODELS.register("mobilenet_tiny", family="mobilenet", tiny="mobilenet_tiny", pretrained_source=None)
def mobilenet_tiny(in_channels: int) -> Backbone:
    """MobileNetV3-small at width 0.25 with its first three blocks: SE, hardswish and the hidden classifier layer."""
    # torchvision/timm load when a model is built, not when the registry is read
    from torchvision.models.mobilenetv3 import MobileNetV3

    blocks = mobilenet_v3_blocks("mobilenet_v3_small", width_mult=0.25)
    return _mobilenet(MobileNetV3(blocks[:3], last_channel=64), in_channels, last=3)


# --- timm: ConvNeXt V2 -----------------------------------------------------------------------------------------


def _timm(name: str, in_channels: int, **kwargs) -> Backbone:
    """timm builds any input-channel count itself; ``num_classes=0`` leaves the pooled, normed features."""
    # torchvision/timm load when a model is built, not when the registry is read
    import timm

    model = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_channels, **kwargs)
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or "head.fc"  # "fc" for resnets
    return Backbone(model, model.num_features, dropped_head=classifier)


@MODELS.register("convnextv2_atto", family="convnextv2", tiny="convnextv2_tiny_test", pretrained_source="timm")
def convnextv2_atto(in_channels: int) -> Backbone:
    return _timm("convnextv2_atto", in_channels)


@MODELS.register("convnextv2_femto", family="convnextv2", tiny="convnextv2_tiny_test", pretrained_source="timm")
def convnextv2_femto(in_channels: int) -> Backbone:
    return _timm("convnextv2_femto", in_channels)


@MODELS.register("convnextv2_nano", family="convnextv2", tiny="convnextv2_tiny_test", pretrained_source="timm")
def convnextv2_nano(in_channels: int) -> Backbone:
    return _timm("convnextv2_nano", in_channels)


@MODELS.register("convnextv2_tiny_test", family="convnextv2", tiny="convnextv2_tiny_test", pretrained_source=None)
def convnextv2_tiny_test(in_channels: int) -> Backbone:
    """timm's ConvNeXt V2 block (GRN, LayerNorm2d, patchify stem) with one block per stage and 8..64 channels."""
    return _timm("convnextv2_atto", in_channels, depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))


def timm_backbone(name: str, in_channels: int) -> Backbone:
    """``timm:<name>``: any timm architecture, unregistered here."""
    return _timm(name, in_channels)


# --- from scratch ----------------------------------------------------------------------------------------------


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def _small_cnn(in_channels: int, widths: tuple[int, ...]) -> Backbone:
    """conv-BN-ReLU blocks, each halving the image, then a global average: the plain baseline a physicist writes."""
    layers: list[nn.Module] = []
    c_in = in_channels
    for width in widths:
        layers += [_conv_bn_relu(c_in, width), nn.MaxPool2d(2)]
        c_in = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return Backbone(nn.Sequential(*layers), widths[-1])


@MODELS.register("small_cnn", family="small_cnn", tiny="small_cnn_tiny", pretrained_source=None)
def small_cnn(in_channels: int) -> Backbone:
    return _small_cnn(in_channels, (32, 64, 128, 256))  # 4 halvings: 128 px events end at 8x8 before the pool


@MODELS.register("small_cnn_tiny", family="small_cnn", tiny="small_cnn_tiny", pretrained_source=None)
def small_cnn_tiny(in_channels: int) -> Backbone:
    return _small_cnn(in_channels, (8, 16))
