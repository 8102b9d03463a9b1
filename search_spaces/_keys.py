"""One-line errors (``<file>: <key.path>: <what is wrong>; <fix>``) and the types and limits of trial keys."""

from __future__ import annotations

import dataclasses
import types
import typing
from functools import lru_cache
from typing import Any, Iterable, Literal, Union

from trainables.config import TrialConfig
from trainables.errors import BadInput, near_hint

# Values a trial would fail on at its first step; checked before anything starts. (low, high, high is inclusive)
LIMITS: dict[str, tuple[float, float, bool]] = {
    "lr": (0.0, float("inf"), True),
    "ema_decay": (0.0, 1.0, False),
    "batch_size": (1, float("inf"), True),
    "focal_gamma": (0.0, float("inf"), True),
    "label_smoothing": (0.0, 1.0, False),
    "smooth_l1_beta": (0.0, float("inf"), True),
    "huber_delta": (0.0, float("inf"), True),
    "backbone_lr_mult": (0.0, float("inf"), True),
    "weight_decay": (0.0, float("inf"), True),
    "momentum": (0.0, 1.0, True),
    "warmup_epochs": (0.0, float("inf"), True),
    "num_workers": (0, float("inf"), True),
    "grad_clip": (0.0, float("inf"), True),
    "precise_bn": (0, float("inf"), True),
}
POSITIVE = ("lr", "batch_size")  # zero is not a usable value for these


def bad(shown: str, path: str, what: str, fix: str) -> BadInput:
    return BadInput(f"{shown}: {path}: {what}; {fix}")


def reject_unknown(shown: str, where: str, values: dict, known: Iterable[str]) -> None:
    known = list(known)
    for key in values:
        if key not in known:
            path = f"{where}.{key}" if where else str(key)
            raise bad(shown, path, f"unknown key '{key}'", near_hint(key, known))


def require_mapping(shown: str, path: str, value: Any, example: str) -> dict:
    if not isinstance(value, dict):
        raise bad(shown, path, f"expected a mapping, got {type(value).__name__} {value!r}", f"write it as {example}")
    return value


@lru_cache(maxsize=1)
def trial_hints() -> dict[str, Any]:
    return typing.get_type_hints(TrialConfig)


def trial_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(TrialConfig)]


def accepts(hint: Any, value: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return value in typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(accepts(arg, value) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(hint)))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(hint))
    return "none" if hint is type(None) else getattr(hint, "__name__", str(hint))


def check_trial_value(shown: str, path: str, key: str, value: Any) -> None:
    """The value fits the trial key's type and limits (``path`` says where it sits, e.g. ``space.lr.float[0]``)."""
    hint = trial_hints()[key]
    if not accepts(hint, value):
        raise bad(shown, path, f"{value!r} is not a valid {key} (expected {type_name(hint)})",
                  f"give {key} a value of that type (see the trial-key table in docs/spaces.md)")
    if key in LIMITS and isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high, high_inclusive = LIMITS[key]
        too_low = value <= low if key in POSITIVE else value < low
        too_high = value > high if high_inclusive else value >= high
        if too_low or too_high:
            lo = "(" if key in POSITIVE else "["
            hi = "]" if high_inclusive else ")"
            raise bad(shown, path, f"{key} = {value} is outside {lo}{low:g}, {high:g}{hi}", f"keep {key} in that range")


def check_trial_mapping(shown: str, where: str, values: dict) -> None:
    """A ``fixed``/``baseline`` mapping: known trial keys with valid values."""
    reject_unknown(shown, where, values, trial_keys())
    for key, value in values.items():
        check_trial_value(shown, f"{where}.{key}", key, value)
