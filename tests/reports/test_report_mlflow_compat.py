"""The calls a report makes beyond MlflowClient's public methods, pinned against the public ones on a real sqlite
store: if an MLflow upgrade moves them, these tests say so in one place."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from fixtures_tracking import fresh_store
from mlflow.entities import Metric

from reports._fetch_extra import fetch_histories
from reports._mlflow_compat import bulk_histories, latest_steps, local_store_path, open_client


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    uri = fresh_store(tmp_path_factory.mktemp("compat"))
    client = open_client(uri)
    exp = client.create_experiment("compat")
    ids = []
    for k in range(3):
        rid = client.create_run(exp).info.run_id
        metrics = [Metric("val/loss", 1.0 / (e + k), 1000 + e, e) for e in range(1, 6)]
        metrics += [Metric("val/loss", 0.123, 2000, 3)]  # a restored epoch logged again at the same step
        metrics += [Metric("best/val/purity/NC", math.nan if k == 1 else 0.5, 1000 + e, e) for e in (1, 2)]
        metrics += [Metric("train/lr", 1e-3, 1000, 1)] if k != 2 else []  # absent from one run
        client.log_batch(rid, metrics=metrics)
        ids.append(rid)
    return uri, client, ids


def test_bulk_histories_equal_one_history_call_per_run(runs):
    uri, client, ids = runs
    for key in ("val/loss", "train/lr", "best/val/purity/NC"):
        bulk = bulk_histories(client, ids, key)
        for rid in ids:
            one = sorted((m.step, m.value) for m in client.get_metric_history(rid, key))
            got = bulk.get(rid, [])
            assert len(got) == len(one), (key, rid)
            for (s1, v1), (s2, v2) in zip(got, one):
                assert s1 == s2 and (v1 == v2 or (math.isnan(v1) and math.isnan(v2)))
    assert fetch_histories(uri, ids, ["train/lr"])[ids[2]] == {}  # absent keys are left out


def test_latest_steps_equal_the_public_proto(runs):
    _, client, ids = runs
    for rid in ids:
        run = client.get_run(rid)
        assert latest_steps(run) == {m.key: m.step for m in run.data.to_proto().metrics}
        assert latest_steps(run)["val/loss"] == 5


@pytest.mark.parametrize("uri, path", [("sqlite:////abs/m.db", "/abs/m.db"), ("sqlite:///rel/m.db", "rel/m.db"),
                                       ("sqlite:///m%20b.db", "m b.db"), ("sqlite://", None),
                                       ("sqlite:///:memory:", None), ("http://host:5000", None),
                                       ("file:///abs/mlruns", "/abs/mlruns"), ("./mlruns", "./mlruns")])
def test_local_store_paths(uri, path):
    assert local_store_path(uri) == (None if path is None else Path(path))
