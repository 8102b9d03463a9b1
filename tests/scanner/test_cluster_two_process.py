"""A real two-node Ray cluster on loopback (``ray start --head`` + ``ray start --address``), each node with its own
temp folder and 1 CPU; ``scanner run --address`` in a subprocess (this test session has its own Ray already, and a
process can ``ray.init`` once). Stopped by PID, never with ``ray stop``, which would also stop the session's Ray."""

from __future__ import annotations

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

import psutil
import pytest
from mlflow.tracking import MlflowClient

from fixtures_sweep import REPO, free_port, write_tiny_space

RAY = str(Path(sys.executable).with_name("ray"))
NODE_OPTS = ["--num-cpus", "1", "--num-gpus", "0", "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
             "--object-store-memory", str(80 * 1024**2), "--block"]  # 80 MB: the tiny sweep ships kilobytes


def _env() -> dict[str, str]:
    env = dict(os.environ, RAY_AUTH_MODE="disabled", CUDA_VISIBLE_DEVICES="", TQDM_DISABLE="1",
               RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(REPO))
    env.pop("RAY_ADDRESS", None)
    return env


class LoopbackCluster:
    """Head + one worker node, each a ``ray start --block`` in its own process group."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="rayc_", dir="/tmp"))  # short: Ray's Unix sockets live under it
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []

    def _start(self, args: list[str], temp: str) -> None:
        log = open(self.root / f"{temp}.log", "w")
        self.procs.append(subprocess.Popen([RAY, "start", *args, "--temp-dir", str(self.root / temp), *NODE_OPTS],
                                           env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def start(self) -> None:
        self._start(["--head", "--port", str(self.port), "--include-dashboard=false"], "h")
        self.wait_for_nodes(1)
        self._start(["--address", self.address], "w")
        self.wait_for_nodes(2)

    def nodes(self) -> list[dict]:
        """Alive nodes, asked by a short subprocess (this process is bound to the session's Ray)."""
        code = ("import json, ray; ray.init(address=%r, logging_level='ERROR', log_to_driver=False); "
                "print(json.dumps([n['Resources'] for n in ray.nodes() if n['Alive']]))" % self.address)
        out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=60)
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


@pytest.fixture
def cluster():
    c = LoopbackCluster()
    try:
        c.start()
        yield c
    finally:
        survivors = c.stop()
        shutil.rmtree(c.root, ignore_errors=True)
        assert not survivors, f"stray Ray processes survived: {[p.pid for p in survivors]}"


@pytest.mark.slow
def test_sweep_on_a_two_node_loopback_cluster(tmp_path, cluster):
    nodes = cluster.nodes()
    assert len(nodes) == 2 and sum(n.get("CPU", 0) for n in nodes) == 2

    # Bad input against a cluster: 2 CPUs per trial fit in the cluster's sum but on no node. Exit 2, nothing left.
    greedy = write_tiny_space(tmp_path, "greedy")
    greedy.write_text(greedy.read_text().replace("cpu: 1,", "cpu: 2,"))
    bad = subprocess.run([sys.executable, "-m", "scanner", "run", str(greedy), "--address", cluster.address,
                          "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
                         cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "resources.cpu" in bad.stderr, bad.stderr[-2000:]
    assert not (tmp_path / "scans" / "greedy").exists()

    space = write_tiny_space(tmp_path, "duo", trials=3, epochs=2)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    seen: Counter = Counter()
    stop = threading.Event()
    watcher = threading.Thread(target=trial_actor_nodes, args=(cluster, stop, seen), daemon=True)
    watcher.start()
    try:
        done = subprocess.run([sys.executable, "-m", "scanner", "run", str(space), "--address", cluster.address,
                               "--tracking-uri", uri, "--quiet"],
                              cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    finally:
        stop.set()
        watcher.join(10)
    assert done.returncode == 0, done.stderr[-3000:]

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("duo")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("scan.role") == "parent"]
    children = [r for r in runs if "scan.trial_id" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["scan.ray_address"] == cluster.address
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    assert json.loads((tmp_path / "scans" / "duo" / "scan.json").read_text())["ray_address"] == cluster.address
    # 1 CPU per node and 1 per trial: two trials at once can only run one on each node.
    assert seen["h"] > 0 and seen["w"] > 0, f"trial actors seen per node: {dict(seen)}"
