"""The tracking server goes away for ~20 s mid-sweep (SIGKILL), then comes back on the same store and port: trials
keep reporting meanwhile, and afterwards MLflow holds every epoch's metrics of every trial exactly once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from fixtures_sweep import REPO, write_tiny_space
from mlflow.tracking import MlflowClient

from scanner.targets import resolve_run
from trainables.checkpoint import load_state
from trainables.data import write_synthetic

OUTAGE_S = 20.0  # the figure
EPOCHS = 4
SLOW_SPACE_EDITS = {  # longer epochs (resnet_tiny on 1,200 events) so the outage falls mid-sweep; FIFO: all epochs
    "path: tiny.h5": "path: outage.h5",
    "scheduler: asha": "scheduler: fifo",
    "model: {choice: [small_cnn_tiny, resnet_tiny]}": "lr_schedule: {choice: [cosine, constant]}",
    "baseline:\n  model: small_cnn_tiny": "baseline:\n  model: resnet_tiny",
    "num_workers: 0": "num_workers: 0\n  model: resnet_tiny",
}


def _env() -> dict[str, str]:
    env = dict(os.environ, RAY_AUTH_MODE="disabled", CUDA_VISIBLE_DEVICES="", TQDM_DISABLE="1",
               RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(REPO))
    env.pop("RAY_ADDRESS", None)  # a private Ray, never the test session's
    return env


def _slow_space(folder: Path) -> Path:
    write_synthetic(folder / "outage.h5", events=1200, size=16, seed=1, classes=("nc", "nue", "numu"), progress=False)
    space = write_tiny_space(folder, "outage", trials=3, epochs=EPOCHS)
    text = space.read_text()
    for old, new in SLOW_SPACE_EDITS.items():
        assert old in text, old
        text = text.replace(old, new)
    space.write_text(text)
    return space


def tune_results(folder: Path) -> list[dict]:
    """Every result Tune's driver recorded (one JSON line per trial epoch): the sweep's own progress."""
    rows = []
    for path in (folder / "scans" / "outage" / "ray").glob("tune/*/result.json"):
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:  # a line being written
                continue
    return rows


def journal_size(folder: Path) -> int:
    """How many calls the writer has journaled and not yet had accepted by MLflow."""
    path = folder / "scans" / "outage" / "mlflow_journal.db"
    if not path.exists():
        return 0
    with sqlite3.connect(str(path), timeout=10) as db:
        return db.execute("SELECT COUNT(*) FROM ops").fetchone()[0]


def _val_epochs_logged(uri: str) -> int:
    try:
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("outage")
        runs = client.search_runs([exp.experiment_id]) if exp else []
        return sum(len(client.get_metric_history(r.info.run_id, "val/loss")) for r in runs)
    except Exception:  # noqa: BLE001  the server may be starting
        return 0


@pytest.mark.slow
def test_server_outage_mid_sweep_loses_nothing(tmp_path, mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # this test's own client: fail fast while polling
    space = _slow_space(tmp_path)
    log = tmp_path / "sweep.log"  # a file, not a pipe: a full pipe would stall the sweep, not the outage
    sweep = subprocess.Popen([sys.executable, "-m", "scanner", "run", str(space), "--tracking-uri", mlflow_server.uri,
                              "--quiet"], cwd=tmp_path, env=_env(), stdout=log.open("w"), stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while _val_epochs_logged(mlflow_server.uri) < 1 and time.monotonic() < deadline and sweep.poll() is None:
            time.sleep(0.5)
        assert sweep.poll() is None, "the sweep ended before the outage: " + log.read_text()[-2000:]

        os.killpg(mlflow_server.proc.pid, signal.SIGKILL)  # the server dies, mid-request perhaps
        mlflow_server.proc.wait(10)
        with pytest.raises(requests.RequestException):
            requests.get(mlflow_server.uri + "/health", timeout=2)
        results_before, journal_before = len(tune_results(tmp_path)), journal_size(tmp_path)
        time.sleep(OUTAGE_S)
        results_during, journal_during = len(tune_results(tmp_path)), journal_size(tmp_path)
        assert sweep.poll() is None, "the sweep ended during the outage: " + log.read_text()[-2000:]
        mlflow_server.start()  # the same store and port
        print(f"outage: Tune results {results_before} -> {results_during}, journal {journal_before} -> {journal_during}")

        sweep.wait(600)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
            sweep.wait(30)
    # The sweep did not stall: epochs kept coming, and the writer spooled them instead of blocking.
    assert results_during > results_before, (results_before, results_during)
    assert journal_during > journal_before, (journal_before, journal_during)
    assert sweep.returncode == 0, log.read_text()[-3000:]

    client = MlflowClient(mlflow_server.uri)
    exp = client.get_experiment_by_name("outage")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("scan.role") == "parent"]
    children = {r.data.tags["scan.trial_id"]: r for r in runs if "scan.trial_id" in r.data.tags}
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4 and len(runs) == 5  # 3 searched + the baseline, one run each
    assert not [r for r in runs if r.info.status == "RUNNING"]

    results = tune_results(tmp_path)
    assert {r["trial_id"] for r in results} == set(children)
    for trial_id, run in children.items():
        assert run.info.status == "FINISHED" and run.data.tags["scan.status"] == "completed"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")]
        assert sorted(steps) == list(range(1, EPOCHS + 1)), f"{run.info.run_name}: val/loss steps {steps}"
        mine = [r for r in results if r["trial_id"] == trial_id]
        keys = {k for r in mine for k, v in r.items()
                if "/" in k and not k.startswith("config/") and isinstance(v, (int, float))}
        for key in keys:
            history = client.get_metric_history(run.info.run_id, key)
            logged = sorted(m.step for m in history)
            expected = sorted(r["epoch"] for r in mine if key in r)
            assert logged == expected, f"{run.info.run_name}: {key} logged at {logged}, Tune saw {expected}"
            values = {m.step: m.value for m in history}
            for r in (r for r in mine if key in r):
                assert values[r["epoch"]] == pytest.approx(r[key], rel=1e-6, nan_ok=True), (key, r["epoch"])

    # On a tracking server each trial's best checkpoint is also an artifact of its run (tracking.log_checkpoints
    # defaults to best there): best-of: works from another machine, here a sweep folder that is gone.

    for run in children.values():
        assert "checkpoint/state.pt" in {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")}
    (tmp_path / "scans" / "outage" / "ray").rename(tmp_path / "elsewhere")
    monkeypatch.chdir(tmp_path)
    fetched = resolve_run("best-of:outage", mlflow_server.uri)
    assert fetched.checkpoint.startswith(str(tmp_path / "scans" / "_fetched" / fetched.run_id))
    assert fetched.run_id in {r.info.run_id for r in children.values()}
    assert load_state(Path(fetched.checkpoint))["epoch"] >= 1
