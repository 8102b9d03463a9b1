"""Seed replicas of the finalists (`budget.final_seeds: 3`), with a SIGKILL while they train and a resume: each
finalist ends with 3 runs, the aggregate on the original equals the mean of the runs' own test figures, replicas stay
out of the study and the ranking."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from fixtures_faults import runs_of, study_of
from mlflow.tracking import MlflowClient

from reports import load_sweep, rank

pytestmark = pytest.mark.slow  # a real sweep, killed and resumed


def test_resume_says_which_phase_it_is_in(replicated_sweep):
    s = replicated_sweep
    assert s.resume_rc == 0, s.resume_err[-3000:]
    assert "while training the finalists' seed replicas" in s.resume_out


def test_each_finalist_has_its_replicas_once(replicated_sweep):
    runs = [r for r in runs_of(replicated_sweep.uri, replicated_sweep.name) if r.info.status != "KILLED"]
    replicas = [r for r in runs if "scan.replica_of" in r.data.tags]
    finals = [r for r in runs if r.data.tags.get("scan.final") == "true" and "scan.replica_of" not in r.data.tags]
    assert len(finals) == 2  # final_top 1 + the baseline
    per_original = Counter(r.data.tags["scan.replica_of"] for r in replicas)
    assert per_original == {f.data.tags["scan.trial_id"]: 2 for f in finals}
    assert len({r.data.tags["scan.trial_id"] for r in replicas}) == 4  # no replica twice across the kill
    assert len({(r.data.tags["scan.replica_of"], r.data.tags["scan.seed"]) for r in replicas}) == 4
    for r in replicas:
        assert r.info.status == "FINISHED" and "test/accuracy" in r.data.metrics
        assert r.data.tags["scan.instance"] == finals[0].data.tags["scan.instance"]


def test_the_seed_aggregate_is_the_mean_of_the_runs_own_test_figures(replicated_sweep):
    runs = runs_of(replicated_sweep.uri, replicated_sweep.name)
    by_trial = {r.data.tags.get("scan.trial_id"): r for r in runs}
    for original in [r for r in runs if r.data.tags.get("scan.final") == "true" and "scan.replica_of" not in r.data.tags]:
        group = [original] + [r for r in runs if r.data.tags.get("scan.replica_of") == original.data.tags["scan.trial_id"]
                              and r.info.status == "FINISHED"]
        values = np.array([r.data.metrics["test/accuracy"] for r in group])
        m = original.data.metrics
        assert m["seeds/n"] == 3
        assert m["seeds/test/accuracy"] == pytest.approx(values.mean())
        assert m["seeds/test/accuracy_std"] == pytest.approx(values.std(ddof=1))
        assert m["seeds/test/accuracy_err"] == pytest.approx(values.std(ddof=1) / math.sqrt(3))
        assert original.data.tags["scan.seed"] == "0" and by_trial[original.data.tags["scan.trial_id"]] is original


def test_replicas_stay_out_of_the_study_and_the_report(replicated_sweep):
    study = study_of(replicated_sweep.folder, replicated_sweep.name)
    assert len([t for t in study.trials if "scan_refused" not in t.user_attrs]) == 2  # the searched trials only
    sweep = load_sweep(replicated_sweep.name, replicated_sweep.uri)
    assert not [t for t in sweep.trials if "scan.replica_of" in t.tags]
    assert len(rank(sweep).rows) == 3  # 2 searched + the baseline


def test_a_replica_trains_to_its_originals_best_epoch_with_another_seed_each_epoch_once(replicated_sweep):
    """The epochs at which the original reached its best, no more; another seed gives other figures; the kill and
    the resume logged no epoch twice."""
    client = MlflowClient(replicated_sweep.uri)
    runs = [r for r in runs_of(replicated_sweep.uri, replicated_sweep.name) if r.info.status != "KILLED"]
    by_trial = {r.data.tags["scan.trial_id"]: r for r in runs if "scan.trial_id" in r.data.tags}
    replicas = [r for r in runs if "scan.replica_of" in r.data.tags]
    assert replicas
    for replica in replicas:
        original = by_trial[replica.data.tags["scan.replica_of"]]
        steps = [m.step for m in client.get_metric_history(replica.info.run_id, "val/loss")]
        assert len(steps) == len(set(steps)), f"an epoch logged twice in {replica.info.run_name}"
        assert max(steps) == int(original.data.metrics["best/epoch"]), replica.info.run_name
        mine = {m.step: m.value for m in client.get_metric_history(replica.info.run_id, "val/loss")}
        theirs = {m.step: m.value for m in client.get_metric_history(original.info.run_id, "val/loss")}
        assert any(mine[step] != theirs.get(step) for step in mine), f"{replica.info.run_name} trained as its original"
