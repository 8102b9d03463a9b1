"""A regression (direction) sweep: min objective val/resolution68_deg, bias/RMS per target, residual figures."""

from __future__ import annotations

import json
import re

import h5py
import numpy as np
import pandas as pd
import pytest
from fixtures_tracking import fresh_store
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from reports import build_report, gain_over_baseline, load_sweep, rank
from reports._best import best_trial_section
from reports._gather import fetch_details
from reports._sections import ranking_section

TARGETS = ["dx", "dy", "dz"]
REFERENCE_DEG = 18.6  # the mean-direction predictor on validation
TRIALS = [  # name, baseline, resolution per epoch, its error
    ("t00 baseline resnet18 lr=1e-3", True, [30.0, 22.0], 0.8),
    ("t01 resnet34 lr=3e-3", False, [25.0, 15.0], 0.6),
    ("t02 resnet18 lr=1e-2", False, [20.0, 16.0], 0.6),
]


def make_regression_sweep(tmp_path):
    uri = fresh_store(tmp_path)
    client = MlflowClient(uri)
    exp = client.create_experiment("dir", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp, run_name="dir", tags={
        "scan.role": "parent", "scan.objective": "val/resolution68_deg", "scan.objective_mode": "min",
        "scan.task": "regression", "scan.status": "finished", "scan.target_names": json.dumps(TARGETS)})
    client.log_batch(parent.info.run_id, metrics=[Metric("ref/val/resolution68_deg", REFERENCE_DEG, 0, 0)])
    ids = {}
    for i, (name, baseline, res, err) in enumerate(TRIALS):
        run = client.create_run(exp, run_name=name, tags={
            "mlflow.parentRunId": parent.info.run_id, "scan.baseline": str(baseline).lower(),
            "scan.status": "completed", "scan.varied": json.dumps(["model", "lr"])})
        metrics = []
        for e, r in enumerate(res, start=1):
            best = min(res[:e])
            m = {"val/resolution68_deg": r, "val/resolution68_deg_err": err, "best/val/resolution68_deg": best,
                 "best/val/resolution68_deg_err": err, "val/loss": r / 100, "train/loss": r / 90, "train/lr": 1e-3}
            for k, t in enumerate(TARGETS):
                m[f"val/bias/{t}"], m[f"val/rms/{t}"] = 0.01 * (k + 1) * r, 0.02 * r
                m[f"best/val/bias/{t}"], m[f"best/val/rms/{t}"] = 0.01 * (k + 1) * best, 0.02 * best
            metrics += [Metric(k, v, 1000 + e, e) for k, v in m.items()]
        client.log_batch(run.info.run_id, metrics=metrics, params=[Param("model", name.split()[-2]),
                                                                    Param("lr", name.split("=")[-1])])
        client.set_terminated(run.info.run_id)
        ids[name] = run.info.run_id
    rng = np.random.default_rng(0)
    target = rng.normal(size=(300, 3))
    target /= np.linalg.norm(target, axis=1, keepdims=True)
    art = tmp_path / "val"
    art.mkdir()
    with h5py.File(art / "predictions.h5", "w") as f:
        f["index"], f["target"] = np.arange(300), target
        f["pred"] = target + rng.normal(scale=0.2, size=target.shape)
        f["energy"] = rng.uniform(0.5, 4.0, 300)
        f.attrs["target_names"], f.attrs["direction"] = TARGETS, "unit_vector"
    client.log_artifacts(ids[TRIALS[1][0]], str(art), "val")
    return uri, ids


def test_regression_sweep_ranks_min_first_and_draws_residuals(tmp_path):
    uri, ids = make_regression_sweep(tmp_path)
    ranking = rank(load_sweep("dir", uri), "best")
    assert [r.trial.run_name for r in ranking.ranked] == [TRIALS[1][0], TRIALS[2][0], TRIALS[0][0]]
    assert [r.tied for r in ranking.ranked] == [False, False, False]  # 15 vs 16 with sigma 0.85: outside
    gain = gain_over_baseline(ranking)
    assert gain.split == "val" and gain.delta == pytest.approx(15.0 - 22.0)
    assert gain.relative == pytest.approx((22.0 - 15.0) / 22.0) and gain.relative_label == "relative reduction"
    index = build_report("dir", uri, tmp_path / "report", log_to_parent=False)
    html = index.read_text()
    assert 'alt="Residual distributions"' in html and 'alt="Resolution against energy"' in html
    table = pd.read_csv(index.parent / "ranking.csv")
    assert table["val/bias/dz"].tolist() == pytest.approx([0.03 * 15.0, 0.03 * 16.0, 0.03 * 22.0])
    assert "GPU telemetry: n/a" in html
    assert re.search(r"resolution68_deg \(min\)", html)


def test_reference_and_bias_rms_with_errors(tmp_path):
    uri, _ = make_regression_sweep(tmp_path)
    ranking = rank(load_sweep("dir", uri), "best")
    best = best_trial_section(ranking, fetch_details(ranking, tmp_path / "dl"))
    figure = next(b for b in best.blocks if getattr(b, "key", "") == "resolution_vs_energy")
    assert figure.meta["reference"] == REFERENCE_DEG  # the reference line on the resolution plot
    table = next(b for b in best.blocks if getattr(b, "table_id", "") == "bias-rms")
    assert [row[0] for row in table.rows] == TARGETS
    for row in table.rows:  # bias ± err, RMS ± err, to the same decimal place as their errors
        for cell in row[1:]:
            value, err = cell.split(" ± ")
            assert len(value.split(".")[-1]) == len(err.split(".")[-1]) and float(err) > 0
    ranking_figure = next(b for b in ranking_section(ranking).blocks if getattr(b, "key", "") == "ranking")
    assert ranking_figure.meta["reference"] == REFERENCE_DEG
