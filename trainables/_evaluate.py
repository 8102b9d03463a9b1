"""Inference over one split, its physics metrics, and the ``predictions.h5`` / ``confusion.json`` artifacts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import torch
from torch import nn

from trainables.checkpoint import write_confusion
from trainables.contract import Artifact
from trainables.data import read_truth
from trainables.files import atomic_output
from trainables.metrics import classification_metrics, regression_metrics


@dataclass
class SplitOutputs:
    """Everything one pass over a split produced, on the CPU as numpy."""

    index: np.ndarray  # file indices of the events, in loader order
    truth: np.ndarray  # labels (N,) or targets (N, K)
    output: np.ndarray  # softmax scores (N, C) or predictions (N, K)
    weights: np.ndarray
    loss: float


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    task: str,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> SplitOutputs:
    was_training = model.training
    model.eval()
    outputs, truths, weights = [], [], []
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    for images, y, w in loader:
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        y, w = y.to(device, non_blocking=True), w.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            out = model(images)
        out = out.float()
        loss_sum += (loss_fn(out, y) * w).sum().double()
        outputs.append(torch.softmax(out, dim=1) if task == "classification" else out)
        truths.append(y)
        weights.append(w)
    model.train(was_training)
    w_all = torch.cat(weights).cpu().numpy()
    return SplitOutputs(
        index=np.asarray(loader.dataset.indices),
        truth=torch.cat(truths).cpu().numpy(),
        output=torch.cat(outputs).cpu().numpy(),
        weights=w_all,
        loss=float(loss_sum.item() / max(float(w_all.sum()), 1e-12)),
    )


def physics_metrics(outs: SplitOutputs, events, has_weights: bool) -> tuple[dict[str, float], np.ndarray | None]:
    """Metrics without prefix, and the confusion matrix (classification only)."""

    weights = outs.weights if has_weights else None
    if events.class_names is not None:
        return classification_metrics(outs.output, outs.truth, events.class_names, weights=weights)
    metrics = regression_metrics(
        outs.output, outs.truth, events.target_names, direction=events.direction, weights=weights
    )
    return metrics, None


def write_artifacts(folder: Path, outs: SplitOutputs, events, data_cfg, confusion: np.ndarray | None) -> None:
    """``confusion.json`` and ``predictions.h5`` (index, truth, scores/pred, the file's truth datasets)."""

    folder.mkdir(parents=True, exist_ok=True)
    if confusion is not None:
        write_confusion(folder, events.class_names, confusion)
    with atomic_output(folder / Artifact.PREDICTIONS) as tmp, h5py.File(tmp, "w") as f:
        f["index"] = outs.index
        if events.class_names is not None:
            f["label"] = outs.truth.astype(np.int64)
            f["scores"] = outs.output.astype(np.float32)
            f.attrs["class_names"] = list(events.class_names)
        else:
            f["target"] = outs.truth.astype(np.float32)
            f["pred"] = outs.output.astype(np.float32)
            f.attrs["target_names"] = list(events.target_names)
            if events.direction:
                f.attrs["direction"] = events.direction
        if events.has_weights:
            f["weights"] = outs.weights.astype(np.float32)
        order = np.argsort(outs.index)  # h5py reads need increasing indices
        for name, values in read_truth(data_cfg, outs.index[order]).items():
            restored = np.empty_like(values)
            restored[order] = values
            f[name] = restored
