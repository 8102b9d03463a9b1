"""Real sqlite MLflow stores for the tests: an empty one anywhere, and one with an experiment for the writer's tests.

    uri = fresh_store(tmp_path)                 # a new, empty store at tmp_path/mlflow.db
    def test_x(sqlite_store): ...               # a store with one experiment, and the writer's journal beside it
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from scanner import tracking


__all__ = ["Store", "empty_mlflow_db", "fresh_store", "sqlite_store"]


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

    @contextlib.contextmanager
    def locked_for(self, seconds: float):
        """Another process holds MLflow's sqlite store in an exclusive transaction for ``seconds`` (MLflow waits up
        to 20 s for a lock, so a shorter hold delays its calls instead of failing them)."""
        holder = sqlite3.connect(self.uri[len("sqlite:///"):], isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN EXCLUSIVE")
        release = threading.Timer(seconds, lambda: holder.execute("ROLLBACK"))
        release.start()
        try:
            yield
        finally:
            release.join()
            holder.close()

    def queued_ops(self) -> int:
        """What the journal still holds, read as any other process would."""
        with contextlib.closing(sqlite3.connect(self.journal)) as db:
            return db.execute("SELECT COUNT(*) FROM ops").fetchone()[0]


def mlflow_template() -> Path:
    """MLflow's empty schema, made once per MLflow version and kept in the temp folder: creating it takes 5-10 s on
    these cores, copying the file takes none."""
    template = Path(tempfile.gettempdir()) / f"scanner-test-mlflow-{mlflow.__version__}.db"
    if not template.exists():
        staging = Path(tempfile.mkdtemp(prefix="mlflow-template-")) / "mlflow.db"
        MlflowClient(f"sqlite:///{staging}").search_experiments()  # creates and migrates the schema
        os.replace(staging, template)  # atomic: a concurrent test sees the whole template or none
    return template


def fresh_store(folder: Path) -> str:
    """The URI of a new, empty sqlite MLflow store at ``folder/mlflow.db``."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(mlflow_template(), folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture(scope="session")
def empty_mlflow_db() -> Path:
    """The empty schema's file, for a test that copies it somewhere of its own."""
    return mlflow_template()


@pytest.fixture
def sqlite_store(tmp_path) -> Store:
    """A fresh store in ``tmp_path`` with one experiment whose artifacts stay in ``tmp_path`` too."""
    uri = fresh_store(tmp_path)
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("writer", artifact_location=(tmp_path / "artifacts").as_uri())
    return Store(uri, client, experiment_id, tmp_path / "journal.db")
