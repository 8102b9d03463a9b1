"""``space:`` entries -> ``Param``: ranges, choices, ``when`` conditions, and the order Optuna must suggest them in."""

from __future__ import annotations

import math
import typing
from typing import Any

from search_spaces._keys import bad, check_trial_value, reject_unknown, require_mapping, trial_hints, trial_keys
from search_spaces._schema import PARAM_KEYS, Param

KINDS = ("choice", "float", "int", "value")
EXAMPLE = "{choice: [a, b]}, {float: [low, high], log: true}, {int: [low, high], step: 2} or {value: x}"
SCALARS = (str, int, float, bool, type(None))  # what Optuna's suggest_categorical stores


def parse_space(shown: str, space: Any, fixed_keys: set[str]) -> dict[str, Param]:
    space = require_mapping(shown, "space", space, "space: {lr: {float: [1.0e-4, 1.0e-1], log: true}}")
    reject_unknown(shown, "space", space, trial_keys())
    params = {}
    for key, spec in space.items():
        if key in fixed_keys:
            raise bad(shown, f"space.{key}", f"'{key}' is both in fixed and in space",
                      "remove it from fixed to vary it, or from space to keep it fixed")
        params[key] = parse_param(shown, key, spec)
    for param in params.values():
        check_when(shown, param, params)
    return {name: params[name] for name in dependency_order(shown, params)}


def parse_param(shown: str, key: str, spec: Any) -> Param:
    path = f"space.{key}"
    spec = require_mapping(shown, path, spec, EXAMPLE)
    reject_unknown(shown, path, spec, PARAM_KEYS)
    kinds = [k for k in KINDS if k in spec]
    if len(kinds) != 1:
        what = "no distribution" if not kinds else f"{' and '.join(kinds)} together"
        raise bad(shown, path, f"{what}", f"give exactly one of {EXAMPLE}")
    kind = kinds[0]
    if kind in ("choice", "value"):
        for extra in ("log", "step"):
            if extra in spec:
                raise bad(shown, f"{path}.{extra}", f"'{extra}' only applies to a float or int range",
                          f"remove it, or use {{float: [low, high], {extra}: ...}}")
    when = parse_when(shown, path, spec.get("when", {}))
    if kind == "value":
        check_trial_value(shown, f"{path}.value", key, spec["value"])
        return Param(key, "value", choices=(spec["value"],), when=when)
    if kind == "choice":
        return Param(key, "choice", choices=parse_choices(shown, path, key, spec["choice"]), when=when)
    return parse_range(shown, path, key, kind, spec, when)


def parse_when(shown: str, path: str, when: Any) -> dict[str, list[Any]]:
    when = require_mapping(shown, f"{path}.when", when, "when: {loss: focal} or when: {loss: [focal, ce]}")
    return {parent: list(v) if isinstance(v, (list, tuple)) else [v] for parent, v in when.items()}


def parse_choices(shown: str, path: str, key: str, choices: Any) -> tuple[Any, ...]:
    if not isinstance(choices, list) or not choices:
        raise bad(shown, f"{path}.choice", f"expected a non-empty list, got {choices!r}",
                  f"list the values, e.g. {key}: {{choice: [a, b]}}")
    for i, c in enumerate(choices):
        if not isinstance(c, SCALARS):
            raise bad(shown, f"{path}.choice[{i}]", f"{c!r} is not a plain value",
                      "Optuna stores only strings, numbers, booleans and null; list plain values")
        check_trial_value(shown, f"{path}.choice[{i}]", key, c)
    dupes = sorted({str(c) for c in choices if choices.count(c) > 1})
    if dupes:
        raise bad(shown, f"{path}.choice", f"{', '.join(dupes)} listed twice", "list each value once")
    return tuple(choices)


def parse_range(shown: str, path: str, key: str, kind: str, spec: dict, when: dict) -> Param:
    bounds, log, step = spec[kind], spec.get("log", False), spec.get("step")
    numeric = int if kind == "int" else (int, float)
    ok = isinstance(bounds, list) and len(bounds) == 2
    if not ok or not all(isinstance(b, numeric) and not isinstance(b, bool) for b in bounds):
        raise bad(shown, f"{path}.{kind}", f"expected [low, high] of {kind}s, got {bounds!r}",
                  f"write {key}: {{{kind}: [low, high]}}")
    low, high = bounds
    if kind == "float" and float not in _numbers_accepted(key):
        if int in _numbers_accepted(key):
            raise bad(shown, f"{path}.float", f"{key} takes whole numbers, not a float range",
                      f"write {key}: {{int: [{low}, {high}]}} or a choice")
        raise bad(shown, f"{path}.float", f"{key} is not a number", f"vary {key} with {{choice: [...]}}")
    for i, b in enumerate(bounds):
        check_trial_value(shown, f"{path}.{kind}[{i}]", key, b)
    if not low < high:
        raise bad(shown, f"{path}.{kind}", f"low {low} is not below high {high}",
                  "put the smaller value first, or use {value: x} for a constant")
    if not isinstance(log, bool):
        raise bad(shown, f"{path}.log", f"expected true or false, got {log!r}", "write log: true")
    if log and low <= 0:
        raise bad(shown, f"{path}.{kind}", f"a log range needs low > 0, got {low}",
                  "raise low above 0 (e.g. 1.0e-5) or drop log: true")
    if step is not None:
        check_step(shown, path, kind, low, high, log, step)
    return Param(key, kind, low=low, high=high, log=log, step=step, when=when)


def _numbers_accepted(key: str) -> set[type]:
    args = typing.get_args(trial_hints()[key]) or (trial_hints()[key],)
    return {a for a in args if a in (int, float)}


def check_step(shown: str, path: str, kind: str, low: float, high: float, log: bool, step: Any) -> None:
    numeric = int if kind == "int" else (int, float)
    if not isinstance(step, numeric) or isinstance(step, bool) or step <= 0:
        raise bad(shown, f"{path}.step", f"expected a positive {kind}, got {step!r}", "give a step > 0")
    if log:
        raise bad(shown, f"{path}.step", "Optuna cannot combine step with log: true",
                  "drop step, or drop log and use a choice of the values you want")
    n = (high - low) / step
    if not math.isclose(n, round(n), rel_tol=0, abs_tol=1e-9):
        raise bad(shown, f"{path}.step", f"step {step} does not divide high - low = {high - low:g}",
                  f"choose a step that does, or move high to {low + math.floor(n) * step:g}")


def check_when(shown: str, param: Param, params: dict[str, Param]) -> None:
    for parent, allowed in param.when.items():
        path = f"space.{param.name}.when.{parent}"
        if parent == param.name:
            raise bad(shown, path, "a parameter cannot depend on itself", "remove this condition")
        if parent not in params:
            varied = [p for p in params if p != param.name]
            hint = f"put {parent} in space, or remove the condition" if not varied else (
                f"name one of the parameters in space: {', '.join(varied)}")
            raise bad(shown, path, f"'{parent}' is not a parameter in space", hint)
        if params[parent].kind == "float":
            raise bad(shown, path, f"a condition on the float range '{parent}' is almost never true",
                      f"make {parent} a choice, or condition on another parameter")
        for value in allowed:
            if not params[parent].can_take(value):
                raise bad(shown, path, f"{parent} can never be {value!r} ({params[parent].describe()})",
                          f"use a value {parent} can take")


def dependency_order(shown: str, params: dict[str, Param]) -> list[str]:
    """Parents before children, otherwise the YAML order (a stable topological sort)."""
    order: list[str] = []
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            cycle = " -> ".join(visiting[visiting.index(name):] + [name])
            raise bad(shown, f"space.{name}.when", f"the conditions form a cycle ({cycle})",
                      "make one of these parameters unconditional")
        visiting.append(name)
        for parent in params[name].when:
            visit(parent)
        visiting.pop()
        order.append(name)

    for name in params:
        visit(name)
    return order
