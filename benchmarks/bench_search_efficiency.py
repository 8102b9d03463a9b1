"""Search efficiency: ASHA+TPE vs an exhaustive grid over the same discrete space, on the synthetic dataset.

    .venv/bin/python benchmarks/bench_search_efficiency.py [--seeds 0 1 2] [--epochs 6] [--asha-trials 16] [--grace 1]
                                                          [--train 8000] [--val 10000] [--size 16]
    .venv/bin/python benchmarks/bench_search_efficiency.py --smoke     # minutes, not hours: checks the plumbing
    .venv/bin/python benchmarks/bench_search_efficiency.py --work /tmp/bench_search_x   # reuse that folder's grid
    .venv/bin/python benchmarks/bench_search_efficiency.py --ema 0.99 --work /tmp/bench_search_ema  # EMA weights evaluated

Long (the full grid is 36 configs x --epochs epochs on 10k validation events): run it by hand.

The grid (model x loss x lr: 2 x 3 x 6 = 36 configs, FIFO, every epoch) runs once; its best trial's best
val/accuracy minus its 1 sigma (val/accuracy_err, Wilson) is the bar. Each seed then runs ASHA+TPE (the scanner's
defaults: ASHA halving from grace 1 epoch, TPE seeded) and counts, in the order MLflow received them, the epochs
every trial trained (the baseline's included) until some trial's val/accuracy reached the bar. Target: <= 25 % of
the grid's epochs. Both sides are real `scanner run` sweeps; the figures come from their MLflow store.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _header import print_header  # benchmarks/ is on sys.path when a script runs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SPACE = """\
name: {name}
task: classification
data: {{path: search.h5}}
objective: {{metric: val/accuracy, mode: max}}
budget: {{trials: {trials}, max_epochs: {epochs}, scheduler: {scheduler}, grace_epochs: {grace}, sampler: {sampler},
          seed: {seed}, final_top: 0}}
resources: {{cpu: 1, gpu: 0, concurrent: {concurrent}}}
fixed: {{batch_size: 64, num_workers: 0, lr_schedule: cosine, ema_decay: {ema}}}
baseline: {{model: small_cnn_tiny, loss: ce, lr: 1.0e-3}}
space:
  model: {{choice: {models}}}
  loss:  {{choice: {losses}}}
  lr:    {{choice: {lrs}}}
"""
FULL = {"models": ["small_cnn_tiny", "resnet_tiny"], "losses": ["ce", "focal", "label_smoothing"],
        "lrs": [3.0e-4, 1.0e-3, 2.0e-3, 4.0e-3, 8.0e-3, 1.6e-2]}  # 36 configs
SMOKE = {"models": ["small_cnn_tiny", "resnet_tiny"], "losses": ["ce", "focal"], "lrs": [1.0e-3, 8.0e-3]}  # 8


def write_data(path: Path, train: int, val: int, test: int, size: int, seed: int) -> None:
    """The synthetic file with an explicit split: many validation events (a sharp bar), a modest train set."""
    import h5py
    import numpy as np

    from trainables.data import write_synthetic

    n = train + val + test
    write_synthetic(path, events=n, size=size, seed=seed, progress=False)
    split = np.zeros(n, dtype=np.uint8)
    order = np.random.default_rng(seed).permutation(n)
    split[order[train:train + val]], split[order[train + val:]] = 1, 2
    with h5py.File(path, "r+") as f:
        if "split" in f:
            del f["split"]
        f.create_dataset("split", data=split)


def run(work: Path, name: str, grid: dict, *, sampler: str, scheduler: str, trials: int, epochs: int, seed: int,
        concurrent: int, grace: int = 1, ema: float = 0.0) -> float:
    from scanner.sweep.lifecycle import run_sweep

    text = SPACE.format(name=name, trials=trials, epochs=epochs, scheduler=scheduler, sampler=sampler, seed=seed,
                        concurrent=concurrent, grace=grace, ema=ema, **grid)
    (work / f"{name}.yaml").write_text(text)
    t0 = time.perf_counter()
    code = run_sweep(str(work / f"{name}.yaml"), f"sqlite:///{work / 'mlflow.db'}", quiet=True)
    if code not in (0, 1):
        raise SystemExit(f"sweep {name} exited {code}")
    return time.perf_counter() - t0


def epoch_stream(uri: str, name: str) -> list[tuple[int, float, float, bool]]:
    """Every trial epoch of a sweep as (MLflow timestamp ms, val/accuracy, its 1 sigma, baseline?), in order."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    out = []
    for run in client.search_runs([exp.experiment_id], max_results=1000):
        if "scan.trial_id" not in run.data.tags:
            continue
        errs = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val/accuracy_err")}
        base = run.data.tags.get("scan.baseline") == "true"
        out += [(m.timestamp, m.value, errs.get(m.step, 0.0), base)
                for m in client.get_metric_history(run.info.run_id, "val/accuracy")]
    return sorted(out)


def free_name(work: Path, name: str) -> str:
    """``asha0``, or ``asha0_2``... when a run in the same folder already used it."""
    taken = {p.name for p in (work / "scans").glob("*")} if (work / "scans").exists() else set()
    k = 1
    candidate = name
    while candidate in taken:
        k += 1
        candidate = f"{name}_{k}"
    return candidate


def epochs_to_reach(stream, bar: float) -> int | None:
    for count, (_, acc, _, _) in enumerate(stream, start=1):
        if acc >= bar:
            return count
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--asha-trials", type=int, default=16)
    ap.add_argument("--train", type=int, default=8000)
    ap.add_argument("--val", type=int, default=10000)  # the issue: at least 10k validation events
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--concurrent", type=int, default=2)
    ap.add_argument("--grace", type=int, default=1, help="ASHA's grace_epochs (the scanner's default: 1)")
    ap.add_argument("--ema", type=float, default=0.0,
                    help="ema_decay of every trial, grid included (0 = off): the EMA weights are evaluated")
    ap.add_argument("--smoke", action="store_true", help="8-config grid, 2 epochs, 1 seed, small data")
    ap.add_argument("--work", help="a folder to work in; an earlier run's data and finished grid there are "
                                   "reused (the grid is seeded and deterministic, and takes most of the hour)")
    args = ap.parse_args()
    print_header()
    grid = FULL
    if args.smoke:
        grid, args.seeds, args.epochs, args.asha_trials = SMOKE, args.seeds[:1], 2, 4
        args.train, args.val = 600, 600
    for key, value in {"RAY_AUTH_MODE": "disabled", "TQDM_DISABLE": "1", "RAY_USAGE_STATS_ENABLED": "0"}.items():
        os.environ.setdefault(key, value)
    n_grid = len(grid["models"]) * len(grid["losses"]) * len(grid["lrs"])
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="bench_search_"))
    work.mkdir(parents=True, exist_ok=True)  # a new --work folder is where this run's grid will be kept
    os.chdir(work)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    if (work / "scans" / "grid" / "optuna_study.json").exists():  # written when the grid sweep finished
        import yaml

        if float(yaml.safe_load((work / "grid.yaml").read_text())["fixed"].get("ema_decay", 0.0)) != args.ema:
            raise SystemExit(f"the grid in {work} ran with another --ema (see its grid.yaml): use another --work")
        grid_s = float("nan")
        print(f"search efficiency: reusing the finished grid in {work}")
    else:
        write_data(work / "search.h5", args.train, args.val, 1000 if not args.smoke else 200, args.size, seed=0)
        grid_s = run(work, "grid", grid, sampler="grid", scheduler="fifo", trials=n_grid, epochs=args.epochs,
                     seed=0, concurrent=args.concurrent, ema=args.ema)
    grid_stream = [e for e in epoch_stream(uri, "grid") if not e[3]]  # the grid's own 36 configs, not the baseline
    grid_epochs = len(grid_stream)
    _, best_acc, best_err, _ = max(grid_stream, key=lambda e: e[1])
    bar = best_acc - best_err
    print(f"grid: {n_grid} configs x {args.epochs} epochs = {grid_epochs} epochs in {grid_s:.0f} s; "
          f"best val/accuracy {best_acc:.4f} +- {best_err:.4f} -> bar {bar:.4f} "
          f"({args.val} val events, {args.train} train, {args.size}x{args.size})")
    fractions = []
    for seed in args.seeds:
        name = free_name(work, f"asha{seed}")
        secs = run(work, name, grid, sampler="tpe", scheduler="asha", trials=args.asha_trials,
                   epochs=args.epochs, seed=seed, concurrent=args.concurrent, grace=args.grace, ema=args.ema)
        stream = epoch_stream(uri, name)
        need = epochs_to_reach(stream, bar)
        best = max(e[1] for e in stream)
        if need is None:
            print(f"  seed {seed}: ASHA+TPE never reached the bar (best {best:.4f}) in {len(stream)} epochs, {secs:.0f} s")
            fractions.append(float("inf"))
            continue
        fractions.append(need / grid_epochs)
        print(f"  seed {seed}: reached the bar after {need} epochs = {need / grid_epochs:.1%} of the grid's "
              f"(sweep total {len(stream)} epochs, best {best:.4f}, {secs:.0f} s)")
    finite = [f for f in fractions if f != float("inf")]
    median = statistics.median(fractions)
    shown = f"median {median:.1%}" if median != float("inf") else "median never (fewer than half the seeds reached it)"
    print(f"over seeds {args.seeds}: {shown} of the grid's epochs (target <= 25 %); "
          f"reached in {len(finite)}/{len(fractions)} seeds")


if __name__ == "__main__":
    main()
