"""P6: the report at scale. 1,000 trial runs (10 epochs x 30 metrics each) in a sqlite MLflow store; times the
ranking step (fetch + rank, no plots; target <= 10 s) and the whole report. Prints the figures, asserts nothing.

    .venv/bin/python benchmarks/bench_report.py [--trials 1000] [--rebuild]

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

os.environ.setdefault("MPLBACKEND", "Agg")

SWEEP = "bench-1k"
CLASSES = ["NC", "nueCC", "numuCC"]
EPOCHS = 10  # the P6 shape: 10 epochs x 30 metrics per trial


def epoch_metrics(rng: random.Random, epoch: int, quality: float, best: dict) -> dict[str, float]:
    acc = min(0.99, quality * (1 - math.exp(-epoch / 3)) + rng.gauss(0, 0.005))
    m = {"train/loss": 1 / epoch + rng.random() * 0.01, "val/loss": 1.1 / epoch, "train/lr": 1e-3 / epoch,
         "val/accuracy": acc, "val/accuracy_err": 0.004, "perf/samples_per_s": 1000 + rng.random() * 500,
         "perf/data_wait_frac": 0.1, "perf/epoch_s": 4.0, "sys/rss_gb": 1.4, "sys/cpu_pct": 190.0}
    for k, c in enumerate(CLASSES):
        m[f"val/efficiency/{c}"], m[f"val/efficiency/{c}_err"] = acc - 0.01 * k, 0.006
        m[f"val/purity/{c}"], m[f"val/purity/{c}_err"] = acc - 0.02 * k, 0.006
    if acc > best.get("best/val/accuracy", -1):
        best.update({f"best/{k}": v for k, v in m.items() if k.startswith("val/") and "purity" not in k})
        best["best/epoch"] = epoch
    m.update(best)
    return m  # 30 names


def build_store(path: Path, trials: int) -> str:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment(SWEEP, artifact_location=(path / "artifacts").as_uri())
    parent = client.create_run(exp, run_name=SWEEP, tags={
        "scan.role": "parent", "scan.name": SWEEP, "scan.objective": "val/accuracy", "scan.objective_mode": "max",
        "scan.task": "classification", "scan.status": "finished", "scan.class_names": json.dumps(CLASSES),
        "scan.also": json.dumps([{"metric": "perf/samples_per_s", "mode": "max"}])})
    rng = random.Random(0)
    t0 = time.perf_counter()
    for i in range(trials):
        params = {"model": rng.choice(["resnet18", "resnet34", "mobilenet"]), "loss": rng.choice(["ce", "focal"]),
                  "lr": f"{10 ** rng.uniform(-4, -1):.2e}", "ema_decay": rng.choice(["0.0", "0.99", "0.999"])}
        run = client.create_run(exp, run_name=f"t{i:04d} {params['model']} {params['loss']} lr={params['lr']}", tags={
            "mlflow.parentRunId": parent.info.run_id, "scan.name": SWEEP, "scan.trial_id": f"trial_{i:05d}",
            "scan.baseline": str(i == 0).lower(), "scan.status": "completed",
            "scan.varied": json.dumps(["model", "loss", "lr", "ema_decay"])})
        best: dict = {}
        quality = rng.uniform(0.6, 0.95)
        metrics = [Metric(k, v, 1_700_000_000_000 + e, e)
                   for e in range(1, EPOCHS + 1) for k, v in epoch_metrics(rng, e, quality, best).items()]
        client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()],
                         tags=[RunTag("scan.checkpoint", f"/ckpt/{i}")])
        client.set_terminated(run.info.run_id)
        if (i + 1) % 100 == 0:
            print(f"  built {i + 1}/{trials} runs ({time.perf_counter() - t0:.0f} s)", flush=True)
    client.set_terminated(parent.info.run_id)
    return uri


def cached_store(trials: int, rebuild: bool) -> str:
    folder = Path(tempfile.gettempdir()) / f"scanner-bench-report-{trials}-v1"
    if rebuild or not (folder / "DONE").exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        print(f"building the store in {folder} (cached for later runs)")
        build_store(folder, trials)
        (folder / "DONE").write_text("ok")
    return f"sqlite:///{folder / 'mlflow.db'}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args()
    uri = cached_store(args.trials, args.rebuild)

    from reports import load_sweep, rank, write_report

    load_sweep(SWEEP, uri)  # warm: imports and the sqlite engine, which a user pays once per process
    t0 = time.perf_counter()
    sweep = load_sweep(SWEEP, uri)
    t_fetch = time.perf_counter() - t0
    ranking = rank(sweep, "best")
    t_rank = time.perf_counter() - t0
    out = Path(tempfile.mkdtemp(prefix="bench-report-"))
    t1 = time.perf_counter()
    index = write_report(sweep, out / "report", log_to_parent=False)
    t_report = time.perf_counter() - t1 + t_fetch
    n_metrics = sum(len(t.metrics) for t in sweep.trials)
    print(f"P6 report scale: {len(sweep.trials)} trials, {n_metrics} latest metric values fetched")
    print(f"  ranking (fetch + rank, no plots): {t_rank:.2f} s  [fetch {t_fetch:.2f} s]  target <= 10 s: "
          f"{'OK' if t_rank <= 10 else 'MISSED'}")
    print(f"  whole report (fetch + rank + plots + HTML/MD/CSV): {t_report:.2f} s  -> {index}")
    print(f"  leader: {ranking.leader.trial.run_name} = {ranking.leader.objective:.4f}")
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
