"""The baseline first, then Optuna; and a scheduler that never stops the baseline.

``points_to_evaluate`` cannot carry the baseline with a define-by-run space (ray#35319), and the baseline's config
may lie outside the space (another model), so it never enters the Optuna study: it is the reference, not a sample.
"""

from __future__ import annotations

import pickle
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

BASELINE_KEY = "_scan_baseline"  # the only key of the baseline's Tune config; the trainable builds the rest


def is_baseline(config: dict[str, Any]) -> bool:
    return bool(config.get(BASELINE_KEY))


class BaselineFirst(Searcher):
    """Suggests ``{BASELINE_KEY: True}`` for the first trial, then whatever the wrapped searcher suggests."""

    def __init__(self, inner: Searcher, with_baseline: bool = True):
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.inner = inner
        self.with_baseline = with_baseline
        self.baseline_trial_id: str | None = None

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str):
        if self.with_baseline and self.baseline_trial_id is None:
            self.baseline_trial_id = trial_id
            return {BASELINE_KEY: True}
        return self.inner.suggest(trial_id)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id != self.baseline_trial_id:
            self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id != self.baseline_trial_id:
            self.inner.on_trial_complete(trial_id, result=result, error=error)

    def save(self, checkpoint_path: str) -> None:
        state = {"baseline_trial_id": self.baseline_trial_id, "with_baseline": self.with_baseline}
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"self": state, "inner": self.inner.__dict__.copy()}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.__dict__.update(state["self"])
        self.inner.__dict__.update(state["inner"])


class SparingBaseline(TrialScheduler):
    """Delegates to ``inner`` (ASHA, ...) for every trial but the baseline, which runs FIFO to max_epochs."""

    def __init__(self, inner: TrialScheduler):
        super().__init__()
        self.inner = inner

    @property
    def metric(self):
        return self.inner.metric

    @property
    def supports_buffered_results(self):
        return self.inner.supports_buffered_results

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return self.inner.set_search_properties(metric, mode, **spec)

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        if not is_baseline(trial.config):
            self.inner.on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        if not is_baseline(trial.config):
            self.inner.on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        if is_baseline(trial.config):
            return TrialScheduler.CONTINUE
        return self.inner.on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        if not is_baseline(trial.config):
            self.inner.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        if not is_baseline(trial.config):
            self.inner.on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        for trial in tune_controller.get_trials():  # the baseline first: the report compares everything with it
            if is_baseline(trial.config) and trial.status in (Trial.PENDING, Trial.PAUSED):
                return trial
        return self.inner.choose_trial_to_run(tune_controller)

    def debug_string(self) -> str:
        return self.inner.debug_string()

    def save(self, checkpoint_path: str) -> None:
        self.inner.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.inner.restore(checkpoint_path)


# --------------------------------------------------------------------------------------------- factories

ASHA_REDUCTION = 2  # with 4-8 epochs, halving gives rungs at 1, 2, 4, 8 epochs; Ray's 4 would leave one rung
HYPERBAND_BRACKETS = 3  # asynchronous Hyperband: ASHA over several grace periods (Li et al. 2020)


def make_sampler(space):
    """The Optuna sampler of ``budget.sampler``, seeded; TPE with a start-up sized to the budget."""
    import optuna

    budget, seed = space.budget, space.budget.seed
    name = budget.sampler
    if name == "tpe":
        # Optuna's 10 random start-up trials would be the whole of a 12-trial budget; a third of it is random here.
        startup = max(2, min(10, budget.trials // 3))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        from search_spaces import grid_space

        return optuna.samplers.GridSampler(grid_space(space), seed=seed)
    if name == "nsga2":
        # NSGA-II's default population of 50 is larger than most budgets: a few generations must fit in it.
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, budget.trials // 3)))
    raise ValueError(f"unknown sampler {name}")  # the loader validated it: this is a bug


def make_searcher(space, storage_url: str) -> BaselineFirst:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from search_spaces import define_by_run

    objectives = space.objectives
    multi = len(objectives) > 1
    inner = OptunaSearch(
        space=define_by_run(space),
        metric=[o.metric for o in objectives] if multi else objectives[0].metric,
        mode=[o.mode for o in objectives] if multi else objectives[0].mode,
        sampler=make_sampler(space),
        study_name=space.name,
        storage=optuna.storages.RDBStorage(storage_url),
    )
    return BaselineFirst(inner, with_baseline=True)


def make_scheduler(space) -> SparingBaseline:
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

    budget, objective = space.budget, space.objective
    if budget.scheduler == "fifo":
        inner = FIFOScheduler()
    else:
        inner = AsyncHyperBandScheduler(
            time_attr="training_iteration",  # one report per epoch: iterations are epochs
            metric=objective.metric,
            mode=objective.mode,
            max_t=budget.max_epochs,
            grace_period=min(budget.grace_epochs, budget.max_epochs),
            reduction_factor=ASHA_REDUCTION,
            brackets=HYPERBAND_BRACKETS if budget.scheduler == "hyperband" else 1,
        )
    return SparingBaseline(inner)
