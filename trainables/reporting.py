"""The small interface between the training loop and whoever tracks it (Ray Tune, MLflow, a test).

The loop knows nothing of Ray or MLflow. At the end of every epoch it writes a checkpoint folder and calls
``Reporter.report``; at start it asks ``Reporter.resume_from`` for a folder to continue from.

A checkpoint folder holds ``state.pt`` (model, optimizer, scheduler, EMA, the evaluated model, epoch, RNG, config,
best-so-far, data description), ``confusion.json`` (classification) and ``predictions.h5`` of the validation split
at that epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class Reporter(Protocol):
    def resume_from(self) -> Path | None:
        """A checkpoint folder to continue from, or None to start fresh."""

    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path, is_best: bool) -> None:
        """One epoch's metrics (contract names, step = epoch, 1-based) and its checkpoint folder.

        The folder may be reused after the call returns: copy what you keep.
        """


# Beside the metrics (names with a "/"), a report carries these plain keys once a trial has been restarted at a
# smaller batch after running out of memory: the tracker tags the run with them (MLflow params cannot change).
OOM_RETRIES_KEY = "oom_retries"
BATCH_SIZE_KEY = "batch_size_final"


def oom_record(retries: int, batch_size: int | None) -> dict[str, int]:
    """The plain keys above for a report, once the trial has been restarted at a smaller batch; else nothing."""
    return {OOM_RETRIES_KEY: int(retries), BATCH_SIZE_KEY: int(batch_size)} if retries and batch_size else {}


@dataclass
class TrialOutcome:
    status: str  # completed | failed
    epochs: int  # the last epoch reached (for a failure: the one it failed in)
    failure: str | None = None  # one line: why it failed (scan.failure)
    best: dict[str, float] = field(default_factory=dict)  # the best/ block of the last report
    batch_size_final: int | None = None  # the batch size it ended with (smaller after out-of-memory retries)
    oom_retries: int = 0  # restarts at half the batch size after an out-of-memory error
    bad_input: bool = False  # it failed on the data itself (a NaN/inf pixel): no run of this input can do better


class MemoryReporter:
    """Keeps everything in memory: for tests and benchmarks."""

    def __init__(self, resume: Path | None = None):
        self._resume = resume
        self.history: list[tuple[int, dict[str, float]]] = []

    def resume_from(self) -> Path | None:
        return self._resume

    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path, is_best: bool) -> None:
        self.history.append((epoch, dict(metrics)))
