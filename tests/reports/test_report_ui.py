"""`scanner ui` for real: the MLflow UI answers HTTP 200 on loopback, then stops on SIGINT like Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest
from fixtures_sweep import free_port


def wait_for_200(url: str, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status
        except OSError:
            time.sleep(1)
    return -1


@pytest.mark.slow
def test_ui_serves_the_store_on_loopback_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.Popen([sys.executable, "-m", "scanner", "ui", "--port", str(port), "--tracking-uri", uri],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group: SIGINT reaches scanner and mlflow
    try:
        assert wait_for_200(f"http://127.0.0.1:{port}/", 180) == 200
        tree = [" ".join(p.cmdline()) for p in psutil.Process(proc.pid).children(recursive=True)]
        assert tree and not [c for c in tree if "_job_runner" in c or "huey" in c]  # no GenAI job runner
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert f"http://127.0.0.1:{port}" in out
    assert f"optuna-dashboard sqlite:///{tmp_path / 'scans' / 'optuna.db'}" in out
    with socket.socket() as s:  # the server is gone with its parent
        assert s.connect_ex(("127.0.0.1", port)) != 0
