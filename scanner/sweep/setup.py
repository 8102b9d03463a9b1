"""Before a sweep runs: validate everything that can be bad input (nothing is created until then), create
``scans/<name>/`` in one atomic step, write ``scan.json``, and read it back for ``scanner resume``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil
import yaml

from scanner.targets import Resolved, check_inits, resolve_inits
from scanner.tracking import check_reachable, git_sha
from search_spaces import SpaceFile, check_resources, format_plan, init_uses, load_space
from trainables.contract import OPTUNA_DB, SCANS_DIR, Artifact
from trainables.data import EventFile, open_events
from trainables.errors import BadInput
from trainables.files import atomic_write_text

EXPERIMENT_DIR = "tune"  # scans/<name>/ray/tune: Tune's experiment folder
JOURNAL = "mlflow_journal.db"  # the MLflow writer's spool
STORE_LOCK = ".stores.lock"  # in scans/: first-time creation of the MLflow and Optuna stores, one sweep at a time
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # as search_spaces checks `name:`
PHASE_SEARCH, PHASE_REPLICAS, PHASE_FINALS, PHASE_DONE = "search", "replicas", "finals", "done"
PHASE_TEXT = {PHASE_SEARCH: "during the search", PHASE_REPLICAS: "while training the finalists' seed replicas",
              PHASE_FINALS: "during the finals and the report", PHASE_DONE: "after it finished"}


@dataclasses.dataclass
class Sweep:
    """One sweep's resolved inputs, as written to (and read back from) ``scans/<name>/scan.json``."""

    space: SpaceFile
    folder: Path
    tracking_uri: str
    address: str | None
    init_map: dict[str, str]
    instance: str  # one id per `scanner run`, kept by `scanner resume`: the runs of this sweep and no other
    phase: str = PHASE_SEARCH  # how far it got: `scanner resume` says so, and goes on from there
    # best-of:/run: -> {"checkpoint", "run_id", "trial_id"}: the trial each init was taken from (scan.init_run_id ...)
    init_sources: dict[str, dict[str, str | None]] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.space.name

    @property
    def scan_json(self) -> Path:
        return self.folder / Artifact.SCAN_JSON

    @property
    def experiment_path(self) -> Path:
        return self.folder / "ray" / EXPERIMENT_DIR

    @property
    def journal(self) -> Path:
        return self.folder / JOURNAL

    @property
    def scratch(self) -> Path:
        return self.folder / "scratch"  # the loop's checkpoints before Tune copies them; kept inside the sweep

    @property
    def configs_dir(self) -> Path:
        return self.folder / "configs"

    @property
    def report_dir(self) -> Path:
        return self.folder / "report"


def scans_root() -> Path:
    return Path(SCANS_DIR).resolve()


def optuna_url() -> str:
    return f"sqlite:///{scans_root() / OPTUNA_DB}"


def new_instance() -> str:
    """``20261202-112233-3f9a1c``: sorts by start time, unique across machines."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def local_cluster() -> tuple[float, float]:
    """CPUs and GPUs of this machine, without starting Ray (for --dry-run and the resource check)."""
    gpus = 0
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) != "":
        import torch  # heavy: only to count GPUs, after the cheap checks

        gpus = torch.cuda.device_count()
    return float(psutil.cpu_count() or 1), float(gpus)


def with_trials(space: SpaceFile, trials: int | None) -> SpaceFile:
    if trials is None:
        return space
    if trials < 1:
        raise BadInput(f"--trials {trials}: give at least 1 searched trial (use 'scanner train' for the baseline "
                       "alone)")
    return dataclasses.replace(space, budget=dataclasses.replace(space.budget, trials=int(trials)))


def init_strings(space: SpaceFile) -> set[str]:
    """Every ``init`` value the sweep may use: fixed, baseline and the choices of a searched ``init``."""
    values = {space.fixed.get("init"), (space.baseline or {}).get("init"), space.overrides.get("init")}
    param = space.space.get("init")
    if param is not None:
        values |= set(param.choices) if param.kind == "choice" else {param.value}
    return {v for v in values if isinstance(v, str)}


def checked_inits(space: SpaceFile, tracking_uri: str, events: EventFile | None = None) -> dict[str, Resolved]:
    """Every ``best-of:``/``run:`` of the sweep resolved to its trial, and every init loaded into the model it meets
    (BadInput otherwise), before anything starts."""
    resolved = resolve_inits(init_strings(space), tracking_uri)
    if init_uses(space):
        check_inits(space, events or open_events(space.data, space.task), resolved)
    return resolved


def prepare(space_path: str, tracking_uri: str, address: str | None, trials: int | None) -> Sweep:
    """Everything that can fail on bad input, before anything is created."""
    space = with_trials(load_space(space_path), trials)
    folder = scans_root() / space.name
    if folder.exists():
        raise taken(space.name, space_path)
    events = open_events(space.data, space.task)
    check_reachable(tracking_uri)
    if not address:
        check_resources(space, *local_cluster())
    resolved = checked_inits(space, tracking_uri, events)
    return Sweep(space, folder, tracking_uri, address, {v: r.checkpoint for v, r in resolved.items()},
                 new_instance(), init_sources={v: r.as_dict() for v, r in resolved.items()})


def taken(name: str, space_path: str) -> BadInput:
    return BadInput(f"{scans_root() / name} exists: sweep '{name}' was started before; finish it with "
                    f"'scanner resume {name}' or change 'name:' in {space_path}")


def create_folder(sweep: Sweep, space_path: str) -> None:
    """The check and the creation in one step: of two runs of one name started at once, one gets the folder and
    the other the one-line refusal."""
    sweep.folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        sweep.folder.mkdir()
    except FileExistsError:
        raise taken(sweep.name, space_path) from None
    write_scan_files(sweep)


def resolved_raw(space: SpaceFile) -> dict[str, Any]:
    """The YAML as it runs: absolute data path, the --trials override; resume reloads exactly this."""
    raw = json.loads(json.dumps(space.raw, default=str))
    raw.setdefault("data", {})["path"] = space.data.path
    raw.setdefault("budget", {})["trials"] = space.budget.trials
    return raw


def write_scan_files(sweep: Sweep) -> None:
    raw = resolved_raw(sweep.space)
    info = {
        "name": sweep.name,
        "instance": sweep.instance,
        "space": raw,
        "space_file": str(sweep.space.source_path),
        "space_hash": sweep.space.space_hash,
        "tracking_uri": sweep.tracking_uri,
        "data_path": sweep.space.data.path,
        "ray_address": sweep.address or "local",
        "init_map": sweep.init_map,
        "init_sources": sweep.init_sources,
        "git_sha": git_sha(),
        "optuna_storage": optuna_url(),
        "study_name": sweep.name,
        "phase": sweep.phase,
    }
    atomic_write_text(sweep.folder / Artifact.SPACE, yaml.safe_dump(raw, sort_keys=False))
    atomic_write_text(sweep.scan_json, json.dumps(info, indent=2))


def load_sweep_folder(name: str) -> Sweep:
    """The sweep ``scanner resume NAME`` finishes, from its ``scan.json``; the name is checked like ``name:``."""
    if not NAME_PATTERN.fullmatch(name):
        raise BadInput(f"'{name}' is not a sweep name (letters, digits, '.', '_' and '-'); give the name of a folder "
                       f"under {scans_root()}")
    folder = scans_root() / name
    scan_json = folder / Artifact.SCAN_JSON
    if not scan_json.exists():
        known = sorted(p.parent.name for p in scans_root().glob(f"*/{Artifact.SCAN_JSON}")) if scans_root().exists() \
            else []
        raise BadInput(f"{scan_json} does not exist: no sweep '{name}' here to resume; known: "
                       f"{', '.join(known) or 'none'}")
    info = json.loads(scan_json.read_text())
    space = load_space(folder / Artifact.SPACE)
    address = None if info.get("ray_address") in (None, "local") else info["ray_address"]
    instance = info.get("instance") or name  # a sweep from before instances: its runs carry none
    return Sweep(space, folder, info["tracking_uri"], address, dict(info.get("init_map") or {}), instance,
                 info.get("phase", PHASE_SEARCH), dict(info.get("init_sources") or {}))


def mark_phase(sweep: Sweep, phase: str) -> None:
    """Record how far the sweep got, in scan.json (rewritten atomically)."""
    sweep.phase = phase
    info = json.loads(sweep.scan_json.read_text())
    info["phase"] = phase
    atomic_write_text(sweep.scan_json, json.dumps(info, indent=2))


@contextlib.contextmanager
def store_lock() -> Iterator[None]:
    """Two sweeps started at once in a fresh folder both create mlflow.db's and optuna.db's schemas: one at a time."""
    root = scans_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / STORE_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def dry_run(space_path: str, trials: int | None, tracking_uri: str,
            cluster: Callable[[], tuple[float, float]] = local_cluster) -> str:
    """The plan on ``cluster``'s (CPUs, GPUs), with what each ``best-of:``/``run:`` resolves to; the same checks as
    a start, nothing created."""
    space = with_trials(load_space(space_path), trials)
    resolved = checked_inits(space, tracking_uri)
    return "\n".join([format_plan(space, *cluster()), *init_lines(resolved)])


def init_lines(resolved: dict[str, Resolved]) -> list[str]:
    if not resolved:
        return []
    return ["Init (resolved now; every trial that uses it loads this checkpoint):",
            *(f"  {value} -> {source.describe()}" for value, source in resolved.items())]
