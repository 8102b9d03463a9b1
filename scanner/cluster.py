"""Joining Ray: a private local Ray, or an existing cluster checked before the sweep writes anything."""

from __future__ import annotations

import importlib.abc
import os
import socket
import sys
from importlib.machinery import PathFinder
from typing import Sequence

import ray

from search_spaces import SpaceFile, check_resources
from trainables.environ import scoped_environ
from trainables.errors import BadInput

# Ray runs its workers at nice 15, so the driver (and any other job on the node) preempts the trials, and a trial's
# torch threads stall at every barrier: on a loaded 2-core box a trial trained 2.5x slower than the same loop run
# by hand. Trials are the work here, so they run at the priority a user's own `python train.py` would get.
WORKER_NICENESS = "RAY_worker_niceness"
# Ray puts the driver's working folder first on every worker's sys.path (its job config's driver sys.path), so a
# user's `search_spaces/` folder of YAML files, or their own `trainables` package, would replace ours in the trials.
# This hook runs in each worker before Ray adds that folder: modules found without it keep winning over it.
WORKER_SETUP_HOOK = "scanner.cluster.driver_folder_last"


def ray_init(address: str | None) -> bool:
    """A private local Ray unless --address; never attaches by accident. True when this call started it."""
    if address:
        probe_address(address)
    if ray.is_initialized():  # a caller (a test session, a notebook) already chose the cluster
        return False
    try:
        if address and address.startswith("ray://"):
            ray.init(address=address, runtime_env=worker_runtime_env())  # Ray Client takes no local-node options
        else:
            # read when the node starts its workers: the user's own setting wins, and the process gets it back
            niceness = os.environ.get(WORKER_NICENESS, "0" if not address else None)
            with scoped_environ(**{WORKER_NICENESS: niceness}):
                ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
                         logging_level="ERROR", runtime_env=worker_runtime_env())
    except ConnectionError as exc:
        if not address:
            raise
        raise BadInput(f"--address {address}: no Ray cluster answers there ({str(exc).splitlines()[0][:160]}); "
                       f"start one with 'ray start --head' or drop --address for a private local Ray") from None
    return True


def worker_runtime_env() -> dict[str, str]:
    return {"worker_process_setup_hook": WORKER_SETUP_HOOK}


class InstalledFirst(importlib.abc.MetaPathFinder):
    """Sits right before the path finder. A top-level module found on ``own_path``, or by an installed finder after
    the path finder (an editable install's), wins over one that only folders added to ``sys.path`` later provide.
    Submodules follow their package's ``__path__``; a module found nowhere else (the user's own) is left to the
    normal search."""

    def __init__(self, own_path: Sequence[str]):
        self.own_path = list(own_path)

    def find_spec(self, name, path=None, target=None):
        if path is not None:
            return None
        spec = PathFinder.find_spec(name, self.own_path)
        if spec is not None and spec.loader is not None:  # loader None: only a namespace portion
            return spec
        for finder in sys.meta_path[sys.meta_path.index(PathFinder) + 1:]:
            found = finder.find_spec(name, None, target) if hasattr(finder, "find_spec") else None
            if found is not None:
                return found
        return spec


def driver_folder_last() -> None:
    """Ray's worker set-up hook: it runs before Ray adds the driver's folders to the worker's sys.path."""
    if PathFinder in sys.meta_path and not any(isinstance(f, InstalledFirst) for f in sys.meta_path):
        sys.meta_path.insert(sys.meta_path.index(PathFinder), InstalledFirst(sys.path))


def probe_address(address: str, timeout_s: float = 5.0) -> None:
    """host:port (or ray://host:port) that nobody listens on: one line now, not Ray's minutes of GCS retries."""
    hostport = address.split("://", 1)[-1]
    if address == "auto" or ":" not in hostport:
        return  # 'auto' finds the address itself, and fails fast when there is none
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return
    except (OSError, ValueError) as exc:
        raise BadInput(f"--address {address}: no Ray cluster answers there ({type(exc).__name__}); start one with "
                       f"'ray start --head' or drop --address for a private local Ray") from None


def cluster_resources() -> tuple[float, float]:
    res = ray.cluster_resources()
    return float(res.get("CPU", 0)), float(res.get("GPU", 0))


def check_cluster(space: SpaceFile) -> None:
    """Resources the joined cluster cannot give are bad input (a trial would stay PENDING forever)."""
    check_resources(space, *largest_node(space.resources))


def largest_node(res) -> tuple[float, float]:
    """CPUs and GPUs of a live node that can hold one trial (else the biggest): a trial's bundle never spans nodes."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if not nodes:
        return cluster_resources()
    fitting = [r for r in nodes if r.get("CPU", 0) >= res.cpu and r.get("GPU", 0) >= res.gpu]
    node = fitting[0] if fitting else max(nodes, key=lambda r: (r.get("GPU", 0), r.get("CPU", 0)))
    return float(node.get("CPU", 0)), float(node.get("GPU", 0))


def stop_ray() -> None:
    ray.shutdown()
