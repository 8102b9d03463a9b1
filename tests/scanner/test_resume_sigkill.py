"""Kill the sweep's driver with SIGKILL mid-sweep, resume it, and count what MLflow and Optuna hold."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import optuna
import pytest
from mlflow.tracking import MlflowClient

from fixtures_sweep import REPO, write_tiny_space


def _env():
    env = dict(os.environ, RAY_AUTH_MODE="disabled", CUDA_VISIBLE_DEVICES="", TQDM_DISABLE="1",
               RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(REPO))
    env.pop("RAY_ADDRESS", None)  # a private Ray, never the test session's
    return env


def _scanner(*args):
    return [sys.executable, "-m", "scanner", *args]


def _epochs_logged(uri: str, name: str) -> int:
    try:
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(name)
        if exp is None:
            return 0
        return sum(len(client.get_metric_history(r.info.run_id, "val/loss"))
                   for r in client.search_runs([exp.experiment_id]) if "scan.trial_id" in r.data.tags)
    except Exception:  # noqa: BLE001  the db may be mid-creation
        return 0


@pytest.mark.slow
def test_sigkill_then_resume_keeps_one_run_per_trial(tmp_path):
    space = write_tiny_space(tmp_path, "killme", trials=4, epochs=3)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.Popen(_scanner("run", str(space), "--tracking-uri", uri, "--quiet"), cwd=tmp_path, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while _epochs_logged(uri, "killme") < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(1)
    assert proc.poll() is None, "the sweep ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the private Ray it started (its own process group)
    proc.wait(30)

    done = subprocess.run(_scanner("resume", "killme", "--tracking-uri", uri, "--quiet"), cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode in (0, 1), done.stderr[-3000:]

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("killme")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    children = [r for r in runs if "scan.trial_id" in r.data.tags]
    parents = [r for r in runs if r.data.tags.get("scan.role") == "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert all(n == 1 for n in Counter(r.data.tags["scan.trial_id"] for r in children).values())
    assert not [r for r in runs if r.info.status == "RUNNING"]
    live = [r for r in children if r.info.status != "KILLED"]  # KILLED = orphans Tune's snapshot never saw
    assert len(live) == 5  # 4 searched + the baseline, each finished exactly once
    assert sum(r.data.tags["scan.baseline"] == "true" for r in live) == 1
    for r in children:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val/loss")]
        assert len(steps) == len(set(steps)), f"an epoch logged twice in {r.info.run_name}"
    for r in live:
        assert r.data.tags["scan.status"] in ("completed", "stopped_early", "failed")
    study = optuna.load_study(study_name="killme", storage=f"sqlite:///{tmp_path / 'scans' / 'optuna.db'}")
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
