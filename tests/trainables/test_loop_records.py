"""What a trial records besides its metrics: best/ figures all from one epoch, the checkpoint's data description
(an export needs no data file), parameter counts once, and the AMP / channels_last keys."""

from __future__ import annotations

import dataclasses
import math
import types

import h5py
import pytest
import torch

from fixtures_data import tiny_arrays
from fixtures_loop import KeepingReporter, make_spec
from trainables._epoch import Parts, amp_dtype_for, build, memory_format_for
from trainables._state import best_block, restore
from trainables.checkpoint import load_state
from trainables.config import CPU_IGNORED, TrialConfig, TrialSpec
from trainables.data import data_hash, open_events
from trainables.errors import BadInput
from trainables.loop import oom_message, saved_config, train_trial
from trainables.reporting import MemoryReporter

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_every_best_figure_comes_from_the_best_epoch():
    epoch1 = {"val/accuracy": 0.5, "val/accuracy_err": 0.05, "val/purity/NC": 0.316, "val/purity/NC_err": 0.1,
              "val/efficiency/NC": 0.4, "val/loss": 1.0, "val/auc/NC": 0.6, "train/loss": 1.1}
    first = best_block(epoch1, "val/accuracy", 1, {})
    assert first == {"best/val/accuracy": 0.5, "best/val/accuracy_err": 0.05, "best/val/purity/NC": 0.316,
                     "best/val/purity/NC_err": 0.1, "best/val/efficiency/NC": 0.4, "best/val/loss": 1.0,
                     "best/epoch": 1.0}
    epoch3 = {"val/accuracy": 0.6, "val/accuracy_err": 0.05, "val/efficiency/NC": 0.0, "val/loss": 0.9}
    third = best_block(epoch3, "val/accuracy", 3, first)  # nothing predicted as NC: its purity is undefined
    assert third["best/epoch"] == 3.0 and third["best/val/efficiency/NC"] == 0.0
    assert math.isnan(third["best/val/purity/NC"]) and math.isnan(third["best/val/purity/NC_err"])
    assert set(third) == set(first)
    fourth = best_block({**epoch1, "val/accuracy": 0.7}, "val/accuracy", 4, third)
    assert fourth["best/val/purity/NC"] == 0.316  # defined again at the new best epoch


def test_the_checkpoint_describes_its_data_and_counts_parameters_once(tiny_h5, tmp_path):
    reporter = KeepingReporter(tmp_path / "kept")
    train_trial(make_spec(tiny_h5, tmp_path, epochs=2), reporter)
    meta = load_state(tmp_path / "kept" / "epoch2")["meta"]
    events = open_events(make_spec(tiny_h5, tmp_path).data, "classification")
    assert meta["pixel_scale"] == events.pixel_scale and meta["image_shape"] == [2, 32, 32]
    assert meta["views"] == ["xz", "yz"] and meta["data_hash"] == data_hash(tiny_h5)
    assert meta["data_path"] == str(tiny_h5) and meta["model"] == "small_cnn_tiny"
    assert {"in_channels", "num_outputs", "task", "class_names", "target_names", "direction"} <= set(meta)
    first, second = reporter.history[0][1], reporter.history[1][1]
    model = {"model/params_total", "model/params_trainable"}
    assert model <= set(first) and not model & set(second)
    assert first["model/params_total"] == first["model/params_trainable"] > 0


def test_frozen_shows_in_the_parameter_counts_and_a_file_without_views(write_h5, tmp_path):
    path = write_h5("plain.h5", attrs={"class_names": ["a", "b", "c"]}, **tiny_arrays(n=90, hw=16))
    pre = KeepingReporter(tmp_path / "pre")
    train_trial(make_spec(path, tmp_path, epochs=1, precise_bn=0), pre)
    frozen = MemoryReporter()
    train_trial(make_spec(path, tmp_path, epochs=1, mode="frozen", init=str(tmp_path / "pre" / "epoch1")), frozen)
    counts = frozen.history[0][1]
    assert 0 < counts["model/params_trainable"] < counts["model/params_total"]
    assert load_state(tmp_path / "pre" / "epoch1")["meta"]["views"] is None
    with h5py.File(path) as f:
        assert "views" not in f.attrs


def test_amp_and_channels_last_are_searchable_keys_ignored_on_cpu():
    for value in ("bf16", "fp16", "off"):
        cfg = TrialConfig.from_dict({"amp": value, "channels_last": True})
        assert amp_dtype_for(cfg, torch.device("cpu")) is None
        assert memory_format_for(cfg, torch.device("cpu")) == torch.contiguous_format
    with pytest.raises(BadInput, match="amp 'True' is not one of bf16, fp16, off"):
        TrialConfig.from_dict({"amp": True})
    assert TrialConfig().amp == "bf16" and TrialConfig().channels_last is False
    assert set(CPU_IGNORED) == {"amp", "channels_last"}


@pytest.mark.parametrize("bf16_supported", [True, False])
def test_on_cuda_amp_maps_to_its_dtype_and_channels_last_to_its_format(monkeypatch, bf16_supported):
    """The CUDA branch without a GPU: a cuda device object needs no device, and bf16 support is what the GPU says."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_supported)
    cuda = torch.device("cuda")
    dtypes = {value: amp_dtype_for(TrialConfig.from_dict({"amp": value}), cuda) for value in ("bf16", "fp16", "off")}
    assert dtypes == {"bf16": torch.bfloat16 if bf16_supported else torch.float16, "fp16": torch.float16, "off": None}
    assert memory_format_for(TrialConfig.from_dict({"channels_last": True}), cuda) == torch.channels_last
    assert memory_format_for(TrialConfig.from_dict({"channels_last": False}), cuda) == torch.contiguous_format


def test_a_cuda_out_of_memory_says_where_how_much_and_what_to_try(monkeypatch):
    gib = 2 ** 30
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 38.2 * gib)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device=None: types.SimpleNamespace(total_memory=40 * gib))
    cfg = TrialConfig.from_dict({"batch_size": 128})
    assert oom_message("epoch 3 step 120", torch.device("cuda"), cfg, 0) == (
        "CUDA out of memory at epoch 3 step 120: peak 38.2 of 40.0 GiB reserved; try batch_size <= 64 or gpu: 1")
    assert oom_message("epoch 3 step 120", torch.device("cuda"), cfg, 2).startswith(
        "CUDA out of memory at epoch 3 step 120: peak 38.2 of 40.0 GiB reserved (after 2 halvings of the batch)")
    assert oom_message("epoch 1 step 4", torch.device("cpu"), cfg, 1) == (
        "out of memory at epoch 1 step 4 (after 1 halving of the batch); try batch_size <= 64")


def test_a_checkpoint_from_before_amp_modes_still_loads_its_config():
    old = {**TrialConfig().as_params(), "amp": None}
    del old["precise_bn"], old["channels_last"]
    assert saved_config({"config": old}).amp == "bf16"
    assert saved_config({"config": {**old, "amp": False}}).amp == "off"


def test_a_saved_scaler_goes_only_into_a_scaler_and_a_missing_one_means_a_fresh_one(tiny_h5, tmp_path):
    """Only fp16 keeps a GradScaler. Checkpoints written with AMP off, in bf16 or before the scaler was saved hold
    none, and an fp16 one may be resumed with AMP off: every pairing restores. (A CPU scaler stands in for CUDA's.)"""
    spec = make_spec(tiny_h5, tmp_path, epochs=1)
    train_trial(spec, KeepingReporter(tmp_path / "kept"))
    state = load_state(tmp_path / "kept" / "epoch1")
    assert state["scaler"] is None  # trained on the CPU: no AMP
    fp16 = {**state, "scaler": torch.amp.GradScaler("cpu", init_scale=8.0).state_dict()}
    before_scalers = {k: v for k, v in state.items() if k != "scaler"}

    def parts(scaler: bool) -> Parts:
        p = build(spec, spec.trial, [], torch.device("cpu"))
        return dataclasses.replace(p, scaler=torch.amp.GradScaler("cpu", init_scale=1024.0) if scaler else None)

    for checkpoint, scale in ((before_scalers, 1024.0), (state, 1024.0), (fp16, 8.0)):
        p = parts(scaler=True)
        assert restore(p, checkpoint)[0] == 1 and p.scaler.get_scale() == scale
    assert restore(parts(scaler=False), fp16)[0] == 1


def test_an_unknown_oom_policy_is_bad_input(tiny_h5):
    with pytest.raises(BadInput, match="resources.oom 'retry' is not one of fail, halve_batch"):
        TrialSpec("classification", make_spec(tiny_h5, tiny_h5.parent).data, TrialConfig(), 1, oom="retry")
