"""Report rules on sweeps built in memory (no store): ordering and ties, the reference headline, the importance
caveat, column digits, and the physics recomputed from predictions (weights, φ wrap, bias/RMS errors, lepton
energy, readable tick labels)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reports import _detail, gain_over_baseline, rank
from reports._build import reference_line, summary_lines
from reports._fetch import SweepRuns, Trial
from reports._lead import analyse_lead, headline
from reports._plots_detail import score_distributions
from reports._render import Table, column_decimals, fmt, fmt_delta, fmt_fixed, md_escape
from reports._sections import importance_section, ranking_section
from reports._systematics import systematics_section
from trainables.physics import effective_count, opening_angle_deg, weighted_fraction_err, weighted_quantile


def trial(label: str, value: float, err: float = 0.01, status: str = "completed", baseline: bool = False,
          lr: float = 1e-3, extra: dict | None = None) -> Trial:
    metrics = {"best/val/accuracy": value, "best/val/accuracy_err": err, "best/epoch": 2.0, "val/accuracy": value,
               "val/loss": 1.0, **(extra or {})}
    return Trial(run_id=f"id-{label}", run_name=f"{label} resnet lr={lr}", trial_id=label, baseline=baseline,
                 status=status, failure="", mlflow_status="FINISHED", epochs=2,
                 params={"lr": str(lr), "model": "resnet18" if int(label[1:]) % 2 else "resnet34"}, metrics=metrics,
                 tags={}, steps={k: 2 for k in metrics}, varied=["lr", "model"])


def sweep_of(trials: list[Trial], parent_metrics: dict | None = None) -> SweepRuns:
    return SweepRuns("mem", "sqlite:////nowhere/mlflow.db", "1", "parent", "finished", "val/accuracy", "max", [],
                     "classification", ["NC", "nue+CC"], [], trials, parent_metrics=parent_metrics or {})


def test_equal_values_rank_in_trial_order_and_failed_trials_are_not_ranked():
    trials = [trial("t07", 0.85), trial("t03", 0.85), trial("t00", 0.85, baseline=True), trial("t02", 0.90),
              trial("t05", 0.95, status="failed")]
    ranking = rank(sweep_of(trials))
    assert [r.trial.label for r in ranking.ranked] == ["t02", "t00", "t03", "t07"]
    assert [r.trial.label for r in ranking.rows if r.rank is None] == ["t05"]  # failed, even with a value


def test_the_seed_spread_widens_the_tie_window():
    a, b = trial("t01", 0.860, err=0.004), trial("t02", 0.850, err=0.004)
    assert not rank(sweep_of([a, b])).ranked[1].tied  # 0.010 > sqrt(2) * 0.004
    a.metrics["seeds/test/accuracy_std"] = 0.008  # the leader's own replicas; t02 gets the pooled spread
    ranking = rank(sweep_of([a, b]))
    assert ranking.pooled_seed_sigma == pytest.approx(0.008)
    assert ranking.ranked[1].tied  # 0.010 <= sqrt(2 * 0.004² + 2 * 0.008²)


def test_the_headline_says_when_the_leader_is_not_better_than_the_reference():
    trials = [trial("t00", 0.36, baseline=True), trial("t01", 0.37)]
    line = reference_line(rank(sweep_of(trials, {"ref/val/accuracy": 0.365, "ref/val/accuracy_err": 0.01})))
    assert line.startswith("**The leader is not better than the reference predictor**")
    ok = reference_line(rank(sweep_of(trials, {"ref/val/accuracy": 0.30})))
    assert ok.startswith("Reference predictor (validation): accuracy = 0.3;")
    assert reference_line(rank(sweep_of(trials))) is None  # no reference logged


def no_errors(t: Trial) -> Trial:
    """The trial as an older store has it: no `_err` metrics."""
    t.metrics = {k: v for k, v in t.metrics.items() if not k.endswith("_err")}
    return t


def test_without_logged_errors_the_tie_is_unknown_not_decided():
    trials = [no_errors(trial("t00", 0.80, baseline=True)), no_errors(trial("t01", 0.86)),
              no_errors(trial("t02", 0.86))]
    ranking = rank(sweep_of(trials))
    assert [r.tied for r in ranking.ranked[1:]] == [True, None]  # equal values tie whatever the error
    table = next(b for b in ranking_section(ranking).blocks if isinstance(b, Table))
    assert [row[table.headers.index("tie")] for row in table.rows] == ["leader", "≈ tied", "?"]
    assert list(ranking.table["tied_with_leader"]) == [True, True, None]
    summary = " ".join(summary_lines(ranking))
    assert "Within 1σ of the leader" in summary and "unknown" in summary


def test_without_logged_errors_the_headlines_claim_no_significance():
    trials = [no_errors(trial("t00", 0.80, baseline=True, extra={"test/accuracy": 0.80})),
              no_errors(trial("t01", 0.86, extra={"test/accuracy": 0.86, "syst/noisy/accuracy": 0.83}))]
    ranking = rank(sweep_of(trials, {"ref/val/accuracy": 0.50}))
    line = headline(analyse_lead(ranking, {}), ranking.sweep.pretty)
    assert "beats" not in line and "distinguishable" not in line
    assert "+6 ± ? % accuracy" in line and "no significance is claimed" in line
    reference = reference_line(ranking)
    assert "0.36 ± ?" in reference and "no significance is claimed" in reference
    gain = gain_over_baseline(ranking)
    assert math.isnan(gain.delta_err) and fmt_delta(gain.delta, gain.delta_err) == "+0.06 ± ?"
    assert fmt(0.8123, math.nan) == "0.8123 ± ?" and fmt(0.8123) == "0.8123"
    syst = next(b for b in systematics_section(ranking).blocks if isinstance(b, Table))
    assert syst.rows[0][4:] == ["−0.03 ± ?", "?"]  # shift, |shift| / σ


@pytest.mark.parametrize("leader_test, baseline_test, expected", [
    # test figures 1 point of error each: the difference has sqrt(2) points, P(better) = Phi(delta / 1.414 points)
    (0.86, 0.80, "**t01 beats the baseline by 6.0 ± 1.4 % accuracy** (P > 0.999, one seed;"),
    (0.812, 0.805, "**No finalist is distinguishable from the baseline** (leader t01: +0.7 ± 1.4 % accuracy, "
                   "P(better) = 0.69; test split)."),
    (0.74, 0.80, "**The baseline beats the leader t01 on the test split** by 6.0 ± 1.4 % accuracy "
                 "(P(leader better) < 0.001)."),  # validation ranked t01 first; the test split says otherwise
])
def test_the_headline_says_which_of_the_three_holds_with_its_probability(leader_test, baseline_test, expected):
    trials = [trial("t00", 0.80, baseline=True, extra={"test/accuracy": baseline_test, "test/accuracy_err": 0.01}),
              trial("t01", 0.86, extra={"test/accuracy": leader_test, "test/accuracy_err": 0.01})]
    ranking = rank(sweep_of(trials))
    line = headline(analyse_lead(ranking, {}), ranking.sweep.pretty)
    assert line.startswith(expected), line


def test_a_per_class_fraction_lead_is_told_in_percentage_points():
    trials = []
    for label, value, baseline in (("t00", 0.70, True), ("t01", 0.80, False)):
        trials.append(trial(label, 0.5, baseline=baseline, extra={
            "best/val/efficiency/nue_CC": value, "best/val/efficiency/nue_CC_err": 0.01,
            "test/efficiency/nue_CC": value, "test/efficiency/nue_CC_err": 0.01}))
    sweep = sweep_of(trials)
    sweep.objective = "val/efficiency/nue_CC"
    line = headline(analyse_lead(rank(sweep), {}), sweep.pretty)
    assert line.startswith("**t01 beats the baseline by 10.0 ± 1.4 % efficiency/nue+CC**"), line


def test_finalists_sharing_part_of_their_events_are_paired_on_those_and_say_so():
    rng = np.random.default_rng(2)
    label = rng.integers(0, 2, 600)
    trials, preds = [], {}
    for name, n, baseline in (("t00", 600, True), ("t01", 400, False)):
        scores = rng.dirichlet(np.ones(2), n)
        trials.append(trial(name, 0.6, baseline=baseline, extra={"test/accuracy": 0.6, "test/accuracy_err": 0.02}))
        preds[f"id-{name}"] = _detail.Predictions("classification", ["NC", "nue+CC"], index=np.arange(n),
                                                  label=label[:n], scores=scores)
    analysis = analyse_lead(rank(sweep_of(trials)), preds)
    assert analysis.finalists[1].vs_leader.method == "paired bootstrap"
    assert "share 400 of up to 600 events" in " ".join(analysis.notes)


@pytest.mark.parametrize("n, caveat", [(6, True), (12, False)])
def test_importance_from_few_trials_carries_a_caveat(n, caveat):
    rng = np.random.default_rng(n)
    trials = [trial(f"t{i:02d}", 0.8 + 0.01 * rng.standard_normal(), lr=float(10 ** rng.uniform(-4, -1)),
                    baseline=i == 0) for i in range(n)]
    text = " ".join(b for b in importance_section(rank(sweep_of(trials))).blocks if isinstance(b, str))
    assert ("Caveat: computed from" in text) == caveat
    assert f"rebuilt from the {n} completed runs" in text


def test_column_digits_are_consistent():
    assert column_decimals([0.8123, 0.80], [0.0041, 0.0052, 0.00001]) == 4  # the median error, to 2 digits
    assert [fmt_fixed(v, 4, e) for v, e in ((0.8123, 0.0041), (0.8, 0.005))] == ["0.8123 ± 0.0041",
                                                                                 "0.8000 ± 0.0050"]
    assert column_decimals([12.3, 0.5]) == 2 and column_decimals([0.0123, 0.004]) == 5
    assert fmt(float("nan")) == "—" and fmt(None) == "n/a" and fmt_fixed(float("nan"), 3) == "—"


def test_markdown_escape_keeps_code_spans_and_removes_tags():
    assert md_escape("<b>x</b> & `a<b`") == "&lt;b>x&lt;/b> &amp; `a<b`"
    assert md_escape("line one\nline two") == "line one line two"
    assert "<" not in md_escape("`unpaired <script>")


def regression(direction: str, names: list[str], weights: bool = True, n: int = 800) -> _detail.Predictions:
    rng = np.random.default_rng(5)
    target = rng.uniform(-3.1, 3.1, size=(n, len(names)))
    pred = target + rng.normal(0, 0.3, size=target.shape)
    pred[:10, -1] = -target[:10, -1]  # some residuals across the ±π seam
    return _detail.Predictions("regression", names, index=np.arange(n), target=target, pred=pred,
                               weights=rng.uniform(0.2, 2.0, n) if weights else None, direction=direction,
                               truth={"energy": rng.uniform(0.5, 5, n)})


@pytest.mark.parametrize("names, direction, wrapped", [(["theta", "beam_phi"], "", [False, True]),
                                                      (["theta", "azimuth"], "theta_phi", [False, True]),
                                                      (["x", "y"], "", [False, False])])
def test_azimuth_residuals_wrap_by_the_shared_rule(names, direction, wrapped):
    p = regression(direction, names)
    res = _detail.residuals(p)
    for k, name in enumerate(names):
        raw = p.pred[:, k] - p.target[:, k]
        if wrapped[k]:
            assert np.all((res[name] > -np.pi) & (res[name] <= np.pi)), name
            assert np.allclose(np.cos(res[name]), np.cos(raw)) and np.abs(raw).max() > np.pi  # it had to wrap
        else:
            assert np.array_equal(res[name], raw), name


def test_bias_and_rms_with_their_errors_match_the_weighted_formulas():
    p = regression("", ["x", "y"])
    res = _detail.residuals(p)
    for name, (bias, bias_err, rms, rms_err) in _detail.bias_rms(p, res).items():
        w, r = p.weights, res[name]
        assert bias == pytest.approx(np.average(r, weights=w))
        assert rms == pytest.approx(math.sqrt(np.average((r - bias) ** 2, weights=w)))
        n_eff = w.sum() ** 2 / (w**2).sum()
        assert bias_err == pytest.approx(rms / math.sqrt(n_eff)) and rms_err == pytest.approx(rms / math.sqrt(2 * n_eff))


def test_binned_resolution_uses_the_event_weights():
    p = regression("", ["x"])
    values, energy = np.abs(p.pred[:, 0] - p.target[:, 0]), p.truth["energy"]
    weighted = _detail.binned_resolution(values, energy, p.weights)
    plain = _detail.binned_resolution(values, energy)
    edges = weighted["edges"]
    for b in range(len(edges) - 1):
        m = (energy >= edges[b]) & ((energy < edges[b + 1]) if b < len(edges) - 2 else (energy <= edges[b + 1]))
        assert weighted["q68"][b] == pytest.approx(weighted_quantile(values[m], 0.68, p.weights[m]))
        assert plain["q68"][b] == pytest.approx(np.quantile(values[m], 0.68))
    assert not np.allclose(weighted["q68"], plain["q68"])


def classification(n: int = 900) -> _detail.Predictions:
    rng = np.random.default_rng(8)
    label = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[label]
    scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    energy = rng.uniform(0.5, 5, n)
    return _detail.Predictions("classification", ["NC", "nueCC", "numuCC"], index=np.arange(n), label=label,
                               scores=scores, weights=rng.uniform(0.2, 2.0, n),
                               truth={"energy": energy, "lepton_energy": 0.6 * energy})


def test_binned_efficiency_and_purity_use_the_event_weights():
    p = classification()
    energy = p.truth["energy"]
    binned = _detail.binned_eff_purity(p, energy)
    predicted = p.scores.argmax(1)
    edges = binned["edges"]
    for b in range(len(edges) - 1):
        m = (energy >= edges[b]) & ((energy < edges[b + 1]) if b < len(edges) - 2 else (energy <= edges[b + 1]))
        for c in range(3):
            truth = m & (p.label == c)
            eff, err = weighted_fraction_err(predicted[truth] == c, p.weights[truth])
            assert binned["eff"][c, b] == pytest.approx(eff) and binned["eff_err"][c, b] == pytest.approx(err)
            chosen = m & (predicted == c)
            assert binned["pur"][c, b] == pytest.approx(np.average(p.label[chosen] == c, weights=p.weights[chosen]))
    assert effective_count(p.weights) < len(p.weights)


def test_neutral_current_classes_have_no_visible_lepton():
    assert [_detail.has_visible_lepton(n) for n in ("NC", "nc", "NCpi0", "numuNC", "nueCC", "numuCC", "nue",
                                                    "numu", "CC(1pi)")] == [False, False, False, False, True, True,
                                                                            True, True, True]
    assert _detail.is_lepton_variable("lepton_energy") and not _detail.is_lepton_variable("energy")


def test_score_histogram_tick_labels_read_as_numbers():
    figure = score_distributions(classification())
    labels = figure.meta["yticklabels"]
    assert labels and all(labels)
    for panel in labels:
        assert all(float(text) > 0 for text in panel), panel  # "0.5", "2", "10"; never "$10^{0}$" or "6×10⁰"


def test_the_lead_of_a_regression_sweep_is_the_smaller_resolution():
    """mode min: the leader's smaller 68 % angle is "better"; the difference and P carry that sign."""
    rng = np.random.default_rng(11)
    target = rng.normal(size=(600, 3))
    target /= np.linalg.norm(target, axis=1, keepdims=True)
    preds, trials = {}, []
    for label, noise, baseline in (("t00", 0.25, True), ("t01", 0.15, False)):
        pred = target + rng.normal(0, noise, target.shape)
        res = float(np.quantile(opening_angle_deg(pred, target, "unit_vector"), 0.68))
        metrics = {"best/val/resolution68_deg": res, "best/val/resolution68_deg_err": 0.3, "best/epoch": 2.0,
                   "val/loss": 1.0, "test/resolution68_deg": res, "test/resolution68_deg_err": 0.3}
        t = Trial(run_id=label, run_name=label, trial_id=label, baseline=baseline, status="completed", failure="",
                  mlflow_status="FINISHED", epochs=2, params={}, metrics=metrics, tags={},
                  steps={k: 2 for k in metrics})
        trials.append(t)
        preds[label] = _detail.Predictions("regression", ["dx", "dy", "dz"], index=np.arange(600), target=target,
                                           pred=pred, direction="unit_vector")
    sweep = SweepRuns("reg", "sqlite:////nowhere/m.db", "1", "p", "finished", "val/resolution68_deg", "min", [],
                      "regression", [], ["dx", "dy", "dz"], trials)
    analysis = analyse_lead(rank(sweep), preds)
    assert analysis.leader.row.trial.label == "t01"
    d = analysis.finalists[1].vs_leader
    assert d.delta == pytest.approx(trials[1].metrics["test/resolution68_deg"] - trials[0].metrics["test/resolution68_deg"])
    assert d.delta < 0 and d.p_better > 0.95 and d.method == "paired bootstrap"
    assert headline(analysis, sweep.pretty).startswith("**t01 beats the baseline by ")
