"""The seed replicas of the finalists (``budget.final_seeds``): after the search, the baseline and the ``final_top``
finalists are each trained N-1 more times with other seeds (initialisation and batch order), for the epochs at which
the original reached its best, as Ray trials of their own Tune experiment (``scans/<name>/ray/replicas``: resumable,
in parallel with the sweep's resources). They are left out of the search's study, ranking and counts.

After the finals, each replica is evaluated once on the test split, and the original's run gets the seed aggregate
``seeds/test/<metric>`` (mean), ``_std`` (ddof 1), ``_err`` (std/sqrt N) and ``seeds/n``.
"""

from __future__ import annotations

from pathlib import Path

from ray import tune
from ray.tune import ResultGrid

from scanner.seeds import seed_aggregate
from scanner.sweep.driver import SweepDriver
from scanner.sweep.progress import ProgressLine
from scanner.sweep.results import REPLICA_KEY
from scanner.sweep.setup import Sweep
from scanner.sweep.states import TrialState
from scanner.sweep.tune_state import StateKeeper
from scanner.sweep.tuner import fit_restored, trainable
from scanner.tracking import MlflowWriter
from trainables.config import derived_seed
from trainables.contract import SEEDS_TEST

EXPERIMENT_DIR = "replicas"  # scans/<name>/ray/replicas


def replica_specs(finalists: list[TrialState], seeds: int) -> list[dict]:
    """One spec per replica: the original's full config with another seed, trained to the original's best epoch."""
    specs = []
    for state in finalists:
        for k in range(1, seeds):
            seed = derived_seed(int(state.config["seed"]), k)
            specs.append({"config": {**state.config, "seed": seed}, "epochs": state.best_epoch or state.epochs,
                          "of": state.trial_id, "k": k, "seed": seed, "name": state.name, "index": state.index,
                          "baseline": state.baseline, "params": state.params, "varied": state.varied})
    return specs


def experiment_path(sweep: Sweep) -> Path:
    return sweep.folder / "ray" / EXPERIMENT_DIR


def fit_replicas(sweep: Sweep, driver: SweepDriver, specs: list[dict]) -> ResultGrid:
    """A new replicas experiment, or the one a killed driver left (Tune keeps which replicas finished)."""
    path = experiment_path(sweep)
    if (path / "tuner.pkl").exists():
        return fit_restored(path, sweep, driver)
    return tune.Tuner(
        trainable(sweep, driver.info.data_hash),
        param_space={REPLICA_KEY: tune.grid_search(specs)},
        tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=sweep.space.resources.concurrent,
                                    reuse_actors=True),
        run_config=tune.RunConfig(
            name=EXPERIMENT_DIR, storage_path=str(sweep.folder / "ray"), callbacks=[driver, StateKeeper(path)],
            verbose=0, log_to_file=True, checkpoint_config=tune.CheckpointConfig(num_to_keep=1),  # the latest: evaluated
            failure_config=tune.FailureConfig(max_failures=sweep.space.budget.max_failures),
        ),
    ).fit()


def train_replicas(sweep: Sweep, driver: SweepDriver, finalists: list[TrialState], seeds: int,
                   progress: ProgressLine) -> list[TrialState]:
    """Train every replica (or the ones a resume still owes); their states, in the driver's order."""
    specs = replica_specs(finalists, seeds)
    if not specs:
        return []
    progress.replicas = len(specs)
    grid = fit_replicas(sweep, driver, specs)
    for result in grid:  # replicas that finished before a resume: this driver never saw them
        trial_id = (result.metrics or {}).get("trial_id")
        if trial_id and trial_id not in driver.trials:
            state = driver.adopt(trial_id, dict(result.config or {}))
            state.epochs = int((result.metrics or {}).get("epoch", 0) or 0)
            state.last_checkpoint = result.checkpoint.path if result.checkpoint else None
            driver.finish(state, driver.status_of(state))
    return [s for s in driver.trials.values() if s.replica_of is not None]


def log_seed_aggregates(finalists: list[TrialState], replicas: list[TrialState], tests: dict[str, dict],
                        writer: MlflowWriter) -> None:
    """``seeds/test/...`` on each original's run: the original and its replicas that have test figures."""
    for original in finalists:
        group = [original.trial_id] + [r.trial_id for r in replicas if r.replica_of == original.trial_id]
        per_seed = [tests[t] for t in group if t in tests]
        if len(per_seed) < 2:
            continue
        figures = [{k[len("test/"):]: v for k, v in metrics.items() if k.startswith("test/")} for metrics in per_seed]
        writer.log_metrics(original.trial_id, seed_aggregate(figures, f"{SEEDS_TEST}/"), step=0)
