"""A real sqlite MLflow store holding a known sweep (four trials, their epochs, a leader with predictions), written
through the real MlflowClient in the scanner's layout, for the report's tests.

    store = make_sweep(tmp_path)                # {'uri', 'parent', 'runs': {name: run_id}, 'experiment_id'}
    make_sweep(tmp_path, specs=[Spec(...)])     # a sweep of your own trials
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from fixtures_tracking import fresh_store
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

CLASSES = ["NC", "nueCC", "numuCC"]
SWEEP = "lartpc-test"


@dataclass
class Spec:
    name: str  # run name
    params: dict
    acc: list[float]  # val/accuracy per epoch (step = epoch, 1-based)
    err: float  # val/accuracy_err, the same every epoch
    status: str = "completed"
    baseline: bool = False
    samples_per_s: float = 1000.0
    failure: str = ""
    test_acc: float | None = None  # logged once under test/ (finals)
    running: bool = False
    extra: dict = field(default_factory=dict)


SPECS = [
    Spec("t00 baseline resnet18 ce lr=1e-3", {"model": "resnet18", "loss": "ce", "lr": "0.001"},
         [0.70, 0.78, 0.80], 0.010, baseline=True, samples_per_s=1500, test_acc=0.79),
    Spec("t01 resnet34 focal lr=3e-3", {"model": "resnet34", "loss": "focal", "lr": "0.003"},
         [0.80, 0.86, 0.85], 0.010, samples_per_s=900, test_acc=0.845),
    Spec("t02 resnet18 focal lr=1e-2", {"model": "resnet18", "loss": "focal", "lr": "0.01"},
         [0.82, 0.85, 0.84], 0.008, samples_per_s=1400, test_acc=0.84),
    Spec("t03 mobilenet ce lr=1e-4", {"model": "mobilenet", "loss": "ce", "lr": "0.0001"},
         [0.75, 0.83, 0.83], 0.005, samples_per_s=2000),
    Spec("t04 mobilenet ls lr=5e-2", {"model": "mobilenet", "loss": "label_smoothing", "lr": "0.05"},
         [0.70], 0.020, status="stopped_early", samples_per_s=3000),
    Spec("t05 resnet34 ce lr=1e-1", {"model": "resnet34", "loss": "ce", "lr": "0.1"},
         [], 0.0, status="failed", failure="diverged: NaN loss at epoch 1"),
    Spec("t06 resnet18 ls lr=3e-4", {"model": "resnet18", "loss": "label_smoothing", "lr": "0.0003"},
         [0.84, 0.845, 0.83], 0.001, samples_per_s=1450),
    Spec("t07 resnet34 ls lr=2e-3", {"model": "resnet34", "loss": "label_smoothing", "lr": "0.002"},
         [0.82, 0.78], 0.006, samples_per_s=800),
]


def epoch_metrics(spec: Spec, epoch: int, best_acc_epoch: int) -> dict[str, float]:
    acc = spec.acc[epoch - 1]
    m = {"train/loss": 1.0 / epoch, "val/loss": 1.2 / epoch - acc / 10, "train/lr": float(spec.params["lr"]) / epoch,
         "val/accuracy": acc, "val/accuracy_err": spec.err, "perf/samples_per_s": spec.samples_per_s + epoch,
         "perf/data_wait_frac": 0.1, "perf/epoch_s": 5.0, "sys/rss_gb": 1.5, "sys/cpu_pct": 180.0}
    for k, c in enumerate(CLASSES):
        m[f"val/efficiency/{c}"] = acc - 0.01 * k
        m[f"val/efficiency/{c}_err"] = spec.err
        m[f"val/purity/{c}"] = acc - 0.02 * k
        m[f"val/purity/{c}_err"] = spec.err
    best = spec.acc[best_acc_epoch - 1]
    for k, c in enumerate(CLASSES):  # the values at the best epoch so far
        m[f"best/val/efficiency/{c}"] = best - 0.01 * k
        m[f"best/val/efficiency/{c}_err"] = spec.err
        m[f"best/val/purity/{c}"] = best - 0.02 * k
        m[f"best/val/purity/{c}_err"] = spec.err
    m["best/val/accuracy"], m["best/val/accuracy_err"], m["best/epoch"] = best, spec.err, best_acc_epoch
    return m


def best_epoch(acc: list[float]) -> int:
    return int(np.argmax(acc)) + 1


def write_predictions(path: Path, n: int = 300, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + 2.0 * np.eye(3)[label]
    scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    with h5py.File(path, "w") as f:
        f["index"] = np.arange(n)
        f["label"] = label
        f["scores"] = scores.astype(np.float32)
        f["energy"] = rng.uniform(0.5, 5.0, n)
        f.attrs["class_names"] = CLASSES


def write_confusion(path: Path) -> list[list[int]]:
    counts = [[80, 10, 10], [5, 90, 5], [8, 7, 85]]
    path.write_text(json.dumps({"class_names": CLASSES, "counts": counts}))
    return counts


def make_sweep(tmp_path: Path, name: str = SWEEP, specs=SPECS, also=True, parent_status="finished",
               uri: str | None = None, space_yaml: str | None = None, varied=("model", "loss", "lr")) -> dict:
    """Write the sweep (into ``uri``, else a new sqlite store); returns {'uri', 'parent', 'runs': {name: run id}}.

    ``space_yaml``: logged as the parent's ``space.yaml`` artifact, as the scanner does."""
    local = uri is None
    uri = uri or fresh_store(tmp_path)
    client = MlflowClient(uri)
    location = (tmp_path / "artifacts" / name).as_uri() if local else None  # a server proxies its own artifacts
    exp = client.create_experiment(name, artifact_location=location)
    ptags = {"scan.role": "parent", "scan.name": name, "scan.objective": "val/accuracy",
             "scan.objective_mode": "max", "scan.task": "classification", "scan.status": parent_status,
             "scan.class_names": json.dumps(CLASSES),
             "scan.also": json.dumps([{"metric": "perf/samples_per_s", "mode": "max"}] if also else [])}
    parent = client.create_run(exp, run_name=name, tags=ptags)
    if space_yaml is not None:
        (tmp_path / "space.yaml").write_text(space_yaml)
        client.log_artifact(parent.info.run_id, str(tmp_path / "space.yaml"))
    runs = {}
    now = int(time.time() * 1000)
    for i, s in enumerate(specs):
        tags = {"mlflow.parentRunId": parent.info.run_id, "scan.name": name, "scan.trial_id": f"trial_{i:05d}",
                "scan.baseline": str(s.baseline).lower(), "scan.status": s.status,
                "scan.varied": json.dumps(list(varied)), "scan.class_names": json.dumps(CLASSES)}
        if s.failure:
            tags["scan.failure"] = s.failure
        run = client.create_run(exp, run_name=s.name, tags=tags)
        rid = run.info.run_id
        metrics = []
        for e in range(1, len(s.acc) + 1):
            for k, v in epoch_metrics(s, e, best_epoch(s.acc[:e])).items():
                metrics.append(Metric(k, float(v), now + e, e))
        if s.test_acc is not None:
            metrics += [Metric("test/accuracy", s.test_acc, now + 99, 0), Metric("test/accuracy_err", s.err, now, 0)]
            metrics += [Metric(f"test/efficiency/{c}", s.test_acc - 0.01 * k, now, 0) for k, c in enumerate(CLASSES)]
        params = [Param(k, str(v)) for k, v in {**s.params, "batch_size": "64", "ema_decay": "0.0"}.items()]
        client.log_batch(rid, metrics=metrics, params=params, tags=[RunTag(k, str(v)) for k, v in s.extra.items()])
        runs[s.name] = rid
        if not s.running:
            client.set_terminated(rid, "FAILED" if s.status == "failed" else "FINISHED")
    leader = runs[SPECS[1].name] if specs is SPECS else None
    if leader:
        for split in ("val", "test"):
            d = tmp_path / "art" / split
            d.mkdir(parents=True)
            write_confusion(d / "confusion.json")
            write_predictions(d / "predictions.h5", seed=1 if split == "test" else 0)
            client.log_artifacts(leader, str(d), split)
    if parent_status != "running":
        client.set_terminated(parent.info.run_id, "FINISHED")
    return {"uri": uri, "parent": parent.info.run_id, "runs": runs, "experiment_id": exp}
