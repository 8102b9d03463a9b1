"""The writer's journal under faults: a crash inside a producer call, a full disk, a close while the thread is busy."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import threading

import pytest

from fixtures_faults import fill, small_disk
from fixtures_sweep import free_port

from scanner import tracking


def test_a_crash_between_the_dedupe_row_and_the_op_loses_no_metric(sqlite_store):
    """The journal refuses the op row (as a process killed between the two writes would leave it): the value must
    not be marked as logged, so the producer's retry queues it."""
    writer = sqlite_store.writer()
    sqlite_store.start_trial(writer)
    assert writer.flush(30)
    with contextlib.closing(sqlite3.connect(sqlite_store.journal)) as db:
        db.execute("CREATE TRIGGER crash BEFORE INSERT ON ops BEGIN SELECT RAISE(ABORT, 'injected crash'); END")
        with pytest.raises(sqlite3.IntegrityError, match="injected crash"):
            writer.log_metrics("t1", {"val/loss": 0.5}, step=1)
        db.execute("DROP TRIGGER crash")
    assert writer.log_metrics("t1", {"val/loss": 0.5}, step=1) == 1
    assert writer.flush(30)
    run_id = writer.run_id("t1")
    assert writer.close(30)
    assert sqlite_store.history(run_id, "val/loss") == [(1, 0.5)]


# --------------------------------------------------------------------------------------------- a full disk


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 1 MiB file system (tmpfs; needs root), unmounted afterwards."""
    with small_disk(tmp_path / "disk", "1m") as mount:
        yield mount


def test_a_full_disk_keeps_the_journal_and_a_later_writer_delivers_it(tiny_disk, tmp_path, sqlite_store):
    """The journal's disk fills while MLflow is away: each producer call raises JournalFull (one line naming the
    journal), the journal keeps what it held, and once there is space a writer on it delivers everything."""
    journal = tiny_disk / "journal.db"
    away = tracking.MlflowWriter(f"http://127.0.0.1:{free_port()}", journal)
    sqlite_store.start_trial(away)
    for step in range(1, 4):
        assert away.log_metrics("t1", {"val/loss": float(step)}, step=step) == 1
    checkpoint = tmp_path / "ck"
    checkpoint.mkdir()
    (checkpoint / "confusion.json").write_text("{}" + " " * 200_000)
    fill(tiny_disk)

    with pytest.raises(tracking.JournalFull) as full:
        for step in range(4, 1000):  # sqlite may still fit a few rows in pages it already has
            away.log_metrics("t1", {"val/loss": float(step)}, step=step)
    assert str(full.value) == (f"cannot write the MLflow journal {journal}: no space left on device (it keeps what "
                               f"it holds; free some space, then resume)")
    assert full.value.errno == errno.ENOSPC
    with pytest.raises(tracking.JournalFull):
        away.log_artifacts("t1", [checkpoint / "confusion.json"], "val")
    assert not any(journal.with_suffix(".artifacts").glob("*"))  # no half-copied spool folder
    last_queued = step - 1
    assert not away.close(timeout_s=1)

    (tiny_disk / "filler").unlink()
    back = tracking.MlflowWriter(sqlite_store.uri, journal)
    back.log_artifacts("t1", [checkpoint / "confusion.json"], "val")
    assert back.flush(60)
    run_id = back.run_id("t1")
    assert back.close(30)
    assert [s for s, _ in sqlite_store.history(run_id, "val/loss")] == list(range(1, last_queued + 1))
    assert [a.path for a in sqlite_store.client.list_artifacts(run_id, "val")] == ["val/confusion.json"]


def test_no_space_while_spooling_an_artifact_is_journal_full(sqlite_store, tmp_path, monkeypatch):
    """The same failure where no small file system can be mounted: ENOSPC from the spool copy."""
    writer = sqlite_store.writer()
    sqlite_store.start_trial(writer)
    (tmp_path / "confusion.json").write_text("{}")

    def no_space(src, dst, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    with monkeypatch.context() as patch:
        patch.setattr(shutil, "copy2", no_space)
        with pytest.raises(tracking.JournalFull, match="no space left on device"):
            writer.log_artifacts("t1", [tmp_path / "confusion.json"], "val")
    assert not any(sqlite_store.journal.with_suffix(".artifacts").glob("*"))
    writer.log_artifacts("t1", [tmp_path / "confusion.json"], "val")
    assert writer.flush(30)
    run_id = writer.run_id("t1")
    assert writer.close(30)
    assert [a.path for a in sqlite_store.client.list_artifacts(run_id, "val")] == ["val/confusion.json"]


# --------------------------------------------------------------------------------------------- close


@pytest.mark.slow
def test_close_does_not_pull_the_journal_from_under_a_busy_thread(sqlite_store, monkeypatch):
    """MLflow's sqlite store is locked (another process writes) for longer than close waits: the thread is still
    inside log_batch when close gives up. When the lock goes, the thread must finish its op in its own journal
    connection (no 'closed database' error in the thread), and the journal ends empty."""
    writer = sqlite_store.writer()
    sqlite_store.start_trial(writer)
    assert writer.flush(30)
    run_id = writer.run_id("t1")
    thread_errors = []
    monkeypatch.setattr(threading, "excepthook", lambda args: thread_errors.append(args.exc_value))

    with sqlite_store.locked_for(17.0):
        writer.log_metrics("t1", {"val/loss": 0.5}, step=1)
        writer.close(timeout_s=1)
        for thread in threading.enumerate():
            if thread.name == "mlflow-writer":
                thread.join(30)

    assert thread_errors == []
    assert sqlite_store.queued_ops() == 0
    assert sqlite_store.history(run_id, "val/loss") == [(1, 0.5)]


def test_ending_runs_directly_first_lets_a_queued_start_through(sqlite_store):
    """A full disk ends the runs straight through MLflow. A trial whose start is still queued (MLflow's store is
    busy for a moment) must be created before that, and so ended FAILED, not created afterwards and left RUNNING."""
    writer = sqlite_store.writer()
    with sqlite_store.locked_for(2.0):
        sqlite_store.start_trial(writer)
        assert writer.end_runs_directly("no space left on device under scans/x", flush_s=30) == []
    writer.close(0.0, say=False)
    runs = sqlite_store.client.search_runs([sqlite_store.experiment_id])
    assert [(r.info.status, r.data.tags["scan.failure"]) for r in runs] == [
        ("FAILED", "no space left on device under scans/x")]


def test_ending_runs_directly_finds_a_run_the_full_journal_could_not_record(sqlite_store):
    """On a full disk the writer can create a run in MLflow and then fail to write its id into the journal: that
    run is found by the sweep's instance tag and ended FAILED too; a run of another instance is left alone."""
    writer = sqlite_store.writer()
    sqlite_store.start_trial(writer, "t1", **{"scan.instance": "i1"})
    assert writer.flush(30)
    client, experiment = sqlite_store.client, sqlite_store.experiment_id
    client.create_run(experiment, tags={"scan.instance": "i1", "scan.trial_id": "t2"})  # its id is not in the journal
    other = client.create_run(experiment, tags={"scan.instance": "i0", "scan.trial_id": "t9"}).info.run_id
    why = "no space left on device under scans/x"
    assert writer.end_runs_directly(why, 30, experiment, {"scan.instance": "i1"}) == []
    writer.close(0.0, say=False)
    ended = {r.data.tags["scan.trial_id"]: (r.info.status, r.data.tags.get("scan.failure"))
             for r in client.search_runs([experiment])}
    assert ended == {"t1": ("FAILED", why), "t2": ("FAILED", why), "t9": ("RUNNING", None)}
    assert client.get_run(other).info.status == "RUNNING"
