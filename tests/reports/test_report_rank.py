"""Ranking, ties, the gain over the baseline, the Pareto front and importance, read back from a real MLflow store."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from fixtures_report_store import SPECS, make_sweep
from optuna.distributions import CategoricalDistribution, FloatDistribution

from reports import (
    dominates,
    gain_over_baseline,
    infer_distribution,
    load_sweep,
    non_dominated,
    param_importance,
    pareto_front,
    rank,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_sweep(tmp_path_factory.mktemp("rank"))


@pytest.fixture(scope="module")
def sweep(store):
    return load_sweep("lartpc-test", store["uri"])


def scored(specs, at):
    """(name, value, err) of the trials with an objective, from the specs the store was written from."""
    out = []
    for s in specs:
        if s.acc:
            out.append((s.name, max(s.acc) if at == "best" else s.acc[-1], s.err))
    return out


def test_sweep_settings_come_from_the_parent_run(sweep):
    assert (sweep.objective, sweep.mode, sweep.task) == ("val/accuracy", "max", "classification")
    assert sweep.class_names == ["NC", "nueCC", "numuCC"]
    assert sweep.also == [{"metric": "perf/samples_per_s", "mode": "max"}]
    assert len(sweep.trials) == len(SPECS) and not sweep.running


@pytest.mark.parametrize("at", ["best", "last"])
def test_ranking_orders_by_the_objective_at_best_or_last(sweep, at):
    ranking = rank(sweep, at)
    expected = sorted(scored(SPECS, at), key=lambda x: -x[1])
    got = [(r.trial.run_name, r.objective) for r in ranking.ranked]
    assert [v for _, v in got] == [x[1] for x in expected]  # values in order (equal values may swap names)
    assert {n for n, _ in got} == {x[0] for x in expected}
    assert [r.rank for r in ranking.ranked] == list(range(1, len(expected) + 1))
    unranked = [r for r in ranking.rows if r.rank is None]
    assert [r.trial.status for r in unranked] == ["failed"]
    assert unranked[0].trial.failure.startswith("diverged")


def test_best_and_last_differ_where_a_trial_got_worse(sweep):
    best, last = rank(sweep, "best"), rank(sweep, "last")
    t07 = SPECS[7].name
    assert next(r.objective for r in best.rows if r.trial.run_name == t07) == max(SPECS[7].acc)
    assert next(r.objective for r in last.rows if r.trial.run_name == t07) == SPECS[7].acc[-1]


def test_ties_use_the_combined_sigma(sweep):
    ranking = rank(sweep, "best")
    leader_name, x0, s0 = sorted(scored(SPECS, "best"), key=lambda x: -x[1])[0]
    expected = {n for n, x, s in scored(SPECS, "best") if n != leader_name and abs(x - x0) <= math.hypot(s0, s)}
    assert ranking.leader.trial.run_name == leader_name and ranking.leader.leader
    assert {r.trial.run_name for r in ranking.ranked if r.tied} == expected
    assert expected == {SPECS[2].name}  # the store was built so exactly one trial ties; guard the fixture itself


def test_gain_over_the_baseline_uses_test_figures_when_both_have_them(sweep):
    gain = gain_over_baseline(rank(sweep, "best"))
    leader, base = SPECS[1], SPECS[0]
    assert gain.split == "test"
    assert gain.delta == pytest.approx(leader.test_acc - base.test_acc)
    err0, err1 = 1 - base.test_acc, 1 - leader.test_acc
    assert gain.relative == pytest.approx((err0 - err1) / err0)
    assert gain.delta_err == pytest.approx(math.hypot(leader.err, base.err))
    effs = {row[0]: row[5] for row in gain.per_name}
    assert effs["val/efficiency/nueCC"] == pytest.approx((leader.test_acc - 0.01) - (base.test_acc - 0.01))


def brute_force_front(points, modes):
    signs = np.array([1 if m == "max" else -1 for m in modes])
    p = np.asarray(points) * signs
    keep = []
    for i in range(len(p)):
        beaten = (np.all(p >= p[i], axis=1) & np.any(p > p[i], axis=1))
        if not beaten.any():
            keep.append(i)
    return keep


@pytest.mark.parametrize("seed", range(5))
def test_non_dominated_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    points = [tuple(x) for x in rng.integers(0, 6, size=(40, 3)).astype(float)]  # small ints: many ties
    modes = ("max", "min", "max")
    assert non_dominated(points, modes) == brute_force_front(points, modes)


def test_dominance_is_strict():
    assert dominates((1.0, 1.0), (1.0, 0.0), ("max", "max"))
    assert not dominates((1.0, 1.0), (1.0, 1.0), ("max", "max"))
    assert dominates((1.0, 0.0), (1.0, 1.0), ("max", "min"))


def test_pareto_front_of_the_sweep(sweep):
    front = pareto_front(rank(sweep, "best"))
    names = [front.rows[i].trial.run_name for i in front.front]
    brute = [front.rows[i].trial.run_name for i in brute_force_front(front.values, front.modes)]
    assert sorted(names) == sorted(brute)
    assert SPECS[1].name in names and SPECS[4].name in names  # the most accurate and the fastest
    assert SPECS[0].name not in names  # the baseline is slower and less accurate than t02/t06


def test_distributions_are_inferred_from_the_logged_strings():
    lr, values = infer_distribution(["0.0001", "0.001", "0.003", "0.01", "0.1"])
    assert isinstance(lr, FloatDistribution) and lr.log and values[0] == 1e-4
    wd, _ = infer_distribution(["0.1", "0.2", "0.3", "0.4", "0.5"])
    assert isinstance(wd, FloatDistribution) and not wd.log
    assert isinstance(infer_distribution(["0.0", "0.99", "0.999"])[0], CategoricalDistribution)
    assert isinstance(infer_distribution(["resnet18", "resnet34"])[0], CategoricalDistribution)


def test_importance_covers_the_varied_params(sweep):
    imp = param_importance(rank(sweep, "best"))
    assert imp.why_absent == ""
    assert set(imp.values) == {"model", "loss", "lr"}
    assert sum(imp.values.values()) == pytest.approx(1.0, abs=1e-6)


def test_importance_says_why_it_is_absent(tmp_path):
    store = make_sweep(tmp_path, specs=SPECS[:1] + SPECS[5:6])  # the baseline and a failed trial
    imp = param_importance(rank(load_sweep("lartpc-test", store["uri"])))
    assert imp.values == {} and "at least 2 completed trials" in imp.why_absent


def test_combinations_of_modes_keep_every_duplicate_of_a_front_point():
    points = [(1.0, 1.0), (1.0, 1.0), (0.0, 0.0)]
    for modes in itertools.product(("max", "min"), repeat=2):
        assert non_dominated(points, modes) == brute_force_front(points, modes)
