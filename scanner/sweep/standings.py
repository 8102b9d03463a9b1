"""Which trial leads: by its best objective value, ties broken by trial order (t03 before t07), as the report ranks."""

from __future__ import annotations

import math
from typing import Iterable

from scanner.sweep.states import TrialState
from trainables.contract import Status


def ranked_trials(states: Iterable[TrialState], mode: str) -> list[TrialState]:
    """Trials of the search that reached a best epoch, best first; failed trials and seed replicas never rank."""
    usable = [s for s in states if s.replica_of is None and s.status != Status.FAILED
              and s.best_value is not None and not math.isnan(s.best_value)]
    sign = -1.0 if mode == "max" else 1.0
    return sorted(usable, key=lambda s: (sign * s.best_value, s.index))


def leader(states: Iterable[TrialState], mode: str) -> TrialState | None:
    ranked = ranked_trials(states, mode)
    return ranked[0] if ranked else None


def counts(states: Iterable[TrialState]) -> dict[str, int]:
    """Trials of the search by status (seed replicas are counted apart)."""
    out = {s: 0 for s in (Status.RUNNING, *Status.TERMINAL)}
    for state in states:
        if state.replica_of is not None:
            continue
        out[state.status] = out.get(state.status, 0) + 1
    return out
