"""The MLflow metric names a trial logs (DESIGN.md, "MLflow layout": a contract).

One place that knows them, so the search-space validator can reject an objective that a task never logs and the
loop, the scanner and the tests agree on spelling.
"""

from __future__ import annotations

from typing import Iterable

PERF = ("perf/epoch_s", "perf/samples_per_s", "perf/data_wait_frac")
SYS_CPU = ("sys/rss_gb", "sys/cpu_pct")
SYS_GPU = (
    "sys/gpu_mem_allocated_gb",
    "sys/gpu_mem_reserved_gb",
    "sys/gpu_mem_peak_gb",
    "sys/gpu_fragmentation",
    "sys/gpu_cache_slack",
    "sys/gpu_util_pct",
    "sys/gpu_power_w",
)
COMMON = ("train/loss", "val/loss", "train/lr")


def physics_names(task: str, class_names: Iterable[str] = (), target_names: Iterable[str] = ()) -> list[str]:
    """Physics metric names without the ``val/`` prefix (the same set is logged under ``test/``)."""
    if task == "classification":
        names = ["accuracy"]
        for c in class_names:
            names += [f"efficiency/{c}", f"purity/{c}", f"fom/{c}", f"auc/{c}"]
        return names
    names = ["resolution68_deg"]
    for t in target_names:
        names += [f"bias/{t}", f"rms/{t}", f"skew/{t}"]
    return names


def with_errors(names: Iterable[str]) -> list[str]:
    """Wilson/bootstrap 1-sigma errors exist for accuracy, efficiency, purity, fom and the resolution."""
    out = []
    for n in names:
        out.append(n)
        if n.split("/")[0] in ("accuracy", "efficiency", "purity", "fom", "resolution68_deg"):
            out.append(n + "_err")
    return out


def logged_metrics(task: str, class_names: Iterable[str] = (), target_names: Iterable[str] = ()) -> set[str]:
    """Every name a trial of this task may log per epoch, including ``best/`` copies of the physics metrics."""
    physics = with_errors(physics_names(task, list(class_names), list(target_names)))
    names = set(COMMON) | set(PERF) | set(SYS_CPU) | set(SYS_GPU)
    names |= {f"val/{n}" for n in physics}
    names |= {f"best/val/{n}" for n in physics} | {"best/val/loss", "best/epoch"}
    return names


def objective_candidates(task: str, class_names: Iterable[str] = (), target_names: Iterable[str] = ()) -> list[str]:
    """Names that make sense as an objective (what the validator suggests)."""
    physics = physics_names(task, list(class_names), list(target_names))
    return ["val/loss"] + [f"val/{n}" for n in physics] + ["perf/samples_per_s", "sys/gpu_mem_peak_gb"]
