"""Sweep fixtures: a session Ray, MLflow servers, and the one shared tiny sweep that read-only tests share."""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import ray
import requests

from scanner.sweep.lifecycle import run_sweep
from trainables.data import write_synthetic

REPO = Path(__file__).resolve().parents[1]  # the repo root; setup.cfg puts it on sys.path (pythonpath = .)

TINY_SPACE = """\
name: {name}
task: classification
data:
  path: tiny.h5
objective:
  metric: val/accuracy
  mode: max
budget:
  trials: {trials}
  max_epochs: {epochs}
  scheduler: asha
  grace_epochs: 1
  sampler: tpe
  seed: 0
  final_top: 1
resources: {{cpu: 1, gpu: 0, concurrent: 2}}
fixed:
  batch_size: 32
  num_workers: 0
baseline:
  model: small_cnn_tiny
  loss: ce
  lr: 1.0e-3
space:
  model: {{choice: [small_cnn_tiny, resnet_tiny]}}
  loss:  {{choice: [ce, focal]}}
  focal_gamma: {{when: {{loss: focal}}, float: [1.0, 3.0]}}
  lr:    {{float: [1.0e-3, 3.0e-2], log: true}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_tiny_space(folder: Path, name: str, trials: int = 3, epochs: int = 2) -> Path:
    """A tiny sweep file next to ``tiny.h5`` (written once per folder: 400 events of 16x16)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "tiny.h5").exists():
        write_synthetic(folder / "tiny.h5", events=400, size=16, seed=0, classes=("nc", "nue", "numu"), progress=False)
    path = folder / f"{name}.yaml"
    path.write_text(TINY_SPACE.format(name=name, trials=trials, epochs=epochs))
    return path


def import_project_before_chdir() -> None:
    """Import the packages while the working folder is the repo: after a chdir, tests/<pkg>/ (no __init__.py)
    would be found first as a namespace package and shadow the real one."""
    for name in ("search_spaces", "trainables.loop", "trainables.data", "scanner.sweep.lifecycle",
                 "scanner.targets"):
        importlib.import_module(name)
    try:
        importlib.import_module("reports")
    except ImportError:
        pass


@pytest.fixture(scope="session")
def ray_session():
    """ONE local Ray for every in-process sweep of the test session (2 CPUs: the machine)."""
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


# What a sweep sets for a while: Tune's and Ray's switches, MLflow's HTTP and progress-bar settings, the loggers it
# quiets (third-party libraries also set variables when first imported; those are theirs, not the sweep's)
TOUCHED_ENV = ("RAY_AIR_NEW_OUTPUT", "TUNE_DISABLE_SIGINT_HANDLER", "RAY_worker_niceness",
               "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT",
               "HF_HUB_OFFLINE")
TOUCHED_LOGGERS = ("ray.tune", "mlflow.store.db.utils", "optuna")


def touched_settings() -> dict:
    return {**{key: os.environ.get(key) for key in TOUCHED_ENV},
            **{f"logger {name}": logging.getLogger(name).level for name in TOUCHED_LOGGERS},
            "optuna verbosity": optuna.logging.get_verbosity()}


@dataclass
class TinySweep:
    folder: Path  # the working folder: scans/, mlflow.db, tiny.h5, tiny.yaml
    space_path: Path
    tracking_uri: str
    name: str
    exit_code: int
    output: str
    environ_changes: dict  # what the sweep left changed of the settings it touches: {key: (before, after)}
    sigint_kept: bool  # the SIGINT handler is the one the caller had


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory, ray_session) -> TinySweep:
    """3 trials + baseline, 2 epochs, 1 final, on 400 events of 16x16: shared by every test that only reads it."""
    import_project_before_chdir()

    folder = tmp_path_factory.mktemp("tiny_sweep")
    space = write_tiny_space(folder, "tiny")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    cwd = Path.cwd()
    out = io.StringIO()
    before, handler = touched_settings(), signal.getsignal(signal.SIGINT)
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(out):
            code = run_sweep(str(space), uri)
    finally:
        os.chdir(cwd)
    after = touched_settings()
    changes = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    return TinySweep(folder, space, uri, "tiny", code, out.getvalue(), changes,
                     signal.getsignal(signal.SIGINT) is handler)


class MlflowServer:
    """A real ``mlflow server`` on loopback that a test can stop and start again on the same store."""

    def __init__(self, root: Path, proxy_artifacts: bool = False):
        self.root, self.port = root, free_port()
        self.proxy_artifacts = proxy_artifacts  # artifacts through the server's HTTP proxy, as a remote store has them
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0) -> None:
        cmd = [sys.executable, "-m", "mlflow", "server", "--workers", "1", "--host", "127.0.0.1", "--port",
               str(self.port), "--backend-store-uri", f"sqlite:///{self.root / 'm.db'}",
               "--artifacts-destination" if self.proxy_artifacts else "--default-artifact-root", str(self.root / "art")]
        # No job runner (huey consumers for GenAI scorers): four extra processes that slow the start by ~20 s here.
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if requests.get(self.uri + "/health", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.3)
        raise RuntimeError("mlflow server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # our own process group (start_new_session), nothing else
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


@pytest.fixture
def mlflow_server(tmp_path):
    server = MlflowServer(tmp_path / "mlflow_server")
    server.root.mkdir()
    server.start()
    yield server
    server.stop()
