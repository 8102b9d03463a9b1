"""The report at scale: N trial runs (10 epochs x 30 metrics each) in a sqlite MLflow store, plus what a finished
sweep adds (the reference on the parent, finalists with test predictions, seed replicas, a systematic variant).
Times the report's phases (fetch, rank, plots, write) and the whole report; prints the figures, asserts nothing.

    .venv/bin/python benchmarks/bench_report.py                  # 1,000 runs (target: whole report <= 5 s)
    .venv/bin/python benchmarks/bench_report.py --trials 3000    # linear growth: <= 3.5x the 1,000-run time
    .venv/bin/python benchmarks/bench_report.py --trials 1000 --repeat 3 --rebuild

The store is built once with log_batch and cached under the temp folder (building takes minutes on sqlite).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from _header import print_header  # benchmarks/ is on sys.path when a script runs

import numpy as np

os.environ.setdefault("MPLBACKEND", "Agg")

SWEEP = "bench-report"
CLASSES = ["NC", "nueCC", "numuCC"]
EPOCHS = 10  # 10 epochs x 30 metrics per trial
FINAL_TOP = 3  # finalists besides the baseline, as a sweep's final_top
SEEDS = 3  # final_seeds: each finalist has SEEDS - 1 replicas
TEST_EVENTS = 5000
STORE_VERSION = "v3"  # bump when the store's content changes


def epoch_metrics(rng: random.Random, epoch: int, quality: float, best: dict) -> dict[str, float]:
    acc = min(0.99, quality * (1 - math.exp(-epoch / 3)) + rng.gauss(0, 0.005))
    m = {"train/loss": 1 / epoch + rng.random() * 0.01, "val/loss": 1.1 / epoch, "train/lr": 1e-3 / epoch,
         "val/accuracy": acc, "val/accuracy_err": 0.004, "perf/samples_per_s": 1000 + rng.random() * 500,
         "perf/data_wait_frac": 0.1, "perf/epoch_s": 4.0, "sys/rss_gb": 1.4, "sys/cpu_pct": 190.0}
    for k, c in enumerate(CLASSES):
        m[f"val/efficiency/{c}"], m[f"val/efficiency/{c}_err"] = acc - 0.01 * k, 0.006
        m[f"val/purity/{c}"], m[f"val/purity/{c}_err"] = acc - 0.02 * k, 0.006
    if acc > best.get("best/val/accuracy", -1):
        best.clear()
        best.update({f"best/{k}": v for k, v in m.items() if k.startswith("val/") and "purity" not in k})
        best["best/epoch"] = epoch
    m.update(best)
    return m  # 30 names


def write_predictions(path: Path, quality: float, seed: int) -> dict[str, float]:
    """A finalist's test predictions on the shared test events; returns its test/ figures."""
    import h5py

    truth = np.random.default_rng(12345)  # the same test events for every finalist
    label = truth.integers(0, len(CLASSES), TEST_EVENTS)
    energy = truth.uniform(0.5, 5.0, TEST_EVENTS)
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(TEST_EVENTS, len(CLASSES))) + 4.0 * quality * np.eye(len(CLASSES))[label]
    scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["index"], f["label"], f["scores"], f["energy"] = np.arange(TEST_EVENTS), label, scores.astype("f4"), energy
        f.attrs["class_names"] = CLASSES
    acc = float(np.mean(scores.argmax(1) == label))
    return {"test/accuracy": acc, "test/accuracy_err": math.sqrt(acc * (1 - acc) / TEST_EVENTS)}


def build_store(path: Path, trials: int) -> str:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment(SWEEP, artifact_location=(path / "artifacts").as_uri())
    parent = client.create_run(exp, run_name=SWEEP, tags={
        "scan.role": "parent", "scan.name": SWEEP, "scan.instance": "i1", "scan.objective": "val/accuracy",
        "scan.objective_mode": "max", "scan.task": "classification", "scan.status": "finished",
        "scan.class_names": json.dumps(CLASSES),
        "scan.also": json.dumps([{"metric": "perf/samples_per_s", "mode": "max"}])})
    client.log_batch(parent.info.run_id, metrics=[Metric(f"ref/{s}/accuracy", 0.34, 0, 0) for s in ("val", "test")])
    rng = random.Random(0)
    t0 = time.perf_counter()
    quality, best_acc, run_ids = {}, {}, {}
    for i in range(trials):
        params = {"model": rng.choice(["resnet18", "resnet34", "mobilenet"]), "loss": rng.choice(["ce", "focal"]),
                  "lr": f"{10 ** rng.uniform(-4, -1):.2e}", "ema_decay": rng.choice(["0.0", "0.99", "0.999"])}
        tags = {"mlflow.parentRunId": parent.info.run_id, "scan.name": SWEEP, "scan.instance": "i1",
                "scan.trial_id": f"trial_{i:05d}", "scan.baseline": str(i == 0).lower(), "scan.status": "completed",
                "scan.varied": json.dumps(["model", "loss", "lr", "ema_decay"])}
        if i % 50 == 7:
            tags["scan.flags"] = "below_reference"
        run = client.create_run(exp, run_name=f"t{i:04d} {params['model']} {params['loss']} lr={params['lr']}",
                                tags=tags)
        best: dict = {}
        quality[i] = rng.uniform(0.6, 0.95)
        metrics = [Metric(k, v, 1_700_000_000_000 + e, e)
                   for e in range(1, EPOCHS + 1) for k, v in epoch_metrics(rng, e, quality[i], best).items()]
        client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()],
                         tags=[RunTag("scan.checkpoint", f"/ckpt/{i}")])
        client.set_terminated(run.info.run_id)
        run_ids[i], best_acc[i] = run.info.run_id, best["best/val/accuracy"]
        if (i + 1) % 100 == 0:
            print(f"  built {i + 1}/{trials} runs ({time.perf_counter() - t0:.0f} s)", flush=True)
    finalists = [0] + [i for i in sorted(best_acc, key=lambda i: -best_acc[i]) if i != 0][:FINAL_TOP]  # as a sweep
    for i in finalists:
        add_final(client, exp, parent.info.run_id, path, i, run_ids[i], quality[i])
    client.set_terminated(parent.info.run_id)
    return uri


def add_final(client, exp: str, parent_id: str, path: Path, i: int, run_id: str, quality: float) -> None:
    """The finalist's test figures and predictions, its seed replicas, their aggregate and a systematic variant."""
    from mlflow.entities import Metric, RunTag

    values = []
    for seed in range(SEEDS):
        art = path / "staging" / f"{i}-{seed}"
        figures = write_predictions(art / "predictions.h5", quality, seed=1000 * i + seed)
        (art / "confusion.json").write_text(json.dumps({"class_names": CLASSES, "counts": [[1, 0, 0], [0, 1, 0],
                                                                                          [0, 0, 1]]}))
        if seed == 0:
            target = run_id
        else:
            target = client.create_run(exp, run_name=f"t{i:04d} seed {seed}", tags={
                "mlflow.parentRunId": parent_id, "scan.instance": "i1", "scan.replica_of": f"trial_{i:05d}",
                "scan.seed": str(seed), "scan.status": "completed"}).info.run_id
        noisy = figures["test/accuracy"] - 0.03
        syst = {"syst/noisy/accuracy": noisy, "syst/noisy/accuracy_err": figures["test/accuracy_err"]}
        client.log_batch(target, metrics=[Metric(k, v, 0, 0) for k, v in {**figures, **syst}.items()],
                         tags=[RunTag("scan.final", "true")] if seed == 0 else [])
        client.log_artifacts(target, str(art), "test")
        if seed:
            client.set_terminated(target)
        values.append(figures["test/accuracy"])
    std = float(np.std(values, ddof=1))
    seeds = {"seeds/test/accuracy": float(np.mean(values)), "seeds/test/accuracy_std": std,
             "seeds/test/accuracy_err": std / math.sqrt(SEEDS), "seeds/n": SEEDS,
             "seeds/syst/noisy/accuracy": float(np.mean(values)) - 0.03}
    client.log_batch(run_id, metrics=[Metric(k, v, 0, 0) for k, v in seeds.items()])


def cached_store(trials: int, rebuild: bool) -> str:
    folder = Path(tempfile.gettempdir()) / f"scanner-bench-report-{trials}-{STORE_VERSION}"
    if rebuild or not (folder / "DONE").exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        print(f"building the store in {folder} (cached for later runs)")
        build_store(folder, trials)
        (folder / "DONE").write_text("ok")
    return f"sqlite:///{folder / 'mlflow.db'}"


def one_report(uri: str) -> dict[str, float]:
    """Wall-clock seconds per phase, and the process's CPU seconds of the whole report (``cpu``): on a machine
    shared with other work the CPU time is what a quiet machine's wall clock would show, near enough (the report
    is single-threaded)."""
    from reports import load_sweep, write_report

    phases: dict[str, float] = {}
    out = Path(tempfile.mkdtemp(prefix="bench-report-"))
    t0, c0 = time.perf_counter(), time.process_time()
    sweep = load_sweep(SWEEP, uri)
    phases["fetch"], phases["fetch_cpu"] = time.perf_counter() - t0, time.process_time() - c0
    write_report(sweep, out / "report", log_to_parent=False, phases=phases)
    phases["whole"] = time.perf_counter() - t0
    phases["cpu"] = time.process_time() - c0
    phases["runs"] = len(sweep.trials) + len(sweep.replicas)
    shutil.rmtree(out, ignore_errors=True)
    return phases


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3, help="report this many times; the fastest is printed")
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args()
    print_header()
    uri = cached_store(args.trials, args.rebuild)

    one_report(uri)  # warm: imports and the sqlite engine, which a user pays once per process
    runs = [one_report(uri) for _ in range(args.repeat)]
    best = min(runs, key=lambda p: p["whole"])
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"report at scale: {args.trials} trials ({best['runs']} runs with replicas), "
          f"{time.strftime('%Y-%m-%d %H:%M')}, load average {load}")
    for kind, suffix in (("wall", ""), ("CPU", "_cpu")):
        b = {k: best[k + suffix] for k in ("fetch", "fetch_details", "rank", "plots", "write")}
        print(f"  phases [s {kind}]: fetch {b['fetch'] + b['fetch_details']:.2f} (runs {b['fetch']:.2f}, histories "
              f"and artifacts {b['fetch_details']:.2f}), rank {b['rank']:.2f}, plots {b['plots']:.2f}, "
              f"write {b['write']:.2f}")
    print(f"  whole report: {best['whole']:.2f} s wall, {best['cpu']:.2f} s CPU (fastest of {len(runs)}: "
          + ", ".join(f"{p['whole']:.2f}" for p in runs) + ")")


if __name__ == "__main__":
    main()
