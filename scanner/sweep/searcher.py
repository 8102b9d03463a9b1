"""The baseline first, then Optuna, never the same config twice; the Optuna study kept in step with the runs.

``points_to_evaluate`` cannot carry the baseline with a define-by-run space (ray#35319), and the baseline's config
may lie outside the space (another model), so it never enters the Optuna study: it is the reference, not a sample.

What Optuna is told, per searched trial:
- completed: COMPLETE with its best-epoch value (the value the report ranks by);
- stopped by ASHA: PRUNED with its per-epoch intermediate values (single objective; Optuna keeps no intermediate
  values for several objectives, so there it stays COMPLETE with ``scan_status`` = stopped_early);
- a NaN loss: FAIL. A crashed trial is not told at once: ``scanner resume`` may still finish it. A trial that
  never comes back is failed when the sweep settles (``settle.fail_unfinished_study_trials``).
Each trial carries ``user_attrs``: ``scan_trial_id``, ``mlflow_run_id`` and ``scan_status``; a repeat the searcher
refused carries ``scan_refused`` (it has no run).
"""

from __future__ import annotations

import json
import pickle
import random
from typing import Any, Callable

import optuna
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from scanner.sweep.results import BASELINE_KEY, FAILURE_KEY, result_epoch
from search_spaces import SpaceFile, baseline_config, define_by_run, finite_points, trial_config
from search_spaces.samplers import SAMPLERS
from trainables.config import derived_seed
from trainables.contract import Status

# Re-asks for a config not handed out before, each one Optuna ask + tell (~20 ms on sqlite). TPE gets a few: once its
# model has a clear mode it proposes that config over and over (30 re-asks failed to leave it in a 36-config test).
# Then a finite space hands over an unseen config, picked at random; an endless one (a float range) runs the repeat.
TPE_REASKS = 4
MAX_REASKS = 30
REFUSED = "a repeat of a config already handed out; not trained, so it has no run"


Storage = str | optuna.storages.BaseStorage  # a URL (sweeps: picklable), or a storage object (in-memory, in tests)


class StudyHandle:
    """The sweep's Optuna study by name and storage URL: picklable, unlike a study (Tune saves the searcher)."""

    def __init__(self, study_name: str, storage: Storage):
        self.study_name, self.storage = study_name, storage

    @property
    def storage_url(self) -> str:
        return self.storage if isinstance(self.storage, str) else type(self.storage).__name__

    def _storage(self) -> optuna.storages.BaseStorage:
        return optuna.storages.RDBStorage(self.storage) if isinstance(self.storage, str) else self.storage

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name=self.study_name, storage=self._storage())

    def enqueue(self, params: dict) -> None:
        """The next ``ask`` of the study returns these params."""
        self.study().enqueue_trial(params)

    def set_attrs(self, number: int, attrs: dict[str, Any]) -> None:
        """User attrs of a trial that has not finished yet (Optuna refuses to change finished ones)."""
        storage = self._storage()
        trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(self.study_name),
                                                                   number)
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial_id, key, value)


class BaselineFirst(Searcher):
    """Suggests ``{BASELINE_KEY: True}`` for the first trial, then what the wrapped ``OptunaSearch`` suggests,
    re-asking it when it repeats a config already handed out.

    Trials are seeded alike, so a repeated config trains the very same epochs again. TPE repeats often in a discrete
    space (it samples near its model's mode): in a 36-config benchmark 16 trials held only 11 distinct configs. A
    rejected repeat is told to Optuna as FAIL, which its samplers ignore: it adds no false second observation.
    When every config of a finite space has been handed out, the searcher is finished.
    """

    def __init__(self, inner: OptunaSearch, space_fn, study: StudyHandle, max_epochs: int, multi_objective: bool,
                 points: list[dict] | None = None, seed: int = 0, dedupe: bool = True,
                 baseline_twin: dict | None = None, run_ids: Callable[[str], str | None] | None = None):
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.inner = inner
        self.space_fn = space_fn  # the define-by-run function: it tags each Optuna trial it defines
        self.study = study
        self.max_epochs, self.multi_objective = max_epochs, multi_objective
        self.baseline_trial_id: str | None = None
        # every config suggested so far; the baseline's twin in the space (if any) counts: it would train the same
        self.handed_out: list[dict] = [baseline_twin] if baseline_twin is not None else []
        self.inner_ids: dict[str, str] = {}  # Tune trial id -> the id the inner searcher knows it by, after re-asks
        self.numbers: dict[str, int] = {}  # inner id -> Optuna trial number
        self.points = points  # every config of a finite space (search_spaces.finite_points), else None
        self.seed = seed
        self.dedupe = dedupe  # off for GridSampler: it walks its grid itself, and re-asking it would skip points
        self.run_ids = run_ids  # Tune trial id -> MLflow run id (the writer's journal)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str):
        if self.baseline_trial_id is None:
            self.baseline_trial_id = trial_id
            return {BASELINE_KEY: True}
        return self._new_config(trial_id)

    def _new_config(self, trial_id: str):
        for attempt in range(MAX_REASKS + 1):
            if attempt == TPE_REASKS and self.points is not None:
                unseen = self._unseen_point()
                if unseen is None:
                    return Searcher.FINISHED  # every config of the space has been handed out
                self.study.enqueue(unseen)
            inner_id = trial_id if attempt == 0 else f"{trial_id}~{attempt}"
            self.space_fn.user_attrs = {"scan_trial_id": trial_id}
            config = self.inner.suggest(inner_id)
            if self.space_fn.last_number is not None:
                self.numbers[inner_id] = self.space_fn.last_number
            if not isinstance(config, dict):  # None (nothing yet) or Searcher.FINISHED
                return config
            if not self.dedupe or not self._seen(config) or attempt == MAX_REASKS:
                self.handed_out.append(config)
                self.inner_ids[trial_id] = inner_id
                return config
            self._set_attrs(inner_id, {"scan_refused": REFUSED})
            self.inner.on_trial_complete(inner_id, result=None, error=True)  # Optuna: FAIL, no observation
        return None  # unreachable: the last attempt returns

    def _seen(self, point: dict) -> bool:
        """A config (or a point of the space, a subset of a config's keys) handed out before."""
        return any(all(_same(config.get(k), v) for k, v in point.items()) for config in self.handed_out)

    def _unseen_point(self) -> dict | None:
        unseen = [p for p in self.points if not self._seen(p)]
        return random.Random(derived_seed(self.seed, len(self.handed_out))).choice(unseen) if unseen else None

    def _set_attrs(self, inner_id: str, attrs: dict[str, Any]) -> None:
        number = self.numbers.get(inner_id)
        if number is not None:
            self.study.set_attrs(number, attrs)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id != self.baseline_trial_id:
            self.inner.on_trial_result(self.inner_ids.get(trial_id, trial_id), result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id == self.baseline_trial_id or error:
            return  # a crashed trial may come back with `scanner resume`; the sweep's settling fails it otherwise
        inner_id = self.inner_ids.get(trial_id, trial_id)
        status = self._status(result or {})
        run_id = self.run_ids(trial_id) if self.run_ids else None
        self._set_attrs(inner_id, {"scan_status": status, **({"mlflow_run_id": run_id} if run_id else {})})
        if status == Status.STOPPED_EARLY and not self.multi_objective:
            self.inner.on_trial_complete(inner_id, result=None, error=False)  # PRUNED, intermediate values kept
        else:
            self.inner.on_trial_complete(inner_id, result=self._best_values(result or {}), error=False)

    def _status(self, result: dict) -> str:
        if FAILURE_KEY in result:
            return Status.FAILED
        return Status.COMPLETED if result_epoch(result) >= self.max_epochs else Status.STOPPED_EARLY

    def _best_values(self, result: dict) -> dict:
        """The objectives at the trial's best epoch where the loop logged a ``best/`` copy (the report's ranking)."""
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        return {**result, **{m: result[f"best/{m}"] for m in metrics if f"best/{m}" in result}}

    def save(self, checkpoint_path: str) -> None:
        state = {k: v for k, v in self.__dict__.items() if k != "inner"}
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"self": state, "inner": self.inner.__dict__.copy()}, f)  # as OptunaSearch.save does

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.__dict__.update(state["self"])
        self.inner.__dict__.update(state["inner"])


def _same(a, b) -> bool:
    """Equal as configs: 1e-3 from the YAML and 0.001 from Optuna are one learning rate."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def make_searcher(space: SpaceFile, storage: Storage, run_ids: Callable[[str], str | None] | None = None
                  ) -> BaselineFirst:
    objectives = space.objectives
    multi = len(objectives) > 1
    space_fn = define_by_run(space)
    inner = OptunaSearch(
        space=space_fn,
        metric=[o.metric for o in objectives] if multi else objectives[0].metric,
        mode=[o.mode for o in objectives] if multi else objectives[0].mode,
        sampler=SAMPLERS.create(space.budget.sampler, space),
        study_name=space.name,
        storage=optuna.storages.RDBStorage(storage) if isinstance(storage, str) else storage,
    )
    grid = space.budget.sampler == "grid"
    points = None if grid else finite_points(space)
    return BaselineFirst(inner, space_fn, StudyHandle(space.name, storage), space.budget.max_epochs, multi,
                         points=points, seed=space.budget.seed, dedupe=not grid,
                         baseline_twin=baseline_twin(space, points), run_ids=run_ids)


def baseline_twin(space: SpaceFile, points: list[dict] | None) -> dict | None:
    """The point of a finite space that trains exactly the baseline's config, if there is one (TPE proposed it in
    a benchmark: a trial spent on a result the sweep already had). Endless spaces hit it with probability ~0."""
    if not points:
        return None
    base = baseline_config(space)
    # a cheap filter on the point's own keys first (a 10 000-point space must not build 10 000 TrialConfigs); init
    # is left to the full check, which drops it when training from scratch
    near = [p for p in points if all(_same(getattr(base, k, None), v) for k, v in p.items() if k != "init")]
    return next((p for p in near if trial_config(space, p) == base), None)
