"""What a report reads beyond the run table: metric histories (learning curves, telemetry) in bulk, artifacts of the
finalists (``confusion.json``, ``predictions.h5`` per split, of the trial and of its variants), and the report
logged back to the parent run. Everything a section draws is fetched here, before any plot is made, so the
report's phases (fetch, rank, plots, write) can be timed apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reports._fetch import SweepRuns
from reports._mlflow_compat import bulk_histories, open_client
from trainables.contract import Tag

REPORT_NOTE_MARK = "**Report**:"  # the line of the parent's description that a new report replaces


def fetch_histories(tracking_uri: str, run_ids: list[str], keys: list[str]) -> dict[str, dict[str, list]]:
    """{run_id: {key: [(step, value), ...]}} for the learning-curve and telemetry plots; absent keys are left out.

    One store call per metric for all runs (a sqlite store answers each in one session)."""
    out: dict[str, dict[str, list]] = {rid: {} for rid in run_ids}
    if not run_ids:
        return out
    client = open_client(tracking_uri)
    for key in keys:
        for rid, points in bulk_histories(client, run_ids, key).items():
            if points and rid in out:
                out[rid][key] = points
    return out


def list_artifacts(client, run_id: str, folder: str | None) -> set[str]:
    try:
        return {f.path for f in client.list_artifacts(run_id, folder)}
    except Exception:  # noqa: BLE001  a store that cannot list this run's artifacts: the figures needing them are skipped
        return set()


def fetch_artifact(tracking_uri: str, run_id: str, split: str, filename: str, dst: Path, client=None) -> Path | None:
    """``<split>/<filename>`` of a run (falling back to the run's root), downloaded into ``dst``; None if absent."""
    client = client or open_client(tracking_uri)
    for path in (f"{split}/{filename}", filename):
        folder = str(Path(path).parent) if "/" in path else None
        if path in list_artifacts(client, run_id, folder):
            dst.mkdir(parents=True, exist_ok=True)
            return Path(client.download_artifacts(run_id, path, str(dst)))
    return None


def read_confusion(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return {"class_names": [str(n) for n in data.get("class_names", [])], "counts": data["counts"]}


@dataclass
class Downloads:
    """Artifacts fetched for the sections: {(run_id, split): path}. Split ``test``, ``val`` or ``syst/<label>``."""

    folder: Path
    files: dict[tuple[str, str, str], Path] = field(default_factory=dict)  # (run_id, split, filename) -> path

    def get(self, run_id: str, split: str, filename: str) -> Path | None:
        return self.files.get((run_id, split, filename))


def download(tracking_uri: str, wanted: list[tuple[str, str, str]], folder: Path) -> Downloads:
    """Each (run_id, split, filename) that exists, into ``folder``; one artifact listing per run and folder."""
    out = Downloads(folder)
    if not wanted:
        return out
    client = open_client(tracking_uri)
    listed: dict[tuple[str, str], set[str]] = {}
    for run_id, split, filename in wanted:
        if (run_id, split) not in listed:
            listed[(run_id, split)] = list_artifacts(client, run_id, split)
        path = f"{split}/{filename}"
        if path in listed[(run_id, split)]:
            dst = folder / run_id / split.replace("/", "_")
            dst.mkdir(parents=True, exist_ok=True)
            out.files[(run_id, split, filename)] = Path(client.download_artifacts(run_id, path, str(dst)))
    return out


def download_folder(tracking_uri: str, run_id: str, artifact_dir: str, folder: Path) -> Path | None:
    """A run's whole artifact folder (e.g. ``explain/``) into ``folder``, or None when the run has none."""
    client = open_client(tracking_uri)
    if not list_artifacts(client, run_id, artifact_dir):
        return None
    dst = folder / run_id
    dst.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, artifact_dir, str(dst)))


def log_report_to_parent(sweep: SweepRuns, out_dir: Path, files: list[Path]) -> None:
    """The report's own files as artifacts of the parent run (``report/``), and its description pointing at them.

    Only ``files`` (what the report wrote), never the rest of ``out_dir``: with ``--out .`` that is a project."""
    if sweep.parent_run_id is None:
        return
    client = open_client(sweep.tracking_uri)
    for path in files:
        rel = path.relative_to(out_dir).parent
        client.log_artifact(sweep.parent_run_id, str(path), "report" if rel == Path(".") else f"report/{rel}")
    index = out_dir / "index.html"
    line = (f"{REPORT_NOTE_MARK} [{index}](file://{index}) "
            "(also the `report/` artifacts of this run: index.html, report.md, ranking.csv).")
    old = client.get_run(sweep.parent_run_id).data.tags.get(Tag.NOTE, "")
    kept = [ln for ln in old.splitlines() if not ln.startswith(REPORT_NOTE_MARK)]  # the scanner's own text stays
    client.set_tag(sweep.parent_run_id, Tag.NOTE, "\n".join(kept + [line]).strip())


