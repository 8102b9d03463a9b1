"""A hand-built MLflow store with everything a finished sweep can hold, written through the real MlflowClient in
the scanner's layout: the reference predictor on the parent, flags, finalists with test predictions on shared
events, seed replicas and their aggregates, systematic variants, GPU telemetry, a class name that is not a metric
key (``nue+CC``), ``best/`` figures undefined at the best epoch (NaN, and an older store's stale value), and HTML in
a parameter value. Tests compute what the report must show from ``RICH`` directly.

    store = make_rich_sweep(tmp_path)           # {'uri', 'parent', 'runs': {label: run_id}, 'experiment_id'}
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from fixtures_tracking import fresh_store
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

RICH_SWEEP = "rich"
RICH_CLASSES = ["NC", "nue+CC", "numuCC"]  # nue+CC: metric key nue_CC
KEYS = ["NC", "nue_CC", "numuCC"]
TEST_EVENTS = 600
SEEDS = 3
HOSTILE = "<script>alert('x')</script>"
REFERENCE = {"ref/val/accuracy": 0.36, "ref/val/accuracy_err": 0.01, "ref/test/accuracy": 0.35,
             "ref/test/accuracy_err": 0.01}
GPU = {"sys/gpu_mem_peak_reserved_gb": 30.5, "sys/gpu_mem_total_gb": 40.0, "sys/gpu_alloc_retries": 2.0,
       "sys/gpu_ooms": 0.0, "sys/gpu_procs_sharing": 2.0, "sys/gpu_proc_mem_gb": 14.25, "sys/gpu_proc_util_pct": 41.0,
       "sys/gpu_util_pct": 85.0, "sys/gpu_mem_peak_gb": 28.0, "perf/step_ms_p50": 12.5, "perf/step_ms_p95": 19.0}


@dataclass
class RichTrial:
    label: str
    acc: list[float]  # val/accuracy per epoch
    params: dict
    baseline: bool = False
    quality: float | None = None  # a finalist: its test predictions' separation (None: not a finalist)
    flags: str = ""
    syst_shift: dict = field(default_factory=dict)  # variant -> accuracy shift of the variant
    undefined_at_best: str = ""  # "nan": logged NaN at the best epoch; "stale": not logged there (an older store)
    gpu: bool = False


RICH = [
    RichTrial("t00", [0.70, 0.76, 0.78], {"model": "resnet18", "loss": "ce", "lr": "0.001"}, baseline=True,
              quality=1.2, syst_shift={"noisy": -0.05, "deadwires": -0.02}),
    RichTrial("t01", [0.80, 0.88, 0.86], {"model": "resnet34", "loss": "focal", "lr": "0.003"}, quality=2.2,
              syst_shift={"noisy": -0.04, "deadwires": -0.10}, gpu=True),
    RichTrial("t02", [0.82, 0.87, 0.85], {"model": "resnet18", "loss": "focal", "lr": "0.01"}, quality=2.0,
              syst_shift={"noisy": -0.04, "deadwires": -0.01}),
    RichTrial("t03", [0.60, 0.66, 0.70], {"model": "mobilenet", "loss": "ce", "lr": "0.0001"},
              undefined_at_best="stale"),
    RichTrial("t04", [0.33, 0.34, 0.34], {"model": "mobilenet", "loss": "ce", "lr": "0.05"},
              flags="chance,single_class,below_reference"),
    RichTrial("t05", [0.65, 0.69, 0.72], {"model": "resnet34", "loss": HOSTILE, "lr": "0.02"},
              undefined_at_best="nan"),
]


def shared_events(seed: int = 12345) -> dict[str, np.ndarray]:
    """The shared test events: labels, energies (a lepton energy too) and event weights."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, len(RICH_CLASSES), TEST_EVENTS)
    energy = rng.uniform(0.5, 5.0, TEST_EVENTS)
    return {"label": label, "energy": energy, "lepton_energy": energy * rng.uniform(0.3, 0.9, TEST_EVENTS),
            "weights": rng.uniform(0.5, 1.5, TEST_EVENTS)}


def finalist_scores(quality: float, seed: int) -> np.ndarray:
    events = shared_events()
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(TEST_EVENTS, 3)) + quality * np.eye(3)[events["label"]]
    return np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


def weighted_accuracy(scores: np.ndarray) -> float:
    e = shared_events()
    return float(np.average(scores.argmax(1) == e["label"], weights=e["weights"]))


def write_predictions_file(path: Path, scores: np.ndarray, shuffle_seed: int | None = None) -> None:
    """predictions.h5 as the trainer writes it; ``shuffle_seed`` stores the events in another order (pairing must
    go by ``index``)."""
    e = shared_events()
    order = np.arange(TEST_EVENTS) if shuffle_seed is None else np.random.default_rng(shuffle_seed).permutation(
        TEST_EVENTS)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["index"] = np.arange(TEST_EVENTS)[order]
        f["label"] = e["label"][order]
        f["scores"] = scores[order].astype(np.float32)
        f["weights"] = e["weights"][order].astype(np.float32)
        f["energy"] = e["energy"][order]
        f["lepton_energy"] = e["lepton_energy"][order]
        f.attrs["class_names"] = RICH_CLASSES


def seed_scores(trial: RichTrial, seed: int) -> np.ndarray:
    return finalist_scores(trial.quality, seed=1000 * int(trial.label[1:]) + seed)


def seed_accuracies(trial: RichTrial) -> list[float]:
    """The test accuracy of each seed (seed 0 = the original), as logged."""
    return [weighted_accuracy(seed_scores(trial, s)) for s in range(SEEDS)]


def _epoch_metrics(t: RichTrial, epoch: int) -> dict[str, float]:
    acc = t.acc[epoch - 1]
    best_epoch = int(np.argmax(t.acc[:epoch])) + 1
    best = t.acc[best_epoch - 1]
    m = {"train/loss": 1.0 / epoch, "val/loss": 1.2 / epoch, "train/lr": float(t.params["lr"]),
         "val/accuracy": acc, "val/accuracy_err": 0.01, "perf/samples_per_s": 1000.0 + epoch,
         "perf/data_wait_frac": 0.1, "sys/rss_gb": 1.5, "sys/cpu_pct": 150.0,
         "best/val/accuracy": best, "best/val/accuracy_err": 0.01, "best/epoch": float(best_epoch)}
    for k, key in enumerate(KEYS):
        for kind, off in (("efficiency", 0.01), ("purity", 0.02)):
            m[f"val/{kind}/{key}"], m[f"val/{kind}/{key}_err"] = acc - off * k, 0.01
            m[f"best/val/{kind}/{key}"], m[f"best/val/{kind}/{key}_err"] = best - off * k, 0.01
    if t.gpu:
        m.update(GPU)
    if t.undefined_at_best and epoch == len(t.acc):  # the last epoch is the best: purity/NC undefined there
        m.pop("val/purity/NC"), m.pop("val/purity/NC_err")
        if t.undefined_at_best == "nan":
            m["best/val/purity/NC"], m["best/val/purity/NC_err"] = math.nan, math.nan
        else:
            m.pop("best/val/purity/NC"), m.pop("best/val/purity/NC_err")
    return m


def _final_metrics(scores: np.ndarray) -> dict[str, float]:
    acc = weighted_accuracy(scores)
    return {"test/accuracy": acc, "test/accuracy_err": math.sqrt(acc * (1 - acc) / TEST_EVENTS)}


def make_rich_sweep(tmp_path: Path, name: str = RICH_SWEEP, uri: str | None = None) -> dict:
    uri = uri or fresh_store(tmp_path)
    client = MlflowClient(uri)
    exp = client.create_experiment(name, artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(exp, run_name=name, tags={
        "scan.role": "parent", "scan.name": name, "scan.instance": "i1", "scan.objective": "val/accuracy",
        "scan.objective_mode": "max", "scan.task": "classification", "scan.status": "finished",
        "scan.class_names": json.dumps(RICH_CLASSES), "scan.also": "[]"})
    pid = parent.info.run_id
    client.log_batch(pid, metrics=[Metric(k, v, 0, 0) for k, v in REFERENCE.items()])
    now, runs = int(time.time() * 1000), {}
    for i, t in enumerate(RICH):
        tags = {"mlflow.parentRunId": pid, "scan.name": name, "scan.instance": "i1", "scan.trial_id": f"trial_{i}",
                "scan.baseline": str(t.baseline).lower(), "scan.status": "completed",
                "scan.varied": json.dumps(["model", "loss", "lr"]), "scan.class_names": json.dumps(RICH_CLASSES)}
        if t.flags:
            tags["scan.flags"] = t.flags
        name_words = " ".join(v for v in t.params.values() if v != HOSTILE)
        rid = client.create_run(exp, run_name=f"{t.label}{' baseline' if t.baseline else ''} {name_words}",
                                tags=tags).info.run_id
        metrics = [Metric(k, float(v), now + e, e) for e in range(1, len(t.acc) + 1)
                   for k, v in _epoch_metrics(t, e).items()]
        client.log_batch(rid, metrics=metrics, params=[Param(k, v) for k, v in t.params.items()])
        if t.quality is not None:
            _add_final(client, exp, pid, tmp_path / "staging" / t.label, t, rid, f"trial_{i}")
        client.set_terminated(rid, "FINISHED")
        runs[t.label] = rid
    _add_leader_artifacts(client, tmp_path / "staging" / "leader", runs["t01"])
    client.set_terminated(pid, "FINISHED")
    return {"uri": uri, "parent": pid, "runs": runs, "experiment_id": exp}


def _add_final(client, exp: str, parent_id: str, folder: Path, t: RichTrial, run_id: str, trial_id: str) -> None:
    """Test figures and predictions of the original (seed 0) and of SEEDS - 1 replicas; the seed aggregate and
    the systematic variants on the original."""
    accs = seed_accuracies(t)
    for seed in range(SEEDS):
        scores = seed_scores(t, seed)
        write_predictions_file(folder / f"seed{seed}" / "predictions.h5", scores, shuffle_seed=seed or None)
        target = run_id
        if seed:
            target = client.create_run(exp, run_name=f"{t.label} seed {seed}", tags={
                "mlflow.parentRunId": parent_id, "scan.instance": "i1", "scan.replica_of": trial_id,
                "scan.seed": str(seed), "scan.status": "completed"}).info.run_id
        figures = _final_metrics(scores)
        figures["test/accuracy"] = accs[seed]
        for variant, shift in t.syst_shift.items():
            figures[f"syst/{variant}/accuracy"] = accs[seed] + shift
            figures[f"syst/{variant}/accuracy_err"] = 0.012
        client.log_batch(target, metrics=[Metric(k, v, 0, 0) for k, v in figures.items()],
                         tags=[RunTag("scan.final", "true")] if seed == 0 else [])
        client.log_artifacts(target, str(folder / f"seed{seed}"), "test")
        if seed:
            client.set_terminated(target, "FINISHED")
    mean, std = float(np.mean(accs)), float(np.std(accs, ddof=1))
    aggregate = {"seeds/test/accuracy": mean, "seeds/test/accuracy_std": std,
                 "seeds/test/accuracy_err": std / math.sqrt(SEEDS), "seeds/n": float(SEEDS)}
    for variant, shift in t.syst_shift.items():
        aggregate[f"seeds/syst/{variant}/accuracy"] = mean + shift
    client.log_batch(run_id, metrics=[Metric(k, v, 0, 0) for k, v in aggregate.items()])


def _add_leader_artifacts(client, folder: Path, run_id: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    counts = [[80, 10, 10], [5, 90, 5], [8, 7, 85]]
    (folder / "confusion.json").write_text(json.dumps({"class_names": RICH_CLASSES, "counts": counts}))
    client.log_artifact(run_id, str(folder / "confusion.json"), "test")


def rich_seed_expectation(label: str) -> dict[str, float]:
    """What the store says of a finalist's seeds: mean, std (ddof 1), std / sqrt(N)."""
    t = next(t for t in RICH if t.label == label)
    accs = seed_accuracies(t)
    std = float(np.std(accs, ddof=1))
    return {"mean": float(np.mean(accs)), "std": std, "err": std / math.sqrt(SEEDS), "accs": accs}
