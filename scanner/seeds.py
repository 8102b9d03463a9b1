"""The seed aggregate of a finalist: the mean, the spread and its error over the runs that differ only by seed.

    seed_aggregate([{"accuracy": 0.81}, {"accuracy": 0.79}, {"accuracy": 0.80}], "seeds/test/")
    # -> {"seeds/test/accuracy": 0.80, "seeds/test/accuracy_std": 0.01, "seeds/test/accuracy_err": 0.0058,
    #     "seeds/n": 3.0}

The seeds share the test events, so each run's own statistical error (``<metric>_err``) is not averaged down by
sqrt(N): it stays on the runs, and the aggregate carries the seed spread only.
"""

from __future__ import annotations

import math

import numpy as np

from trainables.contract import SEEDS_N


def seed_aggregate(per_seed: list[dict[str, float]], prefix: str) -> dict[str, float]:
    """For each metric present in every seed: ``<prefix><metric>`` the mean, ``<prefix><metric>_std`` the sample
    standard deviation (ddof = 1) and ``<prefix><metric>_err`` = std / sqrt(N); plus ``seeds/n``.

    A metric's own ``_err`` (its per-run statistical error) is not aggregated: its mean would take the name of the
    metric's seed error. With one seed the spread is undefined, so only the mean is given (never a made-up 0)."""
    if not per_seed:
        raise ValueError("seed_aggregate needs at least one seed's metrics")
    n = len(per_seed)
    common = set(per_seed[0]).intersection(*per_seed[1:])
    out: dict[str, float] = {}
    for name in sorted(m for m in common if not m.endswith("_err")):
        values = np.array([float(seed[name]) for seed in per_seed], dtype=np.float64)
        out[prefix + name] = float(values.mean())
        if n > 1:
            std = float(values.std(ddof=1))
            out[f"{prefix}{name}_std"] = std
            out[f"{prefix}{name}_err"] = std / math.sqrt(n)
    out[SEEDS_N] = float(n)
    return out
