"""load_init: the project's own checkpoints, bare state_dicts, mismatches as BadInput, RGB -> C channel adaptation,
and the hub (from a cache the test fills, and offline with one clear error)."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torchvision.models import get_model, get_weight

from trainables import _models_init
from trainables.checkpoint import load_state, rng_state, save_state
from trainables.errors import BadInput
from trainables.models import create_model, load_init

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _project_checkpoint(folder: Path, model, ema_model=None) -> Path:
    """What the loop writes (trainables/_state.py::trial_state), numpy RNG state included."""
    return save_state(
        folder,
        {
            "model": model.state_dict(),
            "ema": None,
            "ema_model": ema_model,
            "optimizer": {},
            "epoch": 3,
            "best": {"best/val/accuracy": 0.5},
            "rng": rng_state(),
            "config": {"model": model.model_name, "init": None, "amp": None},
            "meta": {"model": model.model_name, "in_channels": model.in_channels, "num_outputs": model.num_outputs,
                     "class_names": ["nc", "nue", "numu"], "direction": None},
        },
    )


def _assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_project_checkpoint_folder_loads_exactly(tmp_path):
    torch.manual_seed(0)
    source = create_model("resnet_tiny", 2, 3)
    source.backbone.bn1.running_mean.add_(1.5)  # buffers travel too
    _project_checkpoint(tmp_path / "epoch3", source)
    torch.manual_seed(1)
    target = create_model("resnet_tiny", 2, 3)
    load_init(target, str(tmp_path / "epoch3"))
    _assert_same(source, target)


def test_ema_weights_win_over_the_live_ones(tmp_path):
    live, ema = create_model("small_cnn_tiny", 2, 3), create_model("small_cnn_tiny", 2, 3)
    path = _project_checkpoint(tmp_path / "ckpt", live, ema_model=ema.state_dict())
    target = create_model("small_cnn_tiny", 2, 3)
    load_init(target, str(path))  # the state.pt file itself, not the folder
    _assert_same(ema, target)


def test_the_evaluated_weights_win(tmp_path):
    """eval_model: the model the validation figures came from (EMA or live, recomputed BatchNorm statistics)."""
    live, ema, evaluated = (create_model("small_cnn_tiny", 2, 3) for _ in range(3))
    evaluated.backbone[0][1].running_var.mul_(7.0)
    path = _project_checkpoint(tmp_path / "ckpt", live, ema_model=ema.state_dict())
    state = load_state(path)
    save_state(tmp_path / "ckpt", {**state, "eval_model": evaluated.state_dict()})
    target = create_model("small_cnn_tiny", 2, 3)
    load_init(target, str(tmp_path / "ckpt"))
    _assert_same(evaluated, target)


def test_a_new_task_keeps_the_backbone_and_gets_a_fresh_head(tmp_path):
    source = create_model("small_cnn_tiny", 2, 3)
    _project_checkpoint(tmp_path / "ckpt", source)
    target = create_model("small_cnn_tiny", 2, 5)
    fresh_head = target.head.weight.detach().clone()
    load_init(target, str(tmp_path / "ckpt"))
    _assert_same(source.backbone, target.backbone)
    assert torch.equal(target.head.weight, fresh_head)


def test_bare_state_dict_file_loads(tmp_path):
    source = create_model("mobilenet_tiny", 1, 2)
    torch.save(source.state_dict(), tmp_path / "weights.pt")
    target = create_model("mobilenet_tiny", 1, 2)
    load_init(target, str(tmp_path / "weights.pt"))
    _assert_same(source, target)


def test_other_architecture_is_bad_input_listing_keys_and_the_source_model(tmp_path):
    _project_checkpoint(tmp_path / "ckpt", create_model("resnet_tiny", 2, 3))
    target = create_model("small_cnn_tiny", 2, 3)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(BadInput) as err:
        load_init(target, str(tmp_path / "ckpt"))
    message = str(err.value)
    assert "\n" not in message
    assert "backbone does not fit small_cnn_tiny" in message
    assert "missing: 0.0.weight" in message and "unexpected: conv1.weight" in message
    assert "more)" in message  # first few keys, then the count
    assert "made for resnet_tiny (in_channels=2, num_outputs=3)" in message
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())  # nothing half-loaded


def test_other_channel_count_is_a_shape_mismatch_for_project_checkpoints(tmp_path):
    _project_checkpoint(tmp_path / "ckpt", create_model("small_cnn_tiny", 3, 3))
    with pytest.raises(BadInput, match=r"1 wrong shape: 0\.0\.weight \(8, 3, 3, 3\)!=\(8, 2, 3, 3\)"):
        load_init(create_model("small_cnn_tiny", 2, 3), str(tmp_path / "ckpt"))


def test_a_deeper_sibling_is_rejected_not_half_loaded(tmp_path):
    """resnet18's keys are a subset of resnet34's with the same shapes: only the strict key match catches it."""
    torch.save(create_model("resnet34", 2, 3).state_dict(), tmp_path / "r34.pt")
    with pytest.raises(BadInput, match="unexpected: backbone.layer1.2|unexpected: layer1.2"):
        load_init(create_model("resnet18", 2, 3), str(tmp_path / "r34.pt"))


def test_missing_and_unreadable_files_are_bad_input(tmp_path):
    model = create_model("small_cnn_tiny", 2, 3)
    with pytest.raises(BadInput, match="does not exist"):
        load_init(model, str(tmp_path / "nope"))
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(BadInput, match="not a weights-only torch checkpoint"):
        load_init(model, str(tmp_path / "junk.pt"))


def test_rgb_weights_are_averaged_over_the_views_scaled_by_3_over_c(tmp_path):
    """A torchvision-style (bare, RGB, with its ImageNet fc) state_dict into a 2-view model."""
    rgb = create_model("resnet_tiny", 3, 3).backbone.state_dict()
    w = torch.arange(64 * 3 * 7 * 7, dtype=torch.float32).reshape(64, 3, 7, 7) / 1000.0
    rgb["conv1.weight"] = w
    rgb["fc.weight"], rgb["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)  # dropped, not a mismatch
    torch.save(rgb, tmp_path / "rgb.pth")
    target = create_model("resnet_tiny", 2, 3)
    load_init(target, str(tmp_path / "rgb.pth"))
    got = target.backbone.conv1.weight
    expected_channel = (w[:, 0] + w[:, 1] + w[:, 2]) / 3.0 * (3.0 / 2.0)
    assert got.shape == (64, 2, 7, 7)
    assert torch.allclose(got[:, 0], expected_channel) and torch.allclose(got[:, 1], expected_channel)
    # a flat image (all views equal) meets the same filter response as the RGB conv saw on a grey image
    assert torch.allclose(got.sum(dim=1), w.sum(dim=1), atol=1e-5)
    assert torch.equal(target.backbone.layer1[0].conv1.weight, rgb["layer1.0.conv1.weight"])


def _fill_torchvision_cache(torch_home: Path, weights_name: str, model_name: str) -> dict[str, torch.Tensor]:
    """A stand-in for the downloaded ImageNet file, at the exact cache path torchvision reads."""
    url = get_weight(weights_name).url
    state = get_model(model_name, weights=None).state_dict()
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(state, folder / Path(url).name)
    return state


def test_hub_torchvision_weights_load_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    state = _fill_torchvision_cache(tmp_path, "ResNet18_Weights.IMAGENET1K_V1", "resnet18")
    model = create_model("resnet18", 2, 4)
    load_init(model, "hub:ResNet18_Weights.IMAGENET1K_V1")
    assert torch.equal(model.backbone.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert torch.allclose(model.backbone.conv1.weight[:, 1], state["conv1.weight"].mean(dim=1) * 1.5)


def test_hub_weights_of_another_architecture_are_bad_input(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _fill_torchvision_cache(tmp_path, "ResNet18_Weights.IMAGENET1K_V1", "resnet18")
    with pytest.raises(BadInput, match="made for the hub weights ResNet18_Weights.IMAGENET1K_V1"):
        load_init(create_model("mobilenet_v3_small", 2, 4), "hub:ResNet18_Weights.IMAGENET1K_V1")


def _fill_hf_cache(cache: Path, hub_id: str, state: dict[str, torch.Tensor]) -> None:
    """The huggingface_hub cache layout: refs/main names a snapshot folder holding model.safetensors."""
    repo = cache / f"models--{hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))


def test_hub_timm_weights_load_from_the_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    full = timm.create_model("convnextv2_atto", pretrained=False)  # with its ImageNet head, as on the hub
    _fill_hf_cache(tmp_path, "timm/convnextv2_atto.fcmae_ft_in1k", full.state_dict())
    model = create_model("convnextv2_atto", 1, 3)
    load_init(model, "hub:convnextv2_atto.fcmae_ft_in1k")
    assert torch.equal(model.backbone.stages[3].blocks[1].mlp.fc1.weight, full.stages[3].blocks[1].mlp.fc1.weight)
    assert torch.allclose(model.backbone.stem[0].weight[:, 0], full.stem[0].weight.sum(dim=1), atol=1e-6)


def test_hub_offline_and_uncached_is_one_clear_bad_input(tmp_path, monkeypatch):
    """No mocks: this machine is offline. Online, the torchvision case would download, so it is skipped there."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    model = create_model("resnet18", 2, 3)
    if _models_init.reachable("download.pytorch.org"):
        pytest.skip("the hub is reachable: an offline error cannot be provoked without mocking")
    with pytest.raises(BadInput) as err:
        load_init(model, "hub:ResNet18_Weights.IMAGENET1K_V1")
    cache = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(err.value) == (
        f"hub:ResNet18_Weights.IMAGENET1K_V1: weights are not cached and download.pytorch.org is unreachable "
        f"(offline); copy the file into {cache} or use init: <checkpoint>"
    )
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as tests/conftest.py sets it: believed without a probe
    expected = r"hub:convnextv2_atto.fcmae_ft_in1k: weights are not cached and huggingface.co is unreachable"
    with pytest.raises(BadInput, match=expected + r" \(offline\); copy the file into .*hf"):
        load_init(create_model("convnextv2_tiny_test", 2, 3), "hub:convnextv2_atto.fcmae_ft_in1k")


def test_the_reachability_probe_is_one_short_connect():
    assert 0 < _models_init.HUB_TIMEOUT_S <= 2.0
    assert _models_init.reachable("127.0.0.1.invalid", timeout=0.5) is False


def test_unknown_hub_name_is_bad_input():
    with pytest.raises(BadInput, match="hub:ResNet19_Weights.X: not a torchvision weights name"):
        load_init(create_model("small_cnn_tiny", 2, 3), "hub:ResNet19_Weights.X")
