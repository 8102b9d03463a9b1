"""The driver-side Tune callback: the one MLflow writer for the whole sweep, and the terminal progress line.

Trials never talk to MLflow (ray#19978: Ray's own MLflow callback cannot nest runs; ray#36257: experiment creation
races between workers). Everything goes through ``MlflowWriter``, which never blocks the Tune loop.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import Callback

from scanner._tune_adapter import EPOCH_MARK, FAILURE_KEY, resolve_config
from scanner.tracking import PARENT_KEY, checkpoint_artifact_files, trial_run_name, trial_tags

TERMINAL = ("completed", "stopped_early", "failed")
MLFLOW_STATUS = {"completed": "FINISHED", "stopped_early": "FINISHED", "failed": "FAILED"}


@dataclass
class TrialState:
    trial_id: str
    index: int
    baseline: bool
    name: str
    status: str = "running"
    epochs: int = 0
    best_value: float | None = None
    best_epoch: int | None = None
    best_checkpoint: str | None = None
    failure: str | None = None
    last_is_best: bool = False
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class SweepInfo:
    """What the callback needs to know about the sweep (picklable: Tune saves its callbacks in tuner.pkl)."""

    name: str
    experiment_id: str
    space: Any
    space_hash: str
    data_hash: str | None
    class_names: list[str] | None
    target_names: list[str] | None
    git_sha: str | None
    init_map: dict[str, str]


class SweepCallback(Callback):
    def __init__(self, info: SweepInfo, writer, quiet: bool = False):
        self.info, self.writer, self.quiet = info, writer, quiet
        self.trials: dict[str, TrialState] = {}
        self._t0 = time.monotonic()
        self._last_line = ""
        obj = info.space.objective
        self.objective, self.mode = obj.metric, obj.mode

    def __getstate__(self):  # tuner.pkl must not carry a thread; resume installs a fresh callback
        return {"info": None, "writer": None, "quiet": True, "trials": {}, "_t0": 0.0, "_last_line": "",
                "objective": self.objective, "mode": self.mode}

    # -- Tune hooks

    def on_trial_start(self, iteration, trials, trial, **info):
        state = self.trials.get(trial.trial_id)
        if state is None:
            state = self._new_state(trial)
            self.trials[trial.trial_id] = state
            self._start_run(state)
        state.status = "running"
        self._progress()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        state = self.trials.get(trial.trial_id) or self._adopt(trial)
        if FAILURE_KEY in result:
            state.failure = str(result[FAILURE_KEY])
            return
        epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        state.epochs = max(state.epochs, epoch)
        metrics = {k: v for k, v in result.items() if "/" in k and not k.startswith("config/")}
        self.writer.log_metrics(state.trial_id, metrics, step=epoch)
        state.last_is_best = bool(result.get("scan_is_best"))
        if state.last_is_best:
            state.best_value, state.best_epoch = _as_float(result.get(self.objective)), epoch
        self._progress()

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        state = self.trials.get(trial.trial_id) or self._adopt(trial)
        folder = Path(checkpoint.path)
        mark = _read_mark(folder)
        if not (mark or {}).get("is_best"):
            return
        state.best_checkpoint = str(folder)
        state.best_epoch = int(mark["epoch"])
        self.writer.set_tags(state.trial_id, {"scan.checkpoint": str(folder)})
        self.writer.log_artifacts(state.trial_id, checkpoint_artifact_files(folder), "val")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._say(f"trial {self._label(trial)} died; retrying from its last epoch checkpoint")

    def on_trial_complete(self, iteration, trials, trial, **info):
        state = self.trials.get(trial.trial_id) or self._adopt(trial)
        if state.failure:
            self._finish(state, "failed")
        elif state.epochs >= self.info.space.budget.max_epochs:
            self._finish(state, "completed")
        else:
            self._finish(state, "stopped_early")

    def on_trial_error(self, iteration, trials, trial, **info):
        state = self.trials.get(trial.trial_id) or self._adopt(trial)
        state.failure = _error_text(trial)
        self._finish(state, "failed")

    # -- helpers

    def _new_state(self, trial) -> TrialState:
        from scanner._searcher import is_baseline

        baseline = is_baseline(trial.config)
        counter = str(getattr(trial, "experiment_tag", "")).split("_", 1)[0]  # Tune's 1-based trial counter
        index = int(counter) - 1 if counter.isdigit() else len(self.trials)  # the baseline is t00
        cfg = resolve_config(self.info.space, trial.config, self.info.init_map)
        params = cfg.as_params()
        space = self.info.space
        active = [k for k in space.varied_keys if space.space[k].is_active(params)]  # no focal_gamma beside ce
        name = trial_run_name(index, params, active, baseline)
        return TrialState(trial.trial_id, index, baseline, name, params=params)

    def _adopt(self, trial) -> TrialState:
        """A trial whose start this callback did not see (restored by ``scanner resume``)."""
        state = self._new_state(trial)
        self.trials[trial.trial_id] = state
        self._start_run(state)
        return state

    def _start_run(self, state: TrialState) -> None:
        info = self.info
        tags = trial_tags(
            info.name, state.trial_id, space_hash=info.space_hash, data_hash=info.data_hash, baseline=state.baseline,
            varied=info.space.varied_keys, class_names=info.class_names, target_names=info.target_names,
            git_sha=info.git_sha,
        )
        tags["scan.status"] = "running"
        self.writer.start_run(state.trial_id, info.experiment_id, state.name, tags,
                              find_by={"scan.trial_id": state.trial_id}, parent_key=PARENT_KEY)
        self.writer.log_params(state.trial_id, state.params)

    def _finish(self, state: TrialState, status: str) -> None:
        state.status = status
        tags = {"scan.status": status}
        if state.failure:
            tags["scan.failure"] = state.failure[:4000]
        self.writer.set_tags(state.trial_id, tags)
        self.writer.end_run(state.trial_id, MLFLOW_STATUS[status])
        if status == "failed":
            self._say(f"trial {state.name} failed: {(state.failure or '').splitlines()[-1:] or ''}")
        self._progress()

    def _label(self, trial) -> str:
        state = self.trials.get(trial.trial_id)
        return state.name if state else trial.trial_id

    def best(self) -> TrialState | None:
        ranked = ranked_trials(self.trials.values(), self.mode)
        return ranked[0] if ranked else None

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in ("running",) + TERMINAL}
        for state in self.trials.values():
            out[state.status] = out.get(state.status, 0) + 1
        return out

    def _progress(self) -> None:
        if self.quiet:
            return
        c = self.counts()
        best = self.best()
        best_text = f"best {self.objective}={best.best_value:.4g} ({best.name})" if best else "best -"
        line = (f"running {c['running']} | done {c['completed']} | stopped {c['stopped_early']} | "
                f"failed {c['failed']} | {best_text}")
        if line != self._last_line:
            self._last_line = line
            self._say(line)

    def _say(self, text: str) -> None:
        if not self.quiet:
            elapsed = int(time.monotonic() - self._t0)
            print(f"[{elapsed // 60:3d}:{elapsed % 60:02d}] {text}", file=sys.stdout, flush=True)


def ranked_trials(states, mode: str) -> list[TrialState]:
    """Trials that reached a best epoch, best first; failed trials never rank."""
    usable = [s for s in states if s.status != "failed" and s.best_value is not None and not math.isnan(s.best_value)]
    return sorted(usable, key=lambda s: s.best_value, reverse=(mode == "max"))


def _as_float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _read_mark(folder: Path) -> dict | None:
    try:
        return json.loads((folder / EPOCH_MARK).read_text())
    except (OSError, ValueError):
        return None


def _error_text(trial) -> str:
    """The last lines of the trial's traceback: enough to say why, short enough for a tag."""
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text() if path else ""
    except OSError:
        text = ""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(lines[-3:]) or "the trial's worker died"
