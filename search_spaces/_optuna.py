"""The space as Optuna sees it: a define-by-run function (for Ray's ``OptunaSearch``) and a grid (``GridSampler``).

Ray 2.60's ``OptunaSearch`` calls ``fn(trial)`` with a wrapper that records every ``trial.suggest_*(name, ...)``
by its ``name``, then merges the dict ``fn`` returns (constants, str keys) on top, and ``unflatten_dict``s the
result on "/". It also pickles the function with the searcher state (``OptunaSearch.save``) so that a sweep can
resume: ``define_by_run`` therefore returns a picklable object, not a closure.
"""

from __future__ import annotations

from typing import Any

from search_spaces._keys import bad
from search_spaces._schema import Param, SpaceFile


def suggest(trial: Any, space: SpaceFile) -> dict[str, Any]:
    """Suggest the active parameters in dependency order (a child only when its ``when`` holds). No computation."""
    chosen: dict[str, Any] = {}
    for param in space.space.values():
        if param.is_active(chosen):
            chosen[param.name] = _suggest_one(trial, param)
    return chosen


def _suggest_one(trial: Any, p: Param) -> Any:
    if p.kind == "value":
        return p.value  # a constant: nothing for the sampler to learn
    if p.kind == "choice":
        return trial.suggest_categorical(p.name, list(p.choices))
    if p.kind == "int":
        return trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    return trial.suggest_float(p.name, float(p.low), float(p.high), step=p.step, log=p.log)


class DefineByRun:
    """``fn(trial) -> constants``: suggests the space; returns the fixed values and active ``value`` params.

    A searcher may set ``user_attrs`` before it asks: the trial being defined gets them (e.g. the id of the Tune trial
    it becomes); ``last_number`` is the Optuna number of the trial defined last."""

    def __init__(self, space: SpaceFile):
        self.space = space
        self.user_attrs: dict[str, Any] = {}
        self.last_number: int | None = None

    def __call__(self, trial: Any) -> dict[str, Any] | None:
        self.last_number = trial.number
        for key, value in self.user_attrs.items():
            trial.set_user_attr(key, value)
        chosen = suggest(trial, self.space)
        constants = {k: v for k, v in self.space.fixed.items() if k not in self.space.space}
        constants.update({k: v for k, v in chosen.items() if self.space.space[k].kind == "value"})
        return constants or None

    def __repr__(self) -> str:
        return f"DefineByRun({self.space.name!r}, {len(self.space.varied_keys)} varied keys)"


def define_by_run(space: SpaceFile) -> DefineByRun:
    """The ``space`` argument of ``ray.tune.search.optuna.OptunaSearch``."""
    return DefineByRun(space)


def grid_space(space: SpaceFile) -> dict[str, list[Any]]:
    """``search_space`` for ``optuna.samplers.GridSampler``: every choice and int value.

    A conditional parameter is in the grid too; a grid point whose condition does not hold repeats the same
    config, which Optuna counts as a separate point (the plan shows the grid size).
    """
    grid: dict[str, list[Any]] = {}
    for p in space.space.values():
        if p.kind == "value":
            continue  # a constant is no grid axis
        values = _finite_values(p)
        if values is None:
            raise bad(str(space.source_path), f"space.{p.name}.float", "sampler grid cannot enumerate a float range",
                      f"make {p.name} a choice of values, or use sampler: tpe")
        grid[p.name] = values
    return grid


FINITE_LIMIT = 10_000  # larger discrete spaces are treated as endless: a repeat is then rare anyway


def finite_points(space: SpaceFile) -> list[dict[str, Any]] | None:
    """Every distinct assignment of the active parameters when the space is finite (choices, ints and constants)
    and holds at most FINITE_LIMIT of them; None otherwise. Inactive conditionals are left out, as ``suggest``
    leaves them out, so each point is one config that a trial can get."""
    points: list[dict[str, Any]] = [{}]
    for p in space.space.values():
        values = _finite_values(p)
        grown: list[dict[str, Any]] = []
        for point in points:
            if not p.is_active(point):
                grown.append(point)
            elif values is None:
                return None
            else:
                grown += [{**point, p.name: v} for v in values]
        if len(grown) > FINITE_LIMIT:
            return None
        points = grown
    return points


def _finite_values(p: Param) -> list[Any] | None:
    if p.kind in ("choice", "value"):
        return list(p.choices)
    if p.kind == "int":
        return list(range(int(p.low), int(p.high) + 1, int(p.step or 1)))
    return None  # a float range


def grid_size(space: SpaceFile) -> int:
    size = 1
    for values in grid_space(space).values():
        size *= len(values)
    return size
