"""A sweep interrupted (Ctrl-C) or killed (SIGKILL) mid-way, then `scanner resume`: one run per trial, every value
once, truthful statuses, Optuna agreeing with MLflow, recovered failures kept as history, no scratch left behind."""

from __future__ import annotations

from collections import Counter

import pytest
from mlflow.tracking import MlflowClient

from fixtures_faults import optuna_disagreements, runs_of, study_of
from scanner.sweep.settle import ORPHAN

pytestmark = pytest.mark.slow  # each fixture runs and faults a real sweep in subprocesses


@pytest.fixture(params=["interrupted_sweep", "killed_sweep"])
def faulted(request):
    return request.getfixturevalue(request.param)


def test_ctrl_c_says_in_one_line_how_to_finish(interrupted_sweep):
    s = interrupted_sweep
    assert s.fault_rc == 130, s.fault_err[-2000:]
    lines = [ln for ln in s.fault_err.strip().splitlines() if ln.startswith("scanner")]
    assert lines == [f"scanner run: interrupted; finish the sweep with 'scanner resume {s.name}'"], s.fault_err[-2000:]


def test_resume_finishes_with_one_run_per_trial_and_nothing_running(faulted):
    assert faulted.resume_rc in (0, 1), faulted.resume_err[-3000:]
    runs = runs_of(faulted.uri, faulted.name)
    children = [r for r in runs if "scan.trial_id" in r.data.tags]
    parents = [r for r in runs if r.data.tags.get("scan.role") == "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["scan.status"] == "finished"
    assert all(n == 1 for n in Counter(r.data.tags["scan.trial_id"] for r in children).values())
    assert not [r for r in runs if r.info.status == "RUNNING"]
    live = [r for r in children if r.info.status != "KILLED"]  # KILLED = orphans Tune's snapshot never saw
    assert len(live) == 5  # 4 searched + the baseline, each finished exactly once
    assert sum(r.data.tags["scan.baseline"] == "true" for r in live) == 1
    assert len({r.data.tags["scan.instance"] for r in runs}) == 1  # resume keeps the sweep's instance


def test_every_epoch_once_and_statuses_follow_the_epochs(faulted):
    client = MlflowClient(faulted.uri)
    for r in runs_of(faulted.uri, faulted.name):
        if "scan.trial_id" not in r.data.tags or r.info.status == "KILLED":
            continue
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "val/loss")]
        assert len(steps) == len(set(steps)), f"an epoch logged twice in {r.info.run_name}"
        status = r.data.tags["scan.status"]
        if max(steps) >= 3:  # reached max_epochs: completed, also when it finished just before the fault
            assert status == "completed", r.info.run_name
        else:
            assert status in ("stopped_early", "failed"), r.info.run_name


def test_recovered_runs_keep_their_failure_as_history(faulted):
    for r in runs_of(faulted.uri, faulted.name):
        tags = r.data.tags
        if tags.get("scan.status") in ("completed", "stopped_early"):
            assert "scan.failure" not in tags, f"{r.info.run_name} completed but still says {tags['scan.failure']}"


def test_interrupted_runs_that_recovered_have_history(interrupted_sweep):
    interrupted = [r for r in runs_of(interrupted_sweep.uri, interrupted_sweep.name)
                   if "interrupted by the user" in r.data.tags.get("scan.failure_history", "")]
    # a run whose trial Tune's saved state never recorded did not recover: it is an orphan, searched again
    orphans = [r for r in interrupted if r.info.status == "KILLED"]
    recovered = [r for r in interrupted if r.info.status != "KILLED"]
    assert recovered, "no run interrupted mid-trial was found recovered"
    assert all(r.data.tags["scan.status"] in ("completed", "stopped_early") for r in recovered)
    assert all(r.data.tags["scan.status"] == "failed" and r.data.tags["scan.failure"] == ORPHAN for r in orphans)


def test_optuna_agrees_with_mlflow(faulted):
    assert optuna_disagreements(faulted.folder, faulted.uri, faulted.name) == []
    study = study_of(faulted.folder, faulted.name)
    assert not [t for t in study.trials if t.state.name == "RUNNING"]
    best = study.best_trial  # the study's best is the report's leader among searched trials
    runs = {r.data.tags.get("scan.trial_id"): r for r in runs_of(faulted.uri, faulted.name)}
    assert runs[best.user_attrs["scan_trial_id"]].data.tags["scan.status"] == "completed"


def test_no_scratch_checkpoint_left_in_the_system_temp_folder(faulted):
    assert not list(faulted.tmpdir.glob("ckpt-*")), "scratch checkpoints leaked into TMPDIR"
    assert not list(faulted.tmpdir.glob("checkpoint_tmp_*")), "copies of restored checkpoints leaked into TMPDIR"
