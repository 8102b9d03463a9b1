"""Checkpoint fixtures: real trials of the loop (one short epoch on a tiny HDF5 file), kept as their best folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

__all__ = ["train_checkpoint", "tiny_checkpoint", "tiny_regression_checkpoint"]


def train_checkpoint(h5: Path, folder: Path, task: str = "classification", epochs: int = 1, **trial) -> Path:
    """Train ``trial`` (default small_cnn_tiny) with the real loop on ``h5``; the best epoch's folder, copied."""
    from trainables.config import DataConfig, TrialConfig, TrialSpec
    from trainables.loop import train_trial
    from trainables.reporting import MemoryReporter

    class KeepBest(MemoryReporter):
        def report(self, epoch, metrics, checkpoint_dir, is_best):
            super().report(epoch, metrics, checkpoint_dir, is_best)
            if is_best:
                shutil.rmtree(folder, ignore_errors=True)
                shutil.copytree(checkpoint_dir, folder)

    base = {"model": "small_cnn_tiny", "batch_size": 32, "num_workers": 0, "lr": 3e-3, **trial}
    regression = task == "regression"
    spec = TrialSpec(task=task, data=DataConfig(path=str(h5)), trial=TrialConfig.from_dict(base), max_epochs=epochs,
                     objective="val/resolution68_deg" if regression else "val/accuracy",
                     objective_mode="min" if regression else "max", workdir=str(folder.parent / "work"))
    outcome = train_trial(spec, KeepBest())
    assert outcome.status == "completed", outcome.failure
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_h5, tmp_path_factory) -> Path:
    """small_cnn_tiny, 1 epoch, classification on ``tiny_h5`` (600 events of 2x32x32), with EMA."""
    return train_checkpoint(tiny_h5, tmp_path_factory.mktemp("ckpt") / "best", ema_decay=0.9)


@pytest.fixture(scope="session")
def tiny_regression_checkpoint(tiny_h5, tmp_path_factory) -> Path:
    """small_cnn_tiny, 1 epoch, direction regression on ``tiny_h5``."""
    return train_checkpoint(tiny_h5, tmp_path_factory.mktemp("ckpt_reg") / "best", task="regression")
