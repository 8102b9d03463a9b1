"""Telemetry overhead: EpochTelemetry per epoch, as a % of epoch time (target < 1 %).

Trains a small CNN on random 2-view 32x32 images for a few epochs, alternating the same loop with and without
telemetry (start_epoch / timed(loader) / end_epoch), and prints the median epoch times and the overhead ratio.
Alternating (ABBA) keeps drift on a shared machine from landing on one side only. The fixed per-epoch cost and
the per-step cost of timed() are also measured alone: on a loaded machine they are the trustworthy figures.

    .venv/bin/python benchmarks/bench_telemetry_overhead.py [--epochs 5] [--events 2048] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from _header import print_header  # benchmarks/ is on sys.path when a script runs

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trainables.telemetry import EpochTelemetry


def small_cnn(n_classes: int = 3) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 8 * 8, n_classes),
    )  # fmt: skip


def train_epoch(model, loader, optimiser, device, telemetry: EpochTelemetry | None) -> float:
    start = time.perf_counter()
    if telemetry is not None:
        telemetry.start_epoch()
    batches = telemetry.timed(loader) if telemetry is not None else loader
    for images, labels in batches:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        loss = nn.functional.cross_entropy(model(images), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    if telemetry is not None:
        telemetry.end_epoch(n_samples=len(loader.dataset))
    return time.perf_counter() - start


def timed_cost_per_step(telemetry: EpochTelemetry, n: int = 200_000) -> float:
    """Extra time per item of wrapping a trivial iterator in timed(), versus iterating it bare."""
    items = list(range(n))
    t0 = time.perf_counter()
    for _ in items:
        pass
    bare = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in telemetry.timed(items):
        pass
    return max(0.0, (time.perf_counter() - t0 - bare) / n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs per variant (alternated)")
    parser.add_argument("--events", type=int, default=2048, help="random events per epoch")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine is shared)")
    args = parser.parse_args()
    print_header()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    data = TensorDataset(torch.randn(args.events, 2, 32, 32), torch.randint(0, 3, (args.events,)))
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True)
    model = small_cnn().to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train_epoch(model, loader, optimiser, device, None)  # warm-up: allocator, kernels, caches
    plain, telemetered = [], []
    with EpochTelemetry(device) as telemetry:
        telemetry.start_epoch()
        last = telemetry.end_epoch(n_samples=0)
        for epoch in range(args.epochs):  # ABBA order: neither variant always runs first
            order = [(plain, None), (telemetered, telemetry)]
            for times, tel in order if epoch % 2 == 0 else order[::-1]:
                times.append(train_epoch(model, loader, optimiser, device, tel))
        # the fixed per-epoch cost, measured alone (start_epoch + end_epoch with no loop in between)
        fixed = []
        for _ in range(20):
            t0 = time.perf_counter()
            telemetry.start_epoch()
            last = telemetry.end_epoch(n_samples=0)
            fixed.append(time.perf_counter() - t0)
        per_step_s = timed_cost_per_step(telemetry)
    base, with_t = statistics.median(plain), statistics.median(telemetered)
    n_steps = len(loader)
    print(f"load average (1 min) during the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print(f"device={device} events={args.events} batch={args.batch_size} steps/epoch={n_steps} epochs={args.epochs}")
    print(f"median epoch without telemetry: {base:.3f} s   with: {with_t:.3f} s")
    print(f"overhead (median difference):  {100 * (with_t - base) / base:+.2f} % of epoch time (noise included)")
    print(f"overhead (fastest epochs):     {100 * (min(telemetered) - min(plain)) / min(plain):+.2f} % "
          f"({min(plain):.3f} s vs {min(telemetered):.3f} s; the least disturbed by other load)")
    print(f"fixed per-epoch cost (start+end alone): {1e3 * statistics.median(fixed):.3f} ms "
          f"= {100 * statistics.median(fixed) / base:.3f} % of epoch time")
    print(f"timed() cost per step: {1e6 * per_step_s:.2f} us = "
          f"{100 * per_step_s * n_steps / base:.4f} % of epoch time at {n_steps} steps")
    print(f"keys per epoch: {sorted(k for k in last if not k.startswith('perf/'))}")


if __name__ == "__main__":
    main()
