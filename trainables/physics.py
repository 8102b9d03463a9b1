"""Numpy-only physics shared by the training loop and the reports: Wilson errors, weighted quantiles and AUC,
directions (opening angle, phi wrap). No torch: the same code scores a trial in the loop and a ``predictions.h5`` in
a report or a notebook.

    wilson_err(k, n)                             # 1-sigma Wilson half-width
    weighted_quantile(values, 0.68, weights)     # equals np.quantile for unit weights
    opening_angle_deg(pred, target, "unit_vector")
    wrap_phi(residual)                           # into (-pi, pi]
"""

from __future__ import annotations

import numpy as np

from trainables.errors import BadInput

_Z = 1.0  # 1 sigma: the `_err` metrics are 1-sigma half-widths
_CHUNK_ELEMENTS = 2_000_000  # bootstrap rows are processed in chunks of ~16 MB of float64, whatever N is


def wilson_err(k, n):
    """1-sigma Wilson score interval half-width, ``(upper - lower) / 2`` at z = 1, for ``k`` successes in ``n`` trials.

    ``k`` and ``n`` may be non-integers (a weighted fraction times an effective count). ``n <= 0`` gives NaN: the
    callers omit such metrics instead of logging them. Unlike the Wald error it is not zero at k = 0 or k = n.
    """
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.clip(k / n, 0.0, 1.0)  # clip: a weighted fraction can leave [0, 1] by rounding
        z2 = _Z * _Z
        half = _Z / (1.0 + z2 / n) * np.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    half = np.where(n > 0, half, np.nan)
    return float(half) if half.ndim == 0 else half


def effective_count(weights: np.ndarray) -> float:
    """Kish effective sample size ``(sum w)^2 / sum w^2``: equals the event count for unit weights."""
    sum_w2 = float(np.sum(weights * weights))
    return float(np.sum(weights)) ** 2 / sum_w2 if sum_w2 > 0 else 0.0


def weighted_fraction_err(passed: np.ndarray, weights: np.ndarray) -> tuple[float, float] | None:
    """Weighted fraction of ``passed`` among the events given, and its Wilson error at the effective count.

    None when the events carry no weight (the metric is then undefined and must be omitted).
    """
    total = float(np.sum(weights))
    if total <= 0:
        return None
    fraction = float(np.sum(weights[passed])) / total
    n_eff = effective_count(weights)
    return fraction, float(wilson_err(fraction * n_eff, n_eff))


def check_weights(weights: np.ndarray | None, n: int) -> np.ndarray:
    """Unit weights when None; otherwise a float (n,) array of finite, non-negative weights."""
    if weights is None:
        return np.ones(n, dtype=float)
    weights = np.asarray(weights, dtype=float).reshape(-1)
    if weights.shape[0] != n:
        raise ValueError(f"weights have {weights.shape[0]} entries for {n} events")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise BadInput("event weights must be finite and >= 0; check the `weights` dataset of the data file")
    return weights


def _quantile_of_sorted_rows(values: np.ndarray, weights: np.ndarray, q: float) -> np.ndarray:
    """Weighted quantile of each row of ascending ``values`` (B, N) with positive ``weights`` (B, N), N >= 2.

    Point n sits at ``p_n = (S_n - w_n) / (S_N - w_n)`` (S = cumulative weight; the C = 1 weighted percentile), and
    the quantile interpolates linearly between points. With equal weights p_n = (n-1)/(N-1): numpy's default
    "linear" quantile. Scaling all weights leaves it unchanged, so normalised physics weights are fine.
    """
    cumulative = np.cumsum(weights, axis=1)
    total = cumulative[:, -1:]
    position = (cumulative - weights) / (total - weights)
    lower = np.clip(np.sum(position <= q, axis=1) - 1, 0, values.shape[1] - 1)
    upper = np.minimum(lower + 1, values.shape[1] - 1)
    rows = np.arange(values.shape[0])
    p_lo, p_hi = position[rows, lower], position[rows, upper]
    v_lo, v_hi = values[rows, lower], values[rows, upper]
    gap = p_hi - p_lo
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(gap > 0, (q - p_lo) / gap, 0.0)
    return v_lo + np.clip(t, 0.0, 1.0) * (v_hi - v_lo)


def _positive_sorted(values: np.ndarray, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Drop zero-weight entries (they carry no information) and sort by value."""
    values = np.asarray(values, dtype=float).reshape(-1)
    weights = check_weights(weights, values.shape[0])
    keep = weights > 0
    values, weights = values[keep], weights[keep]
    order = np.argsort(values, kind="stable")
    return values[order], weights[order]


def weighted_quantile(values: np.ndarray, q: float, weights: np.ndarray | None = None) -> float:
    """Quantile ``q`` in [0, 1] of ``values`` with optional event weights (equal to ``np.quantile`` for unit weights)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile q={q} is outside [0, 1]")
    values, weights = _positive_sorted(values, weights)
    if values.size == 0:
        raise ValueError("weighted_quantile of no events (or of events that all have zero weight)")
    if values.size == 1:
        return float(values[0])
    return float(_quantile_of_sorted_rows(values[None, :], weights[None, :], q)[0])


def bootstrap_quantile_err(
    values: np.ndarray, q: float, weights: np.ndarray | None, n_bootstrap: int, seed: int
) -> float | None:
    """Standard deviation of the weighted ``q`` quantile over ``n_bootstrap`` seeded resamples (None if undefined).

    Resampling draws event indices with replacement; values are sorted once, so sorting the drawn indices sorts the
    resample. Rows are processed in chunks to bound memory for large validation sets.
    """
    values, weights = _positive_sorted(values, weights)
    n = values.size
    if n < 2 or n_bootstrap < 2:
        return None
    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // n)
    estimates = []
    for start in range(0, n_bootstrap, rows_per_chunk):
        rows = min(rows_per_chunk, n_bootstrap - start)
        index = np.sort(rng.integers(0, n, size=(rows, n)), axis=1)
        estimates.append(_quantile_of_sorted_rows(values[index], weights[index], q))
    return float(np.std(np.concatenate(estimates), ddof=1))


def weighted_roc_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> float | None:
    """One-vs-rest ROC AUC: P(score_pos > score_neg) + P(tie) / 2 over weighted pairs (the trapezoid ROC area).

    None when either side has no weight: the AUC does not exist then and must not be logged.
    """
    w_pos_total = float(np.sum(weights[positive]))
    w_neg_total = float(np.sum(weights[~positive]))
    if w_pos_total <= 0 or w_neg_total <= 0:
        return None
    unique, group = np.unique(scores, return_inverse=True)
    w_pos = np.bincount(group, weights=np.where(positive, weights, 0.0), minlength=unique.size)
    w_neg = np.bincount(group, weights=np.where(positive, 0.0, weights), minlength=unique.size)
    neg_below = np.cumsum(w_neg) - w_neg
    return float(np.sum(w_pos * (neg_below + 0.5 * w_neg)) / (w_pos_total * w_neg_total))


# --------------------------------------------------------------------------------------------- directions

DIRECTIONS = {"unit_vector": 3, "theta_phi": 2}  # direction attribute -> number of targets it needs
RESOLUTION_Q = 0.68  # the 68 % containment angle, the usual single-number angular resolution
WORST_ANGLE_DEG = 180.0  # the opening angle of an event without a direction (a zero-length vector)


def wrap_phi(x: np.ndarray) -> np.ndarray:
    """Wrap angles in radians into (-π, π] (π stays π, -π becomes π)."""
    wrapped = np.pi - np.mod(np.pi - np.asarray(x, dtype=float), 2.0 * np.pi)
    return np.where(wrapped <= -np.pi, wrapped + 2.0 * np.pi, wrapped)  # mod can round up to exactly 2π


def check_direction(direction: str | None, n_targets: int) -> None:
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


def normalised(vectors: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(vectors, axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norm > 0, vectors / norm, np.nan)  # a zero vector has no direction


def opening_angle_deg(pred: np.ndarray, target: np.ndarray, direction: str) -> np.ndarray:
    """Per-event 3D angle in degrees between predicted and true directions.

    ``direction`` is "unit_vector" (K = 3, vectors need not be normalised) or "theta_phi" (K = 2, radians). Uses
    atan2(|a x b|, a . b), which stays accurate for tiny angles where arccos of a dot product does not. An event whose
    predicted or true vector has zero length has no direction to compare: its angle is 180°, the worst answer, so it
    counts against the resolution instead of dropping out of it (NaN inputs stay NaN).
    """
    pred, target = np.atleast_2d(np.asarray(pred, dtype=float)), np.atleast_2d(np.asarray(target, dtype=float))
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {sorted(DIRECTIONS)}, got {direction!r}")
    check_direction(direction, pred.shape[1])
    if direction == "theta_phi":
        pred, target = theta_phi_to_unit(pred), theta_phi_to_unit(target)
    a, b = normalised(pred), normalised(target)
    cross = np.linalg.norm(np.cross(a, b), axis=1)
    angle = np.degrees(np.arctan2(cross, np.sum(a * b, axis=1)))
    no_direction = (np.linalg.norm(pred, axis=1) == 0) | (np.linalg.norm(target, axis=1) == 0)
    return np.where(no_direction, WORST_ANGLE_DEG, angle)


def is_azimuth(name: str, index: int, direction: str | None) -> bool:
    """φ is a target named ``phi`` (or ``<something>_phi``), or the 2nd column of a theta_phi direction."""
    lowered = name.lower()
    return lowered == "phi" or lowered.endswith("_phi") or (direction == "theta_phi" and index == 1)
