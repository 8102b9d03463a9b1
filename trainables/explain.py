"""Attribution maps of a trial's outputs over chosen validation events, with captum, on the trial's device.

    trial = load_trial(checkpoint_dir)                              # trainables.trial_model
    options = ExplainOptions(method="occlusion", patch=8, stride=4)
    index = pick_events(trial, n=6)                                 # spread evenly over the classes
    explanation = explain_events(trial, index, options)             # maps per event, target and view
    files = write_explanation(explanation, Path("explain"))         # trainables.explain_files: PNGs, html, json

Maps are taken of what ``predictions.h5`` holds, as a function of the images as stored: the softmax score of the
predicted and of the true class (classification), or each predicted target (regression). Occlusion is batched
(``perturbations_per_eval``), and a copy identical to one already evaluated is not evaluated again: detector images
are sparse, so most patches hide nothing or the same few hits (see ``DedupForward``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np
import torch
from captum.attr import IntegratedGradients, Occlusion, Saliency
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
DEDUP_FANOUT = 16  # occluded copies per captum call / forward batch: ~1 in 10 copies of a sparse event is new
COPIES_BUDGET_BYTES = 256 << 20  # captum holds one call's copies at once: 2 GiB at 512x512x3 would not do


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
        if self.method == "occlusion" and not (1 <= self.patch <= min(h, w) and 1 <= self.stride):
            raise BadInput(f"--patch {self.patch} --stride {self.stride}: expected 1 <= patch <= {min(h, w)} "
                           f"(the {h}x{w} images) and stride >= 1; fix: e.g. --patch {max(1, min(8, h, w))} "
                           "--stride 4")
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


class DedupForward:
    """The forward function captum's Occlusion calls, for one event: each occluded copy is keyed by the set of
    pixels that differ from the event, and a key seen before reuses its output instead of a forward pass. Hiding
    an empty patch changes nothing, and neighbouring patches often hide the same hits, so on sparse detector
    images most copies cost nothing. The outputs are the model's own, so the map is the one captum would draw."""

    def __init__(self, module: nn.Module, event: torch.Tensor, batch: int = 64):
        self.module, self.event, self.batch = module, event, batch
        self.cache: dict[bytes, torch.Tensor] = {}
        self.forwards = 0

    def _keys(self, batch: torch.Tensor) -> list[bytes]:
        changed = np.packbits((batch != self.event).flatten(1).cpu().numpy(), axis=1)
        return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in changed]

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        keys = self._keys(batch)
        new: dict[bytes, int] = {}
        for row, key in enumerate(keys):
            if key not in self.cache and key not in new:
                new[key] = row
        rows = torch.tensor(list(new.values()), dtype=torch.long, device=batch.device)
        outputs = [self.module(batch[rows[i:i + self.batch]]) for i in range(0, len(rows), self.batch)]
        if outputs:
            self.cache.update(zip(new, torch.cat(outputs)))
            self.forwards += len(rows)
        return torch.stack([self.cache[key] for key in keys])


def copies_per_call(event: torch.Tensor, batch: int) -> int:
    """Occluded copies captum builds per call of the forward function: many more than one forward batch, because
    most are not evaluated (``DedupForward``), so the new ones still fill whole batches; within a memory budget."""
    per_copy = event.numel() * event.element_size()
    return max(batch, min(batch * DEDUP_FANOUT, COPIES_BUDGET_BYTES // per_copy))


@METHODS.register("occlusion", short="occlusion",
                  describe="the drop of the output when a {patch}x{patch} patch of one view is set to 0 "
                           "(captum Occlusion, stride {stride}); red: the patch supports it")
def occlusion(module: nn.Module, event: torch.Tensor, targets: list[int], opts: ExplainOptions) -> Attribution:
    forward = DedupForward(module, event, opts.batch)  # one per event: the second target's copies are all cached
    attribute = Occlusion(forward).attribute
    with torch.no_grad():  # cached outputs must not hold autograd graphs
        maps = [attribute(event, sliding_window_shapes=(1, opts.patch, opts.patch),
                          strides=(1, opts.stride, opts.stride), baselines=0.0, target=t,
                          perturbations_per_eval=copies_per_call(event, opts.batch)) for t in targets]
    return Attribution(torch.cat(maps), forward.forwards)


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
    device = device or pick_device()
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
