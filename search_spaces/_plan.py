"""``scanner run --dry-run``: what a sweep would do on this cluster, and whether the cluster can do it at all."""

from __future__ import annotations

import math
from pathlib import Path

from search_spaces._checks import occurrences
from search_spaces._keys import bad
from search_spaces._optuna import grid_size
from search_spaces._resolve import baseline_config, baseline_only_warning
from search_spaces._schema import SpaceFile
from trainables.config import CPU_IGNORED, TrialConfig

ASHA_REDUCTION = 2  # with 4-8 epochs, halving gives rungs at 1, 2, 4, 8 epochs; Ray's 4 would leave one rung
HYPERBAND_BRACKETS = 3  # asynchronous Hyperband: ASHA over several grace periods (Li et al. 2020)
ANNEALED_TO_THE_END = ("cosine", "step", "onecycle")  # their LR falls as max_epochs nears: late catch-up


def check_resources(space: SpaceFile, cluster_cpus: float, cluster_gpus: float) -> None:
    """BadInput when the cluster cannot give one trial what it asks: Ray would keep it PENDING forever, silently."""
    shown, res = str(space.source_path), space.resources
    if res.gpu > 0 and cluster_gpus <= 0:
        raise bad(shown, "resources.gpu", f"{res.gpu:g} GPU per trial on a cluster with no GPU would leave every "
                  "trial PENDING forever", "set resources.gpu: 0 or run on a GPU node")
    if res.gpu > cluster_gpus:
        raise bad(shown, "resources.gpu", f"{res.gpu:g} GPUs per trial, but the cluster has {cluster_gpus:g}: every "
                  "trial would stay PENDING", f"set resources.gpu to at most {cluster_gpus:g}")
    if res.cpu > cluster_cpus:
        raise bad(shown, "resources.cpu", f"{res.cpu:g} CPUs per trial, but the cluster has {cluster_cpus:g}: every "
                  "trial would stay PENDING", f"set resources.cpu to at most {cluster_cpus:g}")
    for i, obj in enumerate(space.objectives):
        if obj.metric.startswith("sys/gpu_") and (res.gpu == 0 or cluster_gpus <= 0):
            path = "objective.metric" if i == 0 else f"objective.also[{i - 1}].metric"
            raise bad(shown, path, f"'{obj.metric}' is never logged without a GPU (it is absent on CPU, not 0)",
                      "give the trials a GPU (resources.gpu) or optimise another metric")


def cpu_ignored_keys(space: SpaceFile) -> list[str]:
    """The trial keys the user set that a CPU run ignores (``amp``, ``channels_last``), for one warning line per
    sweep. A key set only to what a CPU does anyway (``amp: off``, ``channels_last: false``) is not listed."""
    keys = []
    for key, same_as_cpu in CPU_IGNORED.items():
        values = [value for _, value in occurrences(key, space.fixed, space.baseline, space.space, space.overrides)]
        if any(value != same_as_cpu for value in values):
            keys.append(key)
    return keys


def trials_at_once(space: SpaceFile, cluster_cpus: float, cluster_gpus: float) -> int:
    res = space.resources
    limits = [res.concurrent, math.floor(cluster_cpus / res.cpu + 1e-9)]
    if res.gpu > 0:
        limits.append(math.floor(cluster_gpus / res.gpu + 1e-9))
    return max(0, min(limits))


def _objectives_line(space: SpaceFile) -> str:
    text = ", ".join(f"{o.metric} ({o.mode})" for o in space.objectives)
    return text + ("  -> Pareto front" if space.multi_objective else "")


def _sampler_line(space: SpaceFile) -> str:
    b = space.budget
    text = f"{b.sampler} (seed {b.seed})"
    if b.sampler == "grid":
        text += f", {grid_size(space)} grid points"
    if b.scheduler == "fifo":
        return text + "; scheduler fifo (every trial runs all epochs)"
    brackets = HYPERBAND_BRACKETS if b.scheduler == "hyperband" else 1
    rungs = [asha_rungs(b.grace_epochs, b.max_epochs, s) for s in range(brackets)]
    where = " | ".join(", ".join(map(str, r)) for r in rungs if r)
    if not where:
        return text + f"; scheduler {b.scheduler}, but grace_epochs = max_epochs: no trial stops early"
    return (text + f"; scheduler {b.scheduler} on {space.objective.metric}: compares trials at epochs {where} of "
            f"{b.max_epochs}" + (f" ({brackets} brackets)" if brackets > 1 else "")
            + f" and stops those outside the top 1/{ASHA_REDUCTION} there")


def asha_rungs(grace: int, max_epochs: int, bracket: int = 0) -> list[int]:
    """The epochs before the last at which Ray's ASHA compares trials (its ``_Bracket`` milestones)."""
    count = int(math.log(max_epochs / grace) / math.log(ASHA_REDUCTION) - bracket + 1)
    return [m for k in range(count) if (m := grace * ASHA_REDUCTION ** (k + bracket)) < max_epochs]


def _short_horizon_note(space: SpaceFile) -> list[str]:
    """ASHA ranks trials mid-schedule. Under a schedule that anneals at max_epochs, a high-LR trial that wins only
    once annealed looks worse there and is stopped (docs/benchmarks.md, search efficiency: the grid's top 3 ranked
    14th-21st of 36 at epoch 4).
    Evaluating EMA weights brought the epoch-2 to epoch-4 rank correlation with the final from ~0.75 to ~0.93."""

    b = space.budget
    if b.scheduler == "fifo" or "ema_decay" in space.space or float(space.fixed.get("ema_decay") or 0) > 0:
        return []
    rungs = asha_rungs(b.grace_epochs, b.max_epochs)
    param = space.space.get("lr_schedule")
    schedules = param.choices if param is not None else (space.fixed.get("lr_schedule", TrialConfig.lr_schedule),)
    annealed = [s for s in schedules if s in ANNEALED_TO_THE_END]
    if not rungs or not annealed:
        return []
    return [f"  note:       the {'/'.join(annealed)} LR schedule anneals towards epoch {b.max_epochs}, after the "
            f"comparisons at epochs {', '.join(map(str, rungs))}:",
            "              a trial that catches up late (a high LR) can be stopped; evaluating EMA weights "
            "(fixed: {ema_decay: 0.99}) ranks early epochs closer to the final order (docs/benchmarks.md)"]


def _data_line(space: SpaceFile) -> str:
    path = Path(space.data.path)
    line = str(path) if path.exists() else f"{path}  (MISSING: scanner data synth --out {path})"
    if space.data.select:
        line += "  select " + ", ".join(f"{k} in {v}" for k, v in space.data.select.items())
    return line


def _parameter_lines(space: SpaceFile) -> list[str]:
    if not space.space:
        return ["  (none: every trial trains the fixed config)"]
    width = max(len(n) for n in space.space)
    return [f"  {name:<{width}}  {p.describe()}" for name, p in space.space.items()]


def _baseline_lines(space: SpaceFile) -> list[str]:
    cfg = baseline_config(space).as_params()
    set_here = {**space.fixed, **(space.baseline or {})}
    shown = [f"{k}={v}" for k, v in cfg.items() if k in set_here or k in space.space]
    rest = [k for k in cfg if k not in set_here and k not in space.space]
    lines = ["  " + " ".join(shown) if shown else "  (all defaults)"]
    if rest:
        lines.append(f"  (defaults for {', '.join(rest)})")
    warning = baseline_only_warning(space)
    if warning:
        lines.append("  " + warning)
    return lines


def format_plan(space: SpaceFile, cluster_cpus: float, cluster_gpus: float) -> str:
    """The ``--dry-run`` text: what would run, with what, how many at once, and the worst-case cost."""
    b, res = space.budget, space.resources
    at_once = trials_at_once(space, cluster_cpus, cluster_gpus)
    runs = b.trials + 1  # the baseline runs on top of the searched trials
    worst = runs * b.max_epochs
    lines = [
        f"Sweep '{space.name}' ({space.task}), space hash {space.space_hash}",
        f"  file:       {space.source_path}",
        f"  data:       {_data_line(space)}",
        f"  objective:  {_objectives_line(space)}",
        f"  sampler:    {_sampler_line(space)}",
        *_short_horizon_note(space),
        f"  trials:     {b.trials} searched + 1 baseline, up to {b.max_epochs} epochs each; "
        f"{b.max_failures} retry(ies) per failed trial",
        "Parameters (in suggestion order):",
        *_parameter_lines(space),
        "Fixed: " + (" ".join(f"{k}={v}" for k, v in space.fixed.items()) or "(nothing)"),
        "Baseline (runs first, never stopped early):",
        *_baseline_lines(space),
        f"Resources: {res.cpu:g} CPU and {res.gpu:g} GPU per trial, at most {res.concurrent} at once; "
        f"this cluster ({cluster_cpus:g} CPUs, {cluster_gpus:g} GPUs) runs {at_once} trial(s) at once",
    ]
    if at_once == 0:
        lines.append("  WARNING: no trial fits on this cluster; every trial would stay PENDING")
    lines += [
        f"Worst case: ({b.trials} trials + 1 baseline) x {b.max_epochs} epochs = {worst} epochs"
        + (f", about {math.ceil(worst / at_once)} epoch-lengths of wall time at {at_once} at once" if at_once else ""),
        f"Finally: the top {b.final_top} trial(s) and the baseline are evaluated once on the test split "
        f"({b.final_top + 1} test evaluations)",
        *_replica_lines(space, at_once),
    ]
    return "\n".join(lines)


def _replica_lines(space: SpaceFile, at_once: int) -> list[str]:
    """What ``final_seeds`` adds: each finalist and the baseline retrained with N - 1 more seeds."""
    b = space.budget
    if b.final_seeds <= 1:
        return []
    replicas = (b.final_top + 1) * (b.final_seeds - 1)
    extra = replicas * b.max_epochs
    wall = f", about {math.ceil(extra / at_once)} epoch-lengths more at {at_once} at once" if at_once else ""
    return [f"Seed replicas: ({b.final_top} finalists + 1 baseline) x {b.final_seeds - 1} more seed(s) = {replicas} "
            f"replicas, each trained up to its original's best epoch (at most {b.max_epochs}) and tested once: up "
            f"to {extra} extra epochs{wall}"]
