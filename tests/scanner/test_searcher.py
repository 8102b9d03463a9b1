"""The searcher wrapper: the baseline first, then Optuna's suggestions, never a config twice (a repeat is told to
Optuna as FAIL and re-asked); results reach the Optuna trial that produced the config."""

from __future__ import annotations

from dataclasses import replace

import optuna
import pytest
from ray.tune.search import Searcher

import scanner.sweep.searcher
from scanner.sweep.results import BASELINE_KEY
from scanner.sweep.searcher import (MAX_REASKS, REFUSED, TPE_REASKS, BaselineFirst, StudyHandle, baseline_twin,
                                    make_searcher)
from scanner.sweep.settle import fail_unfinished_study_trials
from search_spaces import finite_points, load_space


class Scripted(Searcher):
    """An inner searcher that suggests a fixed sequence and records what it is told."""

    def __init__(self, configs):
        super().__init__(metric="val/accuracy", mode="max")
        self.configs, self.asked, self.completed, self.results = list(configs), [], [], []

    def suggest(self, trial_id):
        self.asked.append(trial_id)
        return self.configs.pop(0) if self.configs else Searcher.FINISHED

    def on_trial_result(self, trial_id, result):
        self.results.append((trial_id, result["val/accuracy"]))

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.completed.append((trial_id, error))


class SpaceFn:
    """What the searcher asks of the define-by-run function: the attrs it tags trials with, their number."""

    user_attrs: dict = {}
    last_number = None


class Queue:
    def __init__(self):
        self.items = []

    def enqueue(self, params):
        self.items.append(params)


def wrap(inner, study=None, **kwargs) -> BaselineFirst:
    return BaselineFirst(inner, SpaceFn(), study or Queue(), max_epochs=2, multi_objective=False, **kwargs)


def without_baseline(searcher: BaselineFirst) -> BaselineFirst:
    assert searcher.suggest("base") == {BASELINE_KEY: True}
    return searcher


def test_baseline_first_then_a_repeat_is_reasked():
    inner = Scripted([{"lr": 1}, {"lr": 1}, {"lr": 2}])
    searcher = wrap(inner)
    assert searcher.suggest("b") == {BASELINE_KEY: True}
    assert searcher.suggest("t1") == {"lr": 1}
    assert searcher.suggest("t2") == {"lr": 2}
    assert inner.asked == ["t1", "t2", "t2~1"] and inner.completed == [("t2", True)]  # the repeat: FAIL
    searcher.on_trial_result("t2", {"val/accuracy": 0.5})
    searcher.on_trial_complete("t2", {"val/accuracy": 0.5})
    searcher.on_trial_result("b", {"val/accuracy": 0.1})  # the baseline never reaches the inner searcher
    assert inner.results == [("t2~1", 0.5)] and inner.completed[-1] == ("t2~1", False)


def test_repeats_beyond_the_reasks_run_rather_than_stall():
    inner = Scripted([{"lr": 1}] * (MAX_REASKS + 2))
    searcher = without_baseline(wrap(inner))
    assert searcher.suggest("t1") == {"lr": 1}
    assert searcher.suggest("t2") == {"lr": 1}
    assert len(inner.asked) == MAX_REASKS + 2 and inner.asked[-1] == f"t2~{MAX_REASKS}"


def test_a_finite_space_hands_over_unseen_configs_then_finishes():
    queue = Queue()

    class StuckOnOne(Scripted):  # a sampler that proposes lr=1 forever, unless a config was enqueued
        def suggest(self, trial_id):
            self.asked.append(trial_id)
            return queue.items.pop(0) if queue.items else {"lr": 1}

    inner = StuckOnOne([])
    searcher = without_baseline(wrap(inner, queue, points=[{"lr": 1}, {"lr": 2}]))
    assert searcher.suggest("t1") == {"lr": 1}
    assert searcher.suggest("t2") == {"lr": 2}
    assert len(inner.asked) == 1 + TPE_REASKS + 1  # t1, the repeats the sampler got to leave lr=1, the enqueued one
    assert searcher.suggest("t3") == Searcher.FINISHED


def test_wrapper_state_survives_save_and_restore(tmp_path):
    searcher = wrap(Scripted([{"lr": 1}, {"lr": 1}, {"lr": 2}, {"lr": 2}, {"lr": 3}]))
    searcher.suggest("b"), searcher.suggest("t1"), searcher.suggest("t2")
    searcher.save(str(tmp_path / "s.pkl"))
    restored = wrap(Scripted([]))
    restored.restore(str(tmp_path / "s.pkl"))
    assert restored.baseline_trial_id == "b" and restored.inner_ids["t2"] == "t2~1"
    assert restored.suggest("t3") == {"lr": 3}  # lr=2 was handed out before the snapshot


@pytest.fixture
def discrete_space(tmp_path, tiny_h5):
    path = tmp_path / "d.yaml"
    path.write_text(
        f"name: dedup\ntask: classification\ndata: {{path: {tiny_h5}}}\n"
        "objective: {metric: val/accuracy, mode: max}\n"
        "budget: {trials: 12, max_epochs: 2, sampler: tpe, seed: 0}\n"
        "space:\n  model: {choice: [small_cnn_tiny, resnet_tiny]}\n  loss: {choice: [ce, focal, label_smoothing]}\n"
        "  lr: {choice: [3.0e-4, 1.0e-3, 2.0e-3, 4.0e-3, 8.0e-3, 1.6e-2]}\n"
    )
    return load_space(path)


def _tpe_configs(space, storage, trials: int) -> list[tuple]:
    """Suggest ``trials`` configs through the real OptunaSearch + TPE; the score peaks at one config, so TPE keeps
    proposing it (as it did in the search-efficiency benchmark)."""
    searcher = make_searcher(space, storage)
    searcher.set_search_properties("val/accuracy", "max", {})
    assert searcher.suggest("base") == {BASELINE_KEY: True}
    configs = []
    for i in range(trials):
        c = searcher.suggest(f"t{i}")
        configs.append((c["model"], c["loss"], c["lr"]))
        score = 0.9 - abs(c["lr"] - 4.0e-3) * 10 - 0.05 * (c["model"] != "resnet_tiny") - 0.02 * (c["loss"] != "ce")
        searcher.on_trial_complete(f"t{i}", {"val/accuracy": score, "training_iteration": 2})
    return configs


def test_real_tpe_repeats_in_a_discrete_space_and_the_wrapper_stops_it(discrete_space, tmp_path, monkeypatch):
    monkeypatch.setattr(scanner.sweep.searcher, "MAX_REASKS", 0)
    plain = _tpe_configs(discrete_space, optuna.storages.InMemoryStorage(), 12)
    assert len(set(plain)) < len(plain)  # the case the wrapper exists for
    monkeypatch.undo()
    storage = optuna.storages.InMemoryStorage()
    deduped = _tpe_configs(discrete_space, storage, 12)
    assert len(set(deduped)) == 12
    study = optuna.load_study(study_name="dedup", storage=storage)
    by_state = {}
    for t in study.trials:
        by_state.setdefault(t.state, []).append(t)
    assert len(by_state[optuna.trial.TrialState.COMPLETE]) == 12  # one per trial that ran, with its own value
    assert set(by_state) <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL}  # repeats: FAIL
    refused = by_state.get(optuna.trial.TrialState.FAIL, [])
    assert refused and all(t.user_attrs.get("scan_refused") == REFUSED and "mlflow_run_id" not in t.user_attrs
                           for t in refused)


def test_the_baseline_config_is_never_handed_out_again(discrete_space, tmp_path):
    """The discrete space holds the baseline's config (defaults + small_cnn_tiny/ce/1e-3): TPE must not get to
    train it a second time, and the space then finishes one config early."""
    space = replace(discrete_space, baseline={"model": "small_cnn_tiny", "loss": "ce", "lr": 1.0e-3})
    points = finite_points(space)
    assert baseline_twin(space, points) == {"model": "small_cnn_tiny", "loss": "ce", "lr": 1.0e-3}
    assert baseline_twin(replace(space, baseline={**space.baseline, "batch_size": 32}), points) is None
    searcher = make_searcher(space, optuna.storages.InMemoryStorage())
    searcher.set_search_properties("val/accuracy", "max", {})
    searcher.suggest("base")
    configs = []
    while isinstance(c := searcher.suggest(f"t{len(configs)}"), dict):
        configs.append((c["model"], c["loss"], c["lr"]))
        searcher.on_trial_complete(f"t{len(configs) - 1}", {"val/accuracy": 0.5, "training_iteration": 2})
    assert len(configs) == len(set(configs)) == len(points) - 1
    assert ("small_cnn_tiny", "ce", 1.0e-3) not in configs


def test_the_study_says_what_each_trial_became(discrete_space):
    """Completed: COMPLETE with its best-epoch value; stopped by ASHA: PRUNED with its intermediate values; a crash is
    not told at once (a resume may finish it), and settling fails it; each names its Tune trial and MLflow run."""
    storage = optuna.storages.InMemoryStorage()
    searcher = make_searcher(discrete_space, storage, run_ids=lambda trial_id: f"run-of-{trial_id}")
    searcher.set_search_properties("val/accuracy", "max", {})
    searcher.suggest("base")
    for trial_id in ("done", "stopped", "crashed"):
        searcher.suggest(trial_id)
    searcher.on_trial_result("done", {"val/accuracy": 0.5, "training_iteration": 1})
    searcher.on_trial_complete("done", {"val/accuracy": 0.6, "best/val/accuracy": 0.7, "epoch": 2})
    searcher.on_trial_result("stopped", {"val/accuracy": 0.3, "training_iteration": 1})
    searcher.on_trial_complete("stopped", {"val/accuracy": 0.3, "epoch": 1})
    searcher.on_trial_complete("crashed", None, error=True)
    study = optuna.load_study(study_name="dedup", storage=storage)
    by_id = {t.user_attrs["scan_trial_id"]: t for t in study.trials}
    assert by_id["done"].state.name == "COMPLETE" and by_id["done"].value == 0.7  # the report's ranking value
    assert by_id["done"].user_attrs["mlflow_run_id"] == "run-of-done"
    assert by_id["stopped"].state.name == "PRUNED" and by_id["stopped"].intermediate_values == {1: 0.3}
    assert by_id["stopped"].user_attrs["scan_status"] == "stopped_early"
    assert by_id["crashed"].state.name == "RUNNING"  # scanner resume may still finish it
    assert fail_unfinished_study_trials(StudyHandle("dedup", storage)) == 1
    crashed = optuna.load_study(study_name="dedup", storage=storage).trials[by_id["crashed"].number]
    assert crashed.state.name == "FAIL" and crashed.user_attrs["scan_status"] == "failed"


def run_of(trial_id: str) -> str:
    """The MLflow run id the driver would give (picklable: Tune saves the searcher)."""
    return f"run-of-{trial_id}"


def test_a_crashed_trial_that_a_resume_finishes_becomes_complete_with_its_value(discrete_space, tmp_path):
    """A crash is not told to Optuna; the searcher is saved (Tune's snapshot), restored by `scanner resume`, and the
    trial then completes: the study has it COMPLETE with its best-epoch value, not FAIL. A sqlite study, as in a
    sweep: an in-memory one would be copied by the snapshot."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    searcher = make_searcher(discrete_space, storage, run_ids=run_of)
    searcher.set_search_properties("val/accuracy", "max", {})
    searcher.suggest("base")
    searcher.suggest("crashed")
    searcher.on_trial_complete("crashed", None, error=True)
    searcher.save(str(tmp_path / "searcher.pkl"))
    resumed = make_searcher(discrete_space, storage, run_ids=run_of)
    resumed.restore(str(tmp_path / "searcher.pkl"))
    resumed.on_trial_complete("crashed", {"val/accuracy": 0.6, "best/val/accuracy": 0.7, "epoch": 2})
    assert fail_unfinished_study_trials(StudyHandle("dedup", storage)) == 0
    (trial,) = optuna.load_study(study_name="dedup", storage=storage).trials
    assert trial.state.name == "COMPLETE" and trial.value == 0.7
    assert trial.user_attrs["scan_status"] == "completed" and trial.user_attrs["mlflow_run_id"] == "run-of-crashed"


def test_a_multi_objective_study_keeps_a_stopped_trial_complete_and_says_it_was_stopped(discrete_space):
    """Optuna keeps no intermediate values for several objectives, so an ASHA-stopped trial cannot be PRUNED there:
    it is COMPLETE with its values, and ``scan_status`` says it was stopped early; refused repeats say so too."""
    objective = replace(discrete_space.objective, also=(replace(discrete_space.objective, metric="val/loss",
                                                                mode="min"),))
    space = replace(discrete_space, objective=objective)
    storage = optuna.storages.InMemoryStorage()
    searcher = make_searcher(space, storage, run_ids=lambda trial_id: f"run-of-{trial_id}")
    searcher.set_search_properties(["val/accuracy", "val/loss"], ["max", "min"], {})
    searcher.suggest("base")
    for trial_id in ("done", "stopped"):
        searcher.suggest(trial_id)
    searcher.on_trial_complete("done", {"val/accuracy": 0.6, "val/loss": 0.9, "epoch": 2})
    searcher.on_trial_result("stopped", {"val/accuracy": 0.3, "val/loss": 1.2, "training_iteration": 1})
    searcher.on_trial_complete("stopped", {"val/accuracy": 0.3, "val/loss": 1.2, "epoch": 1})
    by_id = {t.user_attrs["scan_trial_id"]: t for t in optuna.load_study(study_name="dedup", storage=storage).trials}
    assert by_id["done"].state.name == "COMPLETE" and by_id["done"].values == [0.6, 0.9]
    assert by_id["stopped"].state.name == "COMPLETE" and by_id["stopped"].values == [0.3, 1.2]
    assert by_id["stopped"].user_attrs["scan_status"] == "stopped_early"
    assert by_id["stopped"].user_attrs["mlflow_run_id"] == "run-of-stopped"
