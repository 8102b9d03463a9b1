"""``scanner evaluate``'s work: the runs of a TARGET, their checkpoints on detector variants, logged as ``syst/``.

    checkpoints = load_checkpoints(target_runs("finals-of:demo", uri, client), "finals-of:demo", uri, client)
    jobs = plan_jobs(checkpoints, [("noisy", Path("noisy.h5"))], split=None)   # every check, nothing run yet
    results = evaluate_jobs(jobs, scratch)                                      # nothing logged yet
    log_results(client, results, seed_aggregates(results))

Every variant and every run is checked before anything is evaluated, and everything is evaluated before anything is
logged: a variant that is not the training data differently detected costs one line and leaves MLflow untouched.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import yaml
from mlflow.entities import Metric, Run
from mlflow.tracking import MlflowClient

from reports import load_sweep
from scanner.seeds import seed_aggregate
from scanner.targets import checkpoint_of, resolve_run
from scanner.tracking import MAX_BATCH_METRICS, checkpoint_artifact_files, search_all
from trainables.checkpoint import load_state
from trainables.config import DataConfig
from trainables.contract import SEEDS, SEEDS_N, SEEDS_TEST, Artifact, Status, Tag, syst_prefix
from trainables.errors import BadInput
from trainables.variants import (
    TrainedOn,
    Variant,
    check_compatible,
    default_split,
    evaluate_variant,
    open_variant,
    split_indices,
    trained_on,
)

FINALS_OF = "finals-of:"
HEADLINE = {"classification": "accuracy", "regression": "resolution68_deg"}  # the figure the shift table shows


# --------------------------------------------------------------------------------------------- which runs


def target_runs(target: str, tracking_uri: str, client: MlflowClient) -> list[Run]:
    """``finals-of:<sweep>``: the baseline, the finalists and their seed replicas of the sweep's latest instance;
    ``run:<id>``, a bare id or ``best-of:<sweep>``: that one run."""
    if target.startswith(FINALS_OF):
        return finals_of(target[len(FINALS_OF):], tracking_uri, client, target)
    return [client.get_run(resolve_run(target, tracking_uri).run_id)]


def finals_of(sweep_name: str, tracking_uri: str, client: MlflowClient, shown: str) -> list[Run]:
    sweep = load_sweep(sweep_name, tracking_uri)  # the latest instance, as the report picks it
    if sweep.parent_run_id is None:
        raise BadInput(f"'{shown}': sweep '{sweep_name}' has no parent run to find its finals by; "
                       "evaluate its runs one by one with run:<id>")
    parent = f"tags.`{Tag.PARENT_RUN_ID}` = '{sweep.parent_run_id}'"
    found: dict[str, Run] = {}
    for clause in (f"tags.`{Tag.FINAL}` = 'true'", f"tags.`{Tag.BASELINE}` = 'true'", f"tags.`{Tag.REPLICA_OF}` LIKE '%'"):
        found.update((r.info.run_id, r) for r in search_all(client, sweep.experiment_id, f"{parent} and {clause}"))
    runs = []
    for run in found.values():
        status = run.data.tags.get(Tag.STATUS)
        if not run.data.tags.get(Tag.CHECKPOINT) or status in (Status.FAILED, Status.RUNNING):
            print(f"skipped {run.info.run_name}: {status or 'no checkpoint'}", file=sys.stderr)
            continue
        runs.append(run)
    if not runs:
        raise BadInput(f"'{shown}': sweep '{sweep_name}' has no finals with a checkpoint yet (runs tagged "
                       f"{Tag.FINAL}=true); wait for the sweep to finish, or use best-of:{sweep_name}")
    return in_group_order(runs)


def in_group_order(runs: list[Run]) -> list[Run]:
    """The baseline's group first, then each original followed by its replicas, by seed."""
    baselines = {r.data.tags.get(Tag.TRIAL_ID) for r in runs
                 if r.data.tags.get(Tag.BASELINE) == "true" and not r.data.tags.get(Tag.REPLICA_OF)}

    def key(run: Run) -> tuple:
        tags = run.data.tags
        original = tags.get(Tag.REPLICA_OF) or tags.get(Tag.TRIAL_ID, "")
        seed = tags.get(Tag.SEED, "")
        replica_seed = (int(seed) if seed.isdigit() else 0) if tags.get(Tag.REPLICA_OF) else -1
        return original not in baselines, original, replica_seed, run.info.run_name or ""

    return sorted(runs, key=key)


# --------------------------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """One run to evaluate: where its weights are and what they were trained on (the state itself is reloaded
    when evaluated: a dozen ResNet states with their optimizers would not fit in memory at once)."""

    run: Run
    folder: Path
    epoch: int
    trained: TrainedOn
    train_data: DataConfig | None

    @property
    def name(self) -> str:
        return self.run.info.run_name or self.run.info.run_id[:8]

    @property
    def short_name(self) -> str:
        """``t03``, ``t00 baseline``, ``t03 seed 1``: the run name's full config is too wide for a table."""
        tags = self.run.data.tags
        words = [self.name.split()[0]]
        if tags.get(Tag.BASELINE) == "true":
            words.append("baseline")
        if tags.get(Tag.REPLICA_OF):
            words.append(f"seed {tags.get(Tag.SEED, '?')}")
        return " ".join(words)

    @property
    def who(self) -> str:
        return f"run '{self.name}' ({self.run.info.run_id[:8]})"

    @property
    def trial_id(self) -> str:
        return self.run.data.tags.get(Tag.TRIAL_ID, self.run.info.run_id)

    @property
    def replica_of(self) -> str | None:
        return self.run.data.tags.get(Tag.REPLICA_OF) or None


def load_checkpoints(runs: list[Run], target: str, tracking_uri: str, client: MlflowClient) -> list[Checkpoint]:
    """Each run's checkpoint: its folder when here, else the copy the run carries, fetched as ``export`` fetches."""
    spaces: dict[str, DataConfig | None] = {}
    out = []
    for run in runs:
        folder = Path(checkpoint_of(run, tracking_uri, target))
        state = load_state(folder)
        train_data = training_data(run, client, state["meta"], spaces)
        out.append(Checkpoint(run, folder, int(state.get("epoch") or 0), trained_on(state, train_data), train_data))
    return out


def training_data(run: Run, client: MlflowClient, meta: dict, spaces: dict[str, DataConfig | None]) -> DataConfig | None:
    """The training data config: the sweep's ``space.yaml`` (dataset names and ``select`` included), else the file
    the checkpoint names, else None."""
    parent = run.data.tags.get(Tag.PARENT_RUN_ID)
    if parent and parent not in spaces:
        spaces[parent] = _space_data(client, parent)
    if parent and spaces[parent] is not None:
        return spaces[parent]
    return DataConfig(path=str(meta["data_path"])) if meta.get("data_path") else None


def _space_data(client: MlflowClient, parent_run_id: str) -> DataConfig | None:
    if Artifact.SPACE not in {a.path for a in client.list_artifacts(parent_run_id)}:
        return None
    with tempfile.TemporaryDirectory(prefix="scanner-space-") as tmp:
        raw = yaml.safe_load(Path(client.download_artifacts(parent_run_id, Artifact.SPACE, tmp)).read_text())
    data = raw.get("data") if isinstance(raw, dict) else None
    return DataConfig.from_dict(data, where=f"space.yaml of run {parent_run_id}: data") if data else None


# --------------------------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class Job:
    checkpoint: Checkpoint
    label: str
    variant: Variant
    split: str
    indices: np.ndarray


def plan_jobs(checkpoints: list[Checkpoint], labelled: list[tuple[str, Path]], split: str | None) -> list[Job]:
    """Open every variant under each run's training data config and check it: BadInput before anything runs."""
    opened: dict[tuple, Variant] = {}
    jobs = []
    for label, path in labelled:
        for ck in checkpoints:
            key = (str(path), json.dumps(dataclasses.asdict(ck.train_data), default=str, sort_keys=True)
                   if ck.train_data else None, ck.trained.task)
            if key not in opened:
                opened[key] = open_variant(path, ck.train_data, ck.trained.task)
            variant = opened[key]
            check_compatible(ck.trained, variant, ck.who)
            chosen = split or default_split(variant)
            jobs.append(Job(ck, label, variant, chosen, split_indices(variant, chosen)))
    return jobs


@dataclass(frozen=True)
class Result:
    job: Job
    metrics: dict[str, float]  # without prefix: loss, accuracy, efficiency/NC, ..., with _err
    artifacts: list[Path]


def evaluate_jobs(jobs: list[Job], scratch: Path, say: Callable[[str], None] = print) -> list[Result]:
    results = []
    for i, job in enumerate(jobs):
        out_dir = Path(scratch) / f"{i:04d}"
        state = load_state(job.checkpoint.folder)
        metrics = evaluate_variant(state, job.variant, job.indices, job.checkpoint.trained.pixel_scale, out_dir)
        del state
        results.append(Result(job, metrics, checkpoint_artifact_files(out_dir)))
        figure = HEADLINE[job.checkpoint.trained.task]
        say(f"evaluated {job.checkpoint.name} on {job.label} ({job.split} split, {len(job.indices)} events): "
            f"{figure} {metrics.get(figure, float('nan')):.4g}")
    return results


def seed_aggregates(results: list[Result]) -> dict[tuple[str, str], dict[str, float]]:
    """(original's run id, label) -> ``seeds/syst/<label>/...`` over the original and its replicas evaluated here.
    ``seeds/n`` stays the sweep's own (logged with ``seeds/test/``)."""
    groups: dict[tuple[str, str], list[Result]] = {}
    originals = {(r.job.checkpoint.trial_id, r.job.label): r for r in results if r.job.checkpoint.replica_of is None}
    for r in results:
        trial = r.job.checkpoint.replica_of or r.job.checkpoint.trial_id
        if (trial, r.job.label) in originals:
            groups.setdefault((trial, r.job.label), []).append(r)
    out = {}
    for (trial, label), members in groups.items():
        if len(members) < 2:
            continue
        aggregate = seed_aggregate([m.metrics for m in members], f"{SEEDS}/{syst_prefix(label)}/")
        aggregate.pop(SEEDS_N)
        out[(originals[(trial, label)].job.checkpoint.run.info.run_id, label)] = aggregate
    return out


# --------------------------------------------------------------------------------------------- MLflow


def log_results(client: MlflowClient, results: list[Result], aggregates: dict[tuple[str, str], dict[str, float]]) -> None:
    """``syst/<label>/<name>`` and the ``syst/<label>/`` artifacts on each run, the seed means on the originals,
    all at the step of the evaluated checkpoint's epoch."""
    epochs = {r.job.checkpoint.run.info.run_id: r.job.checkpoint.epoch for r in results}
    for r in results:
        run_id = r.job.checkpoint.run.info.run_id
        prefix = syst_prefix(r.job.label)
        _log_metrics(client, run_id, {f"{prefix}/{k}": v for k, v in r.metrics.items()}, epochs[run_id])
        for path in r.artifacts:
            client.log_artifact(run_id, str(path), prefix)
    for (run_id, _label), metrics in aggregates.items():
        _log_metrics(client, run_id, metrics, epochs[run_id])


def _log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int) -> None:
    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    for start in range(0, len(batch), MAX_BATCH_METRICS):
        client.log_batch(run_id, metrics=batch[start:start + MAX_BATCH_METRICS])


# --------------------------------------------------------------------------------------------- the table


def _value(value: float | None, err: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.4f}" + (f" ± {err:.4f}" if err is not None and math.isfinite(err) else "")


def shift_table(results: list[Result], aggregates: dict[tuple[str, str], dict[str, float]]) -> list[str]:
    """One line per run and variant: the headline figure on the nominal test split (± its statistical error), on
    the variant, and the shift; then one line per seed group: the means over the seeds (± the seed spread)."""
    rows = [("run", "variant", "figure", "nominal (test)", "on the variant", "shift")]
    for r in results:
        figure, logged = HEADLINE[r.job.checkpoint.trained.task], r.job.checkpoint.run.data.metrics
        nominal, value = logged.get(f"test/{figure}"), r.metrics.get(figure)
        rows.append((r.job.checkpoint.short_name, r.job.label, figure, _value(nominal, logged.get(f"test/{figure}_err")),
                     _value(value, r.metrics.get(f"{figure}_err")), _shift(nominal, value)))
    by_run = {r.job.checkpoint.run.info.run_id: r.job.checkpoint for r in results}
    for (run_id, label), aggregate in aggregates.items():
        ck = by_run[run_id]
        figure, logged = HEADLINE[ck.trained.task], ck.run.data.metrics
        seeds = 1 + sum(r.job.label == label and r.job.checkpoint.replica_of == ck.trial_id for r in results)
        nominal, variant = f"{SEEDS_TEST}/{figure}", f"{SEEDS}/{syst_prefix(label)}/{figure}"
        mean_nominal, mean = logged.get(nominal), aggregate.get(variant)
        rows.append((f"{ck.short_name}: mean of {seeds} seeds (± spread)", label, figure,
                     _value(mean_nominal, logged.get(f"{nominal}_std")),
                     _value(mean, aggregate.get(f"{variant}_std")), _shift(mean_nominal, mean)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def _shift(nominal: float | None, value: float | None) -> str:
    if nominal is None or value is None or not (math.isfinite(nominal) and math.isfinite(value)):
        return "—"
    return f"{value - nominal:+.4f}"
