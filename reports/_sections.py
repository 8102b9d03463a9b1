"""The sweep-level sections of a report: ranking, validation against test, gain over the baseline, Pareto front,
parameter importance. Each returns a ``Section`` of text, tables and figures.
"""

from __future__ import annotations

import math

import numpy as np

from reports import _plots
from reports._importance import MIN_TRIALS_FOR_IMPORTANCE, param_importance
from reports._pareto import pareto_front
from reports._rank import Ranking, Row, err_of, gain_over_baseline, short_id, val_test_comparison
from reports._render import (Cell, Section, Table, column_decimals, fmt, fmt_delta, fmt_err, fmt_fixed, fmt_param,
                             tie_text)
from reports._stats import quadrature

AT_TEXT = {"best": "at each trial's best epoch (`best/` metrics)", "last": "at each trial's last epoch"}
FLAG_TEXT = {"chance": ("chance", "validation at chance while the training loss fell"),
             "single_class": ("1 class", "every validation event predicted as one class"),
             "below_reference": ("≤ ref", "no better than the trivial reference predictor")}
MAX_FAILURES_LISTED = 20  # the rest are in ranking.csv
THROUGHPUT = "perf/samples_per_s"


STATUS_SHORT = {"completed": "done", "stopped_early": "stopped", "failed": "failed", "running": "running"}
ABBREVIATIONS = {"efficiency/": "eff. ", "purity/": "pur. "}  # column headers: the table must fit a laptop


def status_cell(t) -> Cell:
    """``done``, ``stopped``, ``failed`` (the reason as a tooltip, and under the table)."""
    why = t.status.replace("_", " ") + (f": {t.failure}" if t.failure else "")
    return Cell(STATUS_SHORT.get(t.status, t.status), title=why)


def header(sweep, metric: str) -> str:
    text = sweep.pretty(metric)
    for long, abbreviation in ABBREVIATIONS.items():
        if text.startswith(long):
            return abbreviation + text[len(long):]
    return text


def row_class(r: Row) -> str:
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


def trial_cell(t) -> Cell:
    """``t07`` with the full run name as a tooltip (the CSV has it too)."""
    return Cell(t.label + (" (baseline)" if t.baseline else ""), title=t.run_name)


def _flags_cell(t) -> Cell:
    flags = t.flags
    shown = [FLAG_TEXT.get(f, (f, f))[0] for f in flags]
    return Cell(" ".join(f"⚑{s}" for s in shown), title="; ".join(FLAG_TEXT.get(f, (f, f))[1] for f in flags))


class _Columns:
    """The numeric columns of the ranking table: one number of decimals per column (digits line up)."""

    def __init__(self, ranking: Ranking):
        sweep, at = ranking.sweep, ranking.at
        self.names = [sweep.objective] + ranking.physics + [a["metric"] for a in sweep.also]
        self.decimals = {}
        for n in self.names:
            values = [r.trial.value(n, at) for r in ranking.rows]
            errs = [err_of(r.trial, n, at) for r in ranking.rows]
            self.decimals[n] = column_decimals(values, errs)

    def cell(self, name: str, value: float | None, err: float | None = None) -> str:
        return fmt_fixed(value, self.decimals[name], err)

    def compact(self, name: str, value: float | None, err: float | None = None) -> Cell:
        """The value alone, its error as a tooltip: six per-class columns with "± 0.010" would not fit."""
        shown = err is not None and math.isfinite(err) and err > 0
        return Cell(fmt_fixed(value, self.decimals[name]), title=f"± {fmt_err(err)}" if shown else "")


def ranking_section(ranking: Ranking) -> Section:
    sweep, at = ranking.sweep, ranking.at
    cols = _Columns(ranking)
    flags = any(t.flags for t in sweep.trials)
    gpu = any("sys/gpu_mem_peak_gb" in t.metrics for t in sweep.trials)
    speed = THROUGHPUT not in [a["metric"] for a in sweep.also]  # else it is already a column
    headers = ["rank", "trial"] + (["flags"] if flags else []) + ranking.varied
    headers += [f"{sweep.pretty(sweep.objective)} ({sweep.mode})", "tie"] + [header(sweep, n) for n in ranking.physics]
    headers += [header(sweep, a["metric"]) for a in sweep.also] + ["epochs", "status"]
    headers += ["events/s"] if speed else []
    headers += (["GPU peak [GB]"] if gpu else []) + ["MLflow"]
    rows, classes = [], []
    reference = _reference_row(ranking, cols, flags, int(gpu) + int(speed))
    for r in ranking.rows:
        if reference is not None and _worse_than_reference(ranking, r):
            rows.append(reference)
            classes.append("reference")
            reference = None
        t = r.trial
        row = [str(r.rank or "–"), trial_cell(t)] + ([_flags_cell(t)] if flags else [])
        row += [fmt_param(t.param(p)) for p in ranking.varied]
        row += [cols.cell(sweep.objective, r.objective, r.objective_err),
                "leader" if r.leader else tie_text(r.tied)]
        row += [cols.compact(n, t.value(n, at), err_of(t, n, at)) for n in ranking.physics]
        row += [cols.cell(a["metric"], t.value(a["metric"], at)) for a in sweep.also]
        row += [str(t.epochs if t.epochs is not None else "n/a"), status_cell(t)]
        row += [fmt(t.value(THROUGHPUT, "last"))] if speed else []
        row += [fmt(t.value("sys/gpu_mem_peak_gb", "last"))] if gpu else []
        rows.append(row + [Cell("run", href=sweep.run_link(t.run_id))])
        classes.append(row_class(r))
    if reference is not None:
        rows.append(reference)
        classes.append("reference")
    blocks = _ranking_text(ranking) + [Table(headers, rows, classes, "ranking")] + _failures(ranking)
    figure = _ranking_figure(ranking)
    return Section("Ranking", blocks + ([figure] if figure else []), "ranking")


def _ranking_text(ranking: Ranking) -> list[str]:
    sweep = ranking.sweep
    seeds = (f" + the training-seed spread of one run ({fmt_err(ranking.pooled_seed_sigma)}, from the finalists' "
             "replicas; a trial's own when it has replicas)" if ranking.pooled_seed_sigma else "")
    text = [
        f"Every trial ranked by **{sweep.pretty(sweep.objective)}** ({sweep.mode}) on the validation split, scored "
        f"{AT_TEXT[ranking.at]}; equal values in trial order (t00 first). The objective is shown ± its 1σ error; "
        "hover a physics figure for its error (`_err`: Wilson for fractions, bootstrap for resolutions; all in "
        "ranking.csv); eff. = efficiency, pur. = purity; '—': undefined at that epoch, 'n/a': not logged.",
        "**Tie rule**: a trial is marked '≈ tied' when |x − x_leader| ≤ the combined 1σ of both (their logged errors"
        f"{seeds}); these trials cannot be told apart from the leader. '?': an error is not logged (an older store, "
        "or an objective without `_err` such as `val/loss`), so the tie is unknown and no lead is claimed. Hover a "
        "trial id for its full run name (also in ranking.csv). Throughput (events/s) is the last epoch's.",
    ]
    if sweep.reference("val", sweep.objective) is not None:
        text.append("The **reference** row is the trivial predictor (majority class, mean target or mean direction, "
                    "fitted on the training split): a trial below it has learned nothing.")
    if any(t.flags for t in sweep.trials):
        text.append("Flags: " + "; ".join(f"⚑{short} = {why}" for short, why in FLAG_TEXT.values()) + ".")
    if not sweep.tracking_uri.startswith(("http://", "https://")):
        text.append(f"The MLflow links open the run in `scanner ui` ({sweep.ui_url}) on this store.")
    return text


def _worse_than_reference(ranking: Ranking, r: Row) -> bool:
    ref = ranking.sweep.reference("val", ranking.sweep.objective)
    if r.rank is None:
        return True
    return r.objective < ref if ranking.sweep.mode == "max" else r.objective > ref


def _reference_row(ranking: Ranking, cols: _Columns, flags: bool, extra: int) -> list | None:
    sweep = ranking.sweep
    value = sweep.reference("val", sweep.objective)
    if value is None:
        return None
    row = ["", Cell("reference", title="the trivial predictor, fitted on the training split")]
    row += [""] * (int(flags) + len(ranking.varied))
    row += [cols.cell(sweep.objective, value, sweep.reference("val", sweep.objective + "_err")), ""]
    row += [cols.compact(n, sweep.reference("val", n), sweep.reference("val", n + "_err")) for n in ranking.physics]
    row += [""] * (len(sweep.also) + 2 + extra + 1)  # also, epochs, status, (events/s, GPU), MLflow
    return row


def _failures(ranking: Ranking) -> list[str]:
    failed = [r.trial for r in ranking.rows if r.trial.status == "failed" and r.trial.failure]
    if not failed:
        return []
    listed = "; ".join(f"{t.label}: {t.failure}" for t in failed[:MAX_FAILURES_LISTED])
    more = f"; and {len(failed) - MAX_FAILURES_LISTED} more (ranking.csv)" if len(failed) > MAX_FAILURES_LISTED else ""
    return [f"Failures: {listed}{more}."]


def _ranking_figure(ranking: Ranking):
    ranked = ranking.ranked
    leader = ranking.leader
    band = None
    if leader is not None and leader.objective_err and math.isfinite(leader.objective_err):
        band = (leader.objective - leader.objective_err, leader.objective + leader.objective_err)
    return _plots.ranking_plot(
        [short_id(r.trial) for r in ranked], np.array([r.objective for r in ranked]),
        [r.objective_err for r in ranked], [r.trial.baseline for r in ranked], ranking.sweep.objective, band,
        ranking.sweep.reference("val", ranking.sweep.objective))


def val_test_section(ranking: Ranking) -> Section:
    comparisons = val_test_comparison(ranking)
    sweep = ranking.sweep
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
            diff = fmt_delta(t - v, quadrature(ve, te)) if v is not None else "n/a"
            rows.append([trial_cell(c.row.trial) if first else "", sweep.pretty(name), fmt(v, ve), fmt(t, te), diff])
            classes.append(row_class(c.row))
            first = False
    return Section("Validation against test", [
        "The test split was never used to choose anything: these are the unbiased figures of the baseline and of "
        "the top trials. A large test − val gap on the leader means its rank owes something to luck. "
        "Errors of test − val are the two 1σ errors in quadrature (disjoint event sets).",
        Table(headers, rows, classes, "val-test")], "test")


def gain_section(ranking: Ranking) -> Section:
    gain = gain_over_baseline(ranking)
    sweep = ranking.sweep
    if gain is None:
        why = "the sweep has no baseline trial" if ranking.baseline is None else \
            "the baseline is the leader or has no objective value"
        return Section("Gain over the baseline", [f"Not available: {why}."], "gain")
    rel = "n/a" if gain.relative is None else f"{100 * gain.relative:.1f} %"
    text = [f"On the **{gain.split}** split: {sweep.pretty(gain.metric)} {fmt(gain.base)} (baseline) → "
            f"{fmt(gain.best)} (leader, {ranking.leader.trial.label}), Δ = {fmt_delta(gain.delta, gain.delta_err)}; "
            f"{gain.relative_label}: **{rel}**. Errors of Δ are the two 1σ errors in quadrature (see \"Is the lead "
            "real?\" for the paired comparison)."]
    rows = [[sweep.pretty(n), fmt(v0, e0), fmt(vb, eb), fmt_delta(d, de)]
            for n, v0, e0, vb, eb, d, de in gain.per_name]
    if rows:
        text.append(Table(["figure", "baseline", "leader", "Δ"], rows, [], "gain"))
    return Section("Gain over the baseline", text, "gain")


def pareto_section(ranking: Ranking) -> Section | None:
    front = pareto_front(ranking)
    if front is None:
        return None
    sweep = ranking.sweep
    headers = ["trial"] + [f"{sweep.pretty(m)} ({mode})" for m, mode in zip(front.metrics, front.modes)]
    rows = [[trial_cell(front.rows[i].trial)] + [fmt(v) for v in front.values[i]] for i in front.front]
    blocks = [f"Objectives: {', '.join(f'{sweep.pretty(m)} ({mode})' for m, mode in zip(front.metrics, front.modes))}."
              f" {len(front.front)} of {len(front.rows)} trials are non-dominated (no other trial is at least as good "
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
        if imp.trials < MIN_TRIALS_FOR_IMPORTANCE:
            blocks.append(f"**Caveat: computed from {imp.trials} trials**, fewer than {MIN_TRIALS_FOR_IMPORTANCE}: "
                          "with so few points the importances are mostly noise; read them as a hint, not a result.")
        rows = [[p, f"{v:.3f}"] for p, v in imp.values.items()]
        blocks += [f"Importance from an Optuna study rebuilt from the {imp.trials} completed runs (distributions "
                   "inferred from the logged values: strings and ≤ 4 distinct numbers are categorical, ranges wider "
                   "than 100× log-uniform).",
                   Table(["parameter", "importance"], rows, [], "importance"),
                   _plots.importance_plot(imp.values)]
    if imp.conditional:
        blocks.append("Conditional parameters (inactive or absent in some trials, so without a value there): "
                      f"{', '.join(imp.conditional)}. They are left out of the importance; their plots below show "
                      "only the trials where they were active.")
    blocks.append(scatter)
    return Section("Parameter importance", [b for b in blocks if b is not None], "importance")
