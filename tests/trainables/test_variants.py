"""A checkpoint on a detector variant: the finals' weights and BatchNorm statistics, the training pixel scale,
and the compatibility checks, on real files and real tiny models."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest
import torch
from fixtures_evaluate import EVENTS, SIZE, train_tiny

from trainables.checkpoint import load_state
from trainables.config import DataConfig, TrialConfig
from trainables.data import open_events, write_synthetic
from trainables.data.synth import Detector
from trainables.errors import BadInput
from trainables.loop import build_model, evaluate_checkpoint
from trainables.variants import (
    check_compatible,
    default_split,
    differences,
    evaluate_variant,
    open_variant,
    split_indices,
    trained_on,
)


def variant_file(tmp_path, name="variant.h5", events=EVENTS, size=SIZE, **knobs):
    return write_synthetic(tmp_path / name, events=events, size=size, seed=0, progress=False,
                           detector=Detector(**knobs))


def on_file(state, path, tmp_path, training=None):
    """The checkpoint's figures on the test split of ``path``; trained on ``training`` (default: ``path``)."""
    data = DataConfig(path=str(training or path))
    trained = trained_on(state, data)
    variant = open_variant(path, data, trained.task)
    return evaluate_variant(state, variant, split_indices(variant, "test"), trained.pixel_scale, tmp_path / "out")


def test_the_training_file_gives_exactly_the_finals_test_figures(syst_sweep, tmp_path):
    folder = syst_sweep.checkpoints["baseline"]
    finals = evaluate_checkpoint(folder, DataConfig(path=str(syst_sweep.nominal)), "classification")
    ours = on_file(load_state(folder), syst_sweep.nominal, tmp_path)
    assert {f"test/{k}": v for k, v in ours.items()} == pytest.approx(finals, nan_ok=True)
    assert "accuracy" in ours and "efficiency/NC_err" in ours and "loss" in ours
    with h5py.File(tmp_path / "out" / "predictions.h5") as f:
        assert f["scores"].shape == (len(open_events(DataConfig(path=str(syst_sweep.nominal)),
                                                     "classification").split_indices["test"]), 3)


@pytest.mark.parametrize("slot", ["eval_model", "ema_model"])
def test_the_evaluated_weights_come_first(syst_sweep, tmp_path, slot):
    """eval_model (recomputed BatchNorm statistics) over ema_model over model."""
    other = load_state(syst_sweep.checkpoints["t02"])
    state = load_state(syst_sweep.checkpoints["baseline"])
    state[slot] = other["model"]
    if slot == "ema_model":
        state["eval_model"] = None
    got = on_file(state, syst_sweep.nominal, tmp_path / "a")
    assert got == pytest.approx(on_file(other, syst_sweep.nominal, tmp_path / "b"), nan_ok=True)
    assert got != pytest.approx(on_file(load_state(syst_sweep.checkpoints["baseline"]), syst_sweep.nominal,
                                        tmp_path / "c"), nan_ok=True)


def test_the_variant_is_read_with_the_training_pixel_scale(syst_sweep, tmp_path):
    """A brighter detector must look brighter to the model, not be divided back by its own scale."""
    bright = variant_file(tmp_path, energy_scale=1.5)
    state = load_state(syst_sweep.checkpoints["baseline"])
    train_scale = trained_on(state, DataConfig(path=str(syst_sweep.nominal))).pixel_scale
    own_scale = open_events(DataConfig(path=str(bright)), "classification").pixel_scale
    assert own_scale > 1.3 * train_scale
    on_file(state, bright, tmp_path, training=syst_sweep.nominal)
    with h5py.File(tmp_path / "out" / "predictions.h5") as f, h5py.File(bright) as events:
        index, scores = f["index"][:], f["scores"][:]
        images = events["images"][:][index].astype(np.float32)
    cfg = TrialConfig.from_dict({**state["config"], "mode": "scratch", "init": None})
    model = build_model(cfg, state["meta"]["in_channels"], state["meta"]["num_outputs"])
    model.load_state_dict(state["model"])
    model.eval()
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(images / np.float32(train_scale))), dim=1).numpy()
        divided_out = torch.softmax(model(torch.from_numpy(images / np.float32(own_scale))), dim=1).numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(scores, divided_out, atol=1e-4)


def test_training_facts_come_from_the_checkpoint_or_else_the_training_file(syst_sweep, tmp_path):
    state = load_state(syst_sweep.checkpoints["baseline"])
    events = open_events(DataConfig(path=str(syst_sweep.nominal)), "classification")
    from_file = trained_on({**state, "meta": {k: v for k, v in state["meta"].items()
                                              if k not in ("image_shape", "views", "pixel_scale")}},
                           DataConfig(path=str(syst_sweep.nominal)))
    assert from_file.image_shape == (2, SIZE, SIZE) and from_file.views == ("xz", "yz")
    assert from_file.pixel_scale == events.pixel_scale and from_file.class_names == ("NC", "nueCC", "numuCC")
    recorded = {**state, "meta": {**state["meta"], "image_shape": [2, SIZE, SIZE], "views": ["xz", "yz"],
                                  "pixel_scale": 7.5}}
    assert trained_on(recorded, None).pixel_scale == 7.5  # no training file needed
    with pytest.raises(BadInput, match="does not record its training data"):
        trained_on({**state, "meta": {k: v for k, v in state["meta"].items() if k != "pixel_scale"}}, None)


def test_incompatible_variants_name_what_differs(syst_sweep, tmp_path, write_h5):
    state = load_state(syst_sweep.checkpoints["baseline"])
    trained = trained_on(state, DataConfig(path=str(syst_sweep.nominal)))

    def found(path):
        return differences(trained, open_variant(path, None, "classification"))

    assert found(variant_file(tmp_path, noise_mips=0.3)) == []
    assert found(variant_file(tmp_path, "small.h5", size=8)) == [
        f"image shape (C, H, W) (2, 8, 8) vs (2, {SIZE}, {SIZE}) in training"]
    tau = write_synthetic(tmp_path / "tau.h5", events=40, size=SIZE, classes="nc,nue,numu,nutau", progress=False)
    assert found(tau) == ["classes [NC, nueCC, numuCC, nutauCC] vs [NC, nueCC, numuCC] in training"]
    uv = variant_file(tmp_path, "uv.h5")
    with h5py.File(uv, "a") as f:
        f.attrs["views"] = ["uz", "vz"]
    with pytest.raises(BadInput) as err:
        check_compatible(trained, open_variant(uv, None, "classification"), "run 't00'")
    assert str(err.value).startswith(f"{uv}: not compatible with the training data of run 't00': views [uz, vz] vs "
                                     "[xz, yz] in training; fix:") and "\n" not in str(err.value)


def test_a_regression_checkpoint_on_a_variant(syst_sweep, tmp_path):
    folder = train_tiny(syst_sweep.nominal, tmp_path / "reg", task="regression", loss="smooth_l1")
    state = load_state(folder)
    noisy = variant_file(tmp_path, noise_mips=0.3)
    metrics = on_file(state, noisy, tmp_path, training=syst_sweep.nominal)
    assert np.isfinite(metrics["resolution68_deg"]) and "resolution68_deg_err" in metrics and "bias/dx" in metrics
    trained = trained_on(state, DataConfig(path=str(syst_sweep.nominal)))
    renamed = variant_file(tmp_path, "renamed.h5")
    with h5py.File(renamed, "a") as f:
        f.attrs["target_names"] = ["ux", "uy", "uz"]
    assert differences(trained, open_variant(renamed, None, "regression")) == [
        "targets [ux, uy, uz] vs [dx, dy, dz] in training"]


def test_splits_default_to_the_variants_test_split_else_all(syst_sweep, tmp_path, write_h5):
    with_split = open_variant(syst_sweep.nominal, None, "classification")
    assert default_split(with_split) == "test"
    np.testing.assert_array_equal(split_indices(with_split, "test"), with_split.events.split_indices["test"])
    assert len(split_indices(with_split, "all")) == EVENTS
    with h5py.File(syst_sweep.nominal) as f:
        bare = write_h5("bare.h5", attrs={"class_names": ["NC", "nueCC", "numuCC"], "views": ["xz", "yz"]},
                        images=f["images"][:40], labels=f["labels"][:40])
    no_split = open_variant(bare, None, "classification")
    assert default_split(no_split) == "all" and len(split_indices(no_split, "all")) == 40
    selected = open_variant(syst_sweep.nominal, DataConfig(path="x", select={"labels": ["NC"]}), "classification")
    with h5py.File(syst_sweep.nominal) as f:
        assert len(split_indices(selected, "all")) == int((f["labels"][:] == 0).sum())  # the training selection
    empty = dataclasses.replace(no_split, events=dataclasses.replace(
        no_split.events, split_indices={**no_split.events.split_indices, "val": np.array([], np.int64)}))
    with pytest.raises(BadInput, match="the val split has no events"):
        split_indices(empty, "val")
