"""Real Ray clusters for tests: ``ray start`` nodes on loopback, each in its own process group and temp folder,
joined by ``scanner run --address`` in a subprocess (the test session has its own Ray already, and a process can
``ray.init`` once). Stopped by PID, never with ``ray stop``, which would also stop the session's Ray.

    c = LoopbackCluster(workers=1)                          # head + 1 worker, 1 CPU and no GPU each
    c = LoopbackCluster(workers=0, cpus=8, gpus=4,          # one node with 4 logical GPUs (none need exist)
                        env={"SCANNER_ALLOW_CPU_FALLBACK": "1"})
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from fixtures_faults import scanner_env
from fixtures_sweep import free_port

RAY = str(Path(sys.executable).with_name("ray"))
NODE_OPTS = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats",
             "--object-store-memory", str(80 * 1024**2), "--block"]  # 80 MB: the tiny sweeps ship kilobytes


__all__ = ["LoopbackCluster", "cluster", "cluster_env", "running", "trial_actor_nodes"]


def cluster_env(**extra: str | None) -> dict[str, str]:
    """The environment of a test cluster's nodes and of the ``scanner`` processes that join it. With logical GPUs,
    CUDA_VISIBLE_DEVICES must not be "" on the node (Ray would read it as "no GPU id"): pass
    ``CUDA_VISIBLE_DEVICES=None`` to drop it."""
    env = scanner_env()
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class LoopbackCluster:
    """A head and ``workers`` worker nodes, each a ``ray start --block`` in its own process group, with ``cpus`` CPUs
    and ``gpus`` (logical) GPUs per node."""

    def __init__(self, workers: int = 1, cpus: int = 1, gpus: int = 0, env: dict[str, str | None] | None = None):
        self.root = Path(tempfile.mkdtemp(prefix="rayc_", dir="/tmp"))  # short: Ray's Unix sockets live under it
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.workers, self.cpus, self.gpus = workers, cpus, gpus
        self.env = cluster_env(**(env or {}))
        self.procs: list[subprocess.Popen] = []

    def _start(self, args: list[str], temp: str) -> None:
        log = open(self.root / f"{temp}.log", "w")
        resources = ["--num-cpus", str(self.cpus), "--num-gpus", str(self.gpus)]
        self.procs.append(subprocess.Popen([RAY, "start", *args, "--temp-dir", str(self.root / temp), *resources,
                                            *NODE_OPTS], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def start(self) -> None:
        self._start(["--head", "--port", str(self.port), "--include-dashboard=false"], "h")
        self.wait_for_nodes(1)
        for i in range(self.workers):
            self._start(["--address", self.address], "w" if i == 0 else f"w{i}")
            self.wait_for_nodes(2 + i)

    def nodes(self) -> list[dict]:
        """Alive nodes, asked by a short subprocess (this process is bound to the session's Ray)."""
        code = ("import json, ray; ray.init(address=%r, logging_level='ERROR', log_to_driver=False); "
                "print(json.dumps([n['Resources'] for n in ray.nodes() if n['Alive']]))" % self.address)
        out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=60)
        return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else []

    def wait_for_nodes(self, n: int, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError("ray start exited:\n" + self.logs())
            if len(self.nodes()) >= n:
                return
            time.sleep(1)
        raise RuntimeError(f"the cluster never had {n} nodes:\n" + self.logs())

    def logs(self) -> str:
        return "\n".join(p.read_text()[-2000:] for p in self.root.glob("*.log"))

    def own_processes(self) -> list[psutil.Process]:
        """Every live process started for this cluster: descendants of our ``ray start``s, or naming our folder."""
        found = {}
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if str(self.root) in " ".join(proc.info["cmdline"] or []):
                    found[proc.pid] = proc
            except psutil.Error:
                continue
        for p in self.procs:
            try:
                for child in psutil.Process(p.pid).children(recursive=True):
                    found[child.pid] = child
            except psutil.NoSuchProcess:
                pass
        return list(found.values())

    def stop(self) -> list[psutil.Process]:
        """SIGTERM our process groups (worker first), then SIGKILL whatever of ours is left; returns survivors."""
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(10)  # ray start --block stops its node on SIGTERM; a slow one gets SIGKILL below
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
        _, alive = psutil.wait_procs(self.own_processes(), timeout=15)
        for proc in alive:
            proc.kill()
        _, alive = psutil.wait_procs(alive, timeout=10)
        return alive


def trial_actor_nodes(cluster: LoopbackCluster, stop: threading.Event, seen: Counter) -> None:
    """While the sweep runs: which node (head 'h' / worker 'w') hosts a busy trial actor (``ray::`` but not IDLE)."""
    while not stop.is_set():
        for proc in cluster.own_processes():
            try:
                title = " ".join(proc.cmdline())
                if title.startswith("ray::") and "IDLE" not in title:
                    env_dir = next((a for a in proc.cmdline() if str(cluster.root) in a), "")
                    raylet = next((a for a in proc.parents() if "raylet" in a.name()), None)
                    node = _node_of(cluster, raylet) if raylet else env_dir
                    seen[node] += 1
            except psutil.Error:
                continue
        stop.wait(0.5)


def _node_of(cluster: LoopbackCluster, raylet: psutil.Process) -> str:
    text = " ".join(raylet.cmdline())
    return "h" if f"{cluster.root}/h/" in text else "w" if f"{cluster.root}/w/" in text else "?"


@contextlib.contextmanager
def running(c: LoopbackCluster) -> Iterator[LoopbackCluster]:
    """Start the cluster; on the way out stop it and check that none of its processes survived."""
    try:
        c.start()
        yield c
    finally:
        survivors = c.stop()
        shutil.rmtree(c.root, ignore_errors=True)
        assert not survivors, f"stray Ray processes survived: {[p.pid for p in survivors]}"


@pytest.fixture
def cluster():
    """Head + one worker, 1 CPU each: the two-node cluster."""
    with running(LoopbackCluster()) as c:
        yield c
