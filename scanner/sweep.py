"""``scanner run``: Ray Tune runs the trials, Optuna chooses them, MLflow holds everything.

The driver does all the bookkeeping: it validates before creating anything, writes ``scans/<name>/scan.json``,
creates the MLflow experiment and parent run, runs ``Tuner.fit`` with one callback that feeds the spooled MLflow
writer, and ends with the test-split finals and the report. ``scanner resume`` re-enters at ``execute``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import yaml

from scanner._cluster import check_cluster, ray_init
from trainables.errors import BadInput

SCANS = "scans"  # DESIGN.md, "What a sweep writes"
EXPERIMENT_DIR = "tune"  # scans/<name>/ray/tune: Tune's experiment folder
JOURNAL = "mlflow_journal.db"  # the MLflow writer's spool (tracking.MlflowWriter)
FLUSH_S = 120.0  # how long the end of a sweep waits for an unreachable tracking server before leaving the journal


@dataclasses.dataclass
class Sweep:
    """One sweep's resolved inputs, as written to (and read back from) ``scans/<name>/scan.json``."""

    space: Any  # search_spaces.SpaceFile
    folder: Path
    tracking_uri: str
    address: str | None
    init_map: dict[str, str]

    @property
    def scan_json(self) -> Path:
        return self.folder / "scan.json"

    @property
    def experiment_path(self) -> Path:
        return self.folder / "ray" / EXPERIMENT_DIR


# --------------------------------------------------------------------------------------------- preparing


def scans_root() -> Path:
    return Path(SCANS).resolve()


def optuna_url() -> str:
    return f"sqlite:///{scans_root() / 'optuna.db'}"


def local_cluster() -> tuple[float, float]:
    """CPUs and GPUs of this machine, without starting Ray (for --dry-run and the resource check)."""
    import psutil

    gpus = 0
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) != "":
        try:
            import torch

            gpus = torch.cuda.device_count()
        except Exception:  # noqa: BLE001  a broken CUDA install means no GPU for us
            gpus = 0
    return float(psutil.cpu_count() or 1), float(gpus)


def with_trials(space, trials: int | None):
    if not trials:
        return space
    if trials < 1:
        raise BadInput(f"--trials {trials}: give at least 1 searched trial")
    return dataclasses.replace(space, budget=dataclasses.replace(space.budget, trials=int(trials)))


def init_strings(space) -> set[str]:
    """Every ``init`` value the sweep may use: fixed, baseline and the choices of a searched ``init``."""
    values = {space.fixed.get("init"), (space.baseline or {}).get("init"), space.overrides.get("init")}
    param = space.space.get("init")
    if param is not None:
        values |= set(param.choices) if param.kind == "choice" else {param.value}
    return {v for v in values if isinstance(v, str)}


def resolve_inits(space, tracking_uri: str) -> dict[str, str]:
    from scanner.init_resolve import needs_resolving, resolve_init

    return {v: resolve_init(v, tracking_uri) for v in init_strings(space) if needs_resolving(v)}


def resolved_raw(space) -> dict[str, Any]:
    """The YAML as it runs: absolute data path, the --trials override; resume reloads exactly this."""
    raw = json.loads(json.dumps(space.raw, default=str))
    raw.setdefault("data", {})["path"] = space.data.path
    raw.setdefault("budget", {})["trials"] = space.budget.trials
    return raw


def write_scan_files(sweep: Sweep) -> None:
    """scan.json + space.yaml, each written to a temp file and renamed."""
    from scanner.tracking import git_sha

    raw = resolved_raw(sweep.space)
    info = {
        "name": sweep.space.name,
        "space": raw,
        "space_file": str(sweep.space.source_path),
        "space_hash": sweep.space.space_hash,
        "tracking_uri": sweep.tracking_uri,
        "data_path": sweep.space.data.path,
        "ray_address": sweep.address or "local",
        "init_map": sweep.init_map,
        "git_sha": git_sha(),
        "optuna_storage": optuna_url(),
        "study_name": sweep.space.name,
    }
    atomic_write(sweep.folder / "space.yaml", yaml.safe_dump(raw, sort_keys=False))
    atomic_write(sweep.scan_json, json.dumps(info, indent=2))


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def prepare(space_path: str, tracking_uri: str, address: str | None, trials: int | None) -> Sweep:
    """Everything that can fail on bad input, before anything is created."""
    from scanner.tracking import check_reachable
    from search_spaces import check_resources, load_space
    from trainables.data import open_events

    space = with_trials(load_space(space_path), trials)
    folder = scans_root() / space.name
    if folder.exists():
        raise BadInput(
            f"{folder} exists: sweep '{space.name}' was started before; finish it with 'scanner resume {space.name}' "
            f"or change 'name:' in {space_path}"
        )
    open_events(space.data, space.task)
    check_reachable(tracking_uri)
    if not address:
        check_resources(space, *local_cluster())
    return Sweep(space, folder, tracking_uri, address, resolve_inits(space, tracking_uri))


def dry_run(space_path: str, trials: int | None) -> str:
    from search_spaces import format_plan, load_space

    space = with_trials(load_space(space_path), trials)
    return format_plan(space, *local_cluster())


def run_sweep(space_path: str, tracking_uri: str, address: str | None = None, trials: int | None = None,
              quiet: bool = False) -> int:
    sweep = prepare(space_path, tracking_uri, address, trials)
    started = ray_init(address) if address else False  # a cluster's resources are known only once connected
    try:
        if address:
            check_cluster(sweep)  # before scans/<name>/ exists: bad input leaves nothing behind
        sweep.folder.mkdir(parents=True)
        write_scan_files(sweep)
        return execute(sweep, restore=False, quiet=quiet)
    finally:
        if started:
            _stop_ray()


def _forget_study(name: str) -> None:
    """A new sweep of a name whose folder was deleted must not inherit that sweep's Optuna trials."""
    import optuna

    try:
        optuna.delete_study(study_name=name, storage=optuna_url())
    except KeyError:
        pass


# --------------------------------------------------------------------------------------------- running


def sweep_info(sweep: Sweep, experiment_id: str):
    from scanner._callbacks import SweepInfo
    from scanner.tracking import git_sha
    from trainables.data import data_hash, open_events

    space = sweep.space
    events = open_events(space.data, space.task)
    return SweepInfo(
        name=space.name, experiment_id=experiment_id, space=space, space_hash=space.space_hash,
        data_hash=data_hash(space.data.path), class_names=events.class_names, target_names=events.target_names,
        git_sha=git_sha(), init_map=sweep.init_map,
    )


def start_parent(writer, sweep: Sweep, experiment_id: str) -> None:
    from scanner.tracking import PARENT_KEY, git_sha

    space = sweep.space
    tags = {
        "scan.name": space.name, "scan.role": "parent", "scan.objective": space.objective.metric,
        "scan.objective_mode": space.objective.mode, "scan.task": space.task, "scan.space_hash": space.space_hash,
        "scan.also": json.dumps([{"metric": o.metric, "mode": o.mode} for o in space.objective.also]),
        "scan.status": "running", "scan.ray_address": sweep.address or "local",
    }
    sha = git_sha()
    if sha:
        tags["scan.git_sha"] = sha
    writer.start_run(PARENT_KEY, experiment_id, space.name, tags, find_by={"scan.role": "parent", "scan.name": space.name})
    writer.log_params(PARENT_KEY, {"trials": space.budget.trials, "max_epochs": space.budget.max_epochs,
                                   "sampler": space.budget.sampler, "scheduler": space.budget.scheduler,
                                   "seed": space.budget.seed})
    writer.log_artifacts(PARENT_KEY, [sweep.folder / "space.yaml", sweep.scan_json], "")


def new_tuner(sweep: Sweep, callback, ctx):
    from ray import tune

    from scanner._searcher import make_scheduler, make_searcher
    from scanner._tune_adapter import SCORE_KEY, run_trial

    space = sweep.space
    res = space.resources
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), {"cpu": res.cpu, "gpu": res.gpu})
    return tune.Tuner(
        trainable,
        param_space={},
        tune_config=tune.TuneConfig(
            search_alg=make_searcher(space, optuna_url()),
            scheduler=make_scheduler(space),
            num_samples=space.budget.trials + 1,  # + the baseline
            max_concurrent_trials=res.concurrent,
            reuse_actors=True,  # a trial process (torch imported, data file open) serves the next trial: P2
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT_DIR,
            storage_path=str(sweep.folder / "ray"),
            callbacks=[callback],
            verbose=0,  # the callback prints one line per change instead of Tune's tables
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1,  # + Ray always keeps the latest: best + latest, as the issue asks
                checkpoint_score_attribute=SCORE_KEY,
                checkpoint_score_order=space.objective.mode,
            ),
            failure_config=tune.FailureConfig(max_failures=space.budget.max_failures),
        ),
    )


def restored_tuner(sweep: Sweep, callback, ctx):
    """Tune's own snapshot, with the searcher's state; a fresh callback replaces the one pickled in tuner.pkl."""
    from ray import tune

    from scanner._tune_adapter import run_trial

    res = sweep.space.resources
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), {"cpu": res.cpu, "gpu": res.gpu})
    tuner = tune.Tuner.restore(str(sweep.experiment_path), trainable=trainable, resume_errored=True)
    tuner._local_tuner.get_run_config().callbacks = [callback]  # no public way to pass callbacks to restore
    return tuner


def execute(sweep: Sweep, restore: bool, quiet: bool = False) -> int:
    """Run (or finish) the sweep, then the finals and the report. Exit status 0, or 1 when trials failed."""
    from scanner._tune_adapter import SweepContext

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no Tune banner/tables: the callback prints progress
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Ctrl-C reaches us: runs end KILLED, Tune's snapshot stays
    started, (writer, callback) = start_ray_and_tracking(sweep, restore, quiet)
    stopping = preloading = None
    try:
        ctx = SweepContext(sweep.space, sweep.init_map, threads=max(1, int(sweep.space.resources.cpu)))
        tuner = (restored_tuner if restore else new_tuner)(sweep, callback, ctx)
        try:
            grid = tuner.fit()
        except BaseException as exc:
            from scanner.resume import end_unfinished

            end_unfinished(callback, writer, interrupted=isinstance(exc, KeyboardInterrupt))
            raise
        from scanner.resume import close_leftovers, settle_from_grid

        states = settle_from_grid(callback, grid)
        stopping = stop_ray_in_background(started)  # nothing below needs Ray: its ~1.5 s stop overlaps the finals
        preloading = _in_thread(preload_report_modules, "scan-report-imports")  # ~2.5 s of imports, beside them too
        writer.flush(FLUSH_S)
        close_leftovers(sweep, writer, set(states))
        from scanner.finals import finish

        return finish(sweep, callback, writer, list(states.values()), quiet)
    finally:
        writer.close(FLUSH_S)
        if stopping is not None:
            stopping.join()
        elif started:
            _stop_ray()
        if preloading is not None:
            preloading.join()


def start_ray_and_tracking(sweep: Sweep, restore: bool, quiet: bool):
    """Ray, then the MLflow side (experiment, spooled writer, parent run, callback). A private local Ray starts
    while the driver sets up MLflow in a thread: the two cost ~5 s each, and neither needs the other (P2)."""
    from concurrent.futures import ThreadPoolExecutor

    if sweep.address:  # joining a cluster is quick, and a dead one must fail before the parent run is touched
        started = ray_init(sweep.address)
        try:
            if restore:  # a new sweep was checked before its folder was created (run_sweep)
                check_cluster(sweep)
            return started, open_tracking(sweep, restore, quiet)
        except BaseException:
            if started:
                _stop_ray()
            raise
    with ThreadPoolExecutor(1, thread_name_prefix="scan-setup") as pool:
        tracking = pool.submit(open_tracking, sweep, restore, quiet)
        try:
            started = ray_init(None)  # in the main thread: Ray installs its SIGTERM handler only there
        except BaseException:
            _abandon_tracking(tracking)
            raise
    try:
        return started, tracking.result()
    except BaseException:
        if started:
            _stop_ray()
        raise


def open_tracking(sweep: Sweep, restore: bool, quiet: bool):
    """The experiment (created here in the driver, never by racing workers), the writer, the parent run."""
    from mlflow.tracking import MlflowClient

    import ray.tune  # noqa: F401  Tune's import (~1.5 s) overlaps Ray's start too
    from scanner._callbacks import SweepCallback
    from scanner.tracking import MlflowWriter, ensure_experiment

    if not restore:
        _forget_study(sweep.space.name)
    experiment_id = ensure_experiment(MlflowClient(sweep.tracking_uri), sweep.space.name)
    writer = MlflowWriter(sweep.tracking_uri, sweep.folder / JOURNAL)
    try:
        start_parent(writer, sweep, experiment_id)
        return writer, SweepCallback(sweep_info(sweep, experiment_id), writer, quiet=quiet)
    except BaseException:
        writer.close(FLUSH_S)
        raise


def _abandon_tracking(tracking) -> None:
    """Ray did not start: the parent run that the set-up thread opened ends FAILED, not RUNNING."""
    from scanner.tracking import PARENT_KEY

    try:
        writer, _ = tracking.result()
    except BaseException:  # noqa: BLE001  the Ray error is the one to show
        return
    writer.set_tags(PARENT_KEY, {"scan.status": "failed", "scan.failure": "Ray did not start"})
    writer.end_run(PARENT_KEY, "FAILED")
    writer.close(FLUSH_S)


def stop_ray_in_background(started: bool):
    return _in_thread(_stop_ray, "scan-ray-stop") if started else None


def preload_report_modules() -> None:
    try:
        from reports import preload

        preload()
    except Exception:  # noqa: BLE001  the report itself says what is broken, in its own words
        pass


def _in_thread(target, name: str):
    import threading

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def _stop_ray() -> None:
    import ray

    ray.shutdown()
