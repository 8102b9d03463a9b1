"""The driver-side Tune callback: it keeps each trial's state and feeds the one MLflow writer of the sweep.

Trials never talk to MLflow (ray#19978: Ray's own MLflow callback cannot nest runs; ray#36257: experiment creation
races between workers). Everything goes through ``MlflowWriter``, which never blocks the Tune loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

import yaml
from ray.tune import Callback
from ray.tune.experiment import Trial

from scanner.sweep.progress import ProgressLine
from scanner.sweep.results import (FAILURE_KEY, IS_BEST_KEY, becomes_best, checkpoint_epoch, is_baseline, read_mark,
                                   replica_spec, result_epoch)
from scanner.sweep.states import SweepInfo, TrialState
from scanner.sweep.trial import resolve_config
from scanner.tracking import PARENT_KEY, MlflowWriter, checkpoint_artifact_files, trial_run_name, trial_tags
from search_spaces import ran_params, sampled_keys
from trainables.contract import MLFLOW_STATUS, Artifact, Status, Tag, tag_value
from trainables.checkpoint import read_confusion
from trainables.files import atomic_write_text
from trainables.flags import trial_flags
from trainables.reporting import BATCH_SIZE_KEY, OOM_RETRIES_KEY

DEAD_WORKER = "the trial's worker died"
SAME_FAILURE_STOPS = 3  # the baseline and the first two searched trials failing alike: every trial will


class SweepStopped(Exception):
    """Every trial fails the same way: the message says how, in one line."""


def last_line(text: str | None) -> str:
    """The line of a failure that says why (a traceback's last line), as text."""
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


class SweepDriver(Callback):
    def __init__(self, info: SweepInfo, writer: MlflowWriter, progress: ProgressLine,
                 on_step: Callable[[], None] | None = None):
        self.info, self.writer, self.progress = info, writer, progress
        self.on_step = on_step  # the lifecycle's Ctrl-C check: it raises out of Tune's loop
        self.trials: dict[str, TrialState] = {}
        self.objective = info.space.objective.metric

    def __getstate__(self):  # tuner.pkl must not carry a thread; resume installs a fresh driver
        return {"info": None, "writer": None, "progress": None, "on_step": None, "trials": {},
                "objective": self.objective}

    # -- Tune hooks

    def on_step_begin(self, iteration, trials, **info):
        if self.on_step is not None:
            self.on_step()
        reason = same_failure(self.trials.values())
        if reason is not None:
            raise SweepStopped(reason)

    def on_trial_start(self, iteration, trials, trial: Trial, **info):
        state = self.trials.get(trial.trial_id) or self.adopt(trial.trial_id, trial.config, trial.experiment_tag)
        state.status = Status.RUNNING
        self.progress.update(self.trials.values())

    def on_trial_result(self, iteration, trials, trial: Trial, result: dict, **info):
        state = self._state(trial)
        if OOM_RETRIES_KEY in result:  # restarted at a smaller batch after running out of memory (maybe for good)
            self.writer.set_tags(state.trial_id, {Tag.OOM_RETRIES: str(int(result[OOM_RETRIES_KEY])),
                                                  Tag.BATCH_SIZE_FINAL: str(int(result[BATCH_SIZE_KEY]))})
        if FAILURE_KEY in result:
            state.failure = str(result[FAILURE_KEY])
            return
        epoch = result_epoch(result)
        state.epochs = max(state.epochs, epoch)
        metrics = {k: v for k, v in result.items() if "/" in k and not k.startswith("config/")}
        self.writer.log_metrics(state.trial_id, metrics, step=epoch)
        if "train/loss" in metrics:
            state.train_losses.append(float(metrics["train/loss"]))
        state.best_metrics = {k[len("best/"):]: v for k, v in metrics.items() if k.startswith("best/val/")}
        if result.get(IS_BEST_KEY):
            value = result.get(self.objective)
            state.best_value, state.best_epoch = (float(value) if value is not None else None), epoch
        self.progress.update(self.trials.values())

    def on_checkpoint(self, iteration, trials, trial: Trial, checkpoint, **info):
        state = self._state(trial)
        folder = Path(checkpoint.path)
        mark = read_mark(folder)
        state.last_checkpoint = str(folder)
        if not becomes_best(mark, state.replica_of is not None):
            return
        state.best_checkpoint, state.best_epoch = str(folder), int(mark["epoch"])
        self.writer.set_tags(state.trial_id, {Tag.CHECKPOINT: str(folder)})
        self.writer.log_artifacts(state.trial_id, checkpoint_artifact_files(folder), "val")
        if self.info.log_checkpoints:
            self.writer.log_artifacts(state.trial_id, [folder / Artifact.STATE], Artifact.CHECKPOINT_DIR)

    def on_trial_recover(self, iteration, trials, trial: Trial, **info):
        state = self._state(trial)
        # Tune's own record first: a resumed driver has not seen the checkpoints of the run before
        kept = trial.checkpoint is not None or state.last_checkpoint
        where = "its last epoch checkpoint" if kept else "the start (it had no checkpoint yet)"
        self.progress.say(f"trial {state.label} died; retrying from {where}")

    def on_trial_complete(self, iteration, trials, trial: Trial, **info):
        state = self._state(trial)
        state.epochs = max(state.epochs, checkpoint_epoch(trial.checkpoint))  # restored at its end: no new result
        self.finish(state, self.status_of(state))

    def on_trial_error(self, iteration, trials, trial: Trial, **info):
        state = self._state(trial)
        state.failure = error_text(trial.error_file)
        state.error_file = trial.error_file
        self.finish(state, Status.FAILED)

    # -- what settling and the lifecycle use

    def status_of(self, state: TrialState) -> str:
        if state.failure:
            return Status.FAILED
        return Status.COMPLETED if state.epochs >= state.max_epochs else Status.STOPPED_EARLY

    def adopt(self, trial_id: str, config: dict[str, Any], experiment_tag: str = "") -> TrialState:
        """A trial's state and run: new, or one whose start this driver did not see (restored by a resume)."""
        replica = replica_spec(config)
        state = self._replica_state(trial_id, replica) if replica else self._search_state(trial_id, config,
                                                                                         experiment_tag)
        self.trials[trial_id] = state
        self._start_run(state)
        return state

    def _search_state(self, trial_id: str, config: dict[str, Any], experiment_tag: str) -> TrialState:
        space = self.info.space
        baseline = is_baseline(config)
        counter = str(experiment_tag).split("_", 1)[0]  # Tune's 1-based trial counter
        index = int(counter) - 1 if counter.isdigit() else len(self.trials)  # the baseline is t00
        sampled = None if baseline else {k: v for k, v in config.items() if not k.startswith("_scan")}
        cfg = resolve_config(space, config, self.info.init_map).as_params()
        varied = sampled_keys(space, sampled)
        source = self.info.init_sources.get(resolve_config(space, config).init or "", {})
        return TrialState(trial_id, index, baseline, trial_run_name(index, cfg, varied, baseline), config=cfg,
                          params=ran_params(space, sampled), varied=varied, max_epochs=space.budget.max_epochs,
                          seed=int(cfg["seed"]), init_run_id=source.get("run_id"),
                          init_trial_id=source.get("trial_id"))

    @staticmethod
    def _replica_state(trial_id: str, replica: dict[str, Any]) -> TrialState:
        """``t07r1 resnet34 focal lr=3e-3``: the original's name with the replica's number."""
        label, _, rest = replica["name"].partition(" ")
        return TrialState(trial_id, int(replica["index"]), bool(replica["baseline"]),
                          f"{label}r{replica['k']} {rest}".strip(), config=dict(replica["config"]),
                          params={**replica["params"], "seed": replica["seed"]}, varied=list(replica["varied"]),
                          max_epochs=int(replica["epochs"]), replica_of=replica["of"], seed=int(replica["seed"]))

    def finish(self, state: TrialState, status: str) -> None:
        state.status = status
        tags = {Tag.STATUS: status}
        if state.failure:
            tags[Tag.FAILURE] = tag_value(state.failure)
        flags = self.flags_of(state) if status != Status.FAILED else []
        if flags:
            tags[Tag.FLAGS] = ",".join(flags)
            self.progress.say(f"trial {state.name} flagged: {', '.join(flags)} (see docs/mlflow.md, scan.flags)")
        self.writer.set_tags(state.trial_id, tags)
        self.writer.end_run(state.trial_id, MLFLOW_STATUS[status])
        if status == Status.FAILED:
            where = f" (traceback: {state.error_file})" if state.error_file else ""
            self.progress.say(f"trial {state.name} failed: {last_line(state.failure)}{where}")
        self.progress.update(self.trials.values())

    def flags_of(self, state: TrialState) -> list[str]:
        """What misleads in a trial's figures: validation at chance while it trained, one class predicted for
        everything, no better than the trivial reference."""
        if not state.best_metrics:
            return []
        space = self.info.space
        confusion = read_confusion(Path(state.best_checkpoint)) if state.best_checkpoint else None
        return trial_flags(space.task, state.best_metrics, state.train_losses, confusion, self.info.reference,
                           objective=space.objective.metric, mode=space.objective.mode)

    # -- helpers

    def _state(self, trial: Trial) -> TrialState:
        return self.trials.get(trial.trial_id) or self.adopt(trial.trial_id, trial.config, trial.experiment_tag)

    def _start_run(self, state: TrialState) -> None:
        info = self.info
        tags = trial_tags(
            info.name, state.trial_id, space_hash=info.space.space_hash, data_hash=info.data_hash,
            baseline=state.baseline, varied=state.varied, class_names=info.class_names,
            target_names=info.target_names, git_sha=info.git_sha,
        )
        tags.update({Tag.STATUS: Status.RUNNING, Tag.INSTANCE: info.instance, Tag.SEED: str(state.seed)})
        if state.replica_of:
            tags[Tag.REPLICA_OF] = state.replica_of
        if state.init_run_id:  # a transfer chain: which run and trial the weights came from
            tags.update({Tag.INIT_RUN_ID: state.init_run_id, Tag.INIT_TRIAL_ID: str(state.init_trial_id)})
        self.writer.start_run(state.trial_id, info.experiment_id, state.name, tags,
                              find_by={Tag.TRIAL_ID: state.trial_id, Tag.INSTANCE: info.instance},
                              parent_key=PARENT_KEY)
        self.writer.log_params(state.trial_id, state.params)
        if info.dataset is not None:
            self.writer.log_input(state.trial_id, info.dataset)
        config = Path(info.configs_dir) / state.trial_id / Artifact.CONFIG
        atomic_write_text(config, yaml.safe_dump(state.config, sort_keys=False))
        self.writer.log_artifacts(state.trial_id, [config], "")


def same_failure(states: Iterable[TrialState]) -> str | None:
    """When the baseline and the first searched trials all failed with the same error, that error: the others will
    fail alike (a retry cannot change it), so the sweep stops instead of launching them."""
    first = sorted((s for s in states if s.replica_of is None), key=lambda s: s.index)[:SAME_FAILURE_STOPS]
    if len(first) < SAME_FAILURE_STOPS or any(s.status != Status.FAILED for s in first):
        return None
    reasons = {last_line(s.failure) for s in first}
    return reasons.pop() if len(reasons) == 1 else None


def error_text(error_file: str | None) -> str:
    """The last lines of the trial's traceback: enough to say why, short enough for a tag."""
    try:
        text = Path(error_file).read_text() if error_file else ""
    except OSError:
        text = ""
    lines = [ln for ln in text.strip().splitlines() if ln.strip(" ^~")]  # not Python's column markers
    return "\n".join(lines[-3:]) or DEAD_WORKER
