"""Precise BN: does recomputing the BatchNorm statistics before each evaluation make epoch 1 rank configs as their
best epoch does, and what does the recompute cost?

    .venv/bin/python benchmarks/bench_precise_bn.py                       # 12 configs x 3 epochs, a few minutes
    .venv/bin/python benchmarks/bench_precise_bn.py --samples 0 256 512 --events 1500 --size 32 --epochs 3

Each config (model x lr; AdamW, cosine, batch 64, no EMA) trains once on a synthetic file (trainables.data.
write_synthetic). After every epoch the same weights are evaluated on the validation split once per N in
``--samples``: a copy of the model whose BatchNorm statistics were recomputed over N training samples (0 = the
running statistics as training left them, i.e. precise BN off). Printed per N: the Spearman rank correlation over the
configs between the epoch-1 val/accuracy and the best val/accuracy over the epochs (both measured with that N), the
mean epoch-1 and best accuracies, and the recompute time per epoch against the training time per epoch.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _header import print_header  # benchmarks/ is on sys.path when a script runs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = ("small_cnn", "small_cnn_tiny", "resnet_tiny")
LRS = (3.0e-4, 1.0e-3, 4.0e-3, 1.6e-2)  # 3 x 4 = 12 configs


def evaluate_with(p, epoch: int, samples: int) -> tuple[float, float]:
    """(val/accuracy, seconds of the recompute) of a copy of the live model with N-sample precise BN."""
    from trainables._epoch import reseed_order
    from trainables._evaluate import physics_metrics, predict
    from trainables.config import derived_seed
    from trainables.models import set_train_mode
    from trainables.precise_bn import recompute_bn_stats

    model = copy.deepcopy(p.model)
    begin = time.perf_counter()
    reseed_order(p.train_loader, derived_seed(p.cfg.seed, epoch))  # the loop's choice of samples
    recompute_bn_stats(model, (x for x, _, _ in p.train_loader), samples, lambda m: set_train_mode(m, p.cfg.mode))
    seconds = time.perf_counter() - begin
    outs = predict(model, p.val_loader, p.loss_fn, p.spec.task, p.device)
    physics, _ = physics_metrics(outs, p.events, p.events.has_weights)
    return physics["accuracy"], seconds


def run_config(h5: Path, workdir: Path, model: str, lr: float, epochs: int, samples: list[int]) -> dict:
    import torch

    from trainables._epoch import build, train_epoch
    from trainables.checkpoint import seed_everything
    from trainables.config import DataConfig, TrialConfig, TrialSpec, derived_seed
    from trainables.telemetry import EpochTelemetry

    cfg = TrialConfig.from_dict({"model": model, "lr": lr, "batch_size": 64, "num_workers": 0, "precise_bn": 0})
    spec = TrialSpec("classification", DataConfig(path=str(h5)), cfg, epochs, workdir=str(workdir))
    p = build(spec, cfg, [], torch.device("cpu"))
    accuracy = {n: [] for n in samples}
    cost = {n: [] for n in samples}
    train_s = []
    telemetry = EpochTelemetry(p.device)
    for epoch in range(1, epochs + 1):
        seed_everything(derived_seed(cfg.seed, epoch))
        begin = time.perf_counter()
        train_epoch(p, epoch, telemetry, False)
        train_s.append(time.perf_counter() - begin)
        for n in samples:
            acc, seconds = evaluate_with(p, epoch, n)
            accuracy[n].append(acc)
            cost[n].append(seconds)
    telemetry.close()
    return {"accuracy": accuracy, "cost": cost, "train_s": train_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, nargs="+", default=[0, 64, 128, 256, 512, 1024])
    parser.add_argument("--events", type=int, default=1500)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print_header()

    import torch
    from scipy.stats import spearmanr

    from trainables.data import write_synthetic

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_precise_bn_") as tmp:
        h5 = write_synthetic(Path(tmp) / "bench.h5", events=args.events, size=args.size, seed=0, progress=False)
        runs = {}
        for model in MODELS:
            for lr in LRS:
                begin = time.perf_counter()
                runs[(model, lr)] = run_config(h5, Path(tmp), model, lr, args.epochs, args.samples)
                acc = runs[(model, lr)]["accuracy"]
                print(f"{model:15s} lr={lr:<7g} {time.perf_counter() - begin:5.1f} s  epoch-1 acc by N: "
                      + "  ".join(f"{n}:{acc[n][0]:.3f}" for n in args.samples), flush=True)
    train_s = statistics.mean(s for r in runs.values() for s in r["train_s"])
    print(f"\n{len(runs)} configs x {args.epochs} epochs, {args.events} events {args.size}x{args.size}; "
          f"training {train_s:.2f} s per epoch on average")
    print(f"{'N':>6} {'spearman(ep1, best)':>20} {'mean ep1 acc':>13} {'mean best acc':>14} {'recompute s/epoch':>18}")
    for n in args.samples:
        first = [r["accuracy"][n][0] for r in runs.values()]
        best = [max(r["accuracy"][n]) for r in runs.values()]
        rho = spearmanr(first, best).statistic
        cost = statistics.mean(s for r in runs.values() for s in r["cost"][n])
        print(f"{n:>6} {rho:>20.3f} {statistics.mean(first):>13.3f} {statistics.mean(best):>14.3f} "
              f"{cost:>18.3f}")


if __name__ == "__main__":
    main()
