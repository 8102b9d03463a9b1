"""Parameter importance from the runs alone: an Optuna study rebuilt from MLflow params and objective values.

The distributions are inferred from the logged values (all params are strings in MLflow): strings or a few distinct
numbers are categorical; numbers spanning more than 100x are log-uniform floats. Optuna is imported here only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from reports._rank import Ranking

MIN_TRIALS_FOR_IMPORTANCE = 10  # below this the report says the importances are mostly noise
FEW_VALUES = 4  # up to this many distinct numbers is a choice list (e.g. ema_decay), not a range
LOG_SPAN = 100.0  # a positive range wider than this is sampled log-uniform (learning rates, weight decay)


@dataclass
class Importance:
    values: dict[str, float]  # param -> importance, largest first; empty when absent
    why_absent: str  # empty when values were computed
    params: dict[str, list]  # param -> value per completed trial, None where inactive (for the scatter plots)
    objective: list[float]
    conditional: list[str] = field(default_factory=list)  # inactive in some trials: left out of the importance
    log: set[str] = field(default_factory=set)  # sampled log-uniform (from space.yaml): log axis in the plots

    @property
    def trials(self) -> int:
        return len(self.objective)


def infer_distribution(values: list[str]):
    """An Optuna distribution for the string values one parameter took, and the values converted to it."""
    # Optuna pulls in scikit-learn (~2 s): only when importance is computed
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    numbers = _as_floats(values)
    distinct = sorted(set(values))
    if numbers is None or len(set(numbers)) <= FEW_VALUES:
        return CategoricalDistribution(distinct), list(values)
    lo, hi = min(numbers), max(numbers)
    log = lo > 0 and hi / lo > LOG_SPAN
    return FloatDistribution(lo, hi, log=log), numbers


def _as_floats(values: list[str]) -> list[float] | None:
    try:
        numbers = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    return numbers if all(math.isfinite(x) for x in numbers) else None


def param_importance(ranking: Ranking) -> Importance:
    """Importance over the params active in every completed trial; a conditional param (inactive somewhere) has
    no value in those trials, so it is shown in its scatter plot (active trials only) but not ranked here."""
    sweep = ranking.sweep
    log = sweep.space.log if sweep.space is not None else set()
    done = [r for r in ranking.ranked if r.trial.status in ("completed", "stopped_early")]
    names = [p for p in ranking.varied if any(r.trial.param(p) is not None for r in done)]
    params = {p: [r.trial.param(p) for r in done] for p in names}
    objective = [r.objective for r in done]
    # Inactive under a `when` (space.yaml), or absent from some runs (a store logs only what each trial ran).
    conditional = [p for p in names if any(p in r.trial.inactive or p not in r.trial.params for r in done)]
    names = [p for p in names if p not in conditional and len(set(params[p])) > 1 and None not in params[p]]
    if len(done) < 2:
        return Importance({}, f"needs at least 2 completed trials with an objective value; this sweep has {len(done)}",
                          params, objective, conditional, log)
    if not names:
        return Importance({}, "no parameter took more than one value across the completed trials", params, objective,
                          conditional, log)
    try:
        values = _optuna_importance(names, params, objective, sweep.mode)
    except Exception as exc:  # few or degenerate trials: say why instead of failing the report
        return Importance({}, f"Optuna could not evaluate importance ({type(exc).__name__}: {exc})", params, objective,
                          conditional, log)
    return Importance(values, "", params, objective, conditional, log)


def load_importance_module():
    # Optuna pulls in scikit-learn (~2 s): only when importance is computed
    import optuna.importance

    return optuna.importance


def _optuna_importance(names, params, objective, mode) -> dict[str, float]:
    # Optuna pulls in scikit-learn (~2 s): only when importance is computed
    import optuna

    importance = load_importance_module()

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line; the caller's level after
    try:
        distributions, converted = {}, {}
        for p in names:
            distributions[p], converted[p] = infer_distribution(params[p])
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
        study.add_trials([optuna.trial.create_trial(params={p: converted[p][i] for p in names},
                                                    distributions=distributions, value=value)
                          for i, value in enumerate(objective)])
        importances = importance.get_param_importances(study)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return dict(sorted(importances.items(), key=lambda kv: -kv[1]))
