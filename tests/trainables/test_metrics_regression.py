"""Regression metrics against numpy/scipy references and hand-computed angles."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from trainables.errors import BadInput
from trainables.metrics import opening_angle_deg, regression_metrics, weighted_quantile, wrap_phi


def _random_regression(seed: int, n: int = 300):
    rng = np.random.default_rng(seed)
    target = rng.normal(size=(n, 2))
    pred = target + 0.3 + rng.gamma(2.0, 0.5, size=(n, 2))  # skewed residuals with a bias
    return pred, target


@pytest.mark.parametrize("seed", [0, 1])
def test_moments_match_numpy_and_scipy(seed):
    pred, target = _random_regression(seed)
    metrics = regression_metrics(pred, target, ["energy", "length"])
    for k, name in enumerate(["energy", "length"]):
        residual = pred[:, k] - target[:, k]
        assert metrics[f"bias/{name}"] == pytest.approx(np.mean(residual), abs=1e-6)
        assert metrics[f"rms/{name}"] == pytest.approx(np.std(residual), abs=1e-6)  # about the bias, ddof 0
        assert metrics[f"skew/{name}"] == pytest.approx(stats.skew(residual, bias=True), abs=1e-6)
        n = len(residual)  # unit weights: the effective count is the event count
        assert metrics[f"bias/{name}_err"] == pytest.approx(np.std(residual) / np.sqrt(n), abs=1e-9)
        assert metrics[f"rms/{name}_err"] == pytest.approx(np.std(residual) / np.sqrt(2 * n), abs=1e-9)
    assert "resolution68_deg" not in metrics  # no direction, no angular resolution


def test_weighted_moments_equal_repeated_events():
    pred, target = _random_regression(3, n=50)
    repeats = np.random.default_rng(3).integers(1, 4, size=50)
    weighted = regression_metrics(pred, target, ["a", "b"], weights=repeats.astype(float))
    expanded = regression_metrics(np.repeat(pred, repeats, axis=0), np.repeat(target, repeats, axis=0), ["a", "b"])
    for key, value in expanded.items():
        if not key.endswith("_err"):  # errors: integer weights are not repeats (the effective count is smaller)
            assert weighted[key] == pytest.approx(value, abs=1e-9)


def test_one_dimensional_target_and_constant_residual():
    metrics = regression_metrics(np.array([2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0]), ["energy"])
    assert metrics["bias/energy"] == pytest.approx(1.0)
    assert metrics["rms/energy"] == pytest.approx(0.0)
    assert "skew/energy" not in metrics  # undefined for a constant residual


def test_wrap_phi_interval():
    x = np.array([0.0, np.pi, -np.pi, 3 * np.pi, -3 * np.pi + 1e-9, 2 * np.pi, np.radians(358.0)])
    wrapped = wrap_phi(x)
    assert np.all(wrapped > -np.pi) and np.all(wrapped <= np.pi)
    np.testing.assert_allclose(wrapped[:4], [0.0, np.pi, np.pi, np.pi])
    assert wrapped[5] == pytest.approx(0.0, abs=1e-12)
    assert wrapped[6] == pytest.approx(np.radians(-2.0))


def test_phi_residual_is_wrapped_with_pred_minus_target_sign():
    pred = np.radians([[179.0], [-179.0], [10.0]])
    target = np.radians([[-179.0], [179.0], [5.0]])
    metrics = regression_metrics(pred, target, ["phi"])
    residuals = np.radians([-2.0, 2.0, 5.0])  # 179 - (-179) = 358 -> -2; not wrapped it would be a 358° bias
    assert metrics["bias/phi"] == pytest.approx(residuals.mean(), abs=1e-12)
    assert metrics["rms/phi"] == pytest.approx(residuals.std(), abs=1e-12)


def test_theta_phi_wraps_the_second_column_whatever_its_name():
    pred = np.radians([[90.0, 179.0], [80.0, 0.0]])
    target = np.radians([[90.0, -179.0], [90.0, 0.0]])
    metrics = regression_metrics(pred, target, ["polar", "azimuth"], direction="theta_phi", n_bootstrap=0)
    assert metrics["bias/azimuth"] == pytest.approx(np.radians(-1.0))
    assert metrics["bias/polar"] == pytest.approx(np.radians(-5.0))
    assert metrics["resolution68_deg"] > 0
    assert "resolution68_deg_err" not in metrics  # n_bootstrap=0 asks for none


def test_opening_angle_hand_cases():
    x, y, z = np.eye(3)
    pred = np.stack([x, x, 5 * y, x, (x + y)])
    target = np.stack([y, x, y, -x, x])
    np.testing.assert_allclose(opening_angle_deg(pred, target, "unit_vector"), [90, 0, 0, 180, 45], atol=1e-9)


def test_opening_angle_theta_phi_conversion():
    pred = np.radians([[90.0, 0.0], [90.0, 0.0], [0.0, 123.0], [45.0, 30.0]])
    target = np.radians([[90.0, 90.0], [0.0, 0.0], [0.0, -40.0], [45.0, 30.0 + 360.0]])
    # x vs y; x vs z; both along z (phi meaningless at the pole); the same direction one turn round in phi
    np.testing.assert_allclose(opening_angle_deg(pred, target, "theta_phi"), [90, 90, 0, 0], atol=1e-9)


def test_opening_angle_tiny_angles_are_accurate():
    eps = 1e-9
    angle = opening_angle_deg(np.array([[1.0, eps, 0.0]]), np.array([[1.0, 0.0, 0.0]]), "unit_vector")
    assert angle[0] == pytest.approx(np.degrees(eps), rel=1e-6)  # arccos would round this to 0 or 1e-6


def _noisy_directions(n: int, seed: int, sigma: float = 0.1):
    rng = np.random.default_rng(seed)
    target = rng.normal(size=(n, 3))
    target /= np.linalg.norm(target, axis=1, keepdims=True)
    return 2.0 * (target + sigma * rng.normal(size=(n, 3))), target  # unnormalised prediction


def test_unit_vector_resolution_and_normalised_components():
    pred, target = _noisy_directions(500, 0)
    metrics = regression_metrics(pred, target, ["x", "y", "z"], direction="unit_vector")
    angles = opening_angle_deg(pred, target, "unit_vector")
    assert metrics["resolution68_deg"] == pytest.approx(np.quantile(angles, 0.68), abs=1e-9)
    unit = pred / np.linalg.norm(pred, axis=1, keepdims=True)
    assert metrics["bias/x"] == pytest.approx(np.mean(unit[:, 0] - target[:, 0]), abs=1e-9)
    assert 0 < metrics["resolution68_deg_err"] < metrics["resolution68_deg"]


def test_weighted_resolution_uses_weighted_quantile():
    pred, target = _noisy_directions(200, 1)
    weights = np.random.default_rng(1).uniform(0.2, 2.0, 200)
    metrics = regression_metrics(pred, target, ["x", "y", "z"], direction="unit_vector", weights=weights)
    expected = weighted_quantile(opening_angle_deg(pred, target, "unit_vector"), 0.68, weights)
    assert metrics["resolution68_deg"] == pytest.approx(expected, abs=1e-12)


def test_bootstrap_error_is_seeded_and_shrinks_with_statistics():
    pred, target = _noisy_directions(3000, 2)
    names = ["x", "y", "z"]
    small = [regression_metrics(pred[:100], target[:100], names, "unit_vector", seed=s) for s in (7, 7, 8)]
    assert small[0]["resolution68_deg_err"] == small[1]["resolution68_deg_err"]  # same seed, same error
    assert small[0]["resolution68_deg_err"] != small[2]["resolution68_deg_err"]  # the seed is really used
    large = regression_metrics(pred, target, names, "unit_vector", seed=7)
    # sqrt(30) ~ 5.5x more events; the error must fall well below the small-sample one
    assert large["resolution68_deg_err"] < 0.5 * small[0]["resolution68_deg_err"]


def test_bootstrap_error_is_close_to_the_spread_of_independent_samples():
    names = ["x", "y", "z"]
    estimates = [regression_metrics(*_noisy_directions(400, s), names, "unit_vector", n_bootstrap=0) for s in range(40)]
    spread = np.std([m["resolution68_deg"] for m in estimates], ddof=1)
    err = regression_metrics(*_noisy_directions(400, 99), names, "unit_vector", n_bootstrap=300)["resolution68_deg_err"]
    assert 0.5 * spread < err < 2.0 * spread  # loose: both are noisy estimates of the same sampling spread


def test_zero_prediction_counts_as_the_worst_angle():
    target = np.tile([0.0, 0.0, 1.0], (4, 1))
    pred = np.array([[0.0, 0.0, 1.0]] * 3 + [[0.0, 0.0, 0.0]])
    assert opening_angle_deg(pred, target, "unit_vector")[3] == 180.0
    metrics = regression_metrics(pred, target, ["x", "y", "z"], "unit_vector", n_bootstrap=0)
    assert metrics["resolution68_deg"] == pytest.approx(np.quantile([0, 0, 0, 180.0], 0.68))


def test_bad_direction_inputs():
    pred = np.zeros((3, 2))
    with pytest.raises(BadInput, match="needs 3 targets"):
        regression_metrics(pred, pred, ["a", "b"], direction="unit_vector")
    with pytest.raises(BadInput, match="unknown"):
        regression_metrics(pred, pred, ["a", "b"], direction="cartesian")
    with pytest.raises(ValueError, match="NaN"):
        regression_metrics(np.full((3, 2), np.nan), pred, ["a", "b"])
    assert regression_metrics(np.zeros((0, 2)), np.zeros((0, 2)), ["a", "b"]) == {}


def test_zero_length_vectors_have_the_worst_angle_on_either_side():
    pred = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    target = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    np.testing.assert_array_equal(opening_angle_deg(pred, target, "unit_vector"), [180.0, 180.0, 180.0, 0.0])
