"""The HDF5 schema (docs/data.md): validate a file once, cheaply, and describe it as an ``EventFile``.

Every break of the schema is a ``BadInput`` with one line: the file, the dataset, what was expected, the fix.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from trainables.config import DataConfig
from trainables.contract import MAX_METRIC_KEY, colliding_keys, metric_key
from trainables.errors import BadInput
from trainables.physics import DIRECTIONS

SPLITS = ("train", "val", "test")
NAN_CHECK_EVENTS = 4  # events read at each end of the file on open; `data inspect` scans them all
SCALE_SAMPLE_EVENTS = 32  # events spread over the file that set the pixel scale


@dataclass(frozen=True, eq=False)
class EventFile:
    """What a validated events file holds. ``split_indices`` are sorted file indices, after ``data.select``."""

    path: str
    n_events: int
    image_shape: tuple[int, int, int]
    dtype: str
    class_names: list[str] | None
    target_names: list[str] | None
    direction: str | None
    truth_names: list[str]
    has_weights: bool
    split_indices: dict[str, np.ndarray]
    pixel_scale: float = 1.0  # images are divided by it: O(1) inputs whatever the file's charge units

    @property
    def n_classes(self) -> int:
        return len(self.class_names or [])


def hash_split(n: int, val_fraction: float, test_fraction: float, seed: int = 0) -> np.ndarray:
    """(n,) uint8 split codes (0 train, 1 val, 2 test) from a splitmix64 hash of the index: stable, order-free."""
    with np.errstate(over="ignore"):
        z = np.arange(n, dtype=np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return np.where(u < val_fraction, 1, np.where(u < val_fraction + test_fraction, 2, 0)).astype(np.uint8)


def data_hash(path) -> str:
    """sha256 of the file's bytes (streamed in 8 MiB blocks), first 16 hex characters."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _str_list(value) -> list[str] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, (str, bytes)) else list(value)
    return [v.decode() if isinstance(v, bytes) else str(v) for v in items]


def open_h5(path):
    """h5py.File for reading, or one clear line when the file is missing or not HDF5."""

    p = Path(path)
    if p.is_dir():
        raise BadInput(f"{p}: a folder, not an HDF5 events file; fix: give the .h5 file, or convert a folder of PNG "
                       f"events with `scanner data import-images {p} --out events.h5`")
    if not p.is_file():
        raise BadInput(f"{p}: file not found; expected an HDF5 events file; fix: check data.path, "
                       f"or make one with `scanner data synth --out {p.name}`")
    if not h5py.is_hdf5(p):
        raise BadInput(f"{p}: not an HDF5 file; expected HDF5 with an 'images' dataset (N, C, H, W); fix: "
                       "convert it, e.g. `scanner data import-images DIR --out FILE.h5` for PNG folders")
    return h5py.File(p, "r")


def _dataset(f, path, name: str, what: str, fix: str):
    if name not in f or not hasattr(f[name], "shape"):
        have = ", ".join(k for k in f.keys()) or "none"
        raise BadInput(f"{path}: dataset '{name}' not found (datasets: {have}); expected {what}; fix: {fix}")
    return f[name]


def _check_images(f, path, cfg: DataConfig):
    ds = _dataset(f, path, cfg.images, "images (N, C, H, W)", "set data.images to the images dataset's name")
    if ds.ndim != 4:
        raise BadInput(f"{path}: dataset '{cfg.images}' has shape {ds.shape}; expected rank 4 (N, C, H, W); "
                       "fix: reshape, e.g. add a channel axis for single-view images")
    if ds.shape[0] == 0:
        raise BadInput(f"{path}: dataset '{cfg.images}' is empty (0 events); expected N >= 1; fix: write events")
    if not (np.issubdtype(ds.dtype, np.floating) or np.issubdtype(ds.dtype, np.integer)):
        raise BadInput(f"{path}: dataset '{cfg.images}' has dtype {ds.dtype}; expected float16/float32/uint8")
    n = ds.shape[0]
    ends = sorted({*range(min(NAN_CHECK_EVENTS, n)), *range(max(n - NAN_CHECK_EVENTS, 0), n)})
    if np.issubdtype(ds.dtype, np.floating):
        bad = [i for i in ends if not np.isfinite(ds[i]).all()]
        if bad:
            raise BadInput(f"{path}: dataset '{cfg.images}' event {bad[0]} has NaN/inf pixels; expected finite "
                           "charge; fix: drop or zero those events (`scanner data inspect` lists them all)")
    return ds


def _check_length(path, name: str, ds, n: int, rank: int, what: str) -> None:
    if ds.ndim != rank:
        raise BadInput(f"{path}: dataset '{name}' has shape {ds.shape}; expected rank {rank} {what}; fix: reshape it")
    if ds.shape[0] != n:
        raise BadInput(f"{path}: dataset '{name}' has {ds.shape[0]} entries but images has {n} events; "
                       f"expected one per event; fix: rewrite '{name}' with {n} entries")


def _check_weights(f, path, name: str, n: int) -> None:
    _check_length(path, name, f[name], n, 1, "(N,)")
    w = f[name][:].astype(np.float64)
    if not (np.isfinite(w).all() and (w >= 0).all()):
        raise BadInput(f"{path}: dataset '{name}' has negative or NaN/inf weights; expected finite weights >= 0; "
                       "fix: recompute them, or delete the dataset to weigh every event 1")


def _labels(f, path, cfg: DataConfig, n: int) -> tuple[np.ndarray, list[str]]:
    ds = _dataset(f, path, cfg.labels, "integer labels (N,) for classification",
                  "set data.labels to the labels dataset's name, or use task: regression")
    _check_length(path, cfg.labels, ds, n, 1, "(N,)")
    if not np.issubdtype(ds.dtype, np.integer):
        raise BadInput(f"{path}: dataset '{cfg.labels}' has dtype {ds.dtype}; expected integer class indices; "
                       "fix: store labels as int (index into the class_names attribute)")
    labels = ds[:]
    names = _str_list(f.attrs.get("class_names"))
    if names is None:  # a bare file: classes are the label values
        names = [str(i) for i in range(int(labels.max()) + 1 if labels.size else 0)]
    if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
        raise BadInput(f"{path}: dataset '{cfg.labels}' has values in [{labels.min()}, {labels.max()}]; expected "
                       f"0..{len(names) - 1} ({len(names)} class_names); fix: relabel, or the class_names attribute")
    _check_metric_keys(path, "class_names", names)
    return labels, names


def _targets(f, path, cfg: DataConfig, n: int) -> tuple[list[str], str | None]:
    ds = _dataset(f, path, cfg.targets, "float targets (N, K) for regression",
                  "set data.targets to the targets dataset's name, or use task: classification")
    _check_length(path, cfg.targets, ds, n, 2, "(N, K)")
    names = _str_list(f.attrs.get("target_names")) or [f"t{i}" for i in range(ds.shape[1])]
    direction = f.attrs.get("direction")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction is not None and DIRECTIONS.get(str(direction)) != ds.shape[1]:
        raise BadInput(f"{path}: attribute direction='{direction}' with '{cfg.targets}' of shape {ds.shape}; "
                       "expected unit_vector with K=3 or theta_phi with K=2; fix: the attribute or the targets")
    if len(names) != ds.shape[1]:
        raise BadInput(f"{path}: attribute target_names has {len(names)} names for '{cfg.targets}' of shape "
                       f"{ds.shape}; expected {ds.shape[1]}; fix: one name per target column")
    _check_metric_keys(path, "target_names", names)
    return names, (str(direction) if direction is not None else None)


def _check_metric_keys(path, attribute: str, names: list[str]) -> None:
    """Metric names carry each name through ``metric_key``; two names that meet there would mix their figures, and
    a key too long for MLflow's metric names would lose them."""
    for name in names:
        if len(metric_key(name)) > MAX_METRIC_KEY:
            raise BadInput(f"{path}: attribute {attribute} has a name of {len(metric_key(name))} characters "
                           f"({str(name)[:40]!r}...), too long for MLflow's metric names; fix: shorten it to at most "
                           f"{MAX_METRIC_KEY} (for PNG imports, rename its folder)")
    for key, group in colliding_keys(names).items():
        raise BadInput(f"{path}: attribute {attribute} has {' and '.join(repr(n) for n in group)}, which share the "
                       f"metric name key '{key}' (characters other than letters, digits, _ - . become _); fix: rename "
                       "one of them (for PNG imports, rename its folder)")


def _split_codes(f, path, cfg: DataConfig, n: int) -> np.ndarray:
    if cfg.split not in f:
        return hash_split(n, cfg.val_fraction, cfg.test_fraction)
    ds = f[cfg.split]
    _check_length(path, cfg.split, ds, n, 1, "(N,)")
    codes = ds[:]
    if codes.size and (codes.min() < 0 or codes.max() > 2):
        raise BadInput(f"{path}: dataset '{cfg.split}' has values outside 0/1/2; expected 0 train, 1 val, 2 test; "
                       "fix: recode it, or delete it to split by a hash of the index")
    return codes.astype(np.uint8)


def _selection(f, path, cfg: DataConfig, n: int, class_names: list[str] | None) -> np.ndarray:
    keep = np.ones(n, bool)
    for key, wanted in (cfg.select or {}).items():
        name = cfg.labels if key in ("labels", cfg.labels) else key
        if name not in f:
            raise BadInput(f"{path}: data.select key '{key}': no dataset '{name}' in the file; "
                           f"fix: select on one of {', '.join(f.keys())}")
        values = f[name][:]
        if values.shape != (n,):
            raise BadInput(f"{path}: data.select key '{key}': dataset '{name}' has shape {values.shape}; "
                           "expected (N,); fix: select on a per-event scalar dataset")
        wanted = list(wanted) if isinstance(wanted, (list, tuple)) else [wanted]
        if name == cfg.labels:
            names = class_names or _str_list(f.attrs.get("class_names")) or []
            codes = []
            for w in wanted:
                if isinstance(w, str) and w in names:
                    codes.append(names.index(w))
                elif isinstance(w, (int, np.integer)) and 0 <= int(w) < max(len(names), 1):
                    codes.append(int(w))
                else:
                    raise BadInput(f"{path}: data.select labels: unknown class '{w}'; "
                                   f"expected one of {', '.join(names)}; fix: the class names in data.select")
            wanted = codes
        keep &= np.isin(values, wanted)
    return keep


def _pixel_scale(images) -> float:
    """A robust scale from events spread over the file: the 99th percentile of the non-zero |pixels|."""
    if images.dtype == np.uint8:
        return 255.0
    n = images.shape[0]
    idx = np.unique(np.linspace(0, n - 1, min(SCALE_SAMPLE_EVENTS, n)).astype(int))
    sample = np.abs(np.stack([images[i] for i in idx]).astype(np.float32))
    nonzero = sample[sample > 0]
    scale = float(np.percentile(nonzero, 99)) if nonzero.size else 1.0
    return scale if np.isfinite(scale) and scale > 0 else 1.0


def truth_datasets(f, cfg: DataConfig, n: int) -> list[str]:
    """Numeric per-event datasets that are not inputs, labels, targets, weights or split."""
    taken = {cfg.images, cfg.labels, cfg.targets, cfg.weights, cfg.split}
    return sorted(k for k, ds in f.items() if k not in taken and hasattr(ds, "shape") and ds.ndim >= 1
                  and ds.shape[0] == n and np.issubdtype(ds.dtype, np.number))


def _check_not_empty(f, path) -> None:
    if not len(f.keys()):
        raise BadInput(f"{path}: the file is empty (no datasets); expected 'images' (N, C, H, W) and "
                       "'labels' or 'targets'; fix: write events, e.g. `scanner data synth`")


def infer_task(cfg: DataConfig) -> str:
    """What a file without a ``task:`` is for: classification when it has labels, else regression on targets."""
    with open_h5(cfg.path) as f:
        _check_not_empty(f, cfg.path)
        if cfg.labels in f:
            return "classification"
        if cfg.targets in f:
            return "regression"
        have = ", ".join(f.keys()) or "none"
    raise BadInput(f"{cfg.path}: neither '{cfg.labels}' nor '{cfg.targets}' (datasets: {have}); expected labels for "
                   "classification or targets for regression; fix: set data.labels or data.targets to the dataset's "
                   "name, or set task:")


def open_events(cfg: DataConfig, task: str) -> EventFile:
    """Validate ``cfg.path`` against the schema for ``task`` and describe it. Raises BadInput on any break."""
    if task not in ("classification", "regression"):
        raise BadInput(f"{cfg.path}: task '{task}'; expected classification or regression")
    path = str(cfg.path)
    with open_h5(path) as f:
        _check_not_empty(f, path)
        images = _check_images(f, path, cfg)
        n = images.shape[0]
        class_names = target_names = direction = None
        if task == "classification":
            _, class_names = _labels(f, path, cfg, n)
        else:
            target_names, direction = _targets(f, path, cfg, n)
        if cfg.weights in f:
            _check_weights(f, path, cfg.weights, n)
        codes = _split_codes(f, path, cfg, n)
        keep = _selection(f, path, cfg, n, class_names)
        if not keep.any():
            raise BadInput(f"{path}: data.select {cfg.select} keeps no events; fix: loosen data.select")
        splits = {name: np.flatnonzero(keep & (codes == code)) for code, name in enumerate(SPLITS)}
        return EventFile(path=path, n_events=n, image_shape=tuple(int(s) for s in images.shape[1:]),
                         dtype=str(images.dtype), class_names=class_names, target_names=target_names,
                         direction=direction, truth_names=truth_datasets(f, cfg, n),
                         has_weights=cfg.weights in f, split_indices=splits, pixel_scale=_pixel_scale(images))


def read_truth(cfg: DataConfig, indices: np.ndarray) -> dict[str, np.ndarray]:
    """The per-event truth datasets for ``indices`` (any order), e.g. for predictions.h5."""
    indices = np.asarray(indices, dtype=np.int64)
    with open_h5(cfg.path) as f:
        n = f[cfg.images].shape[0]
        # truth datasets are a few numbers per event: one contiguous read beats a fancy-index read
        return {name: f[name][:][indices] for name in truth_datasets(f, cfg, n)}


def read_labels(cfg: DataConfig, indices: np.ndarray | None = None) -> np.ndarray:
    with open_h5(cfg.path) as f:
        labels = f[cfg.labels][:]
    return labels if indices is None else labels[indices]


def class_counts(events: EventFile, cfg: DataConfig, split: str = "train") -> np.ndarray:
    """Events per class in ``split`` (after select), length ``len(class_names)``: for class-weighted losses."""
    labels = read_labels(cfg, events.split_indices[split])
    return np.bincount(labels, minlength=events.n_classes)
