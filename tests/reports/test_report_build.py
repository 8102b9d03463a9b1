"""build_report end to end on a real sqlite MLflow store: files, embedded images, CSV = MLflow values, the parent
run's artifacts and description, running/empty/failed sweeps, bad input through the CLI."""

from __future__ import annotations

import ast
import base64
import io
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from fixtures_report_store import SPECS, Spec, make_sweep
from mlflow.tracking import MlflowClient
from PIL import Image

from reports import ReportInputError, build_report

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("build")
    store = make_sweep(tmp)
    index = build_report("lartpc-test", store["uri"], tmp / "report")
    return store, index


def embedded_images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_report_files_and_every_embedded_image_decodes(built):
    _, index = built
    html = index.read_text()
    assert 'id="ranking"' in html and "<script>" in html
    images = embedded_images(html)
    assert len(images) >= 8  # ranking, Pareto, importance, confusion, per class, scores, cut scan, energy, curves
    for png in images:
        Image.open(io.BytesIO(png)).verify()
    assert "src=\"http" not in html and "src='http" not in html  # self-contained: nothing from the network
    md = (index.parent / "report.md").read_text()
    for rel in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        Image.open(index.parent / rel).verify()
    assert SPECS[1].name in md and "diverged: NaN loss" in md


def test_headline_is_the_test_figure_of_the_leader(built):
    html = built[1].read_text()
    leader = SPECS[1]
    assert f"Best trial t01 ({leader.name}): test accuracy = {leader.test_acc:.3f} ± {leader.err:.3f}" in html
    assert "relative error-rate reduction" in html


def test_csv_numbers_equal_the_mlflow_values(built):
    store, index = built
    table = pd.read_csv(index.parent / "ranking.csv")
    client = MlflowClient(store["uri"])
    assert len(table) == len(SPECS)
    for _, row in table.iterrows():
        m = client.get_run(row["run_id"]).data.metrics
        if pd.isna(row["rank"]):
            assert "best/val/accuracy" not in m and row["status"] == "failed"
            continue
        assert row["val/accuracy"] == m["best/val/accuracy"]
        assert row["val/accuracy_err"] == m["best/val/accuracy_err"]
        assert row["val/purity/numuCC"] == m["best/val/purity/numuCC"]
        assert row["perf/samples_per_s"] == m["perf/samples_per_s"]
        assert pd.isna(row["sys/gpu_mem_peak_gb"])  # CPU trials: absent, never 0
    spec_epochs = {s.name: len(s.acc) for s in SPECS if s.acc}
    assert {r["trial"]: r["epochs"] for _, r in table.iterrows() if r["trial"] in spec_epochs} == spec_epochs
    assert list(table["tied_with_leader"][:3]) == [True, True, False]
    assert table.loc[table["baseline"], "trial"].tolist() == [SPECS[0].name]


def test_report_is_logged_to_the_parent_run(built):
    store, index = built
    client = MlflowClient(store["uri"])
    listed = {f.path for f in client.list_artifacts(store["parent"], "report")}
    assert {"report/index.html", "report/report.md", "report/ranking.csv"} <= listed
    note = client.get_run(store["parent"]).data.tags["mlflow.note.content"]
    assert str(index) in note


def test_running_sweep_says_so(tmp_path):
    specs = SPECS[:3] + [Spec("t08 resnet18 ce lr=1e-3", {"model": "resnet18", "loss": "ce", "lr": "0.001"},
                              [0.6], 0.02, running=True)]
    store = make_sweep(tmp_path, specs=specs, parent_status="running")
    index = build_report("lartpc-test", store["uri"], tmp_path / "r", log_to_parent=False)
    assert "still running" in index.read_text()


def test_empty_and_all_failed_sweeps_give_a_report_that_says_so(tmp_path):
    empty = make_sweep(tmp_path / "a", specs=[])
    text = build_report("lartpc-test", empty["uri"], tmp_path / "ra", log_to_parent=False).read_text()
    assert "no trial runs yet" in text
    failed = make_sweep(tmp_path / "b", specs=[SPECS[5]])
    text = build_report("lartpc-test", failed["uri"], tmp_path / "rb", log_to_parent=False).read_text()
    assert "No trial has an objective value (1 of 1 failed)" in text and "diverged" in text


def test_unknown_sweep_lists_the_known_ones(built):
    store, _ = built
    with pytest.raises(ReportInputError, match="no sweep named 'nope'.*known sweeps: lartpc-test"):
        build_report("nope", store["uri"], Path("/nonexistent/never-written"))
    assert not Path("/nonexistent/never-written").exists()


def scanner(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "scanner", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


@pytest.mark.slow  # two interpreter start-ups with mlflow imports
def test_cli_bad_input_is_one_line_and_exit_2(built, tmp_path):
    store, _ = built
    out = scanner("report", "nope", "--tracking-uri", store["uri"], cwd=tmp_path)
    assert out.returncode == 2 and "known sweeps: lartpc-test" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    down = scanner("report", "x", "--tracking-uri", f"http://127.0.0.1:{closed_port()}", cwd=tmp_path)
    assert down.returncode == 2 and "unreachable" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1


@pytest.mark.slow  # a whole report in a fresh interpreter
def test_cli_report_prints_the_path_and_imports_no_ray_or_torch(built, tmp_path):
    store, _ = built
    probe = ("import sys, runpy; sys.argv = ['scanner', 'report', 'lartpc-test', '--tracking-uri', sys.argv[1], "
             "'--out', 'rep', '--at', 'last', '--no-log']\n"
             "from scanner.cli import main\nrc = main()\n"
             "bad = [m for m in sys.modules if m.split('.')[0] in ('ray', 'torch')]\n"
             "print('FORBIDDEN', bad)\nsys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", probe, store["uri"]], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "MPLBACKEND": "Agg"})
    assert out.returncode == 0, out.stderr
    assert str(tmp_path / "rep" / "index.html") in out.stdout
    assert "FORBIDDEN []" in out.stdout
    assert "last epoch" in (tmp_path / "rep" / "index.html").read_text()


def test_reports_imports_optuna_only_lazily():
    """Optuna (and scikit-learn behind its importance) is the slowest import of a report: only where needed."""
    for path in sorted((REPO / "reports").glob("*.py")):
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        for node in top:
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert not any(m.split(".")[0] == "optuna" for m in mods), f"{path.name} imports optuna at the top"
