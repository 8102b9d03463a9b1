"""Rank the trials of a sweep by its objective, mark statistical ties with the leader, compare with the baseline.

Order: by the objective (best first); equal values by trial order (the t-number, the baseline t00 first), the rule
the sweep's console uses, so its "best" line, ``best-of:`` and the report name the same trial. Failed trials are not
ranked (as on the console), nor are trials without an objective value; they follow, in run order.

Ties: a trial is tied with the leader when ``|x_trial - x_leader| <= sqrt(s_leader² + s_trial² + g_leader² +
g_trial²)``, with ``s`` the logged 1-sigma error (``<metric>_err``) and ``g`` the training-seed spread of one run: the
trial's own ``seeds/test/<metric>_std`` when it has replicas, else the sweep's pooled seed spread (the root mean
square of its finalists' spreads; 0 without replicas). When either logged error is missing (an older store, or an
objective without ``_err`` such as ``val/loss``) the tie is unknown (``tied`` None): a missing error is not a zero
one, so no lead is claimed. The two estimates come from independent trainings evaluated on
the same validation events, so the combined sigma overstates the spread of the difference a little: the tie mark errs
toward "cannot tell them apart", which is the honest side for a group meeting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from reports._fetch import SweepRuns, Trial
from reports._stats import quadrature, within
from trainables.contract import SEEDS_TEST, Status, is_fraction, metric_key


@dataclass(eq=False)  # rows are compared by identity: a field-wise == of two trials' metrics is slow and meaningless
class Row:
    rank: int | None  # None: not ranked (failed, or no objective value)
    trial: Trial
    objective: float | None
    objective_err: float | None
    seed_sigma: float = 0.0  # the training-seed spread of one run (own replicas, else the sweep's pooled spread)
    tied: bool | None = False  # None: unknown, an error of the two is not logged
    leader: bool = False


@dataclass
class Ranking:
    sweep: SweepRuns
    at: str  # best | last
    rows: list[Row]
    varied: list[str]
    physics: list[str]  # val/... names shown beside the objective
    pooled_seed_sigma: float = 0.0
    table: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def ranked(self) -> list[Row]:
        return [r for r in self.rows if r.rank is not None]

    @property
    def leader(self) -> Row | None:
        return self.ranked[0] if self.ranked else None

    @property
    def baseline(self) -> Row | None:
        return next((r for r in self.rows if r.trial.baseline), None)

    def top(self, n: int) -> list[Row]:
        return self.ranked[:n]

    def finalists(self) -> list[Row]:
        """The trials evaluated on the test split (the baseline and the top trials), in ranking order."""
        objective = self.sweep.objective
        return [r for r in self.rows if r.trial.test_value(objective) is not None]


def short_id(trial: Trial) -> str:
    """``t07``, ``t00 (baseline)``: the plots' trial labels."""
    return trial.label + (" (baseline)" if trial.baseline else "")


def err_of(trial: Trial, name: str, at: str) -> float | None:
    return trial.value(name + "_err", at)


def physics_metrics(sweep: SweepRuns) -> list[str]:
    """The main physics figures shown beside the objective: per-class efficiency/purity, or resolution/bias/RMS.
    Metric names use each class's metric key (``nue+CC`` -> ``nue_CC``); ``sweep.pretty`` shows the real name."""
    if sweep.task == "classification":
        names = ["val/accuracy"]
        for c in map(metric_key, sweep.class_names):
            names += [f"val/efficiency/{c}", f"val/purity/{c}"]
    else:
        names = ["val/resolution68_deg"]
        for t in map(metric_key, sweep.target_names):
            names += [f"val/bias/{t}", f"val/rms/{t}"]
    logged = set().union(*(t.metrics for t in sweep.trials)) if sweep.trials else set()
    present = [n for n in names if n in logged or f"best/{n}" in logged]
    return [n for n in present if n != sweep.objective]


def varied_params(sweep: SweepRuns) -> list[str]:
    """The union of ``scan.varied``; without it, the params whose values differ between trials."""
    names: list[str] = []
    for t in sweep.trials:
        names += [n for n in t.varied if n not in names]
    if names:
        return names
    keys = sorted(set().union(*(t.params for t in sweep.trials))) if sweep.trials else []
    return [k for k in keys if len({t.params.get(k) for t in sweep.trials}) > 1]


def pooled_seed_sigma(sweep: SweepRuns) -> float:
    """Root mean square of the finalists' seed spreads of the objective (``seeds/test/<m>_std``); 0 without."""
    stds = [t.split_value(SEEDS_TEST, sweep.objective + "_std") for t in sweep.trials]
    stds = [s for s in stds if s is not None and math.isfinite(s)]
    return math.sqrt(sum(s * s for s in stds) / len(stds)) if stds else 0.0


def rank(sweep: SweepRuns, at: str = "best") -> Ranking:
    """Every trial ordered by the objective (best first), ties of value broken by trial order; failed trials and
    trials without a value go last, in run order."""
    if at not in ("best", "last"):
        raise ValueError(f"at must be 'best' or 'last', not {at!r}")
    pooled = pooled_seed_sigma(sweep)
    rows = []
    for t in sweep.trials:
        own = t.split_value(SEEDS_TEST, sweep.objective + "_std")
        seed_sigma = own if own is not None and math.isfinite(own) else pooled
        rows.append(Row(None, t, t.value(sweep.objective, at), err_of(t, sweep.objective, at), seed_sigma))
    scored, unscored = [], []
    for r in rows:
        (scored if _finite(r.objective) and r.trial.status != Status.FAILED else unscored).append(r)
    sign = -1.0 if sweep.mode == "max" else 1.0
    scored.sort(key=lambda r: (sign * r.objective, r.trial.order))
    for i, r in enumerate(scored, start=1):
        r.rank = i
    unscored.sort(key=lambda r: (r.trial.status != Status.FAILED, r.trial.order))
    ranking = Ranking(sweep, at, scored + unscored, varied_params(sweep), physics_metrics(sweep), pooled)
    mark_ties(ranking)
    ranking.table = ranking_table(ranking)
    return ranking


def _or_blank(value: str | None) -> str:
    return "" if value is None else value


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def tie_sigma(a: Row, b: Row) -> float:
    """The combined 1σ of two rows' objectives; NaN when either logged error is missing."""
    return quadrature(a.objective_err, b.objective_err, a.seed_sigma, b.seed_sigma)


def mark_ties(ranking: Ranking) -> None:
    leader = ranking.leader
    if leader is None:
        return
    leader.leader = True
    for r in ranking.ranked[1:]:
        r.tied = within(r.objective - leader.objective, tie_sigma(leader, r))


def ranking_table(ranking: Ranking) -> pd.DataFrame:
    """The ranking as a flat table (the CSV): numbers are the MLflow values, unrounded; ``trial`` is the full run
    name, ``label`` the short id that the HTML table shows."""
    sweep, at = ranking.sweep, ranking.at
    records = []
    for r in ranking.rows:
        t = r.trial
        rec = {"rank": r.rank, "label": t.label, "trial": t.run_name, "baseline": t.baseline,
               "tied_with_leader": True if r.leader else r.tied, "flags": ",".join(t.flags)}  # blank: unknown
        rec.update({f"param:{p}": _or_blank(t.param(p)) for p in ranking.varied})  # blank: inactive or absent
        rec[sweep.objective] = r.objective
        rec[sweep.objective + "_err"] = r.objective_err
        for name in ranking.physics:
            rec[name] = t.value(name, at)
            rec[name + "_err"] = err_of(t, name, at)
        for a in sweep.also:
            rec[a["metric"]] = t.value(a["metric"], at)
        rec["epochs"] = t.epochs
        rec["status"] = t.status
        rec["failure"] = t.failure
        rec["perf/samples_per_s"] = t.value("perf/samples_per_s", "last")
        rec["sys/gpu_mem_peak_gb"] = t.value("sys/gpu_mem_peak_gb", "last")  # absent on CPU: stays empty
        rec["run_id"] = t.run_id
        rec["link"] = sweep.run_link(t.run_id)
        records.append(rec)
    table = pd.DataFrame.from_records(records)
    for col in ("rank", "epochs"):  # integers with gaps (unranked, never ran an epoch): not floats in the CSV
        if col in table:
            table[col] = table[col].astype("Int64")
    return table


@dataclass
class Gain:
    """The best trial against the baseline, on the test split when both have it, else on validation.

    Errors of differences are the two 1-sigma errors in quadrature (NaN, unknown, where either is not logged).
    """

    split: str  # test | val
    metric: str
    best: float
    base: float
    delta: float
    delta_err: float
    relative: float | None  # relative error-rate (or objective) reduction; None when undefined
    relative_label: str
    per_name: list[tuple]  # (metric, baseline, baseline_err, best, best_err, delta, delta_err) per physics figure


def gain_over_baseline(ranking: Ranking) -> Gain | None:
    best, base = ranking.leader, ranking.baseline
    if best is None or base is None or best.trial is base.trial:
        return None
    sweep = ranking.sweep
    use_test = best.trial.test_value(sweep.objective) is not None and base.trial.test_value(sweep.objective) is not None
    pick = (lambda t, n: t.test_value(n)) if use_test else (lambda t, n: t.value(n, ranking.at))
    xb, x0 = pick(best.trial, sweep.objective), pick(base.trial, sweep.objective)
    if not _finite(xb) or not _finite(x0):
        return None
    relative, label = relative_gain(sweep.objective, sweep.mode, xb, x0)
    per_name = []
    for name in ranking.physics:
        vb, v0 = pick(best.trial, name), pick(base.trial, name)
        if vb is not None and v0 is not None:
            eb, e0 = pick(best.trial, name + "_err"), pick(base.trial, name + "_err")
            per_name.append((name, v0, e0, vb, eb, vb - v0, quadrature(e0, eb)))
    err = quadrature(pick(best.trial, sweep.objective + "_err"), pick(base.trial, sweep.objective + "_err"))
    return Gain("test" if use_test else "val", sweep.objective, xb, x0, xb - x0, err, relative, label, per_name)


def relative_gain(metric: str, mode: str, best: float, base: float) -> tuple[float | None, str]:
    """(err_base - err_best) / err_base with err = 1 - x for fractions; (base - best) / base for a min objective."""
    if mode == "max" and is_fraction(metric):
        e0, eb = 1.0 - base, 1.0 - best
        return ((e0 - eb) / e0 if e0 > 0 else None), "relative error-rate reduction (err = 1 - x)"
    if mode == "min":
        return ((base - best) / base if base else None), "relative reduction"
    return ((best - base) / base if base else None), "relative increase"


@dataclass
class SplitComparison:
    row: Row
    figures: list[tuple[str, float | None, float | None, float | None, float | None]]  # name, val, val_err, test, err


def val_test_comparison(ranking: Ranking) -> list[SplitComparison]:
    """The baseline and the trials that have test figures: validation beside test, best-ranked first."""
    names = [ranking.sweep.objective] + ranking.physics
    out = []
    for r in ranking.rows:
        if not any(r.trial.test_value(n) is not None for n in names):
            continue
        figures = []
        for n in names:
            test = r.trial.test_value(n)
            test_err = r.trial.test_value(n + "_err")
            figures.append((n, r.trial.value(n, ranking.at), err_of(r.trial, n, ranking.at), test, test_err))
        out.append(SplitComparison(r, figures))
    return out
