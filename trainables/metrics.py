"""Physics metrics of one evaluation pass (numpy in, plain floats out), re-exported from small private modules.

    metrics, confusion = classification_metrics(scores, labels, class_names, weights)
    reporter.report(prefixed(metrics, "val"))          # -> "val/accuracy", "val/efficiency/nue", ...

Names follow docs/mlflow.md (see ``trainables.contract``) and come back without the split prefix.
Undefined metrics are absent, never 0. ``<name>_err`` is a 1-sigma uncertainty: Wilson for fractions, bootstrap for
the angular resolution.
"""

from __future__ import annotations

from trainables._metrics_classification import classification_metrics
from trainables._metrics_regression import regression_metrics
from trainables.physics import opening_angle_deg, weighted_quantile, wilson_err, wrap_phi

__all__ = [
    "classification_metrics",
    "regression_metrics",
    "opening_angle_deg",
    "wrap_phi",
    "wilson_err",
    "weighted_quantile",
    "prefixed",
]


def prefixed(metrics: dict, prefix: str) -> dict:
    """``{"accuracy": x}`` with prefix "val" -> ``{"val/accuracy": x}`` (a trailing "/" on the prefix is tolerated)."""
    head = prefix.rstrip("/")
    return {f"{head}/{name}": value for name, value in metrics.items()}
