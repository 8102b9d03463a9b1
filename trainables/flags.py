"""Flags on a trial whose figures mislead (``scan.flags``): numpy only, from what the trial and the reference logged.

    flags = trial_flags("classification", val, train_losses, confusion, ref,
                        objective="val/accuracy", mode="max")           # -> ["chance", "single_class"]

- ``chance``: the validation figure is not better than the reference predictor's within their combined 1-sigma
  error (accuracy; the 68 % resolution for directions; for other targets every RMS, which has no error), while the
  training loss fell by at least ``LOSS_FELL`` from the first epoch to the last: it trained, yet validation learnt
  nothing (the eval-mode BatchNorm artefact of short trials looks exactly like this).
- ``single_class``: every validation event was predicted as one class (from the confusion matrix).
- ``below_reference``: the objective is not better than the reference's value of the same metric (no error margin;
  an objective the reference has no value for, e.g. ``val/loss``, is never flagged).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from trainables.contract import Flag

__all__ = ["LOSS_FELL", "trial_flags"]

LOSS_FELL = 0.05  # relative drop of the epoch-mean training loss that counts as "it trained" (not noise)


def trial_flags(
    task: str,
    val_metrics: Mapping[str, float],
    train_losses: Sequence[float],
    confusion: np.ndarray | None,
    reference: Mapping[str, float],
    *,
    objective: str,
    mode: str,
) -> list[str]:
    """The flags of one trial, in ``Flag`` order. ``val_metrics``: the ``val/...`` metrics of the epoch judged (the
    best epoch); ``train_losses``: ``train/loss`` per epoch, in order; ``confusion``: that epoch's (C, C) matrix
    (rows truth, columns prediction; None for regression); ``reference``: ``reference_metrics`` (``ref/val/...``)."""
    flags = []
    if _loss_fell(train_losses) and _at_chance(task, val_metrics, reference):
        flags.append(Flag.CHANCE)
    if confusion is not None and _single_class(np.asarray(confusion)):
        flags.append(Flag.SINGLE_CLASS)
    if _below_reference(val_metrics, reference, objective, mode):
        flags.append(Flag.BELOW_REFERENCE)
    return flags


def _loss_fell(losses: Sequence[float]) -> bool:
    finite = [float(x) for x in losses if math.isfinite(float(x))]
    return len(finite) >= 2 and finite[-1] <= finite[0] * (1.0 - LOSS_FELL)


def _pair(val: Mapping[str, float], ref: Mapping[str, float], name: str) -> tuple[float, float, float] | None:
    """(trial value, reference value, combined 1-sigma error) of ``val/<name>``, or None when either is missing."""
    value, reference = val.get(f"val/{name}"), ref.get(f"ref/val/{name}")
    if value is None or reference is None or not (math.isfinite(value) and math.isfinite(reference)):
        return None
    error = math.hypot(val.get(f"val/{name}_err", 0.0), ref.get(f"ref/val/{name}_err", 0.0))
    return value, reference, error


def _at_chance(task: str, val: Mapping[str, float], ref: Mapping[str, float]) -> bool:
    if task == "classification":
        pair = _pair(val, ref, "accuracy")
        return pair is not None and pair[0] <= pair[1] + pair[2]
    pair = _pair(val, ref, "resolution68_deg")
    if pair is not None:
        return pair[0] >= pair[1] - pair[2]  # an angle: lower is better
    spreads = [_pair(val, ref, key[len("ref/val/"):]) for key in ref if key.startswith("ref/val/rms/")]
    spreads = [p for p in spreads if p is not None]
    return bool(spreads) and all(value >= reference for value, reference, _ in spreads)


def _single_class(confusion: np.ndarray) -> bool:
    predicted = confusion.sum(axis=0)
    return predicted.sum() > 0 and int(np.count_nonzero(predicted > 0)) == 1


def _below_reference(val: Mapping[str, float], ref: Mapping[str, float], objective: str, mode: str) -> bool:
    if not objective.startswith("val/"):
        return False
    pair = _pair(val, ref, objective[len("val/"):])
    if pair is None:
        return False
    value, reference, _ = pair
    return value <= reference if mode == "max" else value >= reference
