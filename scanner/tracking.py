"""MLflow helpers shared by ``scanner run`` and ``scanner train``, and the spooled single writer.

The writer exists because MLflow's own HTTP retries block the caller: a tracking server that goes away would stall
the sweep. Every call on ``MlflowWriter`` only appends to a small sqlite journal next to the sweep and returns; one
thread replays the journal into MLflow (``log_batch``), with its own back-off, and deletes what MLflow accepted.
Whatever is still in the journal when the process dies is replayed by the next writer on the same journal
(``scanner resume``). Metrics carry their timestamp from the journal, so a replayed batch is a no-op in MLflow's
store, and ``(run, metric, step)`` is logged at most once.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping

from scanner._mlflow_http import hold_fail_fast, release_fail_fast
from trainables.checkpoint import CONFUSION_FILE, PREDICTIONS_FILE
from trainables.errors import BadInput

PARENT_KEY = "parent"  # the journal's key for the sweep's parent run; trials use Tune's trial id
SHOWN_FIRST = ("model", "loss")  # what a trial is, at a glance: printed bare, without key=
MAX_NAME_KEYS = 4  # run names stay readable in the MLflow UI's run list
MAX_BATCH_METRICS = 1000  # MLflow's log_batch limit
MAX_BATCH_PARAMS = 100  # MLflow's log_batch limit
MAX_BATCH_TAGS = 100  # MLflow's log_batch limit
PERMANENT_ERRORS = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "BAD_REQUEST", "RESOURCE_ALREADY_EXISTS"}


# --------------------------------------------------------------------------------------------- small helpers


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, in one line, when the store cannot be written; before anything is created."""
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=timeout_s)
        except requests.RequestException as exc:
            raise BadInput(
                f"MLflow tracking server {uri} does not answer ({type(exc).__name__}); start it "
                f"(scanner ui / mlflow server) or pass --tracking-uri sqlite:///mlflow.db"
            ) from None
        return
    if uri.startswith("sqlite:///") or uri.startswith("file:"):
        path = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:") else Path(uri[len("file:"):].lstrip("/"))
        path = Path("/" + str(path).lstrip("/"))
        folder = path.parent if uri.startswith("sqlite:") else path
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise BadInput(f"MLflow store {uri}: {folder} is a file, not a folder; pass --tracking-uri elsewhere")
        if not os.access(folder, os.W_OK):
            raise BadInput(f"MLflow store {uri}: folder {folder} is not writable; pass --tracking-uri elsewhere")


def ensure_experiment(client, name: str) -> str:
    """The sweep's experiment id, created once, in the driver (trials never create experiments: ray#36257)."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name)
    if exp.lifecycle_stage == "deleted":
        raise BadInput(
            f"MLflow experiment '{name}' exists but is deleted; restore it (mlflow experiments restore "
            f"--experiment-id {exp.experiment_id}) or give the sweep a new name"
        )
    return exp.experiment_id


def git_sha() -> str | None:
    """The code version of this checkout, or None outside git (an installed wheel)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=3
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def short_value(value: Any) -> str:
    """3e-3 rather than 0.003000000001: names must read at a glance."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
        mantissa, exponent = f"{value:.1e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:.3g}"


def trial_run_name(index: int, params: Mapping[str, Any], varied: Iterable[str], baseline: bool) -> str:
    """``t07 resnet34 focal lr=3e-3``; ``t00 baseline resnet18 ce lr=1e-3``."""
    varied = list(varied)
    words = [f"t{index:02d}"] + (["baseline"] if baseline else [])
    words += [str(params[k]) for k in SHOWN_FIRST if params.get(k) is not None]
    rest = [k for k in varied if k not in SHOWN_FIRST and params.get(k) is not None]
    words += [f"{k}={short_value(params[k])}" for k in rest[:MAX_NAME_KEYS]]
    return " ".join(words)


def trial_tags(
    name: str,
    trial_id: str,
    *,
    space_hash: str,
    git_sha: str | None = None,
    data_hash: str | None = None,
    baseline: bool = False,
    varied: Iterable[str] = (),
    class_names: Iterable[str] | None = None,
    target_names: Iterable[str] | None = None,
) -> dict[str, str]:
    """The contract tags of a child run (DESIGN.md, "MLflow layout"). ``name`` is the sweep's."""
    tags = {
        "scan.name": name,
        "scan.trial_id": trial_id,
        "scan.space_hash": space_hash,
        "scan.baseline": "true" if baseline else "false",
        "scan.varied": json.dumps(list(varied)),
    }
    if git_sha:
        tags["scan.git_sha"] = git_sha
    if data_hash:
        tags["scan.data_hash"] = data_hash
    if class_names is not None:
        tags["scan.class_names"] = json.dumps(list(class_names))
    if target_names is not None:
        tags["scan.target_names"] = json.dumps(list(target_names))
    return tags


def checkpoint_artifact_files(checkpoint_dir: Path) -> list[Path]:
    """The evaluation artifacts of a checkpoint folder (never state.pt: weights stay in Tune's storage)."""
    names = (CONFUSION_FILE, PREDICTIONS_FILE)
    return [p for p in (Path(checkpoint_dir) / n for n in names) if p.exists()]


def log_checkpoint_artifacts(client, run_id: str, checkpoint_dir: Path, artifact_path: str = "val") -> list[str]:
    """Log confusion.json + predictions.h5 of a checkpoint folder under ``artifact_path``; returns what was logged."""
    files = checkpoint_artifact_files(checkpoint_dir)
    for f in files:
        client.log_artifact(run_id, str(f), artifact_path)
    return [f.name for f in files]


def find_runs_by_tag(client, experiment_id: str, tags: Mapping[str, str]) -> list:
    """Runs of one experiment whose tags match; oldest first, so the original of a duplicate wins."""
    clauses = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client.search_runs([experiment_id], filter_string=clauses, max_results=1000)
    return sorted(runs, key=lambda r: r.info.start_time or 0)


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
        from mlflow.tracking import MlflowClient

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
        return ops[:1]

    def _require(self, run_id: str | None, run_key: str) -> str:
        if run_id is None:
            from mlflow.exceptions import MlflowException

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
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO runs (run_key, run_id) VALUES (?, ?)", (run_key, run_id))

    def _log_batch(self, run_key: str, batch: list) -> None:
        from mlflow.entities import Metric, Param, RunTag

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
