"""The report from a real MLflow tracking server (HTTP, proxied artifacts), as a remote store would be used."""

from __future__ import annotations

import pandas as pd
import pytest
from fixtures_report_store import SPECS, make_sweep
from fixtures_sweep import MlflowServer
from mlflow.tracking import MlflowClient

from reports import build_report


@pytest.fixture
def server(tmp_path):
    server = MlflowServer(tmp_path / "server", proxy_artifacts=True)
    server.root.mkdir()
    server.start(timeout_s=180)  # seen taking two minutes while other work loaded both cores
    yield server.uri
    server.stop()


@pytest.mark.slow
def test_report_from_a_tracking_server(server, tmp_path):
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
