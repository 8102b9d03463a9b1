"""The MLflow helpers and the spooled writer, against a real sqlite MLflow store."""

from __future__ import annotations

import json
import os

import pytest
from fixtures_sweep import free_port
from mlflow.tracking import MlflowClient

from scanner.tracking import http_env as tracking_http
from scanner import tracking
from scanner.tracking.naming import short_value
from trainables.errors import BadInput


def test_run_name_reads_like_the_trial():
    params = {"model": "resnet34", "loss": "focal", "lr": 0.003, "ema_decay": 0.0, "batch_size": 64}
    assert tracking.trial_run_name(7, params, ["model", "loss", "lr"], False) == "t07 resnet34 focal lr=3e-3"
    base = {"model": "resnet18", "loss": "ce", "lr": 1e-3}
    assert tracking.trial_run_name(0, base, ["lr"], True) == "t00 baseline resnet18 ce lr=1e-3"
    assert short_value(0.25) == "0.25" and short_value(1.5e-4) == "1.5e-4"


def test_trial_tags_hold_the_contract_names():
    tags = tracking.trial_tags(
        name="s", trial_id="abc_00001", space_hash="h", data_hash="d", baseline=True, varied=["lr"],
        class_names=["a", "b"], git_sha="x",
    )
    assert tags["scan.baseline"] == "true" and json.loads(tags["scan.varied"]) == ["lr"]
    assert json.loads(tags["scan.class_names"]) == ["a", "b"]
    assert {"scan.name", "scan.trial_id", "scan.space_hash", "scan.git_sha", "scan.data_hash"} <= set(tags)


def test_unreachable_server_is_one_bad_input_line():
    with pytest.raises(BadInput, match="does not answer"):
        tracking.check_reachable(f"http://127.0.0.1:{free_port()}", timeout_s=2)


def test_sqlite_store_needs_a_folder(tmp_path):
    tracking.check_reachable(f"sqlite:///{tmp_path}/new/sub/m.db")  # a missing folder is created later: fine
    (tmp_path / "afile").write_text("x")
    with pytest.raises(BadInput, match="not a folder"):
        tracking.check_reachable(f"sqlite:///{tmp_path}/afile/m.db")


def test_writer_nests_runs_dedupes_steps_and_ends_them(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    client = MlflowClient(uri)
    exp = tracking.ensure_experiment(client, "w")
    assert tracking.ensure_experiment(client, "w") == exp
    writer = tracking.MlflowWriter(uri, tmp_path / "journal.db")
    writer.start_run(tracking.PARENT_KEY, exp, "w", {"scan.role": "parent"}, {"scan.role": "parent"})
    writer.start_run("t1", exp, "t01 x", {"scan.trial_id": "t1"}, {"scan.trial_id": "t1"}, parent_key="parent")
    writer.log_params("t1", {"lr": 0.1, "init": None})
    for epoch in (1, 2, 2, 1):  # a restored trial re-reports epochs it already logged
        writer.log_metrics("t1", {"val/loss": 1.0 / epoch, "note": "text is skipped"}, step=epoch)
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "confusion.json").write_text("{}")
    writer.log_artifacts("t1", tracking.checkpoint_artifact_files(tmp_path / "ck"), "val")
    writer.end_run("t1", "FINISHED")
    writer.end_run(tracking.PARENT_KEY, "FINISHED")
    assert writer.close(timeout_s=60)

    runs = client.search_runs([exp])
    assert len(runs) == 2
    child = next(r for r in runs if r.data.tags.get("scan.trial_id") == "t1")
    parent = next(r for r in runs if r.data.tags.get("scan.role") == "parent")
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.info.status == "FINISHED" and child.data.params == {"lr": "0.1", "init": "None"}
    assert [m.step for m in client.get_metric_history(child.info.run_id, "val/loss")] == [1, 2]
    assert [a.path for a in client.list_artifacts(child.info.run_id, "val")] == ["val/confusion.json"]

    # A second writer (a resume) finds the same run by its trial id instead of creating another.
    again = tracking.MlflowWriter(uri, tmp_path / "journal.db")
    again.start_run("t1", exp, "t01 x", {"scan.trial_id": "t1"}, {"scan.trial_id": "t1"}, parent_key="parent")
    assert again.log_metrics("t1", {"val/loss": 0.1}, step=2) == 0  # the journal remembers what was logged
    again.log_metrics("t1", {"val/loss": 0.2}, step=3)
    again.end_run("t1", "KILLED")
    assert again.close(timeout_s=60)
    assert len(client.search_runs([exp])) == 2
    assert [m.step for m in client.get_metric_history(child.info.run_id, "val/loss")] == [1, 2, 3]
    assert client.get_run(child.info.run_id).info.status == "KILLED"


def test_journal_keeps_everything_while_the_server_is_away(tmp_path):
    """Calls return at once while nothing answers; a later writer on the same journal delivers all of it."""
    away = tracking.MlflowWriter(f"http://127.0.0.1:{free_port()}", tmp_path / "journal.db")
    away.start_run("t1", "0", "t01", {"scan.trial_id": "t1"}, {"scan.trial_id": "t1"})
    for epoch in range(1, 4):
        away.log_metrics("t1", {"val/loss": float(epoch)}, step=epoch)
    away.end_run("t1", "FINISHED")
    assert not away.close(timeout_s=1.5)
    assert away.last_error

    uri = f"sqlite:///{tmp_path}/m.db"
    client = MlflowClient(uri)
    assert tracking.ensure_experiment(client, "Default") == "0"
    back = tracking.MlflowWriter(uri, tmp_path / "journal.db")
    assert back.close(timeout_s=60)
    run = client.search_runs(["0"])[0]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")] == [1, 2, 3]
    assert run.info.status == "FINISHED"


def test_fail_fast_http_settings_last_only_as_long_as_a_writer(tmp_path, monkeypatch):
    """One attempt per request while writers live (they retry themselves); MLflow's own retries after the last one
    closes, so a report or a notebook's client in the same process is not left failing fast."""
    keys = list(tracking_http.WRITER_HTTP_ENV)
    for key in keys:
        monkeypatch.delenv(key, raising=False)
    uri = f"sqlite:///{tmp_path}/m.db"
    first = tracking.MlflowWriter(uri, tmp_path / "a.db")
    second = tracking.MlflowWriter(uri, tmp_path / "b.db")
    assert {k: os.environ.get(k) for k in keys} == tracking_http.WRITER_HTTP_ENV
    assert first.close(timeout_s=30)
    assert {k: os.environ.get(k) for k in keys} == tracking_http.WRITER_HTTP_ENV  # the second writer still lives
    assert second.close(timeout_s=30)
    assert not any(key in os.environ for key in keys)

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")  # a user's own setting is theirs
    assert tracking.MlflowWriter(uri, tmp_path / "c.db").close(timeout_s=30)
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "300" and "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
