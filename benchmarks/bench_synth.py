"""Synthetic generator speed: events/s writing a 128x128 two-view file (target >= 500 events/s on 2 cores).

    .venv/bin/python benchmarks/bench_synth.py [--events 3000] [--size 128]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from _header import print_header  # benchmarks/ is on sys.path when a script runs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
TARGET = 500.0  # events/s at 128x128: a 5000-event demo file in ~10 s


def cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (the generator's worker processes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=3000)
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()
    print_header()
    from trainables.data import write_synthetic

    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, min(2, os.cpu_count() or 1)):
            out = Path(tmp) / f"bench_{workers}.h5"
            start, cpu0 = time.perf_counter(), cpu_seconds()
            write_synthetic(out, events=args.events, size=args.size, seed=0, progress=False, workers=workers)
            wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
            rate = args.events / wall
            mb = out.stat().st_size / 2**20
            print(f"synth {args.events} events {args.size}x{args.size}, {workers} process(es): {rate:7.0f} events/s "
                  f"wall, {args.events / cpu:5.0f} events per CPU-second ({mb:.1f} MiB, "
                  f"{1024 * mb / args.events:.1f} KiB/event)")
    verdict = "meets" if rate >= TARGET else "BELOW"
    print(f"synth events/s = {rate:.0f} ({verdict} the {TARGET:.0f} events/s target; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: on a shared machine, events per CPU-second x cores "
          "is the rate an idle one would give)")


if __name__ == "__main__":
    main()
