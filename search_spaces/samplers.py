"""The Optuna samplers a space may name in ``budget.sampler``: a registry, one factory per name.

    sampler = SAMPLERS.create("tpe", space)        # seeded, sized to the space's budget

Optuna is imported inside the factories: loading a space must stay quick (``scanner --help``, ``--dry-run``).
"""

from __future__ import annotations

from typing import Any, Callable

from search_spaces._optuna import grid_space
from search_spaces._schema import SpaceFile
from trainables.registry import Registry

SAMPLERS: Registry[Callable[[SpaceFile], Any]] = Registry("sampler")
TPE_STARTUP_MAX = 10  # Optuna's own default start-up
NSGA2_POPULATION_MAX = 50  # Optuna's own default population


@SAMPLERS.register("tpe", multi_objective=True)
def tpe(space: SpaceFile):
    import optuna  # heavy: only when a sweep builds its searcher

    # Optuna's 10 random start-up trials would be the whole of a 12-trial budget; a third of it is random here.
    startup = max(2, min(TPE_STARTUP_MAX, space.budget.trials // 3))
    return optuna.samplers.TPESampler(seed=space.budget.seed, n_startup_trials=startup, constant_liar=True)


@SAMPLERS.register("cmaes", multi_objective=False)
def cmaes(space: SpaceFile):
    import optuna  # heavy: only when a sweep builds its searcher

    return optuna.samplers.CmaEsSampler(seed=space.budget.seed, warn_independent_sampling=False)


@SAMPLERS.register("random", multi_objective=True)
def random_sampler(space: SpaceFile):
    import optuna  # heavy: only when a sweep builds its searcher

    return optuna.samplers.RandomSampler(seed=space.budget.seed)


@SAMPLERS.register("grid", multi_objective=True)
def grid(space: SpaceFile):
    import optuna  # heavy: only when a sweep builds its searcher

    return optuna.samplers.GridSampler(grid_space(space), seed=space.budget.seed)


@SAMPLERS.register("nsga2", multi_objective=True)
def nsga2(space: SpaceFile):
    import optuna  # heavy: only when a sweep builds its searcher

    # NSGA-II's default population of 50 is larger than most budgets: a few generations must fit in it.
    population = max(4, min(NSGA2_POPULATION_MAX, space.budget.trials // 3))
    return optuna.samplers.NSGAIISampler(seed=space.budget.seed, population_size=population)
