"""From a space file to the ``TrialConfig`` one trial trains: searched trials, the baseline, ``scanner train``."""

from __future__ import annotations

from typing import Any

from search_spaces._keys import bad
from search_spaces._schema import SpaceFile
from trainables.config import TrialConfig
from trainables.errors import BadInput


def _config(space: SpaceFile, values: dict[str, Any], what: str) -> TrialConfig:
    values = dict(values)
    if values.get("mode", "scratch") == "scratch":
        values["init"] = None  # init is ignored when training from scratch
    values.setdefault("loss", TrialConfig().loss_name(space.task))  # params show the loss that actually ran
    try:
        return TrialConfig.from_dict(values, where=what)
    except BadInput as exc:
        raise bad(str(space.source_path), what, str(exc).removeprefix(f"{what}: "),
                  "fix the file so this config is trainable") from None


def trial_config(space: SpaceFile, sampled: dict[str, Any]) -> TrialConfig:
    """A searched trial: ``fixed`` + ``sampled`` (sampled wins); keys set nowhere take TrialConfig's defaults."""
    return _config(space, {**space.fixed, **sampled}, "trial")


def baseline_config(space: SpaceFile) -> TrialConfig:
    """The baseline: ``fixed`` + ``baseline`` (just ``fixed`` + defaults when the file has no baseline)."""
    return _config(space, {**space.fixed, **(space.baseline or {}), **space.overrides}, "baseline")


def train_config(space: SpaceFile) -> TrialConfig:
    """What ``scanner train`` trains: ``fixed`` + ``baseline`` + the ``--set`` overrides (which win)."""
    return baseline_config(space)


def ran_params(space: SpaceFile, sampled: dict[str, Any] | None) -> dict[str, Any]:
    """What a trial ran, as MLflow params: ``fixed`` plus the searched values that were active (a conditional whose
    ``when`` is false was never suggested), or for the baseline (``sampled`` None) ``fixed`` + ``baseline``. Defaults
    set nowhere are left out (the run's ``config.yaml`` holds the full config), and so is an ``init`` that a
    scratch trial ignores."""
    values = {**space.fixed, **(space.baseline or {}), **space.overrides} if sampled is None else {
        **space.fixed, **{k: v for k, v in sampled.items() if k in space.space}}
    if values.get("mode", "scratch") == "scratch":
        values.pop("init", None)
    return values


def sampled_keys(space: SpaceFile, sampled: dict[str, Any] | None) -> list[str]:
    """The searched keys a trial drew (``scan.varied``), in suggestion order; none for the baseline."""
    if sampled is None:
        return []
    return [k for k in space.varied_keys if k in sampled]


def baseline_only(space: SpaceFile) -> dict[str, tuple[Any, Any]]:
    """Keys set under ``baseline:`` only, to a value other than the default: the searched trials do not get them.
    ``{key: (baseline value, what the searched trials train with)}``."""
    defaults = TrialConfig()
    out = {}
    for key, value in (space.baseline or {}).items():
        if key in space.fixed or key in space.space:
            continue
        default = defaults.loss_name(space.task) if key == "loss" else getattr(defaults, key)
        if value != default:
            out[key] = (value, default)
    return out


def baseline_only_warning(space: SpaceFile) -> str | None:
    """One line for the start of a sweep and its dry run, or None when every baseline key reaches the trials."""
    keys = baseline_only(space)
    if not keys:
        return None
    set_here = ", ".join(f"{k}={v}" for k, (v, _) in keys.items())
    defaults = ", ".join(f"{k}={d}" for k, (_, d) in keys.items())
    one = len(keys) == 1
    return (f"warning: {space.source_path.name}: {set_here} {'is' if one else 'are'} set only under baseline:, so the "
            f"searched trials train with the default {defaults}; move {'it' if one else 'them'} to fixed: for every "
            "trial, or to space: to search")


def init_uses(space: SpaceFile, searched: bool = True) -> list[tuple[str, str, str]]:
    """``(model, mode, init)`` of every config that loads weights: the baseline's (``fixed`` + ``baseline`` +
    ``--set``) and, with ``searched``, each combination the searched trials can draw. For checking ``init:`` before
    anything starts."""
    uses = []
    base = baseline_config(space)
    if base.mode != "scratch" and base.init:
        uses.append((base.model, base.mode, base.init))
    if searched:
        for model in _searched_values(space, "model"):
            for mode in _searched_values(space, "mode"):
                uses += [(model, mode, init) for init in _searched_values(space, "init") if mode != "scratch" and init]
    return list(dict.fromkeys(uses))


def _searched_values(space: SpaceFile, key: str) -> list[Any]:
    param = space.space.get(key)
    if param is not None:
        return list(param.choices)  # model, mode and init are strings: a choice or a value
    return [space.fixed.get(key, getattr(TrialConfig(), key))]
