"""The leader in detail (confusion, per-class figures, score and cut scans, energy dependence, or residuals and
resolution), and the learning curves and telemetry of the top trials against the baseline.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from reports import _detail, _plots
from reports._fetch import fetch_artifact, fetch_histories, read_confusion
from reports._rank import Ranking, short_id
from reports._render import Section, fmt_param

TOP_CURVES = 5  # learning curves of the top 5 against the baseline: more lines stop being readable
TELEMETRY = ("perf/samples_per_s", "perf/data_wait_frac", "sys/rss_gb", "sys/cpu_pct")
GPU_TELEMETRY = ("sys/gpu_mem_peak_gb", "sys/gpu_util_pct", "sys/gpu_fragmentation", "sys/gpu_power_w")


def _artifact(ranking: Ranking, run_id: str, filename: str, tmp: Path) -> tuple[Path | None, str]:
    """The test-split artifact of a final trial, else the validation one; and which split it is."""
    for split in ("test", "val"):
        path = fetch_artifact(ranking.sweep.tracking_uri, run_id, split, filename, tmp / split)
        if path is not None:
            return path, split
    return None, ""


def best_trial_section(ranking: Ranking) -> Section:
    leader = ranking.leader
    if leader is None:
        return Section("Best trial in detail", ["No trial has an objective value yet."], "best")
    t = leader.trial
    shown = ", ".join(f"{k}={fmt_param(v)}" for k, v in sorted(t.params.items()) if k not in t.inactive)
    blocks = [f"**{t.run_name}** (run `{t.run_id}`), params: {shown}"
              + (f" (inactive under their `when`, so not shown: {', '.join(sorted(t.inactive))})" if t.inactive
                 else "")]
    with tempfile.TemporaryDirectory(prefix="scanner-report-") as tmp:
        if ranking.sweep.task == "classification":
            blocks += _classification_blocks(ranking, Path(tmp))
        else:
            blocks += _regression_blocks(ranking, Path(tmp))
    return Section("Best trial in detail", blocks, "best")


def _classification_blocks(ranking: Ranking, tmp: Path) -> list:
    t, at, names = ranking.leader.trial, ranking.at, ranking.sweep.class_names
    blocks: list = []
    path, split = _artifact(ranking, t.run_id, "confusion.json", tmp)
    if path is not None:
        conf = read_confusion(path)
        cnames = conf["class_names"] or names
        blocks += [f"Confusion matrix of the {split} split.",
                   _plots.confusion_plot(np.asarray(conf["counts"], dtype=float), cnames)]
    else:
        blocks.append("No confusion.json artifact on this run.")
    if names:
        blocks += _per_class_blocks(t, names, at)
    path, split = _artifact(ranking, t.run_id, "predictions.h5", tmp)
    if path is None:
        return blocks + ["No predictions.h5 artifact: score, cut and energy figures are absent."]
    pred = _detail.read_predictions(path)
    if pred.kind != "classification":
        return blocks + ["predictions.h5 holds regression outputs in a classification sweep: skipped."]
    signal = _detail.signal_class(pred.names)
    blocks += [f"From predictions.h5 of the {split} split ({len(pred.label)} events); signal class for the cut "
               f"scan: **{pred.names[signal]}**.",
               _plots.score_distributions(pred),
               _plots.cut_scan_plot(_detail.cut_scan(pred, signal), pred.names[signal])]
    for energy_name in [k for k in pred.truth if "energy" in k.lower()]:
        binned = _detail.binned_eff_purity(pred, pred.truth[energy_name])
        blocks.append(_plots.energy_plot(binned, pred.names, energy_name))
    if not any("energy" in k.lower() for k in pred.truth):
        blocks.append("predictions.h5 has no true energy: the figures against energy are absent.")
    return blocks


def _per_class_blocks(t, names: list[str], at: str) -> list:
    """Per-class efficiency and purity on the test split when the trial was a final (as the confusion matrix),
    else on validation."""
    keys = [f"val/{kind}/{c}" for kind in ("efficiency", "purity") for c in names]
    if all(t.test_value(k) is not None for k in keys):
        get, split = (lambda k: t.test_value(k)), "test"
    else:
        get, split = (lambda k: t.value(k, at)), "validation"
    values = [get(k) for k in keys]
    if any(v is None for v in values):
        return []
    errs = [get(k + "_err") or 0 for k in keys]
    n = len(names)
    return [_plots.per_class_plot(names, values[:n], errs[:n], values[n:], errs[n:], split)]


def _regression_blocks(ranking: Ranking, tmp: Path) -> list:
    t = ranking.leader.trial
    path, split = _artifact(ranking, t.run_id, "predictions.h5", tmp)
    if path is None:
        return ["No predictions.h5 artifact: residual and resolution figures are absent."]
    pred = _detail.read_predictions(path)
    if pred.kind != "regression":
        return ["predictions.h5 holds classification outputs in a regression sweep: skipped."]
    angle = _detail.opening_angle_deg(pred)
    res = _detail.residuals(pred)
    blocks: list = [f"From predictions.h5 of the {split} split ({len(pred.target)} events).",
                    _plots.residual_plot(res, angle)]
    energies = [k for k in pred.truth if "energy" in k.lower()]
    for energy_name in energies[:1]:  # the resolution against the first energy the truth has (e.g. energy)
        if angle is not None:
            values, what = angle, "opening angle [deg]"
        else:
            first = pred.names[0]
            values, what = np.abs(res[first]), f"|{first} residual|"
        blocks.append(_plots.resolution_plot(_detail.binned_resolution(values, pred.truth[energy_name]), what,
                                             energy_name))
    if not energies:
        blocks.append("predictions.h5 has no true energy: the resolution against energy is absent.")
    return blocks


def _curve_trials(ranking: Ranking) -> list:
    rows = ranking.top(TOP_CURVES)
    base = ranking.baseline
    if base is not None and base not in rows:
        rows = rows + [base]
    return rows


def _label(r) -> str:
    return short_id(r.trial)  # the full names are in the ranking table; in a legend they cover the curves


def curves_and_telemetry_sections(ranking: Ranking) -> list[Section]:
    rows = _curve_trials(ranking)
    if not rows:
        return [Section("Learning curves", ["No trial has logged an epoch yet."], "curves")]
    objective = ranking.sweep.objective
    keys = ["train/loss", "val/loss", objective, "train/lr", *TELEMETRY, *GPU_TELEMETRY]
    keys = list(dict.fromkeys(keys))
    hist = fetch_histories(ranking.sweep.tracking_uri, [r.trial.run_id for r in rows], keys)

    def series(key):
        return {_label(r): hist[r.trial.run_id][key] for r in rows if key in hist[r.trial.run_id]}

    curves = _plots.curves_plot(
        "curves", "Learning curves: top trials and the baseline (dashed)",
        [("train/loss", series("train/loss")), ("val/loss", series("val/loss")), (objective, series(objective)),
         ("train/lr", series("train/lr"))], "Per epoch, from the MLflow metric history; trial ids as in the ranking table. A learning rate of 0 (the "
        "end of a cosine schedule) cannot sit on the log axis and is not drawn.")
    telemetry = _plots.curves_plot("telemetry", "Telemetry: throughput, data wait, memory, CPU",
                                   [(k, series(k)) for k in TELEMETRY], "Per epoch; events/s is training throughput; trial ids as in the ranking table.")
    gpu = _plots.curves_plot("telemetry_gpu", "GPU telemetry", [(k, series(k)) for k in GPU_TELEMETRY],
                             "From torch.cuda memory stats and NVML.")
    sections = [Section("Learning curves", [curves] if curves else ["No metric history."], "curves")]
    blocks = [b for b in (telemetry, gpu) if b is not None]
    if gpu is None:
        blocks.append("GPU telemetry: n/a — no GPU metric was logged (these trials ran on CPU).")
    sections.append(Section("Telemetry", blocks, "telemetry"))
    return sections
