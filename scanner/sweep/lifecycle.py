"""One sweep's life, in order: prepare -> start Ray and tracking -> fit -> settle -> finals -> report -> close.

    scanner run search_spaces/demo.yaml        # run_sweep: prepare, create scans/<name>/, then live
    scanner resume demo                        # resume_sweep: the same life with Tune's restored tuner

Nothing is created before ``prepare`` has checked every input. A Ctrl-C before Tune has saved its state removes
what the start created (``scanner run`` works again); a Ctrl-C later leaves everything for ``scanner resume``.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import optuna
from mlflow.tracking import MlflowClient
from ray.tune import ResultGrid

import reports
from scanner.cluster import check_cluster, ray_init, stop_ray
from scanner.errors import Interrupted, SweepFailed
from scanner.sweep import finals
from scanner.sweep.driver import SweepDriver, SweepStopped
from scanner.sweep.progress import ProgressLine
from scanner.sweep.searcher import StudyHandle
from scanner.sweep.replicas import experiment_path as replicas_path, log_seed_aggregates, train_replicas
from scanner.sweep.settle import close_leftovers, end_unfinished, fail_unfinished_study_trials, settle_from_grid
from scanner.sweep.setup import (PHASE_DONE, PHASE_FINALS, PHASE_REPLICAS, PHASE_TEXT, Sweep, create_folder,
                                 load_sweep_folder, mark_phase, optuna_url, prepare, store_lock)
from scanner.sweep.states import SweepInfo, TrialState
from scanner.sweep.tuner import fit_restored, new_tuner, resumable
from scanner.sweep.tune_state import put_back_if_damaged
from scanner.tracking.dataset import dataset_input
from scanner.tracking.faults import disk_full
from scanner.tracking import (PARENT_KEY, JournalFull, MlflowWriter, check_reachable, ensure_experiment, git_sha,
                              quiet_store_creation, report_dropped)
from search_spaces import SpaceFile, baseline_only_warning, cpu_ignored_keys
from trainables.contract import PARENT_ROLE, Artifact, Status, Tag
from trainables.data import data_hash, open_events
from trainables.environ import scoped_environ, scoped_log_level
from trainables.reference import reference_metrics

FLUSH_S = 120.0  # how long the end of a sweep waits for an unreachable tracking server before leaving the journal
NO_SPACE_FLUSH_S = 5.0  # a full disk: what MLflow takes now is less for the resume, but nobody waits minutes
QUIET_LOGGERS = ("ray.tune",)  # Tune logs each failed trial's traceback; the driver prints its reason in one line


class CtrlC:
    """Ctrl-C, noted rather than raised wherever it lands: a KeyboardInterrupt raised inside Ray's start or a
    finaliser can be swallowed ("Exception ignored in ..."). The sweep checks at every Tune step and between phases;
    a second Ctrl-C stops at once."""

    def __init__(self):
        self.pressed = False
        self._before = None

    def __enter__(self) -> "CtrlC":
        if threading.current_thread() is threading.main_thread():  # only the main thread may set a handler
            self._before = signal.signal(signal.SIGINT, self._note)
        return self

    def __exit__(self, *exc) -> None:
        if self._before is not None:
            signal.signal(signal.SIGINT, self._before)

    def _note(self, signum, frame) -> None:
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True

    def check(self) -> None:
        if self.pressed:
            raise KeyboardInterrupt


@dataclass
class Life:
    """What a living sweep holds: its Ray, its writer and driver, and the threads that overlap its phases."""

    sweep: Sweep
    restore: bool
    progress: ProgressLine
    ctrl_c: CtrlC = field(default_factory=CtrlC)
    writer: MlflowWriter | None = None
    driver: SweepDriver | None = None
    ray_started: bool = False
    background: list[threading.Thread] = field(default_factory=list)

    def in_background(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.background.append(thread)


# --------------------------------------------------------------------------------------------- entry points


def run_sweep(space_path: str, tracking_uri: str, address: str | None = None, trials: int | None = None,
              quiet: bool = False) -> int:
    sweep = prepare(space_path, tracking_uri, address, trials)
    warning = baseline_only_warning(sweep.space)
    if warning:
        print(warning, file=sys.stderr)
    joined = ray_init(address) if address else False  # a cluster's resources are known only once connected
    try:
        if address:
            check_cluster(sweep.space)  # before scans/<name>/ exists: bad input leaves nothing behind
        create_folder(sweep, space_path)
        return live(sweep, restore=False, quiet=quiet, space_path=space_path)
    finally:
        if joined:
            stop_ray()


def resume_sweep(name: str, tracking_uri: str | None = None, quiet: bool = False) -> int:
    """Finish a sweep; one that never got as far as Tune's first snapshot (killed at start) simply starts."""
    sweep = load_sweep_folder(name)
    if tracking_uri and tracking_uri != sweep.tracking_uri and not quiet:
        print(f"scanner resume: using the sweep's own tracking URI {sweep.tracking_uri}", file=sys.stderr)
    check_reachable(sweep.tracking_uri)
    for experiment in (sweep.experiment_path, replicas_path(sweep)):  # damaged state: one line, nothing started
        put_back_if_damaged(experiment)
    if not quiet:
        print(f"scanner resume: {name} was interrupted {PHASE_TEXT[sweep.phase]}; going on from there", flush=True)
    return live(sweep, restore=resumable(sweep), quiet=quiet, space_path=None)  # its folder is not ours to undo


def live(sweep: Sweep, restore: bool, quiet: bool, space_path: str | None) -> int:
    """The phases, in order. Exit status 0, or 1 when trials failed. ``space_path``: the YAML of a ``scanner run``
    that has just created the sweep's folder (a Ctrl-C before Tune's first snapshot undoes that start); None for a
    resume, whose folder an interruption never removes."""
    life = Life(sweep, restore, ProgressLine(sweep.space.objective.metric, sweep.space.objective.mode, quiet))
    # Tune's banner and tables off (the driver prints progress); Ctrl-C reaches us, not Tune's own handler
    with scoped_environ(RAY_AIR_NEW_OUTPUT="0", TUNE_DISABLE_SIGINT_HANDLER="1"), life.ctrl_c, \
            scoped_log_level(QUIET_LOGGERS, logging.CRITICAL), scoped_log_level(("optuna",), logging.WARNING):
        try:
            start(life)
            life.ctrl_c.check()
            states = settle(life, fit(life))
            life.ctrl_c.check()
            replicas = replicate(life, states)
            life.ctrl_c.check()
            release_ray(life)
            return finish(life, states, replicas)
        except KeyboardInterrupt:
            raise interrupted(life, space_path) from None
        except SweepStopped as stop:
            end_unfinished(life.driver, life.writer, interrupted=False)
            raise SweepFailed(f"stopped: the baseline and the first trials all failed with: {stop}; fix the cause, "
                              f"then 'scanner resume {sweep.name}' retries them") from None
        except BaseException as error:
            if disk_full(error):  # the journal, Optuna's sqlite, a checkpoint: whoever met it first
                raise no_space(life) from None
            fail_unfinished(life)
            raise
        finally:
            close(life)


# --------------------------------------------------------------------------------------------- the phases


def start(life: Life) -> None:
    """Ray, then the MLflow side (experiment, writer, parent run, driver). A private local Ray starts while the set-up
    runs in a thread: the two cost ~5 s each, and neither needs the other."""
    sweep = life.sweep
    warn_ignored_on_cpu(sweep.space)
    if sweep.address:  # joining a cluster is quick, and a dead one must fail before the parent run is touched
        life.ray_started = ray_init(sweep.address)
        if life.restore:  # a new sweep was checked before its folder was created (run_sweep)
            check_cluster(sweep.space)
        life.writer, life.driver = open_tracking(sweep, life.restore, life.progress, life.ctrl_c)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="scan-setup") as pool:
        tracking: Future = pool.submit(open_tracking, sweep, life.restore, life.progress, life.ctrl_c)
        try:
            life.ray_started = ray_init(None)  # in the main thread: Ray installs its SIGTERM handler only there
        finally:
            # the set-up's writer must be closed whatever happened to Ray (a Ctrl-C cancels neither)
            life.writer, life.driver = tracking.result()


def warn_ignored_on_cpu(space: SpaceFile) -> None:
    """One line per sweep for the GPU-only keys a CPU sweep ignores (amp, channels_last)."""
    keys = cpu_ignored_keys(space) if space.resources.gpu == 0 else []
    if keys:
        print(f"scanner: {', '.join(keys)} {'is' if len(keys) == 1 else 'are'} ignored on CPU (resources.gpu is 0)",
              file=sys.stderr)


def open_tracking(sweep: Sweep, restore: bool, progress: ProgressLine, ctrl_c: CtrlC
                  ) -> tuple[MlflowWriter, SweepDriver]:
    """The stores (created one sweep at a time), the experiment (here in the driver, never by racing workers), the
    writer and the parent run."""
    import ray.tune  # noqa: F401  Tune's import (~1.5 s) overlaps Ray's start too

    with store_lock():
        if not restore:
            forget_study(sweep.name)  # a new sweep of a name whose folder was deleted must not inherit its trials
        optuna.storages.RDBStorage(optuna_url())  # creates the schema under the lock
        with quiet_store_creation():
            experiment_id = ensure_experiment(MlflowClient(sweep.tracking_uri), sweep.name)
    info = sweep_info(sweep, experiment_id)
    writer = MlflowWriter(sweep.tracking_uri, sweep.journal)
    start_parent(writer, sweep, info)
    writer.log_metrics(PARENT_KEY, info.reference, step=0)  # the line every trial must beat
    return writer, SweepDriver(info, writer, progress, on_step=ctrl_c.check)


def fit(life: Life) -> ResultGrid:
    if life.restore:
        return fit_restored(life.sweep.experiment_path, life.sweep, life.driver)
    return new_tuner(life.sweep, life.driver).fit()


def settle(life: Life, grid: ResultGrid) -> list[TrialState]:
    """Every trial's final record, runs and Optuna trials a killed driver left, failures that recovered."""
    states = settle_from_grid(life.driver, grid)
    life.writer.flush(FLUSH_S)
    close_leftovers(life.writer, life.driver.info.experiment_id, life.sweep.instance, set(states))
    fail_unfinished_study_trials(StudyHandle(life.sweep.name, optuna_url()))
    return list(states.values())


def replicate(life: Life, states: list[TrialState]) -> list[TrialState]:
    """The finalists' seed replicas (``budget.final_seeds`` > 1), as Ray trials of their own."""
    seeds = life.sweep.space.budget.final_seeds
    if seeds < 2:
        return []
    mark_phase(life.sweep, PHASE_REPLICAS)
    chosen = finals.finalists(states, life.sweep.space.objective.mode, life.sweep.space.budget.final_top)
    replicas = train_replicas(life.sweep, life.driver, chosen, seeds, life.progress)
    life.writer.flush(FLUSH_S)
    close_leftovers(life.writer, life.driver.info.experiment_id, life.sweep.instance,
                    {r.trial_id for r in replicas}, replicas=True)
    return replicas


def release_ray(life: Life) -> None:
    """Nothing below needs Ray: its stop overlaps the finals, and so do the report's slow imports."""
    if life.ray_started:
        life.in_background(stop_ray, "scan-ray-stop")
        life.ray_started = False
    life.in_background(reports.preload, "scan-report-imports")


def finish(life: Life, states: list[TrialState], replicas: list[TrialState]) -> int:
    """Finals on the test split (and the replicas), the seed aggregates, the study summary, the report, the end."""
    sweep, writer, space = life.sweep, life.writer, life.sweep.space
    mark_phase(sweep, PHASE_FINALS)
    chosen = finals.finalists(states, space.objective.mode, space.budget.final_top)
    tests = finals.run_finals(space, chosen, replicas, writer, sweep.folder / "finals", life.progress)
    log_seed_aggregates(chosen, replicas, tests, writer)
    finals.log_study_summary(StudyHandle(sweep.name, optuna_url()), writer, sweep.folder)
    best = finals.log_best_objective(states, space.objective.mode, writer)
    failed = sum(s.status == Status.FAILED for s in states)
    writer.set_tags(PARENT_KEY, {Tag.STATUS: Status.FINISHED, Tag.TRIALS_FAILED: str(failed)})
    writer.flush(FLUSH_S)
    for thread in life.background:  # the report needs its imports
        thread.join()
    report = finals.build_report(sweep.name, sweep.instance, sweep.tracking_uri, writer, sweep.report_dir)
    report_dropped(writer, PARENT_KEY, sweep.folder, flush_s=FLUSH_S)
    writer.end_run(PARENT_KEY, "FINISHED")
    life.progress.say(finals.summary_line(sweep.name, states, best, space.objective.metric, report,
                                          sweep.tracking_uri))
    mark_phase(sweep, PHASE_DONE)
    return 1 if failed else 0


def close(life: Life) -> None:
    """Safe to call twice (an interrupted start closes early, then the life's end closes again)."""
    writer, life.writer = life.writer, None
    if writer is not None:
        writer.close(FLUSH_S)
    for thread in life.background:
        thread.join()
    life.background.clear()
    if life.ray_started:
        stop_ray()


def fail_unfinished(life: Life) -> None:
    """A driver error: no run is left RUNNING (unless the journal itself can take nothing more)."""
    if life.driver is None:
        return
    try:
        end_unfinished(life.driver, life.writer, interrupted=False)
    except JournalFull:
        end_runs_directly(life, "the sweep's driver failed; its journal is full")


def no_space(life: Life) -> SweepFailed:
    """A full disk under the sweep's folder: the journal keeps what it holds, the runs end FAILED straight through
    MLflow (nothing stays RUNNING: the journal cannot take their end), and `scanner resume` finishes once there is
    space."""
    folder = life.sweep.folder
    unreached = []
    if life.writer is not None:
        unreached = end_runs_directly(life, f"no space left on device under {folder}")
        # no second wait: a run whose start MLflow takes only now would stay RUNNING; the resume writes the rest
        life.writer.close(0.0, say=False)  # the line below says what the journal keeps
        life.writer = None
    tail = f" ({len(unreached)} run(s) could not be ended: MLflow's store is full too)" if unreached else ""
    return SweepFailed(f"no space left on device under {folder}: the sweep stopped; its journal keeps what MLflow "
                       f"has not taken yet{tail}; free some space, then 'scanner resume {life.sweep.name}'")


def end_runs_directly(life: Life, why: str) -> list[str]:
    """The writer's ``end_runs_directly`` for this sweep: its runs are the ones tagged with its instance."""
    experiment_id = life.driver.info.experiment_id if life.driver is not None else None
    return life.writer.end_runs_directly(why, NO_SPACE_FLUSH_S, experiment_id, {Tag.INSTANCE: life.sweep.instance})


def interrupted(life: Life, space_path: str | None) -> Interrupted:
    """A Ctrl-C: before Tune saved its state, the start of a ``scanner run`` is undone; after it, or in a resume, the
    sweep waits for a resume."""
    sweep = life.sweep
    if space_path is not None and not life.restore and not resumable(sweep):
        if life.writer is not None:
            life.writer.delete_run(PARENT_KEY)
        close(life)
        shutil.rmtree(sweep.folder, ignore_errors=True)
        return Interrupted(f"interrupted during start-up; nothing was kept: run 'scanner run {space_path}' again")
    if life.driver is not None:
        end_unfinished(life.driver, life.writer, interrupted=True)
    return Interrupted(f"interrupted; finish the sweep with 'scanner resume {sweep.name}'")


# --------------------------------------------------------------------------------------------- the parent run


def forget_study(name: str) -> None:
    try:
        optuna.delete_study(study_name=name, storage=optuna_url())
    except KeyError:
        pass


def sweep_info(sweep: Sweep, experiment_id: str) -> SweepInfo:
    space = sweep.space
    events = open_events(space.data, space.task)
    digest = data_hash(space.data.path)
    return SweepInfo(
        name=space.name, instance=sweep.instance, experiment_id=experiment_id, space=space,
        data_hash=digest, class_names=events.class_names, target_names=events.target_names,
        git_sha=git_sha(), init_map=sweep.init_map, configs_dir=str(sweep.configs_dir),
        log_checkpoints=space.tracking.logs_checkpoints(sweep.tracking_uri),
        reference=reference_metrics(space.data, space.task), init_sources=dict(sweep.init_sources),
        dataset=dataset_input(events, digest),
    )


def start_parent(writer: MlflowWriter, sweep: Sweep, info: SweepInfo) -> None:
    space = sweep.space
    tags = {
        Tag.NAME: space.name, Tag.ROLE: PARENT_ROLE, Tag.INSTANCE: sweep.instance,
        Tag.OBJECTIVE: space.objective.metric,
        Tag.OBJECTIVE_MODE: space.objective.mode, Tag.TASK: space.task, Tag.SPACE_HASH: space.space_hash,
        Tag.ALSO: json.dumps([{"metric": o.metric, "mode": o.mode} for o in space.objective.also]),
        Tag.STATUS: Status.RUNNING, Tag.RAY_ADDRESS: sweep.address or "local",
    }
    if info.git_sha:
        tags[Tag.GIT_SHA] = info.git_sha
    for tag, names in ((Tag.CLASS_NAMES, info.class_names), (Tag.TARGET_NAMES, info.target_names)):
        if names is not None:
            tags[tag] = json.dumps(list(names))  # the real names: metric names carry their metric keys
    writer.start_run(PARENT_KEY, info.experiment_id, space.name, tags,
                     find_by={Tag.ROLE: PARENT_ROLE, Tag.NAME: space.name, Tag.INSTANCE: sweep.instance})
    writer.log_params(PARENT_KEY, {"trials": space.budget.trials, "max_epochs": space.budget.max_epochs,
                                   "sampler": space.budget.sampler, "scheduler": space.budget.scheduler,
                                   "seed": space.budget.seed})
    writer.log_artifacts(PARENT_KEY, [sweep.folder / Artifact.SPACE, sweep.scan_json], "")
