"""``build_report``: fetch a sweep, rank it, draw it, write index.html + report.md + ranking.csv, log it to MLflow.

The phases are timed apart (``phases``: fetch, rank, fetch_details, plots, write), so a benchmark shows the slow one.
Everything is rendered in memory first; then ``_output.write_files`` puts the files into ``out_dir`` beside what is
there (a manifest says which files are the report's; a user's file is never replaced). Nothing here changes the
process for good: MLflow's progress bars and Optuna's log level are restored afterwards.
"""

from __future__ import annotations

import datetime as _dt
import math
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from reports import _lead
from reports._best import best_trial_section, curves_and_telemetry_sections
from reports._fetch import LOCAL_UI_URL, SweepRuns, load_sweep
from reports._fetch_extra import log_report_to_parent
from reports._gather import Details, fetch_details
from reports._gc import paused_gc
from reports._importance import load_importance_module
from reports._mlflow_compat import quiet_mlflow
from reports._output import check_folder, write_files
from reports._plots import load_matplotlib
from reports._rank import Ranking, gain_over_baseline, rank
from reports._render import Document, Section, fmt, fmt_delta, render_html, render_markdown
from reports._sections import (AT_TEXT, gain_section, importance_section, pareto_section, ranking_section,
                               val_test_section)
from reports._stats import quadrature
from reports._systematics import systematics_section
from reports.errors import ReportInputError

AT_CHOICES = ("best", "last")
MAIN_FILES = ("index.html", "report.md", "ranking.csv")


def build_report(sweep_name: str, tracking_uri: str, out_dir: Path, at: str = "best",
                 log_to_parent: bool = True, ui_url: str = LOCAL_UI_URL) -> Path:
    """Write the report of ``sweep_name`` into ``out_dir``; returns the path of ``index.html``."""
    if at not in AT_CHOICES:
        raise ReportInputError(f"--at must be 'best' or 'last', not '{at}'")
    return write_report(load_sweep(sweep_name, tracking_uri, ui_url=ui_url), out_dir, at, log_to_parent)


def preload() -> None:
    """Import what a report needs that is slow to import (matplotlib ~0.5 s; Optuna's importance pulls
    scikit-learn, ~2 s), so a caller can do it while it waits on something else: the sweep does it while Ray stops."""
    load_matplotlib()
    load_importance_module()


@contextmanager
def _phase(phases: dict[str, float], name: str) -> Iterator[None]:
    """Wall-clock seconds into ``phases[name]``, this process's CPU seconds into ``phases[name + '_cpu']``."""
    start, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        phases[name] = phases.get(name, 0.0) + time.perf_counter() - start
        phases[name + "_cpu"] = phases.get(name + "_cpu", 0.0) + time.process_time() - cpu


def write_report(sweep: SweepRuns, out_dir: Path, at: str = "best", log_to_parent: bool = True,
                 phases: dict[str, float] | None = None) -> Path:
    """The same from an already fetched sweep (the CLI fetches once to also say whether it is running).

    ``phases``, when given, receives the seconds spent in rank, fetch_details, plots and write (wall clock; CPU
    time under ``<phase>_cpu``)."""
    phases = {} if phases is None else phases
    out_dir = Path(out_dir).resolve()
    check_folder(out_dir, list(MAIN_FILES))  # a user's index.html: refuse before the work, not after
    with quiet_mlflow(), paused_gc():
        with _phase(phases, "rank"):
            ranking = rank(sweep, at)
        with tempfile.TemporaryDirectory(prefix="scanner-report-") as tmp:
            with _phase(phases, "fetch_details"):
                details = fetch_details(ranking, Path(tmp))
            with _phase(phases, "plots"):
                doc = document(ranking, details)
        with _phase(phases, "write"):
            written = write_files(out_dir, render_files(ranking, doc))
        if log_to_parent:
            log_report_to_parent(sweep, out_dir, written)
    return out_dir / "index.html"


def render_files(ranking: Ranking, doc: Document) -> dict[str, bytes]:
    """{relative path: content} of the report: index.html, report.md with its figures, ranking.csv."""
    markdown, figures = render_markdown(doc)
    html, md, csv = MAIN_FILES
    files = {html: render_html(doc).encode("utf-8"), md: markdown.encode("utf-8"),
             csv: ranking.table.to_csv(index=False).encode("utf-8")}
    files.update(figures)
    return files


def document(ranking: Ranking, details: Details | None = None) -> Document:
    """The report's sections; ``details`` (histories, artifacts) are fetched here when not given."""
    if details is None:
        with tempfile.TemporaryDirectory(prefix="scanner-report-") as tmp, quiet_mlflow():
            return document(ranking, fetch_details(ranking, Path(tmp)))
    sweep = ranking.sweep
    analysis = _lead.analyse_lead(ranking, details.test_predictions) if ranking.ranked else None
    sections: list[Section | None] = [ranking_section(ranking)]
    if ranking.ranked:
        sections += [val_test_section(ranking), _lead.lead_section(ranking, analysis), gain_section(ranking),
                     systematics_section(ranking), pareto_section(ranking), importance_section(ranking),
                     best_trial_section(ranking, details)]
        sections += curves_and_telemetry_sections(ranking, details)
    title = f"Sweep report: {sweep.name}"
    return Document(title, summary_lines(ranking, analysis), banner(sweep, ranking),
                    [s for s in sections if s is not None])


def banner(sweep: SweepRuns, ranking: Ranking) -> str:
    lines = []
    if sweep.running:
        running = sum(t.mlflow_status == "RUNNING" for t in sweep.trials)
        lines.append(f"This sweep is still running ({running} trial(s) in progress): the ranking will change.")
    if not sweep.trials:
        lines.append("This sweep has no trial runs yet: there is nothing to rank.")
    elif not ranking.ranked:
        failed = sum(t.status == "failed" for t in sweep.trials)
        lines.append(f"No trial has an objective value ({failed} of {len(sweep.trials)} failed): see the status "
                     "column for why.")
    lines += sweep.notes
    return " ".join(lines)


def _counts_line(ranking: Ranking) -> str:
    sweep = ranking.sweep
    counts = {s: sum(t.status == s for t in sweep.trials) for s in ("completed", "stopped_early", "failed", "running")}
    replicas = f" (+ {len(sweep.replicas)} seed replicas of the finalists, not ranked)" if sweep.replicas else ""
    return (f"Trials: {len(sweep.trials)}{replicas} — "
            + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items() if v)
            + f". Sweep status: {'running' if sweep.running else sweep.parent_status}.")


def summary_lines(ranking: Ranking, analysis: _lead.LeadAnalysis | None = None) -> list[str]:
    sweep = ranking.sweep
    lines = [
        f"Objective: **{sweep.pretty(sweep.objective)}** ({sweep.mode}), task {sweep.task}, scored "
        f"{AT_TEXT[ranking.at]}.",
        _counts_line(ranking),
        f"Store: `{sweep.tracking_uri}`, experiment {sweep.experiment_id}; generated "
        f"{_dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}.",
    ]
    leader = ranking.leader
    if leader is None:
        return lines
    t, objective = leader.trial, sweep.pretty(sweep.objective)
    test = t.test_value(sweep.objective)
    head = []
    if test is not None:
        head.append(f"**Best trial {t.label} ({t.run_name}): test {objective} = "
                    f"{fmt(test, t.test_value(sweep.objective + '_err'))}** "
                    f"(validation {fmt(leader.objective, leader.objective_err)}).")
    else:
        head.append(f"**Best trial {t.label} ({t.run_name}): validation {objective} = "
                    f"{fmt(leader.objective, leader.objective_err)}** (no test figure logged yet).")
    head += [line for line in (_lead.headline(analysis, sweep.pretty), reference_line(ranking)) if line]
    tied = [r.trial.label for r in ranking.ranked[1:] if r.tied]
    if tied:
        head.append(f"Within 1σ of the leader on validation (statistically tied): {', '.join(tied)}.")
    unknown = sum(r.tied is None for r in ranking.ranked[1:])
    if unknown:
        head.append(f"No error logged for {objective} on {unknown} trial(s) or the leader: whether they are tied with "
                    "the leader is unknown ('?' in the ranking).")
    gain = gain_over_baseline(ranking)
    if gain is not None:
        rel = "" if gain.relative is None else f", {gain.relative_label} {100 * gain.relative:.1f} %"
        head.append(f"Gain over the baseline ({gain.split}): Δ{objective} = {fmt_delta(gain.delta, gain.delta_err)}"
                    f"{rel}.")
    return head + lines


def reference_line(ranking: Ranking) -> str | None:
    """The leader against the trivial reference predictor, on test when both have it, else on validation; says
    plainly when the leader is not better than it (within the combined 1σ)."""
    sweep, leader = ranking.sweep, ranking.leader
    name = sweep.objective
    split = "test" if sweep.reference("test", name) is not None and leader.trial.test_value(name) is not None \
        else "val"
    ref = sweep.reference(split, name)
    if ref is None:
        return None
    value = leader.trial.test_value(name) if split == "test" else leader.objective
    err = leader.trial.test_value(name + "_err") if split == "test" else leader.objective_err
    sigma = quadrature(err, sweep.reference(split, name + "_err"))  # NaN: an error not logged, unknown
    better_by = (value - ref) if sweep.mode == "max" else (ref - value)
    where = "test" if split == "test" else "validation"
    if not math.isfinite(sigma) and better_by > 0:
        return (f"Reference predictor ({where}): {sweep.pretty(name)} = {fmt(ref)}; the leader is better by "
                f"{fmt(better_by, sigma)}, error unknown (no `_err` logged): no significance is claimed.")
    if better_by <= sigma or better_by <= 0:
        return (f"**The leader is not better than the reference predictor**: {where} "
                f"{sweep.pretty(name)} {fmt(value, err)} against {fmt(ref)} for the trivial predictor (majority "
                "class, mean target or mean direction): the trials have learned nothing it does not know.")
    return (f"Reference predictor ({where}): {sweep.pretty(name)} = {fmt(ref)}; the leader is better by "
            f"{fmt(better_by, sigma or None)}.")
