"""``scanner data synth``: a synthetic two-view LArTPC data set in the HDF5 schema of DESIGN.md.

Each event's deposits come from its own RNG (seeded by ``(seed, index)``), so the arrays do not depend on how the
events are batched or on how many processes make them. Deposits are binned onto the x-z and y-z views with one
``np.bincount`` per few events, then the detector is applied: diffusion blur, electronic noise, dead wires, a threshold.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
from pathlib import Path

import h5py
import numpy as np

from trainables.data import _lartpc as phys
from trainables.files import atomic_output, progress_bar
from trainables.data.schema import hash_split
from trainables.errors import BadInput

CLASS_NAMES = {"nc": "NC", "nue": "nueCC", "numu": "numuCC", "nutau": "nutauCC"}
BATCH = 128  # events per worker task and per write
SUB_BATCH = 16  # events binned and blurred together: 2 MiB of float32 views at 128x128 stay in cache
PARALLEL_MIN_EVENTS = 1500  # below this, starting processes costs more than it saves
DIFFUSION_CM = 0.9  # transverse spread of the drifting charge
NOISE_MIPS = 0.1  # electronic noise RMS, in units of a MIP crossing one pixel
THRESHOLD_MIPS = 0.3  # zero suppression: 3 sigma of the noise, below a third of a MIP
DEAD_WIRE_FRACTION = 0.02  # a few dead channels per view, the same for every event (a detector's channel map)


def parse_classes(classes) -> list[str]:
    """``"nc,nue,numu"`` or a sequence; the long names (``nueCC``) are accepted too."""
    items = [c.strip() for c in (classes.split(",") if isinstance(classes, str) else classes) if c.strip()]
    by_long = {v.lower(): k for k, v in CLASS_NAMES.items()}
    flavours = [c.lower() if c.lower() in CLASS_NAMES else by_long.get(c.lower(), c) for c in items]
    unknown = [c for c in flavours if c not in CLASS_NAMES]
    if unknown or len(flavours) < 2 or len(set(flavours)) != len(flavours):
        raise BadInput(f"--classes '{','.join(items)}': expected 2-4 distinct of {', '.join(CLASS_NAMES)}; "
                       "fix: e.g. --classes nc,nue,numu")
    return flavours


def pixel_cm(size: int) -> float:
    return phys.DETECTOR_CM / size


def track_step(size: int) -> float:
    """Half a pixel, so every crossed pixel gets a deposit; within 0.5-2 cm for the physics of a step."""
    return float(np.clip(pixel_cm(size) / 2, 0.5, 2.0))


def blur_weights(sigma: float) -> tuple[float, float]:
    """Centre and neighbour weights of a 3-tap gaussian: at sigma <= ~0.8 px the outer taps are < 1 %."""
    side = math.exp(-0.5 / sigma**2)
    return 1.0 / (1 + 2 * side), side / (1 + 2 * side)


def blur(views: np.ndarray, sigma: float) -> np.ndarray:
    """3x3 gaussian diffusion of (B, V, H, W) views, splatting only the lit pixels (~1 %): ~10x cheaper than a
    dense separable blur. Charge that would land outside the image is lost, as at a real detector edge."""
    centre, side = blur_weights(sigma)
    n, v, h, w = views.shape
    flat = views.reshape(-1)
    lit = np.flatnonzero(flat)
    q = flat[lit]
    row, col = (lit // w) % h, lit % w
    targets, weights = [], []
    for dr, wr in ((-1, side), (0, centre), (1, side)):
        for dc, wc in ((-1, side), (0, centre), (1, side)):
            ok = (row + dr >= 0) & (row + dr < h) & (col + dc >= 0) & (col + dc < w)
            targets.append(lit[ok] + dr * w + dc)
            weights.append(q[ok] * (wr * wc))
    out = np.bincount(np.concatenate(targets), np.concatenate(weights), minlength=flat.size)
    return out.astype(np.float32).reshape(views.shape)


def dead_wires(size: int, seed: int) -> np.ndarray:
    """(2, size) bool: the dead columns of each view."""
    rng = np.random.default_rng([seed, 7919])
    n_dead = max(int(round(DEAD_WIRE_FRACTION * size)), 1)
    dead = np.zeros((2, size), bool)
    for view in range(2):
        dead[view, rng.choice(size, n_dead, replace=False)] = True
    return dead


def make_batch(start: int, stop: int, size: int, seed: int, flavours: list[str]) -> dict[str, np.ndarray]:
    """Events ``start..stop-1``: images (B, 2, size, size) float16 and the truth arrays."""
    n = stop - start
    step = track_step(size)
    images = np.empty((n, 2, size, size), np.float16)
    truth = {k: [] for k in ("labels", "energy", "lepton_energy", "lepton_dir", "vertex",
                             "n_protons", "n_pions", "n_pi0")}
    for sub in range(0, n, SUB_BATCH):
        deposits, rngs = [], []
        for i in range(start + sub, min(start + sub + SUB_BATCH, stop)):
            rng = np.random.default_rng([seed, i])  # one stream per event: batching and processes do not matter
            label = int(rng.integers(len(flavours)))
            points, charge, t = phys.interaction(rng, flavours[label], step)
            deposits.append((points, charge))
            rngs.append(rng)
            truth["labels"].append(label)
            for k, v in t.items():
                truth[k].append(v)
        images[sub:sub + len(rngs)] = detector_response(bin_views(deposits, size), size, seed, rngs)
    return {"images": images, **{k: np.asarray(v) for k, v in truth.items()}}


def bin_views(deposits, size: int) -> np.ndarray:
    """(B, 2, size, size) float32 charge: view 0 = x-z, view 1 = y-z; rows = drift (x or y), columns = wire (z)."""
    pix = pixel_cm(size)
    flat_idx, flat_q = [], []
    for b, (points, charge) in enumerate(deposits):
        cells = np.floor(points / pix).astype(np.int64)
        inside = np.all((cells >= 0) & (cells < size), axis=1)
        cells, charge = cells[inside], charge[inside]
        base = b * 2 * size * size
        flat_idx += [base + cells[:, 0] * size + cells[:, 2], base + size * size + cells[:, 1] * size + cells[:, 2]]
        flat_q += [charge, charge]
    views = np.bincount(np.concatenate(flat_idx), np.concatenate(flat_q), minlength=len(deposits) * 2 * size * size)
    return views.astype(np.float32).reshape(len(deposits), 2, size, size)


def detector_response(views: np.ndarray, size: int, seed: int, rngs) -> np.ndarray:
    """Diffusion, noise, dead wires and zero suppression. Noise is drawn only where it can survive the threshold:
    on pixels with charge, plus the pure-noise hits of the gaussian tail (same statistics, ~20x cheaper)."""
    mip = phys.MIP_DEDX * pixel_cm(size)
    sigma, threshold = NOISE_MIPS * mip, THRESHOLD_MIPS * mip
    views = blur(views, max(DIFFUSION_CM / pixel_cm(size), 0.3))
    tail = THRESHOLD_MIPS / NOISE_MIPS  # in sigmas
    p_hit = 0.5 * math.erfc(tail / math.sqrt(2))
    for event, rng in zip(views, rngs):
        flat = event.reshape(-1)
        lit = np.flatnonzero(flat)
        flat[lit] += rng.standard_normal(lit.size, dtype=np.float32) * sigma
        hits = rng.integers(0, flat.size, rng.poisson(p_hit * flat.size))
        # the gaussian tail beyond a is close to a + Exp(1/a)
        flat[hits] += (tail + rng.exponential(1.0 / tail, hits.size)).astype(np.float32) * sigma
    views[:, dead_wires(size, seed)] = 0.0
    views[views < threshold] = 0.0
    return views


def _batch_task(args):
    return args[0], make_batch(*args)


def _batches(events: int, size: int, seed: int, flavours: list[str], workers: int):
    tasks = [(s, min(s + BATCH, events), size, seed, flavours) for s in range(0, events, BATCH)]
    if workers <= 1 or events < PARALLEL_MIN_EVENTS:
        for t in tasks:
            yield _batch_task(t)
        return
    if "fork" not in mp.get_all_start_methods():
        yield from map(_batch_task, tasks)
        return
    # fork, not spawn: spawn re-runs the caller's __main__ (a script without a main guard would recurse). The
    # children only run numpy element-wise code (no BLAS/OpenMP), so locks held by the parent's threads are safe.
    with mp.get_context("fork").Pool(workers) as pool:
        yield from pool.imap(_batch_task, tasks)  # ordered: the file is written front to back


def _create_datasets(f: h5py.File, events: int, size: int, flavours: list[str], seed: int) -> None:
    f.attrs["class_names"] = [CLASS_NAMES[c] for c in flavours]
    f.attrs["target_names"] = ["dx", "dy", "dz"]
    f.attrs["direction"] = "unit_vector"
    f.attrs["views"] = ["xz", "yz"]
    f.attrs["pixel_cm"] = pixel_cm(size)
    f.attrs["units"] = "MeV"
    f.attrs["generator"] = (f"scanner data synth --events {events} --size {size} --seed {seed} "
                            f"--classes {','.join(flavours)}")
    # gzip-1, no shuffle: the smallest and, read as raw chunks + zlib (h5dataset.py), the fastest we measured;
    # lzf read ~1.5x slower through h5py and has no stdlib decoder
    f.create_dataset("images", (events, 2, size, size), np.float16, chunks=(1, 2, size, size),
                     compression="gzip", compression_opts=1)
    for name, dtype, shape in (("labels", np.int64, ()), ("energy", np.float32, ()), ("lepton_energy", np.float32, ()),
                               ("lepton_dir", np.float32, (3,)), ("vertex", np.float32, (3,)),
                               ("targets", np.float32, (3,)), ("n_protons", np.int16, ()),
                               ("n_pions", np.int16, ()), ("n_pi0", np.int16, ())):
        f.create_dataset(name, (events, *shape), dtype)
    f.create_dataset("split", data=hash_split(events, 0.15, 0.15, seed), dtype=np.uint8)


def write_synthetic(path, events: int = 5000, size: int = 128, seed: int = 0,
                    classes=("nc", "nue", "numu"), progress: bool = True, workers: int | None = None) -> Path:
    """Write ``events`` synthetic LArTPC events to ``path`` (temp file + rename: no half-written file)."""
    flavours = parse_classes(classes)
    if events < 1 or not 8 <= size <= 1024:
        raise BadInput(f"{path}: --events {events} / --size {size}: expected events >= 1 and 8 <= size <= 1024")
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)  # 2 = the cores these machines have
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        _create_datasets(f, events, size, flavours, seed)
        bar = progress_bar(events, "synth", progress)
        for start, batch in _batches(events, size, seed, flavours, workers):
            stop = start + len(batch["labels"])
            for name, arr in batch.items():
                f[name][start:stop] = arr
            f["targets"][start:stop] = batch["lepton_dir"]
            bar.update(stop - start)
        bar.close()
    return Path(path)
