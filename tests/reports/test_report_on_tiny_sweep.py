"""The report of a REAL sweep (the shared tiny sweep: Ray Tune + Optuna + MLflow, 3 trials + baseline, 1 final):
the ranking CSV equals the MLflow values, the baseline is marked, the finals have test figures, and every section
that applies to a classification sweep is present with real content."""

from __future__ import annotations

import base64
import io
import math
import re

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from reports import build_report

pytestmark = pytest.mark.slow  # the fixture runs a sweep (~1 min on 2 cores)


@pytest.fixture(scope="module")
def report(tiny_sweep, tmp_path_factory):
    assert tiny_sweep.exit_code == 0, tiny_sweep.output
    out = tmp_path_factory.mktemp("tiny_report") / "report"
    index = build_report(tiny_sweep.name, tiny_sweep.tracking_uri, out, log_to_parent=False)
    return index, pd.read_csv(out / "ranking.csv", keep_default_na=False, na_values=[""])


@pytest.fixture(scope="module")
def children(tiny_sweep):
    client = MlflowClient(tiny_sweep.tracking_uri)
    exp = client.get_experiment_by_name(tiny_sweep.name)
    runs = client.search_runs([exp.experiment_id])
    return [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def test_csv_objective_equals_best_metric_in_mlflow_for_every_trial(report, children):
    _, table = report
    by_id = table.set_index("run_id")
    assert set(by_id.index) == {r.info.run_id for r in children}
    for run in children:
        expected = run.data.metrics.get("best/val/accuracy")
        got = by_id.loc[run.info.run_id, "val/accuracy"]
        if expected is None:
            assert math.isnan(got)
        else:
            assert got == expected, run.info.run_name  # unrounded: the CSV holds the MLflow value itself
    ranked = table.dropna(subset=["rank"]).sort_values("rank")
    assert list(ranked["val/accuracy"]) == sorted(ranked["val/accuracy"], reverse=True)  # mode: max


def test_the_baseline_is_marked_once(report, children):
    index, table = report
    tagged = [r.info.run_id for r in children if r.data.tags.get("scan.baseline") == "true"]
    assert len(tagged) == 1
    assert list(table.loc[table["baseline"], "run_id"]) == tagged
    assert "t00 (baseline)" in index.read_text()


def test_finals_have_test_figures_and_the_report_shows_them(report, children):
    index, table = report
    finals = [r for r in children if "test/accuracy" in r.data.metrics]
    assert len(finals) >= 2  # the baseline and the top trial (final_top: 1)
    assert any(r.data.tags.get("scan.baseline") == "true" for r in finals)
    html = index.read_text()
    section = html.split('id="test"', 1)[1].split("<h2", 1)[0]
    for r in finals:
        assert f"{r.data.metrics['test/accuracy']:.3f}" in section or \
            f"{r.data.metrics['test/accuracy']:.2f}" in section, r.info.run_name


def table_leader(index) -> str:
    table = pd.read_csv(index.parent / "ranking.csv")
    return table.loc[table["rank"] == 1, "label"].iloc[0]


def test_every_applicable_section_is_present_with_content(report):
    index, _ = report
    html = index.read_text()
    for anchor in ("ranking", "test", "gain", "importance", "best", "curves", "telemetry"):
        assert f'<h2 id="{anchor}">' in html, anchor
    best = html.split('<h2 id="best">', 1)[1].split("<h2", 1)[0]
    assert 'alt="Confusion matrix"' in best
    gain = html.split('<h2 id="gain">', 1)[1].split("<h2", 1)[0]
    leader = table_leader(index)
    # equal values rank in trial order (t00 first, as the console): the baseline may lead a tiny sweep
    assert ("Not available: the baseline is the leader" in gain) == (leader == "t00"), (leader, gain)
    for anchor in ("lead",):  # the finalists against the leader, on the test split
        assert f'<h2 id="{anchor}">' in html
    for anchor, alt in (("curves", "Learning curves"), ("telemetry", "Telemetry")):
        part = html.split(f'<h2 id="{anchor}">', 1)[1].split("<h2", 1)[0]
        assert f'alt="{alt}' in part, anchor
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) >= 6
    for data in images:
        Image.open(io.BytesIO(base64.b64decode(data))).verify()


def test_conditional_focal_gamma_is_blank_unless_the_loss_is_focal(report):
    _, table = report
    assert "param:focal_gamma" in table  # the tiny space varies it under when: {loss: focal}
    for _, row in table.iterrows():
        blank = pd.isna(row["param:focal_gamma"])
        assert blank == (row["param:loss"] != "focal"), row["trial"]
