"""Training-loop helpers shared by the tests of trainables/: a TrialSpec on a tiny file, and a reporter that keeps
every epoch's checkpoint folder (as Tune does) and can crash after a chosen epoch."""

from __future__ import annotations

import shutil
from pathlib import Path

from trainables.config import DataConfig, TrialConfig, TrialSpec
from trainables.reporting import MemoryReporter

__all__ = ["KeepingReporter", "make_spec"]


def make_spec(h5: Path, tmp: Path, epochs: int = 2, task: str = "classification", oom: str = "fail",
              **trial) -> TrialSpec:
    """small_cnn_tiny, batch 32, no workers; regression selects the CC classes (their direction is defined)."""
    base = {"model": "small_cnn_tiny", "batch_size": 32, "num_workers": 0, "lr": 3e-3}
    data = DataConfig(path=str(h5))
    objective = "val/accuracy" if task == "classification" else "val/resolution68_deg"
    if task == "regression":
        data = DataConfig(path=str(h5), select={"labels": ["nueCC", "numuCC"]})
    return TrialSpec(
        task=task,
        data=data,
        trial=TrialConfig.from_dict({**base, **trial}),
        max_epochs=epochs,
        objective=objective,
        objective_mode="max" if task == "classification" else "min",
        workdir=str(tmp),
        oom=oom,
    )


class KeepingReporter(MemoryReporter):
    """Copies every epoch's checkpoint folder, as Tune does, and can crash after a given epoch."""

    def __init__(self, keep: Path, crash_after: int | None = None, resume: Path | None = None):
        super().__init__(resume)
        self.keep, self.crash_after = keep, crash_after

    def report(self, epoch, metrics, checkpoint_dir, is_best):
        super().report(epoch, metrics, checkpoint_dir, is_best)
        shutil.copytree(checkpoint_dir, self.keep / f"epoch{epoch}")
        if epoch == self.crash_after:
            raise KeyboardInterrupt("simulated crash")
