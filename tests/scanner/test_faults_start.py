"""Faults around a sweep's start: Ctrl-C during start-up, two sweeps at once in a fresh folder, the same name started
twice at once, and a sweep folder deleted and run again (a new instance, never mixed with the old one)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest
from fixtures_faults import runs_of, scanner_cmd, scanner_env, short_tmp, start_sweep, wait_for
from fixtures_sweep import write_tiny_space
from mlflow.tracking import MlflowClient

from reports import load_sweep

pytestmark = pytest.mark.slow  # real sweeps in subprocesses


def test_ctrl_c_during_start_up_leaves_nothing_and_the_same_run_works_again(tmp_path, tmp_path_factory):
    space = write_tiny_space(tmp_path, "early", trials=1, epochs=1)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tmpdir = short_tmp(tmp_path_factory, "early")
    proc = start_sweep(tmp_path, space, uri, tmpdir)
    wait_for(lambda: (tmp_path / "scans" / "early" / "scan.json").exists(), proc, 120)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    said = [ln for ln in err.strip().splitlines() if ln.startswith("scanner")]
    assert said == [f"scanner run: interrupted during start-up; nothing was kept: run 'scanner run {space}' again"]
    assert not (tmp_path / "scans" / "early").exists()
    assert not [r for r in runs_of(uri, "early") if r.info.lifecycle_stage == "active"]

    again = subprocess.run(scanner_cmd("run", str(space), "--tracking-uri", uri, "--quiet"), cwd=tmp_path,
                           env=scanner_env(tmpdir), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]


def test_two_sweeps_started_at_once_in_a_fresh_folder_both_finish(tmp_path, tmp_path_factory):
    """Both create mlflow.db's and optuna.db's schemas at the same moment."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tmpdir = short_tmp(tmp_path_factory, "pair")
    spaces = [write_tiny_space(tmp_path, name, trials=1, epochs=1) for name in ("left", "right")]
    procs = [subprocess.Popen(scanner_cmd("run", str(s), "--tracking-uri", uri, "--quiet"), cwd=tmp_path,
                              env=scanner_env(tmpdir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for s in spaces]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    for name in ("left", "right"):
        parents = [r for r in runs_of(uri, name) if r.data.tags.get("scan.role") == "parent"]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"


def test_the_same_name_started_twice_at_once_refuses_one_in_a_line(tmp_path, tmp_path_factory):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tmpdir = short_tmp(tmp_path_factory, "twice")
    space = write_tiny_space(tmp_path, "twice", trials=1, epochs=1)
    procs = [subprocess.Popen(scanner_cmd("run", str(space), "--tracking-uri", uri, "--quiet"), cwd=tmp_path,
                              env=scanner_env(tmpdir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], [o[1][-2000:] for o in outs]
    loser = outs[[p.returncode for p in procs].index(2)][1]
    assert len(loser.strip().splitlines()) == 1 and "scanner resume twice" in loser, loser


def test_a_deleted_sweep_folder_run_again_is_a_new_instance(tiny_sweep, monkeypatch):
    """The same YAML after `rm -r scans/<name>`: a new parent run; the report and best-of: see only the new one."""
    folder = tiny_sweep.folder
    copy = folder / "again"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("scans", "again"))
    uri = f"sqlite:///{copy / 'mlflow.db'}"
    old = load_sweep("tiny", uri)
    done = subprocess.run(scanner_cmd("run", str(copy / "tiny.yaml"), "--tracking-uri", uri, "--quiet", "--trials", "1"),
                          cwd=copy, env=scanner_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = runs_of(uri, "tiny")
    parents = [r for r in runs if r.data.tags.get("scan.role") == "parent"]
    assert len(parents) == 2 and len({p.data.tags["scan.instance"] for p in parents}) == 2
    new = load_sweep("tiny", uri)
    assert len(new.trials) == 2 and {t.trial_id for t in new.trials}.isdisjoint({t.trial_id for t in old.trials})
    assert all(t.tags["scan.instance"] != old.trials[0].tags["scan.instance"] for t in new.trials)
    assert MlflowClient(uri).get_run(old.parent_run_id).info.status == "FINISHED"  # the old sweep stays as it was
