"""The sweep-level sections of a report: ranking, validation against test, gain over the baseline, Pareto front,
parameter importance. Each returns a ``Section`` of text, tables and figures.
"""

from __future__ import annotations

import math

import numpy as np

from reports import _plots
from reports._importance import param_importance
from reports._pareto import pareto_front
from reports._rank import Ranking, err_of, gain_over_baseline, short_id, val_test_comparison
from reports._render import Section, Table, fmt, fmt_delta, fmt_param

AT_TEXT = {"best": "at each trial's best epoch (`best/` metrics)", "last": "at each trial's last epoch"}


def short(metric: str) -> str:
    """Column headers: drop the ``val/`` prefix the whole table shares."""
    return metric[4:] if metric.startswith("val/") else metric


def status_text(t) -> str:
    if t.status == "failed" and t.failure:
        return f"failed: {t.failure}"
    return t.status


def row_class(r) -> str:
    classes = []
    if r.leader:
        classes.append("leader")
    elif r.tied:
        classes.append("tied")
    if r.trial.baseline:
        classes.append("baseline")
    if r.trial.status == "failed":
        classes.append("failed")
    return " ".join(classes)


def ranking_section(ranking: Ranking) -> Section:
    sweep, at = ranking.sweep, ranking.at
    headers = ["rank", "trial"] + ranking.varied + [f"{short(sweep.objective)} ({sweep.mode})", "tie"]
    headers += [short(n) for n in ranking.physics] + [short(a["metric"]) for a in sweep.also]
    headers += ["epochs", "status", "events/s", "GPU peak [GB]", "MLflow"]
    rows, classes = [], []
    for r in ranking.rows:
        t = r.trial
        tie = "leader" if r.leader else ("≈ tied" if r.tied else "")
        row = [str(r.rank or "–"), t.run_name + (" [baseline]" if t.baseline else "")]
        row += [fmt_param(t.param(p)) for p in ranking.varied]
        row += [fmt(r.objective, r.objective_err), tie]
        row += [fmt(t.value(n, at), err_of(t, n, at)) for n in ranking.physics]
        row += [fmt(t.value(a["metric"], at)) for a in sweep.also]
        gpu = t.value("sys/gpu_mem_peak_gb", "last")
        row += [str(t.epochs if t.epochs is not None else "n/a"), status_text(t),
                fmt(t.value("perf/samples_per_s", "last")), fmt(gpu) if gpu is not None else "n/a",
                sweep.run_link(t.run_id)]
        rows.append(row)
        classes.append(row_class(r))
    text = [
        f"Every trial ranked by **{sweep.objective}** ({sweep.mode}), scored {AT_TEXT[at]}. "
        "Physics figures are shown ± their 1σ error (`_err`: Wilson for fractions, bootstrap for resolutions).",
        "**Tie rule**: a trial is marked '≈ tied' when |x − x_leader| ≤ sqrt(σ_leader² + σ_trial²), "
        "the combined 1σ of both; these trials cannot be told apart from the leader on this validation set. "
        "Throughput (events/s) is the last epoch's; 'n/a' GPU memory means no GPU was measured (CPU trial).",
    ]
    if not sweep.tracking_uri.startswith("http"):
        text.append("The MLflow links open the run in `scanner ui` (http://127.0.0.1:5000) on this store.")
    figure = _ranking_figure(ranking)
    return Section("Ranking", text + [Table(headers, rows, classes, "ranking")] + ([figure] if figure else []),
                   "ranking")


def _ranking_figure(ranking: Ranking):
    ranked = ranking.ranked
    leader = ranking.leader
    band = None
    if leader is not None and leader.objective_err:
        band = (leader.objective - leader.objective_err, leader.objective + leader.objective_err)
    return _plots.ranking_plot(
        [short_id(r.trial) for r in ranked], np.array([r.objective for r in ranked]),
        [r.objective_err for r in ranked], [r.trial.baseline for r in ranked], ranking.sweep.objective, band)


def val_test_section(ranking: Ranking) -> Section:
    comparisons = val_test_comparison(ranking)
    if not comparisons:
        return Section("Validation against test", [
            "No trial has test-split figures yet (`test/...` is logged once, after the sweep, for the baseline and "
            "the top trials)."], "test")
    headers = ["trial", "figure", "validation", "test", "test − val"]
    rows, classes = [], []
    for c in comparisons:
        first = True
        for name, v, ve, t, te in c.figures:
            if t is None:  # only the figures evaluated on the test split
                continue
            # Validation and test are disjoint event sets: independent errors, combined in quadrature.
            diff = fmt_delta(t - v, math.hypot(ve, te) if ve and te else None) if v is not None else "n/a"
            name_cell = c.row.trial.run_name + (" [baseline]" if c.row.trial.baseline else "") if first else ""
            rows.append([name_cell, short(name), fmt(v, ve), fmt(t, te), diff])
            classes.append(row_class(c.row))
            first = False
    return Section("Validation against test", [
        "The test split was never used to choose anything: these are the unbiased figures of the baseline and of "
        "the top trials. A large test − val gap on the leader means its rank owes something to luck. "
        "Errors of test − val are the two 1σ errors in quadrature (disjoint event sets).",
        Table(headers, rows, classes, "val-test")], "test")


def gain_section(ranking: Ranking) -> Section:
    gain = gain_over_baseline(ranking)
    if gain is None:
        why = "the sweep has no baseline trial" if ranking.baseline is None else \
            "the baseline is the leader or has no objective value"
        return Section("Gain over the baseline", [f"Not available: {why}."], "gain")
    rel = "n/a" if gain.relative is None else f"{100 * gain.relative:.1f} %"
    text = [f"On the **{gain.split}** split: {short(gain.metric)} {fmt(gain.base)} (baseline) → {fmt(gain.best)} "
            f"(leader, {ranking.leader.trial.run_name}), Δ = {fmt_delta(gain.delta, gain.delta_err)}; "
            f"{gain.relative_label}: **{rel}**. "
            "Errors of Δ are the two 1σ errors in quadrature."]
    rows = [[short(n), fmt(v0, e0), fmt(vb, eb), fmt_delta(d, de)]
            for n, v0, e0, vb, eb, d, de in gain.per_name]
    if rows:
        text.append(Table(["figure", "baseline", "leader", "Δ"], rows, [], "gain"))
    return Section("Gain over the baseline", text, "gain")


def pareto_section(ranking: Ranking) -> Section | None:
    front = pareto_front(ranking)
    if front is None:
        return None
    headers = ["trial"] + [f"{short(m)} ({mode})" for m, mode in zip(front.metrics, front.modes)]
    rows = [[front.rows[i].trial.run_name] + [fmt(v) for v in front.values[i]] for i in front.front]
    blocks = [f"Objectives: {', '.join(f'{m} ({mode})' for m, mode in zip(front.metrics, front.modes))}. "
              f"{len(front.front)} of {len(front.rows)} trials are non-dominated (no other trial is at least as good "
              "on every objective and better on one).", Table(headers, rows, [], "pareto")]
    for k in range(1, len(front.metrics)):
        blocks.append(_plots.pareto_plot(front, k))
    return Section("Pareto front", blocks, "pareto")


def importance_section(ranking: Ranking) -> Section:
    imp = param_importance(ranking)
    scatter = _plots.objective_vs_params(imp.params, imp.objective, ranking.sweep.objective, imp.log)
    blocks: list = []
    if imp.why_absent:
        blocks.append(f"Importance absent: {imp.why_absent}.")
    else:
        rows = [[p, f"{v:.3f}"] for p, v in imp.values.items()]
        blocks += ["Importance from an Optuna study rebuilt from the completed runs (distributions inferred from the "
                   "logged values: strings and ≤ 4 distinct numbers are categorical, ranges wider than 100× "
                   "log-uniform).",
                   Table(["parameter", "importance"], rows, [], "importance"),
                   _plots.importance_plot(imp.values)]
    if imp.conditional:
        blocks.append("Conditional parameters (inactive in some trials under their `when`, so without a value "
                      f"there): {', '.join(imp.conditional)}. They are left out of the importance; their plots "
                      "below show only the trials where they were active.")
    blocks.append(scatter)
    return Section("Parameter importance", [b for b in blocks if b is not None], "importance")
