"""Systematics: the finalists on detector variants (``scanner evaluate``, metrics ``syst/<label>/<name>``).

For each finalist, variant and physics figure: the shift against nominal (the test split), with its error, and
whether the finalists keep their order on the variant (the order itself and Kendall's τ against nominal).

Like with like: when a finalist has replicas and the variant was evaluated on all of them
(``seeds/syst/<label>/<name>``, the mean over seeds), the shift compares that mean with ``seeds/test/<name>``;
otherwise the single run's ``syst/<label>/<name>`` with its ``test/<name>``. The error of a shift is the two 1σ
statistical errors (``_err`` of the nominal and of the variant figure) in quadrature: nominal and variant are
different event samples, so independent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from reports._plots_lead import systematics_plot
from reports._rank import Ranking, Row
from reports._render import UNKNOWN, Cell, Section, Table, fmt, fmt_delta
from reports._stats import kendall_tau, quadrature
from trainables.contract import SEEDS, SEEDS_TEST, SYST, syst_prefix


@dataclass
class Shift:
    nominal: float
    variant: float
    err: float  # NaN: unknown, an error of the two is not logged
    seeds: bool  # seed means on both sides

    @property
    def shift(self) -> float:
        return self.variant - self.nominal


@dataclass
class Variant:
    label: str
    shifts: dict[tuple[str, str], Shift] = field(default_factory=dict)  # (figure, run_id) -> Shift
    nominal_order: list[str] = field(default_factory=list)  # finalist labels, best first on the objective
    variant_order: list[str] = field(default_factory=list)
    tau: float = math.nan

    @property
    def order_holds(self) -> bool:
        return bool(self.nominal_order) and self.nominal_order == self.variant_order


def variant_labels(rows: list[Row]) -> list[str]:
    """The ``<label>`` of every ``syst/<label>/...`` metric the finalists carry, in first-seen order."""
    labels: dict[str, None] = {}
    for r in rows:
        for key in r.trial.metrics:
            if key.startswith(f"{SYST}/") and key.count("/") >= 2:
                labels.setdefault(key.split("/")[1], None)
    return list(labels)


def _shift(row: Row, label: str, name: str) -> Shift | None:
    t = row.trial
    seeds_variant = t.split_value(f"{SEEDS}/{syst_prefix(label)}", name)
    seeds_nominal = t.split_value(SEEDS_TEST, name)
    if seeds_variant is not None and seeds_nominal is not None:
        nominal, variant, seeds = seeds_nominal, seeds_variant, True
    else:
        nominal, variant, seeds = t.test_value(name), t.split_value(syst_prefix(label), name), False
    if nominal is None or variant is None or not (math.isfinite(nominal) and math.isfinite(variant)):
        return None
    e_nom, e_var = t.test_value(name + "_err"), t.split_value(syst_prefix(label), name + "_err")
    return Shift(nominal, variant, quadrature(e_nom, e_var), seeds)


def analyse_systematics(ranking: Ranking) -> list[Variant]:
    rows = ranking.finalists()
    names = [ranking.sweep.objective] + ranking.physics
    sign = -1.0 if ranking.sweep.mode == "max" else 1.0
    out = []
    for label in variant_labels(rows):
        v = Variant(label)
        for r in rows:
            for name in names:
                s = _shift(r, label, name)
                if s is not None:
                    v.shifts[(name, r.trial.run_id)] = s
        both = [(r, v.shifts[(names[0], r.trial.run_id)]) for r in rows if (names[0], r.trial.run_id) in v.shifts]
        if len(both) >= 2:
            v.nominal_order = [r.trial.label for r, s in sorted(both, key=lambda b: (sign * b[1].nominal,
                                                                                     b[0].trial.order))]
            v.variant_order = [r.trial.label for r, s in sorted(both, key=lambda b: (sign * b[1].variant,
                                                                                     b[0].trial.order))]
            v.tau = kendall_tau([s.nominal for _, s in both], [s.variant for _, s in both])
        out.append(v)
    return out


def systematics_section(ranking: Ranking) -> Section | None:
    """None when no finalist has a ``syst/`` metric (no ``scanner evaluate`` has run)."""
    variants = analyse_systematics(ranking)
    if not variants:
        return None
    sweep = ranking.sweep
    rows_of = {r.trial.run_id: r for r in ranking.finalists()}
    names = [sweep.objective] + ranking.physics
    blocks: list = [
        f"Finalists evaluated on {len(variants)} detector variant(s) with `scanner evaluate`: "
        f"{', '.join(v.label for v in variants)}. Shift = variant − nominal (the test split); ± the two 1σ "
        "statistical errors in quadrature (different event samples). With replicas the seed means are compared "
        "(marked ‡)."]
    for v in variants:
        blocks.append(_order_text(sweep, v))
        table_rows = []
        for (name, rid), s in v.shifts.items():
            t = rows_of[rid].trial
            table_rows.append([Cell(t.label, title=t.run_name), sweep.pretty(name) + (" ‡" if s.seeds else ""),
                               fmt(s.nominal), fmt(s.variant), fmt_delta(s.shift, s.err),
                               f"{abs(s.shift) / s.err:.1f}" if s.err > 0 else (UNKNOWN if math.isnan(s.err)
                                                                                 else "n/a")])
        blocks.append(Table(["finalist", "figure", "nominal", v.label, "shift", "|shift| / σ"], table_rows, [],
                            f"syst-{v.label}"))
    shifts = {(sweep.pretty(name), rows_of[rid].trial.label, v.label): (s.shift, s.err)  # NaN: no error bar
              for v in variants for (name, rid), s in v.shifts.items()}
    labels = [r.trial.label for r in ranking.finalists()]
    figure = systematics_plot([sweep.pretty(n) for n in names], labels, [v.label for v in variants], shifts)
    if figure is not None:
        blocks.append(figure)
    return Section("Systematics", blocks, "systematics")


def _order_text(sweep, v: Variant) -> str:
    objective = sweep.pretty(sweep.objective)
    if not v.nominal_order:
        return f"**{v.label}**: fewer than two finalists have {objective} on it: no order to compare."
    if v.order_holds:
        return (f"**{v.label}**: the finalists' order on {objective} holds (best first: {', '.join(v.nominal_order)})"
                f"; Kendall's τ = {v.tau:.2f}.")
    return (f"**{v.label}**: the finalists' order on {objective} **changes** (best first): nominal "
            f"{', '.join(v.nominal_order)}; {v.label} {', '.join(v.variant_order)}; Kendall's τ = {v.tau:.2f}.")
