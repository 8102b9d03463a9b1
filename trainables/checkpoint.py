"""Checkpoint folders: ``state.pt`` (everything needed to continue exactly), plus the epoch's evaluation artifacts.

``state.pt`` holds model, optimizer, scheduler, EMA, epoch, RNG states, the trial config and a ``meta`` block
(model name, channels, outputs, task) so ``evaluate_checkpoint`` and ``init: <checkpoint>`` can rebuild the model
without the YAML. ``ema_model`` holds the plain averaged weights: the model that was evaluated when EMA was on.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "state.pt"
CONFUSION_FILE = "confusion.json"
PREDICTIONS_FILE = "predictions.h5"


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
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".state-", suffix=".pt")
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, folder / STATE_FILE)
    return folder / STATE_FILE


def load_state(folder: Path) -> dict[str, Any]:
    """Full state for resume. RNG states and numpy arrays need pickled objects, so this is not weights_only."""
    path = Path(folder)
    path = path / STATE_FILE if path.is_dir() else path
    return torch.load(path, map_location="cpu", weights_only=False)


def write_confusion(folder: Path, class_names: list[str], confusion: np.ndarray) -> Path:
    path = folder / CONFUSION_FILE
    path.write_text(json.dumps({"class_names": list(class_names), "counts": np.asarray(confusion).tolist()}))
    return path
