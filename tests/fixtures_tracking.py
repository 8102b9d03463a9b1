"""A real sqlite MLflow store with one experiment, and a writer's trial run on it, for the tracking writer's tests.

Import both fixtures where they are used: ``from fixtures_tracking import empty_mlflow_db, sqlite_store``.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from scanner import tracking


__all__ = ["Store", "empty_mlflow_db", "sqlite_store"]


@dataclass
class Store:
    uri: str
    client: MlflowClient
    experiment_id: str
    journal: Path  # where a test's writer keeps its journal

    def writer(self) -> tracking.MlflowWriter:
        return tracking.MlflowWriter(self.uri, self.journal)

    def start_trial(self, writer: tracking.MlflowWriter, key: str = "t1", **tags: str) -> None:
        """A trial run found by its trial id, as the sweep's driver starts one."""
        writer.start_run(key, self.experiment_id, f"trial {key}", {"scan.trial_id": key, **tags},
                         {"scan.trial_id": key})

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.client.get_metric_history(run_id, key)]

    def queued_ops(self) -> int:
        """What the journal still holds, read as any other process would."""
        with contextlib.closing(sqlite3.connect(self.journal)) as db:
            return db.execute("SELECT COUNT(*) FROM ops").fetchone()[0]


@functools.lru_cache(maxsize=None)
def _schema_in(folder: Path) -> Path:
    path = folder / "mlflow_template.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory) -> Path:
    """MLflow's schema, made once per session (each test module that imports this fixture holds its own copy of
    it, hence the cache): creating it takes seconds, copying the file takes none."""
    return _schema_in(tmp_path_factory.getbasetemp())


@pytest.fixture
def sqlite_store(tmp_path, empty_mlflow_db) -> Store:
    """A fresh store in ``tmp_path`` with one experiment whose artifacts stay in ``tmp_path`` too."""
    shutil.copyfile(empty_mlflow_db, tmp_path / "m.db")
    uri = f"sqlite:///{tmp_path}/m.db"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("writer", artifact_location=(tmp_path / "artifacts").as_uri())
    return Store(uri, client, experiment_id, tmp_path / "journal.db")
