"""Search spaces as YAML, and the loader/validator that turns them into Optuna distributions.

    space = load_space("search_spaces/demo.yaml")          # validated SpaceFile, or one BadInput line
    print(format_plan(space, cluster_cpus=2, cluster_gpus=0))
    searcher = OptunaSearch(space=define_by_run(space), metric=..., mode=...)
    cfg = trial_config(space, sampled)                     # a trainables.config.TrialConfig

Nothing here imports torch, Ray or Optuna at import time; the model/loss/schedule registries are read lazily.
"""

from search_spaces._loader import load_space, parse_set, space_hash
from search_spaces._optuna import DefineByRun, define_by_run, finite_points, grid_size, grid_space, suggest
from search_spaces._plan import (ASHA_REDUCTION, HYPERBAND_BRACKETS, asha_rungs, check_resources, cpu_ignored_keys,
                                 format_plan, trials_at_once)
from search_spaces._resolve import (baseline_config, baseline_only, baseline_only_warning, init_uses, ran_params,
                                    sampled_keys, train_config, trial_config)
from search_spaces._schema import SCHEDULERS, Budget, Objective, Param, Resources, SpaceFile
from search_spaces.samplers import SAMPLERS

SHIPPED = ("lartpc_3class.yaml", "lartpc_transfer.yaml", "lartpc_direction.yaml", "demo.yaml")

__all__ = [
    "ASHA_REDUCTION",
    "HYPERBAND_BRACKETS",
    "SAMPLERS",
    "SCHEDULERS",
    "SHIPPED",
    "Budget",
    "DefineByRun",
    "Objective",
    "Param",
    "Resources",
    "SpaceFile",
    "asha_rungs",
    "baseline_config",
    "baseline_only",
    "baseline_only_warning",
    "check_resources",
    "cpu_ignored_keys",
    "define_by_run",
    "format_plan",
    "grid_size",
    "init_uses",
    "finite_points",
    "grid_space",
    "load_space",
    "parse_set",
    "ran_params",
    "sampled_keys",
    "space_hash",
    "suggest",
    "train_config",
    "trial_config",
    "trials_at_once",
]
