"""Sweeps in real subprocesses, hit by faults (Ctrl-C, SIGKILL, races), and what MLflow and Optuna say afterwards.

Each faulted sweep is run once per test session and shared by the tests that only read it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from fixtures_sweep import REPO, write_tiny_space

__all__ = ["FaultedSweep", "scanner_env", "scanner_cmd", "start_sweep", "wait_for", "epochs_logged", "runs_of",
           "study_of", "optuna_disagreements", "interrupted_sweep", "killed_sweep", "replicated_sweep", "short_tmp",
           "small_disk", "fill"]


@contextlib.contextmanager
def small_disk(mount: Path, size: str):
    """A real file system of ``size`` (tmpfs) at ``mount``; skips the test where mounting is not allowed."""
    mount.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(folder: Path) -> Path:
    """Every free byte of the file system holding ``folder`` goes to one file (delete it to free the disk)."""
    path = folder / "filler"
    with open(path, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while f.write(b"\0" * 65536):
            pass
    with open(path, "ab", buffering=0) as f, contextlib.suppress(OSError):
        while f.write(b"\0"):  # the last few bytes too
            pass
    return path


def short_tmp(tmp_path_factory, name: str) -> Path:
    """A short folder for TMPDIR: Ray's Unix sockets break under long paths; pytest's tmp paths are long."""
    path = Path(f"/tmp/scn-{name}-{os.getpid()}")
    path.mkdir(exist_ok=True)
    return path


def scanner_env(tmpdir: Path | None = None) -> dict[str, str]:
    env = dict(os.environ, RAY_AUTH_MODE="disabled", CUDA_VISIBLE_DEVICES="", TQDM_DISABLE="1",
               RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(REPO))
    env.pop("RAY_ADDRESS", None)  # a private Ray, never the test session's
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return env


def scanner_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "scanner", *args]


def start_sweep(folder: Path, space: Path, uri: str, tmpdir: Path | None = None) -> subprocess.Popen:
    """`scanner run` as a user starts it in a terminal: its own process group (so a signal reaches all of it)."""
    return subprocess.Popen(scanner_cmd("run", str(space), "--tracking-uri", uri), cwd=folder, env=scanner_env(tmpdir),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for(condition, proc: subprocess.Popen, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep ended before the fault could be injected"
    assert condition(), "the sweep never reached the point of the fault"


def epochs_logged(uri: str, name: str) -> int:
    try:
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(name)
        if exp is None:
            return 0
        return sum(len(client.get_metric_history(r.info.run_id, "val/loss"))
                   for r in client.search_runs([exp.experiment_id]) if "scan.trial_id" in r.data.tags)
    except Exception:  # noqa: BLE001  the store may be mid-creation while the sweep starts
        return 0


def runs_of(uri: str, name: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


def study_of(folder: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'scans' / 'optuna.db'}")


def optuna_disagreements(folder: Path, uri: str, name: str, objective: str = "val/accuracy") -> list[str]:
    """Every searched trial's MLflow record against its Optuna trial: completed = COMPLETE with the best-epoch value,
    stopped early = PRUNED, failed = FAIL; and the Optuna trial names the run. Empty when they agree."""
    states = {"completed": optuna.trial.TrialState.COMPLETE, "stopped_early": optuna.trial.TrialState.PRUNED,
              "failed": optuna.trial.TrialState.FAIL}
    by_trial: dict[str, list] = {}
    for t in study_of(folder, name).trials:
        if "scan_refused" not in t.user_attrs:
            by_trial.setdefault(t.user_attrs.get("scan_trial_id"), []).append(t)
    problems = []
    for run in runs_of(uri, name):
        tags = run.data.tags
        if tags.get("scan.baseline") != "false" or run.info.status == "KILLED" and tags.get("scan.status") == "failed" \
                and "orphan" in tags.get("scan.failure", ""):
            continue
        found = by_trial.get(tags["scan.trial_id"], [])
        if len(found) != 1:
            problems.append(f"{run.info.run_name}: {len(found)} Optuna trials")
            continue
        trial, status = found[0], tags["scan.status"]
        if trial.state != states[status]:
            problems.append(f"{run.info.run_name}: MLflow {status}, Optuna {trial.state.name}")
        elif status == "completed" and trial.value != pytest.approx(run.data.metrics[f"best/{objective}"]):
            problems.append(f"{run.info.run_name}: value {trial.value} vs best {run.data.metrics[f'best/{objective}']}")
        if trial.user_attrs.get("mlflow_run_id") not in (None, run.info.run_id):
            problems.append(f"{run.info.run_name}: Optuna names run {trial.user_attrs.get('mlflow_run_id')}")
    return problems


@dataclass
class FaultedSweep:
    folder: Path
    space: Path
    uri: str
    name: str
    tmpdir: Path
    fault_rc: int
    fault_out: str
    fault_err: str
    resume_rc: int
    resume_out: str
    resume_err: str


def _faulted(tmp_path_factory, name: str, sig: signal.Signals) -> FaultedSweep:
    """4 trials + baseline x 3 epochs; ``sig`` to the sweep's process group once 3 epochs are in MLflow; then
    `scanner resume`."""
    folder = tmp_path_factory.mktemp(name)
    tmpdir = short_tmp(tmp_path_factory, name)
    space = write_tiny_space(folder, name, trials=4, epochs=3)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    proc = start_sweep(folder, space, uri, tmpdir)
    wait_for(lambda: epochs_logged(uri, name) >= 3, proc)
    os.killpg(proc.pid, sig)
    out, err = proc.communicate(timeout=120)
    if sig == signal.SIGINT:  # a terminal's Ctrl-C reaches the whole group; what the driver left must not linger
        with_group_gone(proc.pid)
    done = subprocess.run(scanner_cmd("resume", name, "--tracking-uri", uri), cwd=folder, env=scanner_env(tmpdir),
                          capture_output=True, text=True, timeout=900)
    return FaultedSweep(folder, space, uri, name, tmpdir, proc.returncode, out, err, done.returncode, done.stdout,
                        done.stderr)


def with_group_gone(pgid: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    os.killpg(pgid, signal.SIGKILL)


@pytest.fixture(scope="session")
def interrupted_sweep(tmp_path_factory) -> FaultedSweep:
    """Ctrl-C mid-sweep, then `scanner resume`."""
    return _faulted(tmp_path_factory, "ctrlc", signal.SIGINT)


@pytest.fixture(scope="session")
def killed_sweep(tmp_path_factory) -> FaultedSweep:
    """SIGKILL of the driver and its private Ray mid-sweep, then `scanner resume`."""
    return _faulted(tmp_path_factory, "killme", signal.SIGKILL)


@pytest.fixture(scope="session")
def replicated_sweep(tmp_path_factory) -> FaultedSweep:
    """`final_seeds: 3`, SIGKILL while the seed replicas train, then `scanner resume`."""
    name = "seeds"
    folder = tmp_path_factory.mktemp(name)
    tmpdir = short_tmp(tmp_path_factory, name)
    space = write_tiny_space(folder, name, trials=2, epochs=2)
    space.write_text(space.read_text().replace("final_top: 1", "final_top: 1\n  final_seeds: 3"))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    proc = start_sweep(folder, space, uri, tmpdir)
    scan_json = folder / "scans" / name / "scan.json"

    def replicas_training() -> bool:
        return scan_json.exists() and '"phase": "replicas"' in scan_json.read_text() and any(
            "scan.replica_of" in r.data.tags and r.data.metrics.get("val/loss") is not None
            for r in runs_of(uri, name))

    wait_for(replicas_training, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    done = subprocess.run(scanner_cmd("resume", name, "--tracking-uri", uri), cwd=folder, env=scanner_env(tmpdir),
                          capture_output=True, text=True, timeout=900)
    return FaultedSweep(folder, space, uri, name, tmpdir, proc.returncode, out, err, done.returncode, done.stdout,
                        done.stderr)
