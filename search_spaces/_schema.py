"""The typed form of a search-space YAML (docs/spaces.md: a contract).

Plain frozen dataclasses; ``_loader.py`` fills them in after validating the YAML, so everything downstream may
trust them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trainables.config import DataConfig

TOP_KEYS = ("name", "task", "data", "objective", "budget", "resources", "tracking", "fixed", "baseline", "space")
LOG_CHECKPOINTS = ("best", "none")
OBJECTIVE_KEYS = ("metric", "mode", "also")
PARAM_KEYS = ("choice", "float", "int", "value", "log", "step", "when")
SCHEDULERS = ("asha", "hyperband", "fifo")


@dataclass(frozen=True)
class Objective:
    """A metric the sweep optimises; ``also`` holds the extra objectives of a multi-objective sweep."""

    metric: str
    mode: Literal["min", "max"] = "max"  # most physics metrics (accuracy, efficiency, FOM) are better higher
    also: tuple["Objective", ...] = ()


@dataclass(frozen=True)
class Budget:
    trials: int = 16  # searched trials (the baseline comes on top): enough for TPE to leave its random start-up
    max_epochs: int = 8  # a few epochs rank configs well enough on LArTPC images; the winners can train longer
    scheduler: str = "asha"  # stops the clear losers after grace_epochs, so bad LRs cost one epoch, not eight
    grace_epochs: int = 1  # ASHA's first rung: one epoch already separates diverging configs from the rest
    sampler: str = "tpe"  # Optuna's default; handles conditional params. With `also` the loader implies nsga2
    seed: int = 0  # the same YAML samples the same configs
    final_top: int = 3  # three test evaluations (+ baseline) tell luck from a real gain without touching test much
    final_seeds: int = 1  # runs per finalist (and baseline), the original included: 1 = no seed replicas
    max_failures: int = 1  # one retry per trial: survives a lost node or a killed worker, not a real bug


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0  # one core per trial: torch uses one intra-op thread, data loading shares it
    gpu: float = 0.0  # CPU runs everywhere; GPUs are asked for on purpose (0.5 = two trials share one GPU)
    concurrent: int = 2  # the 2-core machines this runs on; the cluster may cap it further
    oom: Literal["fail", "halve_batch"] = "fail"  # out of memory: a failed trial, not a silently different config


@dataclass(frozen=True)
class Tracking:
    # best: each trial's best state.pt is also an artifact of its run, so another machine can fetch it (best-of:,
    # export); none: the path in scan.checkpoint only. None = best on a tracking server, none on a local store.
    log_checkpoints: str | None = None

    def logs_checkpoints(self, tracking_uri: str) -> bool:
        if self.log_checkpoints is not None:
            return self.log_checkpoints == "best"
        return tracking_uri.startswith(("http://", "https://"))


@dataclass(frozen=True)
class Param:
    """One entry of ``space``. ``kind`` "value" is a constant (``choices`` holds it), e.g. set under a ``when``."""

    name: str
    kind: Literal["choice", "float", "int", "value"]
    choices: tuple[Any, ...] = ()
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    when: dict[str, list[Any]] = field(default_factory=dict)  # parent param -> values that switch this one on

    @property
    def value(self) -> Any:
        return self.choices[0] if self.kind == "value" else None

    def is_active(self, chosen: dict[str, Any]) -> bool:
        """Active when every parent was chosen (so it is active too) and took one of the allowed values."""
        return all(parent in chosen and chosen[parent] in allowed for parent, allowed in self.when.items())

    def can_take(self, value: Any) -> bool:
        if self.kind in ("choice", "value"):
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not self.low <= value <= self.high:
            return False
        if self.kind == "int":
            return float(value).is_integer() and (int(value) - self.low) % (self.step or 1) == 0
        return True

    def describe(self) -> str:
        if self.kind == "value":
            text = f"= {self.value!r}"
        elif self.kind == "choice":
            text = "choice of " + ", ".join(str(c) for c in self.choices)
        else:
            scale = "log-uniform" if self.log else "uniform"
            step = f" step {self.step}" if self.step is not None else ""
            text = f"{scale} {self.kind} in [{self.low}, {self.high}]{step}"
        if self.when:
            cond = " and ".join(
                f"{p} = {v[0]}" if len(v) == 1 else f"{p} in {{{', '.join(map(str, v))}}}" for p, v in self.when.items()
            )
            text += f"   (only when {cond})"
        return text


@dataclass(frozen=True)
class SpaceFile:
    """A validated search-space file. ``space`` is in dependency order: a parent always before its children."""

    name: str
    task: Literal["classification", "regression"]
    data: DataConfig
    objective: Objective
    budget: Budget
    resources: Resources
    fixed: dict[str, Any]
    baseline: dict[str, Any] | None
    space: dict[str, Param]
    source_path: Path
    raw: dict[str, Any]
    space_hash: str
    overrides: dict[str, Any] = field(default_factory=dict)  # `--set` values: already in `fixed`, and win last
    tracking: Tracking = field(default_factory=Tracking)

    @property
    def multi_objective(self) -> bool:
        return bool(self.objective.also)

    @property
    def objectives(self) -> list[Objective]:
        """Primary first, then ``also``; each without its own ``also``."""
        return [Objective(self.objective.metric, self.objective.mode), *self.objective.also]

    @property
    def varied_keys(self) -> list[str]:
        """The searched keys, in suggestion order (constants under ``value`` are not varied)."""
        return [n for n, p in self.space.items() if p.kind != "value"]
