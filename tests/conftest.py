"""Session-wide test settings: CPU only, quiet Ray, a non-interactive matplotlib, small thread pools."""

from __future__ import annotations

import os

# Set before anything imports ray/torch/matplotlib.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DISABLE_DASHBOARD", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_worker_niceness", "0")  # as scanner.cluster.ray_init does for a private Ray
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.pop("MLFLOW_TRACKING_URI", None)

import pytest  # noqa: E402


@pytest.fixture
def one_torch_thread():
    """Model tests on 2 shared cores: one intra-op thread each is faster than two fighting threads."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# Shared fixtures live in small modules next to this file (tests/ is on sys.path when pytest loads this conftest).
from fixtures_data import *  # noqa: E402,F401,F403  tiny HDF5 event files
from fixtures_sweep import *  # noqa: E402,F401,F403  MLflow server, local Ray, the shared tiny sweep
from fixtures_faults import *  # noqa: E402,F401,F403  sweeps hit by Ctrl-C, SIGKILL and races, run once each
from fixtures_evaluate import *  # noqa: E402,F401,F403  tiny checkpoints in a sweep's MLflow layout (systematics)
from fixtures_tracking import *  # noqa: E402,F401,F403  a sqlite MLflow store per test, its schema built once
from fixtures_cli import *  # noqa: E402,F401,F403  the CLI as a user runs it, a small events file, a pretrained run
from fixtures_checkpoint import *  # noqa: E402,F401,F403  trained tiny checkpoints, built once per session
from fixtures_cluster import *  # noqa: E402,F401,F403  a Ray cluster of real processes on loopback
from fixtures_telemetry import *  # noqa: E402,F401,F403  recorded GPU structures, scripted CUDA events and clocks
