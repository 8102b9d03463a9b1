"""Every loss against a value computed by hand (the derivation is in the comments), per sample."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainables.config import TrialConfig
from trainables.errors import BadInput
from trainables.losses import class_weights, create_loss
from trainables.physics import opening_angle_deg

LN3, LN4 = math.log(3.0), math.log(4.0)
# Two events, two classes, logits (0, ln 3): softmax = (1/4, 3/4). Event 0 is class 1 (p_t = 3/4), event 1 class 0
# (p_t = 1/4).
LOGITS = torch.tensor([[0.0, LN3], [0.0, LN3]])
LABELS = torch.tensor([1, 0])


def _cls(name: str, **cfg) -> torch.Tensor:
    fn = create_loss(name, TrialConfig(**cfg), "classification", class_counts=np.array([30, 10]))
    return fn(LOGITS, LABELS)


def test_ce_is_minus_log_p_true():
    expected = torch.tensor([math.log(4 / 3), LN4])  # -ln(3/4), -ln(1/4)
    assert torch.allclose(_cls("ce"), expected)


def test_weighted_ce_uses_inverse_frequency_normalised_to_mean_one():
    # counts (30, 10): inverse (1/30, 1/10), mean 1/15, so weights (0.5, 1.5): the rare class counts 3x.
    assert torch.allclose(class_weights(np.array([30, 10])), torch.tensor([0.5, 1.5]))
    expected = torch.tensor([1.5 * math.log(4 / 3), 0.5 * LN4])  # event 0 is class 1 (weight 1.5)
    assert torch.allclose(_cls("weighted_ce"), expected)


def test_weighted_ce_survives_an_empty_class_and_needs_counts():
    assert torch.allclose(class_weights(np.array([0, 1, 2])), torch.tensor([1.0, 1.0, 0.5]) / (2.5 / 3))
    with pytest.raises(BadInput, match="weighted_ce' needs the training-set class counts"):
        create_loss("weighted_ce", TrialConfig(), "classification")


def test_focal_scales_ce_by_one_minus_p_to_the_gamma():
    # gamma 2: (1 - 3/4)^2 ln(4/3) = ln(4/3)/16 ; (1 - 1/4)^2 ln 4 = 9/16 ln 4
    expected = torch.tensor([math.log(4 / 3) / 16, 9 / 16 * LN4])
    assert torch.allclose(_cls("focal", focal_gamma=2.0), expected)


def test_focal_with_gamma_zero_is_ce():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(16, 5, generator=g), torch.randint(0, 5, (16,), generator=g)
    focal = create_loss("focal", TrialConfig(focal_gamma=0.0), "classification")(logits, y)
    assert torch.allclose(focal, F.cross_entropy(logits, y, reduction="none"), rtol=0, atol=1e-7)


def test_focal_gradient_stays_finite_on_a_certain_event():
    # A logit gap of 200 makes ce exactly 0 in float32: (1 - p)^0.5 has an infinite slope at 0 without the floor.
    logits = torch.tensor([[200.0, 0.0]], requires_grad=True)
    loss = create_loss("focal", TrialConfig(focal_gamma=0.5), "classification")(logits, torch.tensor([0]))
    loss.sum().backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_label_smoothing_matches_the_hand_value_and_torch():
    # eps 0.1 over K = 2: target (0.05, 0.95) for class 1 -> 0.05 ln 4 + 0.95 ln(4/3); (0.95, 0.05) for class 0
    # -> 0.95 ln 4 + 0.05 ln(4/3)
    expected = torch.tensor([0.05 * LN4 + 0.95 * math.log(4 / 3), 0.95 * LN4 + 0.05 * math.log(4 / 3)])
    got = _cls("label_smoothing", label_smoothing=0.1)
    assert torch.allclose(got, expected)
    assert torch.allclose(got, F.cross_entropy(LOGITS, LABELS, label_smoothing=0.1, reduction="none"))


# Regression: two events, two targets. Differences pred - truth: (1, 2) and (0, -3).
PRED = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
TRUTH = torch.tensor([[0.0, 0.0], [0.0, 3.0]])


def _reg(name: str, **cfg) -> torch.Tensor:
    return create_loss(name, TrialConfig(**cfg), "regression")(PRED, TRUTH)


def test_mse_is_the_mean_square_over_targets():
    assert torch.allclose(_reg("mse"), torch.tensor([(1 + 4) / 2, 9 / 2]))


def test_smooth_l1_uses_its_beta():
    # beta 2: |d| < 2 -> d^2 / (2 beta), else |d| - beta/2.  (1, 2) -> 0.25, 1.0 ; (0, 3) -> 0, 2.0
    assert torch.allclose(_reg("smooth_l1", smooth_l1_beta=2.0), torch.tensor([(0.25 + 1.0) / 2, (0 + 2.0) / 2]))


def test_huber_uses_its_delta():
    # delta 2: |d| <= 2 -> d^2 / 2, else delta (|d| - delta/2).  (1, 2) -> 0.5, 2.0 ; (0, 3) -> 0, 4.0
    assert torch.allclose(_reg("huber", huber_delta=2.0), torch.tensor([(0.5 + 2.0) / 2, (0 + 4.0) / 2]))


def _angular(pred, truth, direction="unit_vector"):
    fn = create_loss("angular", TrialConfig(), "regression", direction=direction)
    return fn(torch.tensor(pred, dtype=torch.float32), torch.tensor(truth, dtype=torch.float32))


def test_angular_is_the_opening_angle_of_the_normalised_prediction():
    got = _angular(
        [[1, 0, 0], [2, 0, 0], [1, 1, 0], [-1, 0, 0], [0, 0, 5]],
        [[0, 1, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0]],
    )
    assert torch.allclose(got, torch.tensor([math.pi / 2, 0.0, math.pi / 4, math.pi, math.pi / 2]), atol=1e-6)


def test_angular_agrees_with_acos_on_random_directions():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 3, generator=g), torch.randn(64, 3, generator=g)
    cos = (F.normalize(a, dim=1) * F.normalize(b, dim=1)).sum(dim=1).clamp(-1, 1)
    got = create_loss("angular", TrialConfig(), "regression", direction="unit_vector")(a, b)
    assert torch.allclose(got, torch.acos(cos), atol=1e-5)


def test_angular_of_identical_vectors_is_zero_with_a_finite_gradient():
    pred = torch.tensor([[0.3, -1.2, 2.0], [0.0, 0.0, 1.0]], requires_grad=True)
    loss = create_loss("angular", TrialConfig(), "regression", direction="unit_vector")(pred, pred.detach().clone())
    loss.sum().backward()
    assert torch.allclose(loss, torch.zeros(2), atol=1e-6)
    assert torch.isfinite(pred.grad).all()


def test_angular_of_a_zero_vector_is_the_worst_angle_as_in_the_metrics():
    pred = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]], requires_grad=True)
    truth = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    loss = create_loss("angular", TrialConfig(), "regression", direction="unit_vector")(pred, truth)
    loss.sum().backward()
    expected = np.radians(opening_angle_deg(pred.detach().numpy(), truth.numpy(), "unit_vector"))
    assert torch.allclose(loss, torch.tensor(expected, dtype=torch.float32))
    assert torch.allclose(loss, torch.full((2,), math.pi))
    assert torch.isfinite(pred.grad).all()


def test_angular_theta_phi_converts_both_to_unit_vectors():
    half = math.pi / 2
    got = _angular(
        [[half, 0.0], [0.3, 1.0], [0.0, 0.0], [half, 0.0]],
        [[half, half], [0.5, 1.0], [0.0, 2.5], [half, 2 * math.pi]],  # φ wraps; at the pole φ is irrelevant
        direction="theta_phi",
    )
    assert torch.allclose(got, torch.tensor([half, 0.2, 0.0, 0.0]), atol=1e-5)


def test_angular_needs_direction_targets():
    with pytest.raises(BadInput, match="angular' needs direction targets.*got None"):
        create_loss("angular", TrialConfig(), "regression", direction=None)


def test_unknown_loss_lists_the_known_ones():
    with pytest.raises(BadInput, match="Unknown loss 'l1'; known: angular, ce, focal"):
        create_loss("l1", TrialConfig(), "regression")


def test_int32_labels_from_hdf5_are_accepted():
    loss = create_loss("ce", TrialConfig(), "classification")(LOGITS, LABELS.to(torch.int32))
    assert torch.allclose(loss, torch.tensor([math.log(4 / 3), LN4]))
