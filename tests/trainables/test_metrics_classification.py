"""Classification metrics against scikit-learn references and hand-counted toys."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, precision_score, recall_score, roc_auc_score

from trainables.errors import BadInput
from trainables.metrics import classification_metrics, prefixed, wilson_err

CLASSES = ["nc", "nue", "numu"]


def _random_case(seed: int, n: int = 400, weighted: bool = True):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[labels]  # better than chance, far from perfect
    scores = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    scores = np.round(scores, 2)  # ties in the scores exercise the tie handling of the AUC
    weights = rng.uniform(0.1, 3.0, n) if weighted else None
    return scores, labels, weights


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sklearn(seed, weighted):
    scores, labels, weights = _random_case(seed, weighted=weighted)
    metrics, confusion = classification_metrics(scores, labels, CLASSES, weights)
    predicted = scores.argmax(axis=1)
    kw = {"sample_weight": weights}
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, predicted, **kw), abs=1e-6)
    recall = recall_score(labels, predicted, average=None, labels=[0, 1, 2], **kw)
    precision = precision_score(labels, predicted, average=None, labels=[0, 1, 2], **kw)
    for c, name in enumerate(CLASSES):
        assert metrics[f"efficiency/{name}"] == pytest.approx(recall[c], abs=1e-6)
        assert metrics[f"purity/{name}"] == pytest.approx(precision[c], abs=1e-6)
        assert metrics[f"fom/{name}"] == pytest.approx(recall[c] * precision[c], abs=1e-6)
        auc = roc_auc_score(labels == c, scores[:, c], **kw)
        assert metrics[f"auc/{name}"] == pytest.approx(auc, abs=1e-6)
    expected = confusion_matrix(labels, predicted, labels=[0, 1, 2], **kw)
    np.testing.assert_allclose(confusion, expected, atol=1e-6)
    assert confusion.dtype == (np.float64 if weighted else np.int64)


def test_multiclass_ovr_auc_agrees_with_sklearn_multiclass_api():
    scores, labels, _ = _random_case(5, weighted=False)
    scores = scores / scores.sum(axis=1, keepdims=True)  # sklearn's multiclass API insists on rows summing to 1
    metrics, _ = classification_metrics(scores, labels, CLASSES)
    per_class = roc_auc_score(labels, scores, multi_class="ovr", average=None)
    assert [metrics[f"auc/{c}"] for c in CLASSES] == pytest.approx(list(per_class), abs=1e-6)


def _toy_scores(truth_and_prediction: list[tuple[int, int, int]]):
    """Scores whose argmax is the prediction, from (truth, prediction, count) rows."""
    labels, predicted = [], []
    for truth, pred, count in truth_and_prediction:
        labels += [truth] * count
        predicted += [pred] * count
    scores = np.full((len(labels), 3), 0.1)
    scores[np.arange(len(labels)), predicted] = 0.8
    return scores, np.array(labels)


def test_three_by_three_toy_with_known_counts():
    # truth nc: 8 nc, 2 nue; truth nue: 1 nc, 6 nue, 3 numu; truth numu: 5 numu
    rows = [(0, 0, 8), (0, 1, 2), (1, 0, 1), (1, 1, 6), (1, 2, 3), (2, 2, 5)]
    scores, labels = _toy_scores(rows)
    metrics, confusion = classification_metrics(scores, labels, CLASSES)
    np.testing.assert_array_equal(confusion, [[8, 2, 0], [1, 6, 3], [0, 0, 5]])
    assert metrics["accuracy"] == pytest.approx(19 / 25)
    assert metrics["efficiency/nc"] == pytest.approx(8 / 10)
    assert metrics["efficiency/nue"] == pytest.approx(6 / 10)
    assert metrics["efficiency/numu"] == pytest.approx(1.0)
    assert metrics["purity/nc"] == pytest.approx(8 / 9)
    assert metrics["purity/nue"] == pytest.approx(6 / 8)
    assert metrics["purity/numu"] == pytest.approx(5 / 8)
    assert metrics["efficiency/nc_err"] == pytest.approx(wilson_err(8, 10))
    assert metrics["purity/numu_err"] == pytest.approx(wilson_err(5, 8))
    assert metrics["accuracy_err"] == pytest.approx(wilson_err(19, 25))
    fom_err = math.hypot((6 / 8) * wilson_err(6, 10), (6 / 10) * wilson_err(6, 8))
    assert metrics["fom/nue_err"] == pytest.approx(fom_err)


def test_weights_use_effective_count_and_weighted_fraction():
    scores, labels = _toy_scores([(0, 0, 3), (0, 1, 1), (1, 1, 4)])
    weights = np.array([1.0, 1.0, 2.0, 4.0, 1.0, 1.0, 1.0, 1.0])  # the 4.0 is the misidentified nc event
    metrics, confusion = classification_metrics(scores, labels, CLASSES, weights)
    w_nc = weights[:4]
    n_eff = w_nc.sum() ** 2 / (w_nc**2).sum()
    fraction = 4.0 / 8.0
    assert metrics["efficiency/nc"] == pytest.approx(fraction)
    assert metrics["efficiency/nc_err"] == pytest.approx(wilson_err(fraction * n_eff, n_eff))
    assert confusion[0, 1] == pytest.approx(4.0)


def test_perfect_classifier():
    scores, labels = _toy_scores([(0, 0, 5), (1, 1, 7), (2, 2, 3)])
    metrics, confusion = classification_metrics(scores, labels, CLASSES)
    assert metrics["accuracy"] == 1.0
    for c in CLASSES:
        assert metrics[f"efficiency/{c}"] == 1.0 and metrics[f"purity/{c}"] == 1.0
        assert metrics[f"auc/{c}"] == 1.0
        assert metrics[f"efficiency/{c}_err"] > 0  # Wilson is not zero at k = n
    assert np.trace(confusion) == 15


def test_absent_class_leaves_its_keys_out():
    # nobody is truly numu, and nobody is predicted numu either
    scores, labels = _toy_scores([(0, 0, 4), (0, 1, 1), (1, 1, 5)])
    metrics, _ = classification_metrics(scores, labels, CLASSES)
    for key in ("efficiency/numu", "efficiency/numu_err", "purity/numu", "fom/numu", "auc/numu"):
        assert key not in metrics
    assert "auc/nc" in metrics and "efficiency/nue" in metrics


def test_predicted_but_never_true_keeps_purity_only():
    scores, labels = _toy_scores([(0, 0, 4), (0, 2, 1), (1, 1, 5)])
    metrics, _ = classification_metrics(scores, labels, CLASSES)
    assert metrics["purity/numu"] == 0.0  # predicted once, wrong: a measured 0, not a fake one
    assert "efficiency/numu" not in metrics and "fom/numu" not in metrics and "auc/numu" not in metrics


def test_single_class_truth_has_no_auc():
    scores, labels = _toy_scores([(1, 1, 4), (1, 0, 2)])
    metrics, _ = classification_metrics(scores, labels, CLASSES)
    assert not any(key.startswith("auc/") for key in metrics)
    assert metrics["efficiency/nue"] == pytest.approx(4 / 6)


def test_zero_weights_make_a_class_undefined():
    scores, labels = _toy_scores([(0, 0, 3), (1, 1, 3)])
    weights = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    metrics, _ = classification_metrics(scores, labels, CLASSES, weights)
    assert "efficiency/nue" not in metrics and "auc/nue" not in metrics
    assert metrics["efficiency/nc"] == 1.0


def test_bad_inputs():
    scores, labels = _toy_scores([(0, 0, 3), (1, 1, 3)])
    with pytest.raises(ValueError, match="expected"):
        classification_metrics(scores[:, :2], labels, CLASSES)
    with pytest.raises(ValueError, match="labels"):
        classification_metrics(scores, labels + 5, CLASSES)
    with pytest.raises(BadInput, match="weights"):
        classification_metrics(scores, labels, CLASSES, -np.ones(6))


def test_empty_input_gives_no_metrics():
    metrics, confusion = classification_metrics(np.zeros((0, 3)), np.zeros(0, dtype=int), CLASSES)
    assert metrics == {}
    assert confusion.shape == (3, 3) and confusion.sum() == 0


def test_prefixed():
    assert prefixed({"accuracy": 0.5, "efficiency/nue": 0.4}, "val") == {"val/accuracy": 0.5, "val/efficiency/nue": 0.4}
    assert prefixed({"accuracy": 0.5}, "test/") == {"test/accuracy": 0.5}
