"""Occlusion of one 2x128x128 event with resnet18 (8x8 patch, stride 4): `scanner explain`'s batched occlusion
against one forward pass per patch at batch 1 (the seeds' way).

    python benchmarks/bench_explain.py                       # resnet18, 8x8 patch, stride 4, 64 copies per pass
    python benchmarks/bench_explain.py --model small_cnn --batch 128 --event 3 --threads 1

`scanner explain` evaluates each distinct occluded copy once (trainables.explain.occlusion); captum's Occlusion
(every copy, batched) is timed too, and its whole map compared. The event is a synthetic LArTPC event (`scanner data
synth`, seed 0): by default the one of median occupancy among 64. The maps are of resnet18's logit of its top class
(random weights: a softmax near 1/3 would move by ~1e-6 and make a 1e-5 comparison empty). The batch-1 way runs the
first 64 patches (view 0, row-major) before the batched run and 64 patches around the event's brightest pixel after
it; their mean time per patch is scaled up to all patches. The maps are compared on the pixels that only the
sampled patches cover (the first 64 sit in the empty top rows; the second 64 are where the map is not 0).
Goal: >= 20x faster, same values to 1e-5.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

from _header import print_header  # benchmarks/ is on sys.path when a script runs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from captum.attr import Occlusion  # noqa: E402

from trainables.data import write_synthetic  # noqa: E402
from trainables.explain import ExplainOptions, occlusion, plan_occlusion  # noqa: E402
from trainables.models import create_model  # noqa: E402
from trainables.trial_model import StoredImagesModel  # noqa: E402

SAMPLE_PATCHES = 64


class Stopwatch:
    """Wall and process CPU seconds: on a shared machine the CPU time says what the work cost when others run."""

    def __enter__(self) -> "Stopwatch":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def synthetic_events(folder: Path, size: int) -> tuple[np.ndarray, float]:
    path = write_synthetic(folder / "bench.h5", events=64, size=size, seed=0, progress=False)
    with h5py.File(path, "r") as f:
        images = f["images"][:].astype(np.float32)
    lit = images[images > 0]
    return images, float(np.percentile(lit, 99))  # the loader's pixel scale, from these 64 events


def patches(shape: tuple[int, int, int], patch: int, stride: int) -> list[tuple[int, int, int]]:
    c, h, w = shape
    return [(v, r, q) for v in range(c) for r in range(0, h - patch + 1, stride) for q in range(0, w - patch + 1, stride)]


def batch1_deltas(module, event: torch.Tensor, target: int, where, patch: int) -> tuple[np.ndarray, Stopwatch]:
    """The seeds' way: one occluded copy per forward pass; the output drop per patch, and the time it took."""
    with torch.inference_mode():
        base = module(event)[0, target]
        deltas = []
        with Stopwatch() as watch:
            for v, r, q in where:
                copy = event.clone()
                copy[0, v, r:r + patch, q:q + patch] = 0.0
                deltas.append(float(base - module(copy)[0, target]))
    return np.array(deltas), watch


def around_brightest(event: np.ndarray, patch: int, stride: int, n_side: int = 8) -> list[tuple[int, int, int]]:
    """``n_side`` x ``n_side`` patch positions centred on the brightest pixel, in its view."""
    v, r, q = np.unravel_index(int(np.argmax(event)), event.shape)
    _, h, w = event.shape
    rows = [i for i in range(0, h - patch + 1, stride)]
    cols = [i for i in range(0, w - patch + 1, stride)]
    r0 = int(np.clip(np.searchsorted(rows, r) - n_side // 2, 0, len(rows) - n_side))
    q0 = int(np.clip(np.searchsorted(cols, q) - n_side // 2, 0, len(cols) - n_side))
    return [(int(v), rows[i], cols[j]) for i in range(r0, r0 + n_side) for j in range(q0, q0 + n_side)]


def compare_on_sampled(full_map: np.ndarray, deltas: np.ndarray, where, shape, patch: int, stride: int):
    """Captum averages each pixel over the patches covering it: on pixels covered only by the sampled patches,
    the map is fixed by the batch-1 deltas alone."""
    partial, count_sampled, count_all = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for d, (v, r, q) in zip(deltas, where):
        partial[v, r:r + patch, q:q + patch] += d
        count_sampled[v, r:r + patch, q:q + patch] += 1
    for v, r, q in patches(shape, patch, stride):
        count_all[v, r:r + patch, q:q + patch] += 1
    fixed = (count_sampled == count_all) & (count_all > 0)
    expected = partial[fixed] / count_all[fixed]
    return float(np.max(np.abs(full_map[fixed] - expected))), int(fixed.sum()), float(np.max(np.abs(expected)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--patch", type=int, default=8)
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64, help="occluded copies per forward pass")
    parser.add_argument("--event", type=int, default=None, help="event of the 64 (default: median occupancy)")
    parser.add_argument("--skip-plain", action="store_true", help="do not time captum without de-duplication")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # on a shared machine 1 thread avoids OpenMP spinning against others

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        images, scale = synthetic_events(Path(tmp), args.size)
    occupancy = (images > 0).reshape(len(images), -1).mean(1)
    pick = args.event if args.event is not None else int(np.argsort(occupancy)[len(occupancy) // 2])
    # "regression": the raw outputs (logits), no softmax
    module = StoredImagesModel(create_model(args.model, images.shape[1], 3).eval(), scale, "regression").eval()
    event = torch.from_numpy(images[pick][None])
    with torch.inference_mode():
        target = int(module(event).argmax())
    opts = ExplainOptions(method="occlusion", patch=args.patch, stride=args.stride, batch=args.batch)
    shape = tuple(images.shape[1:])
    where = patches(shape, args.patch, args.stride)
    first, lit = where[:SAMPLE_PATCHES], around_brightest(images[pick], args.patch, args.stride)

    first_deltas, before = batch1_deltas(module, event, target, first, args.patch)
    ours = copy.deepcopy(module)  # occlusion puts its model in channels-last: the other ways keep the plain one
    with Stopwatch() as batched:
        result = occlusion(ours, event, [target], opts)
    lit_deltas, after = batch1_deltas(module, event, target, lit, args.patch)
    scale_up = len(where) / (len(first) + len(lit))
    batch1_wall, batch1_cpu = (before.wall + after.wall) * scale_up, (before.cpu + after.cpu) * scale_up
    full_map = result.maps[0].numpy()
    compared = [compare_on_sampled(full_map, d, w, shape, args.patch, args.stride)
                for d, w in ((first_deltas, first), (lit_deltas, lit))]
    plain = captum_map = None
    if not args.skip_plain:
        with torch.inference_mode(), Stopwatch() as plain:
            captum_map = Occlusion(module).attribute(event, sliding_window_shapes=(1, args.patch, args.patch),
                                                     strides=(1, args.stride, args.stride), baselines=0.0,
                                                     target=target, perturbations_per_eval=args.batch)[0].numpy()
    distinct = [1 + len(plan_occlusion(im, args.patch, args.stride).first) for im in images]

    print_header()
    print(f"torch       {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"event       {pick} of 64 (synthetic, seed 0): {images.shape[1]}x{args.size}x{args.size}, "
          f"{100 * occupancy[pick]:.2f} % pixels lit; {args.model}, target class {target}")
    print(f"patches     {len(where)} ({args.patch}x{args.patch}, stride {args.stride}, one view at a time); "
          f"forward rows {result.forwards} (the event + its distinct occluded copies); over the 64 events: median "
          f"{int(np.median(distinct))}, min {min(distinct)}, max {max(distinct)}")
    print(f"batch 1     {1e3 * before.wall / len(first):.2f} / {1e3 * after.wall / len(lit):.2f} ms per patch wall "
          f"(first {len(first)} patches before, {len(lit)} around the brightest pixel after) -> {batch1_wall:.1f} s "
          f"wall, {batch1_cpu:.1f} s CPU for all {len(where)}")
    if plain is not None:
        print(f"captum      {plain.wall:.1f} s wall, {plain.cpu:.1f} s CPU: captum's Occlusion, {args.batch} copies per "
              f"pass, every copy evaluated: {batch1_wall / plain.wall:.1f}x wall, {batch1_cpu / plain.cpu:.1f}x CPU")
    print(f"explain     {batched.wall:.2f} s wall, {batched.cpu:.2f} s CPU: distinct copies only, {args.batch} per pass "
          f"({result.forwards} forward rows): {batch1_wall / batched.wall:.1f}x faster wall, "
          f"{batch1_cpu / batched.cpu:.1f}x CPU (goal >= 20x)")
    for label, (diff, pixels, largest) in zip(("first 64 patches", "64 around the brightest pixel"), compared):
        print(f"maps        max |diff| {diff:.2e} on the {pixels} pixels only the {label} cover (largest |value| "
              f"there {largest:.2e}; goal <= 1e-5)")
    if captum_map is not None:
        print(f"maps        max |diff| {np.max(np.abs(full_map - captum_map)):.2e} against captum's whole map "
              f"(largest |value| {np.max(np.abs(captum_map)):.2e})")


if __name__ == "__main__":
    main()
