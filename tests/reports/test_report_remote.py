"""The report from a real MLflow tracking server (HTTP, proxied artifacts), as a remote store would be used."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_report_fixture_store import SPECS, make_sweep
from test_report_ui import free_port, wait_for_200

from reports import build_report


@pytest.fixture
def server(tmp_path):
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen(
        [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_for_200(f"http://127.0.0.1:{port}/health", 180) == 200
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_report_from_a_tracking_server(server, tmp_path):
    from mlflow.tracking import MlflowClient

    store = make_sweep(tmp_path, uri=server)
    client = MlflowClient(server)
    client.set_tag(store["parent"], "mlflow.note.content", "Optuna study: lartpc-test, 8 trials")
    index = build_report("lartpc-test", server, tmp_path / "report")
    html = index.read_text()
    assert 'alt="Confusion matrix"' in html and 'alt="Score distributions per true class"' in html  # via the proxy
    table = pd.read_csv(index.parent / "ranking.csv")
    assert table["trial"].iloc[0] == SPECS[1].name
    assert table["link"].iloc[0].startswith(f"{server}/#/experiments/")
    build_report("lartpc-test", server, tmp_path / "report")  # a second report replaces the link, keeps the rest
    note = client.get_run(store["parent"]).data.tags["mlflow.note.content"]
    assert note.startswith("Optuna study: lartpc-test") and note.count("**Report**:") == 1
    assert "report/index.html" in {f.path for f in client.list_artifacts(store["parent"], "report")}
