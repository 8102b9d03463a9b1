"""Files for `scanner train` (only data: needed), the keys set only under baseline:, and which inits the trials load."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from search_spaces import baseline_only, baseline_only_warning, init_uses, load_space
from trainables.errors import BadInput


def write(path, text: str):
    path.write_text(text)
    return path


def test_a_training_file_needs_only_data(cli_h5, tmp_path):
    space = load_space(write(tmp_path / "quick-look.yaml", f"data: {{path: {cli_h5}}}\n"), training=True)
    assert space.name == "quick-look" and space.task == "classification"  # the file has labels (and targets)
    assert (space.objective.metric, space.objective.mode) == ("val/accuracy", "max")


def test_a_training_file_on_targets_only_is_regression_on_val_loss(tmp_path):
    with h5py.File(tmp_path / "dirs.h5", "w") as f:
        f.create_dataset("images", data=np.zeros((10, 2, 8, 8), np.float32))
        f.create_dataset("targets", data=np.tile([0.0, 0.0, 1.0], (10, 1)).astype(np.float32))
    space = load_space(write(tmp_path / "dirs.yaml", "data: {path: dirs.h5}\nfixed: {lr: 3.0e-3}\n"), training=True)
    assert space.task == "regression" and (space.objective.metric, space.objective.mode) == ("val/loss", "min")


def test_a_training_file_whose_data_holds_neither_labels_nor_targets(tmp_path):
    with h5py.File(tmp_path / "bare.h5", "w") as f:
        f.create_dataset("images", data=np.zeros((10, 2, 8, 8), np.float32))
    with pytest.raises(BadInput, match="neither 'labels' nor 'targets'"):
        load_space(write(tmp_path / "bare.yaml", "data: {path: bare.h5}\n"), training=True)


def test_a_sweep_still_needs_its_name_and_objective(cli_h5, tmp_path):
    with pytest.raises(BadInput, match="name: missing"):
        load_space(write(tmp_path / "sweep.yaml", f"data: {{path: {cli_h5}}}\n"))


def test_a_file_stem_that_cannot_name_an_experiment_asks_for_name(cli_h5, tmp_path):
    with pytest.raises(BadInput, match="add name:"):
        load_space(write(tmp_path / "my run.yaml", f"data: {{path: {cli_h5}}}\n"), training=True)


SWEEP = """\
name: s
task: classification
data: {{path: {h5}}}
objective: {{metric: val/accuracy}}
fixed: {{batch_size: 32{fixed}}}
baseline: {{model: small_cnn_tiny, lr: 1.0e-3, ema_decay: 0.99, loss: ce{baseline}}}
space:
  lr: {{float: [1.0e-4, 1.0e-2], log: true}}
{space}"""


def sweep(tmp_path, h5, fixed="", baseline="", space=""):
    return load_space(write(tmp_path / "s.yaml", SWEEP.format(h5=h5, fixed=fixed, baseline=baseline, space=space)))


def test_keys_only_under_baseline_are_named_with_what_the_trials_get(cli_h5, tmp_path):
    space = sweep(tmp_path, cli_h5)
    # lr is searched; loss: ce is the default anyway; model and ema_decay fall back for the searched trials
    assert baseline_only(space) == {"model": ("small_cnn_tiny", "resnet18"), "ema_decay": (0.99, 0.0)}
    warning = baseline_only_warning(space)
    assert len(warning.splitlines()) == 1
    assert "model=small_cnn_tiny, ema_decay=0.99" in warning and "model=resnet18, ema_decay=0.0" in warning
    assert "fixed:" in warning


def test_no_warning_when_every_baseline_key_reaches_the_trials(cli_h5, tmp_path):
    searched_model = "  model: {choice: [small_cnn_tiny, resnet_tiny]}\n"
    space = sweep(tmp_path, cli_h5, fixed=", ema_decay: 0.9", space=searched_model)
    assert baseline_only(space) == {} and baseline_only_warning(space) is None


def test_init_uses_are_the_models_each_init_meets(cli_h5, tmp_path):
    space = sweep(tmp_path, cli_h5, fixed=", model: small_cnn_tiny", baseline=", mode: finetune, init: best-of:a",
                  space="  mode: {choice: [scratch, frozen]}\n  init: {choice: ['best-of:b', 'best-of:c']}\n")
    assert init_uses(space) == [("small_cnn_tiny", "finetune", "best-of:a"),
                                ("small_cnn_tiny", "frozen", "best-of:b"), ("small_cnn_tiny", "frozen", "best-of:c")]
    assert init_uses(space, searched=False) == [("small_cnn_tiny", "finetune", "best-of:a")]
