"""matplotlib (Agg) figures of a report, returned as PNG bytes. Axes carry physics units (degrees, GeV, events/s, GB).

Every function takes plain data and returns a ``Figure`` or None when there is nothing to draw. This module holds
the shared pieces and the sweep-level figures; ``_plots_detail`` the leader's physics, ``_plots_lead`` the
finalists' comparisons and systematics. Margins are fixed per figure (``fig.subplots_adjust``) rather than computed
by ``tight_layout``, which draws every figure twice: a report draws a few dozen.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

SIZE = (7.0, 4.5)  # inches: readable on a laptop and on a projector
WIDE = (11.0, 4.5)  # two panels side by side
DPI = 110  # sharp enough for slides, small enough to embed a few dozen in one HTML file
BASELINE_COLOR = "0.35"
REFERENCE_COLOR = "C3"
REFERENCE_STYLE = {"color": REFERENCE_COLOR, "ls": "--", "lw": 1.2}
MAX_RANKED_SHOWN = 60  # a long sweep: the top 60 tell the story; the table has the rest

_UNITS = {
    "resolution68_deg": "deg",
    "samples_per_s": "events/s",
    "epoch_s": "s",
    "step_ms_p50": "ms",
    "step_ms_p95": "ms",
    "rss_gb": "GB",
    "gpu_mem_peak_gb": "GB",
    "gpu_mem_allocated_gb": "GB",
    "gpu_mem_reserved_gb": "GB",
    "gpu_mem_peak_reserved_gb": "GB",
    "gpu_proc_mem_gb": "GB",
    "gpu_procs_sharing": "processes",
    "gpu_alloc_retries": "per epoch",
    "gpu_ooms": "per epoch",
    "cpu_pct": "%",
    "gpu_util_pct": "%",
    "gpu_proc_util_pct": "%",
    "gpu_power_w": "W",
    "data_wait_frac": "fraction of step time",
    "gpu_fragmentation": "fraction",
    "gpu_cache_slack": "fraction",
}


@dataclass
class Figure:
    key: str  # file stem in the Markdown report
    title: str
    caption: str
    png: bytes
    meta: dict = field(default_factory=dict)  # layout facts the tests check (e.g. the tick labels drawn)


def label(metric: str) -> str:
    """An axis label with the unit: ``perf/samples_per_s`` -> ``perf/samples_per_s [events/s]``."""
    leaf = metric.split("/")[-1]
    unit = _UNITS.get(leaf) or ("deg" if leaf.endswith("_deg") else "")
    return f"{metric} [{unit}]" if unit else metric


def load_matplotlib():
    """matplotlib's object API with the Agg canvas, never pyplot: pyplot would switch the process's backend (a
    notebook's inline one) and keep every figure in its registry."""
    # matplotlib loads with the first figure, not with the package
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # slow to import (~0.5 s): only when drawing
    from matplotlib.figure import Figure as MatplotlibFigure

    return MatplotlibFigure, FigureCanvasAgg


def subplots(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = SIZE, **kwargs):
    """(figure, axes) as ``pyplot.subplots`` returns them, on an Agg canvas at the report's resolution (drawn once
    at that dpi: text layouts are reused)."""
    figure_class, canvas_class = load_matplotlib()
    fig = figure_class(figsize=figsize, dpi=DPI)
    canvas_class(fig)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def panel_grid(count: int, max_cols: int, panel: tuple[float, float], frame: tuple[float, float],
               margins: tuple[float, float, float, float], space: tuple[float, float]):
    """(figure, axes grid) of ``count`` panels in rows of up to ``max_cols``: each panel ``panel`` inches (width,
    height), plus ``frame`` inches for the labels and the legend; ``margins`` (left, right, top, bottom) in inches,
    so the text keeps its place whatever the number of panels; ``space`` is matplotlib's (wspace, hspace)."""
    cols = min(max_cols, count)
    rows = -(-count // cols)
    width, height = panel[0] * cols + frame[0], panel[1] * rows + frame[1]
    fig, axes = subplots(rows, cols, figsize=(width, height), squeeze=False)
    left, right, top, bottom = margins
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height, bottom=bottom / height,
                        wspace=space[0], hspace=space[1])
    return fig, axes


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi="figure", pil_kwargs={"compress_level": 1})  # zlib's fastest: -15 % time
    return buf.getvalue()


def tick_texts(ax, axis: str = "y") -> list[str]:
    """The tick labels as drawn (after a draw): the tests check they read as numbers."""
    ticks = ax.yaxis if axis == "y" else ax.xaxis
    return [t.get_text() for t in ticks.get_ticklabels(minor=False) + ticks.get_ticklabels(minor=True)
            if t.get_text() and t.get_visible()]


def legend_outside(ax, axes: list) -> None:
    """One legend for all panels, right of ``ax`` (outside the data): in a panel it hides the curves."""
    seen: dict = {}
    for a in axes:
        for h, lab in zip(*a.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    if seen:
        ax.legend(list(seen.values()), list(seen), fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                  borderaxespad=0)


def ranking_plot(names, values, errs, baseline_flags, objective, tie_band, reference=None) -> Figure | None:
    """The objective with its 1-sigma error for every ranked trial; the band is the leader's tie window and the
    dashed line the reference predictor. ``names`` are short trial ids (``t03``): the table has the full names."""
    if not names:
        return None
    n = min(len(names), MAX_RANKED_SHOWN)
    height = max(3.0, 0.26 * n + 1.2)
    fig, ax = subplots(figsize=(SIZE[0], height))
    fig.subplots_adjust(left=1.45 / SIZE[0], right=0.97, top=1 - 0.45 / height, bottom=0.75 / height)
    y = np.arange(n)
    x, e, base = np.asarray(values[:n], float), np.array(errs[:n], dtype=float), np.asarray(baseline_flags[:n])
    for mask, color in ((~base, "C0"), (base, BASELINE_COLOR)):
        if mask.any():
            ax.errorbar(x[mask], y[mask], xerr=e[mask], fmt="o", color=color, ecolor="0.5", capsize=2, zorder=3)
    if tie_band is not None:
        ax.axvspan(*tie_band, color="C2", alpha=0.15, label="leader ± 1σ (tie window)")
    if reference is not None:
        ax.axvline(reference, **REFERENCE_STYLE, label=f"reference predictor ({reference:.4g})")
    if tie_band is not None or reference is not None:
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(y, names[:n], fontsize=8)
    ax.set_ylim(n - 0.5, -0.5)  # best on top
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel(label(objective) + " ± 1σ")
    ax.set_ylabel("trial (rank order)")
    ax.set_title("Trials ranked by the objective (baseline in grey)" + (f", top {n}" if n < len(names) else ""))
    data = png(fig)
    drawn = ax.get_tightbbox(fig.canvas.get_renderer())  # after the draw: its text layouts are reused
    meta = {"plot_width_frac": float(ax.get_position().width), "yticklabels": list(names[:n]),
            "reference": reference, "labels_inside": bool(drawn.x0 >= 0 and drawn.x1 <= fig.bbox.width)}
    return Figure("ranking", "Ranking", f"{objective} ± 1σ per trial, best first; trial ids as in the table"
                  + ("; dashed: the reference predictor." if reference is not None else "."), data, meta)


def pareto_plot(front, x_index: int = 1) -> Figure | None:
    fig, ax = subplots(figsize=SIZE)
    fig.subplots_adjust(left=0.12, right=0.97, top=0.92, bottom=0.12)
    xs = [v[x_index] for v in front.values]
    ys = [v[0] for v in front.values]
    ax.plot(xs, ys, ls="none", marker="o", ms=3, color="0.6", label="trials")  # Line2D markers: 1,000 points draw fast
    fx = [front.values[i][x_index] for i in front.front]
    fy = [front.values[i][0] for i in front.front]
    order = np.argsort(fx)
    ax.plot(np.array(fx)[order], np.array(fy)[order], "o-", color="C3", label="Pareto front")
    for i in front.front[:30]:  # a label per front point, up to what stays readable
        ax.annotate(front.rows[i].trial.label, (front.values[i][x_index], front.values[i][0]),
                    fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(label(front.metrics[x_index]) + f" ({front.modes[x_index]})")
    ax.set_ylabel(label(front.metrics[0]) + f" ({front.modes[0]})")
    ax.legend(fontsize=8)
    ax.set_title("Pareto front")
    return Figure(f"pareto_{x_index}", "Pareto front", "Non-dominated trials over all objectives.", png(fig))


def importance_plot(importances: dict[str, float]) -> Figure | None:
    if not importances:
        return None
    fig, ax = subplots(figsize=SIZE)
    fig.subplots_adjust(left=0.25, right=0.97, top=0.92, bottom=0.12)
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names], color="C0")
    ax.set_xlabel("importance (Optuna PED-ANOVA, sums to 1)")
    ax.set_title("Parameter importance")
    return Figure("importance", "Parameter importance", "From a study rebuilt from the MLflow runs.", png(fig))


def objective_vs_params(params: dict[str, list], objective: list[float], metric: str, log=()) -> Figure | None:
    """One panel per varied param; a None value (the param was inactive in that trial) is not drawn."""
    active = {p: [(v, o) for v, o in zip(vals, objective) if v is not None] for p, vals in params.items()}
    names = [p for p in params if len({v for v, _ in active[p]}) > 1]
    if not names or not objective:
        return None
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    # One objective axis for all panels: a panel of 2 active trials must not look like a big effect.
    fig, axes = subplots(rows, cols, figsize=(3.9 * cols, 3.3 * rows), squeeze=False, sharey=True)
    fig.subplots_adjust(left=0.6 / (3.9 * cols) + 0.05, right=0.98, top=1 - 0.3 / (3.3 * rows),
                        bottom=1.1 / (3.3 * rows), wspace=0.15, hspace=0.55)
    for ax, p in zip(axes.flat, names):
        values, obj = zip(*active[p])
        _scatter_param(ax, list(values), list(obj), p in log)
        inactive = len(params[p]) - len(values)
        ax.set_xlabel(p + (f"  ({len(values)} trials where active)" if inactive else ""), fontsize=9)
    for ax in axes[:, 0]:
        ax.set_ylabel(label(metric), fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    return Figure("objective_vs_params", "Objective against each varied parameter",
                  "One point per completed trial (conditional parameters: the trials where they were active).",
                  png(fig))


def _tick(value: str) -> str:
    """Category tick labels: numbers to 3 significant digits (a float choice logs as 0.5947642527697621)."""
    try:
        return f"{float(value):.3g}"
    except ValueError:
        return value


def _scatter_param(ax, values: list[str], objective: list[float], log: bool = False) -> None:
    try:
        x = np.array([float(v) for v in values])
    except ValueError:
        x = None
    if x is not None and len(set(x)) > 4:
        ax.plot(x, objective, ls="none", marker="o", ms=2.5, alpha=0.7)
        if x.min() > 0 and (log or x.max() / x.min() > 100):  # log-sampled in the space, or spanning decades
            ax.set_xscale("log")
        return
    cats = sorted(set(values), key=lambda v: (x is None, float(v) if x is not None else 0.0, v))
    where = {c: i for i, c in enumerate(cats)}
    pos = np.array([where[v] for v in values])
    jitter = np.random.default_rng(0).uniform(-0.12, 0.12, len(pos))
    ax.plot(pos + jitter, objective, ls="none", marker="o", ms=2.5, alpha=0.7)
    ax.set_xticks(range(len(cats)), [_tick(c) for c in cats], rotation=30, fontsize=7)
    ax.set_xlim(-0.5, len(cats) - 0.5)


def curves_plot(key: str, title: str, panels: list[tuple[str, dict]], caption: str,
                hlines: dict[str, tuple[float, str]] | None = None) -> Figure | None:
    """``panels``: (metric, {trial label: [(step, value), ...]}) drawn as a grid of up to 4 panels; ``hlines``:
    {metric: (value, label)} a dashed line in that metric's panel (the device's total memory)."""
    panels = [(m, series) for m, series in panels if series]
    if not panels:
        return None
    from matplotlib.ticker import MaxNLocator  # matplotlib is imported lazily

    fig, axes = panel_grid(len(panels), 2, (5.6, 3.2), (1.4, 0.5), (0.8, 1.5, 0.5, 0.5), (0.3, 0.45))
    for ax, (metric, series) in zip(axes.flat, panels):
        log = metric.endswith("lr")  # learning rates span decades
        for i, (name, points) in enumerate(series.items()):
            points = [(st, v) for st, v in points if v > 0] if log else points  # 0 has no place on a log axis
            if not points:
                continue
            steps, vals = zip(*points)
            style = {"color": BASELINE_COLOR, "ls": "--"} if "baseline" in name else {"color": f"C{i % 10}"}
            ax.plot(steps, vals, marker=".", label=name, **style)
        if hlines and metric in hlines:
            value, text = hlines[metric]
            ax.axhline(value, **REFERENCE_STYLE, label=text)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_ylabel(label(metric), fontsize=8)
        if log:
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    legend_outside(axes[0, -1], list(axes.flat))
    fig.suptitle(title)
    return Figure(key, title, caption, png(fig))
