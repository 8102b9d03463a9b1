"""Regression physics metrics: per-target bias / RMS / skew of residuals and the 68 % direction resolution.

Residuals are ``pred - target``. Azimuths (φ) are wrapped into (-π, π] first, so 179° predicted for -179° true is a
-2° residual, not 358°.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from trainables.contract import metric_key
from trainables.physics import (RESOLUTION_Q, bootstrap_quantile_err, check_direction, check_weights, effective_count,
                                is_azimuth, normalised, opening_angle_deg, weighted_quantile, wrap_phi)


def _residual_moments(residual: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    """Weighted bias (mean), RMS about the bias (the spread, i.e. the resolution) and skewness (biased estimator),
    with the 1-sigma errors of bias and RMS at the Kish effective count n: RMS/sqrt(n) and RMS/sqrt(2n) (the
    Gaussian large-sample errors of a mean and of a standard deviation)."""
    total = float(np.sum(weights))
    bias = float(np.sum(weights * residual) / total)
    centred = residual - bias
    rms = float(np.sqrt(np.sum(weights * centred**2) / total))
    n_eff = effective_count(weights)
    out = {"bias": bias, "rms": rms, "bias_err": rms / np.sqrt(n_eff), "rms_err": rms / np.sqrt(2.0 * n_eff)}
    if rms > 0:  # a constant residual has no skewness; leave it out rather than invent one
        out["skew"] = float(np.sum(weights * centred**3) / total / rms**3)
    return out


def regression_metrics(
    pred: np.ndarray,
    target: np.ndarray,
    target_names: Sequence[str],
    direction: str | None = None,
    weights: np.ndarray | None = None,
    n_bootstrap: int = 200,  # 200 resamples put a ~5 % relative uncertainty on the error itself
    seed: int = 0,  # fixed: the same predictions always give the same error, across epochs and reruns
) -> dict[str, float]:
    """Physics metrics of a regressor: per target ``t`` the residual ``bias/t``, ``rms/t`` and ``skew/t``.

    Residual = pred - target, φ targets wrapped into (-π, π]. ``bias`` is the weighted mean residual. ``rms`` is the
    weighted RMS about the bias (the standard deviation, ddof = 0): the resolution, not mixed with the bias.
    ``skew`` is the weighted third standardised moment (scipy.stats.skew with bias=True for unit weights); absent
    when the residuals are constant. With ``direction`` "unit_vector" the prediction is normalised first (the
    per-component residuals then compare directions); "theta_phi" is (θ, φ) in radians. For a direction the metrics
    also hold ``resolution68_deg``, the weighted 68 % quantile of the 3D opening angle, and ``resolution68_deg_err``,
    the standard deviation of that quantile over ``n_bootstrap`` seeded resamples (absent with < 2 events or
    ``n_bootstrap < 2``). Events whose predicted or true vector is zero count as 180° (``opening_angle_deg``).
    """
    pred, target = _as_columns(pred), _as_columns(target)
    if pred.shape != target.shape or pred.shape[1] != len(target_names):
        raise ValueError(f"pred {pred.shape} and target {target.shape} must both be (N, {len(target_names)})")
    if not np.all(np.isfinite(pred)):
        raise ValueError("predictions contain NaN or inf (a diverged model should stop as TrialDiverged before this)")
    check_direction(direction, pred.shape[1])
    w = check_weights(weights, pred.shape[0])
    if pred.shape[0] == 0 or float(np.sum(w)) <= 0:
        return {}
    if direction == "unit_vector":
        pred = np.nan_to_num(normalised(pred))  # a zero vector stays zero: a 1-unit residual per true component
    metrics: dict[str, float] = {}
    for index, name in enumerate(target_names):
        residual = pred[:, index] - target[:, index]
        if is_azimuth(name, index, direction):
            residual = wrap_phi(residual)
        for key, value in _residual_moments(residual, w).items():
            family, _, err = key.partition("_")  # bias_err -> bias/<target>_err
            metrics[f"{family}/{metric_key(name)}{'_' + err if err else ''}"] = value
    if direction is not None:
        metrics.update(_resolution(pred, target, direction, w, n_bootstrap, seed))
    return metrics


def _as_columns(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=float)
    return array.reshape(-1, 1) if array.ndim == 1 else array


def _resolution(
    pred: np.ndarray, target: np.ndarray, direction: str, weights: np.ndarray, n_bootstrap: int, seed: int
) -> dict[str, float]:
    angle = opening_angle_deg(pred, target, direction)  # a zero vector already counts as 180°
    out = {"resolution68_deg": weighted_quantile(angle, RESOLUTION_Q, weights)}
    err = bootstrap_quantile_err(angle, RESOLUTION_Q, weights, n_bootstrap, seed)
    if err is not None:
        out["resolution68_deg_err"] = err
    return out
