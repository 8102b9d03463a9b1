"""The Tune side of a sweep: a new ``Tuner`` (trainable, searcher, scheduler, storage) or one restored from Tune's
own snapshot for ``scanner resume``."""

from __future__ import annotations

import contextlib
from pathlib import Path

from ray import tune
from ray.tune import ResultGrid

from scanner.compat import set_restored_callbacks
from scanner.sweep.driver import SweepDriver
from scanner.sweep.results import SCORE_KEY
from scanner.sweep.scheduler import make_scheduler
from scanner.sweep.searcher import make_searcher
from scanner.sweep.setup import EXPERIMENT_DIR, Sweep, optuna_url
from scanner.sweep.trial import CHECKPOINT_GLOB, SweepContext, run_trial
from scanner.sweep.tune_state import StateKeeper
from scanner.tracking import JournalRunIds


def trainable(sweep: Sweep, data_hash: str | None = None):
    res = sweep.space.resources
    ctx = SweepContext(sweep.space, sweep.init_map, threads=max(1, int(res.cpu)), scratch=str(sweep.scratch),
                       data_hash=data_hash)
    return tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), {"cpu": res.cpu, "gpu": res.gpu})


def new_tuner(sweep: Sweep, driver: SweepDriver) -> tune.Tuner:
    space = sweep.space
    return tune.Tuner(
        trainable(sweep, driver.info.data_hash),
        param_space={},
        tune_config=tune.TuneConfig(
            search_alg=make_searcher(space, optuna_url(), run_ids=JournalRunIds(sweep.journal)),
            scheduler=make_scheduler(space),
            num_samples=space.budget.trials + 1,  # + the baseline
            max_concurrent_trials=space.resources.concurrent,
            reuse_actors=True,  # a trial process (torch imported, data file open) serves the next trial
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT_DIR,
            storage_path=str(sweep.folder / "ray"),
            callbacks=[driver, StateKeeper(sweep.experiment_path)],
            verbose=0,  # the driver prints one line per change instead of Tune's tables
            log_to_file=True,  # each trial's stdout/stderr in its folder: a checkpoint fallback says so there
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1,  # + Ray always keeps the latest: best + latest
                checkpoint_score_attribute=SCORE_KEY,
                checkpoint_score_order=space.objective.mode,
            ),
            failure_config=tune.FailureConfig(max_failures=space.budget.max_failures),
        ),
    )


def fit_restored(path: Path, sweep: Sweep, driver: SweepDriver) -> ResultGrid:
    """Go on from Tune's own snapshot at ``path`` (with the searcher's state); a live driver replaces the one pickled
    in tuner.pkl. Errored trials are resumed too (a full disk, an interrupted worker). ``scanner resume`` has already
    put back the last whole copy of state files a full disk truncated."""
    with stand_ins_for_deleted_checkpoints(path):
        tuner = tune.Tuner.restore(str(path), trainable=trainable(sweep, driver.info.data_hash), resume_errored=True)
        set_restored_callbacks(tuner, [driver, StateKeeper(path)])
        return tuner.fit()


@contextlib.contextmanager
def stand_ins_for_deleted_checkpoints(experiment: Path):
    """An empty folder for each checkpoint a trial no longer has below its newest, while Tune restores.

    Tune deletes a trial's older checkpoint (``num_to_keep``) when a newer one arrives, and writes the snapshot that
    stops naming it a moment later. A kill in between leaves a snapshot naming a missing folder, and Tune's restore
    then fails that trial for good ("does not exist on storage anymore"). With an empty folder in its place, the
    trial's ``TuneReporter.resume_from`` skips it (no state loads) and goes on from the newest checkpoint that loads.
    The stand-ins still empty afterwards are removed."""
    made = []
    for trial_dir in {c.parent for c in experiment.glob(f"*/{CHECKPOINT_GLOB}")}:
        present = {int(c.name.rpartition("_")[2]) for c in trial_dir.glob(CHECKPOINT_GLOB)
                   if c.name.rpartition("_")[2].isdigit()}
        for index in range(max(present, default=0)):
            if index not in present:
                folder = trial_dir / f"checkpoint_{index:06d}"
                folder.mkdir()
                made.append(folder)
    try:
        yield made
    finally:
        for folder in made:
            with contextlib.suppress(FileNotFoundError, OSError):  # gone (Tune rotated it) or used: leave it
                folder.rmdir()


def resumable(sweep: Sweep) -> bool:
    """Tune saved its state: ``scanner resume`` can go on from it."""
    return (sweep.experiment_path / "tuner.pkl").exists()
