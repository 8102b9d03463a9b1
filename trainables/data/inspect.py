"""``scanner data inspect``: what a file holds (shapes, classes, splits, value ranges, targets), a full NaN/inf
scan, and a PNG event display with the views side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainables.config import DataConfig
from trainables.files import atomic_output, progress_bar
from trainables.data.schema import SPLITS, EventFile, infer_task, open_events, open_h5, read_labels
from trainables.errors import BadInput

SCAN_BLOCK = 256  # events per read in the full scan: big enough to amortise h5py calls, ~32 MiB at 128x128
DISPLAY_PER_CLASS = 2  # events per class in the event display


def scan_images(cfg: DataConfig, progress: bool = True) -> dict:
    """Read every event once: value range, mean, occupancy, and the events with NaN/inf pixels."""
    with open_h5(cfg.path) as f:
        ds = f[cfg.images]
        n = ds.shape[0]
        lo, hi, total, nonzero, bad = np.inf, -np.inf, 0.0, 0, []
        bar = progress_bar(n, "scan", progress)
        for start in range(0, n, SCAN_BLOCK):
            block = ds[start:start + SCAN_BLOCK].astype(np.float64)
            finite = np.isfinite(block).reshape(len(block), -1).all(axis=1)
            bad += [int(start + i) for i in np.flatnonzero(~finite)]
            good = block[finite]
            if good.size:
                lo, hi = min(lo, good.min()), max(hi, good.max())
                total += good.sum()
                nonzero += int(np.count_nonzero(good))
            bar.update(len(block))
        bar.close()
    pixels = n * int(np.prod(ds.shape[1:]))
    return {"min": lo, "max": hi, "mean": total / pixels, "occupancy": nonzero / pixels, "bad_events": bad}


def summary_lines(cfg: DataConfig, ev: EventFile, task: str, scan: dict) -> list[str]:
    lines = [f"file        {ev.path}",
             f"events      {ev.n_events}   images '{cfg.images}' {ev.image_shape} {ev.dtype}"
             f"   (C, H, W; pixel scale {ev.pixel_scale:.3g})",
             f"values      min {scan['min']:.4g}  max {scan['max']:.4g}  mean {scan['mean']:.4g}"
             f"  non-zero {100 * scan['occupancy']:.2f} %"]
    sizes = "  ".join(f"{s} {len(ev.split_indices[s])}" for s in SPLITS)
    lines.append(f"split       {sizes}   ({'from the split dataset' if _has(cfg, cfg.split) else 'hash of the index'})")
    if task == "classification":
        labels = read_labels(cfg)
        counts = np.bincount(labels, minlength=ev.n_classes)
        lines.append("classes     " + "  ".join(f"{name} {c}" for name, c in zip(ev.class_names, counts)))
    if _has(cfg, cfg.targets):
        lines += targets_lines(cfg)
    if ev.truth_names:
        lines.append("truth       " + ", ".join(ev.truth_names))
    lines.append(f"weights     {'yes' if ev.has_weights else 'none (every event weighs 1)'}")
    return lines


def _has(cfg: DataConfig, name: str) -> bool:
    with open_h5(cfg.path) as f:
        return name in f


def targets_lines(cfg: DataConfig) -> list[str]:
    with open_h5(cfg.path) as f:
        t = f[cfg.targets][:].astype(np.float64)
        names = [str(n.decode() if isinstance(n, bytes) else n) for n in f.attrs.get("target_names", [])]
        direction = f.attrs.get("direction")
    names = names if len(names) == t.shape[1] else [f"t{i}" for i in range(t.shape[1])]
    lines = [f"targets     '{cfg.targets}' {t.shape}" + (f"  direction={direction}" if direction is not None else "")]
    for i, name in enumerate(names):
        col = t[:, i]
        lines.append(f"  {name:<10}mean {col.mean():+.3f}  std {col.std():.3f}  "
                     f"min {col.min():+.3f}  max {col.max():+.3f}")
    if direction == "unit_vector":
        norm = np.linalg.norm(t, axis=1)
        lines.append(f"  |target|  min {norm.min():.4f}  max {norm.max():.4f}  (unit vectors: both ~1)")
    return lines


def display_events(cfg: DataConfig, ev: EventFile, task: str, out) -> Path:
    """A grid: a few events per class (rows), each view side by side, charge as colour."""
    # pyplot (~0.5 s) only when drawing
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after the backend is chosen: no display on a batch node

    rows = _display_rows(cfg, ev, task)
    with open_h5(cfg.path) as f:
        ds = f[cfg.images]
        pix = float(f.attrs.get("pixel_cm", 0)) or None
        views = [v.decode() if isinstance(v, bytes) else str(v) for v in f.attrs.get("views", [])]
        units = f.attrs.get("units", None)
        images = [ds[i].astype(np.float32) for i, _ in rows]
    c, h, w = ev.image_shape
    fig, axes = plt.subplots(len(rows), c, figsize=(3.0 * c + 1.0, 2.8 * len(rows)), squeeze=False)
    fig.subplots_adjust(left=0.1, right=0.86, bottom=0.04, top=0.97, hspace=0.45, wspace=0.25)  # tight_layout is slow
    extent = [0, w * pix, 0, h * pix] if pix else None
    unit = "cm" if pix else "pixels"
    for r, ((index, title), img) in enumerate(zip(rows, images)):
        lit = img[img > 0]
        vmax = float(np.percentile(lit, 99)) if lit.size else 1.0  # Bragg peaks would wash out the rest
        for v in range(c):
            ax = axes[r, v]
            im = ax.imshow(img[v], origin="lower", cmap="viridis", extent=extent, aspect="auto",
                           interpolation="nearest", vmin=0, vmax=vmax)
            name = views[v] if v < len(views) else f"view {v}"
            ax.set_title(f"event {index}  {title}  [{name}]", fontsize=8)
            ax.set_xlabel(f"wire ({unit})", fontsize=7)
            ax.tick_params(labelsize=6)
        axes[r, 0].set_ylabel(f"drift time ({unit})", fontsize=7)
        bar = fig.colorbar(im, ax=list(axes[r]), fraction=0.03, pad=0.02)  # one scale per event: both views
        bar.set_label(f"charge ({units})" if units else "charge", fontsize=7)
        bar.ax.tick_params(labelsize=6)
    with atomic_output(out) as tmp:
        fig.savefig(tmp, dpi=72, format="png")
    plt.close(fig)
    return Path(out)


def _display_rows(cfg: DataConfig, ev: EventFile, task: str) -> list[tuple[int, str]]:
    if task != "classification":
        return [(int(i), "") for i in range(min(4, ev.n_events))]
    labels = read_labels(cfg)
    rows = []
    for k, name in enumerate(ev.class_names):
        rows += [(int(i), name) for i in np.flatnonzero(labels == k)[:DISPLAY_PER_CLASS]]
    return rows[:16]  # a readable figure even for many classes


def inspect_file(path, display=None, progress: bool = True) -> list[str]:
    """The summary lines; writes the event display when ``display`` is a path. BadInput on NaN/inf pixels."""
    cfg = DataConfig(path=str(Path(path).resolve()))
    task = infer_task(cfg)
    ev = open_events(cfg, task)
    scan = scan_images(cfg, progress)
    if scan["bad_events"]:
        bad = scan["bad_events"]
        raise BadInput(f"{cfg.path}: dataset '{cfg.images}' has NaN/inf pixels in {len(bad)} events "
                       f"(first: {bad[:5]}); expected finite charge; fix: drop or zero those events")
    lines = summary_lines(cfg, ev, task, scan)
    if display:
        lines.append(f"display     {display_events(cfg, ev, task, display)}")
    return lines
