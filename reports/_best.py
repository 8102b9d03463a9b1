"""The leader in detail (confusion, per-class figures, score distributions, ROC curves, cut scan, energy dependence;
or residuals with bias and RMS, and the resolution against energy), and the learning curves and telemetry of the
top trials against the baseline.
"""

from __future__ import annotations

import numpy as np

from reports import _detail, _plots, _plots_detail
from reports._fetch_extra import read_confusion
from reports._explain import explain_blocks
from reports._gather import GPU_MEMORY_TOTAL, GPU_PLOTTED, STEP_TIME, TELEMETRY, Details
from reports._rank import Ranking, short_id
from reports._render import Section, Table, column_decimals, fmt, fmt_fixed, fmt_param
from trainables.contract import Artifact, metric_key

SPLIT_TEXT = {"test": "test", "val": "validation"}


def best_trial_section(ranking: Ranking, details: Details) -> Section:
    leader = ranking.leader
    if leader is None:
        return Section("Best trial in detail", ["No trial has an objective value yet."], "best")
    t = leader.trial
    shown = ", ".join(f"{k}={fmt_param(v)}" for k, v in sorted(t.params.items()) if k not in t.inactive)
    blocks = [f"**{t.run_name}** (run `{t.run_id}`), params: {shown}"
              + (f" (inactive under their `when`, so not shown: {', '.join(sorted(t.inactive))})" if t.inactive
                 else "")]
    if ranking.sweep.task == "classification":
        blocks += _classification_blocks(ranking, details)
    else:
        blocks += _regression_blocks(ranking, details)
    if details.explain_dir is not None:  # `scanner explain` ran on the leader: what the network looks at
        blocks += explain_blocks(details.explain_dir)
    return Section("Best trial in detail", blocks, "best")


def _classification_blocks(ranking: Ranking, details: Details) -> list:
    t, at, names = ranking.leader.trial, ranking.at, ranking.sweep.class_names
    split = SPLIT_TEXT.get(details.leader_split, details.leader_split)
    blocks: list = []
    path = details.leader_file(ranking, Artifact.CONFUSION)
    if path is not None:
        conf = read_confusion(path)
        cnames = conf["class_names"] or names
        blocks += [f"Confusion matrix of the {split} split.",
                   _plots_detail.confusion_plot(np.asarray(conf["counts"], dtype=float), cnames)]
    else:
        blocks.append("No confusion.json artifact on this run.")
    if names:
        blocks += _per_class_blocks(t, names, at)
    pred = details.leader_predictions(ranking)
    if pred is None:
        return blocks + ["No predictions.h5 artifact: score, ROC, cut and energy figures are absent."]
    if pred.kind != "classification":
        return blocks + ["predictions.h5 holds regression outputs in a classification sweep: skipped."]
    signal = _detail.signal_class(pred.names)
    curves = [(name, _detail.roc_curve(pred, c)) for c, name in enumerate(pred.names) if (pred.label == c).any()]
    blocks += [f"From predictions.h5 of the {split} split ({pred.n} events"
               + (", weighted" if pred.weights is not None else "") + f"); signal class for the cut scan: "
               f"**{pred.names[signal]}**.",
               _plots_detail.score_distributions(pred),
               _plots_detail.roc_plot(curves, split),
               _plots_detail.cut_scan_plot(_detail.cut_scan(pred, signal), pred.names[signal])]
    energies = [k for k in pred.truth if "energy" in k.lower()]
    for energy_name in energies:
        blocks += _energy_blocks(pred, energy_name)
    if not energies:
        blocks.append("predictions.h5 has no true energy: the figures against energy are absent.")
    return [b for b in blocks if b is not None]


def _energy_blocks(pred: _detail.Predictions, energy_name: str) -> list:
    """Against a lepton energy, only the classes with a visible lepton, and only their events: a neutral-current
    event's "lepton" is the outgoing neutrino, which the detector never sees."""
    shown = list(range(len(pred.names)))
    keep, note = None, ""
    if _detail.is_lepton_variable(energy_name):
        visible = [c for c in shown if _detail.has_visible_lepton(pred.names[c])]
        hidden = [pred.names[c] for c in shown if c not in visible]
        if not visible:
            return [f"No class has a visible lepton (neutral current: {', '.join(hidden)}): nothing is plotted "
                    f"against {energy_name}."]
        shown, keep = visible, np.isin(pred.label, visible)
        if hidden:
            note = (f"{', '.join(hidden)} left out (neutral current: the outgoing lepton is an invisible "
                    "neutrino); only events of classes with a visible lepton.")
    binned = _detail.binned_eff_purity(pred, pred.truth[energy_name], keep)
    return [_plots_detail.energy_plot(binned, pred.names, shown, energy_name, note)]


def _per_class_blocks(t, names: list[str], at: str) -> list:
    """Per-class efficiency and purity on the test split when the trial was a final (as the confusion matrix),
    else on validation."""
    keys = [f"val/{kind}/{metric_key(c)}" for kind in ("efficiency", "purity") for c in names]
    if all(t.test_value(k) is not None for k in keys):
        get, split = (lambda k: t.test_value(k)), "test"
    else:
        get, split = (lambda k: t.value(k, at)), "validation"
    values = [get(k) for k in keys]
    if any(v is None for v in values):
        return []
    errs = np.array([get(k + "_err") for k in keys], dtype=float)  # None -> NaN: no error bar, not a zero one
    n = len(names)
    return [_plots_detail.per_class_plot(names, values[:n], errs[:n], values[n:], errs[n:], split)]


def _regression_blocks(ranking: Ranking, details: Details) -> list:
    pred = details.leader_predictions(ranking)
    split = details.leader_split
    if pred is None:
        return ["No predictions.h5 artifact: residual and resolution figures are absent."]
    if pred.kind != "regression":
        return ["predictions.h5 holds classification outputs in a regression sweep: skipped."]
    angle = _detail.opening_angle_deg(pred)
    res = _detail.residuals(pred)
    blocks: list = [f"From predictions.h5 of the {SPLIT_TEXT.get(split, split)} split ({pred.n} events"
                    + (", weighted" if pred.weights is not None else "") + ").",
                    _plots_detail.residual_plot(res, angle, pred.weights), _bias_rms_table(pred, res)]
    energies = [k for k in pred.truth if "energy" in k.lower()]
    reference = ranking.sweep.reference(split, "val/resolution68_deg")
    for energy_name in energies[:1]:  # the resolution against the first energy the truth has (e.g. energy)
        if angle is not None:
            values, what, ref = angle, "opening angle [deg]", reference
        else:
            first = pred.names[0]
            values, what, ref = np.abs(res[first]), f"|{first} residual|", None
        blocks.append(_plots_detail.resolution_plot(_detail.binned_resolution(values, pred.truth[energy_name],
                                                                              pred.weights), what, energy_name, ref))
    if not energies:
        blocks.append("predictions.h5 has no true energy: the resolution against energy is absent.")
    return blocks


def _bias_rms_table(pred: _detail.Predictions, res: dict) -> Table:
    stats = _detail.bias_rms(pred, res)
    rows = []
    for name, (bias, bias_err, rms, rms_err) in stats.items():
        decimals = column_decimals([bias, rms], [bias_err, rms_err])
        rows.append([name, fmt_fixed(bias, decimals, bias_err), fmt_fixed(rms, decimals, rms_err)])
    return Table(["target", "bias (mean residual) ± 1σ", "RMS about the bias ± 1σ"], rows, [], "bias-rms")


def _label(r) -> str:
    return short_id(r.trial)  # the full names are in the ranking table; in a legend they cover the curves


def _series(details: Details, key: str) -> dict:
    return {_label(r): details.histories[r.trial.run_id][key] for r in details.curve_rows
            if key in details.histories.get(r.trial.run_id, {})}


def curves_and_telemetry_sections(ranking: Ranking, details: Details) -> list[Section]:
    if not details.curve_rows:
        return [Section("Learning curves", ["No trial has logged an epoch yet."], "curves")]
    objective = ranking.sweep.objective
    curves = _plots.curves_plot(
        "curves", "Learning curves: top trials and the baseline (dashed)",
        [(k, _series(details, k)) for k in ("train/loss", "val/loss", objective, "train/lr")],
        "Per epoch, from the MLflow metric history; trial ids as in the ranking table. A learning rate of 0 (the "
        "end of a cosine schedule) cannot sit on the log axis and is not drawn.")
    sections = [Section("Learning curves", [curves] if curves else ["No metric history."], "curves")]
    telemetry = _plots.curves_plot("telemetry", "Telemetry: throughput, data wait, memory, CPU",
                                   [(k, _series(details, k)) for k in TELEMETRY],
                                   "Per epoch; events/s is training throughput; trial ids as in the ranking table.")
    blocks: list = [b for b in (telemetry, _step_time_table(details)) if b is not None]
    blocks += _gpu_blocks(details)
    sections.append(Section("Telemetry", blocks, "telemetry"))
    return sections


def _last(details: Details, run_id: str, key: str, how=max) -> float | None:
    points = details.histories.get(run_id, {}).get(key)
    return how(v for _, v in points) if points else None


def _step_time_table(details: Details) -> Table | None:
    rows = []
    for r in details.curve_rows:
        p50, p95 = (r.trial.value(k, "last") for k in STEP_TIME)
        if p50 is not None or p95 is not None:
            rows.append([_label(r), fmt(p50), fmt(p95)])
    return Table(["trial", "step time p50 [ms]", "step time p95 [ms]"], rows, [], "step-time") if rows else None


def _gpu_blocks(details: Details) -> list:
    """Peak reserved memory against the device, allocator retries and OOMs, processes sharing the device."""
    gpu_rows = [r for r in details.curve_rows if any(k in r.trial.metrics for k in GPU_PLOTTED)]
    if not gpu_rows:
        return ["GPU telemetry: n/a: CPU trials (no GPU metric was logged)."]
    rows = []
    for r in gpu_rows:
        rid = r.trial.run_id
        peak, total = _last(details, rid, "sys/gpu_mem_peak_reserved_gb"), _last(details, rid, GPU_MEMORY_TOTAL)
        share = f"{fmt(peak)} of {fmt(total)} ({100 * peak / total:.0f} %)" if peak is not None and total else \
            f"{fmt(peak)} (device total not logged)"
        rows.append([_label(r), share, fmt(_last(details, rid, "sys/gpu_alloc_retries", sum)),
                     fmt(_last(details, rid, "sys/gpu_ooms", sum)), fmt(_last(details, rid, "sys/gpu_procs_sharing")),
                     fmt(_last(details, rid, "sys/gpu_proc_mem_gb")),
                     fmt(_last(details, rid, "sys/gpu_proc_util_pct"))])
    table = Table(["trial", "peak reserved [GB] of the device", "alloc retries (all epochs)", "OOMs (all epochs)",
                   "processes sharing (max)", "own GPU memory [GB] (max)", "own SM share [%] (max)"], rows, [],
                  "gpu")
    totals = [v for v in (_last(details, r.trial.run_id, GPU_MEMORY_TOTAL) for r in gpu_rows) if v is not None]
    hlines = {"sys/gpu_mem_peak_reserved_gb": (max(totals), "device total")} if totals else None
    figure = _plots.curves_plot("telemetry_gpu", "GPU telemetry", [(k, _series(details, k)) for k in GPU_PLOTTED],
                                "From torch.cuda memory stats and NVML, per epoch; dashed: the device's total memory. "
                                "A retry means cudaMalloc failed and the cache was flushed: the early warning of an "
                                "out-of-memory error.", hlines)
    text = ("GPU memory and sharing per trial. With several trials on one device (`gpu: 0.5`) the device-wide "
            "figures mix them; the own-process figures (NVML, matched by PID) do not. 'n/a': not logged.")
    if not all(GPU_MEMORY_TOTAL in r.trial.metrics for r in gpu_rows):
        text += f" The device's total memory is read from `{GPU_MEMORY_TOTAL}`; these trials did not log it."
    return [b for b in (text, table, figure) if b is not None]
