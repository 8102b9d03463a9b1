"""A trained checkpoint on a detector variant (systematics): the weights and BatchNorm statistics the finals
evaluated, on another file of the same events, read with the TRAINING file's pixel scale so that a detector
variation (more charge, more noise) is not normalised away. No MLflow here: ``scanner evaluate`` logs the result.

    state = load_state(checkpoint_dir)
    trained = trained_on(state, train_data)                       # what a variant must match
    variant = open_variant("noisy.h5", train_data, trained.task)  # the training data config, another file
    check_compatible(trained, variant, "noisy")                   # BadInput: one line naming what differs
    indices = split_indices(variant, "test")                      # the variant's test split
    metrics = evaluate_variant(state, variant, indices, trained.pixel_scale, out_dir)  # {"accuracy": ..., ...}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainables.config import DataConfig
from trainables.data import EventFile, open_events
from trainables.data.schema import SPLITS, open_h5
from trainables.errors import BadInput
from trainables.loop import evaluate_state

SPLIT_CHOICES = ("all", *SPLITS)
TRAINING_META = ("image_shape", "views", "pixel_scale")  # meta keys that spare reading the training file


def file_views(path: str) -> tuple[str, ...] | None:
    """The ``views`` attribute of an events file (e.g. ('xz', 'yz')), None when it has none."""
    with open_h5(path) as f:
        views = f.attrs.get("views")
    if views is None:
        return None
    items = [views] if isinstance(views, (str, bytes)) else list(views)
    return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in items)


@dataclass(frozen=True)
class TrainedOn:
    """What a model saw in training, as far as a variant must match it."""

    task: str
    image_shape: tuple[int, ...]
    views: tuple[str, ...] | None
    class_names: tuple[str, ...] | None
    target_names: tuple[str, ...] | None
    direction: str | None
    pixel_scale: float


def _as_tuple(values) -> tuple[str, ...] | None:
    return None if values is None else tuple(str(v) for v in values)


def trained_on(state: dict[str, Any], train_data: DataConfig | None) -> TrainedOn:
    """From the checkpoint's ``meta``; what it lacks (checkpoints from before ``image_shape``/``views``/
    ``pixel_scale`` were recorded) is read from the training file, which must then still be there."""
    meta = state["meta"]
    events, views = None, meta.get("views")
    if any(key not in meta for key in TRAINING_META):
        if train_data is None:
            raise BadInput("the checkpoint does not record its training data (image shape, views, pixel scale) and "
                           "the run names no training file; fix: evaluate a run of a sweep, whose space.yaml names it")
        events = open_events(train_data, meta["task"])
        views = meta["views"] if "views" in meta else file_views(train_data.path)
    return TrainedOn(
        task=meta["task"],
        image_shape=tuple(int(s) for s in (meta.get("image_shape") or events.image_shape)),
        views=_as_tuple(views),
        class_names=_as_tuple(meta.get("class_names")),
        target_names=_as_tuple(meta.get("target_names")),
        direction=meta.get("direction"),
        pixel_scale=float(meta["pixel_scale"] if meta.get("pixel_scale") else events.pixel_scale),
    )


@dataclass(frozen=True)
class Variant:
    """A variant events file, opened with the training data's dataset names and selection."""

    cfg: DataConfig
    events: EventFile
    views: tuple[str, ...] | None
    has_split: bool


def open_variant(path: str | Path, train_data: DataConfig | None, task: str) -> Variant:
    """The variant file under the training data config (dataset names, ``select``), validated against the schema."""
    base = train_data if train_data is not None else DataConfig(path=str(path))
    cfg = dataclasses.replace(base, path=str(Path(path).expanduser().resolve()))
    events = open_events(cfg, task)
    with open_h5(cfg.path) as f:
        has_split = cfg.split in f
    return Variant(cfg, events, file_views(cfg.path), has_split)


def differences(trained: TrainedOn, variant: Variant) -> list[str]:
    """What differs between the training data and a variant, each as '<what> <variant> vs <training>'."""
    ev = variant.events
    pairs = [("image shape (C, H, W)", tuple(ev.image_shape), trained.image_shape)]
    if trained.views is not None and variant.views is not None:
        pairs.append(("views", variant.views, trained.views))
    if trained.task == "classification":
        pairs.append(("classes", _as_tuple(ev.class_names), trained.class_names))
    else:
        pairs += [("targets", _as_tuple(ev.target_names), trained.target_names),
                  ("direction", ev.direction, trained.direction)]
    return [f"{what} {_shown(got)} vs {_shown(want)} in training" for what, got, want in pairs if got != want]


def _shown(value) -> str:
    if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        return "[" + ", ".join(value) + "]"
    return str(value)


def check_compatible(trained: TrainedOn, variant: Variant, who: str) -> None:
    """BadInput in one line when the variant is not the training data differently detected."""
    found = differences(trained, variant)
    if found:
        raise BadInput(f"{variant.cfg.path}: not compatible with the training data of {who}: {'; '.join(found)}; "
                       "fix: write the variant like the training file (same --size and --classes, another detector)")


def split_indices(variant: Variant, split: str) -> np.ndarray:
    """Sorted file indices of ``split`` (``all`` = every selected event); BadInput when it is empty."""
    if split not in SPLIT_CHOICES:
        raise BadInput(f"--split {split}: expected one of {', '.join(SPLIT_CHOICES)}")
    parts = variant.events.split_indices
    indices = np.sort(np.concatenate([parts[s] for s in SPLITS])) if split == "all" else parts[split]
    if not len(indices):
        raise BadInput(f"{variant.cfg.path}: the {split} split has no events (after data.select); "
                       "fix: --split all, or a file with events in that split")
    return indices


def default_split(variant: Variant) -> str:
    """The variant's own test split when the file has a split dataset (synth writes one), else every event."""
    return "test" if variant.has_split else "all"


def evaluate_variant(state: dict[str, Any], variant: Variant, indices: np.ndarray, pixel_scale: float,
                     out_dir: Path) -> dict[str, float]:
    """Metrics without prefix (``loss``, ``accuracy``, ``efficiency/NC``, ..., with ``_err``) of the checkpoint's
    evaluated weights on ``indices`` of the variant; ``predictions.h5`` (and ``confusion.json``) into ``out_dir``."""
    # the loader reads the "test" entry; the training file's scale: a detector variation must show, not be divided out
    events = dataclasses.replace(variant.events, pixel_scale=pixel_scale,
                                 split_indices={**variant.events.split_indices, "test": indices})
    return evaluate_state(state, variant.cfg, events, "test", Path(out_dir))