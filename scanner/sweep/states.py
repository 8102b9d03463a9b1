"""What the driver knows of a sweep and of each trial: plain data, shared by the driver, settling and the finals."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlflow.entities import DatasetInput

from search_spaces import SpaceFile
from trainables.contract import Status


@dataclass
class TrialState:
    trial_id: str
    index: int  # t00 is the baseline, then Tune's order
    baseline: bool
    name: str  # the run name, e.g. "t07 resnet34 focal lr=3e-3"
    status: str = Status.RUNNING
    epochs: int = 0
    best_value: float | None = None
    best_epoch: int | None = None
    best_checkpoint: str | None = None
    failure: str | None = None
    error_file: str | None = None  # Tune's file with the whole traceback of a crashed trial
    config: dict[str, Any] = field(default_factory=dict)  # the full resolved trial config (config.yaml)
    params: dict[str, Any] = field(default_factory=dict)  # what it ran: its MLflow params
    varied: list[str] = field(default_factory=list)  # the keys sampled for it (scan.varied)
    max_epochs: int = 0  # the epochs it was asked for: the sweep's max_epochs, or a replica's
    last_checkpoint: str | None = None
    replica_of: str | None = None  # a seed replica: the trial id of its original
    seed: int | None = None
    init_run_id: str | None = None  # where a transfer trial's weights came from (best-of:/run:)
    init_trial_id: str | None = None
    train_losses: list[float] = field(default_factory=list)  # train/loss per epoch, for the flags
    best_metrics: dict[str, float] = field(default_factory=dict)  # the val/ figures of its best epoch

    @property
    def label(self) -> str:
        """The short id (t07) the progress line and the report use."""
        return self.name.split(" ", 1)[0]


@dataclass
class SweepInfo:
    """What the driver needs to know about the sweep (picklable: Tune saves its callbacks in tuner.pkl)."""

    name: str
    instance: str
    experiment_id: str
    space: SpaceFile
    data_hash: str | None
    class_names: list[str] | None
    target_names: list[str] | None
    git_sha: str | None
    init_map: dict[str, str]
    configs_dir: str  # scans/<name>/configs: each trial's config.yaml before it is logged
    log_checkpoints: bool = False  # each new best state.pt also goes to the run (tracking.log_checkpoints)
    reference: dict[str, float] = field(default_factory=dict)  # ref/val/..., ref/test/...: the trivial predictor
    init_sources: dict[str, dict] = field(default_factory=dict)  # init -> {checkpoint, run_id, trial_id}
    dataset: DatasetInput | None = None  # the events file as an MLflow dataset input (path, hash, shape)
