"""Classification physics metrics: accuracy, efficiency (recall), purity (precision), FOM, one-vs-rest AUC.

Names come back without the ``val/`` / ``test/`` prefix (the loop adds it). A metric that is undefined on the data
given (a class absent from the truth, nothing predicted as a class) is left out, never reported as 0.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from trainables.contract import metric_key
from trainables.physics import check_weights, weighted_fraction_err, weighted_roc_auc


def _check_inputs(scores: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels).reshape(-1)
    n_classes = len(class_names)
    if scores.ndim != 2 or scores.shape[1] != n_classes:
        raise ValueError(f"scores have shape {scores.shape}; expected (N, {n_classes}) for classes {list(class_names)}")
    if labels.shape[0] != scores.shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {scores.shape[0]} score rows")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or inf (a diverged model should stop as TrialDiverged before this)")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}); got {labels.min()}..{labels.max()}")
    return scores, labels.astype(np.int64)


def confusion(labels: np.ndarray, predicted: np.ndarray, n_classes: int, weights: np.ndarray | None) -> np.ndarray:
    """(C, C) matrix, rows = truth, columns = prediction: counts (int64), or summed weights when weights are given."""
    flat = np.bincount(labels * n_classes + predicted, weights=weights, minlength=n_classes * n_classes)
    matrix = flat.reshape(n_classes, n_classes)
    return matrix if weights is not None else matrix.astype(np.int64)


def _put_fraction(metrics: dict[str, float], name: str, result: tuple[float, float] | None) -> None:
    if result is not None:
        metrics[name], metrics[name + "_err"] = result


def classification_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    weights: np.ndarray | None = None,
) -> tuple[dict[str, float], np.ndarray]:
    """Physics metrics of a classifier from softmax ``scores`` (N, C) and integer ``labels`` (N,).

    Returns ``(metrics, confusion)``. Per class ``c``: ``efficiency/c`` (recall: weighted fraction of true c predicted
    as c), ``purity/c`` (precision: weighted fraction of predicted c that are true c), ``fom/c`` = efficiency x purity
    and ``auc/c`` (one-vs-rest ROC AUC on the class-c score). Also ``accuracy``. The prediction is the argmax. ``c`` is
    the class name's metric key (``trainables.contract.metric_key``: ``nue+CC`` -> ``nue_CC``).

    Errors (``<name>_err``) are 1-sigma Wilson half-widths at the Kish effective count ``(sum w)^2 / sum w^2``, with
    the weighted fraction as the observed proportion. ``fom/c_err`` propagates the efficiency and purity errors as if
    they were independent; they share the true positives, so it is an approximation (usually a slight overestimate).

    Keys are absent, not 0, where a metric is undefined: efficiency when class c has no true events, purity when
    nothing is predicted as c, fom when either is missing, auc when c is absent from the truth or is the only class.
    The confusion matrix holds counts without weights and weighted sums with them.
    """
    scores, labels = _check_inputs(scores, labels, class_names)
    w = check_weights(weights, labels.shape[0])
    predicted = np.argmax(scores, axis=1) if scores.shape[0] else np.zeros(0, dtype=np.int64)
    correct = predicted == labels
    metrics: dict[str, float] = {}
    _put_fraction(metrics, "accuracy", weighted_fraction_err(correct, w))
    for c, real_name in enumerate(class_names):
        name = metric_key(real_name)  # nue+CC -> nue_CC: MLflow refuses most punctuation in metric names
        is_true, is_pred = labels == c, predicted == c
        _put_fraction(metrics, f"efficiency/{name}", weighted_fraction_err(correct[is_true], w[is_true]))
        _put_fraction(metrics, f"purity/{name}", weighted_fraction_err(correct[is_pred], w[is_pred]))
        _put_fom(metrics, name)
        auc = weighted_roc_auc(scores[:, c], is_true, w)
        if auc is not None:
            metrics[f"auc/{name}"] = auc
    return metrics, confusion(labels, predicted, len(class_names), None if weights is None else w)


def _put_fom(metrics: dict[str, float], name: str) -> None:
    """FOM = eff x pur; its error adds the relative errors in quadrature (treated as independent)."""
    eff, pur = metrics.get(f"efficiency/{name}"), metrics.get(f"purity/{name}")
    if eff is None or pur is None:
        return
    eff_err, pur_err = metrics[f"efficiency/{name}_err"], metrics[f"purity/{name}_err"]
    metrics[f"fom/{name}"] = eff * pur
    metrics[f"fom/{name}_err"] = math.hypot(pur * eff_err, eff * pur_err)
