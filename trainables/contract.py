"""The names that users and scripts rely on: MLflow tags, statuses, metric names, artifact and folder names.

Torch-free and Ray-free, so that the training loop, the sweep driver, the tracking writer and the reports all import
the one spelling. docs/mlflow.md describes each name; a change here is a change of the contract.

    from trainables.contract import Tag, Status, Artifact, metric_key
    tags = {Tag.STATUS: Status.COMPLETED}
    name = f"val/efficiency/{metric_key('nue+CC')}"      # -> val/efficiency/nue_CC
"""

from __future__ import annotations

import re
from typing import Iterable


class Tag:
    """MLflow tags of a sweep's runs (parent and trials) and of ``scanner train`` runs."""

    NAME = "scan.name"
    ROLE = "scan.role"  # "parent" on the sweep's parent run
    INSTANCE = "scan.instance"  # one id per `scanner run`, on the parent and every child; resume keeps it
    TRIAL_ID = "scan.trial_id"
    BASELINE = "scan.baseline"
    VARIED = "scan.varied"
    SPACE_HASH = "scan.space_hash"
    GIT_SHA = "scan.git_sha"
    DATA_HASH = "scan.data_hash"
    CLASS_NAMES = "scan.class_names"
    TARGET_NAMES = "scan.target_names"
    STATUS = "scan.status"
    FAILURE = "scan.failure"
    FAILURE_HISTORY = "scan.failure_history"
    FLAGS = "scan.flags"
    CHECKPOINT = "scan.checkpoint"
    FINAL = "scan.final"
    FINAL_FAILURE = "scan.final_failure"
    REPLICA_OF = "scan.replica_of"
    SEED = "scan.seed"
    INIT_RUN_ID = "scan.init_run_id"
    INIT_TRIAL_ID = "scan.init_trial_id"
    BATCH_SIZE_FINAL = "scan.batch_size_final"
    OOM_RETRIES = "scan.oom_retries"
    # the parent run
    OBJECTIVE = "scan.objective"
    OBJECTIVE_MODE = "scan.objective_mode"
    ALSO = "scan.also"
    TASK = "scan.task"
    RAY_ADDRESS = "scan.ray_address"
    TRIALS_FAILED = "scan.trials_failed"
    DROPPED = "scan.dropped"
    # MLflow's own
    PARENT_RUN_ID = "mlflow.parentRunId"
    NOTE = "mlflow.note.content"
    EXPERIMENT_KIND = "mlflow.experimentKind"  # on the experiment: "custom_model_development" opens on its runs


EXPERIMENT_KIND = "custom_model_development"  # not MLflow's GenAI traces page


PARENT_ROLE = "parent"  # the value of Tag.ROLE on a sweep's parent run
TAG_VALUE_LIMIT = 4000  # characters of a failure text kept in a tag (MLflow's limit is 8000; the tail says why)


class Status:
    """``scan.status`` of a trial run, and of the parent run."""

    RUNNING = "running"
    COMPLETED = "completed"  # reached max_epochs
    STOPPED_EARLY = "stopped_early"  # the scheduler stopped it; MLflow status still FINISHED
    FAILED = "failed"
    TERMINAL = (COMPLETED, STOPPED_EARLY, FAILED)
    # the parent's
    FINISHED = "finished"
    INTERRUPTED = "interrupted"


MLFLOW_STATUS = {Status.COMPLETED: "FINISHED", Status.STOPPED_EARLY: "FINISHED", Status.FAILED: "FAILED"}


class Flag:
    """Entries of the comma list in ``scan.flags``."""

    CHANCE = "chance"  # validation at chance while the training loss fell
    SINGLE_CLASS = "single_class"  # every validation event predicted as one class
    BELOW_REFERENCE = "below_reference"  # no better than the trivial reference predictor


class Artifact:
    """Files in checkpoint folders, on runs, and in ``scans/<name>/``."""

    STATE = "state.pt"
    CONFUSION = "confusion.json"
    PREDICTIONS = "predictions.h5"
    CONFIG = "config.yaml"  # the full resolved trial config
    DROPPED = "dropped.txt"  # on the parent: what MLflow refused for good
    SPACE = "space.yaml"
    SCAN_JSON = "scan.json"
    OPTUNA_SUMMARY = "optuna_study.json"
    CHECKPOINT_DIR = "checkpoint"  # a trial's best state.pt on its run, with `tracking.log_checkpoints: best`
    EXPLAIN_DIR = "explain"  # `scanner explain`'s maps on the run (PNGs, explain.html, explain.json, maps.npz)
    EXPLAIN_INDEX = "explain.json"  # what each map shows: the report reads it
    EXPORT_DIR = "export"  # `scanner export`'s .onnx file on the run


UI_PORT = 5000  # `scanner ui`'s default port (MLflow's own): a report's run links for a local store point there
SCANS_DIR = "scans"  # scans/<name>/ per sweep, scans/optuna.db for every study
OPTUNA_DB = "optuna.db"


def tag_value(text: str) -> str:
    """A long text (a traceback's last lines) cut to what a tag holds: the end, which says why."""
    text = str(text)
    return text if len(text) <= TAG_VALUE_LIMIT else "…" + text[-(TAG_VALUE_LIMIT - 1):]


# --------------------------------------------------------------------------------------------- metric names

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def metric_key(name: str) -> str:
    """A class or target name as it appears inside a metric name: every character other than a letter, a digit,
    ``_``, ``-`` or ``.`` becomes ``_`` (``nue+CC`` -> ``nue_CC``, ``CC(1pi)`` -> ``CC_1pi_``).

    MLflow refuses most punctuation in metric names, and ``/`` would add a level to the name; it also refuses a
    level that is only dots (``.``, ``..``), which becomes underscores. The real names stay in the
    ``scan.class_names`` / ``scan.target_names`` tags, ``confusion.json`` and the report."""
    key = _UNSAFE.sub("_", str(name)) or "_"
    return key if key.strip(".") else "_" * len(key)


# MLflow takes metric names up to 250 characters; the longest name around a class or target key is
# `seeds/syst/<label>/efficiency/<key>_err`, so a key of 100 leaves room for a label of 100.
MAX_METRIC_KEY = 100


def colliding_keys(names: Iterable[str]) -> dict[str, list[str]]:
    """Names that map to the same metric key (``a+b`` and ``a_b``): each key with the names that share it."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(metric_key(name), []).append(str(name))
    return {key: group for key, group in groups.items() if len(group) > 1}


PERF = ("perf/epoch_s", "perf/samples_per_s", "perf/data_wait_frac", "perf/step_ms_p50", "perf/step_ms_p95")
SYS_CPU = ("sys/rss_gb", "sys/cpu_pct")
SYS_GPU = (
    "sys/gpu_mem_allocated_gb",
    "sys/gpu_mem_reserved_gb",
    "sys/gpu_mem_peak_gb",
    "sys/gpu_fragmentation",
    "sys/gpu_cache_slack",
    "sys/gpu_util_pct",
    "sys/gpu_power_w",
    "sys/gpu_mem_peak_reserved_gb",
    "sys/gpu_mem_total_gb",
    "sys/gpu_alloc_retries",
    "sys/gpu_ooms",
    "sys/gpu_proc_mem_gb",
    "sys/gpu_procs_sharing",
    "sys/gpu_proc_util_pct",
)
COMMON = ("train/loss", "val/loss", "train/lr")
EXPORT_MAX_ABS_DIFF = "export/max_abs_diff"  # scanner export's parity check, on the exported run
EXPORT_ARGMAX_AGREEMENT = "export/argmax_agreement"
EXPORT = (EXPORT_MAX_ABS_DIFF, EXPORT_ARGMAX_AGREEMENT)
SWEEP_BEST_OBJECTIVE = "sweep/best_objective"  # on the parent, so sweeps compare (not a best/ name: those rank)
MODEL = ("model/params_total", "model/params_trainable")  # logged once, with the first epoch
REFERENCE_SPLITS = ("val", "test")  # the parent run's ref/<split>/<name>: the trivial predictor, once per sweep
WITH_ERRORS = ("accuracy", "efficiency", "purity", "fom", "resolution68_deg", "bias", "rms")  # they log `<name>_err`
PER_NAME_FAMILIES = ("efficiency", "purity", "fom", "auc", "bias", "rms", "skew")  # `<family>/<class or target key>`
FRACTIONS = ("accuracy", "efficiency", "purity", "fom", "auc")  # in [0, 1] by definition, 1 - x an error rate


# Figures logged once, at step 0: ``<prefix>/<name>``, with ``<name>`` a ``val/`` metric's name without ``val/``.
TEST = "test"  # the held-out test split, after the sweep
SEEDS = "seeds"  # seeds/<prefix>/<name>: the mean over an original and its seed replicas, with _std (ddof 1), _err
SEEDS_TEST = f"{SEEDS}/{TEST}"
SEEDS_N = f"{SEEDS}/n"  # how many runs (the original and its replicas) the seed aggregates are over
SYST = "syst"  # syst/<label>/<name>: a detector variant's figure (scanner evaluate --label)


def syst_prefix(label: str) -> str:
    """``syst/<label>``: the prefix of one detector variant's figures."""
    return f"{SYST}/{label}"


def metric_family(name: str) -> str:
    """The family of a metric name, whatever its prefix (``val/``, ``test/``, ``best/val/``, ``seeds/test/``,
    ``syst/<label>/``, ``ref/val/`` or none) and without its class or target key: ``test/efficiency/nue_CC`` ->
    ``efficiency``, ``val/accuracy`` -> ``accuracy``, ``val/bias/accuracy`` (a target named accuracy) -> ``bias``."""
    parts = name.split("/")
    if len(parts) >= 2 and parts[-2] in PER_NAME_FAMILIES:
        return parts[-2]
    return parts[-1]


def is_fraction(name: str) -> bool:
    """Whether a metric is a fraction (shown in percent, 1 - x an error rate): decided by its family, never by its
    value (a loss of 0.3 lies in [0, 1] too). ``name`` is a metric name, not a real class name with a ``/`` in it."""
    return metric_family(name) in FRACTIONS


def physics_names(task: str, class_names: Iterable[str] = (), target_names: Iterable[str] = ()) -> list[str]:
    """Physics metric names without the ``val/`` prefix (the same set is logged under ``test/``)."""
    if task == "classification":
        names = ["accuracy"]
        for c in map(metric_key, class_names):
            names += [f"efficiency/{c}", f"purity/{c}", f"fom/{c}", f"auc/{c}"]
        return names
    names = ["resolution68_deg"]
    for t in map(metric_key, target_names):
        names += [f"bias/{t}", f"rms/{t}", f"skew/{t}"]
    return names


def with_errors(names: Iterable[str]) -> list[str]:
    """Each name, followed by its ``_err`` where the family has a 1-sigma error (Wilson or bootstrap)."""
    out = []
    for n in names:
        out.append(n)
        if n.split("/")[0] in WITH_ERRORS:
            out.append(n + "_err")
    return out


def logged_metrics(task: str, class_names: Iterable[str] = (), target_names: Iterable[str] = ()) -> set[str]:
    """Every name a trial of this task may log per epoch, including ``best/`` copies of the physics metrics and,
    with EMA, the live model's ``val_live/`` figures."""
    physics = with_errors(physics_names(task, list(class_names), list(target_names)))
    names = set(COMMON) | set(PERF) | set(SYS_CPU) | set(SYS_GPU) | set(MODEL)
    names |= {f"val/{n}" for n in physics}
    names |= {f"val_live/{n}" for n in physics} | {"val_live/loss"}
    names |= {f"best/val/{n}" for n in physics} | {"best/val/loss", "best/epoch"}
    return names


def reference_names(task: str, class_names: Iterable[str] = (), target_names: Iterable[str] = ()) -> set[str]:
    """The names the reference predictor may have (``trainables.reference.reference_metrics``), on the parent run."""
    physics = with_errors(physics_names(task, list(class_names), list(target_names)))
    return {f"ref/{split}/{n}" for split in REFERENCE_SPLITS for n in physics}


def objective_candidates(task: str, class_names: Iterable[str] = (), target_names: Iterable[str] = ()) -> list[str]:
    """Names that make sense as an objective (what the validator suggests)."""
    physics = physics_names(task, list(class_names), list(target_names))
    return ["val/loss"] + [f"val/{n}" for n in physics] + ["perf/samples_per_s", "sys/gpu_mem_peak_gb"]
