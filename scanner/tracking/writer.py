"""The spooled single writer: every MLflow write of a sweep goes through it.

    writer = MlflowWriter("sqlite:///mlflow.db", Path("scans/demo/mlflow_journal.db"))
    writer.start_run(PARENT_KEY, experiment_id, "demo", tags, find_by=tags)
    writer.log_metrics(PARENT_KEY, {"sweep/best_objective": 0.91}, step=0)
    report_dropped(writer, PARENT_KEY, Path("scans/demo"))     # what MLflow refused: dropped.txt + scan.dropped
    writer.close()

The writer exists because MLflow's own HTTP retries block the caller: a tracking server that goes away would stall
the sweep. Every call on ``MlflowWriter`` only appends to a small sqlite journal next to the sweep and returns; one
thread replays the journal into MLflow (``log_batch``), with its own back-off, and deletes what MLflow accepted.
Whatever is still in the journal when the process dies is replayed by the next writer on the same journal
(``scanner resume``). Metrics carry their timestamp from the journal, so a replayed batch is a no-op in MLflow's
store, and ``(run, metric, step)`` is logged at most once.

Errors (scanner/tracking/faults.py): the store away, busy or full is retried with back-off; a record MLflow refuses
(a changed param, a bad metric name) is dropped alone, kept in the journal's list, and reported by
``report_dropped``; any other error is a bug: the thread stops, the journal keeps everything, and the next call on
the writer (a producer call, ``flush`` or ``close``) raises ``WriterFailed`` from it. A full disk under the journal
raises ``JournalFull`` from the producer call.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping

from mlflow.entities import DatasetInput
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from scanner.tracking.faults import WriterFailed, disk_full, reason, transient
from scanner.tracking.http_env import hold_fail_fast, release_fail_fast
from scanner.tracking.journal import Dropped, Journal, JournalFull
from scanner.tracking.replay import Replay, input_body, remove_spooled
from scanner.tracking.store import find_runs_by_tag
from trainables.contract import Artifact, Status, Tag, tag_value
from trainables.files import atomic_write_text

PARENT_KEY = "parent"  # the journal's key for the sweep's parent run; trials use Tune's trial id
BACKOFF_START_S = 0.25
IDLE_WAIT_S = 0.5  # a producer's call wakes the thread at once; this only bounds a missed wake-up
STOP_WAIT_S = 30.0  # close waits this long for a request in flight (MLflow's HTTP timeout is 10 s while we live)


def finite_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Numbers only (Tune results carry strings and bools too); MLflow itself stores NaN and clips inf."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[key] = float(value)
    return out


class MlflowWriter:
    """Journal + one thread: calls return at once, MLflow gets everything eventually, in order.

    Runs are addressed by a local key (the Tune trial id, or ``PARENT_KEY``) because the MLflow run id is only
    known once the server answered; ``start_run`` finds the run by its tags first, so a retried or resumed trial
    keeps its one run.
    """

    def __init__(self, tracking_uri: str, journal: Path, backoff_max_s: float = 10.0):
        self.client = MlflowClient(tracking_uri)
        self.journal = Path(journal)
        self._spool_dir = self.journal.with_suffix(".artifacts")
        self._producers = Journal(self.journal)  # JournalFull on a full disk, before anything is held
        self._thread_journal = Journal(self.journal)  # the thread's own connection, closed by the thread
        hold_fail_fast()  # released by close
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._backoff_max_s = backoff_max_s
        self.last_error: str | None = None  # the latest transient error, for the "unreachable" line
        self._failure: BaseException | None = None  # a bug that stopped the thread
        self._closed: bool | None = None  # close()'s answer, once closed
        self._thread = threading.Thread(target=self._run, name="mlflow-writer", daemon=True)
        self._thread.start()

    # -- producer side: never touches the network

    def _put(self, kind: str, run_key: str, body: Mapping[str, Any]) -> None:
        self._journal().put(kind, run_key, body)
        self._queued()

    def _queued(self) -> None:
        """The op is in the journal (it survives whatever follows); now wake the thread, or say that it stopped."""
        self._wake.set()
        self._raise_failure()

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
        fresh = self._journal().put_metrics(run_key, int(step), ts, finite_metrics(metrics))
        if fresh:
            self._queued()
        return fresh

    def log_artifacts(self, run_key: str, files: Iterable[Path], artifact_path: str) -> None:
        """Copies the files first: Tune may delete a checkpoint folder before the server is back."""
        files = [Path(f) for f in files if Path(f).exists()]
        if not files:
            return
        folder = self._spool_dir / uuid.uuid4().hex
        try:
            folder.mkdir(parents=True)
            for f in files:
                shutil.copy2(f, folder / f.name)
            self._journal().put("artifacts", run_key, {"folder": str(folder), "artifact_path": artifact_path})
        except OSError as exc:  # JournalFull is one too; half a spool folder is no use to anyone
            shutil.rmtree(folder, ignore_errors=True)
            if disk_full(exc) and not isinstance(exc, JournalFull):
                raise JournalFull(self.journal) from exc
            raise
        self._queued()

    def end_run(self, run_key: str, status: str) -> None:
        """FINISHED, KILLED or FAILED: never leave a run RUNNING."""
        self._put("end", run_key, {"status": status})

    def log_input(self, run_key: str, dataset: DatasetInput) -> None:
        """A dataset the run used (the events file: path, hash, shape), on MLflow's "Datasets used" panel."""
        self._put("inputs", run_key, input_body(dataset))

    def delete_tags(self, run_key: str, keys: Iterable[str]) -> None:
        self._put("delete_tags", run_key, {"keys": list(keys)})

    def delete_run(self, run_key: str) -> None:
        """MLflow's soft delete (the run moves to the experiment's trash): for a start that was interrupted."""
        self._put("delete_run", run_key, {})

    def use_run(self, run_key: str, run_id: str) -> None:
        """Address an existing run (found by a search) by ``run_key``, without starting it."""
        self._journal().set_run_id(run_key, run_id)

    # -- observers

    def run_id(self, run_key: str) -> str | None:
        return self._journal().run_id(run_key)

    def run_ids(self) -> dict[str, str]:
        return self._journal().run_ids()

    def logged_steps(self, run_key: str, key: str) -> set[int]:
        return self._journal().logged_steps(run_key, key)

    def pending(self) -> int:
        return self._journal().pending()

    def dropped_records(self) -> list[Dropped]:
        """Everything MLflow refused for good through this journal, this process's and earlier ones'."""
        return self._journal().dropped()

    def flush(self, timeout_s: float = 60.0) -> bool:
        """Wait until MLflow has everything; False if the store is still away after ``timeout_s``."""
        self._journal()
        done = self._wait_empty(timeout_s)
        self._raise_failure()
        return done

    def close(self, timeout_s: float = 60.0, say: bool = True) -> bool:
        """Flush, then stop the thread. What MLflow did not take stays in the journal for the next writer (one
        stderr line says so, unless ``say`` is False: the caller says it). A second call answers as the first did."""
        if self._closed is None:
            self._closed = False
            try:
                self._closed = self._wait_empty(timeout_s)
            finally:
                self._shut_down()
            if not self._closed and self._failure is None and say:
                print(
                    f"scanner: MLflow has not taken everything yet ({self.last_error or 'still busy'}); "
                    f"{self.journal} keeps what is not yet logged, and the next 'scanner resume' writes it",
                    file=sys.stderr,
                )
        self._raise_failure()
        return self._closed

    def end_runs_directly(self, why: str, flush_s: float, experiment_id: str | None = None,
                          find_by: Mapping[str, str] | None = None) -> list[str]:
        """The journal cannot take another record (a full disk): end the runs it started FAILED straight through
        MLflow, so that none stays RUNNING. The queue is flushed first (at most ``flush_s``): a run whose start was
        still queued would otherwise be created after this and stay RUNNING. A run MLflow created but whose id the
        full journal could not record is found by ``find_by`` (the tags all of this writer's runs carry, e.g. the
        sweep instance) in ``experiment_id``. What the journal still holds is written by the next writer
        (``scanner resume``). Returns the runs it could not reach (MLflow's own store may be full too)."""
        self._wait_empty(flush_s)
        runs = {run_id: run_key for run_key, run_id in self.run_ids().items()}
        unreached = []
        if experiment_id is not None and find_by:
            try:
                for run in find_runs_by_tag(self.client, experiment_id, find_by):
                    runs.setdefault(run.info.run_id, f"run:{run.info.run_id}")
            except MlflowException as exc:
                unreached.append(f"runs tagged {dict(find_by)}: {reason(exc)}")
        for run_id, run_key in runs.items():
            try:
                if self.client.get_run(run_id).info.status != "RUNNING":
                    continue
                self.client.set_tag(run_id, Tag.STATUS, Status.FAILED)
                self.client.set_tag(run_id, Tag.FAILURE, tag_value(why))
                self.client.set_terminated(run_id, "FAILED")
            except MlflowException as exc:  # the store is full or away as well: said, and resume ends it
                unreached.append(f"{run_key} {run_id}: {reason(exc)}")
        return unreached

    def _wait_empty(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        self._wake.set()
        while self._failure is None and self._producers.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        return self._producers.pending() == 0

    def _shut_down(self) -> None:
        """In order: the thread stops after the request in flight and closes its own journal connection; then the
        producers' connection closes. A thread still waiting on a slow request after STOP_WAIT_S finishes alone."""
        self._stop.set()
        self._wake.set()
        self._thread.join(STOP_WAIT_S)
        self._producers.close()
        release_fail_fast()

    def _journal(self) -> Journal:
        if self._closed is not None:
            raise RuntimeError(f"the MLflow writer of {self.journal} is closed")
        return self._producers

    def _raise_failure(self) -> None:
        if self._failure is not None:
            exc = self._failure
            raise WriterFailed(
                f"the MLflow writer stopped on an internal error ({type(exc).__name__}: {reason(exc, 200)}); "
                f"{self.journal} keeps every record not yet logged (this is a bug: please report it)"
            ) from exc

    # -- the one thread that talks to MLflow

    def _run(self) -> None:
        replay = Replay(self.client, self._thread_journal)
        backoff = BACKOFF_START_S
        try:
            while not self._stop.is_set():
                try:
                    ops = self._thread_journal.next_ops()
                    if not ops:
                        self._wake.wait(IDLE_WAIT_S)
                        self._wake.clear()
                        continue
                    outcome = replay.next(ops)
                    self._thread_journal.settle(outcome.done, outcome.dropped)
                except Exception as exc:  # noqa: BLE001  sorted, not swallowed: retried, or the writer stops
                    if not transient(exc):
                        self._failure = exc
                        return
                    self.last_error = f"{type(exc).__name__}: {reason(exc)}"
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, self._backoff_max_s)
                    continue
                remove_spooled(outcome.spooled)
                backoff = BACKOFF_START_S
        finally:
            self._thread_journal.close()


def report_dropped(writer: MlflowWriter, parent_key: str, folder: Path, flush_s: float = 60.0) -> int:
    """What MLflow refused for good, made impossible to miss: one line on stderr, ``dropped.txt`` in ``folder``,
    logged on the parent run, and the count in the parent's ``scan.dropped`` tag; returns the count (0: nothing
    said, written or set).

    It first waits (``flush_s``) for what is queued, so that it is counted; the journal's list includes earlier
    processes' refusals (a resumed sweep reports the whole sweep)."""
    writer.flush(flush_s)
    dropped = writer.dropped_records()
    if not dropped:
        return 0
    header = (f"# {len(dropped)} records that MLflow refused (run key, MLflow run id, what, MLflow's reason); "
              f"journal {writer.journal}\n")
    path = atomic_write_text(Path(folder) / Artifact.DROPPED, header + "".join(d.line() + "\n" for d in dropped))
    writer.log_artifacts(parent_key, [path], "")
    writer.set_tags(parent_key, {Tag.DROPPED: str(len(dropped))})
    print(f"scanner: MLflow refused {len(dropped)} record(s) for good; they are listed in {path} and counted in the "
          f"parent run's {Tag.DROPPED} tag", file=sys.stderr)
    return len(dropped)
