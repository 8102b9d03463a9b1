"""The reference predictor (fitted on the training split, scored by the trials' metric functions) on hand-made files,
and the trial flags (chance, single_class, below_reference) on hand-built cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fixtures_data import tiny_arrays
from trainables.config import DataConfig
from trainables.contract import Flag, reference_names
from trainables.flags import trial_flags
from trainables.physics import wilson_err
from trainables.reference import mean_direction, mean_targets, reference_metrics

CLASSES = ["a", "b", "c"]


def _classification_file(write_h5, weights=None):
    #            train: 30 a, 60 b, 10 c        val: 10 a, 10 b        test: 5 c, 15 b
    labels = np.array([0] * 30 + [1] * 60 + [2] * 10 + [0] * 10 + [1] * 10 + [2] * 5 + [1] * 15)
    split = np.array([0] * 100 + [1] * 20 + [2] * 20, dtype=np.uint8)
    arrays = tiny_arrays(n=len(labels), hw=8)
    arrays["labels"] = labels
    return write_h5("cls.h5", attrs={"class_names": CLASSES}, split=split, weights=weights, **arrays)


def test_the_classification_reference_is_the_majority_class(write_h5):
    ref = reference_metrics(DataConfig(path=str(_classification_file(write_h5))), "classification")
    assert ref["ref/val/accuracy"] == 0.5 and ref["ref/test/accuracy"] == 0.75
    assert ref["ref/val/accuracy_err"] == pytest.approx(wilson_err(10, 20))
    assert ref["ref/val/efficiency/b"] == 1.0 and ref["ref/val/efficiency/a"] == 0.0
    assert ref["ref/val/purity/b"] == 0.5 and "ref/val/purity/a" not in ref  # nothing predicted as a: undefined
    assert ref["ref/val/auc/a"] == 0.5 and ref["ref/test/auc/c"] == 0.5
    assert set(ref) <= reference_names("classification", CLASSES)


def test_the_weighted_majority_wins(write_h5):
    weights = np.ones(140)
    weights[:30] = 3.0  # 30 a x 3 outweigh 60 b in the training split
    ref = reference_metrics(DataConfig(path=str(_classification_file(write_h5, weights))), "classification")
    assert ref["ref/val/efficiency/a"] == 1.0 and ref["ref/val/accuracy"] == 0.5
    assert ref["ref/test/accuracy"] == 0.0


def _tilted(theta_deg: np.ndarray, phi: np.ndarray) -> np.ndarray:
    t = np.radians(theta_deg)
    return np.stack([np.sin(t) * np.cos(phi), np.sin(t) * np.sin(phi), np.cos(t)], axis=1)


def test_the_direction_reference_is_the_mean_direction(write_h5):
    rng = np.random.default_rng(0)
    n_train, n_val = 200, 50
    phi = np.concatenate([np.linspace(-np.pi, np.pi, n_train, endpoint=False), rng.uniform(-np.pi, np.pi, n_val)])
    theta = np.concatenate([np.full(n_train, 20.0), rng.uniform(0, 40, n_val)])  # train: a cone whose mean is z
    split = np.array([0] * n_train + [1] * n_val, dtype=np.uint8)
    arrays = tiny_arrays(n=n_train + n_val, hw=8)
    arrays["targets"] = _tilted(theta, phi)
    path = write_h5("dir.h5", attrs={"direction": "unit_vector", "target_names": ["dx", "dy", "dz"]},
                    split=split, **arrays)
    ref = reference_metrics(DataConfig(path=str(path)), "regression")
    assert ref["ref/val/resolution68_deg"] == pytest.approx(np.quantile(theta[n_train:], 0.68), abs=1e-3)
    assert "ref/val/resolution68_deg_err" in ref and not [k for k in ref if k.startswith("ref/test/")]
    assert ref["ref/val/bias/dz"] == pytest.approx(1.0 - np.mean(np.cos(np.radians(theta[n_train:]))), abs=1e-6)


def test_theta_phi_and_azimuth_means():
    angles = np.tile([0.3, 1.0], (5, 1))
    assert np.allclose(mean_direction(angles, None, "theta_phi"), [0.3, 1.0])
    assert np.allclose(mean_direction(np.zeros((3, 3)), None, "unit_vector"), [0, 0, 1])  # no direction at all
    targets = np.array([[1.0, 3.1], [3.0, -3.1]])
    energy, phi = mean_targets(targets, None, ["energy", "phi"])
    assert energy == 2.0 and abs(phi) == pytest.approx(np.pi)  # across the wrap, not 0


def test_a_plain_target_reference_is_its_mean(write_h5):
    arrays = tiny_arrays(n=60, hw=8)
    arrays["targets"] = np.stack([np.arange(60.0), np.full(60, 5.0)], axis=1)
    split = np.array([0] * 40 + [1] * 20, dtype=np.uint8)
    path = write_h5("reg.h5", attrs={"target_names": ["energy", "depth"]}, split=split, **arrays)
    ref = reference_metrics(DataConfig(path=str(path)), "regression")
    assert ref["ref/val/bias/energy"] == pytest.approx(19.5 - 49.5)  # train mean 19.5, val mean 49.5
    assert ref["ref/val/rms/energy"] == pytest.approx(np.std(np.arange(40.0, 60.0)))
    assert ref["ref/val/bias/depth"] == 0.0 and "ref/val/resolution68_deg" not in ref
    assert set(ref) <= reference_names("regression", target_names=["energy", "depth"])


REF_CLS = {"ref/val/accuracy": 0.35, "ref/val/accuracy_err": 0.03, "ref/val/efficiency/a": 1.0}


def _flags(val, losses=(1.1, 0.5), confusion=None, ref=REF_CLS, task="classification", objective="val/accuracy",
           mode="max"):
    return trial_flags(task, val, list(losses), confusion, ref, objective=objective, mode=mode)


def test_chance_needs_a_falling_loss_and_a_reference_figure_within_errors():
    at_chance = {"val/accuracy": 0.37, "val/accuracy_err": 0.03}
    assert _flags(at_chance) == [Flag.CHANCE]  # above the reference, but within the combined error
    assert _flags(at_chance, losses=(1.1, 1.09)) == []  # the loss did not fall: not this flag
    assert _flags(at_chance, losses=(0.5,)) == []
    assert _flags({"val/accuracy": 0.9, "val/accuracy_err": 0.01}) == []
    assert _flags({"val/loss": 0.3}) == []  # nothing to compare


def test_single_class_from_the_confusion_matrix():
    good = {"val/accuracy": 0.9}
    assert _flags(good, confusion=np.array([[5, 0, 0], [7, 0, 0], [2, 0, 0]])) == [Flag.SINGLE_CLASS]
    assert _flags(good, confusion=np.array([[5, 1, 0], [0, 3, 0], [0, 0, 2]])) == []
    assert _flags(good, confusion=np.zeros((3, 3))) == []


def test_below_reference_compares_the_objective_with_its_reference():
    below = {"val/accuracy": 0.30, "val/accuracy_err": 0.01, "val/efficiency/a": 0.9}
    assert _flags(below) == [Flag.CHANCE, Flag.BELOW_REFERENCE]
    assert _flags(below, objective="val/efficiency/a") == [Flag.CHANCE, Flag.BELOW_REFERENCE]
    assert _flags(below, objective="val/loss", mode="min") == [Flag.CHANCE]  # no reference loss


def test_a_direction_fit_no_better_than_the_mean_direction_is_flagged():
    ref = {"ref/val/resolution68_deg": 18.6, "ref/val/resolution68_deg_err": 0.4}
    learnt_nothing = {"val/resolution68_deg": 18.4, "val/resolution68_deg_err": 0.4}
    flags = _flags(learnt_nothing, ref=ref, task="regression", objective="val/resolution68_deg", mode="min")
    assert flags == [Flag.CHANCE]
    worse = {"val/resolution68_deg": 19.0, "val/resolution68_deg_err": 0.4}
    assert _flags(worse, ref=ref, task="regression", objective="val/resolution68_deg", mode="min") == [
        Flag.CHANCE, Flag.BELOW_REFERENCE]
    learnt = {"val/resolution68_deg": 9.0, "val/resolution68_deg_err": 0.4}
    assert _flags(learnt, ref=ref, task="regression", objective="val/resolution68_deg", mode="min") == []


def test_plain_targets_are_at_chance_when_no_rms_beats_the_reference():
    ref = {"ref/val/rms/energy": 10.0, "ref/val/rms/depth": 2.0, "ref/val/bias/energy": 0.0}
    same = {"val/rms/energy": 10.5, "val/rms/depth": 2.0}
    assert _flags(same, ref=ref, task="regression", objective="val/loss", mode="min") == [Flag.CHANCE]
    one_better = {"val/rms/energy": 4.0, "val/rms/depth": 2.1}
    assert _flags(one_better, ref=ref, task="regression", objective="val/rms/energy", mode="min") == []
    assert math.isfinite(ref["ref/val/rms/energy"])
