"""``load_space``: a search-space YAML -> a validated ``SpaceFile``, or one ``BadInput`` line naming file, key and fix.

Every check runs before anything is created (no MLflow run, no Ray, no folder), so bad input leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from search_spaces import _checks
from search_spaces._keys import (
    accepts,
    bad,
    check_trial_mapping,
    check_trial_value,
    reject_unknown,
    require_mapping,
    trial_hints,
    trial_keys,
)
from search_spaces._params import parse_space
from search_spaces._schema import (
    OBJECTIVE_KEYS,
    SCHEDULERS,
    TOP_KEYS,
    Budget,
    Objective,
    LOG_CHECKPOINTS,
    Resources,
    SpaceFile,
    Tracking,
)
from search_spaces._yaml import read_yaml, scalar
from search_spaces.samplers import SAMPLERS
from trainables.config import OOM_POLICIES, TASKS, DataConfig
from trainables.errors import BadInput, near_hint

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # becomes a folder (scans/<name>/) and an MLflow name
DEFAULT_OBJECTIVE = {"classification": {"metric": "val/accuracy", "mode": "max"},
                     "regression": {"metric": "val/loss", "mode": "min"}}  # a training file without objective:
LOWER_IS_BETTER = ("loss", "resolution", "_err", "epoch_s", "data_wait", "mem", "rss_gb", "cpu_pct", "power_w",
                   "fragmentation", "slack", "rms/")


def load_space(path: str | Path, overrides: dict | None = None, require_data: bool = True,
               training: bool = False) -> SpaceFile:
    """Parse and validate a search-space YAML. ``overrides`` (from ``parse_set``) are merged into ``fixed``.

    ``training`` (``scanner train``): only ``data`` is required; ``name`` defaults to the file's stem, ``task`` to
    what the data file holds (labels: classification, else targets: regression), ``objective`` to the task's."""
    shown = str(path)
    source = Path(path).expanduser().resolve()
    raw = read_yaml(source, shown)
    reject_unknown(shown, "", raw, TOP_KEYS)
    for key in ("data",) if training else ("name", "task", "data", "objective"):
        if key not in raw:
            raise bad(shown, key, "missing", f"add '{key}:' (see search_spaces/demo.yaml)")
    name = parse_name(shown, raw["name"]) if "name" in raw else default_name(shown, source)
    data = parse_data(shown, raw["data"], source.parent)
    task = raw["task"] if "task" in raw else held_task(data)
    if task not in TASKS:
        raise bad(shown, "task", f"'{task}' is not a task", near_hint(task, TASKS))
    objective = parse_objective(shown, raw["objective"] if "objective" in raw else DEFAULT_OBJECTIVE[task])
    budget = parse_budget(shown, raw.get("budget") or {}, bool(objective.also))
    resources = parse_resources(shown, raw.get("resources") or {})
    tracking = parse_tracking(shown, raw.get("tracking") or {})
    yaml_fixed = dict(require_mapping(shown, "fixed", raw.get("fixed") or {}, "fixed: {batch_size: 64}"))
    check_trial_mapping(shown, "fixed", yaml_fixed)
    baseline = raw.get("baseline")
    if baseline is not None:
        baseline = dict(require_mapping(shown, "baseline", baseline, "baseline: {model: resnet18, lr: 1.0e-3}"))
        check_trial_mapping(shown, "baseline", baseline)
    overrides = dict(overrides or {})
    _check_overrides(overrides)
    params = parse_space(shown, raw.get("space") or {}, set(yaml_fixed))
    fixed = {**yaml_fixed, **overrides}

    _checks.check_registry_names(shown, task, yaml_fixed, baseline, params, overrides)
    _checks.check_mode_and_init(shown, yaml_fixed, baseline, params, overrides)
    _checks.check_sampler(shown, budget.sampler, budget.trials, bool(objective.also), params)
    classes, targets = _checks.data_names(shown, data, require_data)
    _checks.check_objective(shown, objective, task, classes, targets)
    _checks.check_select(shown, data, classes)
    return SpaceFile(
        name=name, task=task, data=data, objective=objective, budget=budget, resources=resources, fixed=fixed,
        baseline=baseline, space=params, source_path=source, raw=raw, space_hash=space_hash(raw),
        overrides=overrides, tracking=tracking,
    )


def held_task(data: DataConfig) -> str:
    from trainables.data.schema import infer_task  # h5py and the data package: only when a file must be read

    return infer_task(data)


def default_name(shown: str, source: Path) -> str:
    if not NAME_PATTERN.fullmatch(source.stem):
        raise bad(shown, "name", f"missing, and the file name '{source.stem}' cannot name an MLflow experiment",
                  "add name: with letters, digits, '.', '_' and '-', e.g. name: my-training")
    return source.stem


def space_hash(raw: dict) -> str:
    """First 12 hex of the sha256 of the canonical JSON of the YAML as loaded (key order and comments don't count)."""
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def parse_name(shown: str, name: Any) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise bad(shown, "name", f"{name!r} cannot name a folder and an MLflow experiment",
                  "use letters, digits, '.', '_' and '-', e.g. name: lartpc-3class")
    return name


def parse_data(shown: str, data: Any, base_dir: Path) -> DataConfig:
    data = dict(require_mapping(shown, "data", data, "data: {path: data/lartpc.h5}"))
    reject_unknown(shown, "data", data, [f.name for f in dataclasses.fields(DataConfig)])
    if not isinstance(data.get("path"), str) or not data["path"]:
        what = "missing" if "path" not in data else f"expected a file path, got {data['path']!r}"
        raise bad(shown, "data.path", what,
                  "give the HDF5 file, e.g. path: data/lartpc.h5 (relative to this YAML file's folder)")
    select = require_mapping(shown, "data.select", data.get("select") or {}, "select: {labels: [nueCC, numuCC]}")
    data["select"] = {k: list(v) if isinstance(v, (list, tuple)) else [v] for k, v in select.items()}
    for key in ("val_fraction", "test_fraction"):
        if key in data and not (isinstance(data[key], (int, float)) and 0 <= data[key] < 1):
            raise bad(shown, f"data.{key}", f"expected a fraction in [0, 1), got {data[key]!r}", "e.g. 0.15")
    try:
        return DataConfig.from_dict(data, base_dir=base_dir, where=f"{shown}: data")
    except TypeError as exc:
        raise bad(shown, "data", str(exc), "check the data keys against docs/spaces.md") from None


def _default_mode(metric: str) -> str:
    return "min" if any(part in metric for part in LOWER_IS_BETTER) else "max"


def _one_objective(shown: str, path: str, value: Any, allow_also: bool) -> Objective:
    value = require_mapping(shown, path, value, "{metric: val/accuracy, mode: max}")
    reject_unknown(shown, path, value, OBJECTIVE_KEYS if allow_also else OBJECTIVE_KEYS[:2])
    metric = value.get("metric")
    if not isinstance(metric, str) or not metric:
        raise bad(shown, f"{path}.metric", "missing" if metric is None else f"expected a metric name, got {metric!r}",
                  "name an MLflow metric, e.g. metric: val/accuracy")
    mode = value.get("mode", _default_mode(metric))
    if mode not in ("min", "max"):
        raise bad(shown, f"{path}.mode", f"'{mode}' is not min or max", "write mode: min or mode: max")
    return Objective(metric, mode)


def parse_objective(shown: str, value: Any) -> Objective:
    primary = _one_objective(shown, "objective", value, allow_also=True)
    also = value.get("also") or []
    also = [also] if isinstance(also, dict) else also
    if not isinstance(also, list):
        raise bad(shown, "objective.also", f"expected a list, got {also!r}",
                  "write also: [{metric: perf/samples_per_s, mode: max}]")
    extra = tuple(_one_objective(shown, f"objective.also[{i}]", a, allow_also=False) for i, a in enumerate(also))
    names = [primary.metric, *(o.metric for o in extra)]
    if len(set(names)) != len(names):
        raise bad(shown, "objective.also", "a metric is listed twice", "list each objective once")
    return Objective(primary.metric, primary.mode, extra)


def _int_at_least(shown: str, path: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise bad(shown, path, f"expected a whole number >= {low}, got {value!r}", f"give an integer >= {low}")
    return value


def parse_budget(shown: str, budget: Any, multi_objective: bool) -> Budget:
    budget = require_mapping(shown, "budget", budget, "budget: {trials: 16, max_epochs: 8}")
    reject_unknown(shown, "budget", budget, [f.name for f in dataclasses.fields(Budget)])
    defaults = Budget(sampler="nsga2" if multi_objective else "tpe")  # several objectives: NSGA-II's Pareto search
    values = {**dataclasses.asdict(defaults), **budget}
    for key, low in (("trials", 1), ("max_epochs", 1), ("grace_epochs", 1), ("seed", 0), ("final_top", 0),
                     ("final_seeds", 1), ("max_failures", 0)):
        _int_at_least(shown, f"budget.{key}", values[key], low)
    if values["grace_epochs"] > values["max_epochs"]:
        raise bad(shown, "budget.grace_epochs", f"{values['grace_epochs']} is more than max_epochs "
                  f"{values['max_epochs']}", "keep grace_epochs <= max_epochs")
    if values["final_top"] > values["trials"]:
        raise bad(shown, "budget.final_top", f"{values['final_top']} top trials out of {values['trials']}",
                  "keep final_top <= trials")
    for key, allowed in (("scheduler", SCHEDULERS), ("sampler", SAMPLERS.names())):
        if values[key] not in allowed:
            raise bad(shown, f"budget.{key}", f"unknown {key} '{values[key]}'", near_hint(values[key], allowed))
    if multi_objective and values["sampler"] not in SAMPLERS.names(multi_objective=True):
        raise bad(shown, "budget.sampler", f"{values['sampler']} optimises a single objective, but objective.also "
                  "is set", "use sampler: nsga2 or tpe for several objectives")
    return Budget(**values)


def parse_resources(shown: str, resources: Any) -> Resources:
    resources = require_mapping(shown, "resources", resources, "resources: {cpu: 1, gpu: 0, concurrent: 2}")
    reject_unknown(shown, "resources", resources, [f.name for f in dataclasses.fields(Resources)])
    values = {**dataclasses.asdict(Resources()), **resources}
    for key in ("cpu", "gpu"):
        v = values[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (key == "cpu" and v == 0):
            raise bad(shown, f"resources.{key}", f"expected a number {'> 0' if key == 'cpu' else '>= 0'}, got {v!r}",
                      "e.g. cpu: 1, gpu: 0.5 (two trials share a GPU)")
    if values["gpu"] > 1 and not float(values["gpu"]).is_integer():
        raise bad(shown, "resources.gpu", f"{values['gpu']} GPUs: Ray shares a GPU only as a fraction below 1",
                  "use a fraction < 1 or a whole number of GPUs")
    _int_at_least(shown, "resources.concurrent", values["concurrent"], 1)
    if values["oom"] not in OOM_POLICIES:
        raise bad(shown, "resources.oom", f"'{values['oom']}' is not an out-of-memory policy",
                  "use oom: fail (the trial fails, the sweep goes on) or oom: halve_batch (retry at half the batch)")
    return Resources(cpu=float(values["cpu"]), gpu=float(values["gpu"]), concurrent=values["concurrent"],
                     oom=values["oom"])


def parse_tracking(shown: str, tracking: Any) -> Tracking:
    tracking = require_mapping(shown, "tracking", tracking, "tracking: {log_checkpoints: best}")
    reject_unknown(shown, "tracking", tracking, [f.name for f in dataclasses.fields(Tracking)])
    value = tracking.get("log_checkpoints")
    if value is not None and value not in LOG_CHECKPOINTS:
        raise bad(shown, "tracking.log_checkpoints", f"'{value}' is not one of {', '.join(LOG_CHECKPOINTS)}",
                  "write log_checkpoints: best (each trial's best checkpoint on its run) or none")
    return Tracking(log_checkpoints=value)


def _check_overrides(overrides: dict) -> None:
    for key, value in overrides.items():
        if key not in trial_keys():
            raise bad("--set", key, f"unknown trial key '{key}'", near_hint(key, trial_keys()))
        check_trial_value("--set", key, key, value)


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["lr=3e-3", "amp=off"]`` -> ``{"lr": 0.003, "amp": "off"}``, typed as YAML types scalars."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BadInput(f"--set {item}: expected key=value; write e.g. --set lr=3e-3")
        value = scalar(text.strip())
        hint = trial_hints().get(key)
        if hint is not None and not accepts(hint, value) and accepts(hint, text.strip()):
            value = text.strip()  # `--set init=2024.pt` or `--set model=123`: a string key keeps the text
        out[key] = value
    _check_overrides(out)
    return out
