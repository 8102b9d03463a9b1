"""The baseline first, then Optuna, never the same config twice; and a scheduler that never stops the baseline.

``points_to_evaluate`` cannot carry the baseline with a define-by-run space (ray#35319), and the baseline's config
may lie outside the space (another model), so it never enters the Optuna study: it is the reference, not a sample.
"""

from __future__ import annotations

import json
import pickle
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

BASELINE_KEY = "_scan_baseline"  # the only key of the baseline's Tune config; the trainable builds the rest
# Re-asks for a config not handed out before, each one Optuna ask + tell (~20 ms on sqlite). TPE gets a few: once its
# model has a clear mode it proposes that config over and over (30 re-asks failed to leave it in a 36-config test).
# Then a finite space hands over an unseen config, picked at random; an endless one (a float range) runs the repeat.
TPE_REASKS = 4
MAX_REASKS = 30


def is_baseline(config: dict[str, Any]) -> bool:
    return bool(config.get(BASELINE_KEY))


class BaselineFirst(Searcher):
    """Suggests ``{BASELINE_KEY: True}`` for the first trial, then what the wrapped searcher suggests, re-asking it
    when it repeats a config already handed out.

    Trials are seeded alike, so a repeated config trains the very same epochs again. TPE repeats often in a discrete
    space (it samples near its model's mode): in a 36-config benchmark 16 trials held only 11 distinct configs. A
    rejected repeat is told to Optuna as FAIL, which its samplers ignore: it adds no false second observation.
    When every config of a finite space has been handed out, the searcher is finished.
    """

    def __init__(self, inner: Searcher, with_baseline: bool = True, points: list[dict] | None = None,
                 enqueue=None, seed: int = 0, dedupe: bool = True, baseline_twin: dict | None = None):
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.inner = inner
        self.with_baseline = with_baseline
        self.baseline_trial_id: str | None = None
        # every config suggested so far; the baseline's twin in the space (if any) counts: it would train the same
        self.handed_out: list[dict] = [baseline_twin] if with_baseline and baseline_twin is not None else []
        self.inner_ids: dict[str, str] = {}  # Tune trial id -> the id the inner searcher knows it by, after re-asks
        self.points = points  # every config of a finite space (search_spaces.finite_points), else None
        self.enqueue = enqueue  # puts a config first in Optuna's queue (StudyQueue)
        self.seed = seed
        self.dedupe = dedupe  # off for GridSampler: it walks its grid itself, and re-asking it would skip points

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str):
        if self.with_baseline and self.baseline_trial_id is None:
            self.baseline_trial_id = trial_id
            return {BASELINE_KEY: True}
        return self._new_config(trial_id)

    def _new_config(self, trial_id: str):
        for attempt in range(MAX_REASKS + 1):
            if attempt == TPE_REASKS and self.points is not None:
                unseen = self._unseen_point()
                if unseen is None:
                    return Searcher.FINISHED  # every config of the space has been handed out
                self.enqueue(unseen)
            inner_id = trial_id if attempt == 0 else f"{trial_id}~{attempt}"
            config = self.inner.suggest(inner_id)
            if not isinstance(config, dict):  # None (nothing yet) or Searcher.FINISHED
                return config
            if not self.dedupe or not self._seen(config) or attempt == MAX_REASKS:
                self.handed_out.append(config)
                self.inner_ids[trial_id] = inner_id
                return config
            self.inner.on_trial_complete(inner_id, result=None, error=True)  # Optuna: FAIL, no observation
        return None  # unreachable: the last attempt returns

    def _seen(self, point: dict) -> bool:
        """A config (or a point of the space, a subset of a config's keys) handed out before."""
        return any(all(_same(config.get(k), v) for k, v in point.items()) for config in self.handed_out)

    def _unseen_point(self) -> dict | None:
        import random

        unseen = [p for p in self.points if not self._seen(p)]
        return random.Random(self.seed * 100_003 + len(self.handed_out)).choice(unseen) if unseen else None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id != self.baseline_trial_id:
            self.inner.on_trial_result(self.inner_ids.get(trial_id, trial_id), result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id != self.baseline_trial_id:
            self.inner.on_trial_complete(self.inner_ids.get(trial_id, trial_id), result=result, error=error)

    def save(self, checkpoint_path: str) -> None:
        state = {"baseline_trial_id": self.baseline_trial_id, "with_baseline": self.with_baseline,
                 "handed_out": self.handed_out, "inner_ids": self.inner_ids}  # points/enqueue/seed: from the space
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"self": state, "inner": self.inner.__dict__.copy()}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.__dict__.update(state["self"])
        self.inner.__dict__.update(state["inner"])


def _same(a, b) -> bool:
    """Equal as configs: 1e-3 from the YAML and 0.001 from Optuna are one learning rate."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


class StudyQueue:
    """``enqueue(params)``: the next ``ask`` of the sweep's Optuna study returns these params (picklable, unlike a
    bound method of a study: Tune saves the searcher with the experiment)."""

    def __init__(self, study_name: str, storage_url: str):
        self.study_name, self.storage_url = study_name, storage_url

    def __call__(self, params: dict) -> None:
        import optuna

        optuna.load_study(study_name=self.study_name, storage=self.storage_url).enqueue_trial(params)


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

    from search_spaces import define_by_run, finite_points

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
    grid = space.budget.sampler == "grid"
    points = None if grid else finite_points(space)
    return BaselineFirst(inner, with_baseline=True, points=points, enqueue=StudyQueue(space.name, storage_url),
                         seed=space.budget.seed, dedupe=not grid, baseline_twin=baseline_twin(space, points))


def baseline_twin(space, points: list[dict] | None) -> dict | None:
    """The point of a finite space that trains exactly the baseline's config, if there is one (TPE proposed it in
    one P4 seed: a trial spent on a result the sweep already had). Endless spaces hit it with probability ~0."""
    from search_spaces import baseline_config, trial_config

    if not points:
        return None
    base = baseline_config(space)
    # a cheap filter on the point's own keys first (a 10 000-point space must not build 10 000 TrialConfigs); init
    # is left to the full check, which drops it when training from scratch
    near = [p for p in points if all(_same(getattr(base, k, None), v) for k, v in p.items() if k != "init")]
    return next((p for p in near if trial_config(space, p) == base), None)


def make_scheduler(space) -> SparingBaseline:
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

    from search_spaces import ASHA_REDUCTION, HYPERBAND_BRACKETS

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
