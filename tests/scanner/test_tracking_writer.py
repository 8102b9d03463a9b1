"""Run names and tags, and the spooled writer, against a real sqlite MLflow store (the store helpers are in
test_tracking_store.py, refusals and faults in test_tracking_refusals.py and test_tracking_faults.py)."""

from __future__ import annotations

import json
import os
import pickle

from fixtures_sweep import free_port

from scanner.tracking import http_env as tracking_http
from scanner import tracking
from scanner.tracking.naming import short_value


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


def test_writer_nests_runs_dedupes_steps_and_ends_them(sqlite_store, tmp_path):
    uri, client, exp = sqlite_store.uri, sqlite_store.client, sqlite_store.experiment_id
    assert tracking.ensure_experiment(client, "writer") == exp
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


def test_journal_keeps_everything_while_the_server_is_away(sqlite_store):
    """Calls return at once while nothing answers; a later writer on the same journal delivers all of it."""
    away = tracking.MlflowWriter(f"http://127.0.0.1:{free_port()}", sqlite_store.journal)
    sqlite_store.start_trial(away)
    for epoch in range(1, 4):
        away.log_metrics("t1", {"val/loss": float(epoch)}, step=epoch)
    away.end_run("t1", "FINISHED")
    assert not away.close(timeout_s=1.5)
    assert away.last_error

    back = sqlite_store.writer()
    assert back.close(timeout_s=60)
    run = sqlite_store.client.search_runs([sqlite_store.experiment_id])[0]
    assert [s for s, _ in sqlite_store.history(run.info.run_id, "val/loss")] == [1, 2, 3]
    assert run.info.status == "FINISHED"


def test_fail_fast_http_settings_last_only_as_long_as_a_writer(sqlite_store, tmp_path, monkeypatch):
    """One attempt per request while writers live (they retry themselves); MLflow's own retries after the last one
    closes, so a report or a notebook's client in the same process is not left failing fast."""
    keys = list(tracking_http.WRITER_HTTP_ENV)
    for key in keys:
        monkeypatch.delenv(key, raising=False)
    uri = sqlite_store.uri
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


def test_delete_tags_removes_them_and_a_replay_is_no_refusal(sqlite_store):
    writer = sqlite_store.writer()
    sqlite_store.start_trial(writer, **{"scan.failure": "killed", "scan.status": "completed"})
    writer.delete_tags("t1", ["scan.failure"])
    writer.delete_tags("t1", ["scan.failure"])  # as a journal replayed after a crash offers it again
    assert writer.flush(30)
    run_id, dropped = writer.run_id("t1"), writer.dropped_records()
    assert writer.close(30)
    tags = sqlite_store.client.get_run(run_id).data.tags
    assert "scan.failure" not in tags and tags["scan.status"] == "completed" and dropped == []


def test_delete_run_moves_the_run_to_the_trash(sqlite_store):
    writer = sqlite_store.writer()
    sqlite_store.start_trial(writer)
    writer.delete_run("t1")
    assert writer.flush(30)
    run_id = writer.run_id("t1")
    assert writer.close(30)
    assert sqlite_store.client.get_run(run_id).info.lifecycle_stage == "deleted"
    assert sqlite_store.client.search_runs([sqlite_store.experiment_id]) == []


def test_use_run_addresses_a_run_found_by_a_search(sqlite_store):
    """A leftover run of a killed driver, found by its tags, is tagged and ended under a key of our choosing."""
    orphan = sqlite_store.client.create_run(sqlite_store.experiment_id, tags={"scan.trial_id": "old"})
    writer = sqlite_store.writer()
    writer.use_run("run:orphan", orphan.info.run_id)
    assert writer.run_id("run:orphan") == orphan.info.run_id  # known at once, before the thread ran
    writer.set_tags("run:orphan", {"scan.status": "failed"})
    writer.end_run("run:orphan", "KILLED")
    assert writer.close(30)
    run = sqlite_store.client.get_run(orphan.info.run_id)
    assert run.data.tags["scan.status"] == "failed" and run.info.status == "KILLED"
    assert len(sqlite_store.client.search_runs([sqlite_store.experiment_id])) == 1


def test_journal_run_ids_reads_the_journal_and_pickles(sqlite_store, tmp_path):
    lookup = tracking.JournalRunIds(sqlite_store.journal)
    assert lookup("t1") is None and not sqlite_store.journal.exists()  # reading creates no journal
    writer = sqlite_store.writer()
    sqlite_store.start_trial(writer)
    assert writer.flush(30)
    run_id = writer.run_id("t1")
    copy = pickle.loads(pickle.dumps(lookup))  # as Tune ships the searcher
    assert copy("t1") == run_id and lookup("t1") == run_id and copy("t2") is None
    assert writer.close(30)
