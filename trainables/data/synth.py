"""``scanner data synth``: a synthetic two-view LArTPC data set in the HDF5 schema of docs/data.md.

Each event's deposits come from its own RNG (seeded by ``(seed, index)``), so the arrays do not depend on how the
events are batched or on how many processes make them. Deposits are binned onto the x-z and y-z views with one
``np.bincount`` per few events, then the detector is applied: diffusion blur, electronic noise, dead wires, a threshold.

The detector has knobs (``Detector``: noise, dead wires, threshold, diffusion, energy scale) for systematics studies.
Each event draws its interaction before its noise, so the same seed with other knobs gives the same events (labels,
truth, targets), differently detected: a nominal file and a variant differ only in the detector.

    write_synthetic("nominal.h5", events=3000, size=32)
    write_synthetic("noisy.h5", events=3000, size=32, detector=Detector(noise_mips=0.2, dead_wire_fraction=0.05))
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
from dataclasses import dataclass, fields
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
BLUR_3TAP_MAX_SIGMA = 0.8  # px: up to here the 3-tap kernel is close enough; an extra, wider blur goes beyond
DENSE_NOISE_BELOW_SIGMAS = 2.0  # threshold/noise below this: the tail trick is poor, draw noise on every pixel


@dataclass(frozen=True)
class Detector:
    """The detector response knobs of ``scanner data synth``; the defaults are the nominal detector."""

    noise_mips: float = NOISE_MIPS  # electronic noise RMS, in MIP per pixel
    dead_wire_fraction: float = DEAD_WIRE_FRACTION  # dead columns per view; a larger fraction keeps the nominal ones
    threshold_mips: float = THRESHOLD_MIPS  # zero suppression, in MIP per pixel
    diffusion: float = 1.0  # factor on the transverse spread of the drifting charge
    energy_scale: float = 1.0  # factor on the collected charge (a calibration shift)

    def validate(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise BadInput(f"--{CLI_FLAGS[f.name]} {value}: expected a finite number >= 0; "
                               f"fix: e.g. --{CLI_FLAGS[f.name]} {getattr(NOMINAL, f.name):g} (the nominal value)")
        if self.dead_wire_fraction >= 1:
            raise BadInput(f"--dead-wires {self.dead_wire_fraction}: expected a fraction of the wires in [0, 1); "
                           "fix: e.g. --dead-wires 0.05 for 5 %")
        if self.energy_scale == 0:
            raise BadInput("--energy-scale 0: no charge would be collected; fix: a factor > 0, e.g. 0.95")

    @property
    def is_nominal(self) -> bool:
        return self == NOMINAL

    def changed(self) -> dict[str, float]:
        """The knobs that differ from the nominal detector, by field name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != getattr(NOMINAL, f.name)}

    def attrs(self) -> dict[str, float]:
        """File attributes recording every knob (``detector_<knob>``)."""
        return {f"detector_{f.name}": float(getattr(self, f.name)) for f in fields(self)}


NOMINAL = Detector()
CLI_FLAGS = {"noise_mips": "noise", "dead_wire_fraction": "dead-wires", "threshold_mips": "threshold",
             "diffusion": "diffusion", "energy_scale": "energy-scale"}


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


def kernel_taps(sigma: float, radius: int = 1) -> list[tuple[int, float]]:
    """(offset, weight) pairs of a normalised 1-D gaussian: today's 3 taps, or ``2 * radius + 1`` for a wide blur."""
    if radius == 1:
        centre, side = blur_weights(sigma)
        return [(-1, side), (0, centre), (1, side)]
    raw = [math.exp(-0.5 * k * k / sigma**2) for k in range(-radius, radius + 1)]
    return [(k, w / sum(raw)) for k, w in zip(range(-radius, radius + 1), raw)]


def blur(views: np.ndarray, sigma: float, radius: int = 1) -> np.ndarray:
    """Gaussian diffusion of (B, V, H, W) views, splatting only the lit pixels (~1 %): ~10x cheaper than a
    dense separable blur. Charge that would land outside the image is lost, as at a real detector edge."""
    taps = kernel_taps(sigma, radius)
    n, v, h, w = views.shape
    flat = views.reshape(-1)
    lit = np.flatnonzero(flat)
    q = flat[lit]
    row, col = (lit // w) % h, lit % w
    targets, weights = [], []
    for dr, wr in taps:
        for dc, wc in taps:
            ok = (row + dr >= 0) & (row + dr < h) & (col + dc >= 0) & (col + dc < w)
            targets.append(lit[ok] + dr * w + dc)
            weights.append(q[ok] * (wr * wc))
    out = np.bincount(np.concatenate(targets), np.concatenate(weights), minlength=flat.size)
    return out.astype(np.float32).reshape(views.shape)


def diffuse(views: np.ndarray, size: int, factor: float) -> np.ndarray:
    """The nominal blur, scaled by ``factor``. A wider spread is the nominal blur followed by an extra one (variances
    add), so a variant keeps the nominal approximations and only adds what the factor asks."""
    nominal = max(DIFFUSION_CM / pixel_cm(size), 0.3)
    if factor <= 1:
        return blur(views, factor * nominal) if factor > 0 else views
    extra = nominal * math.sqrt(factor**2 - 1)
    radius = 1 if extra <= BLUR_3TAP_MAX_SIGMA else math.ceil(2.5 * extra)
    return blur(blur(views, nominal), extra, radius)


def dead_wire_count(fraction: float, size: int) -> int:
    return 0 if fraction == 0 else min(max(int(round(fraction * size)), 1), size)


def dead_wires(size: int, seed: int, fraction: float = DEAD_WIRE_FRACTION) -> np.ndarray:
    """(2, size) bool: the dead columns of each view. The nominal map is drawn first, as it always was; a larger
    fraction adds columns to it and a smaller one keeps part of it, so variants share the nominal detector's map."""
    rng = np.random.default_rng([seed, 7919])
    n_nominal, n_dead = dead_wire_count(DEAD_WIRE_FRACTION, size), dead_wire_count(fraction, size)
    nominal = [rng.choice(size, n_nominal, replace=False) for _ in range(2)]
    dead = np.zeros((2, size), bool)
    for view, chosen in enumerate(nominal):
        if n_dead > n_nominal:
            rest = np.setdiff1d(np.arange(size), chosen)
            chosen = np.concatenate([chosen, rng.choice(rest, n_dead - n_nominal, replace=False)])
        dead[view, chosen[:n_dead]] = True
    return dead


def make_batch(start: int, stop: int, size: int, seed: int, flavours: list[str],
               detector: Detector = NOMINAL) -> dict[str, np.ndarray]:
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
        images[sub:sub + len(rngs)] = detector_response(bin_views(deposits, size), size, seed, rngs, detector)
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


def detector_response(views: np.ndarray, size: int, seed: int, rngs, detector: Detector = NOMINAL) -> np.ndarray:
    """Charge scale, diffusion, noise, dead wires and zero suppression. Noise is drawn only where it can survive the
    threshold: on pixels with charge, plus the pure-noise hits of the gaussian tail (same statistics, ~20x cheaper);
    with a threshold under ``DENSE_NOISE_BELOW_SIGMAS`` noise RMS, on every pixel."""
    mip = phys.MIP_DEDX * pixel_cm(size)
    sigma, threshold = detector.noise_mips * mip, detector.threshold_mips * mip
    if detector.energy_scale != 1.0:
        views *= np.float32(detector.energy_scale)
    views = diffuse(views, size, detector.diffusion)
    if sigma > 0:
        add_noise(views, rngs, sigma, detector.threshold_mips / detector.noise_mips)
    views[:, dead_wires(size, seed, detector.dead_wire_fraction)] = 0.0
    views[views < threshold] = 0.0
    return views


def add_noise(views: np.ndarray, rngs, sigma: float, tail: float) -> None:
    """Gaussian noise of RMS ``sigma`` on every pixel that can pass a threshold of ``tail`` sigmas, in place."""
    p_hit = 0.5 * math.erfc(tail / math.sqrt(2))
    for event, rng in zip(views, rngs):
        flat = event.reshape(-1)
        if tail < DENSE_NOISE_BELOW_SIGMAS:
            flat += rng.standard_normal(flat.size, dtype=np.float32) * sigma
            continue
        lit = np.flatnonzero(flat)
        flat[lit] += rng.standard_normal(lit.size, dtype=np.float32) * sigma
        hits = rng.integers(0, flat.size, rng.poisson(p_hit * flat.size))
        # the gaussian tail beyond a is close to a + Exp(1/a)
        flat[hits] += (tail + rng.exponential(1.0 / tail, hits.size)).astype(np.float32) * sigma


def _batch_task(args):
    return args[0], make_batch(*args)


def _batches(events: int, size: int, seed: int, flavours: list[str], workers: int, detector: Detector):
    tasks = [(s, min(s + BATCH, events), size, seed, flavours, detector) for s in range(0, events, BATCH)]
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


def _create_datasets(f: h5py.File, events: int, size: int, flavours: list[str], seed: int, detector: Detector) -> None:
    f.attrs["class_names"] = [CLASS_NAMES[c] for c in flavours]
    f.attrs["target_names"] = ["dx", "dy", "dz"]
    f.attrs["direction"] = "unit_vector"
    f.attrs["views"] = ["xz", "yz"]
    f.attrs["pixel_cm"] = pixel_cm(size)
    f.attrs["units"] = "MeV"
    f.attrs["generator"] = (f"scanner data synth --events {events} --size {size} --seed {seed} "
                            f"--classes {','.join(flavours)}"
                            + "".join(f" --{CLI_FLAGS[k]} {v:g}" for k, v in detector.changed().items()))
    if not detector.is_nominal:  # a nominal file stays byte-identical to one written before the knobs existed
        f.attrs.update(detector.attrs())
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
                    classes=("nc", "nue", "numu"), progress: bool = True, workers: int | None = None,
                    detector: Detector = NOMINAL) -> Path:
    """Write ``events`` synthetic LArTPC events to ``path`` (temp file + rename: no half-written file). A variant
    detector records its knobs in ``detector_*`` file attributes; the nominal one writes none."""
    flavours = parse_classes(classes)
    detector.validate()
    if events < 1 or not 8 <= size <= 1024:
        raise BadInput(f"{path}: --events {events} / --size {size}: expected events >= 1 and 8 <= size <= 1024")
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)  # 2 = the cores these machines have
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        _create_datasets(f, events, size, flavours, seed, detector)
        bar = progress_bar(events, "synth", progress)
        for start, batch in _batches(events, size, seed, flavours, workers, detector):
            stop = start + len(batch["labels"])
            for name, arr in batch.items():
                f[name][start:stop] = arr
            f["targets"][start:stop] = batch["lepton_dir"]
            bar.update(stop - start)
        bar.close()
    return Path(path)
