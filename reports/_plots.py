"""matplotlib (Agg) figures of a report, returned as PNG bytes. Axes carry physics units (degrees, GeV, events/s, GB).

Every function takes plain data and returns a ``Figure`` or None when there is nothing to draw.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

SIZE = (7.0, 4.5)  # inches: readable on a laptop and on a projector
WIDE = (11.0, 4.5)  # two panels side by side
DPI = 110  # sharp enough for slides, small enough to embed a few dozen in one HTML file
BASELINE_COLOR = "0.35"

_UNITS = {
    "resolution68_deg": "deg",
    "samples_per_s": "events/s",
    "epoch_s": "s",
    "rss_gb": "GB",
    "gpu_mem_peak_gb": "GB",
    "gpu_mem_allocated_gb": "GB",
    "gpu_mem_reserved_gb": "GB",
    "cpu_pct": "%",
    "gpu_util_pct": "%",
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
    meta: dict = field(default_factory=dict)  # layout facts the tests check (e.g. the plot area's share)


def label(metric: str) -> str:
    """An axis label with the unit: ``perf/samples_per_s`` -> ``perf/samples_per_s [events/s]``."""
    leaf = metric.split("/")[-1]
    unit = _UNITS.get(leaf) or ("deg" if leaf.endswith("_deg") else "")
    return f"{metric} [{unit}]" if unit else metric


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI, pil_kwargs={"compress_level": 1})  # zlib's fastest: -15 % time, +15 % size
    plt.close(fig)
    return buf.getvalue()


def ranking_plot(names, values, errs, baseline_flags, objective, tie_band) -> Figure | None:
    """The objective with its 1-sigma error for every ranked trial; the band is the leader's tie window.

    ``names`` are short trial ids (``t03``): the full run names live in the table, and would squeeze the plot."""
    if not names:
        return None
    plt = _pyplot()
    n = min(len(names), 60)  # a long sweep: the top 60 tell the story; the table has the rest
    fig, ax = plt.subplots(figsize=(SIZE[0], max(3.0, 0.26 * n + 1.2)))
    shown = slice(0, n)
    y = np.arange(n)
    colors = [BASELINE_COLOR if b else "C0" for b in baseline_flags[shown]]
    ax.errorbar(values[shown], y, xerr=[e or 0 for e in errs[shown]], fmt="none", ecolor="0.5", capsize=2)
    ax.scatter(values[shown], y, c=colors, zorder=3)
    if tie_band is not None:
        ax.axvspan(*tie_band, color="C2", alpha=0.15, label="leader ± 1σ (tie window)")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(y, names[shown], fontsize=8)
    ax.set_ylim(n - 0.5, -0.5)  # best on top
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel(label(objective) + " ± 1σ")
    ax.set_ylabel("trial (rank order)")
    ax.set_title("Trials ranked by the objective (baseline in grey)")
    fig.tight_layout()
    drawn = ax.get_tightbbox(fig.canvas.get_renderer())  # the axes with its tick labels, in pixels
    meta = {"plot_width_frac": float(ax.get_position().width), "yticklabels": list(names[shown]),
            "labels_inside": bool(drawn.x0 >= 0 and drawn.x1 <= fig.bbox.width)}
    return Figure("ranking", "Ranking", f"{objective} ± 1σ per trial, best first; trial ids as in the table.",
                  _png(fig), meta)


def pareto_plot(front, x_index: int = 1) -> Figure | None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=SIZE)
    xs = [v[x_index] for v in front.values]
    ys = [v[0] for v in front.values]
    ax.scatter(xs, ys, c="0.6", label="trials")
    fx = [front.values[i][x_index] for i in front.front]
    fy = [front.values[i][0] for i in front.front]
    order = np.argsort(fx)
    ax.plot(np.array(fx)[order], np.array(fy)[order], "o-", color="C3", label="Pareto front")
    for i in front.front:
        ax.annotate(front.rows[i].trial.run_name.split()[0], (front.values[i][x_index], front.values[i][0]),
                    fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(label(front.metrics[x_index]) + f" ({front.modes[x_index]})")
    ax.set_ylabel(label(front.metrics[0]) + f" ({front.modes[0]})")
    ax.legend(fontsize=8)
    ax.set_title("Pareto front")
    return Figure(f"pareto_{x_index}", "Pareto front", "Non-dominated trials over all objectives.", _png(fig))


def importance_plot(importances: dict[str, float]) -> Figure | None:
    if not importances:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=SIZE)
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names], color="C0")
    ax.set_xlabel("importance (Optuna PED-ANOVA, sums to 1)")
    ax.set_title("Parameter importance")
    return Figure("importance", "Parameter importance", "From a study rebuilt from the MLflow runs.", _png(fig))


def objective_vs_params(params: dict[str, list], objective: list[float], metric: str, log=()) -> Figure | None:
    """One panel per varied param; a None value (the param was inactive in that trial) is not drawn."""
    active = {p: [(v, o) for v, o in zip(vals, objective) if v is not None] for p, vals in params.items()}
    names = [p for p in params if len({v for v, _ in active[p]}) > 1]
    if not names or not objective:
        return None
    plt = _pyplot()
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    # One objective axis for all panels: a panel of 2 active trials must not look like a big effect.
    fig, axes = plt.subplots(rows, cols, figsize=(3.9 * cols, 3.3 * rows), squeeze=False, sharey=True)
    for ax, p in zip(axes.flat, names):
        values, obj = zip(*active[p])
        _scatter_param(ax, list(values), list(obj), p in log)
        inactive = len(params[p]) - len(values)
        ax.set_xlabel(p + (f"  ({len(values)} trials where active)" if inactive else ""), fontsize=9)
        ax.set_ylabel(label(metric), fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    return Figure("objective_vs_params", "Objective against each varied parameter",
                  "One point per completed trial (conditional parameters: the trials where they were active).",
                  _png(fig))


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
        ax.scatter(x, objective, s=14)
        if x.min() > 0 and (log or x.max() / x.min() > 100):  # log-sampled in the space, or spanning decades
            ax.set_xscale("log")
        return
    cats = sorted(set(values), key=lambda v: (x is None, float(v) if x is not None else 0.0, v))
    pos = [cats.index(v) for v in values]
    jitter = np.random.default_rng(0).uniform(-0.12, 0.12, len(pos))
    ax.scatter(np.array(pos) + jitter, objective, s=14)
    ax.set_xticks(range(len(cats)), [_tick(c) for c in cats], rotation=30, fontsize=7)
    ax.set_xlim(-0.5, len(cats) - 0.5)


def confusion_plot(counts: np.ndarray, names: list[str]) -> Figure:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=WIDE)
    rows = counts.sum(1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros_like(counts, dtype=float), where=rows > 0)
    for ax, m, title, fmt in ((axes[0], counts, "counts", "{:.0f}"), (axes[1], norm, "row-normalised", "{:.2f}")):
        ax.imshow(m, cmap="Blues")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=8,
                    color="white" if v > 0.6 * m.max() else "black")
        ax.set_xticks(range(len(names)), names, rotation=30)
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"Confusion matrix ({title})")
    return Figure("confusion", "Confusion matrix", "Rows are the true class (confusion.json).", _png(fig))


def per_class_plot(names, eff, eff_err, pur, pur_err, split: str = "validation") -> Figure:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=SIZE)
    x = np.arange(len(names))
    ax.errorbar(x - 0.08, eff, yerr=eff_err, fmt="o", capsize=3, label="efficiency")
    ax.errorbar(x + 0.08, pur, yerr=pur_err, fmt="s", capsize=3, label="purity")
    ax.set_xticks(x, names)
    ax.set_ylabel("fraction")
    ax.set_xlabel("class")
    ax.legend()
    ax.set_title(f"Efficiency and purity per class, {split} split (±1σ Wilson)")
    return Figure("per_class", "Efficiency and purity per class", f"From the MLflow metrics ({split} split).",
                  _png(fig))


def score_distributions(pred) -> Figure:
    plt = _pyplot()
    nc = len(pred.names)
    cols = min(nc, 3)
    rows = -(-nc // cols)
    from matplotlib.ticker import LogFormatter

    fig, axes = plt.subplots(rows, cols, figsize=(3.9 * cols, 3.3 * rows), squeeze=False)
    bins = np.linspace(0, 1, 41)
    for k, ax in enumerate(axes.flat):
        if k >= nc:
            ax.set_visible(False)
            continue
        for c, name in enumerate(pred.names):
            ax.hist(pred.scores[pred.label == c, k], bins=bins, histtype="step", density=True, label=f"true {name}")
        ax.set_xlabel(f"score({pred.names[k]})")
        ax.set_ylabel("events / (N · Δscore)", fontsize=8)  # density: each true class integrates to 1
        ax.set_yscale("log")
        # Plain numbers (0.3, 6) on a sub-decade axis, not "6×10⁰".
        ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.4)))
    _legend_outside(axes[0, -1], [axes[0, 0]])
    return Figure("scores", "Score distributions per true class", "From predictions.h5.", _png(fig))


def cut_scan_plot(scan: dict, signal_name: str) -> Figure:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=SIZE)
    for key in ("efficiency", "purity", "fom"):
        ax.plot(scan["cut"], scan[key], label=key if key != "fom" else "FOM = eff × pur")
    best = int(np.nanargmax(scan["fom"]))
    ax.axvline(scan["cut"][best], color="0.5", ls=":", label=f"max FOM at cut {scan['cut'][best]:.2f}")
    ax.set_xlabel(f"cut on score({signal_name})")
    ax.set_ylabel("fraction")
    ax.legend(fontsize=8)
    ax.set_title(f"Selection of {signal_name} against the score cut")
    return Figure("cut_scan", "Efficiency, purity, FOM against the cut", f"Signal = {signal_name}.", _png(fig))


def energy_plot(binned: dict, names: list[str], energy_name: str) -> Figure:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=WIDE, sharey=True)
    edges = binned["edges"]
    mid, half = (edges[1:] + edges[:-1]) / 2, (edges[1:] - edges[:-1]) / 2
    for ax, key, title in ((axes[0], "eff", "efficiency"), (axes[1], "pur", "purity")):
        for c, name in enumerate(names):
            dodge = (c - (len(names) - 1) / 2) * 0.15 * half  # side by side in a bin, not on top of each other
            ax.errorbar(mid + dodge, binned[key][c], xerr=half / len(names), yerr=binned[key + "_err"][c],
                        fmt="o", ms=3, label=name)
        ax.set_xlabel(f"true {energy_name} [GeV]")
        ax.set_title(f"{title} against true {energy_name}")
        ax.grid(alpha=0.3)
    _legend_outside(axes[1], [axes[0]])
    axes[0].set_ylabel("fraction (±1σ)")
    return Figure(f"vs_{energy_name}", f"Efficiency and purity against {energy_name}", "Quantile bins.", _png(fig))


def residual_plot(res: dict, angle: np.ndarray | None) -> Figure:
    plt = _pyplot()
    n = len(res) + (angle is not None)
    fig, axes = plt.subplots(1, n, figsize=(3.7 * n, 3.6), squeeze=False)
    axes = list(axes.flat)
    if angle is not None:
        ax = axes.pop(0)
        ax.hist(angle, bins=50, histtype="step")
        ax.axvline(np.quantile(angle, 0.68), color="C3", ls=":", label="68 %")
        ax.set_xlabel("opening angle [deg]")
        ax.set_ylabel("events")
        ax.legend(fontsize=7)
    for ax, (name, r) in zip(axes, res.items()):
        ax.hist(r, bins=50, histtype="step")
        ax.set_xlabel(f"{name}: pred − true")
        ax.set_ylabel("events")
    return Figure("residuals", "Residual distributions", "From predictions.h5.", _png(fig))


def resolution_plot(binned: dict, what: str, energy_name: str) -> Figure:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=SIZE)
    edges = binned["edges"]
    mid, half = (edges[1:] + edges[:-1]) / 2, (edges[1:] - edges[:-1]) / 2
    ax.errorbar(mid, binned["q68"], xerr=half, yerr=binned["err"], fmt="o")
    ax.set_xlabel(f"true {energy_name} [GeV]")
    ax.set_ylabel(f"68 % {what}")
    ax.set_title(f"Resolution against true {energy_name} (±1σ bootstrap)")
    return Figure("resolution_vs_energy", "Resolution against energy", "Quantile bins.", _png(fig))


def _legend_outside(ax, axes: list) -> None:
    """One legend for all panels, right of ``ax`` (outside the data): in a panel it hides the curves."""
    seen: dict = {}
    for a in axes:
        for h, lab in zip(*a.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    if seen:
        ax.legend(list(seen.values()), list(seen), fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                  borderaxespad=0)


def curves_plot(key: str, title: str, panels: list[tuple[str, dict]], caption: str) -> Figure | None:
    """``panels``: (metric, {trial label: [(step, value), ...]}) drawn as a grid of up to 4 panels."""
    panels = [(m, series) for m, series in panels if series]
    if not panels:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    cols = min(2, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.6 * cols, 3.6 * rows), squeeze=False)
    for ax, (metric, series) in zip(axes.flat, panels):
        log = metric.endswith("lr")  # learning rates span decades
        for i, (name, points) in enumerate(series.items()):
            points = [(st, v) for st, v in points if v > 0] if log else points  # 0 has no place on a log axis
            if not points:
                continue
            steps, vals = zip(*points)
            style = {"color": BASELINE_COLOR, "ls": "--"} if "baseline" in name else {"color": f"C{i % 10}"}
            ax.plot(steps, vals, marker=".", label=name, **style)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_ylabel(label(metric), fontsize=8)
        if log:
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    _legend_outside(axes[0, -1], list(axes.flat))
    fig.suptitle(title)
    return Figure(key, title, caption, _png(fig))
