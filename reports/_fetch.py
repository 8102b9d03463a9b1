"""Read one sweep from MLflow: the parent run, every trial run, their latest metrics. The one place that knows the
MLflow layout (DESIGN.md, "MLflow layout"), so a change in what the scanner writes is adapted here only.

One ``search_runs`` (paged) ranks a sweep: the latest value of ``best/<metric>`` is the value at the best epoch,
the latest value of ``<metric>`` the value at the last epoch.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from reports._space import SpaceInfo, fetch_space_info
from reports.errors import ReportInputError
from trainables.contract import PARENT_ROLE, Tag

PROBE_TIMEOUT_S = 3.0  # a remote store that does not answer within this is reported as unreachable (spec: ~5 s)
REPORT_NOTE_MARK = "**Report**:"  # the line of the parent's description that a new report replaces
PAGE_SIZE = 1000  # MLflow's maximum page for search_runs; a 1,000-trial sweep is one page


@dataclass
class Trial:
    """One child run: what the scanner wrote, as plain Python values."""

    run_id: str
    run_name: str
    trial_id: str
    baseline: bool
    status: str  # completed | stopped_early | failed | running
    failure: str
    mlflow_status: str  # RUNNING | FINISHED | FAILED | KILLED
    epochs: int | None  # latest step of the epoch metrics (step = epoch, 1-based)
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    varied: list[str] = field(default_factory=list)
    inactive: set[str] = field(default_factory=set)  # conditional params whose `when` is false in this trial

    def param(self, name: str) -> str | None:
        """The logged value of a param; None when absent or inactive (its logged value is only the default)."""
        return None if name in self.inactive else self.params.get(name)

    def value(self, name: str, at: str = "best") -> float | None:
        """``name`` (e.g. ``val/accuracy``) at the best epoch (``best/`` copy, else the last value) or the last."""
        if at == "best" and f"best/{name}" in self.metrics:
            return self.metrics[f"best/{name}"]
        return self.metrics.get(name)

    def test_value(self, name: str) -> float | None:
        """The held-out test figure logged once after the sweep (``val/x`` -> ``test/x``)."""
        if not name.startswith("val/"):
            return None
        return self.metrics.get("test/" + name[len("val/"):])


@dataclass
class SweepRuns:
    """The fetched table of a sweep: its settings (from the parent run) and one ``Trial`` per child run."""

    name: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str | None
    parent_status: str  # scan.status of the parent: running | finished | interrupted | unknown
    objective: str
    mode: str  # max | min
    also: list[dict[str, str]]
    task: str  # classification | regression
    class_names: list[str]
    target_names: list[str]
    trials: list[Trial]
    notes: list[str] = field(default_factory=list)  # things the reader should know (fallbacks taken)
    space: SpaceInfo | None = None  # from the parent's space.yaml; None when the run has none

    @property
    def running(self) -> bool:
        return self.parent_status == "running" or any(t.mlflow_status == "RUNNING" for t in self.trials)

    def run_link(self, run_id: str) -> str:
        """The run's page in the MLflow UI; for a local store, the UI that ``scanner ui`` serves."""
        base = self.tracking_uri.rstrip("/") if self.tracking_uri.startswith("http") else "http://127.0.0.1:5000"
        return f"{base}/#/experiments/{self.experiment_id}/runs/{run_id}"


def probe_store(tracking_uri: str) -> None:
    """Fail fast, in one line, on a server that is down: MLflow itself would retry for minutes.

    A socket probe rather than MLFLOW_HTTP_REQUEST_MAX_RETRIES=0: the report may run inside ``scanner run``, whose
    own logging must keep MLflow's retries.
    """
    if not tracking_uri.startswith(("http://", "https://")):
        return
    url = urlparse(tracking_uri)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise ReportInputError(
            f"MLflow server {tracking_uri} is unreachable ({exc.strerror or exc}); start it or pass --tracking-uri"
        ) from None


def client_for(tracking_uri: str):
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a report prints one line, not bars
    from mlflow.tracking import MlflowClient

    probe_store(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)


def load_sweep(sweep_name: str, tracking_uri: str, instance: str | None = None) -> SweepRuns:
    """Every trial run of the sweep ``sweep_name`` (= experiment name) in the store at ``tracking_uri``: of its
    latest instance (the latest ``scanner run`` of that name), or of ``instance``."""
    client = client_for(tracking_uri)
    experiment = client.get_experiment_by_name(sweep_name)
    if experiment is None:
        known = sorted(e.name for e in client.search_experiments() if e.name != "Default")
        raise ReportInputError(
            f"no sweep named '{sweep_name}' in {tracking_uri}; known sweeps: {', '.join(known) or '(none)'}"
        )
    runs = _search_all(client, experiment.experiment_id)
    parent = _find_parent(runs, sweep_name, instance)
    children = [r for r in runs if parent is None or r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    children = [r for r in children if r is not parent]
    trials = [_trial_from_run(r) for r in children]
    sweep = _sweep_settings(sweep_name, tracking_uri, experiment.experiment_id, parent, trials)
    sweep.space = fetch_space_info(client, sweep.parent_run_id)
    if sweep.space is not None:
        for t in trials:
            t.inactive = sweep.space.inactive(t.params)
    return sweep


def _search_all(client, experiment_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=PAGE_SIZE, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _find_parent(runs: list, sweep_name: str, instance: str | None):
    """The parent of ``instance``, else the latest parent: each ``scanner run`` of a name has its own."""
    tagged = sorted((r for r in runs if r.data.tags.get(Tag.ROLE) == PARENT_ROLE),
                    key=lambda r: r.info.start_time or 0, reverse=True)
    if instance is not None:
        tagged = [r for r in tagged if r.data.tags.get(Tag.INSTANCE) == instance] or tagged
    if tagged:
        return tagged[0]
    named = [r for r in runs if r.info.run_name == sweep_name and "mlflow.parentRunId" not in r.data.tags]
    return named[0] if named else None


def _trial_from_run(run) -> Trial:
    tags = run.data.tags
    steps = {m.key: m.step for m in run.data._metric_objs}  # the latest step per metric = epochs run
    epochs = max((steps[k] for k in ("val/loss", "train/loss") if k in steps), default=None)
    status = tags.get("scan.status") or _status_from_mlflow(run.info.status)
    return Trial(
        run_id=run.info.run_id,
        run_name=run.info.run_name or run.info.run_id[:8],
        trial_id=tags.get("scan.trial_id", ""),
        baseline=tags.get("scan.baseline", "false").lower() == "true",
        status="running" if run.info.status == "RUNNING" and status == "completed" else status,
        failure=tags.get("scan.failure", ""),
        mlflow_status=run.info.status,
        epochs=int(epochs) if epochs is not None else None,
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        tags=dict(tags),
        varied=_json_list(tags.get("scan.varied")),
    )


def _status_from_mlflow(status: str) -> str:
    return {"FINISHED": "completed", "RUNNING": "running"}.get(status, "failed")


def _json_list(text: str | None) -> list:
    if not text:
        return []
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return []
    return value if isinstance(value, list) else []


def _sweep_settings(name, tracking_uri, experiment_id, parent, trials) -> SweepRuns:
    tags = dict(parent.data.tags) if parent is not None else {}
    notes = [] if parent is not None else ["no parent run found: the sweep's settings are inferred from its trials"]
    objective, mode = tags.get("scan.objective"), tags.get("scan.objective_mode", "max")
    if not objective:
        objective, mode = _guess_objective(trials)
        if parent is not None:
            notes.append(f"the parent run has no scan.objective tag: ranking by {objective} ({mode})")
    also = [a for a in _json_list(tags.get("scan.also")) if isinstance(a, dict) and "metric" in a]
    class_names = _names_from(trials, tags, "scan.class_names", "val/efficiency/")
    target_names = _names_from(trials, tags, "scan.target_names", "val/bias/")
    task = tags.get("scan.task") or ("regression" if target_names and not class_names else "classification")
    return SweepRuns(
        name=name,
        tracking_uri=tracking_uri,
        experiment_id=experiment_id,
        parent_run_id=parent.info.run_id if parent is not None else None,
        parent_status=tags.get("scan.status", "unknown"),
        objective=objective,
        mode=mode,
        also=[{"metric": a["metric"], "mode": a.get("mode", "max")} for a in also],
        task=task,
        class_names=class_names,
        target_names=target_names,
        trials=trials,
        notes=notes,
    )


def _guess_objective(trials: list[Trial]) -> tuple[str, str]:
    logged = set().union(*(t.metrics for t in trials)) if trials else set()
    for name, mode in (("val/accuracy", "max"), ("val/resolution68_deg", "min")):
        if name in logged or f"best/{name}" in logged:
            return name, mode
    return "val/loss", "min"


def _names_from(trials: list[Trial], parent_tags: dict, tag: str, metric_prefix: str) -> list[str]:
    """Class/target names: the tag the scanner writes, else read off the metric names."""
    for tags in [parent_tags] + [t.tags for t in trials]:
        names = _json_list(tags.get(tag))
        if names:
            return [str(n) for n in names]
    found: list[str] = []
    for t in trials:
        for key in t.metrics:
            if key.startswith(metric_prefix) and not key.endswith("_err"):
                n = key[len(metric_prefix):]
                if n not in found:
                    found.append(n)
    return found


def fetch_histories(tracking_uri: str, run_ids: list[str], keys: list[str]) -> dict[str, dict[str, list]]:
    """{run_id: {key: [(step, value), ...]}} for the learning-curve and telemetry plots; absent keys are left out."""
    client = client_for(tracking_uri)
    out: dict[str, dict[str, list]] = {}
    for run_id in run_ids:
        out[run_id] = {}
        for key in keys:
            history = client.get_metric_history(run_id, key)
            if history:
                out[run_id][key] = sorted((m.step, m.value) for m in history)
    return out


def fetch_artifact(tracking_uri: str, run_id: str, split: str, filename: str, dst: Path) -> Path | None:
    """``<split>/<filename>`` of a run (falling back to the run's root), downloaded into ``dst``; None if absent."""
    client = client_for(tracking_uri)
    for path in (f"{split}/{filename}", filename):
        folder = str(Path(path).parent) if "/" in path else None
        try:
            listed = {f.path for f in client.list_artifacts(run_id, folder)}
        except Exception:  # a store without artifacts for this run: the figures that need it are skipped
            continue
        if path in listed:
            dst.mkdir(parents=True, exist_ok=True)
            return Path(client.download_artifacts(run_id, path, str(dst)))
    return None


def read_confusion(path: Path) -> dict[str, Any]:
    with open(path) as f:
        data = json.load(f)
    return {"class_names": list(data.get("class_names", [])), "counts": data["counts"]}


def log_report_to_parent(sweep: SweepRuns, out_dir: Path) -> None:
    """The report as artifacts of the parent run (``report/``) and the run's description pointing at it."""
    if sweep.parent_run_id is None:
        return
    client = client_for(sweep.tracking_uri)
    client.log_artifacts(sweep.parent_run_id, str(out_dir), "report")
    line = (
        f"{REPORT_NOTE_MARK} [{out_dir / 'index.html'}](file://{out_dir / 'index.html'}) "
        f"(also the `report/` artifacts of this run: index.html, report.md, ranking.csv)."
    )
    old = client.get_run(sweep.parent_run_id).data.tags.get("mlflow.note.content", "")
    kept = [ln for ln in old.splitlines() if not ln.startswith(REPORT_NOTE_MARK)]  # the scanner's own text stays
    client.set_tag(sweep.parent_run_id, "mlflow.note.content", "\n".join(kept + [line]).strip())
