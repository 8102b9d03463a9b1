"""Out of memory is a result: the loop's test hook (SCANNER_TEST_OOM_AT=epoch:step) raises torch.OutOfMemoryError in
a real training step; the trial fails with where and what to try, or restarts at half the batch (oom: halve_batch)."""

from __future__ import annotations

import math

import pytest

from fixtures_loop import KeepingReporter, make_spec
from trainables._epoch import oom_points
from trainables.checkpoint import load_state
from trainables.errors import BadInput
from trainables.loop import MAX_OOM_RETRIES, OOM_HOOK_ENV, train_trial

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LR = 3e-3


def test_out_of_memory_fails_the_trial_and_keeps_what_it_reported(tiny_h5, tmp_path, monkeypatch):
    monkeypatch.setenv(OOM_HOOK_ENV, "2:3")
    reporter = KeepingReporter(tmp_path / "kept")
    outcome = train_trial(make_spec(tiny_h5, tmp_path / "work", epochs=3, precise_bn=0), reporter)
    assert outcome.status == "failed" and outcome.epochs == 2
    assert outcome.failure == "out of memory at epoch 2 step 3; try batch_size <= 16"
    assert (outcome.batch_size_final, outcome.oom_retries) == (32, 0)
    assert [e for e, _ in reporter.history] == [1] and outcome.best["best/epoch"] == 1.0
    assert load_state(tmp_path / "kept" / "epoch1")["epoch"] == 1
    assert list((tmp_path / "work").iterdir()) == [], "the scratch checkpoint folder is removed"


def test_halve_batch_restarts_from_the_last_checkpoint_at_half_the_batch_and_lr(tiny_h5, tmp_path, monkeypatch):
    monkeypatch.setenv(OOM_HOOK_ENV, "2:3")
    reporter = KeepingReporter(tmp_path / "kept")
    outcome = train_trial(make_spec(tiny_h5, tmp_path, epochs=3, oom="halve_batch", lr=LR), reporter)
    assert outcome.status == "completed" and outcome.failure is None
    assert (outcome.batch_size_final, outcome.oom_retries) == (16, 1)
    assert [e for e, _ in reporter.history] == [1, 2, 3]
    # cosine over 3 epochs, rebuilt for the new steps per epoch: after 2 of 3 epochs the factor is (1 + cos 2pi/3) / 2
    assert reporter.history[1][1]["train/lr"] == pytest.approx(LR / 2 * 0.5 * (1 + math.cos(2 * math.pi / 3)))
    assert reporter.history[2][1]["train/lr"] == pytest.approx(0.0, abs=1e-12)
    state = load_state(tmp_path / "kept" / "epoch2")
    assert (state["config"]["batch_size"], state["config"]["lr"], state["oom_retries"]) == (16, LR / 2, 1)

    # a worker killed after the halving resumes at the smaller batch, exactly where the trial was
    monkeypatch.delenv(OOM_HOOK_ENV)
    resumed = KeepingReporter(tmp_path / "resumed", resume=tmp_path / "kept" / "epoch2")
    again = train_trial(make_spec(tiny_h5, tmp_path, epochs=3, oom="halve_batch", lr=LR), resumed)
    assert (again.batch_size_final, again.oom_retries) == (16, 1)
    for key in ("train/loss", "val/loss", "val/accuracy", "train/lr"):
        assert resumed.history[0][1][key] == reporter.history[2][1][key], key


def test_at_most_two_halvings_then_the_trial_fails(tiny_h5, tmp_path, monkeypatch):
    monkeypatch.setenv(OOM_HOOK_ENV, ",".join(["1:2"] * (MAX_OOM_RETRIES + 1)))
    reporter = KeepingReporter(tmp_path / "kept")
    outcome = train_trial(make_spec(tiny_h5, tmp_path, epochs=2, oom="halve_batch", precise_bn=0), reporter)
    assert outcome.status == "failed" and reporter.history == []
    assert (outcome.batch_size_final, outcome.oom_retries) == (8, 2)
    assert outcome.failure == "out of memory at epoch 1 step 2 (after 2 halvings of the batch); try batch_size <= 4"


def test_the_hook_reads_epoch_step_pairs_and_an_optional_smallest_batch():
    assert oom_points("3:120, 3:120") == [(3, 120, 0), (3, 120, 0)] and oom_points(None) == []
    assert oom_points("2:1:64") == [(2, 1, 64)]
    for wrong in ("3", "1:2:3:4", "1:x", "1:2:"):
        with pytest.raises(BadInput, match=OOM_HOOK_ENV):
            oom_points(wrong)


def test_a_point_with_a_smallest_batch_spares_a_trial_below_it(tiny_h5, tmp_path, monkeypatch):
    monkeypatch.setenv(OOM_HOOK_ENV, "1:2:64,2:1:32")
    reporter = KeepingReporter(tmp_path / "kept")
    outcome = train_trial(make_spec(tiny_h5, tmp_path / "work", epochs=2, precise_bn=0), reporter)
    assert outcome.status == "failed" and outcome.failure.startswith("out of memory at epoch 2 step 1")
    assert [e for e, _ in reporter.history] == [1]  # batch 32 passed the first point, not the second
