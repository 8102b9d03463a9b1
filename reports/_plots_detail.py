"""The leader's physics figures: confusion matrix, per-class efficiency and purity, score distributions, ROC curves,
the cut scan, efficiency and purity against energy, residuals and the resolution against energy."""

from __future__ import annotations

import math

import numpy as np

from trainables.physics import RESOLUTION_Q, weighted_quantile
from reports._plots import (REFERENCE_STYLE, SIZE, WIDE, Figure, legend_outside, panel_grid, png, subplots,
                            tick_texts)


def confusion_plot(counts: np.ndarray, names: list[str]) -> Figure:
    fig, axes = subplots(1, 2, figsize=WIDE)
    fig.subplots_adjust(left=0.1, right=0.98, top=0.9, bottom=0.2, wspace=0.35)
    rows = counts.sum(1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros_like(counts, dtype=float), where=rows > 0)
    integer = np.allclose(counts, np.round(counts))
    for ax, m, title, fmt in ((axes[0], counts, "counts" if integer else "weighted counts",
                               "{:.0f}" if integer else "{:.3g}"), (axes[1], norm, "row-normalised", "{:.2f}")):
        ax.imshow(m, cmap="Blues")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=8,
                    color="white" if v > 0.6 * m.max() else "black")
        ax.set_xticks(range(len(names)), names, rotation=30)
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"Confusion matrix ({title})")
    return Figure("confusion", "Confusion matrix", "Rows are the true class (confusion.json).", png(fig))


def per_class_plot(names, eff, eff_err, pur, pur_err, split: str = "validation") -> Figure:
    fig, ax = subplots(figsize=SIZE)
    fig.subplots_adjust(left=0.11, right=0.97, top=0.92, bottom=0.12)
    x = np.arange(len(names))
    ax.errorbar(x - 0.08, eff, yerr=eff_err, fmt="o", capsize=3, label="efficiency")
    ax.errorbar(x + 0.08, pur, yerr=pur_err, fmt="s", capsize=3, label="purity")
    ax.set_xticks(x, names)
    ax.set_ylabel("fraction")
    ax.set_xlabel("class")
    ax.legend()
    ax.set_title(f"Efficiency and purity per class, {split} split (±1σ Wilson)")
    return Figure("per_class", "Efficiency and purity per class", f"From the MLflow metrics ({split} split).",
                  png(fig))


def _plain_log_ticks(ax) -> None:
    """Log-axis tick labels as plain numbers (0.1, 0.5, 2, 10), never "6×10⁰"; more ticks on a short axis."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # matplotlib is imported lazily

    lo, hi = ax.get_ylim()
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 3.0
    subs = (1.0, 2.0, 5.0) if decades < 2.5 else (1.0,)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def score_distributions(pred) -> Figure:
    nc = len(pred.names)
    fig, axes = panel_grid(nc, 3, (3.9, 3.3), (1.3, 0.0), (0.75, 1.4, 0.27, 0.67), (0.35, 0.45))
    bins = np.linspace(0, 1, 41)
    w = pred.w
    for k, ax in enumerate(axes.flat):
        if k >= nc:
            ax.set_visible(False)
            continue
        for c, name in enumerate(pred.names):
            truth = pred.label == c
            if truth.any():
                ax.hist(pred.scores[truth, k], bins=bins, weights=w[truth], histtype="step", density=True,
                        label=f"true {name}")
        ax.set_xlabel(f"score({pred.names[k]})")
        ax.set_ylabel("events / (N · Δscore)", fontsize=8)  # density: each true class integrates to 1
        ax.set_yscale("log")
        _plain_log_ticks(ax)
    legend_outside(axes[0, -1], [axes[0, 0]])
    data = png(fig)  # tick labels exist once drawn: the meta lets a test read them as numbers
    meta = {"yticklabels": [tick_texts(ax) for ax in list(axes.flat)[:nc]]}
    return Figure("scores", "Score distributions per true class", "From predictions.h5 (weighted when it has "
                  "event weights).", data, meta)


def roc_plot(curves: list[tuple[str, dict]], split: str) -> Figure | None:
    """One-vs-rest ROC curve of each class, with its AUC in the legend."""
    if not curves:
        return None
    fig, ax = subplots(figsize=SIZE)
    fig.subplots_adjust(left=0.11, right=0.97, top=0.92, bottom=0.12)
    for name, roc in curves:
        auc = roc["auc"]
        ax.plot(roc["fpr"], roc["tpr"], label=f"{name} (AUC = {auc:.3f})" if auc is not None else name)
    ax.plot([0, 1], [0, 1], color="0.6", ls=":", label="chance (AUC = 0.5)")
    ax.set_xlabel("background acceptance (false-positive rate)")
    ax.set_ylabel("signal efficiency (true-positive rate)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"ROC curves, one class against the rest ({split} split)")
    return Figure("roc", "ROC curves", f"From predictions.h5 of the {split} split; each class's score against all "
                  "other classes.", png(fig), {"auc": {n: r["auc"] for n, r in curves}})


def cut_scan_plot(scan: dict, signal_name: str) -> Figure:
    fig, ax = subplots(figsize=SIZE)
    fig.subplots_adjust(left=0.11, right=0.97, top=0.92, bottom=0.12)
    for key in ("efficiency", "purity", "fom"):
        ax.plot(scan["cut"], scan[key], label=key if key != "fom" else "FOM = eff × pur")
    if np.isfinite(scan["fom"]).any():
        best = int(np.nanargmax(scan["fom"]))
        ax.axvline(scan["cut"][best], color="0.5", ls=":", label=f"max FOM at cut {scan['cut'][best]:.2f}")
    ax.set_xlabel(f"cut on score({signal_name})")
    ax.set_ylabel("fraction")
    ax.legend(fontsize=8)
    ax.set_title(f"Selection of {signal_name} against the score cut")
    return Figure("cut_scan", "Efficiency, purity, FOM against the cut", f"Signal = {signal_name}.", png(fig))


def energy_plot(binned: dict, names: list[str], shown: list[int], energy_name: str, note: str = "") -> Figure:
    """Efficiency and purity of the classes ``shown`` (indices into ``names``) in bins of a true energy."""
    fig, axes = subplots(1, 2, figsize=WIDE, sharey=True)
    fig.subplots_adjust(left=0.08, right=0.86, top=0.9, bottom=0.13, wspace=0.08)
    edges = binned["edges"]
    mid, half = (edges[1:] + edges[:-1]) / 2, (edges[1:] - edges[:-1]) / 2
    for ax, key, title in ((axes[0], "eff", "efficiency"), (axes[1], "pur", "purity")):
        for i, c in enumerate(shown):
            dodge = (i - (len(shown) - 1) / 2) * 0.15 * half  # side by side in a bin, not on top of each other
            ax.errorbar(mid + dodge, binned[key][c], xerr=half / len(shown), yerr=binned[key + "_err"][c],
                        fmt="o", ms=3, label=names[c], color=f"C{c % 10}")
        ax.set_xlabel(f"true {energy_name} [GeV]")
        ax.set_title(f"{title} against true {energy_name}", fontsize=10)
        ax.grid(alpha=0.3)
    legend_outside(axes[1], [axes[0]])
    axes[0].set_ylabel("fraction (±1σ)")
    return Figure(f"vs_{energy_name}", f"Efficiency and purity against {energy_name}",
                  "Quantile bins" + (f"; {note}" if note else "."), png(fig), {"classes": [names[c] for c in shown]})


def residual_plot(res: dict, angle: np.ndarray | None, weights: np.ndarray | None = None) -> Figure:
    n = len(res) + (angle is not None)
    fig, axes = subplots(1, n, figsize=(3.7 * n, 3.6), squeeze=False)
    fig.subplots_adjust(left=0.7 / (3.7 * n), right=0.98, top=0.9, bottom=0.17, wspace=0.35)
    axes = list(axes.flat)
    if angle is not None:
        ax = axes.pop(0)
        ax.hist(angle, bins=50, weights=weights, histtype="step")
        ax.axvline(weighted_quantile(angle, RESOLUTION_Q, weights), color="C3", ls=":", label="68 %")
        ax.set_xlabel("opening angle [deg]")
        ax.set_ylabel("events")
        ax.legend(fontsize=7)
    for ax, (name, r) in zip(axes, res.items()):
        ax.hist(r, bins=50, weights=weights, histtype="step")
        ax.set_xlabel(f"{name}: pred − true")
        ax.set_ylabel("events")
    return Figure("residuals", "Residual distributions", "From predictions.h5 (weighted when it has event weights).",
                  png(fig))


def resolution_plot(binned: dict, what: str, energy_name: str, reference: float | None = None) -> Figure:
    fig, ax = subplots(figsize=SIZE)
    fig.subplots_adjust(left=0.11, right=0.97, top=0.92, bottom=0.12)
    edges = binned["edges"]
    mid, half = (edges[1:] + edges[:-1]) / 2, (edges[1:] - edges[:-1]) / 2
    ax.errorbar(mid, binned["q68"], xerr=half, yerr=binned["err"], fmt="o", label="best trial")
    if reference is not None:
        ax.axhline(reference, **REFERENCE_STYLE, label=f"reference predictor, all energies ({reference:.3g})")
    ax.legend(fontsize=8)
    ax.set_xlabel(f"true {energy_name} [GeV]")
    ax.set_ylabel(f"68 % {what}")
    ax.set_title(f"Resolution against true {energy_name} (±1σ bootstrap)")
    return Figure("resolution_vs_energy", "Resolution against energy", "Quantile bins; weighted when predictions.h5 "
                  "has event weights" + ("; dashed: the reference predictor." if reference is not None else "."),
                  png(fig), {"reference": reference})
