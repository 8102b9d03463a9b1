"""ONNX export of real trained checkpoints: every tiny registry variant exports with parity, the file's outputs are
the checkpoint's predictions.h5, metadata and dynamic batch are there, a broken graph is refused, bad input is one
line."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from fixtures_checkpoint import perturbed, with_meta
from fixtures_evaluate import train_tiny
from trainables.config import DataConfig
from trainables.data import write_synthetic
from trainables.errors import BadInput
from trainables.export import (DEFAULT_OPSET, ParityRefused, export_trial, onnx_metadata, set_metadata, to_onnx,
                               write_checked)
from trainables.models import MODELS, tiny_variant
from trainables.trial_model import StoredImagesModel, load_trial, read_images, read_stored

TINY_VARIANTS = sorted({tiny_variant(name) for name in MODELS.names()})
# one architecture through the timm: prefix as well (SiLU, squeeze-excitation, depthwise convs)
EXPORTED = [*TINY_VARIANTS, "timm:test_efficientnet"]
# one epoch + an export is 1.5 s for small_cnn_tiny and 3-8 s for the others: those run with the slow tests
EXPORT_CASES = [m if m == "small_cnn_tiny" else pytest.param(m, marks=pytest.mark.slow) for m in EXPORTED]
METADATA_KEYS = {"views", "input_shape", "pixel_scale", "model", "run_id", "git_sha", "data_hash", "exporter"}


@pytest.fixture(scope="module")
def small_h5(tmp_path_factory) -> Path:
    """240 events of 2x32x32 (ConvNeXt downsamples by 32): one epoch of a tiny model takes a few seconds."""
    return write_synthetic(tmp_path_factory.mktemp("small") / "small.h5", events=240, size=32, seed=1, progress=False)


def onnx_outputs(path: Path, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images.astype(np.float32)})[0]


def stored_predictions(checkpoint: Path) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(checkpoint / "predictions.h5", "r") as f:
        return f["index"][:], (f["scores"][:] if "scores" in f else f["pred"][:])


@pytest.mark.parametrize("model", EXPORT_CASES)
def test_every_tiny_variant_exports_and_matches_its_predictions(model, small_h5, tmp_path, one_torch_thread):
    checkpoint = train_tiny(small_h5, tmp_path / "best", model=model)
    trial = load_trial(checkpoint, DataConfig(path=str(small_h5)))
    _, images = read_stored(trial.data, trial.task, "val", 256)
    out = tmp_path / "model.onnx"
    result = export_trial(trial, images, out, tolerance=1e-4)
    assert result.parity.max_abs_diff <= 1e-4 and result.parity.argmax_agreement == 1.0
    assert result.parity.events == len(images)
    index, scores = stored_predictions(checkpoint)  # what the loop's evaluation wrote for these events
    np.testing.assert_allclose(onnx_outputs(out, read_images(trial.data, index)), scores, atol=1e-4, rtol=0)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".onnx" or p.name.startswith(".")) == \
        ["model.onnx"]  # one self-contained file, no side file, no temp file left


def test_graph_has_dynamic_batch_stated_opset_and_metadata(tiny_checkpoint, tiny_h5, tmp_path):
    trial = load_trial(tiny_checkpoint, DataConfig(path=str(tiny_h5)))
    _, images = read_stored(trial.data, trial.task, "val", 64)
    out = tmp_path / "m.onnx"
    export_trial(trial, images, out, opset=20, metadata=onnx_metadata(trial, run_id="abc123", git_sha="f00"))
    proto = onnx.load(str(out), load_external_data=False)
    assert {o.domain: o.version for o in proto.opset_import}[""] == 20
    assert all(t.data_location == onnx.TensorProto.DEFAULT for t in proto.graph.initializer)  # no external data
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == list(trial.image_shape)
    assert proto.graph.output[0].name == "scores"
    meta = {p.key: p.value for p in proto.metadata_props}
    assert METADATA_KEYS | {"class_names"} <= set(meta)
    assert json.loads(meta["class_names"]) == ["NC", "nueCC", "numuCC"]
    assert json.loads(meta["views"]) == ["xz", "yz"] and json.loads(meta["input_shape"]) == [2, 32, 32]
    assert float(meta["pixel_scale"]) == pytest.approx(trial.pixel_scale) and meta["run_id"] == "abc123"
    assert meta["model"] == "small_cnn_tiny" and "dynamo=True" in meta["exporter"]
    for n in (1, 5):  # any batch size
        assert onnx_outputs(out, images[:n]).shape == (n, 3)


def test_the_evaluated_weights_are_exported(tiny_checkpoint, tiny_h5, tmp_path):
    """eval_model (the evaluated copy, BatchNorm statistics as evaluation used them); in older checkpoints the EMA
    weights when EMA was on, else the live ones."""
    data = DataConfig(path=str(tiny_h5))
    assert load_trial(tiny_checkpoint, data).weights == "eval_model"
    assert load_trial(with_meta(tiny_checkpoint, tmp_path / "old", drop=("eval_model",)), data).weights == "ema_model"
    plain = with_meta(tiny_checkpoint, tmp_path / "plain", drop=("eval_model", "ema_model"))
    assert load_trial(plain, data).weights == "model"


def test_a_checkpoint_from_before_amp_modes_and_the_scaler_entry_rebuilds(tiny_checkpoint, tiny_h5, tmp_path):
    """The first loop saved ``amp`` as a bool (or None) and no ``scaler`` entry: export and explain still rebuild
    its model, with the AMP mode such a value meant."""
    data = DataConfig(path=str(tiny_h5))
    for amp in (None, True, False):
        old = with_meta(tiny_checkpoint, tmp_path / f"amp-{amp}", drop=("scaler",), config={"amp": amp})
        assert load_trial(old, data).weights == "eval_model"


def test_the_graph_takes_raw_stored_images(tiny_checkpoint, tiny_h5, tmp_path):
    """The pixel scale is inside the graph: raw images in, the scores of the model on scaled images out."""
    trial = load_trial(tiny_checkpoint, DataConfig(path=str(tiny_h5)))
    _, images = read_stored(trial.data, trial.task, "val", 16)
    out = export_trial(trial, images, tmp_path / "m.onnx").path
    with torch.no_grad():
        expected = torch.softmax(trial.model(torch.from_numpy(images) / trial.pixel_scale), 1).numpy()
    np.testing.assert_allclose(onnx_outputs(out, images), expected, atol=1e-5)
    assert trial.pixel_scale > 10  # synthetic charge in MeV: a graph without the scale would be far off


def test_regression_exports_pred_and_target_names(tiny_regression_checkpoint, tiny_h5, tmp_path):
    trial = load_trial(tiny_regression_checkpoint, DataConfig(path=str(tiny_h5)))
    _, images = read_stored(trial.data, trial.task, "val", 64)
    result = export_trial(trial, images, tmp_path / "r.onnx")
    assert result.parity.argmax_agreement is None and "export/argmax_agreement" not in result.parity.metrics()
    proto = onnx.load(str(result.path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert proto.graph.output[0].name == "pred" and json.loads(meta["target_names"]) == ["dx", "dy", "dz"]
    index, pred = stored_predictions(tiny_regression_checkpoint)
    np.testing.assert_allclose(onnx_outputs(result.path, read_images(trial.data, index)), pred, atol=1e-4, rtol=0)


def test_a_broken_graph_is_refused_and_nothing_is_written(tiny_checkpoint, tiny_h5, tmp_path):
    trial = load_trial(tiny_checkpoint, DataConfig(path=str(tiny_h5)))
    _, images = read_stored(trial.data, trial.task, "val", 128)
    module = trial.stored_input_module()
    proto = to_onnx(module, torch.from_numpy(images[:2]), DEFAULT_OPSET, "scores", trial.name)
    set_metadata(proto, onnx_metadata(trial, "", ""))
    out = tmp_path / "broken.onnx"
    with pytest.raises(ParityRefused) as refused:
        write_checked(perturbed(proto), module, images, out, 1e-4, trial.name)
    assert refused.value.parity.max_abs_diff > 1e-3 and "refused" in str(refused.value)
    assert list(tmp_path.iterdir()) == []
    assert write_checked(proto, module, images, out, 1e-4, trial.name).max_abs_diff <= 1e-4  # the real one passes
    assert out.is_file()


def test_a_model_the_exporter_cannot_convert_is_one_line():
    class Eigen(torch.nn.Module):  # aten.linalg_eig has no ONNX function
        def forward(self, x):
            return torch.linalg.eigvals(x[:, 0, :4, :4]).real

    with pytest.raises(BadInput) as bad:
        to_onnx(StoredImagesModel(Eigen(), 1.0, "regression"), torch.rand(2, 2, 8, 8), 18, "pred", "eigen")
    text = str(bad.value)
    assert "model 'eigen' cannot be exported" in text and "linalg_eig" in text and "\n" not in text
    assert "\x1b" not in text


def test_an_opset_outside_the_exporters_range_is_one_line(tiny_checkpoint, tiny_h5, tmp_path):
    trial = load_trial(tiny_checkpoint, DataConfig(path=str(tiny_h5)))
    with pytest.raises(BadInput, match=r"--opset 17: .* writes opsets 18\.\.23"):
        export_trial(trial, read_stored(trial.data, trial.task, "val", 4)[1], tmp_path / "m.onnx", opset=17)
    assert not (tmp_path / "m.onnx").exists()


def test_a_data_file_of_other_images_is_refused(tiny_checkpoint, tmp_path):
    other = write_synthetic(tmp_path / "other.h5", events=20, size=16, seed=1, progress=False)
    knows_shape = with_meta(tiny_checkpoint, tmp_path / "new", image_shape=[2, 32, 32])
    with pytest.raises(BadInput, match=r"images are \(2, 16, 16\).* trained on \(2, 32, 32\)"):
        load_trial(knows_shape, DataConfig(path=str(other)))
    three_views = with_meta(tiny_checkpoint, tmp_path / "old", image_shape=None, in_channels=3)
    with pytest.raises(BadInput, match=r"images are \(2, 16, 16\).* trained on \(3, 16, 16\)"):
        load_trial(three_views, DataConfig(path=str(other)))


def test_the_events_file_comes_from_the_checkpoint_or_one_line(tiny_checkpoint, tiny_h5, tmp_path):
    old = with_meta(tiny_checkpoint, tmp_path / "old", data_path=None)
    with pytest.raises(BadInput, match="does not name its events file.*--parity-data FILE"):
        load_trial(old)
    moved = with_meta(tiny_checkpoint, tmp_path / "moved", data_path=str(tmp_path / "gone.h5"))
    with pytest.raises(BadInput, match="gone.h5: the events file of .* is gone.*--parity-data FILE"):
        load_trial(moved)
    named = with_meta(tiny_checkpoint, tmp_path / "named", data_path=str(tiny_h5))
    assert load_trial(named).data.path == str(tiny_h5)
