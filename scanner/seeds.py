"""The seed aggregate of a trial trained with several seeds: the mean, the sample spread and the error of the mean.

    seed_aggregate([{"accuracy": 0.81}, {"accuracy": 0.79}, {"accuracy": 0.80}], "seeds/test/")
    # {"seeds/test/accuracy": 0.80, "seeds/test/accuracy_std": 0.01, "seeds/test/accuracy_err": 0.0058, "seeds/n": 3}
"""

from __future__ import annotations

import math

import numpy as np


def seed_aggregate(per_seed: list[dict[str, float]], prefix: str) -> dict[str, float]:
    """For each metric every seed has: ``<prefix><m>`` (mean), ``_std`` (ddof 1) and ``_err`` (std / sqrt N);
    and ``seeds/n``. The seeds share the events, so each run's own statistical error is not divided by sqrt N."""
    n = len(per_seed)
    if n < 2:
        return {}
    shared = set(per_seed[0]).intersection(*per_seed[1:])
    out: dict[str, float] = {"seeds/n": float(n)}
    for name in sorted(shared):
        values = np.array([float(s[name]) for s in per_seed])
        if not np.all(np.isfinite(values)):
            continue
        std = float(np.std(values, ddof=1))
        out[f"{prefix}{name}"] = float(np.mean(values))
        out[f"{prefix}{name}_std"] = std
        out[f"{prefix}{name}_err"] = std / math.sqrt(n)
    return out
