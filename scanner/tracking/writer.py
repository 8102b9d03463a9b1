"""The spooled single writer: every MLflow write of a sweep goes through it.

The writer exists because MLflow's own HTTP retries block the caller: a tracking server that goes away would stall
the sweep. Every call on ``MlflowWriter`` only appends to a small sqlite journal next to the sweep and returns; one
thread replays the journal into MLflow (``log_batch``), with its own back-off, and deletes what MLflow accepted.
Whatever is still in the journal when the process dies is replayed by the next writer on the same journal
(``scanner resume``). Metrics carry their timestamp from the journal, so a replayed batch is a no-op in MLflow's
store, and ``(run, metric, step)`` is logged at most once.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from scanner.tracking.http_env import hold_fail_fast, release_fail_fast
from scanner.tracking.store import find_runs_by_tag

PARENT_KEY = "parent"  # the journal's key for the sweep's parent run; trials use Tune's trial id
MAX_BATCH_METRICS = 1000  # MLflow's log_batch limit
MAX_BATCH_PARAMS = 100  # MLflow's log_batch limit
MAX_BATCH_TAGS = 100  # MLflow's log_batch limit
PERMANENT_ERRORS = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "BAD_REQUEST", "RESOURCE_ALREADY_EXISTS"}


def finite_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Numbers only (Tune results carry strings and bools too); MLflow itself stores NaN and clips inf."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[key] = float(value)
    return out


# --------------------------------------------------------------------------------------------- the writer


class MlflowWriter:
    """Queue + journal + one thread: calls return at once, MLflow gets everything eventually, in order.

    Runs are addressed by a local key (the Tune trial id, or ``PARENT_KEY``) because the MLflow run id is only
    known once the server answered; ``start_run`` finds the run by its tags first, so a retried or resumed trial
    keeps its one run.
    """

    def __init__(self, tracking_uri: str, journal: Path, backoff_max_s: float = 10.0):
        hold_fail_fast()  # released by close
        self.client = MlflowClient(tracking_uri)
        self.journal = Path(journal)
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        self._spool_dir = self.journal.with_suffix(".artifacts")
        self._db = sqlite3.connect(str(self.journal), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.executescript(
            "PRAGMA journal_mode=WAL;"
            "CREATE TABLE IF NOT EXISTS ops (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT, run_key TEXT, body TEXT);"
            "CREATE TABLE IF NOT EXISTS runs (run_key TEXT PRIMARY KEY, run_id TEXT);"
            "CREATE TABLE IF NOT EXISTS logged (run_key TEXT, key TEXT, step INTEGER, PRIMARY KEY (run_key, key, step));"
        )
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._backoff_max_s = backoff_max_s
        self.last_error: str | None = None
        self.dropped: list[str] = []  # ops MLflow refused for good (e.g. a changed param): reported, not retried
        self._thread = threading.Thread(target=self._run, name="mlflow-writer", daemon=True)
        self._thread.start()

    # -- producer side: never touches the network

    def _put(self, kind: str, run_key: str, body: Mapping[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT INTO ops (kind, run_key, body) VALUES (?, ?, ?)", (kind, run_key, json.dumps(body)))
        self._wake.set()

    def start_run(
        self,
        run_key: str,
        experiment_id: str,
        run_name: str,
        tags: Mapping[str, str],
        find_by: Mapping[str, str],
        parent_key: str | None = None,
    ) -> None:
        """Find the run whose tags match ``find_by`` (or create it), mark it RUNNING, set ``tags``."""
        body = {"experiment_id": experiment_id, "run_name": run_name, "tags": dict(tags), "find_by": dict(find_by)}
        self._put("start", run_key, {**body, "parent_key": parent_key})

    def log_params(self, run_key: str, params: Mapping[str, Any]) -> None:
        self._put("params", run_key, {k: "None" if v is None else str(v) for k, v in params.items()})

    def set_tags(self, run_key: str, tags: Mapping[str, str]) -> None:
        self._put("tags", run_key, {k: str(v) for k, v in tags.items()})

    def log_metrics(self, run_key: str, metrics: Mapping[str, float], step: int, timestamp_ms: int | None = None) -> int:
        """Queue the metrics not yet logged at this step; returns how many were new."""
        ts = int(timestamp_ms if timestamp_ms is not None else time.time() * 1000)
        fresh = {}
        with self._lock:
            for key, value in finite_metrics(metrics).items():
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO logged (run_key, key, step) VALUES (?, ?, ?)", (run_key, key, int(step))
                )
                if cur.rowcount:
                    fresh[key] = value
        if fresh:
            self._put("metrics", run_key, {"step": int(step), "ts": ts, "values": fresh})
        return len(fresh)

    def logged_steps(self, run_key: str, key: str) -> set[int]:
        with self._lock:
            rows = self._db.execute("SELECT step FROM logged WHERE run_key=? AND key=?", (run_key, key)).fetchall()
        return {r[0] for r in rows}

    def log_artifacts(self, run_key: str, files: Iterable[Path], artifact_path: str) -> None:
        """Copies the files first: Tune may delete a checkpoint folder before the server is back."""
        files = [Path(f) for f in files if Path(f).exists()]
        if not files:
            return
        folder = self._spool_dir / uuid.uuid4().hex
        folder.mkdir(parents=True)
        for f in files:
            shutil.copy2(f, folder / f.name)
        self._put("artifacts", run_key, {"folder": str(folder), "artifact_path": artifact_path})

    def end_run(self, run_key: str, status: str) -> None:
        """FINISHED, KILLED or FAILED: never leave a run RUNNING."""
        self._put("end", run_key, {"status": status})

    def delete_tags(self, run_key: str, keys: Iterable[str]) -> None:
        self._put("delete_tags", run_key, {"keys": list(keys)})

    def delete_run(self, run_key: str) -> None:
        """MLflow's soft delete (the run moves to the experiment's trash): for a start that was interrupted."""
        self._put("delete_run", run_key, {})

    def use_run(self, run_key: str, run_id: str) -> None:
        """Address an existing run (found by a search) by ``run_key``, without starting it."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO runs (run_key, run_id) VALUES (?, ?)", (run_key, run_id))

    # -- observers

    def run_id(self, run_key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT run_id FROM runs WHERE run_key=?", (run_key,)).fetchone()
        return row[0] if row else None

    def run_ids(self) -> dict[str, str]:
        with self._lock:
            return dict(self._db.execute("SELECT run_key, run_id FROM runs").fetchall())

    def pending(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM ops").fetchone()[0]

    def flush(self, timeout_s: float = 60.0) -> bool:
        """Wait until MLflow has everything; False if the store is still away after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        self._wake.set()
        while self.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.pending() == 0

    def close(self, timeout_s: float = 60.0) -> bool:
        """Flush, then stop the thread. What MLflow did not take stays in the journal for the next writer."""
        done = self.flush(timeout_s)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=15)
        with self._lock:
            self._db.close()
        release_fail_fast()
        if not done:
            print(
                f"scanner: MLflow is unreachable ({self.last_error}); {self.journal} keeps what is not yet logged, "
                f"and the next 'scanner resume' writes it",
                file=sys.stderr,
            )
        return done

    # -- consumer side: the one thread that talks to MLflow

    def _run(self) -> None:
        backoff = 0.25
        while not self._stop.is_set():
            ops = self._next_ops()
            if not ops:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            try:
                applied = self._apply(ops)
            except Exception as exc:  # noqa: BLE001  the network, a restarting server: retry after a pause
                if _is_permanent(exc):
                    self.dropped.append(f"{ops[0][1]} {ops[0][2]}: {exc}")
                    applied = ops[:1]
                else:
                    self.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, self._backoff_max_s)
                    continue
            backoff = 0.25
            with self._lock:
                self._db.executemany("DELETE FROM ops WHERE seq=?", [(op[0],) for op in applied])

    def _next_ops(self) -> list[tuple[int, str, str, dict]]:
        with self._lock:
            rows = self._db.execute("SELECT seq, kind, run_key, body FROM ops ORDER BY seq LIMIT 200").fetchall()
        return [(seq, kind, key, json.loads(body)) for seq, kind, key, body in rows]

    def _apply(self, ops: list[tuple[int, str, str, dict]]) -> list:
        """Apply the first op, or a batch of consecutive metrics/params/tags of one run; returns what was applied."""
        seq, kind, run_key, body = ops[0]
        if kind in ("metrics", "params", "tags"):
            batch = _leading_batch(ops)
            self._log_batch(run_key, batch)
            return batch
        run_id = self.run_id(run_key) if kind != "start" else None
        if kind == "start":
            self._start(run_key, body)
        elif kind == "artifacts":
            for f in sorted(Path(body["folder"]).iterdir()) if Path(body["folder"]).exists() else []:
                self.client.log_artifact(self._require(run_id, run_key), str(f), body["artifact_path"])
            shutil.rmtree(body["folder"], ignore_errors=True)
        elif kind == "end":
            self.client.set_terminated(self._require(run_id, run_key), status=body["status"])
        elif kind == "delete_tags":
            for key in body["keys"]:
                self.client.delete_tag(self._require(run_id, run_key), key)
        elif kind == "delete_run":
            self.client.delete_run(self._require(run_id, run_key))
        return ops[:1]

    def _require(self, run_id: str | None, run_key: str) -> str:
        if run_id is None:
            raise MlflowException(f"no run started for {run_key}", error_code="RESOURCE_DOES_NOT_EXIST")
        return run_id

    def _start(self, run_key: str, body: dict) -> None:
        tags = dict(body["tags"])
        if body.get("parent_key"):
            parent = self.run_id(body["parent_key"])
            if parent:
                tags["mlflow.parentRunId"] = parent
        found = find_runs_by_tag(self.client, body["experiment_id"], body["find_by"]) if body["find_by"] else []
        if found:
            run_id = found[0].info.run_id
            if found[0].info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
        else:
            run = self.client.create_run(body["experiment_id"], tags=tags, run_name=body["run_name"])
            run_id = run.info.run_id
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO runs (run_key, run_id) VALUES (?, ?)", (run_key, run_id))

    def _log_batch(self, run_key: str, batch: list) -> None:
        run_id = self._require(self.run_id(run_key), run_key)
        metrics, params, tags = [], {}, {}
        for _, kind, _, body in batch:
            if kind == "metrics":
                metrics += [Metric(k, v, body["ts"], body["step"]) for k, v in body["values"].items()]
            elif kind == "params":
                params.update(body)
            else:
                tags.update(body)
        self.client.log_batch(
            run_id,
            metrics=metrics,
            params=[Param(k, v) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )


class JournalRunIds:
    """``lookup(run_key) -> MLflow run id or None``, read from a writer's journal: picklable (a path), so an object
    that Tune pickles (the searcher) can name a trial's run without holding the writer."""

    def __init__(self, journal: Path):
        self.journal = str(journal)

    def __call__(self, run_key: str) -> str | None:
        with contextlib.closing(sqlite3.connect(self.journal, timeout=30)) as db:
            row = db.execute("SELECT run_id FROM runs WHERE run_key=?", (run_key,)).fetchone()
        return row[0] if row else None


def _leading_batch(ops: list) -> list:
    """Consecutive metric/param/tag ops of the first op's run, within log_batch's limits."""
    run_key = ops[0][2]
    batch, n_metrics, n_params, n_tags = [], 0, 0, 0
    for op in ops:
        _, kind, key, body = op
        if key != run_key or kind not in ("metrics", "params", "tags"):
            break
        size = len(body["values"]) if kind == "metrics" else len(body)
        n_metrics += size if kind == "metrics" else 0
        n_params += size if kind == "params" else 0
        n_tags += size if kind == "tags" else 0
        if batch and (n_metrics > MAX_BATCH_METRICS or n_params > MAX_BATCH_PARAMS or n_tags > MAX_BATCH_TAGS):
            break
        batch.append(op)
    return batch


def _is_permanent(exc: Exception) -> bool:
    """MLflow said no to the request itself (not the network): retrying cannot help."""
    code = getattr(exc, "error_code", None)
    if code not in PERMANENT_ERRORS:
        return False
    text = str(exc).lower()
    return not any(w in text for w in ("connection", "timed out", "max retries", "failed with exception"))
