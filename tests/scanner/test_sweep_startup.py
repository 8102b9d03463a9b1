"""How a sweep starts and ends around Ray: the MLflow set-up runs beside Ray's start, and a failure on either side
leaves no run RUNNING; a private Ray runs its trials at normal priority."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from fixtures_sweep import REPO, import_project_before_chdir, write_tiny_space
from mlflow.tracking import MlflowClient

import scanner.sweep.lifecycle as lifecycle
from scanner.sweep.setup import scans_root

pytestmark = pytest.mark.slow  # sweeps around a real (or failing) Ray start


def _parent(uri: str, name: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    return [r for r in runs if r.data.tags.get("scan.role") == "parent"], runs


@pytest.fixture
def tiny_space(tmp_path, monkeypatch):
    import_project_before_chdir()
    monkeypatch.chdir(tmp_path)
    return write_tiny_space(tmp_path, "startup", trials=1, epochs=1), f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_ray_that_does_not_start_ends_the_parent_failed(tiny_space, monkeypatch):
    space, uri = tiny_space

    def no_ray(address):
        raise RuntimeError("raylet did not come up")

    monkeypatch.setattr(lifecycle, "ray_init", no_ray)
    with pytest.raises(RuntimeError, match="raylet"):
        lifecycle.run_sweep(str(space), uri, quiet=True)
    parents, runs = _parent(uri, "startup")
    assert len(parents) == 1 and len(runs) == 1  # the set-up thread opened the parent before Ray failed
    assert parents[0].info.status == "FAILED" and parents[0].data.tags["scan.status"] == "failed"


def test_driver_error_during_fit_ends_every_run(tiny_space, monkeypatch, ray_session):
    space, uri = tiny_space

    class BrokenTuner:
        def fit(self):
            raise RuntimeError("controller bug")

    monkeypatch.setattr(lifecycle, "new_tuner", lambda sweep, driver: BrokenTuner())
    with pytest.raises(RuntimeError, match="controller bug"):
        lifecycle.run_sweep(str(space), uri, quiet=True)
    parents, _ = _parent(uri, "startup")
    assert [p.info.status for p in parents] == ["FAILED"] and parents[0].data.tags["scan.status"] == "failed"
    assert (scans_root() / "startup" / "scan.json").exists()  # kept: 'scanner resume' needs it


def test_ctrl_c_while_a_resume_starts_keeps_the_sweep_and_names_scanner_resume(tiny_space, monkeypatch, ray_session):
    """A sweep stopped before Tune's first snapshot, then resumed, then interrupted at once: the folder stays (it is
    not that process's start to undo), no run is left RUNNING, and the line sends the user to scanner resume."""
    space, uri = tiny_space

    class Tuner:
        def __init__(self, error: BaseException):
            self.error = error

        def fit(self):
            raise self.error

    monkeypatch.setattr(lifecycle, "new_tuner", lambda sweep, driver: Tuner(RuntimeError("controller bug")))
    with pytest.raises(RuntimeError, match="controller bug"):
        lifecycle.run_sweep(str(space), uri, quiet=True)
    monkeypatch.setattr(lifecycle, "new_tuner", lambda sweep, driver: Tuner(KeyboardInterrupt()))
    with pytest.raises(lifecycle.Interrupted, match="finish the sweep with 'scanner resume startup'"):
        lifecycle.resume_sweep("startup", uri, quiet=True)
    assert (scans_root() / "startup" / "scan.json").exists() and (scans_root() / "startup" / "space.yaml").exists()
    _, runs = _parent(uri, "startup")
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]


def test_private_ray_runs_trials_at_normal_priority(tmp_path):
    """Ray's own default is nice 15: every other process, the driver included, would preempt the trials. The
    setting lasts only while Ray starts: the process keeps the environment it had."""
    script = (
        "import os, ray\n"
        "from scanner.cluster import ray_init\n"
        "assert ray_init(None)\n"
        "assert 'RAY_worker_niceness' not in os.environ, 'the process did not get its environment back'\n"
        "print('NICE', ray.get(ray.remote(lambda: os.nice(0)).remote()), flush=True)\n"
        "ray.shutdown()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_worker_niceness"}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=180)
    assert "NICE 0" in out.stdout, out.stdout + out.stderr[-2000:]
