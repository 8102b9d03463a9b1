"""Checkpoint fixtures: real trials of the loop (one short epoch on a tiny HDF5 file), kept as their best folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

__all__ = ["hand_run", "perturbed", "tiny_checkpoint", "tiny_regression_checkpoint", "train_checkpoint", "with_meta"]


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


def with_meta(checkpoint: Path, folder: Path, **changes) -> Path:
    """A copy of ``checkpoint``'s state.pt in ``folder`` whose meta has ``changes`` (None removes a key): a checkpoint
    of an older or a newer loop."""
    import torch

    state = torch.load(Path(checkpoint) / "state.pt", weights_only=False)
    state["meta"].update(changes)
    state["meta"] = {k: v for k, v in state["meta"].items() if v is not None}
    folder.mkdir(parents=True)
    torch.save(state, folder / "state.pt")
    return folder


def hand_run(client, experiment: str, checkpoint: Path, data_path: Path | None, tags: dict | None = None) -> str:
    """A trial run as a sweep leaves it: ``scan.checkpoint`` on the run and, when ``data_path`` is given, a parent
    run holding the sweep's ``scan.json`` (its ``data:`` block); returns the trial's run id."""
    import json
    import tempfile

    exp = client.get_experiment_by_name(experiment)
    store = Path(client.tracking_uri[len("sqlite:///"):]).parent  # artifacts next to the store, not in the cwd
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment, str(store / "artifacts"))
    run_tags = {"scan.checkpoint": str(checkpoint), **(tags or {})}
    if data_path is not None:
        parent = client.create_run(exp_id, run_name=experiment, tags={"scan.role": "parent"}).info.run_id
        with tempfile.TemporaryDirectory() as tmp:
            scan_json = Path(tmp) / "scan.json"
            scan_json.write_text(json.dumps({"name": experiment, "space": {"data": {"path": str(data_path)}}}))
            client.log_artifact(parent, str(scan_json))
        run_tags["mlflow.parentRunId"] = parent
    return client.create_run(exp_id, run_name="t00 hand", tags=run_tags).info.run_id


def perturbed(proto, shift: float = 0.05):
    """The same ONNX graph with the head's bias moved: a wrong export that still loads and runs."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    broken = onnx.ModelProto()
    broken.CopyFrom(proto)
    bias = next(t for t in broken.graph.initializer if "head" in t.name and "bias" in t.name)
    values = numpy_helper.to_array(bias)
    moved = values + np.float32(shift) * np.arange(1, len(values) + 1, dtype=np.float32)  # not a softmax no-op
    bias.CopyFrom(numpy_helper.from_array(moved.astype(np.float32), bias.name))
    return broken
