"""The numbers recomputed from predictions.h5 (a real HDF5 file written here) against direct loops."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from reports import _detail, _lead, _stats
from reports._render import fmt
from reports.errors import ReportInputError
from trainables.metrics import regression_metrics


@pytest.fixture
def cls_file(tmp_path):
    rng = np.random.default_rng(3)
    n = 400
    label = rng.integers(0, 3, n)
    scores = rng.dirichlet(np.ones(3), n)
    scores[np.arange(n), label] += 0.5
    scores /= scores.sum(1, keepdims=True)
    path = tmp_path / "predictions.h5"
    with h5py.File(path, "w") as f:
        f["index"], f["label"], f["scores"] = np.arange(n), label, scores
        f["energy"] = rng.uniform(0.5, 5, n)
        f.attrs["class_names"] = ["NC", "nueCC", "numuCC"]
    return path


def test_read_predictions_classification(cls_file):
    p = _detail.read_predictions(cls_file)
    assert p.kind == "classification" and p.names == ["NC", "nueCC", "numuCC"]
    assert p.scores.shape == (400, 3) and set(p.truth) == {"energy"}
    assert _detail.signal_class(p.names) == 1


def test_wilson_matches_the_formula():
    k, n = 30, 40
    p, half = _detail.wilson(np.array(k), np.array(n))
    z = 1.0
    expected = z * math.sqrt(k / n * (1 - k / n) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert p == pytest.approx(0.75) and half == pytest.approx(expected)
    assert np.isnan(_detail.wilson(np.array(0), np.array(0))[0])


def test_cut_scan_matches_a_direct_count(cls_file):
    p = _detail.read_predictions(cls_file)
    scan = _detail.cut_scan(p, 1)
    for i in (0, 25, 50, 90):
        cut = scan["cut"][i]
        sel = p.scores[:, 1] > cut
        tp = np.sum(sel & (p.label == 1))
        assert scan["efficiency"][i] == pytest.approx(tp / np.sum(p.label == 1))
        if sel.sum():
            assert scan["purity"][i] == pytest.approx(tp / sel.sum())
            assert scan["fom"][i] == pytest.approx(scan["efficiency"][i] * scan["purity"][i])


def test_binned_efficiency_and_purity_match_direct_counts(cls_file):
    p = _detail.read_predictions(cls_file)
    e = p.truth["energy"]
    b = _detail.binned_eff_purity(p, e)
    edges = b["edges"]
    pred = p.scores.argmax(1)
    for k in range(len(edges) - 1):
        last = k == len(edges) - 2
        m = (e >= edges[k]) & ((e <= edges[k + 1]) if last else (e < edges[k + 1]))
        for c in range(3):
            tp = np.sum(m & (p.label == c) & (pred == c))
            assert b["eff"][c, k] == pytest.approx(tp / np.sum(m & (p.label == c)))
            assert b["pur"][c, k] == pytest.approx(tp / np.sum(m & (pred == c)))
    assert np.sum([np.sum((e >= edges[k]) & (e < edges[k + 1])) for k in range(len(edges) - 1)]) >= len(e) - 1


def _direction_predictions(path, n: int, seed: int, spread: float, zeroed: int = 0):
    """A predictions.h5 of unit-vector directions smeared by ``spread``, the first ``zeroed`` predictions all zero
    (a model that gives up on those events: no direction at all). Returns (target, pred)."""
    rng = np.random.default_rng(seed)
    target = rng.normal(size=(n, 3))
    target /= np.linalg.norm(target, axis=1, keepdims=True)
    pred = target + rng.normal(scale=spread, size=(n, 3))
    pred[:zeroed] = 0.0
    with h5py.File(path, "w") as f:
        f["index"], f["target"], f["pred"] = np.arange(n), target, pred
        f["energy"] = rng.uniform(1, 4, n)
        f.attrs["target_names"] = ["dx", "dy", "dz"]
        f.attrs["direction"] = "unit_vector"
    return target, pred


def test_regression_residuals_angles_and_resolution(tmp_path):
    target, pred = _direction_predictions(tmp_path / "reg.h5", n=500, seed=0, spread=0.1)
    p = _detail.read_predictions(tmp_path / "reg.h5")
    angle = _detail.opening_angle_deg(p)
    u = pred / np.linalg.norm(pred, axis=1, keepdims=True)
    assert angle == pytest.approx(np.degrees(np.arccos(np.clip((u * target).sum(1), -1, 1))))
    res = _detail.binned_resolution(angle, p.truth["energy"])
    assert np.all(res["err"] > 0) and np.nanmax(res["q68"]) < 20
    overall = np.quantile(angle, 0.68)
    assert np.nanmin(res["q68"]) <= overall <= np.nanmax(res["q68"])


def test_a_zero_prediction_scores_the_same_resolution_as_in_training(tmp_path):
    n = 300
    target, pred = _direction_predictions(tmp_path / "reg.h5", n=n, seed=4, spread=0.2, zeroed=40)
    p = _detail.read_predictions(tmp_path / "reg.h5")
    logged = regression_metrics(pred, target, p.names, "unit_vector", n_bootstrap=0)["resolution68_deg"]
    angle = _detail.opening_angle_deg(p)
    assert np.all(angle[:40] == 180.0)
    assert _stats.on_all_events(_lead.statistic(p, "val/resolution68_deg"), n) == pytest.approx(logged)
    assert np.all(np.isfinite(_detail.binned_resolution(angle, p.truth["energy"])["q68"]))


def test_phi_residuals_wrap_into_minus_pi_pi():
    p = _detail.Predictions("regression", ["theta", "phi"], target=np.array([[1.0, 3.1]]),
                            pred=np.array([[1.2, -3.1]]), direction="theta_phi")
    r = _detail.residuals(p)
    assert r["theta"][0] == pytest.approx(0.2)
    assert r["phi"][0] == pytest.approx(-6.2 + 2 * np.pi)


def test_format_rounds_to_the_error():
    assert fmt(0.81234, 0.0041) == "0.8123 ± 0.0041"
    assert fmt(12.345, 1.2) == "12.3 ± 1.2"
    assert fmt(None) == "n/a"


def write_regression(path, n=50, **override):
    rng = np.random.default_rng(1)
    target = rng.normal(size=(n, 3))
    data = {"index": np.arange(n), "target": target, "pred": target + 0.1, "energy": rng.uniform(1, 4, n),
            "weights": np.ones(n), **override}
    with h5py.File(path, "w") as f:
        for name, values in data.items():
            f[name] = values
        f.attrs["target_names"] = ["dx", "dy", "dz"]
        f.attrs["direction"] = "unit_vector"
    return path


@pytest.mark.parametrize("override, says", [
    ({"pred": np.zeros((49, 3))}, "'pred' has 49 events but 'target' has 50"),
    ({"energy": np.ones(40)}, "'energy' has 40 events but 'target' has 50"),
    ({"weights": np.ones(1)}, "'weights' has 1 events but 'target' has 50"),  # would broadcast silently
    ({"index": np.arange(30)}, "'index' has 30 events but 'target' has 50"),  # would truncate the pairing
    ({"index": np.zeros(50, dtype=int)}, "'index' repeats event ids"),
    ({"pred": np.zeros((50, 2))}, "'pred' has shape (50, 2), expected (50, 3)"),
])
def test_predictions_not_aligned_with_their_truths_are_one_line_naming_the_file(tmp_path, override, says):
    path = write_regression(tmp_path / "predictions.h5", **override)
    with pytest.raises(ReportInputError) as err:
        _detail.read_predictions(path, "artifact test/predictions.h5 of run abc")
    text = str(err.value)
    assert text.startswith("artifact test/predictions.h5 of run abc: ") and says in text and "\n" not in text
    assert "write it again or delete it from the run" in text


def test_aligned_predictions_read_as_before(tmp_path):
    p = _detail.read_predictions(write_regression(tmp_path / "predictions.h5"))
    assert p.n == 50 and set(p.truth) == {"energy"}


def test_classification_scores_not_aligned_with_labels(tmp_path, cls_file):
    with h5py.File(cls_file, "a") as f:
        scores = f["scores"][()]
        del f["scores"]
        f["scores"] = scores[:-1]
    with pytest.raises(ReportInputError) as err:
        _detail.read_predictions(cls_file)
    assert str(err.value).startswith(f"{cls_file}: 'scores' has 399 events but 'label' has 400")
