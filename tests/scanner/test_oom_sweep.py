"""Out of memory in real sweeps (the loop raises torch.OutOfMemoryError at a chosen epoch and step, through its test
hook): a result, not a crash. With `oom: fail` every trial fails the same way and the sweep stops in one line after
the baseline and the first trials; with `oom: halve_batch` each trial restarts at half the batch, is tagged so, and
the sweep goes on. A point with a smallest batch (epoch:step:64) picks the trials that run out, as a huge batch
would: one failing trial keeps its first epoch, and the others, the finals and the report go on."""

from __future__ import annotations

import subprocess
from typing import Callable

import pytest

from fixtures_faults import runs_of, scanner_cmd, scanner_env
from fixtures_sweep import write_tiny_space

pytestmark = pytest.mark.slow  # real sweeps in subprocesses


def _sweep(folder, name: str, oom: str, trials: int, oom_at: str = "1:2",
           edit: Callable[[str], str] = str) -> subprocess.CompletedProcess:
    """A tiny sweep of 2 epochs with the out-of-memory hook at ``oom_at``; ``edit`` changes the YAML text further."""
    space = write_tiny_space(folder, name, trials=trials, epochs=2)
    space.write_text(edit(space.read_text().replace("resources: {cpu: 1, gpu: 0, concurrent: 2}",
                                                    f"resources: {{cpu: 1, gpu: 0, concurrent: 2, oom: {oom}}}")))
    env = dict(scanner_env(), SCANNER_TEST_OOM_AT=oom_at)
    return subprocess.run(scanner_cmd("run", str(space), "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"),
                          cwd=folder, env=env, capture_output=True, text=True, timeout=900)


def test_every_trial_out_of_memory_stops_the_sweep_in_one_line(tmp_path):
    done = _sweep(tmp_path, "oomfail", "fail", trials=8)
    assert done.returncode == 1, done.stderr[-3000:]
    said = [ln for ln in done.stderr.strip().splitlines() if ln.startswith("scanner")]
    assert len(said) == 1 and said[0].startswith("scanner run: stopped: the baseline and the first trials all failed "
                                                 "with: out of memory at epoch 1 step 2"), said
    runs = runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}", "oomfail")
    children = [r for r in runs if "scan.trial_id" in r.data.tags]
    assert 3 <= len(children) < 9  # it stopped instead of launching all 8 + the baseline
    assert not [r for r in runs if r.info.status == "RUNNING"]
    for r in children:
        if r.data.tags["scan.status"] == "failed" and "out of memory" in r.data.tags.get("scan.failure", ""):
            assert "try batch_size <= 16" in r.data.tags["scan.failure"]
            assert r.data.metrics.get("val/loss") is None  # epoch 1 never finished; nothing faked


def test_halve_batch_restarts_each_trial_at_half_the_batch_and_goes_on(tmp_path):
    done = _sweep(tmp_path, "oomhalf", "halve_batch", trials=2)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [r for r in runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}", "oomhalf") if "scan.trial_id" in r.data.tags]
    assert len(runs) == 3
    for r in runs:
        assert r.info.status == "FINISHED" and r.data.tags["scan.status"] in ("completed", "stopped_early")
        assert r.data.tags["scan.oom_retries"] == "1" and r.data.tags["scan.batch_size_final"] == "16"
        assert r.data.params["batch_size"] == "32"  # a param cannot change: it keeps the first value


def test_one_trial_out_of_memory_keeps_its_first_epoch_and_the_sweep_goes_on(tmp_path):
    # the baseline trains at batch 32; the searched trials at 64, which runs out at epoch 2 (FIFO: none is stopped
    # before it gets there)
    def large_batch_searched(text: str) -> str:
        text = (text.replace("scheduler: asha", "scheduler: fifo").replace("  batch_size: 32\n", "")
                .replace("  lr: 1.0e-3\n", "  lr: 1.0e-3\n  batch_size: 32\n"))
        return text + "  batch_size: {choice: [64]}\n"

    done = _sweep(tmp_path, "oomone", "fail", trials=2, oom_at="2:1:64", edit=large_batch_searched)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert done.returncode == 1, done.stderr[-3000:]  # trials failed; the sweep itself ran to its end
    assert "stopped" not in done.stderr, done.stderr[-3000:]
    runs = runs_of(uri, "oomone")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    children = [r for r in runs if "scan.trial_id" in r.data.tags]
    baseline = [r for r in children if r.data.tags.get("scan.baseline") == "true"]
    searched = [r for r in children if r.data.tags.get("scan.baseline") != "true"]
    assert len(baseline) == 1 and len(searched) == 2
    assert baseline[0].info.status == "FINISHED" and baseline[0].data.tags["scan.status"] == "completed"
    assert "test/accuracy" in baseline[0].data.metrics  # the finals ran on the trial that ranks
    assert (tmp_path / "scans" / "oomone" / "report" / "index.html").is_file()
    for r in searched:
        assert r.data.params["batch_size"] == "64" and r.data.tags["scan.status"] == "failed"
        assert r.data.tags["scan.failure"].startswith("out of memory at epoch 2 step 1; try batch_size <= 32")
        assert r.data.metrics["best/epoch"] == 1.0 and "val/accuracy" in r.data.metrics  # its first epoch stays
        assert r.data.tags.get("scan.checkpoint")
