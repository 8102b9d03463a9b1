"""The trivial reference predictor of a data file: what a trial must beat to have learnt anything.

    ref = reference_metrics(space.data, space.task)     # {"ref/val/accuracy": 0.41, "ref/test/accuracy": ..., ...}

Fitted on the training split (after ``data.select``, with the event weights when the file has them) and scored on
the validation and test splits by the SAME metric functions as the trials, so every name matches a trial's
``val/<name>``:

- classification: every event gets the training split's class frequencies as its scores. The argmax is the
  majority class, so accuracy, efficiencies and purities are those of "always the majority class", and the scores are
  the best constant probabilities (the prior). The AUCs are 0.5: a constant score ranks nothing.
- direction targets (``unit_vector``, ``theta_phi``): the normalised mean direction of the training events.
- other targets: the mean of each target (the circular mean for an azimuth, which the metrics wrap).

Numpy only: no torch in the computation (the data package's import still brings torch along).
"""

from __future__ import annotations

import numpy as np

from trainables.config import DataConfig
from trainables.contract import REFERENCE_SPLITS
from trainables.data.schema import EventFile, open_events, open_h5
from trainables.metrics import classification_metrics, prefixed, regression_metrics
from trainables.physics import check_weights, is_azimuth, normalised, theta_phi_to_unit

__all__ = ["reference_metrics", "class_frequencies", "mean_direction", "mean_targets"]

FALLBACK_DIRECTION = np.array([0.0, 0.0, 1.0])  # the mean of an isotropic sample is ~0 and has no direction


def _split_truth(data: DataConfig, events: EventFile, task: str, split: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(labels or targets, weights or None) of a split, in file order."""
    index = events.split_indices[split]
    with open_h5(data.path) as f:
        truth = f[data.labels if task == "classification" else data.targets][:][index]
        weights = f[data.weights][:][index].astype(np.float64) if events.has_weights else None
    return truth, weights


def class_frequencies(labels: np.ndarray, weights: np.ndarray | None, n_classes: int) -> np.ndarray:
    """(C,) weighted share of each class: the scores of the reference classifier."""
    w = check_weights(weights, len(labels))
    counts = np.bincount(np.asarray(labels, dtype=np.int64), weights=w, minlength=n_classes)
    return counts / counts.sum() if counts.sum() > 0 else np.full(n_classes, 1.0 / n_classes)


def mean_direction(targets: np.ndarray, weights: np.ndarray | None, direction: str) -> np.ndarray:
    """The normalised weighted mean of the true directions, in the file's own form ((3,) vector or (θ, φ))."""
    targets = np.asarray(targets, dtype=np.float64)
    w = check_weights(weights, len(targets))
    vectors = theta_phi_to_unit(targets) if direction == "theta_phi" else normalised(targets)
    mean = np.nansum(vectors * w[:, None], axis=0)  # a zero true vector (NaN once normalised) carries no direction
    norm = np.linalg.norm(mean)
    unit = mean / norm if norm > 0 else FALLBACK_DIRECTION
    if direction == "theta_phi":
        return np.array([np.arccos(np.clip(unit[2], -1.0, 1.0)), np.arctan2(unit[1], unit[0])])
    return unit


def mean_targets(targets: np.ndarray, weights: np.ndarray | None, names: list[str]) -> np.ndarray:
    """(K,) weighted mean of each target column; an azimuth's is the circular mean."""
    targets = np.asarray(targets, dtype=np.float64)
    w = check_weights(weights, len(targets))
    out = np.average(targets, axis=0, weights=w)
    for k, name in enumerate(names):
        if is_azimuth(name, k, None):
            sin, cos = np.average(np.sin(targets[:, k]), weights=w), np.average(np.cos(targets[:, k]), weights=w)
            out[k] = np.arctan2(sin, cos)
    return out


def _fit(events: EventFile, task: str, truth: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    if task == "classification":
        return class_frequencies(truth, weights, events.n_classes)
    if events.direction is not None:
        return mean_direction(truth, weights, events.direction)
    return mean_targets(truth, weights, events.target_names)


def _score(events: EventFile, task: str, constant: np.ndarray, truth: np.ndarray,
           weights: np.ndarray | None) -> dict[str, float]:
    prediction = np.tile(constant, (len(truth), 1))
    if task == "classification":
        metrics, _ = classification_metrics(prediction, truth, events.class_names, weights=weights)
        return metrics
    return regression_metrics(prediction, truth, events.target_names, direction=events.direction, weights=weights)


def reference_metrics(data: DataConfig, task: str) -> dict[str, float]:
    """``ref/val/<name>`` and ``ref/test/<name>`` of the reference predictor (see the module docstring). A split
    without events has no entries."""
    events = open_events(data, task)
    constant = _fit(events, task, *_split_truth(data, events, task, "train"))
    out: dict[str, float] = {}
    for split in REFERENCE_SPLITS:
        truth, weights = _split_truth(data, events, task, split)
        if len(truth):
            out.update(prefixed(_score(events, task, constant, truth, weights), f"ref/{split}"))
    return out
