"""The Pareto front of a multi-objective sweep (``scan.also``): the trials no other trial beats on every objective.

O(n^2) pairwise dominance, one numpy comparison of a point against all others at a time: 3,000 trials take a few
hundredths of a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from reports._rank import Ranking, Row


def dominates(a: tuple[float, ...], b: tuple[float, ...], modes: tuple[str, ...]) -> bool:
    """a is at least as good as b on every objective and strictly better on one."""
    better = False
    for x, y, mode in zip(a, b, modes):
        if mode == "min":
            x, y = -x, -y
        if x < y:
            return False
        if x > y:
            better = True
    return better


def non_dominated(points: list[tuple[float, ...]], modes: tuple[str, ...]) -> list[int]:
    """Indices of the points that no other point dominates (duplicates of a front point are all kept)."""
    if not points:
        return []
    signs = np.array([-1.0 if m == "min" else 1.0 for m in modes])
    larger_is_better = np.asarray(points, dtype=float) * signs
    keep = []
    for i, p in enumerate(larger_is_better):
        beaten = np.all(larger_is_better >= p, axis=1) & np.any(larger_is_better > p, axis=1)
        if not beaten.any():
            keep.append(i)
    return keep


@dataclass
class Front:
    metrics: tuple[str, ...]
    modes: tuple[str, ...]
    rows: list[Row]  # every trial with all objectives, in ranking order
    values: list[tuple[float, ...]]
    front: list[int]  # indices into rows/values, sorted by the first objective


def pareto_front(ranking: Ranking) -> Front | None:
    """None for a single-objective sweep."""
    sweep = ranking.sweep
    if not sweep.also:
        return None
    metrics = (sweep.objective,) + tuple(a["metric"] for a in sweep.also)
    modes = (sweep.mode,) + tuple(a["mode"] for a in sweep.also)
    rows, values = [], []
    for r in ranking.ranked:
        v = tuple(r.trial.value(m, ranking.at) for m in metrics)
        if all(x is not None and math.isfinite(x) for x in v):
            rows.append(r)
            values.append(v)
    front = non_dominated(values, modes)
    front.sort(key=lambda i: values[i][0], reverse=modes[0] == "max")
    return Front(metrics, modes, rows, values, front)
