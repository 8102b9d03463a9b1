"""``make gpu-check`` on a machine without CUDA (every machine here): one line saying so, exit 0, so CI can call it.
What it checks on a real GPU is in docs/gpu.md."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_without_cuda_prints_one_line_and_exits_0(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--workdir", str(tmp_path / "w")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: no CUDA device here"), done.stdout
    assert not (tmp_path / "w").exists()  # nothing started, nothing written


def test_make_gpu_check_runs_the_script():
    rule = (REPO / "Makefile").read_text().split("\ngpu-check:", 1)[1].split("\n\n", 1)[0]
    assert "benchmarks/gpu_check.py" in rule
