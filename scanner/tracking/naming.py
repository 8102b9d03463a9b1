"""What a trial's run is called and tagged, and which checkpoint files become its artifacts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from trainables.contract import Artifact, Tag

SHOWN_FIRST = ("model", "loss")  # what a trial is, at a glance: printed bare, without key=
MAX_NAME_KEYS = 4  # run names stay readable in the MLflow UI's run list


def short_value(value: Any) -> str:
    """3e-3 rather than 0.003000000001: names must read at a glance."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
        mantissa, exponent = f"{value:.1e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:.3g}"


def trial_run_name(index: int, params: Mapping[str, Any], varied: Iterable[str], baseline: bool) -> str:
    """``t07 resnet34 focal lr=3e-3``; ``t00 baseline resnet18 ce lr=1e-3``."""
    varied = list(varied)
    words = [f"t{index:02d}"] + (["baseline"] if baseline else [])
    words += [str(params[k]) for k in SHOWN_FIRST if params.get(k) is not None]
    rest = [k for k in varied if k not in SHOWN_FIRST and params.get(k) is not None]
    words += [f"{k}={short_value(params[k])}" for k in rest[:MAX_NAME_KEYS]]
    return " ".join(words)


def trial_tags(
    name: str,
    trial_id: str,
    *,
    space_hash: str,
    git_sha: str | None = None,
    data_hash: str | None = None,
    baseline: bool = False,
    varied: Iterable[str] = (),
    class_names: Iterable[str] | None = None,
    target_names: Iterable[str] | None = None,
) -> dict[str, str]:
    """The contract tags of a child run (docs/mlflow.md). ``name`` is the sweep's."""
    tags = {
        Tag.NAME: name,
        Tag.TRIAL_ID: trial_id,
        Tag.SPACE_HASH: space_hash,
        Tag.BASELINE: "true" if baseline else "false",
        Tag.VARIED: json.dumps(list(varied)),
    }
    if git_sha:
        tags[Tag.GIT_SHA] = git_sha
    if data_hash:
        tags[Tag.DATA_HASH] = data_hash
    if class_names is not None:
        tags[Tag.CLASS_NAMES] = json.dumps(list(class_names))
    if target_names is not None:
        tags[Tag.TARGET_NAMES] = json.dumps(list(target_names))
    return tags


def checkpoint_artifact_files(checkpoint_dir: Path) -> list[Path]:
    """The evaluation artifacts of a checkpoint folder (never state.pt: weights stay in Tune's storage)."""
    names = (Artifact.CONFUSION, Artifact.PREDICTIONS)
    return [p for p in (Path(checkpoint_dir) / n for n in names) if p.exists()]


def log_checkpoint_artifacts(client, run_id: str, checkpoint_dir: Path, artifact_path: str = "val") -> list[str]:
    """Log confusion.json + predictions.h5 of a checkpoint folder under ``artifact_path``; returns what was logged."""
    files = checkpoint_artifact_files(checkpoint_dir)
    for f in files:
        client.log_artifact(run_id, str(f), artifact_path)
    return [f.name for f in files]
