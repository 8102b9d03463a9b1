"""The writer's journal: a small sqlite file next to the sweep that holds what MLflow has not taken yet.

Tables: ``ops`` (the queue, in order), ``runs`` (local run key -> MLflow run id), ``logged`` (which
``(run, metric, step)`` was queued, so each is logged once) and ``dropped`` (what MLflow refused for good, with its
reason: reported at the end of the sweep, and kept across a crash and a resume). Each change is one transaction.
A full disk raises ``JournalFull``; what the journal already holds stays, and a later writer delivers it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, NamedTuple

from scanner.tracking.faults import disk_full

SCHEMA = (  # a journal from before the `dropped` table gains it on open
    "CREATE TABLE IF NOT EXISTS ops (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT, run_key TEXT, body TEXT)",
    "CREATE TABLE IF NOT EXISTS runs (run_key TEXT PRIMARY KEY, run_id TEXT)",
    "CREATE TABLE IF NOT EXISTS logged (run_key TEXT, key TEXT, step INTEGER, PRIMARY KEY (run_key, key, step))",
    "CREATE TABLE IF NOT EXISTS dropped (id INTEGER PRIMARY KEY AUTOINCREMENT, run_key TEXT, run_id TEXT,"
    " what TEXT, reason TEXT, at_ms INTEGER)",
)
BUSY_TIMEOUT_S = 30  # producers and the writer's thread take turns; neither holds a transaction for long


class JournalFull(OSError):
    """The journal (or its artifact spool) cannot grow: no space left on device. What it holds is kept."""

    def __init__(self, journal: Path):
        super().__init__(
            errno.ENOSPC,
            f"cannot write the MLflow journal {journal}: no space left on device (it keeps what it holds; "
            f"free some space, then resume)",
            str(journal),
        )

    def __str__(self) -> str:
        return self.strerror


class Op(NamedTuple):
    seq: int
    kind: str
    run_key: str
    body: dict[str, Any]


class Dropped(NamedTuple):
    """One record MLflow refused for good."""

    run_key: str
    run_id: str | None
    what: str  # "param lr=0.2", "metric val/loss=0.5 step 3", "artifact val/confusion.json", ...
    reason: str  # MLflow's words

    def line(self) -> str:
        return f"{self.run_key} {self.run_id or '-'} {self.what}: {self.reason}"


class Journal:
    """One connection to the journal file, safe to share between threads (a lock); the writer holds two, one for the
    producers and one for its own thread, so that neither can close the other's."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None,
                                       timeout=BUSY_TIMEOUT_S)
            self._db.execute("PRAGMA journal_mode=WAL")
            with self.transaction() as db:
                for statement in SCHEMA:
                    db.execute(statement)
        except (OSError, sqlite3.OperationalError) as exc:
            if disk_full(exc):
                raise JournalFull(self.path) from exc
            raise

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All or nothing, under the lock; a full disk becomes ``JournalFull``."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                if self._db.in_transaction:  # sqlite may have rolled back already (a full disk does)
                    self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError) and disk_full(exc):
                    raise JournalFull(self.path) from exc
                raise

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- producers

    def put(self, kind: str, run_key: str, body: Mapping[str, Any]) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO ops (kind, run_key, body) VALUES (?, ?, ?)", (kind, run_key, json.dumps(body)))

    def put_metrics(self, run_key: str, step: int, ts: int, values: Mapping[str, float]) -> int:
        """Queue the values not yet queued at this step: the dedupe rows and the op in one transaction, so a crash
        between them cannot mark a value as logged that is in no op."""
        with self.transaction() as db:
            fresh = {}
            for key, value in values.items():
                cur = db.execute("INSERT OR IGNORE INTO logged (run_key, key, step) VALUES (?, ?, ?)",
                                 (run_key, key, step))
                if cur.rowcount:
                    fresh[key] = value
            if fresh:
                body = {"step": step, "ts": ts, "values": fresh}
                db.execute("INSERT INTO ops (kind, run_key, body) VALUES (?, ?, ?)",
                           ("metrics", run_key, json.dumps(body)))
        return len(fresh)

    def set_run_id(self, run_key: str, run_id: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO runs (run_key, run_id) VALUES (?, ?)", (run_key, run_id))

    # -- observers

    def logged_steps(self, run_key: str, key: str) -> set[int]:
        return {r[0] for r in self._read("SELECT step FROM logged WHERE run_key=? AND key=?", (run_key, key))}

    def run_id(self, run_key: str) -> str | None:
        rows = self._read("SELECT run_id FROM runs WHERE run_key=?", (run_key,))
        return rows[0][0] if rows else None

    def run_ids(self) -> dict[str, str]:
        return dict(self._read("SELECT run_key, run_id FROM runs"))

    def pending(self) -> int:
        return self._read("SELECT COUNT(*) FROM ops")[0][0]

    def dropped(self) -> list[Dropped]:
        rows = self._read("SELECT run_key, run_id, what, reason FROM dropped ORDER BY id")
        return [Dropped(*row) for row in rows]

    # -- the writer's thread

    def next_ops(self, limit: int = 200) -> list[Op]:
        rows = self._read("SELECT seq, kind, run_key, body FROM ops ORDER BY seq LIMIT ?", (limit,))
        return [Op(seq, kind, key, json.loads(body)) for seq, kind, key, body in rows]

    def settle(self, done: Iterable[Op], dropped: Iterable[Dropped]) -> None:
        """Forget the ops MLflow has dealt with, and remember what it refused: one transaction."""
        now = int(time.time() * 1000)
        with self.transaction() as db:
            db.executemany("DELETE FROM ops WHERE seq=?", [(op.seq,) for op in done])
            db.executemany("INSERT INTO dropped (run_key, run_id, what, reason, at_ms) VALUES (?, ?, ?, ?, ?)",
                           [(*d, now) for d in dropped])


class JournalRunIds:
    """``lookup(run_key) -> MLflow run id or None``, read from a writer's journal: picklable (a path), so an object
    that Tune pickles (the searcher) can name a trial's run without holding the writer."""

    def __init__(self, journal: Path):
        self.journal = str(journal)

    def __call__(self, run_key: str) -> str | None:
        if not Path(self.journal).exists():  # reading must not create an empty journal
            return None
        with contextlib.closing(sqlite3.connect(self.journal, timeout=BUSY_TIMEOUT_S)) as db:
            row = db.execute("SELECT run_id FROM runs WHERE run_key=?", (run_key,)).fetchone()
        return row[0] if row else None
