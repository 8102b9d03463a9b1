"""The finalists' figures: their difference from the leader (is the lead real?) and their shifts on systematic
variants of the detector."""

from __future__ import annotations

import numpy as np

from reports._plots import SIZE, Figure, label, legend_outside, panel_grid, png, subplots


def lead_plot(labels: list[str], better_by: list[float], errs: list[float], metric: str) -> Figure | None:
    """How much better the leader is than each finalist (positive: leader better), ± the combined 1σ."""
    if not labels:
        return None
    height = max(2.6, 0.4 * len(labels) + 1.3)
    fig, ax = subplots(figsize=(SIZE[0], height))
    fig.subplots_adjust(left=1.2 / SIZE[0], right=0.97, top=1 - 0.45 / height, bottom=0.75 / height)
    y = np.arange(len(labels))
    ax.errorbar(better_by, y, xerr=errs, fmt="o", capsize=3, color="C0")
    ax.axvline(0.0, color="0.4", lw=1)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set_xlabel(f"leader − finalist, {label(metric)} (positive: the leader is better) ± 1σ")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("The leader against each finalist (test split)")
    return Figure("lead", "Is the lead real?", "An error bar that crosses 0: that finalist cannot be told apart from "
                  "the leader.", png(fig))


def systematics_plot(figures: list[str], finalists: list[str], variants: list[str],
                     shifts: dict[tuple[str, str, str], tuple[float, float]]) -> Figure | None:
    """One panel per physics figure: each finalist's shift (variant − nominal) ± 1σ, one colour per variant.

    ``shifts[(figure, finalist, variant)] = (shift, error)``."""
    figures = [f for f in figures if any(k[0] == f for k in shifts)]
    if not figures:
        return None
    fig, axes = panel_grid(len(figures), 3, (3.9, 3.1), (1.4, 0.4), (0.75, 1.5, 0.45, 0.6), (0.4, 0.55))
    x = np.arange(len(finalists))
    for ax, name in zip(axes.flat, figures):
        for k, variant in enumerate(variants):
            points = [(i, *shifts[(name, f, variant)]) for i, f in enumerate(finalists) if (name, f, variant) in shifts]
            if points:
                i, s, e = (np.array(v, dtype=float) for v in zip(*points))
                dodge = (k - (len(variants) - 1) / 2) * 0.12
                ax.errorbar(i + dodge, s, yerr=e, fmt="o", ms=4, capsize=2, color=f"C{k % 10}", label=variant)
        ax.axhline(0.0, color="0.5", lw=1)
        ax.set_xticks(x, finalists, fontsize=7, rotation=30)
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("shift (variant − nominal)", fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(figures):]:
        ax.set_visible(False)
    legend_outside(axes[0, -1], list(axes.flat))
    fig.suptitle("Systematics: shift of each figure on each detector variant")
    return Figure("systematics", "Systematics", "Each finalist's shift against its nominal test figure, ±1σ (the "
                  "two statistical errors in quadrature).", png(fig))
