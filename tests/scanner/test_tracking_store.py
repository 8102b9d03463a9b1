"""The MLflow store helpers: a tracking URI is checked before anything is created; run searches read every page."""

from __future__ import annotations

import os
import subprocess

import pytest
from fixtures_sweep import free_port

from scanner import tracking
from scanner.tracking.store import CHECKS, mlflow_unknown_scheme
from trainables.errors import BadInput


@pytest.mark.parametrize("uri, words", [
    ("sqlit:///m.db", r"sqlit:///m\.db: unknown scheme 'sqlit'.*did you mean 'sqlite'"),
    ("htp://127.0.0.1:5000", r"unknown scheme 'htp'.*did you mean 'http'"),
    ("mlflowdb://x", r"unknown scheme 'mlflowdb'; use http\(s\)://HOST:PORT, sqlite:///PATH/mlflow.db or file:"),
])
def test_a_scheme_typo_is_one_line(uri, words):
    with pytest.raises(BadInput, match=words):
        tracking.check_reachable(uri)


def test_mlflow_resolves_the_schemes_we_accept():
    """Pins the compat function over MLflow's private store registry."""
    for uri in ("http://h:5000", "https://h", "sqlite:///m.db", "file:///m", "/m", "databricks",
                "postgresql://u@h/db"):
        assert mlflow_unknown_scheme(uri) is None, uri
    assert {"sqlite", "http", "file", "databricks"} <= set(mlflow_unknown_scheme("sqlit:///m.db"))
    assert set(CHECKS) <= set(mlflow_unknown_scheme("nope://x")) | {""}


@pytest.fixture
def file_store_allowed(monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")


def test_a_file_store_needs_mlflows_opt_in(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(BadInput, match="unless MLFLOW_ALLOW_FILE_STORE=true; use sqlite:///"):
        tracking.check_reachable(f"file://{tmp_path}/mlruns")


def test_a_missing_folder_is_refused_not_created(tmp_path, file_store_allowed):
    for uri in (f"sqlite:///{tmp_path}/new/sub/m.db", f"file://{tmp_path}/new/mlruns"):
        with pytest.raises(BadInput, match=r"folder .*/new(/sub)? does not exist; create the folder or fix the path"):
            tracking.check_reachable(uri)
    assert not (tmp_path / "new").exists()


def test_a_file_in_the_way_is_refused(tmp_path, file_store_allowed):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(BadInput, match="afile is a file, not a folder"):
        tracking.check_reachable(f"sqlite:///{tmp_path}/afile/m.db")
    with pytest.raises(BadInput, match="is a file, not a folder"):
        tracking.check_reachable(f"file://{tmp_path}/afile")


def test_local_stores_that_can_be_written_pass(tmp_path, file_store_allowed):
    tracking.check_reachable(f"sqlite:///{tmp_path}/m.db")
    tracking.check_reachable(f"file://{tmp_path}/mlruns")  # the store's own folder is MLflow's to create
    tracking.check_reachable(str(tmp_path / "mlruns"))  # a bare path is a file store, as MLflow reads it
    tracking.check_reachable("databricks")  # a scheme MLflow registers, which we cannot check without credentials
    assert list(tmp_path.iterdir()) == []  # nothing created
    with pytest.raises(BadInput, match="in-memory store is lost"):
        tracking.check_reachable("sqlite://")


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody may write: a read-only tmpfs (root ignores permission bits), else mode 0o555."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True)
        if done.returncode:
            pytest.skip(f"root, and cannot mount a read-only tmpfs: {done.stderr.decode().strip()}")
        yield folder
        subprocess.run(["umount", "-l", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)


def test_a_folder_that_cannot_be_written_is_refused(read_only_folder):
    with pytest.raises(BadInput, match=r"folder .*/ro cannot be written; .*--tracking-uri"):
        tracking.check_reachable(f"sqlite:///{read_only_folder}/m.db")


def test_a_server_that_does_not_answer_is_one_line():
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(BadInput, match=rf"MLflow tracking server {uri} does not answer .*start it"):
        tracking.check_reachable(uri, timeout_s=2)


def _tagged_runs(store, n: int) -> set[str]:
    return {store.client.create_run(store.experiment_id, tags={"scan.instance": "i1"}).info.run_id
            for _ in range(n)}


def test_run_searches_read_every_page(sqlite_store):
    made = _tagged_runs(sqlite_store, 5)
    sqlite_store.client.create_run(sqlite_store.experiment_id, tags={"scan.instance": "other"})
    found = tracking.find_runs_by_tag(sqlite_store.client, sqlite_store.experiment_id, {"scan.instance": "i1"},
                                      page_size=2)
    assert {r.info.run_id for r in found} == made
    starts = [r.info.start_time for r in found]
    assert starts == sorted(starts)  # oldest first: the original of a duplicate wins


@pytest.mark.slow
def test_run_searches_go_past_the_first_thousand(sqlite_store):
    """MLflow's default page is 1,000 runs: a sweep of more trials must still find every one."""
    made = _tagged_runs(sqlite_store, 1001)
    found = tracking.find_runs_by_tag(sqlite_store.client, sqlite_store.experiment_id, {"scan.instance": "i1"})
    assert {r.info.run_id for r in found} == made
