"""The "best trial in detail" blocks of ``scanner explain``'s maps: a few events per class from a run's
``explain/`` artifact folder (explain.json + one PNG per event), as paragraphs and ``Figure``s.

    blocks = explain_blocks(Path(tmp) / "explain")      # [] when the folder holds no explain.json
"""

from __future__ import annotations

import json
from pathlib import Path

from reports._plots import Figure
from trainables.contract import Artifact

INDEX_JSON = Artifact.EXPLAIN_INDEX
PER_CLASS = 2  # events per true class: enough to see a pattern, few enough for one page


def explain_blocks(folder: Path, per_class: int = PER_CLASS) -> list:
    """Paragraph + figures of up to ``per_class`` events per true class, grouped by class (regression: the first
    ``2 * per_class`` events). Events whose PNG is missing are named, not drawn."""
    folder = Path(folder)
    try:
        info = json.loads((folder / INDEX_JSON).read_text())
    except (OSError, ValueError):
        return []
    chosen = _chosen(info.get("events", []), info.get("task"), per_class)
    if not chosen:
        return []
    blocks: list = [_intro(info, len(chosen))]
    missing = []
    for ev in chosen:
        png = folder / Path(str(ev.get("png", ""))).name  # a name inside the folder, never a path elsewhere
        if not png.is_file():
            missing.append(str(ev.get("index")))
            continue
        blocks.append(Figure(f"explain_{ev['index']}", _title(ev), _caption(info), png.read_bytes()))
    if missing:
        blocks.append(f"Maps of events {', '.join(missing)} are listed in {INDEX_JSON} but their PNGs are missing.")
    return blocks


def _chosen(events: list[dict], task: str | None, per_class: int) -> list[dict]:
    if task != "classification":
        return events[:2 * per_class]
    taken: dict[str, int] = {}
    chosen = []
    for ev in events:
        label = str(ev.get("true"))
        if taken.get(label, 0) < per_class:
            taken[label] = taken.get(label, 0) + 1
            chosen.append(ev)
    return sorted(chosen, key=lambda ev: (str(ev.get("true")), ev.get("index", 0)))


def _intro(info: dict, shown: int) -> str:
    total = len(info.get("events", []))
    return (f"Attribution maps ({info.get('method')}, `scanner explain`) of {shown} of the {total} explained "
            f"validation events: each map shows {info.get('describe', 'the attribution')}. Top row of each figure: "
            "the event; below: the map of each attributed output over the event, views side by side.")


def _title(ev: dict) -> str:
    if "predicted" in ev:
        return f"Event {ev['index']}: true {ev['true']}, predicted {ev['predicted']}"
    return f"Event {ev['index']}"


def _caption(info: dict) -> str:
    return (f"{info.get('model')} ({info.get('weights')} weights); from the run's explain/ artifacts "
            f"(explain.json, maps.npz).")
