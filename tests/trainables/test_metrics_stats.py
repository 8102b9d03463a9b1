"""Wilson errors and weighted quantiles against textbook formulas and numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainables.metrics import weighted_quantile, wilson_err


def _wilson_textbook(k: float, n: float, z: float = 1.0) -> float:
    """Wilson (1927) score interval: centre ± half, written out as (upper - lower) / 2."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    spread = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lower, upper = centre - spread, centre + spread
    return (upper - lower) / 2


def test_wilson_known_value():
    # k = 8, n = 10, z = 1: (1 / 1.1) * sqrt(0.8 * 0.2 / 10 + 1 / 400) = 0.909091 * sqrt(0.0185)
    assert wilson_err(8, 10) == pytest.approx(0.1236497, abs=1e-6)


@pytest.mark.parametrize("k,n", [(0, 5), (5, 5), (3, 7), (50, 1000), (2.5, 4.2)])
def test_wilson_matches_textbook(k, n):
    assert wilson_err(k, n) == pytest.approx(_wilson_textbook(k, n), rel=1e-12)


def test_wilson_is_positive_at_the_edges_and_vectorised():
    errs = wilson_err(np.array([0, 10]), np.array([10, 10]))
    assert errs.shape == (2,) and np.all(errs > 0)
    assert errs[0] == pytest.approx(errs[1])  # symmetric in k <-> n - k
    assert math.isnan(wilson_err(0, 0))


@pytest.mark.parametrize("n", [2, 3, 10, 101])
@pytest.mark.parametrize("q", [0.0, 0.1, 0.5, 0.68, 0.9, 1.0])
def test_weighted_quantile_equals_numpy_for_unit_weights(n, q):
    values = np.random.default_rng(n).normal(size=n)
    assert weighted_quantile(values, q) == pytest.approx(np.quantile(values, q), abs=1e-12)
    assert weighted_quantile(values, q, np.full(n, 3.7)) == pytest.approx(np.quantile(values, q), abs=1e-12)


def test_weighted_quantile_weights_shift_the_quantile():
    values = np.array([1.0, 2.0, 3.0, 4.0])
    light_tail = weighted_quantile(values, 0.5, np.array([1.0, 1.0, 1.0, 1.0]))
    heavy_tail = weighted_quantile(values, 0.5, np.array([1.0, 1.0, 1.0, 10.0]))
    assert light_tail == pytest.approx(2.5) and heavy_tail > light_tail


def test_weighted_quantile_ignores_zero_weight_events():
    values = np.array([1.0, 2.0, 100.0, 3.0])
    assert weighted_quantile(values, 0.5, np.array([1.0, 1.0, 0.0, 1.0])) == pytest.approx(2.0)
    assert weighted_quantile(np.array([5.0]), 0.68) == 5.0
    with pytest.raises(ValueError):
        weighted_quantile(np.array([]), 0.5)
    with pytest.raises(ValueError):
        weighted_quantile(values, 1.5)
