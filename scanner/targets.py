"""Which trial a command means: ``run:<id>`` (or a bare run id), ``best-of:<sweep>``, or a checkpoint folder,
resolved in the driver through MLflow; and every ``init:`` checked before anything starts.

    resolve_init("best-of:lartpc-3class", uri)    # -> the best trial's checkpoint path (for ``init:``)
    resolve_run("best-of:lartpc-3class", uri)     # -> Resolved(checkpoint, run_id, trial_id)
    check_inits(space, events, resolve_inits(space_inits, uri))   # one BadInput line, or every init loads

``best-of:`` ranks the latest instance of the sweep exactly as its report does (``reports.rank``), and never picks
a seed replica. Trials receive the resolved path, so they never query MLflow.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from reports import client_for, load_sweep, rank
from search_spaces import SpaceFile, init_uses
from trainables.contract import SCANS_DIR, Artifact, Tag
from trainables.data import EventFile
from trainables.errors import BadInput
from trainables.models import create_model, load_init

PREFIXES = ("best-of:", "run:")
FETCHED_DIR = "_fetched"  # scans/_fetched/<run id>/: checkpoints downloaded from a tracking server


@dataclass(frozen=True)
class Resolved:
    checkpoint: str
    run_id: str | None = None  # None for a checkpoint folder given directly
    trial_id: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)

    def describe(self) -> str:
        return f"run {self.run_id} (trial {self.trial_id}), checkpoint {self.checkpoint}"


def needs_resolving(init: str | None) -> bool:
    return bool(init) and str(init).startswith(PREFIXES)


def resolve_init(init: str | None, tracking_uri: str) -> str | None:
    """A checkpoint path for ``best-of:``/``run:``; anything else (a file, ``hub:``, None) is returned as is."""
    if not needs_resolving(init):
        return init
    return resolve_run(init, tracking_uri).checkpoint


def resolve_inits(values: Iterable[str | None], tracking_uri: str) -> dict[str, Resolved]:
    """Each ``best-of:``/``run:`` among ``values`` -> its trial (files and ``hub:`` need no resolving)."""
    return {v: resolve_run(v, tracking_uri) for v in sorted({v for v in values if needs_resolving(v)})}


def resolve_run(target: str, tracking_uri: str) -> Resolved:
    """``run:<id>`` or ``best-of:<sweep>`` -> the trial's checkpoint, run and trial id."""
    client = client_for(tracking_uri, sought=f"'{target}'")  # a missing store is one line, and none is created
    if target.startswith("best-of:"):
        return _resolved(best_run(target[len("best-of:"):], tracking_uri, target), target, tracking_uri)
    run_id = target[len("run:"):] if target.startswith("run:") else target
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise BadInput(f"'{target}': no MLflow run {run_id} in {tracking_uri}; copy the id from 'scanner ui'") from None
    return _resolved(run, target, tracking_uri)


def best_run(sweep: str, tracking_uri: str, shown: str) -> Run:
    """The leader of the sweep's latest instance, ranked and tie-broken as its report ranks."""
    ranking = rank(load_sweep(sweep, tracking_uri))
    for row in ranking.ranked:
        if row.trial.tags.get(Tag.CHECKPOINT) and not row.trial.tags.get(Tag.REPLICA_OF):
            return client_for(tracking_uri).get_run(row.trial.run_id)
    raise BadInput(f"'{shown}': sweep '{sweep}' has no finished trial with a checkpoint yet; wait for its first "
                   "epoch, or pick a run with run:<id>")


def _resolved(run: Run, shown: str, tracking_uri: str) -> Resolved:
    return Resolved(checkpoint_of(run, tracking_uri, shown), run.info.run_id, run.data.tags.get(Tag.TRIAL_ID))


def checkpoint_of(run: Run, tracking_uri: str, shown: str) -> str:
    """The run's checkpoint folder: where its tag points when that folder is here, else the copy the run carries
    as an artifact, fetched (``shown``, what the user asked for, starts every error line)."""
    path = run.data.tags.get(Tag.CHECKPOINT)
    if not path:
        raise BadInput(f"'{shown}': run {run.info.run_id} has no {Tag.CHECKPOINT} tag (it never finished an epoch); "
                       "pick another run")
    return path if Path(path).exists() else fetch_checkpoint(run, tracking_uri, shown)


def fetch_checkpoint(run: Run, tracking_uri: str, shown: str) -> str:
    """The checkpoint the run carries as an artifact (``tracking.log_checkpoints: best``), downloaded once into
    ``scans/_fetched/<run id>/``: the sweep ran on another machine, or its folder is gone.

    The download goes to a folder of its own beside it and is renamed into place whole, so a download killed
    half-way or a second command fetching at once never leaves a partial folder under that name."""
    client = client_for(tracking_uri)
    logged = {f.path: f for f in client.list_artifacts(run.info.run_id, Artifact.CHECKPOINT_DIR)}
    state = logged.get(f"{Artifact.CHECKPOINT_DIR}/{Artifact.STATE}")
    if state is None:
        raise BadInput(f"'{shown}': checkpoint {run.data.tags[Tag.CHECKPOINT]} of run {run.info.run_id} is not on this "
                       "machine and the run carries none (tracking.log_checkpoints: best logs them); copy the folder "
                       "here or pick another run")
    folder = Path(SCANS_DIR).resolve() / FETCHED_DIR / run.info.run_id
    if not _is_whole(folder, state.file_size):
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{run.info.run_id}.", dir=folder.parent))
        try:
            client.download_artifacts(run.info.run_id, Artifact.CHECKPOINT_DIR, str(staging))
            _move_into_place(staging, folder, state.file_size)
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone once renamed; ours when another command won
    return str(folder / Artifact.CHECKPOINT_DIR)


def _is_whole(folder: Path, state_size: int | None) -> bool:
    """Whether a fetched folder holds the whole logged state (its size, when the store gives one)."""
    state = folder / Artifact.CHECKPOINT_DIR / Artifact.STATE
    return state.is_file() and (state_size is None or state.stat().st_size == state_size)


def _move_into_place(staging: Path, folder: Path, state_size: int | None) -> None:
    """Rename the downloaded folder to ``folder``; if another command renamed its own there first, theirs stays."""
    if folder.exists() and not _is_whole(folder, state_size):
        # a partial folder left by a download killed before fetching went through a rename: never used, replaced
        shutil.rmtree(folder, ignore_errors=True)
    try:
        os.replace(staging, folder)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise


def check_inits(space: SpaceFile, events: EventFile, resolved: dict[str, Resolved], searched: bool = True) -> None:
    """Load every ``init:`` into the model it meets, as a trial will (``hub:`` weights offline or unknown, a
    checkpoint of another architecture or channel count): one BadInput line now, not a failure in every trial.
    ``searched`` False: the baseline config only (``scanner train``)."""
    outputs = len(events.class_names or events.target_names or ())  # the head is new when its size differs
    for model, _, init in init_uses(space, searched):
        source = resolved.get(init)
        path = source.checkpoint if source is not None else init
        try:
            load_init(create_model(model, events.image_shape[0], outputs), path)
        except BadInput as exc:
            reason = str(exc).removeprefix(f"init '{path}': ").removeprefix(f"{init}: ")
            where = f" ({source.describe()})" if source is not None else ""
            raise BadInput(f"{space.source_path}: init '{init}'{where}: {reason}") from None
