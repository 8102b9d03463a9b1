"""``build_report``: fetch a sweep, rank it, draw it, write index.html + report.md + ranking.csv, log it to MLflow.

The report is written into a temporary folder beside ``out_dir`` and moved into place at the end, so a failure
never leaves half a report where the previous one was.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import tempfile
from pathlib import Path

from reports._best import best_trial_section, curves_and_telemetry_sections
from reports._fetch import SweepRuns, load_sweep, log_report_to_parent
from reports._rank import Ranking, gain_over_baseline, rank
from reports._render import Document, Section, fmt, fmt_delta, write_html, write_markdown
from reports._sections import (AT_TEXT, gain_section, importance_section, pareto_section, ranking_section, short,
                               val_test_section)
from reports.errors import ReportInputError


def build_report(sweep_name: str, tracking_uri: str, out_dir: Path, at: str = "best",
                 log_to_parent: bool = True) -> Path:
    """Write the report of ``sweep_name`` into ``out_dir``; returns the path of ``index.html``."""
    if at not in ("best", "last"):
        raise ReportInputError(f"--at must be 'best' or 'last', not '{at}'")
    return write_report(load_sweep(sweep_name, tracking_uri), out_dir, at, log_to_parent)


def preload() -> None:
    """Import what a report needs that is slow to import (pyplot ~0.5 s; Optuna's importance pulls scikit-learn,
    ~2 s), so a caller can do it while it waits on something else: the sweep does it while Ray stops."""
    from reports._plots import _pyplot
    from reports._importance import load_importance_module

    _pyplot()
    load_importance_module()


def write_report(sweep: SweepRuns, out_dir: Path, at: str = "best", log_to_parent: bool = True) -> Path:
    """The same from an already fetched sweep (the CLI fetches once to also say whether it is running)."""
    ranking = rank(sweep, at)
    doc = document(ranking)
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        ranking.table.to_csv(tmp / "ranking.csv", index=False)
        write_markdown(doc, tmp / "report.md")
        write_html(doc, tmp / "index.html")
        _replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if log_to_parent:
        log_report_to_parent(sweep, out_dir)
    return out_dir / "index.html"


def _replace_dir(new: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{_dt.datetime.now():%Y%m%d%H%M%S%f}")
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def document(ranking: Ranking) -> Document:
    sweep = ranking.sweep
    sections: list[Section | None] = [ranking_section(ranking)]
    if ranking.ranked:
        sections += [val_test_section(ranking), gain_section(ranking), pareto_section(ranking),
                     importance_section(ranking), best_trial_section(ranking)]
        sections += curves_and_telemetry_sections(ranking)
    title = f"Sweep report: {sweep.name}"
    return Document(title, summary_lines(ranking), banner(sweep, ranking), [s for s in sections if s is not None])


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


def summary_lines(ranking: Ranking) -> list[str]:
    sweep = ranking.sweep
    counts = {s: sum(t.status == s for t in sweep.trials) for s in ("completed", "stopped_early", "failed", "running")}
    lines = [
        f"Objective: **{sweep.objective}** ({sweep.mode}), task {sweep.task}, scored {AT_TEXT[ranking.at]}.",
        f"Trials: {len(sweep.trials)} — " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items() if v)
        + f". Sweep status: {'running' if sweep.running else sweep.parent_status}.",
        f"Store: `{sweep.tracking_uri}`, experiment {sweep.experiment_id}; generated "
        f"{_dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}.",
    ]
    leader = ranking.leader
    if leader is None:
        return lines
    t = leader.trial
    test = t.test_value(sweep.objective)
    if test is not None:
        lines.insert(0, f"**Best trial {t.run_name}: test {short(sweep.objective)} = "
                        f"{fmt(test, t.test_value(sweep.objective + '_err'))}** "
                        f"(validation {fmt(leader.objective, leader.objective_err)}).")
    else:
        lines.insert(0, f"**Best trial {t.run_name}: validation {short(sweep.objective)} = "
                        f"{fmt(leader.objective, leader.objective_err)}** (no test figure logged yet).")
    tied = [r.trial.run_name for r in ranking.ranked[1:] if r.tied]
    if tied:
        lines.insert(1, f"Within 1σ of the leader (statistically tied): {', '.join(tied)}.")
    gain = gain_over_baseline(ranking)
    if gain is not None:
        rel = "" if gain.relative is None else f", {gain.relative_label} {100 * gain.relative:.1f} %"
        delta = fmt_delta(gain.delta, gain.delta_err)
        lines.insert(1, f"Gain over the baseline ({gain.split}): Δ{short(gain.metric)} = {delta}{rel}.")
    return lines
