"""A finished trial as a model of the images *as stored*: the weights that were evaluated, the pixel scale, the
softmax. ``scanner export`` turns it into ONNX, ``scanner explain`` attributes its outputs to pixels.

    trial = load_trial(checkpoint_dir, DataConfig(path="lartpc.h5"))   # eval_model > ema_model > model weights
    module = trial.stored_input_module()        # raw stored images (N, C, H, W) float32 -> scores | pred
    index, images = read_stored(trial.data, trial.task, "val", 256)      # raw images of 256 validation events

``module`` computes exactly what ``predictions.h5`` holds: ``softmax(logits)`` (``scores``) for classification,
the raw output (``pred``) for regression, from images divided by the file's pixel scale as the data loader does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainables.checkpoint import evaluated_weights, find_state, load_state
from trainables.config import DataConfig
from trainables.contract import Artifact
from trainables.data.schema import EventFile, open_events, open_h5
from trainables.errors import BadInput
from trainables.loop import build_model, saved_config
from trainables.variants import trained_on


@dataclass
class TrialModel:
    """The evaluated network of one checkpoint, with everything a consumer of raw stored images needs."""

    model: nn.Module  # in eval mode, on the CPU
    name: str  # registry name or timm:<name>
    task: str
    weights: str  # which entry of state.pt was loaded: eval_model (the evaluated copy), else ema_model, else model
    class_names: list[str] | None
    target_names: list[str] | None
    pixel_scale: float
    image_shape: tuple[int, int, int]
    views: list[str]
    data: DataConfig  # the events file the trial's split and labels come from
    data_hash: str | None
    checkpoint: Path
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def output_name(self) -> str:
        """The dataset name in ``predictions.h5``, and the ONNX output's name."""
        return "scores" if self.task == "classification" else "pred"

    @property
    def output_names(self) -> list[str]:
        return list(self.class_names or self.target_names or [])

    def stored_input_module(self) -> "StoredImagesModel":
        return StoredImagesModel(self.model, self.pixel_scale, self.task)


class StoredImagesModel(nn.Module):
    """``raw (N, C, H, W) float32 -> scores | pred``: the pixel scale and the softmax inside the graph, so a user of
    the exported file needs no knowledge of the project's preprocessing."""

    def __init__(self, model: nn.Module, pixel_scale: float, task: str):
        super().__init__()
        self.model = model
        self.task = task
        # the loader multiplies by float32(1 / scale) (h5dataset.py): the same constant, the same rounding
        self.register_buffer("inverse_scale", torch.tensor(np.float32(1.0 / pixel_scale), dtype=torch.float32))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.model(images * self.inverse_scale).float()
        return torch.softmax(out, dim=1) if self.task == "classification" else out


def checkpoint_state(checkpoint: Path) -> dict[str, Any]:
    path = Path(checkpoint)
    state_file = find_state(path)
    if state_file is None:
        raise BadInput(f"{path}: no {Artifact.STATE} here; expected a trial's checkpoint folder (its scan.checkpoint "
                       "tag); fix: pass run:<id>, best-of:<sweep> or the folder that holds state.pt")
    return load_state(state_file)


def load_trial(checkpoint: Path, data: DataConfig | None = None, state: dict[str, Any] | None = None) -> TrialModel:
    """Rebuild the evaluated model of ``checkpoint`` (``state``: its state.pt, when already loaded). ``data``
    defaults to the events file the checkpoint names (``meta.data_path``); what ``meta`` lacks (older checkpoints:
    pixel scale, image shape, views) is read from that file (``trainables.variants.trained_on``)."""
    state = state if state is not None else checkpoint_state(checkpoint)
    meta = dict(state["meta"])
    data = data or _named_data(meta, checkpoint)
    trained = trained_on(state, data)
    shape = tuple(open_events(data, trained.task).image_shape)
    if shape != trained.image_shape or shape[0] != meta["in_channels"]:
        raise BadInput(f"{data.path}: images are {shape} (C, H, W) but the model of {checkpoint} was trained on "
                       f"{(meta['in_channels'], *trained.image_shape[1:])}; fix: give the trial's own events file")
    cfg = saved_config(state, where=f"{checkpoint} config")
    model = build_model(cfg.replace(model=meta["model"]), meta["in_channels"], meta["num_outputs"])
    weights = evaluated_weights(state)
    model.load_state_dict(weights)
    model.eval()
    return TrialModel(
        model=model, name=meta["model"], task=trained.task, weights=next(k for k, v in state.items() if v is weights),
        class_names=meta.get("class_names"), target_names=meta.get("target_names"),
        pixel_scale=trained.pixel_scale, image_shape=shape,  # type: ignore[arg-type]
        views=list(trained.views) if trained.views and len(trained.views) == shape[0] else
        [f"view{i}" for i in range(shape[0])],
        data=data, data_hash=meta.get("data_hash"), checkpoint=Path(checkpoint), meta=meta,
    )


def _named_data(meta: dict[str, Any], checkpoint: Path) -> DataConfig:
    if not meta.get("data_path"):
        raise BadInput(f"{checkpoint}: the checkpoint does not name its events file (written before data_path was "
                       "stored); fix: give the file (export: --parity-data FILE, explain: --data FILE)")
    if not Path(meta["data_path"]).is_file():
        raise BadInput(f"{meta['data_path']}: the events file of {checkpoint} is gone (moved?); fix: give its new "
                       "place (export: --parity-data FILE, explain: --data FILE)")
    return DataConfig(path=str(meta["data_path"]))


def spread(indices: np.ndarray, n: int) -> np.ndarray:
    """``n`` of ``indices`` spread evenly over them (all when there are fewer), sorted."""
    if len(indices) <= n:
        return np.asarray(indices, dtype=np.int64)
    picks = np.linspace(0, len(indices) - 1, n).round().astype(np.int64)
    return np.asarray(indices, dtype=np.int64)[np.unique(picks)]


def read_stored(data: DataConfig, task: str, split: str, n: int, events: EventFile | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """File indices and raw images (float32, as stored otherwise) of ``n`` events spread over ``split``."""
    events = events or open_events(data, task)
    index = spread(events.split_indices[split], n)
    if len(index) == 0:
        raise BadInput(f"{data.path}: the {split} split is empty; fix: give a file with {split} events")
    return index, read_images(data, index)


def read_images(data: DataConfig, index: np.ndarray) -> np.ndarray:
    """Raw images of file ``index`` (any order), cast to float32: exactly the exported graph's input."""
    index = np.asarray(index, dtype=np.int64)
    order = np.argsort(index)
    with open_h5(data.path) as f:
        ds = f[data.images]
        bad = index[(index < 0) | (index >= ds.shape[0])]
        if len(bad):
            raise BadInput(f"{data.path}: event index {int(bad[0])} is outside 0..{ds.shape[0] - 1}; "
                           "fix: give indices of the file")
        sorted_images = np.stack([ds[int(i)] for i in index[order]]).astype(np.float32)
    images = np.empty_like(sorted_images)
    images[order] = sorted_images
    return images
