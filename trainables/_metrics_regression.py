"""Regression physics metrics: per-target bias / RMS / skew of residuals and the 68 % direction resolution.

Residuals are ``pred - target``. Azimuths (φ) are wrapped into (-π, π] first, so 179° predicted for -179° true is a
-2° residual, not 358°.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from trainables._metrics_stats import bootstrap_quantile_err, check_weights, weighted_quantile
from trainables.errors import BadInput

DIRECTIONS = {"unit_vector": 3, "theta_phi": 2}  # direction attribute -> number of targets it needs
_RESOLUTION_Q = 0.68  # the 68 % containment angle, the usual single-number angular resolution


def wrap_phi(x: np.ndarray) -> np.ndarray:
    """Wrap angles in radians into (-π, π] (π stays π, -π becomes π)."""
    wrapped = np.pi - np.mod(np.pi - np.asarray(x, dtype=float), 2.0 * np.pi)
    return np.where(wrapped <= -np.pi, wrapped + 2.0 * np.pi, wrapped)  # mod can round up to exactly 2π


def _check_direction(direction: str | None, n_targets: int) -> None:
    if direction is None:
        return
    if direction not in DIRECTIONS:
        raise BadInput(f"direction attribute '{direction}' is unknown; use one of {sorted(DIRECTIONS)} or leave it out")
    if n_targets != DIRECTIONS[direction]:
        raise BadInput(
            f"direction '{direction}' needs {DIRECTIONS[direction]} targets, the `targets` dataset has {n_targets}; "
            "fix the file's `direction` attribute or its targets"
        )


def theta_phi_to_unit(angles: np.ndarray) -> np.ndarray:
    """(N, 2) polar angle θ and azimuth φ in radians -> (N, 3) unit vectors (sinθ cosφ, sinθ sinφ, cosθ)."""
    theta, phi = angles[:, 0], angles[:, 1]
    return np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], axis=1)


def _normalised(vectors: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(vectors, axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norm > 0, vectors / norm, np.nan)  # a zero vector has no direction


def opening_angle_deg(pred: np.ndarray, target: np.ndarray, direction: str) -> np.ndarray:
    """Per-event 3D angle in degrees between predicted and true directions.

    ``direction`` is "unit_vector" (K = 3, vectors need not be normalised) or "theta_phi" (K = 2, radians). Uses
    atan2(|a x b|, a . b), which stays accurate for tiny angles where arccos of a dot product does not. A zero-length
    predicted vector has no direction: its angle is NaN.
    """
    pred, target = np.atleast_2d(np.asarray(pred, dtype=float)), np.atleast_2d(np.asarray(target, dtype=float))
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {sorted(DIRECTIONS)}, got {direction!r}")
    _check_direction(direction, pred.shape[1])
    if direction == "theta_phi":
        pred, target = theta_phi_to_unit(pred), theta_phi_to_unit(target)
    a, b = _normalised(pred), _normalised(target)
    cross = np.linalg.norm(np.cross(a, b), axis=1)
    return np.degrees(np.arctan2(cross, np.sum(a * b, axis=1)))


def _is_azimuth(name: str, index: int, direction: str | None) -> bool:
    """φ is a target named ``phi`` (or ``<something>_phi``), or the 2nd column of a theta_phi direction."""
    lowered = name.lower()
    return lowered == "phi" or lowered.endswith("_phi") or (direction == "theta_phi" and index == 1)


def _residual_moments(residual: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    """Weighted bias (mean), RMS about the bias (the spread, i.e. the resolution) and skewness (biased estimator)."""
    total = float(np.sum(weights))
    bias = float(np.sum(weights * residual) / total)
    centred = residual - bias
    rms = float(np.sqrt(np.sum(weights * centred**2) / total))
    out = {"bias": bias, "rms": rms}
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
    ``n_bootstrap < 2``). Events whose predicted vector is zero count as 180° (no direction is the worst answer).
    """
    pred, target = _as_columns(pred), _as_columns(target)
    if pred.shape != target.shape or pred.shape[1] != len(target_names):
        raise ValueError(f"pred {pred.shape} and target {target.shape} must both be (N, {len(target_names)})")
    if not np.all(np.isfinite(pred)):
        raise ValueError("predictions contain NaN or inf (a diverged model should stop as TrialDiverged before this)")
    _check_direction(direction, pred.shape[1])
    w = check_weights(weights, pred.shape[0])
    if pred.shape[0] == 0 or float(np.sum(w)) <= 0:
        return {}
    if direction == "unit_vector":
        pred = np.nan_to_num(_normalised(pred))  # a zero vector stays zero: a 1-unit residual per true component
    metrics: dict[str, float] = {}
    for index, name in enumerate(target_names):
        residual = pred[:, index] - target[:, index]
        if _is_azimuth(name, index, direction):
            residual = wrap_phi(residual)
        for key, value in _residual_moments(residual, w).items():
            metrics[f"{key}/{name}"] = value
    if direction is not None:
        metrics.update(_resolution(pred, target, direction, w, n_bootstrap, seed))
    return metrics


def _as_columns(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=float)
    return array.reshape(-1, 1) if array.ndim == 1 else array


def _resolution(
    pred: np.ndarray, target: np.ndarray, direction: str, weights: np.ndarray, n_bootstrap: int, seed: int
) -> dict[str, float]:
    angle = np.nan_to_num(opening_angle_deg(pred, target, direction), nan=180.0)
    out = {"resolution68_deg": weighted_quantile(angle, _RESOLUTION_Q, weights)}
    err = bootstrap_quantile_err(angle, _RESOLUTION_Q, weights, n_bootstrap, seed)
    if err is not None:
        out["resolution68_deg_err"] = err
    return out
