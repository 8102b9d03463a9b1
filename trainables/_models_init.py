"""``load_init``: weights from a project checkpoint, a state_dict file, or ``hub:<weights name>``.

Project checkpoints (``state.pt`` of the loop) hold ``{"model", "eval_model", "meta", ...}``; ``eval_model`` wins
(the model that was evaluated: EMA weights when EMA was on, BatchNorm statistics as evaluation used them). The
backbone must match key for key and shape for shape (a resnet18 checkpoint silently half-loaded into a resnet34 would
be a wrong result, not an error); the head is taken only when its shapes match, so a new task gets a fresh head.

Foreign weights (hub, or a bare torchvision/timm state_dict file) lose their ImageNet classifier, and RGB first-conv
filters are averaged and repeated over the C views, scaled by 3/C, so a uniform input gives the same response.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import torch

from trainables.checkpoint import evaluated_weights, find_state, read_torch_file
from trainables.contract import Artifact
from trainables.environ import scoped_environ
from trainables.errors import BadCheckpoint, BadInput

if TYPE_CHECKING:
    from trainables.models import DetectorNet

HUB_PREFIX = "hub:"
HUB_TIMEOUT_S = 2.0  # one TCP connect: offline is answered at once instead of after timm/hf's retries
SHOW_KEYS = 3  # keys listed per kind of mismatch; the count says how many more


# --- reading files -----------------------------------------------------------------------------------------------


def _read(path: Path, init: str) -> Any:
    try:
        if find_state(path) is None:
            raise BadInput(f"init '{init}': {path} does not exist; give a checkpoint folder (with {Artifact.STATE}) "
                           "or a .pt file")
        return read_torch_file(path)
    except BadCheckpoint as exc:  # unreadable, a pickle with code, or not a torch file at all
        raise BadInput(f"init '{init}': {exc}") from None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _describe_meta(meta: Any) -> str:
    if not isinstance(meta, dict):
        return "an unknown model"
    return f"{meta.get('model')} (in_channels={meta.get('in_channels')}, num_outputs={meta.get('num_outputs')})"


def _unpack(obj: Any, init: str) -> tuple[dict[str, torch.Tensor], str]:
    """(state_dict, what the weights were made for)."""
    if isinstance(obj, dict) and _is_state_dict(obj.get("model")):
        return evaluated_weights(obj), _describe_meta(obj.get("meta"))
    if isinstance(obj, dict) and _is_state_dict(obj.get("state_dict")):  # lightning / timm training scripts
        return obj["state_dict"], "a bare state_dict"
    if _is_state_dict(obj):
        return obj, "a bare state_dict"
    raise BadInput(f"init '{init}': holds no state_dict (expected a project checkpoint or a name -> tensor dict)")


# --- matching keys -----------------------------------------------------------------------------------------------


def _strip(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def _split(model: "DetectorNet", sd: dict[str, torch.Tensor]) -> tuple[dict, dict, bool]:
    """(backbone, head, foreign). Project weights are keyed ``backbone.*``/``head.*``; foreign ones are bare."""
    if any(k.startswith("backbone.") for k in sd):
        rest = {k: v for k, v in sd.items() if not k.startswith(("backbone.", "head."))}
        return {**_strip(sd, "backbone."), **rest}, _strip(sd, "head."), False
    sd = {k.removeprefix("module."): v for k, v in sd.items()}  # saved from DataParallel/DDP
    head = model.dropped_head + "."
    return {k: v for k, v in sd.items() if model.dropped_head == "" or not k.startswith(head)}, {}, True


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """RGB filters -> C channels: the mean filter on every channel, scaled by 3/C (same response to a flat image)."""
    if weight.shape[1] == in_channels or weight.shape[1] != 3:
        return weight
    mean = weight.mean(dim=1, keepdim=True)
    return mean.repeat(1, in_channels, 1, 1) * (3.0 / in_channels)


def _mismatch_report(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> str:
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [
        f"{k} {tuple(got[k].shape)}!={tuple(expected[k].shape)}"
        for k in expected
        if k in got and got[k].shape != expected[k].shape
    ]
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if keys:
            more = f" (+{len(keys) - SHOW_KEYS} more)" if len(keys) > SHOW_KEYS else ""
            parts.append(f"{len(keys)} {label}: {', '.join(keys[:SHOW_KEYS])}{more}")
    return "; ".join(parts)


def load_state_dict_into(model: "DetectorNet", sd: dict[str, torch.Tensor], init: str, made_for: str) -> None:
    """Strict backbone, shape-checked head. Raises BadInput naming the keys and the model the weights were for."""
    backbone_sd, head_sd, foreign = _split(model, sd)
    key = model.first_conv_key
    if foreign and key in backbone_sd:
        backbone_sd[key] = adapt_first_conv(backbone_sd[key], model.in_channels)
    expected = model.backbone.state_dict()
    problems = _mismatch_report(expected, backbone_sd)
    if problems:
        raise BadInput(
            f"init '{init}': backbone does not fit {model.model_name} (in_channels={model.in_channels}): {problems}; "
            f"the weights were made for {made_for}. Use weights of the same model and channels, or mode: scratch"
        )
    model.backbone.load_state_dict(backbone_sd)
    head = model.head.state_dict()
    if head_sd.keys() == head.keys() and all(head_sd[k].shape == v.shape for k, v in head.items()):
        model.head.load_state_dict(head_sd)


# --- the hub -----------------------------------------------------------------------------------------------------


def _proxy_or(host: str) -> tuple[str, int]:
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    if proxy:
        parsed = urlparse(proxy if "://" in proxy else f"http://{proxy}")
        return parsed.hostname or host, parsed.port or 443
    return host, 443


def reachable(host: str, timeout: float = HUB_TIMEOUT_S) -> bool:
    """One TCP connect (through the HTTPS proxy when one is set)."""
    try:
        with socket.create_connection(_proxy_or(host), timeout=timeout):
            return True
    except OSError:
        return False


def _offline(name: str, host: str, cache: str) -> BadInput:
    return BadInput(
        f"hub:{name}: weights are not cached and {host} is unreachable (offline); "
        f"copy the file into {cache} or use init: <checkpoint>"
    )


def _torchvision_weights(name: str) -> Any:
    # the hub's libraries load only when hub: weights are asked for
    from torchvision.models import get_weight

    try:
        return get_weight(name)
    except (ValueError, KeyError, AttributeError, TypeError):  # TypeError: a name like resnet18.X (a function)
        return None


def _torchvision_state_dict(weights: Any, name: str) -> dict[str, torch.Tensor]:
    cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
    cached = cache_dir / Path(urlparse(weights.url).path).name
    host = urlparse(weights.url).hostname or "download.pytorch.org"
    if not cached.is_file() and not reachable(host):
        raise _offline(name, host, str(cached))
    return weights.get_state_dict(progress=False, weights_only=True)  # reads the cache when it is there


def _hf_cache_dir() -> str:
    # the hub's libraries load only when hub: weights are asked for
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE


def _hf_cached_file(hub_id: str, filename: str | None) -> str | None:
    # the hub's libraries load only when hub: weights are asked for
    from huggingface_hub import try_to_load_from_cache

    for candidate in [filename] if filename else ["model.safetensors", "pytorch_model.bin"]:
        found = try_to_load_from_cache(hub_id, candidate, cache_dir=_hf_cache_dir())
        if isinstance(found, str):
            return found
    return None


def _hf_offline_env() -> bool:
    """The user (or the test suite) said offline: believe it rather than probing the network."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _timm_state_dict(name: str) -> dict[str, torch.Tensor]:
    """timm builds the RGB model with its weights (ours then adapts the channels, as for torchvision)."""
    # the hub's libraries load only when hub: weights are asked for
    import timm
    from huggingface_hub import constants

    cfg = _timm_pretrained_cfg(name)
    cached = _hf_cached_file(cfg.hf_hub_id, cfg.hf_hub_filename) if cfg.hf_hub_id else None
    if cached is None and cfg.url:  # timm's older torch-hub cache
        old = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
        cached = str(old) if old.is_file() else None
    if cached is not None:
        with scoped_environ(HF_HUB_OFFLINE="1"):
            model = timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": cached})
        return model.state_dict()
    host = urlparse(constants.ENDPOINT).hostname if cfg.hf_hub_id else urlparse(cfg.url or "").hostname
    if _hf_offline_env() or not host or not reachable(host):
        raise _offline(name, host or "the weights host", _hf_cache_dir())
    return timm.create_model(name, pretrained=True, num_classes=0).state_dict()


def _timm_pretrained_cfg(name: str) -> Any:
    # the hub's libraries load only when hub: weights are asked for
    import timm

    try:
        return timm.models.get_pretrained_cfg(name)  # None for an unknown model
    except RuntimeError:  # a known model with an unknown tag
        return None


def hub_state_dict(name: str) -> dict[str, torch.Tensor]:
    """torchvision weight-enum names (``ResNet18_Weights.IMAGENET1K_V1``) or timm pretrained tags
    (``convnextv2_atto.fcmae_ft_in1k``)."""
    weights = _torchvision_weights(name)
    if weights is not None:
        return _torchvision_state_dict(weights, name)
    cfg = _timm_pretrained_cfg(name)
    if cfg is not None:
        return _timm_state_dict(name)
    raise BadInput(
        f"hub:{name}: not a torchvision weights name (e.g. ResNet18_Weights.IMAGENET1K_V1) "
        f"nor a timm pretrained tag (e.g. convnextv2_atto.fcmae_ft_in1k, see timm.list_pretrained())"
    )


def load_init(model: "DetectorNet", init: str) -> None:
    """Load ``init`` (checkpoint folder, .pt file or ``hub:<weights name>``) into ``model`` in place."""
    if init.startswith(HUB_PREFIX):
        name = init[len(HUB_PREFIX) :]
        load_state_dict_into(model, hub_state_dict(name), init, f"the hub weights {name}")
        return
    sd, made_for = _unpack(_read(Path(init).expanduser(), init), init)
    load_state_dict_into(model, sd, init, made_for)
