"""Replaying journal ops into MLflow: what the writer's thread does with each op, and what it does when MLflow says no.

A refused batch is split in halves until each refused record stands alone: MLflow takes everything else, and the
refused records are dropped with MLflow's reason (the journal keeps the list). A transient error or a bug is raised
to the writer's loop: the first is retried, the second stops the writer.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import NamedTuple, Union

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from scanner.tracking.faults import reason, refused
from scanner.tracking.journal import Dropped, Journal, Op
from scanner.tracking.store import find_runs_by_tag
from trainables.contract import Tag

MAX_BATCH_METRICS = 1000  # MLflow's log_batch limit
MAX_BATCH_PARAMS = 100  # MLflow's log_batch limit
MAX_BATCH_TAGS = 100  # MLflow's log_batch limit
BATCHED = ("metrics", "params", "tags")

Item = Union[Metric, Param, RunTag]


class Outcome(NamedTuple):
    """What one step of the replay dealt with: ops to forget, records MLflow refused, spool folders to remove once
    the journal has forgotten their op."""

    done: list[Op]
    dropped: list[Dropped]
    spooled: list[Path]


class Replay:
    def __init__(self, client: MlflowClient, journal: Journal):
        self.client = client
        self.journal = journal

    def next(self, ops: list[Op]) -> Outcome:
        """Apply the first op, or a batch of consecutive metric/param/tag ops of one run."""
        first = ops[0]
        batch = leading_batch(ops) if first.kind in BATCHED else [first]
        run_id = self.journal.run_id(first.run_key)
        if first.kind != "start" and run_id is None:
            why = f"no MLflow run for '{first.run_key}' (its start was refused, or it was never started)"
            return Outcome(batch, [Dropped(first.run_key, None, describe(op), why) for op in batch], [])
        if first.kind in BATCHED:
            refusals = self.log_items(run_id, batch_items(batch))
            return Outcome(batch, [Dropped(first.run_key, run_id, describe_item(i), r) for i, r in refusals], [])
        return self.single(first, run_id)

    def log_items(self, run_id: str, items: list[Item]) -> list[tuple[Item, str]]:
        """Log what MLflow takes; return what it refused, each with its reason (the batch is bisected)."""
        try:
            self.client.log_batch(
                run_id,
                metrics=[i for i in items if isinstance(i, Metric)],
                params=[i for i in items if isinstance(i, Param)],
                tags=[i for i in items if isinstance(i, RunTag)],
            )
            return []
        except (MlflowException, OSError) as exc:
            if not refused(exc):
                raise
            if len(items) <= 1:
                return [(item, reason(exc)) for item in items]
        middle = len(items) // 2
        return self.log_items(run_id, items[:middle]) + self.log_items(run_id, items[middle:])

    def single(self, op: Op, run_id: str | None) -> Outcome:
        if op.kind == "artifacts":
            return self.artifacts(op, run_id)
        try:
            if op.kind == "start":
                self.start(op)
            elif op.kind == "end":
                self.client.set_terminated(run_id, status=op.body["status"])
            elif op.kind == "delete_tags":
                for key in op.body["keys"]:
                    self.delete_tag(run_id, key)
            elif op.kind == "delete_run":
                self.client.delete_run(run_id)
            elif op.kind == "inputs":
                self.client.log_inputs(run_id, datasets=[input_from_body(op.body)])
            else:
                raise ValueError(f"journal op {op.seq} has an unknown kind {op.kind!r}")
        except (MlflowException, OSError) as exc:
            if not refused(exc):
                raise
            return Outcome([op], [Dropped(op.run_key, run_id, describe(op), reason(exc))], [])
        return Outcome([op], [], [])

    def start(self, op: Op) -> None:
        """Find the run by its tags (a retried or resumed trial keeps its one run), or create it; RUNNING; tags."""
        body = op.body
        tags = dict(body["tags"])
        parent = self.journal.run_id(body["parent_key"]) if body.get("parent_key") else None
        if parent:
            tags[Tag.PARENT_RUN_ID] = parent
        found = find_runs_by_tag(self.client, body["experiment_id"], body["find_by"]) if body["find_by"] else []
        if found:
            run_id = found[0].info.run_id
            if found[0].info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
        else:
            run_id = self.client.create_run(body["experiment_id"], tags=tags, run_name=body["run_name"]).info.run_id
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self.journal.set_run_id(op.run_key, run_id)

    def delete_tag(self, run_id: str, key: str) -> None:
        """A tag that is already gone (the op replayed after a crash) is what was asked for, not a refusal."""
        try:
            self.client.delete_tag(run_id, key)
        except MlflowException as exc:
            if not refused(exc) or key in self.client.get_run(run_id).data.tags:
                raise

    def artifacts(self, op: Op, run_id: str) -> Outcome:
        """Each spooled file; a refused file is dropped alone. The spool folder goes once the op is forgotten."""
        folder, path = Path(op.body["folder"]), op.body["artifact_path"]
        if not folder.is_dir():
            why = f"its spooled copy {folder} is gone"
            return Outcome([op], [Dropped(op.run_key, run_id, describe(op), why)], [])
        dropped = []
        for f in sorted(folder.iterdir()):
            try:
                self.client.log_artifact(run_id, str(f), path)
            except (MlflowException, OSError) as exc:
                if not refused(exc):
                    raise
                dropped.append(Dropped(op.run_key, run_id, f"artifact {path}/{f.name}".replace("//", "/"), reason(exc)))
        return Outcome([op], dropped, [folder])


def remove_spooled(folders: list[Path]) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def leading_batch(ops: list[Op]) -> list[Op]:
    """Consecutive metric/param/tag ops of the first op's run, within log_batch's limits. A param logged again ends
    the batch: MLflow refuses a repeated key in one batch, and each value must be offered in turn."""
    run_key = ops[0].run_key
    batch: list[Op] = []
    n_metrics = n_tags = 0
    params: set[str] = set()
    for op in ops:
        if op.run_key != run_key or op.kind not in BATCHED:
            break
        if op.kind == "params" and params & set(op.body):
            break
        n_metrics += len(op.body["values"]) if op.kind == "metrics" else 0
        n_tags += len(op.body) if op.kind == "tags" else 0
        params |= set(op.body) if op.kind == "params" else set()
        if batch and (n_metrics > MAX_BATCH_METRICS or len(params) > MAX_BATCH_PARAMS or n_tags > MAX_BATCH_TAGS):
            break
        batch.append(op)
    return batch


def batch_items(batch: list[Op]) -> list[Item]:
    """The records of a batch; a tag set twice keeps its last value, as setting it twice would."""
    metrics, params, tags = [], [], {}
    for op in batch:
        if op.kind == "metrics":
            metrics += [Metric(k, v, op.body["ts"], op.body["step"]) for k, v in op.body["values"].items()]
        elif op.kind == "params":
            params += [Param(k, v) for k, v in op.body.items()]
        else:
            tags.update(op.body)
    return metrics + params + [RunTag(k, v) for k, v in tags.items()]


def describe_item(item: Item) -> str:
    if isinstance(item, Metric):
        return f"metric {item.key}={item.value} step {item.step}"
    kind = "param" if isinstance(item, Param) else "tag"
    return f"{kind} {item.key}={str(item.value)[:200]}"


def input_body(dataset: DatasetInput) -> dict:
    """A dataset input as JSON for the journal."""
    d = dataset.dataset
    return {"dataset": {"name": d.name, "digest": d.digest, "source_type": d.source_type, "source": d.source,
                        "schema": d.schema, "profile": d.profile},
            "tags": {tag.key: tag.value for tag in dataset.tags}}


def input_from_body(body: dict) -> DatasetInput:
    return DatasetInput(Dataset(**body["dataset"]), tags=[InputTag(k, v) for k, v in body["tags"].items()])


def describe(op: Op) -> str:
    body = op.body
    if op.kind == "metrics":
        return f"metrics step {body['step']}: " + ", ".join(f"{k}={v}" for k, v in body["values"].items())
    if op.kind in ("params", "tags"):
        return f"{op.kind} " + ", ".join(f"{k}={str(v)[:200]}" for k, v in body.items())
    if op.kind == "start":
        return f"start of run '{body['run_name']}'"
    if op.kind == "artifacts":
        return f"artifacts under '{body['artifact_path']}'"
    if op.kind == "end":
        return f"end of run ({body['status']})"
    if op.kind == "delete_tags":
        return "deletion of tags " + ", ".join(body["keys"])
    if op.kind == "inputs":
        return f"dataset input '{body['dataset']['name']}'"
    return op.kind.replace("_", " ")
