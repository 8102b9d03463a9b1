"""The statistics behind "is the lead real?": a paired bootstrap over the same test events, its combination with the
seed spread of replicas, and Kendall's tau for "does the order hold on a variant?". Numpy only.

Paired bootstrap. Two trials scored on the same test events: each resample draws N events with replacement (the
same events for both trials) and recomputes both figures; the spread of their difference over the resamples is the
statistical error of the difference, with the events' correlation between the trials taken into account (two
models that fail on the same hard events differ less than their separate errors suggest).

Seed spread. With replicas, a trial's figure is the mean over its seeds and ``seeds/test/<m>_err`` (std / √N) is the
training-seed uncertainty of that mean. The seeds share the test events, so the event uncertainty is not divided by
√N; the two sources are independent and add in quadrature:

    σ(Δ)² = σ_bootstrap² + err_seeds(A)² + err_seeds(B)²

P(A better) is the share of resamples in which A is better, the bootstrap distribution being centred on the
difference of the seed means and each resample smeared by the seed term: P = mean_b Φ(d_b / σ_seeds) (without
replicas, σ_seeds = 0 and P is the plain fraction of resamples where A is better, ties counting half).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from trainables.physics import weighted_quantile

N_BOOTSTRAP = 1000  # resamples: P(better) to about ±0.01 near 0.95, the error of Δ to about 2 %
SEED = 0  # fixed: the same predictions always give the same figures
_CHUNK_ELEMENTS = 2_000_000  # resampled indices per chunk (16 MB of int64), whatever the number of events

# A statistic of one trial on a resample, from the resample's event counts (rows, N) and its indices (rows, N).
Statistic = Callable[[np.ndarray, np.ndarray], np.ndarray]


def resample_indices(n: int, n_boot: int, seed: int = SEED):
    """The bootstrap draws, in chunks of rows: ``index[b]`` is resample b's N event indices (with replacement)."""
    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, n_boot, rows_per_chunk):
        yield rng.integers(0, n, size=(min(rows_per_chunk, n_boot - start), n))


def event_counts(index: np.ndarray, n: int) -> np.ndarray:
    """(rows, N) how often each event was drawn in each resample (one bincount over the whole chunk)."""
    rows = index.shape[0]
    flat = (index + n * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(float)


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> Statistic:
    """A weighted fraction or mean, sum(u) / sum(v) over the resampled events (accuracy, efficiency, bias, ...)."""
    both = np.stack([numerator, denominator], axis=1).astype(float)

    def stat(counts: np.ndarray, index: np.ndarray) -> np.ndarray:
        sums = counts @ both
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums[:, 0] / sums[:, 1]
    return stat


def product(a: Statistic, b: Statistic) -> Statistic:
    """FOM = efficiency x purity on each resample."""
    return lambda counts, index: a(counts, index) * b(counts, index)


def quantile(values: np.ndarray, q: float, weights: np.ndarray | None = None) -> Statistic:
    """The (weighted) q quantile of ``values`` over the resampled events (the 68 % opening angle)."""
    values = np.asarray(values, dtype=float)

    def stat(counts: np.ndarray, index: np.ndarray) -> np.ndarray:
        if weights is None:
            return np.quantile(values[index], q, axis=1)
        return np.array([weighted_quantile(values[row], q, weights[row]) for row in index])
    return stat


def bootstrap_many(stats: dict[str, Statistic], n: int, n_boot: int = N_BOOTSTRAP, seed: int = SEED
                   ) -> dict[str, np.ndarray]:
    """Each trial's figure on the same ``n_boot`` resamples of the ``n`` shared events: any two of them form a
    paired bootstrap, with no resampling per pair."""
    out: dict[str, list[np.ndarray]] = {key: [] for key in stats}
    for index in resample_indices(n, n_boot, seed):
        counts = event_counts(index, n)
        for key, stat in stats.items():
            out[key].append(stat(counts, index))
    return {key: np.concatenate(parts) for key, parts in out.items()}


def on_all_events(stat: Statistic, n: int) -> float:
    """The statistic on the events themselves (no resampling)."""
    return float(stat(np.ones((1, n)), np.arange(n)[None, :])[0])


def quadrature(*errs: float | None) -> float:
    """1-sigma errors combined in quadrature; NaN (unknown) when any of them is not logged or not finite. A missing
    error is unknown, never zero: a zero would turn any difference into a certain one."""
    if any(e is None or not math.isfinite(e) for e in errs):
        return math.nan
    return math.hypot(*errs)


def within(delta: float, sigma: float) -> bool | None:
    """``|delta| <= sigma`` (a tie); None when ``sigma`` is unknown (NaN) and ``delta`` is not 0."""
    if math.isfinite(sigma):
        return abs(delta) <= sigma
    return True if delta == 0 else None


@dataclass
class PairedDifference:
    """A (the leader) against B on the test split, signed so that a positive ``better_by`` means A is better."""

    delta: float  # A - B, in the figure's own units (seed means when both have replicas)
    err: float  # combined 1-sigma error of delta; NaN when unknown (an error not logged)
    err_events: float  # the paired-bootstrap part (or the logged errors in quadrature)
    err_seeds: float  # the seed-spread part (0 without replicas)
    p_better: float  # P(A better than B); NaN when the error is unknown
    method: str  # "paired bootstrap" | "logged errors"


def normal_cdf(z: np.ndarray | float) -> np.ndarray | float:
    return 0.5 * (1.0 + np.vectorize(math.erf)(np.asarray(z, dtype=float) / math.sqrt(2.0)))


def paired_difference(fig_a: np.ndarray, fig_b: np.ndarray, observed: float, sign: float, center: float | None = None,
                      err_seeds: float = 0.0) -> PairedDifference:
    """Combine bootstrap figures of A and B (same resamples) with the seed term, as the module docstring says.

    ``observed``: A − B on all events; ``center``: A − B of the seed means (None: ``observed``); ``sign`` +1 when
    larger is better, −1 when smaller is."""
    d = fig_a - fig_b
    d = d[np.isfinite(d)]
    center = observed if center is None else center
    err_events = float(np.std(d, ddof=1)) if d.size > 1 else math.nan
    better = sign * (d - observed + center)  # resamples re-centred on the seed means; > 0: A better
    if not math.isfinite(err_seeds):  # replicas whose spread was not logged: how sure is unknown
        p = math.nan
    elif err_seeds > 0:
        p = float(np.mean(normal_cdf(better / err_seeds)))
    else:
        p = float(np.mean(better > 0) + 0.5 * np.mean(better == 0)) if d.size else math.nan
    err = math.hypot(err_events, err_seeds) if math.isfinite(err_events) else math.nan
    return PairedDifference(center, err, err_events, err_seeds, p, "paired bootstrap")


def unpaired_difference(a: float, b: float, err_a: float | None, err_b: float | None, sign: float,
                        err_seeds: float = 0.0) -> PairedDifference:
    """Without predictions to pair: the logged errors in quadrature (an overestimate: they share the test events).
    Either error not logged (an older store, a figure without ``_err``): the error and P are unknown (NaN)."""
    events = quadrature(err_a, err_b)
    err = quadrature(events, err_seeds)
    better = sign * (a - b)
    if not math.isfinite(err):
        p = math.nan
    elif err > 0:
        p = float(normal_cdf(better / err))
    else:
        p = 1.0 if better > 0 else (0.0 if better < 0 else 0.5)
    return PairedDifference(a - b, err, events, err_seeds, p, "logged errors")


def kendall_tau(x: list[float] | np.ndarray, y: list[float] | np.ndarray) -> float:
    """Kendall's tau-b (ties in either ranking allowed), as ``scipy.stats.kendalltau``; NaN when undefined."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    i, j = np.triu_indices(len(x), k=1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    concordant_minus_discordant = float(np.sum(sx * sy))
    pairs_x, pairs_y = float(np.sum(sx != 0)), float(np.sum(sy != 0))
    if pairs_x == 0 or pairs_y == 0:
        return math.nan
    return concordant_minus_discordant / math.sqrt(pairs_x * pairs_y)
