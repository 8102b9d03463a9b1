"""What ``scanner explain`` writes: one PNG per event (the event display of ``scanner data inspect``, then one row of
maps per attributed output, views side by side), ``explain.json`` (what each PNG shows, for the report),
``maps.npz`` (the numbers) and ``explain.html`` (one page with all of it).

    files = write_explanation(explanation, Path("explain"), run_id="3f2a...")   # -> the files written
"""

from __future__ import annotations

import html
import io
import json
from pathlib import Path

import numpy as np

from trainables.data.schema import open_h5
from trainables.explain import METHODS, EventMaps, Explanation, describe
from trainables.contract import Artifact
from trainables.files import atomic_output, atomic_write_text

INDEX_JSON = Artifact.EXPLAIN_INDEX
PAGE = "explain.html"
NUMBERS = "maps.npz"
DPI = 80  # a 2-view, 3-row event is ~600x700 px: readable in a browser and small enough to log a few dozen


def png_name(index: int) -> str:
    return f"event_{index}.png"


def _display_attrs(path: str) -> tuple[float | None, str | None]:
    """The file's pixel size in cm and charge units, as ``scanner data inspect`` labels its axes."""
    with open_h5(path) as f:
        pix = float(f.attrs.get("pixel_cm", 0)) or None
        units = f.attrs.get("units", None)
    return pix, (units.decode() if isinstance(units, bytes) else units)


def _title(ex: Explanation, ev: EventMaps) -> str:
    trial = ex.trial
    if trial.task == "classification":
        names = trial.class_names or []
        pred = int(np.argmax(ev.output))
        return (f"event {ev.index}: true {names[int(ev.truth)]}, predicted {names[pred]} "
                f"(score {ev.output[pred]:.2f})")
    values = ", ".join(f"{n} {p:+.2f} (true {t:+.2f})" for n, p, t in zip(trial.output_names, ev.output, ev.truth))
    return f"event {ev.index}: {values}"


def _map_label(ex: Explanation, ev: EventMaps, k: int) -> str:
    short = METHODS.tags(ex.options.method)["short"]
    if ex.trial.task == "classification":
        return f"{short} of score({(ex.trial.class_names or [])[ev.targets[k]]}), {ev.roles[k]}"
    return f"{short} of {ev.roles[k]}"


def draw_event(ex: Explanation, ev: EventMaps, pix: float | None, units: str | None) -> bytes:
    """Row 0: the event as ``scanner data inspect`` draws it. Rows 1..: each map over the event in grey, red/blue
    for positive/negative (one colour scale per event), transparent where the map is ~0."""
    # pyplot (~0.5 s) only when drawing
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after the backend is chosen: no display on a batch node

    c, h, w = ev.image.shape
    rows = 1 + len(ev.targets)
    height = 2.6 * rows + 0.6
    fig, axes = plt.subplots(rows, c, figsize=(3.0 * c + 1.0, height), squeeze=False)
    # fixed margins in inches (tight_layout is slow): the title above, the last row's axis label below
    fig.subplots_adjust(left=0.1, right=0.86, bottom=0.5 / height, top=1 - 0.65 / height, hspace=0.55, wspace=0.25)
    fig.suptitle(_title(ex, ev), fontsize=9)
    extent = [0, w * pix, 0, h * pix] if pix else None
    unit = "cm" if pix else "pixels"
    lit = ev.image[ev.image > 0]
    vmax = float(np.percentile(lit, 99)) if lit.size else 1.0  # Bragg peaks would wash out the rest
    limit = float(np.max(np.abs(ev.maps))) or 1.0
    views = ex.trial.views
    for v in range(c):
        im = axes[0, v].imshow(ev.image[v], origin="lower", cmap="viridis", extent=extent, aspect="auto",
                               interpolation="nearest", vmin=0, vmax=vmax)
        axes[0, v].set_title(f"event [{views[v]}]", fontsize=8)
    bar = fig.colorbar(im, ax=list(axes[0]), fraction=0.03, pad=0.02)
    bar.set_label(f"charge ({units})" if units else "charge", fontsize=7)
    bar.ax.tick_params(labelsize=6)
    for k in range(len(ev.targets)):
        for v in range(c):
            ax = axes[1 + k, v]
            ax.imshow(ev.image[v], origin="lower", cmap="Greys", extent=extent, aspect="auto",
                      interpolation="nearest", vmin=0, vmax=vmax)
            m = ev.maps[k, v]
            alpha = np.clip(np.abs(m) / limit, 0, 1) ** 0.5 * 0.9
            shown = ax.imshow(m, origin="lower", cmap="RdBu_r", extent=extent, aspect="auto", alpha=alpha,
                              interpolation="nearest", vmin=-limit, vmax=limit)
            ax.set_title(f"{_map_label(ex, ev, k)} [{views[v]}]", fontsize=7)
        bar = fig.colorbar(shown, ax=list(axes[1 + k]), fraction=0.03, pad=0.02)
        bar.set_label("attribution", fontsize=7)
        bar.ax.tick_params(labelsize=6)
    for ax in axes.flat:
        ax.set_xlabel(f"wire ({unit})", fontsize=7)
        ax.tick_params(labelsize=6)
    for r in range(rows):
        axes[r, 0].set_ylabel(f"drift time ({unit})", fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=DPI, format="png")
    plt.close(fig)
    return buf.getvalue()


def summary(ex: Explanation, run_id: str) -> dict:
    """``explain.json``: what was explained and how, and per event what its PNG shows."""
    trial = ex.trial
    events = []
    for ev in ex.events:
        entry = {"index": ev.index, "png": png_name(ev.index), "output": ev.output.tolist(),
                 "maps": [{"output": int(t), "role": r} for t, r in zip(ev.targets, ev.roles)]}
        if trial.task == "classification":
            entry |= {"true": (trial.class_names or [])[int(ev.truth)],
                      "predicted": (trial.class_names or [])[int(np.argmax(ev.output))]}
        else:
            entry |= {"true": ev.truth.tolist()}
        events.append(entry)
    return {"method": ex.options.method, "describe": describe(ex.options), "options": vars(ex.options),
            "run_id": run_id, "model": trial.name, "weights": trial.weights, "task": trial.task,
            "checkpoint": str(trial.checkpoint), "data_path": trial.data.path, "views": trial.views,
            "class_names": trial.class_names, "target_names": trial.target_names, "forwards": ex.forwards,
            "events": events}


def page(info: dict) -> str:
    rows = []
    for ev in info["events"]:
        caption = f"event {ev['index']}" + (f": true {ev['true']}, predicted {ev['predicted']}"
                                            if "predicted" in ev else "")
        rows.append(f"<figure><img src=\"{html.escape(ev['png'])}\" alt=\"{html.escape(caption)}\">"
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    head = (f"{info['method']} maps of {info['model']} ({info['weights']} weights)"
            + (f", run {info['run_id']}" if info["run_id"] else ""))
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>" + html.escape(head) + "</title><style>"
            "body{font-family:sans-serif;margin:2em;max-width:72em}figure{display:inline-block;margin:0 1em 1em 0}"
            "figcaption{font-size:.9em;color:#444}</style></head><body>"
            f"<h1>{html.escape(head)}</h1><p>Each map: {html.escape(info['describe'])}. Top row: the event as "
            f"stored ({html.escape(info['data_path'])}); below: one row per attributed output, views side by side."
            f"</p>{''.join(rows)}</body></html>\n")


def write_explanation(ex: Explanation, out: Path, run_id: str = "") -> list[Path]:
    """Write the PNGs, ``maps.npz``, ``explain.json`` and ``explain.html`` into ``out`` (each file atomically);
    files a previous ``scanner explain`` listed there and this one did not write are removed."""
    out = Path(out)
    stale = _previous_files(out)
    pix, units = _display_attrs(ex.trial.data.path)
    written = []
    for ev in ex.events:
        with atomic_output(out / png_name(ev.index)) as tmp:
            tmp.write_bytes(draw_event(ex, ev, pix, units))
        written.append(out / png_name(ev.index))
    with atomic_output(out / NUMBERS) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, index=np.array([ev.index for ev in ex.events]),
                            **{f"maps_{ev.index}": ev.maps for ev in ex.events},
                            **{f"outputs_{ev.index}": ev.output for ev in ex.events})
    written.append(out / NUMBERS)
    info = summary(ex, run_id)
    info["files"] = [p.name for p in written] + [PAGE, INDEX_JSON]
    written.append(atomic_write_text(out / PAGE, page(info)))
    written.append(atomic_write_text(out / INDEX_JSON, json.dumps(info, indent=1)))
    for name in stale - set(info["files"]):
        (out / name).unlink(missing_ok=True)
    return written


def _previous_files(out: Path) -> set[str]:
    try:
        listed = json.loads((out / INDEX_JSON).read_text()).get("files", [])
    except (OSError, ValueError):
        return set()
    return {Path(name).name for name in listed}  # names only: never a path outside `out`
