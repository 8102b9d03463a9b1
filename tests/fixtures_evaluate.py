"""Systematics fixtures: tiny trained checkpoints, and a sweep's MLflow layout around them in a real sqlite store
(a parent with its space.yaml, a baseline, two finalists, a seed replica, a non-final trial), without Ray.

The runs carry the tags a sweep writes (docs/mlflow.md); the checkpoints are real ``train_trial`` outputs and
the ``test/`` figures come from ``evaluate_checkpoint``, as the finals log them.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from scanner.tracking import trial_tags
from trainables.checkpoint import load_state
from trainables.config import DataConfig, TrialConfig, TrialSpec
from trainables.contract import PARENT_ROLE, Status, Tag
from trainables.data import write_synthetic
from trainables.loop import evaluate_checkpoint, train_trial

__all__ = ["CopyBest", "SystSweep", "syst_sweep", "train_tiny"]

EVENTS, SIZE = 300, 16


class CopyBest:
    """A loop reporter that keeps the best epoch's checkpoint folder (the loop reuses its own)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def resume_from(self):
        return None

    def report(self, epoch, metrics, checkpoint_dir, is_best) -> None:
        if is_best:
            shutil.rmtree(self.folder, ignore_errors=True)
            shutil.copytree(checkpoint_dir, self.folder)


def train_tiny(data_path: Path, folder: Path, task: str = "classification", epochs: int = 1, **trial) -> Path:
    """A small_cnn_tiny trained ``epochs`` epochs on ``data_path``; its best checkpoint folder."""
    cfg = TrialConfig.from_dict({"model": "small_cnn_tiny", "batch_size": 32, "num_workers": 0, **trial})
    objective = "val/accuracy" if task == "classification" else "val/resolution68_deg"
    spec = TrialSpec(task, DataConfig(path=str(data_path)), cfg, epochs, objective,
                     "max" if task == "classification" else "min", workdir=str(folder.parent / "work"))
    outcome = train_trial(spec, CopyBest(folder))
    assert outcome.status == "completed", outcome
    return folder


@dataclass
class SystSweep:
    folder: Path
    uri: str
    name: str
    nominal: Path  # the training file
    run_ids: dict[str, str] = field(default_factory=dict)  # baseline, t01, t01-seed1, t02 (not a finalist)
    checkpoints: dict[str, Path] = field(default_factory=dict)

    def client(self):
        return MlflowClient(self.uri)

    def metrics(self, key: str) -> dict[str, float]:
        return dict(self.client().get_run(self.run_ids[key]).data.metrics)


def _start_parent(client, experiment_id: str, name: str, nominal: Path, folder: Path) -> str:
    parent = client.create_run(experiment_id, run_name=name, tags={
        Tag.NAME: name, Tag.ROLE: PARENT_ROLE, Tag.INSTANCE: "i1", Tag.OBJECTIVE: "val/accuracy",
        Tag.OBJECTIVE_MODE: "max", Tag.TASK: "classification", Tag.STATUS: "finished"}).info.run_id
    space = folder / "space.yaml"
    space.write_text(yaml.safe_dump({"name": name, "task": "classification", "data": {"path": str(nominal)},
                                     "objective": {"metric": "val/accuracy", "mode": "max"}}))
    client.log_artifact(parent, str(space))
    return parent


def _child(client, experiment_id: str, parent: str, sweep: SystSweep, key: str, trial_id: str, tags: dict) -> None:
    all_tags = trial_tags(sweep.name, trial_id, space_hash="h", class_names=["NC", "nueCC", "numuCC"])
    all_tags.update({Tag.PARENT_RUN_ID: parent, Tag.INSTANCE: "i1", Tag.STATUS: Status.COMPLETED,
                     Tag.CHECKPOINT: str(sweep.checkpoints[key]), **tags})
    run_id = client.create_run(experiment_id, run_name=f"{trial_id} {key}", tags=all_tags).info.run_id
    for metric, value in load_state(sweep.checkpoints[key])["best"].items():  # best/val/... ranks the trials
        client.log_metric(run_id, metric, value, step=1)
    if all_tags.get(Tag.FINAL) == "true" or all_tags.get(Tag.REPLICA_OF):
        test = evaluate_checkpoint(sweep.checkpoints[key], DataConfig(path=str(sweep.nominal)), "classification")
        for metric, value in test.items():
            client.log_metric(run_id, metric, value, step=1)
    client.set_terminated(run_id, "FINISHED")
    sweep.run_ids[key] = run_id


@pytest.fixture(scope="session")
def syst_sweep(tmp_path_factory) -> SystSweep:
    """Four 1-epoch tiny models on 300 events of 16x16, tagged as the finals (with one replica) of sweep 'syst'."""
    folder = tmp_path_factory.mktemp("syst_sweep")
    nominal = write_synthetic(folder / "nominal.h5", events=EVENTS, size=SIZE, seed=0, progress=False)
    sweep = SystSweep(folder, f"sqlite:///{folder / 'mlflow.db'}", "syst", nominal)
    for key, trial in (("baseline", {"lr": 1e-3}), ("t01", {"lr": 3e-3}), ("t01-seed1", {"lr": 3e-3, "seed": 1}),
                       ("t02", {"lr": 1e-2})):
        sweep.checkpoints[key] = train_tiny(nominal, folder / "ckpt" / key, **trial)
    client = MlflowClient(sweep.uri)
    experiment_id = client.create_experiment(sweep.name, artifact_location=(folder / "artifacts").as_uri())
    parent = _start_parent(client, experiment_id, sweep.name, nominal, folder)
    _child(client, experiment_id, parent, sweep, "baseline", "t00",
           {Tag.BASELINE: "true", Tag.FINAL: "true"})
    _child(client, experiment_id, parent, sweep, "t01", "t01", {Tag.FINAL: "true"})
    _child(client, experiment_id, parent, sweep, "t01-seed1", "t01-s1", {Tag.REPLICA_OF: "t01", Tag.SEED: "1"})
    _child(client, experiment_id, parent, sweep, "t02", "t02", {})
    return sweep
