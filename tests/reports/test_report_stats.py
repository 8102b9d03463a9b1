"""The statistics of "is the lead real?" against references: the paired bootstrap against an exact enumeration of
every resample of a small case and against a direct per-resample computation, the seed combination against its
formula, and Kendall's tau against scipy."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from reports import _lead, _stats
from trainables.physics import weighted_quantile

# 5 events, two classifiers: 1 = the event was classified right. A is right on 4, B on 2; they share event 0.
A_RIGHT = np.array([1.0, 1.0, 1.0, 1.0, 0.0])
B_RIGHT = np.array([1.0, 0.0, 0.0, 1.0, 1.0])
WEIGHTS = np.array([1.0, 2.0, 0.5, 1.0, 1.5])


def exact_bootstrap(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> tuple[float, float, float]:
    """Every one of the n^n equally likely resamples: (mean of d, std of d, P(d > 0) + P(d = 0) / 2), d = acc_A - acc_B."""
    n = len(a)
    d = []
    for draw in itertools.product(range(n), repeat=n):
        idx = np.array(draw)
        d.append(np.sum(w[idx] * a[idx]) / np.sum(w[idx]) - np.sum(w[idx] * b[idx]) / np.sum(w[idx]))
    d = np.array(d)
    return float(d.mean()), float(d.std()), float(np.mean(d > 0) + 0.5 * np.mean(d == 0))


def test_paired_bootstrap_matches_the_exact_enumeration_of_a_small_case():
    n = len(A_RIGHT)
    figures = _stats.bootstrap_many({"a": _stats.ratio(WEIGHTS * A_RIGHT, WEIGHTS),
                                     "b": _stats.ratio(WEIGHTS * B_RIGHT, WEIGHTS)}, n, n_boot=40_000, seed=3)
    mean, std, p = exact_bootstrap(A_RIGHT, B_RIGHT, WEIGHTS)
    observed = float(np.average(A_RIGHT, weights=WEIGHTS) - np.average(B_RIGHT, weights=WEIGHTS))
    diff = _stats.paired_difference(figures["a"], figures["b"], observed, sign=1.0)
    assert np.mean(figures["a"] - figures["b"]) == pytest.approx(mean, abs=0.005)
    assert diff.err_events == pytest.approx(std, rel=0.02)
    assert diff.p_better == pytest.approx(p, abs=0.01)
    assert diff.delta == pytest.approx(observed) and diff.err_seeds == 0.0
    assert diff.err == diff.err_events


def test_paired_error_is_smaller_than_the_unpaired_one_for_correlated_trials():
    """Two classifiers that fail on the same hard events: pairing removes the shared part of the noise."""
    rng = np.random.default_rng(0)
    hard = rng.random(2000) < 0.3
    a = (~hard | (rng.random(2000) < 0.2)).astype(float)
    b = (~hard | (rng.random(2000) < 0.1)).astype(float)
    w = np.ones(2000)
    figures = _stats.bootstrap_many({"a": _stats.ratio(a, w), "b": _stats.ratio(b, w)}, 2000)
    paired = _stats.paired_difference(figures["a"], figures["b"], a.mean() - b.mean(), 1.0)
    unpaired = math.hypot(np.std(figures["a"], ddof=1), np.std(figures["b"], ddof=1))
    assert paired.err_events < 0.8 * unpaired


def test_every_resample_equals_a_direct_computation_with_the_same_draws():
    rng = np.random.default_rng(1)
    n, n_boot = 50, 300
    a, b, w = rng.random(n) < 0.7, rng.random(n) < 0.6, rng.uniform(0.5, 1.5, n)
    angle = rng.exponential(10.0, n)
    got = _stats.bootstrap_many({"a": _stats.ratio(w * a, w), "b": _stats.ratio(w * b, w),
                                 "q": _stats.quantile(angle, 0.68), "qw": _stats.quantile(angle, 0.68, w)},
                                n, n_boot=n_boot, seed=7)
    draws = np.concatenate(list(_stats.resample_indices(n, n_boot, seed=7)))
    assert draws.shape == (n_boot, n)
    for k, idx in enumerate(draws):
        assert got["a"][k] == pytest.approx(np.average(a[idx], weights=w[idx]))
        assert got["b"][k] == pytest.approx(np.average(b[idx], weights=w[idx]))
        assert got["q"][k] == pytest.approx(np.quantile(angle[idx], 0.68))
        assert got["qw"][k] == pytest.approx(weighted_quantile(angle[idx], 0.68, w[idx]))


def test_chunks_draw_the_same_resamples_as_one_block(monkeypatch):
    whole = np.concatenate(list(_stats.resample_indices(1000, 40, seed=2)))
    monkeypatch.setattr(_stats, "_CHUNK_ELEMENTS", 3000)  # 3 rows per chunk
    chunks = list(_stats.resample_indices(1000, 40, seed=2))
    assert len(chunks) > 1 and sum(len(c) for c in chunks) == 40
    assert np.array_equal(np.concatenate(chunks), whole)  # the chunk size never changes a figure


def test_seed_spread_adds_in_quadrature_and_smears_p():
    rng = np.random.default_rng(4)
    fa = 0.80 + rng.normal(0, 0.01, 5000)
    fb = 0.79 + rng.normal(0, 0.01, 5000)
    observed, center, seeds = 0.01, 0.015, 0.02
    d = _stats.paired_difference(fa, fb, observed, 1.0, center=center, err_seeds=seeds)
    boot_std = np.std(fa - fb, ddof=1)
    assert d.delta == center
    assert d.err == pytest.approx(math.hypot(boot_std, seeds))
    shifted = fa - fb - observed + center
    assert d.p_better == pytest.approx(np.mean([0.5 * (1 + math.erf(x / seeds / math.sqrt(2))) for x in shifted]))
    # the normal approximation of the same thing: P = Phi(center / sigma)
    assert d.p_better == pytest.approx(0.5 * (1 + math.erf(center / d.err / math.sqrt(2))), abs=0.01)
    worse = _stats.paired_difference(fa, fb, observed, -1.0, center=center, err_seeds=seeds)  # smaller is better
    assert worse.p_better == pytest.approx(1 - d.p_better, abs=1e-9)


def test_unpaired_difference_uses_the_logged_errors():
    d = _stats.unpaired_difference(0.85, 0.80, 0.01, 0.02, 1.0, err_seeds=0.01)
    assert d.delta == pytest.approx(0.05)
    assert d.err == pytest.approx(math.sqrt(0.01**2 + 0.02**2 + 0.01**2))
    assert d.p_better == pytest.approx(0.5 * (1 + math.erf(0.05 / d.err / math.sqrt(2))))
    assert d.method == "logged errors"


@pytest.mark.parametrize("err_a, err_b", [(None, 0.02), (0.01, None), (None, None), (math.nan, 0.02)])
def test_a_missing_logged_error_leaves_the_difference_unknown_not_certain(err_a, err_b):
    d = _stats.unpaired_difference(0.85, 0.80, err_a, err_b, 1.0)
    assert d.delta == pytest.approx(0.05)
    assert math.isnan(d.err) and math.isnan(d.p_better)  # before: error 0 and P = 1, "certainly better"


def test_a_worse_trial_with_zero_error_is_certainly_not_better():
    assert _stats.unpaired_difference(0.80, 0.85, 0.0, 0.0, 1.0).p_better == 0.0


def test_replicas_without_a_logged_seed_error_leave_the_paired_difference_unknown():
    rng = np.random.default_rng(5)
    fa, fb = 0.80 + rng.normal(0, 0.01, 2000), 0.75 + rng.normal(0, 0.01, 2000)
    d = _stats.paired_difference(fa, fb, 0.05, 1.0, err_seeds=math.nan)
    assert math.isnan(d.err) and math.isnan(d.p_better)  # not P = 1 from the events alone
    one_seed = _lead.Finalist(None, 0.8, 0.8, 0.01, seeds=1, seed_std=None, seed_err=None)
    replicas = _lead.Finalist(None, 0.8, 0.8, 0.01, seeds=3, seed_std=None, seed_err=None)
    logged = _lead.Finalist(None, 0.8, 0.8, 0.01, seeds=3, seed_std=0.02, seed_err=0.012)
    assert _lead.seed_term(one_seed) == 0.0 and _lead.seed_term(logged) == 0.012
    assert math.isnan(_lead.seed_term(replicas))


@pytest.mark.parametrize("seed", range(6))
def test_kendall_tau_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 12))
    x = rng.integers(0, 5, n).astype(float)  # small integers: ties in both rankings
    y = x + rng.integers(-2, 3, n)
    expected = scipy_stats.kendalltau(x, y).statistic
    got = _stats.kendall_tau(x, y)
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)


def test_kendall_tau_of_a_kept_and_a_reversed_order():
    assert _stats.kendall_tau([0.9, 0.8, 0.7], [0.7, 0.6, 0.5]) == pytest.approx(1.0)
    assert _stats.kendall_tau([0.9, 0.8, 0.7], [0.5, 0.6, 0.7]) == pytest.approx(-1.0)
    assert math.isnan(_stats.kendall_tau([1.0, 1.0], [0.0, 1.0]))  # a constant ranking: undefined
