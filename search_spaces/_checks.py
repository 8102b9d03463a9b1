"""Checks across sections: registry names, loss vs task, mode vs init, sampler vs space, objective vs data file."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from search_spaces._keys import bad
from search_spaces._schema import Objective, Param
from trainables.config import DataConfig, TrialConfig
from trainables.errors import BadInput, near_hint
from trainables.contract import logged_metrics, metric_key, objective_candidates

PER_CLASS = ("efficiency", "purity", "fom", "auc")  # val/<family>/<class name>
PER_TARGET = ("bias", "rms", "skew")  # val/<family>/<target name>
FIXES_ARCHITECTURE = ("best-of:", "run:")


def occurrences(key: str, fixed: dict, baseline: dict | None, params: dict[str, Param], overrides: dict) -> Iterator[
        tuple[str, Any]]:
    """Every (key path, value) a trial key takes anywhere in the file (and in `--set`)."""
    for where, values in (("fixed", fixed), ("baseline", baseline or {}), ("--set", overrides)):
        if key in values and (where != "fixed" or key not in overrides):
            yield f"{where}.{key}", values[key]
    param = params.get(key)
    if param is not None and param.kind == "value":
        yield f"space.{key}.value", param.value
    elif param is not None and param.kind == "choice":
        for i, c in enumerate(param.choices):
            yield f"space.{key}.choice[{i}]", c


def check_registry_names(shown: str, task: str, fixed: dict, baseline: dict | None, params: dict[str, Param],
                         overrides: dict) -> None:
    # Lazy: the registries import torch/timm, which `scanner --help` must not pay for.
    from trainables.losses import LOSSES
    from trainables.models import MODELS
    from trainables.schedules import SCHEDULES

    for key, registry, what in (("model", MODELS, "model"), ("loss", LOSSES, "loss"),
                                ("lr_schedule", SCHEDULES, "LR schedule")):
        for path, name in occurrences(key, fixed, baseline, params, overrides):
            if name is None or (key == "model" and str(name).startswith("timm:")):
                continue  # None = the task's default loss; timm names are checked when the model is built
            if name not in registry:
                fix = near_hint(name, registry.names())
                if key == "model":
                    fix += ", or timm:<name> for any timm model"
                raise bad(shown, path, f"unknown {what} '{name}'", fix)
            if key == "loss":
                check_loss_task(shown, path, name, task, LOSSES)


def _tasks_of(registry: Any, name: str) -> tuple[str, ...] | None:
    tag = registry.tags(name).get("task")
    if tag is None:
        return None  # untagged: fits any task
    return (tag,) if isinstance(tag, str) else tuple(tag)


def check_loss_task(shown: str, path: str, name: str, task: str, registry: Any) -> None:
    tasks = _tasks_of(registry, name)
    if tasks is not None and task not in tasks:
        fitting = [n for n in registry.names() if task in (_tasks_of(registry, n) or (task,))]
        raise bad(shown, path, f"loss '{name}' is for {'/'.join(tasks)}, but task is {task}",
                  f"use a {task} loss: {', '.join(fitting)}")


def check_mode_and_init(shown: str, fixed: dict, baseline: dict | None, params: dict[str, Param],
                        overrides: dict) -> None:
    inits = [(p, v) for p, v in occurrences("init", fixed, baseline, params, overrides) if v]
    for path, mode in occurrences("mode", fixed, baseline, params, overrides):
        # a searched trial gets fixed + space only: an init in the baseline does not reach it
        reach = inits if not path.startswith("space.") else [(p, v) for p, v in inits if not p.startswith("baseline")]
        if mode != "scratch" and not reach:
            places = "fixed or space" if path.startswith("space.") else "fixed, baseline or space"
            raise bad(shown, path, f"mode '{mode}' needs init, and no init is set in {places}",
                      "add init: best-of:<sweep>, run:<mlflow run id>, a checkpoint file or hub:<weights> to fixed")
    model = params.get("model")
    if model is not None and model.kind != "value":
        for path, init in inits:
            if str(init).startswith(FIXES_ARCHITECTURE):
                raise bad(shown, "space.model", f"model is varied, but init '{init}' ({path}) fixes the architecture",
                          "set model in fixed to the architecture of that run, or drop the best-of:/run: init")
    cfg = {**fixed, **(baseline or {}), **overrides}
    if cfg.get("mode", "scratch") == "scratch":
        cfg["init"] = None  # init is ignored when training from scratch
    try:
        TrialConfig.from_dict(cfg, where="baseline")
    except BadInput as exc:
        raise bad(shown, "baseline", str(exc).removeprefix("baseline: "),
                  "fix the baseline (fixed + baseline) so it is a trainable config") from None


def check_sampler(shown: str, sampler: str, trials: int, multi_objective: bool, params: dict[str, Param]) -> None:
    if sampler == "cmaes" and multi_objective:
        raise bad(shown, "budget.sampler", "cmaes optimises a single objective, but objective.also is set",
                  "use sampler: nsga2 or tpe for several objectives")
    if sampler != "grid":
        return
    points = 1
    for p in params.values():
        if p.kind == "float":
            raise bad(shown, f"space.{p.name}.float", "sampler grid cannot enumerate a float range",
                      f"make {p.name} a choice of values, or use sampler: tpe")
        if p.kind == "choice":
            points *= len(p.choices)
        elif p.kind == "int":
            points *= int((p.high - p.low) // (p.step or 1)) + 1
    if trials > points:
        # Optuna's GridSampler would repeat points, and stops the study (an error outside study.optimize)
        raise bad(shown, "budget.trials", f"{trials} trials, but the grid has only {points} points",
                  f"set budget.trials: {points}, or widen the grid")


def data_names(shown: str, data: DataConfig, require_data: bool) -> tuple[list[str] | None, list[str] | None]:
    """(class_names, target_names) from the data file's attributes; None where unknown (no file, no attribute)."""
    path = Path(data.path)
    if not path.exists():
        if require_data:
            raise bad(shown, "data.path", f"{path} does not exist",
                      f"create it (scanner data synth --out {path}) or point data.path at your HDF5 file "
                      "(relative paths start at the YAML file's folder)")
        return None, None
    if path.is_dir():
        raise bad(shown, "data.path", f"{path} is a folder, not an HDF5 file",
                  "give the events file (e.g. path: data/lartpc.h5), or convert a folder of PNG events with "
                  f"scanner data import-images {path} --out events.h5")
    import h5py  # lazy: only when a file is there to read

    try:
        with h5py.File(path, "r") as f:
            return _str_list(f.attrs.get("class_names")), _str_list(f.attrs.get("target_names"))
    except OSError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__  # h5py's text spans lines
        raise bad(shown, "data.path", f"{path} is not a readable HDF5 file ({reason})",
                  "give an HDF5 file written by scanner data synth or scanner data import-images") from None


def _str_list(attr: Any) -> list[str] | None:
    if attr is None:
        return None
    if isinstance(attr, bytes):
        attr = attr.decode()
    if isinstance(attr, str):
        return json.loads(attr) if attr.startswith("[") else [attr]
    return [a.decode() if isinstance(a, bytes) else str(a) for a in attr]


def check_objective(shown: str, objective: Objective, task: str, classes: list[str] | None,
                    targets: list[str] | None) -> None:
    for i, obj in enumerate([objective, *objective.also]):
        path = "objective.metric" if i == 0 else f"objective.also[{i - 1}].metric"
        check_metric(shown, path, obj.metric, task, classes, targets)


def check_metric(shown: str, path: str, metric: str, task: str, classes: list[str] | None,
                 targets: list[str] | None) -> None:
    logged = logged_metrics(task, classes or (), targets or ())
    if metric in logged:
        return
    head, _, leaf = metric.rpartition("/")
    if head and f"{head}/{metric_key(leaf)}" in logged:
        raise bad(shown, path, f"'{metric}' names a class or target by its real name",
                  f"metric names use its metric key: write '{head}/{metric_key(leaf)}' (characters other than "
                  "letters, digits, _ - . become _)")
    if metric.startswith("test/"):
        raise bad(shown, path, f"'{metric}' is measured once, after the sweep", f"optimise 'val/{metric[5:]}'")
    names_unknown = classes is None if task == "classification" else targets is None
    family = PER_CLASS if task == "classification" else PER_TARGET
    m = re.fullmatch(r"(?:best/)?val/([a-z_0-9]+)/[^/]+", metric)
    if names_unknown and m and m.group(1) in family:
        return  # the per-class/per-target names come from the data file, which is not there to ask yet
    known = objective_candidates(task, classes or (), targets or ())
    raise bad(shown, path, f"'{metric}' is never logged by a {task} trial", near_hint(metric, known))


def check_select(shown: str, data: DataConfig, classes: list[str] | None) -> None:
    """`select: {labels: [nueCC, numuCC]}` names classes the file has."""
    for dataset in (data.labels, "labels"):
        if dataset not in data.select or classes is None:
            continue
        for i, name in enumerate(data.select[dataset]):
            if isinstance(name, str) and name not in classes:
                raise bad(shown, f"data.select.{dataset}[{i}]", f"the file has no class '{name}'",
                          near_hint(name, classes))
        return
