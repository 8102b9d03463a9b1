"""Typed configs for one trial (Ray Tune's ``tune_config.py`` style): dataclasses that reject unknown keys.

``TrialConfig`` holds the trial keys (docs/spaces.md) with their defaults; ``DataConfig`` says where the
events are and what the datasets are called; ``TrialSpec`` is everything one call of the training loop needs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Mapping

from trainables.errors import BadInput, near_hint

TASKS = ("classification", "regression")
MODES = ("scratch", "finetune", "frozen")
OPTIMIZERS = ("adamw", "sgd")
AMP_MODES = ("bf16", "fp16", "off")
OOM_POLICIES = ("fail", "halve_batch")
# Trial keys a CPU run ignores, with the value that means the same as ignoring them (a user who set that value
# loses nothing on a CPU, so no warning is due).
CPU_IGNORED = {"amp": "off", "channels_last": False}
DEFAULT_LOSS = {"classification": "ce", "regression": "smooth_l1"}
SEED_STRIDE = 100_003  # a prime: seeds derived from different (seed, k) pairs never coincide for k < SEED_STRIDE


def derived_seed(seed: int, k: int) -> int:
    """The seed of step ``k`` of something seeded by ``seed`` (an epoch of a trial, a re-ask of the searcher):
    it depends on (seed, k) only, so a resumed run draws what an uninterrupted one drew."""
    return int(seed) * SEED_STRIDE + int(k)


def _reject_unknown(cls: type, values: Mapping[str, Any], where: str) -> None:
    known = [f.name for f in fields(cls)]
    for key in values:
        if key not in known:
            raise BadInput(f"{where}: unknown key '{key}'; {near_hint(key, known)}")


# A BatchNorm's running variance after a few dozen steps of momentum 0.1 lags the weights it describes, and in eval
# mode a short trial then scores far below what it learnt (validation at chance). Recomputing the statistics over N
# training samples before each evaluation removes that. Measured by benchmarks/bench_precise_bn.py (12 configs x 3
# epochs, 1,500 events 32x32): off, epoch-1 accuracy was 0.33 on average (at chance) and its Spearman rank correlation
# with the best epoch -0.06; with N = 64/128/256/512/1024 the accuracy was 0.54/0.55/0.56/0.55/0.55 and the
# correlation 0.43/0.62/0.55/0.55/0.49 (noise of +-0.3 with 12 configs). Both level off from N ~ 128-256 while the cost
# grows linearly (0.23 s per epoch at 256, 0.49 s at 512, against 3.9 s of training). 256: past the knee, at half
# the cost of 512; on a full-size file the recompute is a fraction of a percent of an epoch.
PRECISE_BN_DEFAULT = 256


@dataclass(frozen=True)
class TrialConfig:
    """One trial's resolved hyper-parameters. Every key may sit in ``fixed``, ``baseline`` or ``space``."""

    model: str = "resnet18"  # the workhorse of the DUNE/LArSoft tutorials
    mode: Literal["scratch", "finetune", "frozen"] = "scratch"  # transfer only when asked
    init: str | None = None  # checkpoint file/dir, or hub:<weights>; best-of:/run: are resolved by the scanner
    backbone_lr_mult: float = 1.0  # fine-tuning: same LR everywhere unless the user damps the backbone
    loss: str | None = None  # None = the task's default (ce / smooth_l1)
    focal_gamma: float = 2.0  # Lin et al.'s default
    label_smoothing: float = 0.1  # the common value for 3-10 classes
    smooth_l1_beta: float = 1.0  # torch's default
    huber_delta: float = 1.0  # torch's default
    optimizer: Literal["adamw", "sgd"] = "adamw"  # robust to a badly chosen LR, which a sweep will try
    lr: float = 1e-3  # AdamW's usual starting point
    weight_decay: float = 1e-4  # mild; the sweep may vary it
    momentum: float = 0.9  # sgd only
    lr_schedule: str = "cosine"  # decays to ~0 by max_epochs, so the last epoch is also the settled one
    warmup_epochs: float = 0.0  # linear warm-up; 0 = none
    ema_decay: float = 0.0  # 0 = off
    batch_size: int = 64  # fits a ResNet18 on 128x128 two-view events in a few GB
    num_workers: int = 2  # one per core on these machines; h5py is opened per worker
    amp: Literal["bf16", "fp16", "off"] = "bf16"  # CUDA only: bf16 (fp16 + GradScaler on a GPU without bf16)
    channels_last: bool = False  # CUDA only: NHWC tensors, faster convolutions with AMP on tensor cores
    precise_bn: int = PRECISE_BN_DEFAULT  # training samples that recompute BatchNorm statistics before each evaluation
    grad_clip: float = 1.0  # max grad-norm; 0 = off. Keeps a bad LR from NaN-ing at once
    seed: int = 0  # model init, data order, augmentation

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "trial config") -> "TrialConfig":
        _reject_unknown(cls, values, where)
        cfg = cls(**dict(values))
        cfg.validate(where)
        return cfg

    def validate(self, where: str = "trial config") -> None:
        if self.mode not in MODES:
            raise BadInput(f"{where}: mode '{self.mode}' is not one of {', '.join(MODES)}")
        if self.optimizer not in OPTIMIZERS:
            raise BadInput(f"{where}: optimizer '{self.optimizer}' is not one of {', '.join(OPTIMIZERS)}")
        if self.mode != "scratch" and not self.init:
            raise BadInput(f"{where}: mode '{self.mode}' needs 'init' (a checkpoint, best-of:<sweep> or hub:<name>)")
        if not 0.0 <= float(self.ema_decay) < 1.0:
            raise BadInput(f"{where}: ema_decay {self.ema_decay} must be in [0, 1)")
        for key in ("lr", "batch_size"):
            if not float(getattr(self, key)) > 0:
                raise BadInput(f"{where}: {key} must be > 0, got {getattr(self, key)}")
        if self.amp not in AMP_MODES:
            raise BadInput(f"{where}: amp '{self.amp}' is not one of {', '.join(AMP_MODES)}")
        if isinstance(self.precise_bn, bool) or not isinstance(self.precise_bn, int) or self.precise_bn < 0:
            raise BadInput(f"{where}: precise_bn must be a whole number of samples >= 0 (0 = off), "
                           f"got {self.precise_bn!r}")

    def loss_name(self, task: str) -> str:
        return self.loss or DEFAULT_LOSS[task]

    def as_params(self) -> dict[str, Any]:
        """The full resolved config, as MLflow params."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "TrialConfig":
        return self.from_dict({**self.as_params(), **changes})


@dataclass(frozen=True)
class DataConfig:
    """Where the events are. Dataset names are configurable: a user's file may call them ``x`` and ``y``."""

    path: str
    images: str = "images"
    labels: str = "labels"
    targets: str = "targets"
    weights: str = "weights"  # used when present
    split: str = "split"  # used when present; otherwise a seeded hash of the index
    select: dict[str, list[Any]] = field(default_factory=dict)  # e.g. {labels: [nueCC, numuCC]}
    cache: bool = False  # load the images into RAM once (small files only)
    val_fraction: float = 0.15  # used only when the file has no split dataset
    test_fraction: float = 0.15

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], base_dir: Path | None = None, where: str = "data") -> "DataConfig":
        _reject_unknown(cls, values, where)
        if "path" not in values:
            raise BadInput(f"{where}: 'path' is missing; give the HDF5 file, e.g. path: data/lartpc.h5")
        values = dict(values)
        path = Path(str(values["path"])).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        values["path"] = str(path.resolve())
        return cls(**values)


@dataclass(frozen=True)
class TrialSpec:
    """Everything one call of the training loop needs."""

    task: Literal["classification", "regression"]
    data: DataConfig
    trial: TrialConfig
    max_epochs: int
    objective: str = "val/accuracy"  # a metric name; best/<metric> follows the epoch where it was best
    objective_mode: Literal["min", "max"] = "max"
    workdir: str = "."  # scratch space for checkpoints before the reporter takes them
    oom: Literal["fail", "halve_batch"] = "fail"  # resources.oom: on out-of-memory, fail or retry at half the batch
    data_hash: str | None = None  # the data file's hash if the caller has it (a sweep: once); else the trial hashes
    gpu_requested: bool | None = None  # the trial holds a GPU (resources.gpu > 0); None: read CUDA_VISIBLE_DEVICES

    def __post_init__(self) -> None:
        if self.oom not in OOM_POLICIES:
            raise BadInput(f"resources.oom '{self.oom}' is not one of {', '.join(OOM_POLICIES)}")
