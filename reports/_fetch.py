"""Read one sweep from MLflow: the parent run, every trial run and seed replica, their latest metrics. The one place
that knows the MLflow layout (docs/mlflow.md), so a change in what the scanner writes is adapted here only
(``_fetch_extra`` holds the artifacts and histories, ``_mlflow_compat`` the calls MlflowClient lacks).

One ``search_runs`` (paged) ranks a sweep. Values at an epoch come from each metric's latest value and its step:

- at the best epoch, ``best/<metric>`` (the scanner logs the whole ``best/`` block at every epoch, all at the best
  epoch's values); a ``best/`` figure whose latest step is older than ``best/epoch``'s was not logged at the best
  epoch (a store written before NaN was logged for undefined figures), so it is undefined there: NaN, shown "—";
- at the last epoch, the latest value of ``<metric>`` when its step is the trial's last epoch, else NaN (undefined
  at that epoch), never an older epoch's value.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

from reports._gc import paused_gc
from reports._mlflow_compat import latest_steps, open_client, quiet_mlflow
from reports._space import SpaceInfo, fetch_space_info
from reports.errors import ReportInputError
from trainables.contract import PARENT_ROLE, SEEDS_N, TEST, UI_PORT, Status, Tag, metric_key

PAGE_SIZE = 1000  # MLflow's maximum page for search_runs; a 1,000-trial sweep is one page
LOCAL_UI_URL = f"http://127.0.0.1:{UI_PORT}"
NAN = float("nan")
_TRIAL_NUMBER = re.compile(r"^t(\d+)$")


@dataclass(eq=False)  # compared by identity
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
    steps: dict[str, int] = field(default_factory=dict)  # metric -> step of its latest value
    varied: list[str] = field(default_factory=list)
    inactive: set[str] = field(default_factory=set)  # conditional params whose `when` is false in this trial

    @property
    def label(self) -> str:
        """``t07`` for ``t07 resnet34 focal lr=3e-3``: the short id of tables and plots."""
        words = self.run_name.split()
        first = words[0] if words else self.run_id[:8]
        return first if len(first) <= 10 else first[:9] + "…"

    @property
    def order(self) -> tuple:
        """Trial order, the tie-break of equal objective values (as the sweep's console): t00 (the baseline) first."""
        match = _TRIAL_NUMBER.match(self.label)
        return (not self.baseline, int(match.group(1)) if match else math.inf, self.run_name)

    @property
    def flags(self) -> list[str]:
        """``scan.flags``: chance, single_class, below_reference."""
        return [f.strip() for f in self.tags.get(Tag.FLAGS, "").split(",") if f.strip()]

    @property
    def best_epoch(self) -> int | None:
        value = self.metrics.get("best/epoch")
        return int(value) if value is not None and math.isfinite(value) else None

    def param(self, name: str) -> str | None:
        """The logged value of a param; None when absent or inactive (an older store logged its default)."""
        return None if name in self.inactive else self.params.get(name)

    def value(self, name: str, at: str = "best") -> float | None:
        """``name`` (e.g. ``val/accuracy``) at the best or the last epoch: None when never logged, NaN when
        undefined at that epoch. Throughput and memory (``perf/``, ``sys/``), which have no ``best/`` copy, are the
        last epoch's."""
        if at == "best":
            return self._at_best(name)
        return self._at_step(name, self.epochs)

    def _at_best(self, name: str) -> float | None:
        key = f"best/{name}"
        anchor = self.steps.get("best/epoch")
        if key in self.metrics:
            if anchor is not None and self.steps.get(key) != anchor:
                return NAN  # not logged at the best epoch: an older epoch's value must not be shown beside it
            return self.metrics[key]
        if name not in self.metrics:
            return None
        if anchor is None or not name.startswith(("val/", "train/")):
            return self.metrics[name]  # no best/ block at all (an old store), or a per-trial figure
        return self._at_step(name, self.best_epoch)

    def _at_step(self, name: str, step: int | None) -> float | None:
        if name not in self.metrics:
            return None
        if step is None or self.steps.get(name, step) == step:
            return self.metrics[name]
        return NAN

    def test_value(self, name: str) -> float | None:
        """The held-out test figure logged once after the sweep (``val/x`` -> ``test/x``)."""
        return self.split_value(TEST, name)

    def split_value(self, prefix: str, name: str) -> float | None:
        """``val/x`` read as ``<prefix>/x``: ``test``, ``seeds/test``, ``syst/<label>``, ``seeds/syst/<label>``."""
        if not name.startswith("val/"):
            return None
        return self.metrics.get(f"{prefix}/{name[len('val/'):]}")

    @property
    def seeds(self) -> int:
        """How many seeds ``seeds/test/...`` averages (1: no replicas)."""
        n = self.metrics.get(SEEDS_N)
        return int(n) if n is not None and math.isfinite(n) else 1


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
    trials: list[Trial]  # the originals: replicas are apart, out of the ranking, importance and counts
    replicas: list[Trial] = field(default_factory=list)
    parent_metrics: dict[str, float] = field(default_factory=dict)  # ref/val/..., ref/test/..., sweep/...
    notes: list[str] = field(default_factory=list)  # things the reader should know (fallbacks taken)
    space: SpaceInfo | None = None  # from the parent's space.yaml; None when the run has none
    ui_url: str = LOCAL_UI_URL

    @property
    def running(self) -> bool:
        return self.parent_status == "running" or any(t.mlflow_status == "RUNNING" for t in self.trials)

    def run_link(self, run_id: str) -> str:
        """The run's page in the MLflow UI: the tracking server's own, or for a local store ``scanner ui``'s."""
        base = self.tracking_uri if self.tracking_uri.startswith(("http://", "https://")) else self.ui_url
        return f"{base.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{run_id}"

    def reference(self, split: str, name: str) -> float | None:
        """The trivial predictor's figure (``ref/<split>/<x>`` on the parent) for ``val/x``; None when not logged."""
        if not name.startswith("val/"):
            return None
        value = self.parent_metrics.get(f"ref/{split}/{name[len('val/'):]}")
        return value if value is not None and math.isfinite(value) else None

    def pretty(self, metric: str) -> str:
        """A metric for the reader: no ``val/`` prefix, real class/target names (``efficiency/nue+CC``)."""
        name = metric[4:] if metric.startswith("val/") else metric
        real = {metric_key(n): n for n in self.class_names + self.target_names}
        head, _, leaf = name.rpartition("/")
        suffix = "_err" if leaf.endswith("_err") and leaf[:-4] in real else ""
        leaf = leaf[:-4] if suffix else leaf
        return f"{head}/{real.get(leaf, leaf)}{suffix}" if head else name


def client_for(tracking_uri: str, sought: str = "sweep"):
    """An MlflowClient on an existing store (never creates an empty one) or a reachable server; ``sought`` is what
    the caller looks for there, named in the one line that says the store is missing."""
    return open_client(tracking_uri, sought=sought)


def load_sweep(sweep_name: str, tracking_uri: str, instance: str | None = None, ui_url: str = LOCAL_UI_URL
               ) -> SweepRuns:
    """Every trial run of the sweep ``sweep_name`` (= experiment name) in the store at ``tracking_uri``: of its
    latest instance (the latest ``scanner run`` of that name), or of ``instance``."""
    with paused_gc(), quiet_mlflow():
        return _load_sweep(sweep_name, tracking_uri, instance, ui_url)


def _load_sweep(sweep_name: str, tracking_uri: str, instance: str | None, ui_url: str) -> SweepRuns:
    client = client_for(tracking_uri, sought=f"sweep '{sweep_name}'")
    experiment = client.get_experiment_by_name(sweep_name)
    if experiment is None:
        known = sorted(e.name for e in client.search_experiments() if e.name != "Default")
        raise ReportInputError(
            f"no sweep named '{sweep_name}' in {tracking_uri}; known sweeps: {', '.join(known) or '(none)'}"
        )
    runs = _search_all(client, experiment.experiment_id)
    parent = _find_parent(runs, sweep_name, instance)
    parent_id = parent.info.run_id if parent is not None else None
    children = [_trial_from_run(r) for r in runs
                if r is not parent and (parent is None or r.data.tags.get(Tag.PARENT_RUN_ID) == parent_id)]
    trials = [t for t in children if not t.tags.get(Tag.REPLICA_OF)]
    sweep = _sweep_settings(sweep_name, tracking_uri, experiment.experiment_id, parent, trials)
    sweep.replicas = [t for t in children if t.tags.get(Tag.REPLICA_OF)]
    sweep.ui_url = ui_url
    sweep.space = fetch_space_info(client, sweep.parent_run_id)
    if sweep.space is not None:
        for t in children:
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
    named = [r for r in runs if r.info.run_name == sweep_name and Tag.PARENT_RUN_ID not in r.data.tags]
    return named[0] if named else None


def _trial_from_run(run) -> Trial:
    tags = run.data.tags
    steps = latest_steps(run)
    epochs = max((steps[k] for k in ("val/loss", "train/loss") if k in steps), default=None)
    status = tags.get(Tag.STATUS) or _status_from_mlflow(run.info.status)
    return Trial(
        run_id=run.info.run_id,
        run_name=run.info.run_name or run.info.run_id[:8],
        trial_id=tags.get(Tag.TRIAL_ID, ""),
        baseline=tags.get(Tag.BASELINE, "false").lower() == "true",
        status=Status.RUNNING if run.info.status == "RUNNING" and status == Status.COMPLETED else status,
        failure=tags.get(Tag.FAILURE, ""),
        mlflow_status=run.info.status,
        epochs=int(epochs) if epochs is not None else None,
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        tags=dict(tags),
        steps=steps,
        varied=_json_list(tags.get(Tag.VARIED)),
    )


def _status_from_mlflow(status: str) -> str:
    return {"FINISHED": Status.COMPLETED, "RUNNING": Status.RUNNING}.get(status, Status.FAILED)


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
    objective, mode = tags.get(Tag.OBJECTIVE), tags.get(Tag.OBJECTIVE_MODE, "max")
    if not objective:
        objective, mode = _guess_objective(trials)
        if parent is not None:
            notes.append(f"the parent run has no {Tag.OBJECTIVE} tag: ranking by {objective} ({mode})")
    also = [a for a in _json_list(tags.get(Tag.ALSO)) if isinstance(a, dict) and "metric" in a]
    class_names = _names_from(trials, tags, Tag.CLASS_NAMES, "val/efficiency/")
    target_names = _names_from(trials, tags, Tag.TARGET_NAMES, "val/bias/")
    task = tags.get(Tag.TASK) or ("regression" if target_names and not class_names else "classification")
    return SweepRuns(
        name=name,
        tracking_uri=tracking_uri,
        experiment_id=experiment_id,
        parent_run_id=parent.info.run_id if parent is not None else None,
        parent_status=tags.get(Tag.STATUS, "unknown"),
        objective=objective,
        mode=mode,
        also=[{"metric": a["metric"], "mode": a.get("mode", "max")} for a in also],
        task=task,
        class_names=class_names,
        target_names=target_names,
        trials=trials,
        parent_metrics=dict(parent.data.metrics) if parent is not None else {},
        notes=notes,
    )


def _guess_objective(trials: list[Trial]) -> tuple[str, str]:
    logged = set().union(*(t.metrics for t in trials)) if trials else set()
    for name, mode in (("val/accuracy", "max"), ("val/resolution68_deg", "min")):
        if name in logged or f"best/{name}" in logged:
            return name, mode
    return "val/loss", "min"


def _names_from(trials: list[Trial], parent_tags: dict, tag: str, metric_prefix: str) -> list[str]:
    """Class/target names: the tag the scanner writes (real names), else read off the metric names (their keys)."""
    for tags in [parent_tags] + [t.tags for t in trials[:20]]:
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
