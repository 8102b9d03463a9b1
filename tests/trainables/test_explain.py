"""Attribution maps: occlusion of a model whose answer depends on one known patch lights up that patch (so do
saliency and integrated gradients), de-duplicated occlusion is captum's own map, events are spread over the classes,
and the files (PNGs, explain.html, explain.json, maps.npz) are written and replaced cleanly."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from captum.attr import Occlusion
from torch import nn

from trainables.config import DataConfig
from trainables.data.schema import open_events, read_labels
from trainables.errors import BadInput
from trainables.explain import METHODS, ExplainOptions, _quotas, explain_events, pick_events, plan_occlusion
from trainables.explain_files import INDEX_JSON, write_explanation
from trainables.trial_model import StoredImagesModel, load_trial, read_images

ROWS, COLS, VIEW = slice(8, 16), slice(16, 24), 1  # the known patch: on the stride-4 grid, in the second view


class OnePatchNet(nn.Module):
    """Class 0's logit is the mean charge of the known patch; the others are constant: the answer depends on that
    patch and on nothing else."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        evidence = x[:, VIEW, ROWS, COLS].mean(dim=(1, 2)) * 4.0
        zeros = torch.zeros_like(evidence)
        return torch.stack([evidence, zeros, zeros], dim=1)


def one_patch_model() -> StoredImagesModel:
    return StoredImagesModel(OnePatchNet(), pixel_scale=2.0, task="classification").eval()


def dense_event(seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 2, 32, 32, generator=torch.Generator().manual_seed(seed)) + 0.5


def test_occlusion_lights_up_the_one_patch_the_answer_depends_on():
    maps, forwards = METHODS.get("occlusion")(one_patch_model(), dense_event(), [0], ExplainOptions(batch=16))
    m = maps[0].numpy()
    assert m.shape == (2, 32, 32)
    assert np.all(m[1 - VIEW] == 0)  # the other view never matters
    # only patches overlapping the known one move the score: rows 8-15 +- 7, cols 16-23 +- 7 (patch 8, stride 4)
    touched = np.zeros((32, 32), bool)
    touched[ROWS.start - 7:ROWS.stop + 7, COLS.start - 7:COLS.stop + 7] = True
    assert np.all(m[VIEW][~touched] == 0) and np.all(m[VIEW][touched] >= 0)
    inside = m[VIEW][ROWS, COLS]
    assert inside.min() > 0 and inside.mean() > 2 * m[VIEW][touched & ~_mask()].mean()
    peak = np.unravel_index(np.argmax(m[VIEW]), m[VIEW].shape)
    assert ROWS.start <= peak[0] < ROWS.stop and COLS.start <= peak[1] < COLS.stop
    assert forwards == 1 + 2 * 7 * 7  # a dense event: every occluded copy differs


def _mask() -> np.ndarray:
    inside = np.zeros((32, 32), bool)
    inside[ROWS, COLS] = True
    return inside


@pytest.mark.parametrize("method", ["saliency", "integrated-gradients"])
def test_gradient_methods_see_only_the_known_patch(method):
    maps, _ = METHODS.get(method)(one_patch_model(), dense_event(), [0, 1], ExplainOptions(steps=8, batch=4))
    m = maps.numpy()
    assert m.shape == (2, 2, 32, 32)
    for target_map in m:  # class 1's score moves too, through the softmax, and only through the patch
        nonzero = np.abs(target_map) > 0
        assert nonzero[VIEW][ROWS, COLS].all() and nonzero.sum() == 64  # exactly the 8x8 patch of the view


@pytest.mark.parametrize("size", [32, 30])  # 30: the last window of each row is clipped at the edge, as captum's
def test_occlusion_is_captums_map_with_fewer_passes(size, tiny_checkpoint, tiny_h5):
    trial = load_trial(tiny_checkpoint, DataConfig(path=str(tiny_h5)))
    module = trial.stored_input_module()
    event = torch.from_numpy(read_images(trial.data, np.array([5]))[0][None, :, :size, :size]).contiguous()
    assert 0 < (event != 0).float().mean() < 0.2  # a sparse event (at 32x32 ~10 % of the pixels are lit)
    ours, forwards = METHODS.get("occlusion")(module, event, [1, 2], ExplainOptions(batch=8))
    windows = 2 * (math.ceil((size - 8) / 4) + 1) ** 2
    assert 1 < forwards < windows  # empty and equivalent windows were not evaluated
    with torch.no_grad():
        for k, target in enumerate([1, 2]):
            theirs = Occlusion(module).attribute(event, sliding_window_shapes=(1, 8, 8), strides=(1, 4, 4),
                                                 baselines=0.0, target=target, perturbations_per_eval=16)
            assert theirs.abs().max() > 1e-4
            torch.testing.assert_close(ours[k], theirs[0], atol=1e-6, rtol=0)


def test_occlusion_plan_groups_windows_hiding_the_same_hits():
    image = np.zeros((1, 8, 8), np.float32)
    image[0, 3, 3] = 5.0  # hidden by the four 4x4 windows at rows 0, 2 and columns 0, 2 (stride 2): one copy
    image[0, 6, 6] = 2.0  # hidden by the window at (4, 4) only
    plan = plan_occlusion(image, patch=4, stride=2)
    assert len(plan.windows) == 9 and sum(not key for key in plan.hidden) == 4  # these leave the event as it is
    assert len(plan.first) == 2  # two distinct copies: without the first hit, or without the second


def test_events_are_spread_over_the_classes(tiny_checkpoint, tiny_h5):
    trial = load_trial(tiny_checkpoint, DataConfig(path=str(tiny_h5)))
    index = pick_events(trial, 7)
    assert set(index.tolist()) <= set(open_events(trial.data, trial.task).split_indices["val"].tolist())
    assert sorted(np.bincount(read_labels(trial.data, index), minlength=3).tolist()) == [2, 2, 3]
    assert _quotas([1, 10, 10], 9) == [1, 4, 4]  # a class with too few events gives its turn away
    with pytest.raises(BadInput, match="--events 0"):
        pick_events(trial, 0)


def test_explain_writes_pngs_page_and_numbers_and_replaces_a_previous_run(tiny_checkpoint, tiny_h5, tmp_path):
    trial = load_trial(tiny_checkpoint, DataConfig(path=str(tiny_h5)))
    first = explain_events(trial, pick_events(trial, 3), ExplainOptions(method="saliency"))
    out = tmp_path / "explain"
    out.mkdir()
    (out / "mine.txt").write_text("a user's file")
    written = write_explanation(first, out, run_id="r1")
    info = json.loads((out / INDEX_JSON).read_text())
    assert info["method"] == "saliency" and info["run_id"] == "r1" and len(info["events"]) == 3
    for ev in info["events"]:
        assert (out / ev["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert ev["true"] in ("NC", "nueCC", "numuCC") and ev["maps"][0]["role"] in ("predicted", "predicted = true")
    assert all(f"src=\"{ev['png']}\"" in (out / "explain.html").read_text() for ev in info["events"])
    numbers = np.load(out / "maps.npz")
    assert numbers[f"maps_{first.events[0].index}"].shape == first.events[0].maps.shape
    assert {p.name for p in written} == set(info["files"])
    second = explain_events(trial, np.array([first.events[0].index]), ExplainOptions(method="saliency"))
    write_explanation(second, out)
    left = {p.name for p in out.iterdir()}
    assert left == {"mine.txt", f"event_{first.events[0].index}.png", "maps.npz", "explain.html", INDEX_JSON}


def test_regression_maps_one_per_target(tiny_regression_checkpoint, tiny_h5):
    trial = load_trial(tiny_regression_checkpoint, DataConfig(path=str(tiny_h5)))
    explanation = explain_events(trial, pick_events(trial, 2), ExplainOptions(method="occlusion", patch=8, stride=8))
    for ev in explanation.events:
        assert ev.roles == ["dx", "dy", "dz"] and ev.maps.shape == (3, 2, 32, 32)


def test_bad_options_are_one_line(tiny_checkpoint, tiny_h5):
    trial = load_trial(tiny_checkpoint, DataConfig(path=str(tiny_h5)))
    with pytest.raises(BadInput, match="--patch 40 --stride 4: expected 1 <= patch <= 32"):
        explain_events(trial, np.array([0]), ExplainOptions(patch=40))
    with pytest.raises(BadInput, match="Unknown attribution method 'lime'"):
        explain_events(trial, np.array([0]), ExplainOptions(method="lime"))
    with pytest.raises(BadInput, match="event index 99999 is outside"):
        explain_events(trial, np.array([99999]), ExplainOptions())
