"""A full disk mid-sweep (a real small file system under scans/, filled while trials run): trials that cannot write
fail with "no space left on device", the driver ends in one line with exit 1 and nothing RUNNING, the journal keeps
what MLflow has not taken, and `scanner resume` finishes once there is space."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from fixtures_faults import epochs_logged, fill, runs_of, scanner_cmd, scanner_env, short_tmp, small_disk, \
    start_sweep, wait_for
from fixtures_sweep import write_tiny_space

pytestmark = pytest.mark.slow  # a real sweep in a subprocess, and a resume


def test_a_full_disk_ends_the_sweep_in_one_line_and_resume_finishes(tmp_path, tmp_path_factory):
    space = write_tiny_space(tmp_path, "full", trials=3, epochs=3)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # MLflow's own store is elsewhere: it can still be written
    tmpdir = short_tmp(tmp_path_factory, "full")
    with small_disk(tmp_path / "scans", "300m") as disk:
        proc = start_sweep(tmp_path, space, uri, tmpdir)
        try:
            wait_for(lambda: epochs_logged(uri, "full") >= 2, proc)
            filler = fill(disk)
            _, err = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        assert proc.returncode == 1, err[-3000:]
        said = [ln for ln in err.strip().splitlines() if ln.startswith("scanner")]
        assert len(said) == 1 and "no space left on device" in said[0] and "scanner resume full" in said[0], said
        assert "Traceback" not in err, err[-3000:]
        runs = runs_of(uri, "full")
        assert runs and not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
        for r in runs:
            if r.data.tags.get("scan.status") == "failed":
                assert "no space left on device" in r.data.tags.get("scan.failure", "").lower(), r.data.tags

        filler.unlink()  # space again
        done = subprocess.run(scanner_cmd("resume", "full", "--tracking-uri", uri), cwd=tmp_path,
                              env=scanner_env(tmpdir), capture_output=True, text=True, timeout=900)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    runs = runs_of(uri, "full")
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    parents = [r for r in runs if r.data.tags.get("scan.role") == "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("scan.trial_id") and r.info.status != "KILLED"]
    shown = [(r.info.run_name, r.data.tags["scan.trial_id"], r.info.status, r.data.tags.get("scan.role")) for r in children]
    assert len(children) == 4 and len({r.data.tags["scan.trial_id"] for r in children}) == 4, shown
