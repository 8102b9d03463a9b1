"""The hand-written sweep store of ``fixtures_report_store`` reads back as written."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from fixtures_report_store import SPECS, make_sweep


@pytest.fixture
def sweep_store(tmp_path):
    return make_sweep(tmp_path)


def test_store_reads_back_as_written(sweep_store):
    client = MlflowClient(sweep_store["uri"])
    run = client.get_run(sweep_store["runs"][SPECS[1].name])
    assert run.data.metrics["best/val/accuracy"] == max(SPECS[1].acc)
    assert run.data.metrics["val/accuracy"] == SPECS[1].acc[-1]  # latest = last epoch
    assert run.data.tags["mlflow.parentRunId"] == sweep_store["parent"]
    assert {f.path for f in client.list_artifacts(run.info.run_id, "val")} == {"val/confusion.json",
                                                                                "val/predictions.h5"}
