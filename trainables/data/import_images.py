"""``scanner data import-images``: folders of per-view PNG images -> the HDF5 schema.

Layout (the DUNE CVN tutorial style)::

    DIR/<class_name>/<event_id>_<view>.png     e.g. DIR/nueCC/ev0042_xz.png and DIR/nueCC/ev0042_yz.png

Class names are the sub-folder names, sorted; labels are their index. Views are the ``_<view>`` suffixes found in
the first event (sorted), and every event must have all of them, all of one size. 8-bit grayscale PNGs are stored
as uint8; 16-bit or colour ones as float32 (colour is averaged to gray).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from trainables.data.schema import hash_split
from trainables.errors import BadInput
from trainables.files import atomic_output, progress_bar

IMPORT_BLOCK = 256  # events per write: bounded memory for any number of events


def _event_files(root: Path) -> tuple[list[str], list[tuple[str, int, dict[str, Path]]], list[str]]:
    """(class names, [(event id, label, {view: file})], views)."""
    if not root.is_dir():
        raise BadInput(f"{root}: not a folder; expected DIR/<class_name>/<event_id>_<view>.png; fix: the path")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise BadInput(f"{root}: no class sub-folders; expected DIR/<class_name>/<event_id>_<view>.png "
                       "(e.g. DIR/nueCC/ev1_xz.png); fix: one folder per class")
    events = []
    for label, name in enumerate(classes):
        grouped: dict[str, dict[str, Path]] = {}
        for png in sorted((root / name).glob("*.png")):
            event_id, sep, view = png.stem.rpartition("_")
            if not sep or not event_id or not view:
                raise BadInput(f"{png}: name has no '_<view>' suffix; expected <event_id>_<view>.png, "
                               "e.g. ev1_xz.png; fix: rename the file")
            grouped.setdefault(event_id, {})[view] = png
        events += [(f"{name}/{eid}", label, files) for eid, files in grouped.items()]
    if not events:
        raise BadInput(f"{root}: no <event_id>_<view>.png files in {', '.join(classes)}; fix: add the images")
    views = sorted(events[0][2])
    for eid, _, files in events:
        if sorted(files) != views:
            missing = sorted(set(views) - set(files)) or sorted(set(files) - set(views))
            raise BadInput(f"{root / eid}_{missing[0]}.png: view '{missing[0]}' missing or extra for event "
                           f"'{eid}'; expected views {', '.join(views)} for every event; fix: add or remove it")
    return classes, events, views


def _load_png(path: Path, shape: tuple[int, int] | None) -> np.ndarray:
    # Pillow only for PNG imports
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            arr = np.asarray(img)
    except Exception as exc:  # PIL raises several types for truncated/garbage files
        raise BadInput(f"{path}: not a readable PNG ({type(exc).__name__}: {exc}); fix: re-export or remove "
                       "this event") from None
    if arr.ndim == 3:  # colour: average the colour channels, drop alpha
        arr = arr[..., :3].astype(np.float32).mean(axis=2)
    elif mode != "L":
        arr = arr.astype(np.float32)
    if shape is not None and arr.shape != shape:
        raise BadInput(f"{path}: image is {arr.shape[1]}x{arr.shape[0]} but the first event's is "
                       f"{shape[1]}x{shape[0]}; expected one size for every view; fix: resize or remove it")
    return arr


def import_images(root, out, seed: int = 0, val_fraction: float = 0.15, test_fraction: float = 0.15,
                  progress: bool = True) -> Path:
    """Convert ``root`` to an HDF5 events file at ``out`` (temp file + rename: nothing left behind on error)."""

    root = Path(root)
    classes, events, views = _event_files(root)
    first = _load_png(events[0][2][views[0]], None)
    shape, dtype = first.shape, (np.uint8 if first.dtype == np.uint8 else np.float32)
    n = len(events)
    with atomic_output(out) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["class_names"] = classes
        f.attrs["views"] = views
        f.attrs["source"] = str(root.resolve())
        images = f.create_dataset("images", (n, len(views), *shape), dtype, chunks=(1, len(views), *shape),
                                  compression="gzip", compression_opts=1)
        f.create_dataset("labels", data=np.array([e[1] for e in events], np.int64))
        f.create_dataset("event_id", data=np.array([e[0] for e in events], dtype=h5py.string_dtype()))
        f.create_dataset("split", data=hash_split(n, val_fraction, test_fraction, seed))
        bar = progress_bar(n, "import", progress)
        for start in range(0, n, IMPORT_BLOCK):
            block = events[start:start + IMPORT_BLOCK]
            arr = np.stack([np.stack([_load_png(files[v], shape) for v in views]) for _, _, files in block])
            if dtype == np.uint8 and arr.dtype != np.uint8 and arr.max(initial=0) > 255:
                raise BadInput(f"{root}: events from {block[0][0]} are 16-bit but the first is 8-bit; "
                               "expected one PNG format; fix: export every view in one format")
            images[start:start + len(block)] = arr.astype(dtype)
            bar.update(len(block))
        bar.close()
    return Path(out)
