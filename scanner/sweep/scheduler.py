"""The trial schedulers a space may name in ``budget.scheduler`` (a registry), and the wrapper that never stops the
baseline.

    scheduler = make_scheduler(space)     # SparingBaseline(ASHA | Hyperband | FIFO)
"""

from __future__ import annotations

from typing import Callable

from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from scanner.sweep.results import is_baseline
from search_spaces import ASHA_REDUCTION, HYPERBAND_BRACKETS, SpaceFile
from trainables.registry import Registry

SCHEDULERS: Registry[Callable[[SpaceFile], TrialScheduler]] = Registry("scheduler")


def _hyperband(space: SpaceFile, brackets: int) -> AsyncHyperBandScheduler:
    budget, objective = space.budget, space.objective
    return AsyncHyperBandScheduler(
        time_attr="training_iteration",  # one report per epoch: iterations are epochs
        metric=objective.metric,
        mode=objective.mode,
        max_t=budget.max_epochs,
        grace_period=min(budget.grace_epochs, budget.max_epochs),
        reduction_factor=ASHA_REDUCTION,
        brackets=brackets,
    )


@SCHEDULERS.register("asha")
def asha(space: SpaceFile) -> TrialScheduler:
    return _hyperband(space, brackets=1)


@SCHEDULERS.register("hyperband")
def hyperband(space: SpaceFile) -> TrialScheduler:
    """Asynchronous Hyperband: ASHA over several grace periods (Li et al. 2020)."""
    return _hyperband(space, brackets=HYPERBAND_BRACKETS)


@SCHEDULERS.register("fifo")
def fifo(space: SpaceFile) -> TrialScheduler:
    return FIFOScheduler()


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


def make_scheduler(space: SpaceFile) -> SparingBaseline:
    return SparingBaseline(SCHEDULERS.create(space.budget.scheduler, space))
