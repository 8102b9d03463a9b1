"""Keys of a trial's Tune results and configs that the worker, the searcher and the driver share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainables.files import atomic_write_text

BASELINE_KEY = "_scan_baseline"  # the only key of the baseline's Tune config; the trainable builds the rest
REPLICA_KEY = "_scan_replica"  # a seed replica's Tune config: {"config": full trial config, "epochs", "of", "seed"}
EPOCH_MARK = "scan_epoch.json"  # written into each checkpoint, so the driver knows its epoch and whether it is best
FAILURE_KEY = "scan_failure"  # in the last result of a trial whose loss went NaN (a failure, not a crash)
SCORE_KEY = "scan_checkpoint_score"  # Tune keeps the checkpoint the loop called best, not a later tie
IS_BEST_KEY = "scan_is_best"
EPOCH_KEY = "epoch"


def is_baseline(config: dict[str, Any]) -> bool:
    return bool(config.get(BASELINE_KEY))


def replica_spec(config: dict[str, Any]) -> dict[str, Any] | None:
    """The replica part of a Tune config, or None for the search's own trials."""
    return config.get(REPLICA_KEY)


def result_epoch(result: dict[str, Any]) -> int:
    return int(result.get(EPOCH_KEY, result.get("training_iteration", 0)) or 0)


def write_mark(folder: Path, epoch: int, is_best: bool) -> None:
    atomic_write_text(Path(folder) / EPOCH_MARK, json.dumps({"epoch": int(epoch), "is_best": bool(is_best)}))


def read_mark(folder: Path) -> dict | None:
    """The epoch mark of a checkpoint folder, or None when it has none (or it is not a mark: it does not parse, or
    holds no whole epoch)."""
    try:
        mark = json.loads((Path(folder) / EPOCH_MARK).read_text())
    except (OSError, ValueError):
        return None
    return mark if isinstance(mark, dict) and isinstance(mark.get("epoch"), int) else None


def becomes_best(mark: dict | None, replica: bool) -> bool:
    """Whether a checkpoint with this mark becomes the trial's best: a searched trial's best epoch; any checkpoint of
    a seed replica (judged at its last epoch, the original's best; Tune keeps only its latest). A checkpoint without
    a mark cannot be judged."""
    return mark is not None and (replica or bool(mark.get("is_best")))


def checkpoint_epoch(checkpoint) -> int:
    """The epoch of a Tune checkpoint (0 for none): a trial restored at its last epoch reports nothing new."""
    mark = read_mark(Path(checkpoint.path)) if checkpoint is not None else None
    return int(mark["epoch"]) if mark else 0
