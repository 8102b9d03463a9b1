"""GPU scheduling without a GPU: one ``ray start --head --num-gpus 4`` node whose 4 GPUs are logical (none exists),
``resources: {gpu: 0.5, cpu: 1, concurrent: 8}``, and ``scanner run --address``. Ray must run 8 trials at once, two
per GPU id, and set each trial's CUDA_VISIBLE_DEVICES to its one id; ``--dry-run`` must say 8 from the same cluster;
the trials, holding a GPU on a machine without CUDA, train on CPU only because SCANNER_ALLOW_CPU_FALLBACK=1 is set
(tests/trainables/test_device.py covers the refusal without it).

"At once" is made certain, not left to timing: SCANNER_START_BARRIER holds every trial at its start until 8 have
arrived (on a loaded 2-core machine the last actor can start after the first trial has finished, and Tune then
reuses that actor instead). If Ray allowed fewer than 8, the barrier times out and the count below says so."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fixtures_cluster import LoopbackCluster, running
from fixtures_sweep import write_tiny_space

DEVICE_LINE = re.compile(r"^scanner: trial device (\S+) \(CUDA_VISIBLE_DEVICES=([^;)]*)(.*)\)$")
FALLBACK = {"SCANNER_ALLOW_CPU_FALLBACK": "1"}


@pytest.fixture
def barrier(tmp_path) -> Path:
    folder = tmp_path / "barrier"
    folder.mkdir()
    return folder


@pytest.fixture
def gpu_cluster(barrier):
    """4 logical GPUs and 8 CPUs on one node; the fallback switch and the barrier set where the trials start."""
    env = {"CUDA_VISIBLE_DEVICES": None, "SCANNER_START_BARRIER": f"{barrier}:8", **FALLBACK}
    with running(LoopbackCluster(workers=0, cpus=8, gpus=4, env=env)) as c:
        yield c


def half_gpu_space(folder: Path) -> Path:
    """The tiny sweep as 7 + baseline = 8 one-epoch trials, 1 CPU and half a GPU each, all allowed at once."""
    path = write_tiny_space(folder, "halves", trials=7, epochs=1)
    text = path.read_text().replace("resources: {cpu: 1, gpu: 0, concurrent: 2}",
                                    "resources: {cpu: 1, gpu: 0.5, concurrent: 8}")
    text = text.replace("scheduler: asha", "scheduler: fifo").replace("final_top: 1", "final_top: 0")
    path.write_text(text.replace("{choice: [small_cnn_tiny, resnet_tiny]}", "{choice: [small_cnn_tiny]}"))
    return path


@pytest.mark.slow
def test_half_gpu_trials_run_eight_at_once_on_four_logical_gpus(tmp_path, gpu_cluster, barrier):
    space = half_gpu_space(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    driver_env = {k: v for k, v in gpu_cluster.env.items() if k != "SCANNER_START_BARRIER"}
    scanner = [sys.executable, "-m", "scanner", "run", str(space), "--address", gpu_cluster.address]

    plan = subprocess.run([*scanner, "--dry-run"], cwd=tmp_path, env=driver_env, capture_output=True, text=True,
                          timeout=300)
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert "this cluster (8 CPUs, 4 GPUs) runs 8 trial(s) at once" in plan.stdout, plan.stdout

    done = subprocess.run([*scanner, "--tracking-uri", uri, "--quiet"], cwd=tmp_path, env=driver_env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]

    # one marker per trial process, written from inside the trial at its start: 8 processes were there together
    markers = {p.name: p.read_text().strip() for p in barrier.iterdir() if p.name.isdigit()}
    lines = [DEVICE_LINE.fullmatch(text) for text in markers.values()]
    assert len(markers) == 8 and all(lines), markers
    assert not [p.read_text() for p in barrier.glob("timeout-*")]  # all 8 met at the barrier: none gave up waiting
    assert all(m[1] == "cpu" and "SCANNER_ALLOW_CPU_FALLBACK=1" in m[3] for m in lines), markers
    assert all(re.fullmatch(r"[0-3]", m[2]) for m in lines), markers  # Ray set one device id per trial
    assert Counter(m[2] for m in lines) == {"0": 2, "1": 2, "2": 2, "3": 2}, markers  # two trials per GPU

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("halves").experiment_id], max_results=100)
    children = [r for r in runs if "scan.trial_id" in r.data.tags]
    assert len(children) == 8 and all(r.info.status == "FINISHED" for r in children)
