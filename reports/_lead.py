"""Is the lead real? Every finalist against the leader on the test split: the difference with its error and
P(leader better), from a paired bootstrap over the finalists' shared test events (``test/predictions.h5``) combined
with the seed spread of their replicas (``reports._stats`` says how). The same numbers give the headline against
the baseline.

Finalists are the trials with a test figure of the objective (the baseline and the top trials). A finalist's value
is the mean over its seeds (``seeds/test/<m>``) when it has replicas, else its own ``test/<m>``. Without
predictions to pair (an older store, a figure the predictions cannot give such as ``val/loss``), the logged errors
are combined in quadrature instead, and the table says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from reports import _detail, _stats
from reports._detail import Predictions
from reports._plots_lead import lead_plot
from reports._rank import Ranking, Row, short_id
from reports._render import Cell, Section, Table, fmt, fmt_delta, fmt_err, tie_text
from trainables.contract import SEEDS_TEST, is_fraction, metric_key
from trainables.physics import RESOLUTION_Q


@dataclass
class Finalist:
    row: Row
    value: float  # seed mean when there are replicas, else the test figure
    test: float
    test_err: float | None
    seeds: int
    seed_std: float | None
    seed_err: float | None
    vs_leader: _stats.PairedDifference | None = None  # leader − this finalist
    tied: bool | None = False  # None: unknown, the error of the difference is not logged


@dataclass
class LeadAnalysis:
    metric: str
    mode: str
    leader: Finalist
    finalists: list[Finalist]  # the leader first, then in ranking order
    vs_baseline: dict[str, _stats.PairedDifference] = field(default_factory=dict)  # run_id -> finalist − baseline
    notes: list[str] = field(default_factory=list)

    @property
    def sign(self) -> float:
        return 1.0 if self.mode == "max" else -1.0


def statistic(p: Predictions, metric: str) -> _stats.Statistic | None:
    """The bootstrap statistic of a ``val/<name>`` figure from predictions; None when they cannot give it."""
    leaf = metric[len("val/"):] if metric.startswith("val/") else metric
    w = p.w
    if p.kind == "classification":
        predicted = p.scores.argmax(1)
        correct = (predicted == p.label).astype(float)
        if leaf == "accuracy":
            return _stats.ratio(w * correct, w)
        kind, _, key = leaf.partition("/")
        c = {metric_key(n): i for i, n in enumerate(p.names)}.get(key)
        if c is None:
            return None
        truth, chosen = (p.label == c).astype(float), (predicted == c).astype(float)
        eff, pur = _stats.ratio(w * correct * truth, w * truth), _stats.ratio(w * correct * chosen, w * chosen)
        return {"efficiency": eff, "purity": pur, "fom": _stats.product(eff, pur)}.get(kind)
    if leaf == "resolution68_deg":
        angle = _detail.opening_angle_deg(p)
        return None if angle is None else _stats.quantile(angle, RESOLUTION_Q, p.weights)
    kind, _, key = leaf.partition("/")
    names = {metric_key(n): n for n in p.names}
    if kind == "bias" and key in names:
        return _stats.ratio(w * _detail.residuals(p)[names[key]], w)
    return None


def aligned(preds: dict[str, Predictions]) -> dict[str, Predictions] | None:
    """The predictions restricted to the events all of them share, in one order; None when they cannot be paired."""
    if len(preds) < 2:
        return None
    if any(p.index is None for p in preds.values()):
        sizes = {p.n for p in preds.values()}
        return preds if len(sizes) == 1 else None
    common = None
    for p in preds.values():
        common = p.index if common is None else np.intersect1d(common, p.index)
    if common is None or len(common) < 2:
        return None
    out = {}
    for key, p in preds.items():
        order = np.argsort(p.index)
        rows = order[np.searchsorted(p.index[order], common)]
        out[key] = _subset(p, rows)
    truths = [p.label if p.label is not None else p.target for p in out.values()]
    return out if all(np.array_equal(truths[0], t) for t in truths[1:]) else None  # not the same events


def _subset(p: Predictions, rows: np.ndarray) -> Predictions:
    def pick(a):
        return None if a is None else a[rows]

    return Predictions(p.kind, p.names, pick(p.index), pick(p.label), pick(p.scores), pick(p.target), pick(p.pred),
                       pick(p.weights), p.direction, {k: v[rows] for k, v in p.truth.items()})


def _finalist(ranking: Ranking, row: Row) -> Finalist:
    t, metric = row.trial, ranking.sweep.objective
    mean = t.split_value(SEEDS_TEST, metric)
    seeds = t.seeds if mean is not None else 1
    return Finalist(row, mean if seeds > 1 else t.test_value(metric), t.test_value(metric),
                    t.test_value(metric + "_err"), seeds, t.split_value(SEEDS_TEST, metric + "_std") if seeds > 1
                    else None, t.split_value(SEEDS_TEST, metric + "_err") if seeds > 1 else None)


def analyse_lead(ranking: Ranking, predictions: dict[str, Predictions]) -> LeadAnalysis | None:
    """The finalists against the leader (and against the baseline); None when the leader has no test figure.

    ``predictions``: {run_id: the finalist's test predictions}."""
    sweep = ranking.sweep
    rows = ranking.finalists()
    leader = ranking.leader
    if leader is None or leader not in rows:
        return None
    finalists = [_finalist(ranking, r) for r in [leader] + [r for r in rows if r is not leader]]
    analysis = LeadAnalysis(sweep.objective, sweep.mode, finalists[0], finalists)
    boot, observed = _bootstrap(sweep.objective, {f.row.trial.run_id: predictions.get(f.row.trial.run_id)
                                                  for f in finalists}, analysis.notes)
    base = next((f for f in finalists if f.row.trial.baseline), None)
    for f in finalists[1:]:
        f.vs_leader = _difference(analysis, finalists[0], f, boot, observed)
        f.tied = _stats.within(f.vs_leader.delta, f.vs_leader.err)
    if base is not None:
        for f in finalists:
            if f is not base:
                analysis.vs_baseline[f.row.trial.run_id] = _difference(analysis, f, base, boot, observed)
    return analysis


def _bootstrap(metric: str, preds: dict[str, Predictions | None], notes: list[str]
               ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    available = {k: p for k, p in preds.items() if p is not None}
    missing = len(preds) - len(available)
    if missing:
        notes.append(f"{missing} finalist(s) have no test/predictions.h5: their differences use the logged errors")
    paired = aligned(available)
    if paired is None:
        if len(available) >= 2:
            notes.append("the finalists' test predictions do not hold the same events: no paired bootstrap")
        return {}, {}
    stats = {k: statistic(p, metric) for k, p in paired.items()}
    stats = {k: s for k, s in stats.items() if s is not None}
    if len(stats) < len(paired):
        notes.append(f"{metric} cannot be recomputed from predictions.h5: the differences use the logged errors")
        return {}, {}
    n = next(iter(paired.values())).n
    most = max(p.n for p in available.values())
    if n < most:
        notes.append(f"the finalists' test predictions share {n} of up to {most} events: the paired bootstrap uses "
                     "the shared events only")
    return _stats.bootstrap_many(stats, n), {k: _stats.on_all_events(s, n) for k, s in stats.items()}


def seed_term(f: Finalist) -> float:
    """The seed part of a finalist's error: 0 with one seed; with replicas their mean's error, NaN (unknown) when it
    was not logged: a missing error is not a zero one."""
    if f.seeds <= 1:
        return 0.0
    return f.seed_err if f.seed_err is not None else math.nan


def _difference(analysis: LeadAnalysis, a: Finalist, b: Finalist, boot: dict, observed: dict
                ) -> _stats.PairedDifference:
    ka, kb = a.row.trial.run_id, b.row.trial.run_id
    err_seeds = _stats.quadrature(seed_term(a), seed_term(b))
    if ka in boot and kb in boot:
        return _stats.paired_difference(boot[ka], boot[kb], observed[ka] - observed[kb], analysis.sign,
                                        a.value - b.value, err_seeds)
    return _stats.unpaired_difference(a.value, b.value, a.test_err, b.test_err, analysis.sign, err_seeds)


def fmt_p(p: float) -> str:
    """A probability for a table cell: 0.97, 0.995, > 0.999."""
    if not math.isfinite(p):
        return "n/a"
    return "> 0.999" if p > 0.999 else ("< 0.001" if p < 0.001 else f"{p:.2f}" if 0.01 <= p <= 0.99 else f"{p:.3f}")


def p_text(p: float, what: str = "P") -> str:
    """``P = 0.97`` or ``P > 0.999``."""
    shown = fmt_p(p)
    return f"{what} {shown}" if shown[0] in "<>" else f"{what} = {shown}"


def amount(analysis: LeadAnalysis, d: _stats.PairedDifference, metric_label: str) -> str:
    """``3.1 ± 0.8 % accuracy`` (fractions in percentage points) or ``1.2 ± 0.3 resolution68_deg``. The MLflow name
    decides the percent (``trainables.contract.is_fraction``); ``metric_label`` is what the reader sees."""
    better = abs(d.delta)
    if is_fraction(analysis.metric):
        return f"{fmt(100 * better, 100 * d.err)} % {metric_label}"
    return f"{fmt(better, d.err)} {metric_label}"


def signed_amount(analysis: LeadAnalysis, d: _stats.PairedDifference, metric_label: str) -> str:
    """``+3.1 ± 0.8 % accuracy``: + when the first of the pair is better."""
    return ("+" if analysis.sign * d.delta >= 0 else "−") + amount(analysis, d, metric_label)


def headline(analysis: LeadAnalysis | None, pretty) -> str | None:
    """"t07 beats the baseline by 3.1 ± 0.8 % accuracy (P = 0.99, 3 seeds)", or that no finalist is
    distinguishable from the baseline (within the combined 1σ); None without a baseline among the finalists."""
    if analysis is None or not analysis.vs_baseline:
        return None
    metric = pretty(analysis.metric)
    lead = analysis.leader
    candidates = [lead] + [f for f in analysis.finalists[1:] if f.row.trial.run_id in analysis.vs_baseline]
    for f in candidates:
        d = analysis.vs_baseline.get(f.row.trial.run_id)
        if d is not None and analysis.sign * d.delta > d.err:
            seeds = f"{f.seeds} seeds" if f.seeds > 1 else "one seed"
            return (f"**{f.row.trial.label} beats the baseline by {amount(analysis, d, metric)}** "
                    f"({p_text(d.p_better)}, {seeds}; test split, {d.method}).")
    d = analysis.vs_baseline.get(lead.row.trial.run_id)
    if d is None:  # the leader is the baseline
        return "**No finalist is distinguishable from the baseline**: the baseline leads."
    if not math.isfinite(d.err):  # an error not logged is unknown, not zero: nothing can be claimed
        return (f"**The leader {lead.row.trial.label} against the baseline: "
                f"{signed_amount(analysis, d, metric)} on the test split, "
                f"error unknown** (no `_err` logged for it): no significance is claimed.")
    if analysis.sign * d.delta < -d.err:
        return (f"**The baseline beats the leader {lead.row.trial.label} on the test split** by "
                f"{amount(analysis, d, metric)} ({p_text(d.p_better, 'P(leader better)')}).")
    return (f"**No finalist is distinguishable from the baseline** (leader {lead.row.trial.label}: "
            f"{signed_amount(analysis, d, metric)}, "
            f"{p_text(d.p_better, 'P(better)')}; test split).")


def lead_section(ranking: Ranking, analysis: LeadAnalysis | None) -> Section:
    sweep = ranking.sweep
    if analysis is None:
        return Section("Is the lead real?", [
            "Not available: the leader has no test-split figure yet (the finalists are evaluated once, after the "
            "search)."], "lead")
    metric = sweep.pretty(analysis.metric)
    headers = ["finalist", f"test {metric}", "seeds", "seed mean ± err", "seed std", "leader − finalist",
               "σ events", "σ seeds", "P(leader better)", "tie"]
    rows, classes = [], []
    for f in analysis.finalists:
        d = f.vs_leader
        seeds = [str(f.seeds), fmt(f.value, f.seed_err), fmt_err(f.seed_std)] if f.seeds > 1 else ["1", "n/a", "n/a"]
        compare = ([fmt_delta(d.delta, d.err), fmt_err(d.err_events), fmt_err(d.err_seeds) if d.err_seeds else "n/a",
                    fmt_p(d.p_better), tie_text(f.tied)] if d is not None else ["", "", "", "", "leader"])
        rows.append([Cell(f.row.trial.label + (" (baseline)" if f.row.trial.baseline else ""),
                          title=f.row.trial.run_name), fmt(f.test, f.test_err)] + seeds + compare)
        classes.append("leader" if d is None else ("tied" if f.tied else "") + (" baseline" if f.row.trial.baseline
                                                                                  else ""))
    methods = {f.vs_leader.method for f in analysis.finalists[1:] if f.vs_leader is not None}
    text = [f"Each finalist against the leader **{analysis.leader.row.trial.label}** on the test split "
            f"({', '.join(sorted(methods)) or 'no other finalist'}). The leader − finalist difference uses the seed "
            "means where there are replicas. Its error combines the event statistics (a paired bootstrap over the "
            f"same test events, {_stats.N_BOOTSTRAP} resamples: both trials are scored on each resample, so events "
            "that both get right or wrong do not count twice) and the seed spread (each mean's std/√N), in "
            "quadrature. The seeds share the test events, so the event error is not divided by √N. "
            "P(leader better) is the share of resamples in which the leader is better, smeared by the seed term. "
            "A finalist within the combined 1σ of the leader is marked '≈ tied'; '?' where an error is not logged "
            "(an older store, or a figure without `_err`): then neither a tie nor a lead is claimed."]
    text += [f"Note: {n}." for n in analysis.notes]
    diffs = [f for f in analysis.finalists[1:] if f.vs_leader is not None]
    figure = lead_plot([short_id(f.row.trial) for f in diffs], [analysis.sign * f.vs_leader.delta for f in diffs],
                       [f.vs_leader.err for f in diffs], "test/" + analysis.metric.split("/", 1)[-1])
    blocks = text + [Table(headers, rows, classes, "lead")] + ([figure] if figure is not None else [])
    return Section("Is the lead real?", blocks, "lead")
