"""``budget.final_seeds``: its default, its one-line error, the shipped spaces, and the replicas' cost in the plan."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from search_spaces import format_plan, load_space
from trainables.errors import BadInput

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
DOC = {"name": "seeds", "task": "classification", "data": {"path": "events.h5"},
       "objective": {"metric": "val/accuracy", "mode": "max"},
       "budget": {"trials": 6, "max_epochs": 4, "final_top": 2},
       "baseline": {"model": "small_cnn"}, "space": {"lr": {"float": [1e-4, 1e-1], "log": True}}}


def space_with(tmp_path, **budget):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**DOC, "budget": {**DOC["budget"], **budget}}))
    return load_space(path, require_data=False)


def test_default_is_one_run_per_finalist_and_no_replica_line(tmp_path):
    space = space_with(tmp_path)
    assert space.budget.final_seeds == 1
    assert "replica" not in format_plan(space, cluster_cpus=2, cluster_gpus=0).lower()


def test_the_plan_shows_the_replicas_extra_epochs(tmp_path):
    plan = format_plan(space_with(tmp_path, final_seeds=3), cluster_cpus=2, cluster_gpus=0)
    # (2 finalists + 1 baseline) x 2 more seeds = 6 replicas, each up to 4 epochs
    assert ("Seed replicas: (2 finalists + 1 baseline) x 2 more seed(s) = 6 replicas, each trained up to its "
            "original's best epoch (at most 4) and tested once: up to 24 extra epochs, about 12 epoch-lengths more "
            "at 2 at once") in plan, plan


@pytest.mark.parametrize("value", [0, -1, 1.5, "3", True])
def test_final_seeds_below_one_or_not_a_whole_number_is_one_line(tmp_path, value):
    with pytest.raises(BadInput) as err:
        space_with(tmp_path, final_seeds=value)
    text = str(err.value)
    assert "\n" not in text and "budget.final_seeds" in text and ">= 1" in text and str(tmp_path / "s.yaml") in text


@pytest.mark.parametrize("name, seeds", [("lartpc_3class", 3), ("lartpc_direction", 3), ("lartpc_transfer", 3),
                                         ("demo", 2)])
def test_shipped_spaces_use_replicas(name, seeds):
    assert load_space(SPACES / f"{name}.yaml", require_data=False).budget.final_seeds == seeds
