"""Attribution maps of a trial's outputs over chosen validation events, with captum, on the trial's device.

    trial = load_trial(checkpoint_dir)                              # trainables.trial_model
    options = ExplainOptions(method="occlusion", patch=8, stride=4)
    index = pick_events(trial, n=6)                                 # spread evenly over the classes
    explanation = explain_events(trial, index, options)             # maps per event, target and view
    files = write_explanation(explanation, Path("explain"))         # trainables.explain_files: PNGs, html, json

Maps are taken of what ``predictions.h5`` holds, as a function of the images as stored: the softmax score of the
predicted and of the true class (classification), or each predicted target (regression). Saliency and integrated
gradients are captum's. Occlusion computes captum's Occlusion map, batched, evaluating each distinct occluded copy
once: detector images are sparse, so most windows hide nothing or the same few hits (see ``occlusion``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np
import torch
from captum.attr import IntegratedGradients, Saliency
from torch import nn

from trainables.config import DataConfig
from trainables.data.schema import open_events, open_h5, read_labels
from trainables.device import pick_device
from trainables.errors import BadInput
from trainables.registry import Registry
from trainables.trial_model import TrialModel, read_images, spread


class Attribution(NamedTuple):
    maps: torch.Tensor  # (targets, C, H, W)
    forwards: int  # model evaluations it took


Method = Callable[[nn.Module, torch.Tensor, list[int], "ExplainOptions"], Attribution]
METHODS: Registry[Method] = Registry("attribution method")
FORWARD_BATCH = 64  # events per plain forward pass when the outputs of the chosen events are computed


@dataclass(frozen=True)
class ExplainOptions:
    method: str = "occlusion"
    patch: int = 8  # occlusion: the side of the square hidden in one view
    stride: int = 4
    batch: int = 64  # occluded copies (occlusion) or interpolation steps (integrated gradients) per forward pass
    steps: int = 32  # integrated gradients: Gauss-Legendre steps from the empty event

    def check(self, image_shape: tuple[int, int, int]) -> None:
        METHODS.check(self.method)
        _, h, w = image_shape
        if self.method == "occlusion" and not (1 <= self.patch <= min(h, w) and 1 <= self.stride <= self.patch):
            raise BadInput(f"--patch {self.patch} --stride {self.stride}: expected 1 <= patch <= {min(h, w)} "
                           f"(the {h}x{w} images) and 1 <= stride <= patch (every pixel covered); fix: e.g. "
                           f"--patch {max(1, min(8, h, w))} --stride {max(1, min(4, h, w))}")
        if self.batch < 1 or self.steps < 1:
            raise BadInput(f"--batch {self.batch} (steps {self.steps}): expected >= 1; fix: e.g. --batch 64")


@dataclass
class EventMaps:
    index: int  # in the file
    image: np.ndarray  # (C, H, W) as stored, float32
    output: np.ndarray  # (K,) scores or pred
    truth: np.ndarray  # () label or (K,) targets
    targets: list[int]  # output indices that were attributed
    roles: list[str]  # what each target is: "predicted", "true", "predicted = true", or the target's name
    maps: np.ndarray  # (len(targets), C, H, W)


@dataclass
class Explanation:
    trial: TrialModel
    options: ExplainOptions
    events: list[EventMaps] = field(default_factory=list)
    forwards: int = 0  # model evaluations the maps took (occlusion: after de-duplication)


# ----------------------------------------------------------------------------------------------------- methods


def occlusion_windows(shape: tuple[int, int, int], patch: int, stride: int) -> list[tuple[int, int, int]]:
    """(view, row, column) of each window, as captum's Occlusion places a (1, patch, patch) window at strides
    (1, stride, stride): ceil((side - patch) / stride) + 1 positions per side, the last one clipped at the edge."""
    c, h, w = shape
    rows = [k * stride for k in range(math.ceil((h - patch) / stride) + 1)]
    cols = [k * stride for k in range(math.ceil((w - patch) / stride) + 1)]
    return [(v, r, q) for v in range(c) for r in rows for q in cols]


@dataclass
class OcclusionPlan:
    """Which occluded copies are distinct. The baseline is 0, so a window changes only the lit pixels it hides;
    two windows hiding the same lit pixels make the same copy, and a window hiding none leaves the event as it is."""

    windows: list[tuple[int, int, int]]
    hidden: list[bytes]  # per window: the flat indices of the lit pixels it hides (b"" = none)
    first: dict[bytes, int]  # each distinct non-empty ``hidden`` -> the first window that makes that copy


def plan_occlusion(image: np.ndarray, patch: int, stride: int) -> OcclusionPlan:
    flat = np.arange(image.size, dtype=np.int64).reshape(image.shape)
    lit = image != 0
    windows = occlusion_windows(image.shape, patch, stride)
    hidden = [flat[v, r:r + patch, q:q + patch][lit[v, r:r + patch, q:q + patch]].tobytes() for v, r, q in windows]
    first: dict[bytes, int] = {}
    for k, key in enumerate(hidden):
        if key:
            first.setdefault(key, k)
    return OcclusionPlan(windows, hidden, first)


@METHODS.register("occlusion", short="occlusion",
                  describe="the drop of the output when a {patch}x{patch} patch of one view is set to 0 "
                           "(captum's Occlusion windows, stride {stride}); red: the patch supports it")
def occlusion(module: nn.Module, event: torch.Tensor, targets: list[int], opts: ExplainOptions) -> Attribution:
    """captum's Occlusion map (the same windows; each pixel the mean output drop over the windows covering it;
    tests/trainables/test_explain.py compares the two), but each distinct occluded copy is evaluated once, in
    batches of ``opts.batch``. captum builds every copy (1922 of 128 KiB for a 2x128x128 event at 8/4): on sparse
    detector events that took 40 % of the time although ~1 in 12 copies differ (benchmarks/bench_explain.py)."""
    p = opts.patch
    plan = plan_occlusion(event[0].cpu().numpy(), p, opts.stride)
    distinct = list(plan.first)
    # channels-last is a layout, not a change of values (~1e-7): resnet18's batched forward is 1.17x faster with it
    # here (6.8 -> 5.9 ms per 2x128x128 copy at batch 64, 2 threads). It converts the module's weights in place.
    module = module.to(memory_format=torch.channels_last)
    with torch.no_grad():
        base = module(event)[0]
        outputs = {b"": base}
        for start in range(0, len(distinct), opts.batch):
            chunk = distinct[start:start + opts.batch]
            copies = event.repeat(len(chunk), 1, 1, 1).contiguous(memory_format=torch.channels_last)
            for j, key in enumerate(chunk):
                v, r, q = plan.windows[plan.first[key]]
                copies[j, v, r:r + p, q:q + p] = 0.0
            outputs.update(zip(chunk, module(copies)))
        drops = torch.stack([base - outputs[key] for key in plan.hidden])[:, targets].double().cpu().numpy()
    total = np.zeros((len(targets), *event.shape[1:]))
    covered = np.zeros(event.shape[1:])
    for (v, r, q), drop in zip(plan.windows, drops):
        total[:, v, r:r + p, q:q + p] += drop[:, None, None]
        covered[v, r:r + p, q:q + p] += 1
    return Attribution(torch.from_numpy((total / covered).astype(np.float32)), 1 + len(distinct))


@METHODS.register("saliency", short="saliency", describe="|d output / d pixel| (captum Saliency)")
def saliency(module: nn.Module, event: torch.Tensor, targets: list[int], opts: ExplainOptions) -> Attribution:
    inputs = event.expand(len(targets), -1, -1, -1).clone().requires_grad_(True)
    return Attribution(Saliency(module).attribute(inputs, target=targets), len(targets))


@METHODS.register("integrated-gradients", short="IG",
                  describe="integrated gradients from the empty event (captum IntegratedGradients, {steps} steps); "
                           "red: raises the output")
def integrated_gradients(module: nn.Module, event: torch.Tensor, targets: list[int],
                         opts: ExplainOptions) -> Attribution:
    inputs = event.expand(len(targets), -1, -1, -1).clone()
    maps = IntegratedGradients(module).attribute(inputs, baselines=0.0, target=targets, n_steps=opts.steps,
                                                 internal_batch_size=opts.batch)
    return Attribution(maps, len(targets) * opts.steps)


def describe(options: ExplainOptions) -> str:
    return METHODS.tags(options.method)["describe"].format(**vars(options))


# ------------------------------------------------------------------------------------------------------ events


def pick_events(trial: TrialModel, n: int, split: str = "val") -> np.ndarray:
    """``n`` file indices of ``split``: as evenly over the classes as they allow (classification), else spread."""
    if n < 1:
        raise BadInput(f"--events {n}: give a number of events >= 1")
    available = open_events(trial.data, trial.task).split_indices[split]
    if trial.task != "classification":
        return spread(available, n)
    labels = read_labels(trial.data, available)
    per_class = [available[labels == k] for k in range(len(trial.class_names or []))]
    quota = _quotas([len(c) for c in per_class], n)
    return np.sort(np.concatenate([spread(c, q) for c, q in zip(per_class, quota)]).astype(np.int64))


def _quotas(sizes: list[int], n: int) -> list[int]:
    """Events per class: round robin, a class with none left gives its turn to the others."""
    quota = [0] * len(sizes)
    while sum(quota) < min(n, sum(sizes)):
        for k, size in enumerate(sizes):
            if quota[k] < size and sum(quota) < n:
                quota[k] += 1
    return quota


def _truth(data: DataConfig, task: str, index: np.ndarray) -> np.ndarray:
    if task == "classification":
        return read_labels(data, index)
    with open_h5(data.path) as f:
        return f[data.targets][:][index].astype(np.float32)


def _targets(trial: TrialModel, output: np.ndarray, truth: np.ndarray) -> tuple[list[int], list[str]]:
    if trial.task != "classification":
        return list(range(len(output))), list(trial.output_names)
    predicted, true = int(np.argmax(output)), int(truth)
    if predicted == true:
        return [predicted], ["predicted = true"]
    return [predicted, true], ["predicted", "true"]


def _outputs(module: nn.Module, images: np.ndarray, device: torch.device) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([module(torch.from_numpy(images[i:i + FORWARD_BATCH]).to(device)).cpu().numpy()
                               for i in range(0, len(images), FORWARD_BATCH)])


def explain_events(trial: TrialModel, index: np.ndarray, options: ExplainOptions,
                   device: torch.device | None = None) -> Explanation:
    """Maps for ``index`` (file indices) with ``options.method``, on ``device`` (default: the trial's device)."""
    options.check(trial.image_shape)
    index = np.asarray(index, dtype=np.int64)
    images = read_images(trial.data, index)  # bad indices are refused before the device line is printed
    device = device or pick_device(announce=False)
    module = trial.stored_input_module().to(device).eval()
    outputs, truths = _outputs(module, images, device), _truth(trial.data, trial.task, index)
    method = METHODS.get(options.method)
    explanation = Explanation(trial, options)
    for i, image, output, truth in zip(index, images, outputs, truths):
        targets, roles = _targets(trial, output, truth)
        event = torch.from_numpy(image[None]).to(device)
        maps, forwards = method(module, event, targets, options)
        explanation.forwards += forwards
        explanation.events.append(EventMaps(int(i), image, output, np.asarray(truth), targets, roles,
                                            maps.detach().float().cpu().numpy()))
    return explanation
