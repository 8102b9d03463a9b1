"""Checkpoint fixtures for export and explain: real trials of the loop (fixtures_evaluate.train_tiny: one epoch on a
tiny HDF5 file), copies of them with an older or newer meta, hand-built runs in a sweep's MLflow layout, and a
deliberately wrong ONNX graph."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from fixtures_evaluate import train_tiny
from onnx import numpy_helper

__all__ = ["hand_run", "perturbed", "tiny_checkpoint", "tiny_regression_checkpoint", "with_meta"]


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_h5, tmp_path_factory) -> Path:
    """small_cnn_tiny, 1 epoch, classification on ``tiny_h5`` (600 events of 2x32x32), with EMA."""
    return train_tiny(tiny_h5, tmp_path_factory.mktemp("ckpt") / "best", ema_decay=0.9, lr=3e-3)


@pytest.fixture(scope="session")
def tiny_regression_checkpoint(tiny_h5, tmp_path_factory) -> Path:
    """small_cnn_tiny, 1 epoch, direction regression on ``tiny_h5``."""
    return train_tiny(tiny_h5, tmp_path_factory.mktemp("ckpt_reg") / "best", task="regression", lr=3e-3)


def with_meta(checkpoint: Path, folder: Path, drop: tuple[str, ...] = (), config: dict | None = None,
              **changes) -> Path:
    """A copy of ``checkpoint``'s state.pt in ``folder`` without the entries ``drop``, whose trial config has the
    values ``config`` and whose meta has ``changes`` (None removes a key): a checkpoint of an older or a newer loop."""
    state = torch.load(Path(checkpoint) / "state.pt", weights_only=False)
    for key in drop:
        state.pop(key)
    state["config"].update(config or {})
    state["meta"].update(changes)
    state["meta"] = {k: v for k, v in state["meta"].items() if v is not None}
    folder.mkdir(parents=True)
    torch.save(state, folder / "state.pt")
    return folder


def hand_run(client, experiment: str, checkpoint: Path, data_path: Path | None, tags: dict | None = None) -> str:
    """A trial run as a sweep leaves it: ``scan.checkpoint`` on the run and, when ``data_path`` is given, a parent
    run holding the sweep's ``space.yaml`` (its ``data:`` block names the file); returns the trial's run id."""
    exp = client.get_experiment_by_name(experiment)
    store = Path(client.tracking_uri[len("sqlite:///"):]).parent  # artifacts next to the store, not in the cwd
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment, str(store / "artifacts"))
    run_tags = {"scan.checkpoint": str(checkpoint), **(tags or {})}
    if data_path is not None:
        parent = client.create_run(exp_id, run_name=experiment, tags={"scan.role": "parent"}).info.run_id
        with tempfile.TemporaryDirectory() as tmp:
            space = Path(tmp) / "space.yaml"
            space.write_text(yaml.safe_dump({"name": experiment, "task": "classification",
                                             "data": {"path": str(data_path)}}))
            client.log_artifact(parent, str(space))
        run_tags["mlflow.parentRunId"] = parent
    return client.create_run(exp_id, run_name="t00 hand", tags=run_tags).info.run_id


def perturbed(proto, shift: float = 0.05):
    """The same ONNX graph with the head's bias moved: a wrong export that still loads and runs."""
    broken = onnx.ModelProto()
    broken.CopyFrom(proto)
    bias = next(t for t in broken.graph.initializer if "head" in t.name and "bias" in t.name)
    values = numpy_helper.to_array(bias)
    moved = values + np.float32(shift) * np.arange(1, len(values) + 1, dtype=np.float32)  # not a softmax no-op
    bias.CopyFrom(numpy_helper.from_array(moved.astype(np.float32), bias.name))
    return broken
