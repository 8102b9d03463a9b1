"""Checkpoint folders: ``state.pt`` (everything needed to continue exactly), plus the epoch's evaluation artifacts.

``state.pt`` holds model, optimizer, scheduler, EMA, epoch, RNG states, the trial config and a ``meta`` block
(model name, channels, outputs, task, pixel scale, image shape, views, data hash and path) so ``evaluate_checkpoint``,
``init: <checkpoint>`` and an export can rebuild the model without the YAML or the data file. ``eval_model`` holds
the weights and BatchNorm statistics of exactly the model that was evaluated (the EMA model when EMA was on, after
the precise-BN recompute): every later use of the checkpoint takes it, so it reproduces the logged validation figures.

Every ``state.pt`` is read with ``torch.load(weights_only=True)``: tensors, plain values, and the few numpy types of
the RNG state (``SAFE_GLOBALS``). A pickle that would run code is refused before any of it runs.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from trainables.contract import Artifact
from trainables.errors import BadCheckpoint
from trainables.files import atomic_output, atomic_write_text

# what torch.load raises for bytes that are not a whole checkpoint (truncated: RuntimeError from the zip reader,
# ValueError "negative seek value"); OSError only in case torch's reader ever reports one for in-memory bytes
NOT_A_CHECKPOINT = (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, zipfile.BadZipFile, OSError)


def numpy_reconstruct() -> Callable[..., np.ndarray]:
    """numpy's array unpickler, which every pickled ndarray names. It moved to ``numpy._core`` in numpy 2; this is
    the one place that reaches for it (pinned by a test)."""
    try:  # here, not at the top: which module holds it depends on the numpy version
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def safe_globals() -> list[Any]:
    """The globals a loop checkpoint needs besides tensors and plain values: numpy's RNG state is an ndarray."""
    return [numpy_reconstruct(), np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def seed_everything(seed: int) -> None:
    """Every epoch reseeds from (seed, epoch), so a resumed run draws exactly what an uninterrupted one drew."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_state(folder: Path, state: dict[str, Any]) -> Path:
    """Atomic write: a crash mid-save must not leave a truncated ``state.pt`` that resume would trip over.

    Serialised in memory first and written by Python, so a full disk is an ``OSError`` (ENOSPC: "No space left on
    device") rather than torch's "unexpected pos" from its C++ writer."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_output(folder / Artifact.STATE) as tmp:
        tmp.write_bytes(buffer.getbuffer())
    return folder / Artifact.STATE


def find_state(path: Path) -> Path | None:
    """The file a checkpoint argument names (``state.pt`` in a folder, else the path itself), or None when there is
    no such file. A path the system will not even look at (permission denied, an I/O error) is ``BadCheckpoint``."""
    path = Path(path)
    try:
        file = path / Artifact.STATE if path.is_dir() else path
        return file if file.is_file() else None
    except OSError as exc:
        raise BadCheckpoint(_cannot_read(path, exc)) from None


def read_torch_file(path: Path) -> Any:
    """``torch.load`` of a checkpoint or weights file (or a checkpoint folder's ``state.pt``), weights only (plus
    ``safe_globals()``), onto the CPU.

    Raises ``BadCheckpoint`` (one line: the path, why, and the fix) for a missing, unreadable, truncated or corrupt
    file, or one whose pickle names anything else (a ``__reduce__`` payload is refused before it runs). The bytes
    are read by Python first: an ``OSError`` there is the disk or the permissions, and whatever torch then raises is
    the content (torch's own reader reports a truncated file as ``OSError`` too, so the two could not be told apart).
    The price: the file's bytes and the loaded tensors are both in memory for a moment, as when ``save_state`` writes."""
    file = find_state(path)
    if file is None:
        raise BadCheckpoint(f"{path}: checkpoint file not found; give a checkpoint folder (with {Artifact.STATE}) "
                            "or a .pt file")
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise BadCheckpoint(_cannot_read(file, exc)) from None
    try:
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except NOT_A_CHECKPOINT as exc:
        raise BadCheckpoint(f"{file}: not a weights-only torch checkpoint ({_why(exc)}); fix: use an intact "
                            "checkpoint written by this project, or a plain state_dict") from None


def _cannot_read(path: Path, exc: OSError) -> str:
    return (f"{path}: cannot read the checkpoint ({exc.strerror or type(exc).__name__}); fix: make it readable for "
            "this user, check the disk it is on, or give another checkpoint")


def _why(exc: BaseException) -> str:
    """torch's reason in a few words: the refused global of a pickle, or the first sentence (a truncated zip)."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        detail = next((line.strip() for line in text.split(marker, 1)[1].splitlines() if line.strip()), "")
        return f"refused, nothing in it was run: {detail.split('. Please use')[0][:200]}"
    first = (text.strip().splitlines() or [""])[0].split(". ")[0][:200]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def load_state(folder: Path) -> dict[str, Any]:
    """The loop's full state (``state.pt`` in ``folder``, or the file itself), read weights-only."""
    path = find_state(folder) or Path(folder)  # missing: read_torch_file says so
    state = read_torch_file(path)
    if not isinstance(state, dict) or "model" not in state:
        raise BadCheckpoint(f"{path}: not a training checkpoint of this project (no 'model' entry); "
                            "use a checkpoint folder of a trial")
    return state


def evaluated_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights that were evaluated: ``eval_model``; in checkpoints from before it existed, the EMA weights when
    there are any, else the live ones."""
    for key in ("eval_model", "ema_model", "model"):
        if state.get(key) is not None:
            return state[key]
    raise BadCheckpoint("checkpoint holds no model weights")


def newest_loadable(folders: list[Path]) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The first of ``folders`` (newest first) whose state loads, and the ones skipped with the reason why."""
    skipped = []
    for folder in folders:
        try:
            load_state(folder)
        except BadCheckpoint as exc:  # truncated, corrupt or refused: the next one may be intact
            skipped.append((Path(folder), str(exc)))
            continue
        return Path(folder), skipped
    return None, skipped


def read_confusion(folder: Path) -> np.ndarray | None:
    """The counts of a checkpoint folder's ``confusion.json`` (rows = truth), or None where there is none."""
    path = Path(folder) / Artifact.CONFUSION
    if not path.exists():
        return None
    return np.asarray(json.loads(path.read_text())["counts"], dtype=float)


def write_confusion(folder: Path, class_names: list[str], confusion: np.ndarray) -> Path:
    text = json.dumps({"class_names": list(class_names), "counts": np.asarray(confusion).tolist()})
    return atomic_write_text(folder / Artifact.CONFUSION, text)
