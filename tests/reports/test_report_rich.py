"""The report of a finished sweep with everything in it (tests/fixtures_reports.py): seed replicas kept out of the
ranking, the paired comparison of the finalists with their seed spread, systematics, the reference predictor,
flags, figures undefined at an epoch, GPU telemetry, real class names, HTML in a parameter value."""

from __future__ import annotations

import gc
import logging
import math
import os

import h5py
import matplotlib
import numpy as np
import optuna
import pandas as pd
import pytest
from fixtures_reports import GPU, HOSTILE, REFERENCE, RICH, RICH_SWEEP, SEEDS, make_rich_sweep, rich_seed_expectation
from mlflow.tracking import MlflowClient
from scipy import stats as scipy_stats

from reports import _detail, build_report, load_sweep, rank
from reports._gather import fetch_details
from reports._lead import analyse_lead
from reports._render import fmt
from reports._sections import ranking_section
from reports._systematics import analyse_systematics
from trainables.physics import weighted_roc_auc

PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_rich_sweep(tmp_path_factory.mktemp("rich"))


@pytest.fixture(scope="module")
def sweep(store):
    return load_sweep(RICH_SWEEP, store["uri"])


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    """The report, built from a process whose Optuna logs at INFO, whose matplotlib backend is not Agg (a notebook's)
    and that never set MLflow's progress bars."""
    out = tmp_path_factory.mktemp("rich_report") / "report"
    old_level, old_env = optuna.logging.get_verbosity(), os.environ.pop(PROGRESS_BAR, None)
    old_backend = matplotlib.get_backend()
    optuna.logging.set_verbosity(logging.INFO)
    matplotlib.use("pdf")
    try:
        index = build_report(RICH_SWEEP, store["uri"], out, log_to_parent=False)
        after = {"optuna": optuna.logging.get_verbosity(), "env": os.environ.get(PROGRESS_BAR),
                 "backend": matplotlib.get_backend(), "gc": gc.isenabled()}
    finally:
        optuna.logging.set_verbosity(old_level)
        matplotlib.use(old_backend)
        if old_env is not None:
            os.environ[PROGRESS_BAR] = old_env
    table = pd.read_csv(out / "ranking.csv", keep_default_na=False, na_values=[""])
    return index.read_text(), (out / "report.md").read_text(), table.set_index("label"), after


def section(html: str, anchor: str) -> str:
    return html.split(f'<h2 id="{anchor}">', 1)[1].split("<h2", 1)[0]


def test_replicas_are_out_of_the_ranking_the_counts_and_the_csv(sweep, report):
    html, _, table, _ = report
    assert sorted(t.label for t in sweep.trials) == [t.label for t in RICH]
    assert len(sweep.replicas) == 3 * (SEEDS - 1)
    assert all(r.tags["scan.replica_of"] for r in sweep.replicas)
    assert len(table) == len(RICH) and not table["trial"].str.contains("seed").any()
    assert f"Trials: {len(RICH)} (+ {3 * (SEEDS - 1)} seed replicas of the finalists, not ranked)" in html
    assert rank(sweep).leader.trial.label == "t01"


def test_finalists_against_the_leader_with_the_seed_spread(store, sweep, tmp_path):
    ranking = rank(sweep)
    details = fetch_details(ranking, tmp_path)
    analysis = analyse_lead(ranking, details.test_predictions)
    assert [f.row.trial.label for f in analysis.finalists] == ["t01", "t02", "t00"]
    lead = rich_seed_expectation("t01")
    assert analysis.leader.value == pytest.approx(lead["mean"]) and analysis.leader.seeds == SEEDS
    assert analysis.leader.seed_err == pytest.approx(lead["err"])
    for f in analysis.finalists[1:]:
        other = rich_seed_expectation(f.row.trial.label)
        d = f.vs_leader
        assert d.method == "paired bootstrap"
        assert d.delta == pytest.approx(lead["mean"] - other["mean"])  # seed means, like with like
        assert d.err_seeds == pytest.approx(math.hypot(lead["err"], other["err"]))
        assert d.err_events == pytest.approx(direct_paired_error(details, ranking, "t01", f.row.trial.label), rel=0.15)
        assert d.err == pytest.approx(math.hypot(d.err_events, d.err_seeds))
        assert 0.5 < d.p_better <= 1.0
        assert f.tied == (abs(d.delta) <= d.err)


def direct_paired_error(details, ranking, a: str, b: str) -> float:
    """The bootstrap error of acc_A - acc_B written out plainly, with its own random numbers."""
    by_label = {r.trial.label: r.trial.run_id for r in ranking.rows}
    pa, pb = (details.test_predictions[by_label[x]] for x in (a, b))
    oa, ob = np.argsort(pa.index), np.argsort(pb.index)  # the files list the events in their own orders
    ra = (pa.scores.argmax(1) == pa.label)[oa]
    rb = (pb.scores.argmax(1) == pb.label)[ob]
    w = pa.weights[oa]
    rng = np.random.default_rng(99)
    diffs = []
    for _ in range(2000):
        i = rng.integers(0, len(w), len(w))
        diffs.append(np.average(ra[i], weights=w[i]) - np.average(rb[i], weights=w[i]))
    return float(np.std(diffs, ddof=1))


def test_headline_says_by_how_much_the_leader_beats_the_baseline(sweep, report, tmp_path):
    html, md, _, _ = report
    ranking = rank(sweep)
    analysis = analyse_lead(ranking, fetch_details(ranking, tmp_path).test_predictions)
    d = analysis.vs_baseline[ranking.leader.trial.run_id]
    expected = f"t01 beats the baseline by {fmt(100 * d.delta, 100 * d.err)} % accuracy"
    assert expected in md and f"{SEEDS} seeds" in md.split(expected, 1)[1].split("\n", 1)[0]
    lead = section(html, "lead")
    assert "P(leader better)" in lead and 'alt="Is the lead real?"' in lead


def test_systematics_shift_order_and_kendall_tau(sweep, report):
    ranking = rank(sweep)
    variants = {v.label: v for v in analyse_systematics(ranking)}
    assert set(variants) == {"noisy", "deadwires"}
    ids = {r.trial.label: r.trial.run_id for r in ranking.rows}
    for t in (t for t in RICH if t.quality is not None):
        seeds = rich_seed_expectation(t.label)
        for label, shift in t.syst_shift.items():
            s = variants[label].shifts[("val/accuracy", ids[t.label])]
            assert s.seeds and s.nominal == pytest.approx(seeds["mean"]) and s.shift == pytest.approx(shift)
            assert s.err == pytest.approx(math.hypot(s_test_err(sweep, t.label), 0.012))
    assert variants["noisy"].order_holds and variants["noisy"].tau == pytest.approx(1.0)
    dead = variants["deadwires"]
    assert not dead.order_holds and dead.variant_order[0] == "t02"
    nominal = [rich_seed_expectation(x)["mean"] for x in ("t00", "t01", "t02")]
    varied = [n + next(t for t in RICH if t.label == x).syst_shift["deadwires"]
              for n, x in zip(nominal, ("t00", "t01", "t02"))]
    assert dead.tau == pytest.approx(scipy_stats.kendalltau(nominal, varied).statistic)
    html = report[0]
    syst = section(html, "systematics")
    assert "changes" in syst and "Kendall" in syst and 'alt="Systematics"' in syst


def s_test_err(sweep, label: str) -> float:
    return next(t for t in sweep.trials if t.label == label).metrics["test/accuracy_err"]


def test_flags_and_the_reference_row(report):
    html, _, table, _ = report
    assert table.loc["t04", "flags"] == "chance,single_class,below_reference"
    ranking_html = section(html, "ranking")
    assert "⚑chance" in ranking_html and "⚑1 class" in ranking_html
    rows = ranking_html.split("<tr ")
    reference = next(i for i, r in enumerate(rows) if r.startswith('class="reference"'))
    t04 = next(i for i, r in enumerate(rows) if ">t04<" in r)
    assert reference == t04 - 1  # between the trials above the reference and t04 below it
    assert fmt(REFERENCE["ref/val/accuracy"], REFERENCE["ref/val/accuracy_err"]) in rows[reference]
    assert "Reference predictor (test): accuracy = 0.35" in html


def test_figures_undefined_at_the_best_epoch_show_a_dash(sweep, report):
    html, _, table, _ = report
    for label in ("t03", "t05"):  # t03: not logged at the best epoch (older store); t05: logged as NaN
        assert pd.isna(table.loc[label, "val/purity/NC"]), label
        assert table.loc[label, "val/efficiency/NC"] == pytest.approx(next(t for t in RICH if t.label == label).acc[-1])
        row = next(r for r in section(html, "ranking").split("<tr ") if f">{label}<" in r)
        assert "<td>—</td>" in row
    t01 = next(t for t in sweep.trials if t.label == "t01")
    assert t01.best_epoch == 2 and t01.value("val/purity/numuCC") == pytest.approx(0.88 - 0.04)  # epoch 2's


def test_at_last_every_figure_comes_from_the_last_epoch(sweep):
    last = rank(sweep, "last").table.set_index("label")
    for t in RICH:
        assert last.loc[t.label, "val/accuracy"] == pytest.approx(t.acc[-1])
    assert pd.isna(last.loc["t03", "val/purity/NC"])  # undefined at epoch 3: not epoch 2's value
    assert last.loc["t03", "val/purity/nue_CC"] == pytest.approx(0.70 - 0.02)


def test_gpu_telemetry_is_shown_against_the_device(report):
    html = report[0]
    tele = section(html, "telemetry")
    peak, total = GPU["sys/gpu_mem_peak_reserved_gb"], GPU["sys/gpu_mem_total_gb"]
    assert f"{fmt(peak)} of {fmt(total)} ({100 * peak / total:.0f} %)" in tele
    assert f"<td>{fmt(3 * GPU['sys/gpu_alloc_retries'])}</td>" in tele  # summed over the 3 epochs
    assert "processes sharing" in tele and 'alt="GPU telemetry"' in tele
    assert f"<td>{fmt(GPU['perf/step_ms_p95'])}</td>" in tele and "n/a: CPU trials" not in tele


def test_real_class_names_in_the_report_metric_keys_in_the_csv(report):
    html, _, table, _ = report
    assert "<th>eff. nue+CC</th>" in section(html, "ranking") and "val/efficiency/nue_CC" in table.columns


def test_html_from_a_parameter_is_escaped_in_both_formats(report):
    html, md, _, _ = report
    assert HOSTILE not in html and HOSTILE not in md
    assert "&lt;script&gt;" in html and "&lt;script>alert" in md


def test_roc_and_energy_figures_of_the_leader(store, report, tmp_path):
    html = report[0]
    best = section(html, "best")
    assert 'alt="ROC curves"' in best and "Efficiency and purity against lepton_energy" in best
    assert "NC left out (neutral current" in best

    path = MlflowClient(store["uri"]).download_artifacts(store["runs"]["t01"], "test/predictions.h5", str(tmp_path))
    pred = _detail.read_predictions(path)
    with h5py.File(path) as f:
        w = f["weights"][()]
    for c in range(3):
        roc = _detail.roc_curve(pred, c)
        assert roc["auc"] == pytest.approx(weighted_roc_auc(pred.scores[:, c], pred.label == c, w))
        assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(roc["auc"], abs=1e-6)


def test_the_report_leaves_the_process_as_it_found_it(report):
    after = report[3]
    # progress bars, Optuna's level and the garbage collector were only borrowed; the backend was never touched
    assert after == {"optuna": logging.INFO, "env": None, "backend": "pdf", "gc": True}


def test_run_links_use_the_ui_address_given(store):
    sweep = load_sweep(RICH_SWEEP, store["uri"], ui_url="http://127.0.0.1:5123")
    links = rank(sweep).table["link"]
    assert links.str.startswith(f"http://127.0.0.1:5123/#/experiments/{store['experiment_id']}/runs/").all()
    text = [b for b in ranking_section(rank(sweep)).blocks if isinstance(b, str)]
    assert any("`scanner ui` (http://127.0.0.1:5123)" in b for b in text)
