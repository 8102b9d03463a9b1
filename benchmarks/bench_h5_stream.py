"""Streaming from HDF5 vs the same tensors in memory: training throughput ratio (target >= 0.9x), the raw
DataLoader rates, and the peak RSS of streaming a 10x larger file (target <= 1.2x of the small one).

    .venv/bin/python benchmarks/bench_h5_stream.py [--events 2000] [--size 64] [--workers 1] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _header import print_header  # benchmarks/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BATCH = 64
WARMUP_BATCHES = 3  # worker start-up and first-touch allocations are not steady state


def small_cnn(classes: int):
    import torch.nn as nn

    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

    return nn.Sequential(block(2, 16), block(16, 32), block(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, classes))


def train_rate(batches, classes: int) -> float:
    """Events/s of one epoch of a small CNN (after a short warm-up) fed by the iterable ``batches``."""
    import torch

    torch.manual_seed(0)
    model = small_cnn(classes)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    n, start = 0, None
    for k, (x, y, _) in enumerate(batches):
        if k == WARMUP_BATCHES:
            n, start = 0, time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += len(y)
    return n / (time.perf_counter() - start)


def raw_rate(batches) -> float:
    n, start = 0, None
    for k, (x, y, _) in enumerate(batches):
        if k == WARMUP_BATCHES:
            n, start = 0, time.perf_counter()
        n += len(y)
    return n / (time.perf_counter() - start)


def in_memory_batches(x, y, seed: int):
    import torch

    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    w = torch.ones(len(y))
    for s in range(0, len(y), BATCH):
        idx = order[s:s + BATCH]
        yield x[idx], y[idx], w[idx]


def tile_file(src: Path, dst: Path, times: int) -> None:
    """``src`` repeated ``times`` times, copying the compressed chunks as they are (seconds, not minutes)."""
    import h5py
    import numpy as np

    with h5py.File(src) as f, h5py.File(dst, "w") as g:
        g.attrs.update(f.attrs)
        ds = f["images"]
        n = ds.shape[0]
        out = g.create_dataset("images", (n * times, *ds.shape[1:]), ds.dtype, chunks=ds.chunks,
                               compression="gzip", compression_opts=1)
        for i in range(n):
            _, raw = ds.id.read_direct_chunk((i, 0, 0, 0))
            for t in range(times):
                out.id.write_direct_chunk((t * n + i, 0, 0, 0), raw)
        for name in ("labels", "split"):
            g.create_dataset(name, data=np.tile(f[name][:], times))


RSS_PROBE = r"""
import json, sys, threading, time, psutil, torch
sys.path.insert(0, sys.argv[3])
torch.set_num_threads(1)
from trainables.config import DataConfig
from trainables.data import make_loader
peak, stop = 0, False
def watch():
    global peak
    me = psutil.Process()
    while not stop:
        procs = [me] + me.children(recursive=True)
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        peak = max(peak, total)
        time.sleep(0.02)
threading.Thread(target=watch, daemon=True).start()
loader = make_loader(DataConfig(path=sys.argv[1]), "classification", "train", 64, int(sys.argv[2]), True, 0)
n = sum(len(y) for _, y, _ in loader)
stop = True
time.sleep(0.05)
print(json.dumps({"events": n, "peak_rss_mb": peak / 2**20}))
"""


def peak_rss(path: Path, workers: int) -> dict:
    out = subprocess.run([sys.executable, "-c", RSS_PROBE, str(path), str(workers), str(ROOT)],
                         capture_output=True, text=True, check=True, env={**os.environ, "TQDM_DISABLE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1, help="DataLoader workers for the streamed epoch")
    ap.add_argument("--repeats", type=int, default=2, help="alternating epochs of each kind")
    args = ap.parse_args()
    print_header()
    import torch

    from trainables.config import DataConfig
    from trainables.data import H5Events, make_loader, open_events, write_synthetic

    torch.set_num_threads(max((os.cpu_count() or 2) - args.workers, 1))  # leave the workers their core
    with tempfile.TemporaryDirectory() as tmp:
        small = write_synthetic(Path(tmp) / "small.h5", events=args.events, size=args.size, progress=False)
        cfg = DataConfig(path=str(small))
        ev = open_events(cfg, "classification")
        mem = H5Events(DataConfig(path=str(small), cache=True), "classification", "train", ev)
        x = torch.stack([mem[i][0] for i in range(len(mem))])  # the same float32 tensors, all in RAM
        y = mem._y

        def stream():
            return make_loader(cfg, "classification", "train", BATCH, args.workers, True, 0, events=ev)

        raw_mem, raw_h5 = raw_rate(in_memory_batches(x, y, 0)), raw_rate(stream())
        # alternate the two and keep each one's best epoch: other jobs on a shared machine only ever slow one down
        train_mem = train_h5 = 0.0
        for _ in range(args.repeats):
            train_mem = max(train_mem, train_rate(in_memory_batches(x, y, 0), 3))
            train_h5 = max(train_h5, train_rate(stream(), 3))
        print(f"events {len(y)} train split, {args.size}x{args.size}, batch {BATCH}, {args.workers} worker(s), "
              f"best of {args.repeats} epochs each")
        print(f"raw loader      in-memory {raw_mem:9.0f} events/s   hdf5 stream {raw_h5:7.0f} events/s")
        print(f"train 1 epoch   in-memory {train_mem:9.0f} events/s   hdf5 stream {train_h5:7.0f} events/s")
        print(f"stream/in-memory training throughput ratio = {train_h5 / train_mem:.2f} (target >= 0.9)")

        big = Path(tmp) / "big.h5"
        tile_file(small, big, 10)
        a, b = peak_rss(small, args.workers), peak_rss(big, args.workers)
        print(f"peak RSS (process + workers) streaming {a['events']} events: {a['peak_rss_mb']:.0f} MiB, "
              f"{b['events']} events (10x file): {b['peak_rss_mb']:.0f} MiB")
        print(f"peak RSS ratio 10x file / small file = {b['peak_rss_mb'] / a['peak_rss_mb']:.2f} (target <= 1.2)")
        print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
