"""P2: sweep wall time vs the same configs trained in a plain sequential loop in one process.

    .venv/bin/python benchmarks/bench_sweep_overhead.py [--trials 8] [--epochs 4] [--events 3000] [--size 32]

Both sides train the same TrialConfigs (the sweep's baseline + Optuna's suggestions, replayed from the study) with
concurrency 1 and FIFO, so the ratio is Ray/Tune/MLflow overhead only. Prints the ratio (target <= 1.10).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

SPACE = """\
name: bench
task: classification
data: {{path: bench.h5}}
objective: {{metric: val/accuracy, mode: max}}
budget: {{trials: {trials}, max_epochs: {epochs}, scheduler: fifo, sampler: random, seed: 0, final_top: 0}}
resources: {{cpu: 2, gpu: 0, concurrent: 1}}
fixed: {{batch_size: 64, num_workers: 0, model: small_cnn}}
baseline: {{lr: 1.0e-3}}
space:
  lr: {{float: [3.0e-4, 3.0e-3], log: true}}
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=7)  # + the baseline = 8 trials
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--events", type=int, default=3000)
    ap.add_argument("--size", type=int, default=32)
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch

    from scanner.sweep import run_sweep
    from search_spaces import load_space
    from scanner._tune_adapter import resolve_config
    from trainables.config import TrialSpec
    from trainables.data import write_synthetic
    from trainables.loop import train_trial
    from trainables.reporting import MemoryReporter

    work = Path(tempfile.mkdtemp(prefix="bench_p2_"))
    os.chdir(work)
    write_synthetic(work / "bench.h5", events=args.events, size=args.size, seed=0, progress=False)
    (work / "bench.yaml").write_text(SPACE.format(trials=args.trials, epochs=args.epochs))

    t0 = time.perf_counter()
    run_sweep(str(work / "bench.yaml"), f"sqlite:///{work / 'mlflow.db'}", quiet=True)
    sweep_s = time.perf_counter() - t0

    import optuna

    space = load_space(work / "bench.yaml")
    study = optuna.load_study(study_name="bench", storage=f"sqlite:///{work / 'scans' / 'optuna.db'}")
    configs = [{"_scan_baseline": True}] + [t.params for t in study.trials]
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    for config in configs:
        cfg = resolve_config(space, config)
        spec = TrialSpec(space.task, space.data, cfg, space.budget.max_epochs, space.objective.metric,
                         space.objective.mode, workdir=str(work))
        train_trial(spec, MemoryReporter())
    plain_s = time.perf_counter() - t0
    print(f"P2 {len(configs)} trials x {args.epochs} epochs: sweep {sweep_s:.1f} s, plain loop {plain_s:.1f} s, "
          f"ratio {sweep_s / plain_s:.3f} (target <= 1.10); per trial {plain_s / len(configs):.1f} s of training")


if __name__ == "__main__":
    main()
