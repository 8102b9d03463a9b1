"""The training loop end to end on a real tiny HDF5 file: contract metrics, exact resume, EMA, divergence, finals."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch
from fixtures_loop import KeepingReporter, make_spec

from trainables.checkpoint import load_state
from trainables.config import DataConfig, TrialConfig, TrialSpec
from trainables.contract import Artifact
from trainables.loop import evaluate_checkpoint, train_trial
from trainables.reporting import MemoryReporter

CLASSES = ("NC", "nueCC", "numuCC")
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # 2 shared cores: threads would fight


def test_one_trial_reports_every_contract_metric(tiny_h5, tmp_path):
    reporter = KeepingReporter(tmp_path / "kept")
    outcome = train_trial(make_spec(tiny_h5, tmp_path), reporter)
    assert outcome.status == "completed" and outcome.epochs == 2
    assert [e for e, _ in reporter.history] == [1, 2]
    metrics = reporter.history[-1][1]
    expected = {"train/loss", "val/loss", "train/lr", "val/accuracy", "val/accuracy_err", "best/val/accuracy",
                "best/epoch", "perf/epoch_s", "perf/samples_per_s", "perf/data_wait_frac", "sys/rss_gb",
                "sys/cpu_pct"}
    kept = tmp_path / "kept" / "epoch2"
    with h5py.File(kept / "predictions.h5") as f:
        predicted = set(np.argmax(f["scores"][:], axis=1).tolist())
    for i, c in enumerate(CLASSES):
        expected |= {f"val/efficiency/{c}", f"val/efficiency/{c}_err", f"val/auc/{c}"}
        purity = {f"val/purity/{c}", f"val/fom/{c}"}
        # purity is measured only for a class the model predicts at all: absent otherwise, never a fake 0
        expected |= purity if i in predicted else set()
        assert (i in predicted) == (purity <= set(metrics)), c
    assert expected <= set(metrics), expected - set(metrics)
    assert not [k for k in metrics if k.startswith("sys/gpu")], "GPU metrics must be absent on CPU"
    assert all(np.isfinite(v) for v in metrics.values())
    best_epoch = int(metrics["best/epoch"])
    assert metrics["best/val/accuracy"] == reporter.history[best_epoch - 1][1]["val/accuracy"]
    assert {"state.pt", "confusion.json", "predictions.h5"} <= {p.name for p in kept.iterdir()}
    with h5py.File(kept / "predictions.h5") as f:
        assert f["scores"].shape[1] == 3 and len(f["index"]) == len(f["label"]) == f["scores"].shape[0]
        assert np.allclose(f["scores"][:].sum(axis=1), 1.0, atol=1e-4)
        assert list(f.attrs["class_names"]) == list(CLASSES)


def test_resume_continues_exactly(tiny_h5, tmp_path):
    trial = {"ema_decay": 0.9, "lr_schedule": "cosine", "seed": 3}
    straight = KeepingReporter(tmp_path / "a")
    train_trial(make_spec(tiny_h5, tmp_path, epochs=3, **trial), straight)

    crashed = KeepingReporter(tmp_path / "b", crash_after=2)
    with pytest.raises(KeyboardInterrupt):
        train_trial(make_spec(tiny_h5, tmp_path, epochs=3, **trial), crashed)
    resumed = KeepingReporter(tmp_path / "c", resume=tmp_path / "b" / "epoch2")
    train_trial(make_spec(tiny_h5, tmp_path, epochs=3, **trial), resumed)

    assert [e for e, _ in resumed.history] == [3]
    a, c = straight.history[-1][1], resumed.history[-1][1]
    for key in ("train/loss", "val/loss", "val/accuracy", "val_live/loss", "train/lr", "best/epoch"):
        assert a[key] == c[key], key
    sa, sc = load_state(tmp_path / "a" / "epoch3"), load_state(tmp_path / "c" / "epoch3")
    for name, tensor in sa["model"].items():
        assert torch.equal(tensor, sc["model"][name]), name


def test_ema_model_is_the_one_reported(tiny_h5, tmp_path):
    reporter = MemoryReporter()
    train_trial(make_spec(tiny_h5, tmp_path, epochs=1, ema_decay=0.999), reporter)
    metrics = reporter.history[-1][1]
    assert "val_live/accuracy" in metrics and "val_live/loss" in metrics
    assert metrics["val/loss"] != metrics["val_live/loss"]


def test_diverging_loss_fails_the_trial_with_a_reason(tiny_h5, tmp_path):
    spec = make_spec(tiny_h5, tmp_path, epochs=2, optimizer="sgd", lr=1e12, grad_clip=0.0, momentum=0.0)
    outcome = train_trial(spec, MemoryReporter())
    assert outcome.status == "failed"
    assert "loss became" in outcome.failure and "epoch 1" in outcome.failure


def test_checkpoint_evaluates_on_the_test_split(tiny_h5, tmp_path):
    reporter = KeepingReporter(tmp_path / "kept")
    train_trial(make_spec(tiny_h5, tmp_path, epochs=1), reporter)
    metrics = evaluate_checkpoint(tmp_path / "kept" / "epoch1", DataConfig(path=str(tiny_h5)), "classification",
                                  "test", tmp_path / "test_out")
    assert "test/accuracy" in metrics and "test/accuracy_err" in metrics
    with h5py.File(tmp_path / "test_out" / "predictions.h5") as f, h5py.File(tiny_h5) as src:
        idx = f["index"][:]
        assert (src["split"][:][idx] == 2).all(), "finals must only see the test split"
        assert (f["label"][:] == src["labels"][:][idx]).all()


def test_direction_regression_reports_resolution(tiny_h5, tmp_path):
    reporter = MemoryReporter()
    train_trial(make_spec(tiny_h5, tmp_path, epochs=1, task="regression", loss="angular"), reporter)
    metrics = reporter.history[-1][1]
    assert 0 < metrics["val/resolution68_deg"] <= 180
    assert "val/resolution68_deg_err" in metrics and "best/val/resolution68_deg" in metrics
    assert {"val/bias/dx", "val/rms/dy", "val/skew/dz"} <= set(metrics)


def test_frozen_trial_leaves_the_backbone_bit_identical(tiny_h5, tmp_path):
    pre = KeepingReporter(tmp_path / "pre")
    train_trial(make_spec(tiny_h5, tmp_path, epochs=1), pre)
    init = str(tmp_path / "pre" / "epoch1")
    frozen = KeepingReporter(tmp_path / "frozen")
    train_trial(make_spec(tiny_h5, tmp_path, epochs=1, mode="frozen", init=init, lr=1e-2), frozen)
    before, after = load_state(init)["model"], load_state(tmp_path / "frozen" / "epoch1")["model"]
    backbone = [k for k in before if k.startswith("backbone.")]
    assert backbone and all(torch.equal(before[k], after[k]) for k in backbone)
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("head."))


def test_a_trial_restored_at_its_last_epoch_reports_how_it_ended(tiny_h5, tmp_path):
    """Killed after its last epoch's checkpoint but before its end was recorded: the resumed trial trains nothing
    and reports its last epoch again (metrics and best block), from a copy of the folder it was given."""
    class Keeping(MemoryReporter):
        def report(self, epoch, metrics, checkpoint_dir, is_best):
            super().report(epoch, metrics, checkpoint_dir, is_best)
            self.folder = tmp_path / f"kept{epoch}"
            shutil.copytree(checkpoint_dir, self.folder, dirs_exist_ok=True)

    spec = TrialSpec("classification", DataConfig(path=str(tiny_h5)),
                     TrialConfig(model="small_cnn_tiny", batch_size=64, num_workers=0), max_epochs=2,
                     workdir=str(tmp_path / "scratch"))
    first = Keeping()
    train_trial(spec, first)
    again = Keeping(resume=first.folder)
    outcome = train_trial(spec, again)
    assert outcome.status == "completed" and outcome.epochs == 2
    assert [e for e, _ in again.history] == [2]
    assert again.history[0][1] == first.history[-1][1]  # the same figures, best block included
    assert (first.folder / Artifact.STATE).exists()  # the folder it was given is left as it was
    assert not list((tmp_path / "scratch").iterdir())  # and no scratch left behind
