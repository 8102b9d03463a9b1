"""A real two-node Ray cluster on loopback (``ray start --head`` + ``ray start --address``), each node with its own
temp folder and 1 CPU; ``scanner run --address`` in a subprocess (tests/fixtures_cluster.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter

import pytest
from mlflow.tracking import MlflowClient

from fixtures_cluster import cluster_env, trial_actor_nodes
from fixtures_sweep import write_tiny_space


@pytest.mark.slow
def test_sweep_on_a_two_node_loopback_cluster(tmp_path, cluster):
    nodes = cluster.nodes()
    assert len(nodes) == 2 and sum(n.get("CPU", 0) for n in nodes) == 2

    # Bad input against a cluster: 2 CPUs per trial fit in the cluster's sum but on no node. Exit 2, nothing left.
    greedy = write_tiny_space(tmp_path, "greedy")
    greedy.write_text(greedy.read_text().replace("cpu: 1,", "cpu: 2,"))
    bad = subprocess.run([sys.executable, "-m", "scanner", "run", str(greedy), "--address", cluster.address,
                          "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
                         cwd=tmp_path, env=cluster_env(), capture_output=True, text=True, timeout=300)
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
                              cwd=tmp_path, env=cluster_env(), capture_output=True, text=True, timeout=600)
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
