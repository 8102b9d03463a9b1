"""The space under real Optuna studies: conditions, ranges, log scale, the grid, and Ray's define-by-run wrapper."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import optuna
import pytest
import yaml
from ray.tune.search.optuna.optuna_search import _OptunaTrialSuggestCaptor

from search_spaces import define_by_run, finite_points, grid_size, grid_space, load_space, suggest, trial_config
from trainables.errors import BadInput

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {
    "name": "optuna-space",
    "task": "classification",
    "data": {"path": "events.h5"},
    "objective": {"metric": "val/accuracy"},
    "fixed": {"batch_size": 16, "num_workers": 0},
    "space": {
        "loss": {"choice": ["ce", "focal", "label_smoothing"]},
        "focal_gamma": {"when": {"loss": "focal"}, "float": [0.5, 5.0]},
        "lr": {"float": [1e-5, 1e-1], "log": True},
        "warmup_epochs": {"int": [0, 4], "step": 2},
        "ema_decay": {"choice": [0.0, 0.99]},
        "grad_clip": {"when": {"ema_decay": 0.99}, "value": 5.0},
    },
}


def load(tmp_path: Path, doc: dict):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_space(path, require_data=False)


def run_study(space, sampler, n_trials: int) -> optuna.Study:
    fn = define_by_run(space)
    study = optuna.create_study(sampler=sampler, direction="maximize")

    def objective(trial: optuna.Trial) -> float:
        constants = fn(trial) or {}
        trial.set_user_attr("constants", constants)
        return 0.0

    study.optimize(objective, n_trials=n_trials)
    return study


def test_random_study_respects_conditions_and_ranges(tmp_path):
    space = load(tmp_path, SPACE)
    study = run_study(space, optuna.samplers.RandomSampler(seed=3), n_trials=50)
    losses, lrs = set(), []
    for t in study.trials:
        p = t.params
        losses.add(p["loss"])
        assert ("focal_gamma" in p) == (p["loss"] == "focal"), p
        if "focal_gamma" in p:
            assert 0.5 <= p["focal_gamma"] <= 5.0
        assert 1e-5 <= p["lr"] <= 1e-1
        lrs.append(p["lr"])
        assert p["warmup_epochs"] in (0, 2, 4)
        constants = t.user_attrs["constants"]
        assert constants["batch_size"] == 16 and constants["num_workers"] == 0
        assert ("grad_clip" in constants) == (p["ema_decay"] == 0.99)
        assert "grad_clip" not in p  # a constant is not a sampled parameter
    assert losses == {"ce", "focal", "label_smoothing"}
    assert isinstance(study.trials[0].distributions["lr"], optuna.distributions.FloatDistribution)
    assert study.trials[0].distributions["lr"].log
    # log-uniform: about half the draws lie below the geometric midpoint 1e-3; uniform would put ~1 % there
    below = sum(lr < 1e-3 for lr in lrs) / len(lrs)
    assert 0.25 < below < 0.75, below


def test_suggest_follows_dependency_order(tmp_path):
    doc = {**SPACE, "space": {"focal_gamma": SPACE["space"]["focal_gamma"], "loss": SPACE["space"]["loss"]}}
    space = load(tmp_path, doc)
    assert list(space.space) == ["loss", "focal_gamma"]  # the child was written first, the parent comes first
    trial = optuna.create_study().ask(fixed_distributions={})
    chosen = suggest(trial, space)
    assert chosen.keys() == ({"loss", "focal_gamma"} if chosen["loss"] == "focal" else {"loss"})


def test_grid_sampler_enumerates_the_grid(tmp_path):
    doc = {**SPACE, "budget": {"sampler": "grid", "trials": 12},
           "space": {"loss": {"choice": ["ce", "focal"]}, "warmup_epochs": {"int": [0, 4], "step": 2},
                     "ema_decay": {"choice": [0.0, 0.99]}}}
    space = load(tmp_path, doc)
    grid = grid_space(space)
    assert grid == {"loss": ["ce", "focal"], "warmup_epochs": [0, 2, 4], "ema_decay": [0.0, 0.99]}
    assert grid_size(space) == 12
    study = run_study(space, optuna.samplers.GridSampler(grid, seed=0), n_trials=12)
    seen = {(t.params["loss"], t.params["warmup_epochs"], t.params["ema_decay"]) for t in study.trials}
    assert len(seen) == 12


def test_grid_refuses_a_float_range(tmp_path):
    space = load(tmp_path, SPACE)  # tpe file: loads; asking it for a grid is the error
    with pytest.raises(BadInput, match=r"space.focal_gamma.float: sampler grid cannot enumerate"):
        grid_space(space)


def test_define_by_run_under_rays_captor_and_pickle(tmp_path):
    """Ray's OptunaSearch wraps the trial, captures suggest_* by name and pickles the function on save()."""
    space = load(tmp_path, SPACE)
    fn = pickle.loads(pickle.dumps(define_by_run(space)))
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    captor = _OptunaTrialSuggestCaptor(trial)
    constants = fn(captor)
    assert all(isinstance(k, str) for k in constants)
    config = {**captor.captured_values, **constants}  # what OptunaSearch.suggest hands to Tune
    assert set(captor.captured_values) == set(trial.params)
    cfg = trial_config(space, config)
    assert cfg.lr == config["lr"] and cfg.batch_size == 16 and cfg.loss == config["loss"]


def test_define_by_run_returns_none_without_constants(tmp_path):
    doc = {**SPACE, "fixed": {}, "space": {"lr": {"float": [1e-4, 1e-2], "log": True}}}
    space = load(tmp_path, doc)
    trial = optuna.create_study().ask()
    assert define_by_run(space)(trial) is None
    assert math.log10(1e-4) <= math.log10(trial.params["lr"]) <= math.log10(1e-2)


def test_finite_points_are_the_configs_a_trial_can_get(tmp_path):
    doc = {**SPACE, "space": {
        "loss": {"choice": ["ce", "focal"]},
        "focal_gamma": {"when": {"loss": "focal"}, "choice": [1.0, 2.0]},
        "warmup_epochs": {"int": [0, 4], "step": 2},
        "ema_decay": {"choice": [0.0, 0.99]},
        "grad_clip": {"when": {"ema_decay": 0.99}, "value": 5.0},
    }}
    points = finite_points(load(tmp_path, doc))
    assert len(points) == 3 * 3 * 2  # (ce | focal x 2 gammas) x 3 warmups x 2 EMA settings
    assert {"loss": "ce", "warmup_epochs": 2, "ema_decay": 0.99, "grad_clip": 5.0} in points
    assert not any("focal_gamma" in p for p in points if p["loss"] == "ce")  # inactive: not part of the config
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(40):
        drawn = suggest(study.ask(), load(tmp_path, doc))
        assert drawn in points  # the same shape suggest() gives a trial


def test_a_float_range_makes_the_space_endless(tmp_path):
    assert finite_points(load(tmp_path, SPACE)) is None

