"""When MLflow says no: the writer drops only the record MLflow refused, keeps the list in its journal, reports it on
the parent run; it retries only an absent or busy store; and a bug in the writer is an error, not an outage."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fixtures_sweep import free_port
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE
from mlflow.tracking import MlflowClient

from scanner import tracking
from scanner.tracking import faults
from trainables.contract import Artifact, Tag


def test_a_changed_param_loses_only_itself(sqlite_store):
    """A resumed trial offers a param with a new value: MLflow refuses that one param; the metrics queued before and
    after it, and the tags, all arrive."""
    writer = sqlite_store.writer()
    sqlite_store.start_trial(writer)
    writer.log_params("t1", {"lr": 0.1})
    assert writer.flush(30)
    writer.log_metrics("t1", {"val/loss": 1.0}, step=1)
    writer.log_params("t1", {"lr": 0.2, "momentum": 0.9})
    writer.log_metrics("t1", {"val/loss": 0.5}, step=2)
    writer.set_tags("t1", {Tag.STATUS: "completed"})
    assert writer.flush(30)
    run_id, dropped = writer.run_id("t1"), writer.dropped_records()
    assert writer.close(30)

    assert sqlite_store.history(run_id, "val/loss") == [(1, 1.0), (2, 0.5)]
    run = sqlite_store.client.get_run(run_id)
    assert run.data.params == {"lr": "0.1", "momentum": "0.9"} and run.data.tags[Tag.STATUS] == "completed"
    assert [(d.run_key, d.run_id, d.what) for d in dropped] == [("t1", run_id, "param lr=0.2")]
    assert "Changing param values is not allowed" in dropped[0].reason


def test_a_refused_metric_name_loses_only_itself(sqlite_store):
    """A class name MLflow refuses in a metric name (``nue+CC``) costs that one value, not the batch."""
    writer = sqlite_store.writer()
    sqlite_store.start_trial(writer)
    for step in (1, 2):
        writer.log_metrics("t1", {"val/accuracy": 0.5 * step, "val/efficiency/nue+CC": 0.4, "val/loss": 2.0 / step},
                           step=step)
    assert writer.flush(30)
    run_id, whats = writer.run_id("t1"), [d.what for d in writer.dropped_records()]
    assert writer.close(30)

    assert sqlite_store.history(run_id, "val/accuracy") == [(1, 0.5), (2, 1.0)]
    assert sqlite_store.history(run_id, "val/loss") == [(1, 2.0), (2, 1.0)]
    assert whats == ["metric val/efficiency/nue+CC=0.4 step 1", "metric val/efficiency/nue+CC=0.4 step 2"]


def test_what_was_dropped_survives_a_resume_and_is_reported_on_the_parent(sqlite_store, tmp_path, capsys):
    first = sqlite_store.writer()
    first.start_run(tracking.PARENT_KEY, sqlite_store.experiment_id, "sweep", {"scan.role": "parent"},
                    {"scan.role": "parent"})
    sqlite_store.start_trial(first)
    first.log_params("t1", {"lr": 0.1})
    first.log_metrics("t1", {"val/bad+name": 1.0}, step=1)
    assert first.close(30)  # the process ends: the list is in the journal, not in memory

    again = sqlite_store.writer()  # `scanner resume`
    again.log_params("t1", {"lr": 0.3})
    capsys.readouterr()
    assert tracking.report_dropped(again, tracking.PARENT_KEY, tmp_path) == 2
    said = capsys.readouterr().err.splitlines()
    assert said == [f"scanner: MLflow refused 2 record(s) for good; they are listed in {tmp_path / Artifact.DROPPED} "
                    f"and counted in the parent run's {Tag.DROPPED} tag"]
    assert again.flush(30)
    parent_id = again.run_id(tracking.PARENT_KEY)
    assert again.close(30)

    lines = (tmp_path / Artifact.DROPPED).read_text().splitlines()
    assert lines[0].startswith("# 2 records that MLflow refused")
    assert lines[1].startswith("t1 ") and "metric val/bad+name=1.0 step 1: " in lines[1]
    assert "param lr=0.3: " in lines[2] and "Changing param values" in lines[2]
    parent = again.client.get_run(parent_id)
    assert parent.data.tags[Tag.DROPPED] == "2"
    assert [a.path for a in again.client.list_artifacts(parent.info.run_id)] == [Artifact.DROPPED]


def test_nothing_dropped_writes_nothing(sqlite_store, tmp_path, capsys):
    writer = sqlite_store.writer()
    writer.start_run(tracking.PARENT_KEY, sqlite_store.experiment_id, "sweep", {"scan.role": "parent"},
                     {"scan.role": "parent"})
    assert tracking.report_dropped(writer, tracking.PARENT_KEY, tmp_path) == 0
    assert capsys.readouterr().err == ""
    assert writer.flush(30)
    parent = writer.client.get_run(writer.run_id(tracking.PARENT_KEY))
    assert writer.close(30)
    assert not (tmp_path / Artifact.DROPPED).exists() and Tag.DROPPED not in parent.data.tags


def test_a_bug_is_an_error_not_an_outage(sqlite_store):
    """An op the writer cannot read (here: a journal row without its status) is a bug: the writer stops, says so
    on the next call, and keeps the journal; it does not retry for ever as if MLflow were away."""
    writer = sqlite_store.writer()
    sqlite_store.start_trial(writer)
    assert writer.close(30)
    with contextlib.closing(sqlite3.connect(sqlite_store.journal)) as db, db:
        db.execute("INSERT INTO ops (kind, run_key, body) VALUES ('end', 't1', '{}')")

    broken = sqlite_store.writer()
    with pytest.raises(tracking.WriterFailed, match=r"KeyError: 'status'.*journal\.db keeps every record") as failed:
        broken.flush(timeout_s=20)
    assert isinstance(failed.value.__cause__, KeyError)
    with pytest.raises(tracking.WriterFailed):
        broken.log_metrics("t1", {"val/loss": 1.0}, step=1)  # queued all the same: nothing is lost
    with pytest.raises(tracking.WriterFailed):
        broken.close(timeout_s=5)
    assert broken.last_error is None  # never mistaken for an unreachable store
    assert sqlite_store.queued_ops() == 2


# --------------------------------------------------------------------------------------------- classification


def _locked_sqlite_error(path) -> sqlite3.OperationalError:
    """A real "database is locked": another connection holds the write lock."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE IF NOT EXISTS t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        sqlite3.connect(path, timeout=0).execute("SELECT * FROM t")
    except sqlite3.OperationalError as exc:
        return exc
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    raise AssertionError("the lock was not held")


class _Answers(BaseHTTPRequestHandler):
    """Answers every request with the status the test sets, an MLflow-style JSON error body."""

    status = 503

    def do_POST(self):  # noqa: N802  (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        code = "TEMPORARILY_UNAVAILABLE" if self.status >= 500 else "INVALID_PARAMETER_VALUE"
        self.wfile.write(json.dumps({"error_code": code, "message": "test"}).encode())

    do_GET = do_POST  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture
def answering_server(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # as while a writer lives
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _raised_by(call) -> BaseException:
    try:
        call()
    except Exception as exc:  # noqa: BLE001  the test inspects whatever MLflow raised
        return exc
    raise AssertionError("no error")


def test_errors_are_sorted_by_type_and_code(sqlite_store, tmp_path, answering_server):
    """Real errors from real MLflow calls: the store away, a 5xx and a locked sqlite are transient; a refusal is
    refused; anything else (a bug) is neither."""
    away = _raised_by(lambda: MlflowClient(f"http://127.0.0.1:{free_port()}").get_run("0" * 32))
    _Answers.status = 503
    busy = _raised_by(lambda: MlflowClient(f"http://127.0.0.1:{answering_server.server_port}").get_run("0" * 32))
    run = sqlite_store.client.create_run(sqlite_store.experiment_id)
    sqlite_store.client.log_param(run.info.run_id, "lr", "0.1")
    changed = _raised_by(lambda: sqlite_store.client.log_param(run.info.run_id, "lr", "0.2"))
    locked = _locked_sqlite_error(tmp_path / "other.db")
    try:  # how MLflow's sqlalchemy store reports a locked database (mlflow/store/db/utils.py)
        raise MlflowException(str(locked), error_code=TEMPORARILY_UNAVAILABLE) from locked
    except MlflowException as exc:
        store_locked = exc

    for exc in (away, busy, locked, store_locked, RestException({"error_code": "INTERNAL_ERROR", "message": "x"})):
        assert faults.transient(exc) and not faults.refused(exc), repr(exc)
    for exc in (changed, RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "x"}),
                PermissionError(13, "artifact root")):
        assert faults.refused(exc) and not faults.transient(exc), repr(exc)
    for exc in (KeyError("status"), TypeError("x"), AttributeError("x"), sqlite3.ProgrammingError("closed")):
        assert not faults.transient(exc) and not faults.refused(exc), repr(exc)


def test_an_http_refusal_is_dropped_and_a_5xx_is_retried(sqlite_store, answering_server):
    """The same two answers through the writer: a 400 is one dropped record, a 503 waits in the journal."""
    uri = f"http://127.0.0.1:{answering_server.server_port}"
    journal = sqlite_store.journal.with_name("http.db")
    writer = tracking.MlflowWriter(uri, journal)
    writer.use_run("t1", "0" * 32)
    _Answers.status = 503
    writer.log_metrics("t1", {"val/loss": 1.0}, step=1)
    assert not writer.flush(1.5) and "503 error responses" in writer.last_error and not writer.dropped_records()
    _Answers.status = 400
    assert writer.flush(30)
    assert [d.what for d in writer.dropped_records()] == ["metric val/loss=1.0 step 1"]
    assert writer.close(5)


@pytest.mark.slow
def test_a_real_server_refusal_is_dropped_and_its_absence_is_waited_out(mlflow_server, tmp_path):
    """Through a real `mlflow server`: a changed param is refused over HTTP (400) and dropped alone; the server gone
    is an outage (retried, nothing dropped), and everything arrives once it is back."""
    tracking.check_reachable(mlflow_server.uri)
    client = MlflowClient(mlflow_server.uri)
    experiment_id = tracking.ensure_experiment(client, "remote")
    writer = tracking.MlflowWriter(mlflow_server.uri, tmp_path / "journal.db")
    writer.start_run("t1", experiment_id, "t1", {"scan.trial_id": "t1"}, {"scan.trial_id": "t1"})
    writer.log_params("t1", {"lr": 0.1})
    assert writer.flush(60)
    writer.log_metrics("t1", {"val/loss": 1.0}, step=1)
    writer.log_params("t1", {"lr": 0.2})
    writer.log_metrics("t1", {"val/loss": 0.5}, step=2)
    assert writer.flush(60)
    assert [d.what for d in writer.dropped_records()] == ["param lr=0.2"]

    mlflow_server.stop()
    writer.log_metrics("t1", {"val/loss": 0.25}, step=3)
    assert not writer.flush(1.5) and "Connection" in writer.last_error
    mlflow_server.start()
    assert writer.flush(60)
    run_id, dropped = writer.run_id("t1"), writer.dropped_records()
    assert writer.close(30)
    assert len(dropped) == 1
    assert [m.step for m in client.get_metric_history(run_id, "val/loss")] == [1, 2, 3]
