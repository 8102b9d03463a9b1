"""Checkpoint folders: ``state.pt`` (everything needed to continue exactly), plus the epoch's evaluation artifacts.

``state.pt`` holds model, optimizer, scheduler, EMA, epoch, RNG states, the trial config and a ``meta`` block
(model name, channels, outputs, task) so ``evaluate_checkpoint`` and ``init: <checkpoint>`` can rebuild the model
without the YAML. ``ema_model`` holds the plain averaged weights: the model that was evaluated when EMA was on.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.contract import Artifact
from trainables.files import atomic_output, atomic_write_text


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
    """Atomic write: a crash mid-save must not leave a truncated ``state.pt`` that resume would trip over."""
    with atomic_output(folder / Artifact.STATE) as tmp:
        torch.save(state, tmp)
    return folder / Artifact.STATE


def load_state(folder: Path) -> dict[str, Any]:
    """Full state for resume. RNG states and numpy arrays need pickled objects, so this is not weights_only."""
    path = Path(folder)
    path = path / Artifact.STATE if path.is_dir() else path
    return torch.load(path, map_location="cpu", weights_only=False)


def newest_loadable(folders: list[Path]) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The first of ``folders`` (newest first) whose state loads, and the ones skipped with the reason why."""
    skipped = []
    for folder in folders:
        try:
            load_state(folder)
        except Exception as exc:  # noqa: BLE001  truncated, corrupt or refused: the next one may be intact
            skipped.append((Path(folder), f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"))
            continue
        return Path(folder), skipped
    return None, skipped


def write_confusion(folder: Path, class_names: list[str], confusion: np.ndarray) -> Path:
    text = json.dumps({"class_names": list(class_names), "counts": np.asarray(confusion).tolist()})
    return atomic_write_text(folder / Artifact.CONFUSION, text)
