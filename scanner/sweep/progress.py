"""The sweep's terminal output: one line per change, ``[ 1:05] running 2 | done 5 | ... | best ...``."""

from __future__ import annotations

import sys
import time
from typing import Iterable

from scanner.sweep.standings import counts, leader
from scanner.sweep.states import TrialState
from trainables.contract import Status


class ProgressLine:
    def __init__(self, objective: str, mode: str, quiet: bool = False):
        self.objective, self.mode, self.quiet = objective, mode, quiet
        self._t0 = time.monotonic()
        self._last = ""
        self.replicas = 0  # seed replicas the sweep trains after its search: "replicas 2/6" on the line

    def say(self, text: str) -> None:
        if not self.quiet:
            elapsed = int(time.monotonic() - self._t0)
            print(f"[{elapsed // 60:3d}:{elapsed % 60:02d}] {text}", file=sys.stdout, flush=True)

    def update(self, states: Iterable[TrialState]) -> None:
        states = list(states)
        c = counts(states)
        best = leader(states, self.mode)
        best_text = f"best {self.objective}={best.best_value:.4g} ({best.label})" if best else "best -"
        line = (f"running {c[Status.RUNNING]} | done {c[Status.COMPLETED]} | stopped {c[Status.STOPPED_EARLY]} | "
                f"failed {c[Status.FAILED]} | {best_text}")
        if self.replicas:
            done = sum(s.replica_of is not None and s.status in Status.TERMINAL for s in states)
            line += f" | replicas {done}/{self.replicas}"
        if line != self._last:
            self._last = line
            self.say(line)
