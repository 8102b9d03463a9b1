"""Tune's own state, kept whole: the last complete copy of it, and putting that copy back when a resume finds
Tune's files damaged.

Tune copies its state (``experiment_state-*.json``, ``search_gen_state-*.json``, ``searcher-state-*.pkl``,
``tuner.pkl``) into the sweep folder file by file, in place. A disk that fills during that copy leaves a truncated
file, and ``Tuner.restore`` then forgets every trial and starts the search over: the resume would train a second
baseline and nothing else. So a callback keeps the last set that reads whole as one zip beside the experiment
(``scans/<name>/ray/tune-state.zip``, replaced atomically), and the resume puts it back when Tune's files do not read.
"""

from __future__ import annotations

import json
import pickletools
import time
import zipfile
from pathlib import Path
from typing import Callable

from ray.tune import Callback

from trainables.errors import BadInput
from trainables.files import DISK_FULL, atomic_output

STATE_SUFFIXES = (".json", ".pkl")  # what Tune restores from: its own sync down takes the same files
PICKLE_PROTO = b"\x80"
CHECK_EVERY_S = 1.0  # Tune copies its few small state files in milliseconds; a set unchanged this long is complete
SETTLE_S = 0.2  # the same at the end of the experiment, where nobody should wait a second


def state_files(experiment: Path) -> dict[str, Path]:
    if not experiment.is_dir():  # not started yet (the replicas' experiment before the finals)
        return {}
    return {p.name: p for p in sorted(experiment.iterdir()) if p.suffix in STATE_SUFFIXES and p.is_file()}


def reads_whole(path: Path) -> bool:
    """The file parses to its end. Tune's ``.json`` files are not all JSON (``search_gen_state`` is a pickle), so the
    content decides: a pickle (protocol 2 and later open with PROTO) has its opcodes walked to STOP, never
    unpickled; anything else must decode as JSON."""
    try:
        data = path.read_bytes()
        if data.startswith(PICKLE_PROTO):
            for _ in pickletools.genops(data):
                pass
        else:
            json.loads(data)
    except (OSError, ValueError):  # json's decode error is a ValueError; so is a truncated pickle
        return False
    return bool(data)


def kept_copy(experiment: Path) -> Path:
    return experiment.with_name(f"{experiment.name}-state.zip")


class _Changed(Exception):
    """Tune rewrote a state file while it was being zipped: the zip could hold half of two snapshots."""


def keep(experiment: Path) -> bool:
    """Zip Tune's state files into the kept copy when every one reads whole and none changed meanwhile. A full disk
    keeps the older copy."""
    files = state_files(experiment)
    before = stamps(files)
    if not files or not all(reads_whole(p) for p in files.values()):
        return False
    try:
        with atomic_output(kept_copy(experiment)) as tmp:
            with zipfile.ZipFile(tmp, "w") as bundle:
                for name, path in files.items():
                    bundle.write(path, name)
            if stamps(files) != before:
                raise _Changed
    except (_Changed, FileNotFoundError):  # Tune rewrote or removed a file meanwhile: the next look takes it
        return False
    except OSError as exc:
        if exc.errno in DISK_FULL:
            return False
        raise
    return True


class StateKeeper(Callback):
    """Keeps the kept copy current while Tune runs: a set of files unchanged since the previous look (at least
    ``CHECK_EVERY_S`` ago) is not being copied right now, so it is one snapshot, not half of two."""

    def __init__(self, experiment: Path, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.experiment, self.clock, self.sleep = Path(experiment), clock, sleep
        self.next_look = 0.0
        self.seen: dict[str, tuple[int, int]] = {}
        self.kept: dict[str, tuple[int, int]] = {}

    def on_step_end(self, iteration, trials, **info):
        now = self.clock()
        if now < self.next_look or not self.experiment.is_dir():
            return
        self.next_look = now + CHECK_EVERY_S
        now_seen = stamps(state_files(self.experiment))
        if now_seen and now_seen == self.seen and now_seen != self.kept and keep(self.experiment):
            self.kept = now_seen
        self.seen = now_seen

    def on_experiment_end(self, trials, **info):
        """Tune has just written its final state (and waited for the copy) unless the fit failed: keep it once it
        stays unchanged for a moment, so that a copy still under way is never taken."""
        if not self.experiment.is_dir():
            return
        before = stamps(state_files(self.experiment))
        self.sleep(SETTLE_S)
        if before and stamps(state_files(self.experiment)) == before and keep(self.experiment):
            self.kept = before


def stamps(files: dict[str, Path]) -> dict[str, tuple[int, int]]:
    """Size and modification time of each file: each rewrite of the file changes them."""
    found = {}
    for name, path in files.items():
        try:
            info = path.stat()
        except FileNotFoundError:  # Tune replaced it between the listing and now: the next look sees the new one
            info = None
        found[name] = (info.st_size, info.st_mtime_ns) if info else (-1, -1)
    return found


def put_back_if_damaged(experiment: Path) -> list[str]:
    """When one of Tune's state files does not read whole, the kept copy replaces Tune's state (files it does not
    hold are renamed ``*.damaged`` so that Tune cannot prefer a newer, broken one). Returns the damaged names."""
    files = state_files(experiment)
    damaged = [name for name, path in files.items() if not reads_whole(path)]
    if not damaged:
        return []
    copy = kept_copy(experiment)
    if not copy.is_file():
        raise BadInput(f"{experiment / damaged[0]}: Tune's saved state is damaged (a full disk while it was written?) "
                       f"and no whole copy was kept; fix: delete {experiment.parents[1]} and run the sweep again")
    with zipfile.ZipFile(copy) as bundle:
        held = set(bundle.namelist())
        for name, path in files.items():
            if name not in held:
                path.rename(path.with_name(f"{name}.damaged"))
        for name in held:
            with atomic_output(experiment / name) as tmp:
                tmp.write_bytes(bundle.read(name))
    return damaged
