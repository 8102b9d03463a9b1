"""The seed aggregate against numpy computed directly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scanner.seeds import seed_aggregate
from trainables.contract import SEEDS_N


def test_mean_sample_std_and_error_against_numpy():
    rng = np.random.default_rng(3)
    acc, eff = rng.uniform(0.6, 0.9, 5), rng.uniform(0.4, 0.95, 5)
    per_seed = [{"accuracy": a, "accuracy_err": 0.01, "efficiency/NC": e} for a, e in zip(acc, eff)]
    per_seed[2]["only_here"] = 1.0  # not in every seed: left out
    out = seed_aggregate(per_seed, "seeds/test/")
    for name, values in (("accuracy", acc), ("efficiency/NC", eff)):
        assert out[f"seeds/test/{name}"] == pytest.approx(np.mean(values), rel=1e-12)
        assert out[f"seeds/test/{name}_std"] == pytest.approx(np.std(values, ddof=1), rel=1e-12)
        assert out[f"seeds/test/{name}_err"] == pytest.approx(np.std(values, ddof=1) / math.sqrt(5), rel=1e-12)
    assert out[SEEDS_N] == 5.0 == out["seeds/n"]
    assert set(out) == {"seeds/test/accuracy", "seeds/test/accuracy_std", "seeds/test/accuracy_err",
                        "seeds/test/efficiency/NC", "seeds/test/efficiency/NC_std", "seeds/test/efficiency/NC_err",
                        "seeds/n"}


def test_the_seed_error_is_not_the_mean_of_the_per_run_errors():
    out = seed_aggregate([{"accuracy": 0.80, "accuracy_err": 0.02}, {"accuracy": 0.84, "accuracy_err": 0.02}],
                         "seeds/syst/noisy/")
    assert out["seeds/syst/noisy/accuracy_err"] == pytest.approx(np.std([0.80, 0.84], ddof=1) / math.sqrt(2))


def test_one_seed_gives_the_mean_and_no_spread():
    assert seed_aggregate([{"loss": 0.5}], "seeds/test/") == {"seeds/test/loss": 0.5, "seeds/n": 1.0}


def test_no_seed_is_an_error():
    with pytest.raises(ValueError):
        seed_aggregate([], "seeds/test/")
