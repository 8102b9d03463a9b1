"""Where a report writes, on real files: beside what is in --out (``--out .`` in a project folder keeps mlflow.db),
a manifest of what it wrote, never over a user's file, with the user's umask; reading a store never creates one."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures_report_store import make_sweep
from mlflow.tracking import MlflowClient

from reports import MANIFEST, ReportInputError, build_report, client_for, load_sweep, report_files
from reports._output import write_files

REPORT_FILES = {"index.html", "report.md", "ranking.csv"}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder as a user has it: the sweep's mlflow.db and artifacts, and notes of their own."""
    folder = tmp_path_factory.mktemp("project")
    store = make_sweep(folder)
    (folder / "notes.txt").write_text("my notes")
    (folder / "figures").mkdir()
    (folder / "figures" / "mine.png").write_bytes(b"not the report's")
    return folder, store


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_out_dot_writes_beside_the_project_and_keeps_mlflow_db(project, monkeypatch):
    folder, store = project
    monkeypatch.chdir(folder)
    db_before = (folder / "mlflow.db").stat().st_size
    index = build_report("lartpc-test", store["uri"], Path("."), log_to_parent=False)
    assert index == folder / "index.html" and index.exists()
    assert (folder / "mlflow.db").stat().st_size >= db_before
    assert load_sweep("lartpc-test", store["uri"]).trials  # the store is still there and readable
    assert (folder / "notes.txt").read_text() == "my notes"
    assert (folder / "figures" / "mine.png").read_bytes() == b"not the report's"
    listed = json.loads((folder / MANIFEST).read_text())["files"]
    assert REPORT_FILES <= set(listed) and "figures/ranking.png" in listed
    assert not {"mlflow.db", "notes.txt", "figures/mine.png"} & set(listed)
    assert {p.relative_to(folder).as_posix() for p in report_files(folder)} == set(listed)


def test_files_and_folders_get_the_users_umask(tmp_path, umask_022):
    files = {"index.html": b"<html></html>", "figures/ranking.png": b"png"}
    out = tmp_path / "a" / "report"
    write_files(out, files)
    assert mode(out) == 0o755 and mode(out / "figures") == 0o755
    assert mode(out / "index.html") == 0o644 and mode(out / "figures" / "ranking.png") == 0o644
    assert mode(out / MANIFEST) == 0o644
    os.umask(0o002)  # a group-shared project
    shared = tmp_path / "shared"
    write_files(shared, files)
    assert mode(shared) == 0o775 and mode(shared / "figures") == 0o775 and mode(shared / "index.html") == 0o664


def test_a_users_file_of_the_same_name_is_refused_and_left_alone(tmp_path):
    store = make_sweep(tmp_path / "store")
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").write_text("my own page")
    with pytest.raises(ReportInputError, match=r"index.html exists and was not written by a report") as err:
        build_report("lartpc-test", store["uri"], out, log_to_parent=False)
    assert "\n" not in str(err.value)
    assert (out / "index.html").read_text() == "my own page"
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]  # nothing else was written


def test_a_later_report_replaces_its_own_files_removes_its_stale_ones_and_refuses_edited_ones(tmp_path):
    out = tmp_path / "out"
    write_files(out, {"index.html": b"v1", "report.md": b"v1", "figures/gone_section.png": b"old figure"})
    (out / "figures" / "mine.png").write_bytes(b"user")
    write_files(out, {"index.html": b"v2", "report.md": b"v2", "figures/ranking.png": b"new"})
    assert (out / "index.html").read_bytes() == b"v2"
    assert not (out / "figures" / "gone_section.png").exists()  # the earlier report's, unchanged: removed
    assert (out / "figures" / "mine.png").read_bytes() == b"user"
    assert set(json.loads((out / MANIFEST).read_text())["files"]) == {"index.html", "report.md",
                                                                      "figures/ranking.png"}
    (out / "report.md").write_text("my edits")
    with pytest.raises(ReportInputError, match="report.md was changed since the report wrote it"):
        write_files(out, {"index.html": b"v3", "report.md": b"v3"})
    assert (out / "report.md").read_text() == "my edits" and (out / "index.html").read_bytes() == b"v2"


def test_an_interrupted_reports_files_are_still_its_own(tmp_path):
    """The manifest lists the files before they are written (no hash yet): a report killed half-way leaves a
    folder the next report can write into."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.html").write_bytes(b"half")
    (out / MANIFEST).write_text(json.dumps({"kind": "scanner-report", "files": {"index.html": None}}))
    write_files(out, {"index.html": b"whole"})
    assert (out / "index.html").read_bytes() == b"whole"


def test_manifest_entries_outside_the_folder_are_never_touched(tmp_path):
    outside = tmp_path / "precious.txt"
    outside.write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text(json.dumps({"kind": "scanner-report", "files": {"../precious.txt": None}}))
    write_files(out, {"index.html": b"<html></html>"})
    assert outside.read_text() == "keep"


def test_a_foreign_manifest_file_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text('{"something": "else"}')
    with pytest.raises(ReportInputError, match="is not a report manifest"):
        write_files(out, {"index.html": b"x"})


def test_only_the_reports_files_are_logged_to_the_parent(tmp_path):
    store = make_sweep(tmp_path)  # the store and its artifacts live in tmp_path, which becomes --out
    (tmp_path / "notes.txt").write_text("private")
    build_report("lartpc-test", store["uri"], tmp_path)
    logged = {f.path for f in MlflowClient(store["uri"]).list_artifacts(store["parent"], "report")}
    assert {"report/index.html", "report/report.md", "report/ranking.csv"} <= logged
    assert "report/notes.txt" not in logged and "report/mlflow.db" not in logged and "report/artifacts" not in logged


@pytest.mark.parametrize("form", ["absolute", "relative"])
def test_reading_an_absent_sqlite_store_creates_nothing(tmp_path, monkeypatch, form):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}" if form == "absolute" else "sqlite:///mlflow.db"
    with pytest.raises(ReportInputError, match=f"no MLflow store at {tmp_path / 'mlflow.db'}") as err:
        load_sweep("nope", uri)
    assert "\n" not in str(err.value)
    with pytest.raises(ReportInputError):
        client_for(uri)  # best-of: resolves through it
    assert list(tmp_path.iterdir()) == []


def test_an_existing_store_without_the_sweep_still_lists_the_known_ones(tmp_path):
    store = make_sweep(tmp_path)
    with pytest.raises(ReportInputError, match="no sweep named 'nope'.*known sweeps: lartpc-test"):
        load_sweep("nope", store["uri"])


@pytest.mark.slow  # two interpreter start-ups with MLflow
def test_cli_report_of_an_unknown_sweep_leaves_no_store_and_out_dot_keeps_the_project(project, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = subprocess.run([sys.executable, "-m", "scanner", "report", "nope"], cwd=empty, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert f"no MLflow store at {empty / 'mlflow.db'}" in out.stderr
    assert list(empty.iterdir()) == []
    folder, store = project
    done = subprocess.run([sys.executable, "-m", "scanner", "report", "lartpc-test", "--out", ".", "--no-log"],
                          cwd=folder, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (folder / "mlflow.db").exists() and (folder / "notes.txt").read_text() == "my notes"
    assert (folder / MANIFEST).exists()  # the folder itself keeps its mode: it is the user's
