"""Data fixtures: tiny HDF5 files written by the tests."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from trainables.data import write_synthetic

__all__ = ["png_classes", "tiny_arrays", "tiny_h5", "write_h5"]


@pytest.fixture(scope="session")
def tiny_h5(tmp_path_factory) -> Path:
    """600 synthetic events, 2x32x32, seed 0: classification (NC, nueCC, numuCC) + direction targets + truth."""
    return write_synthetic(tmp_path_factory.mktemp("data") / "tiny.h5", events=600, size=32, seed=0, progress=False)


def tiny_arrays(n: int = 40, c: int = 2, hw: int = 8, classes: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """Small random arrays in the schema's shapes, for hand-made (and hand-broken) files."""
    rng = np.random.default_rng(seed)
    targets = rng.standard_normal((n, 3)).astype(np.float32)
    return {"images": rng.random((n, c, hw, hw)).astype(np.float32),
            "labels": (np.arange(n) % classes).astype(np.int64),
            "targets": targets / np.linalg.norm(targets, axis=1, keepdims=True)}


@pytest.fixture
def write_h5(tmp_path):
    """``write_h5(name, attrs=None, chunks_per_event=True, **datasets) -> Path``: a custom or broken file.

    ``datasets`` maps names to arrays (``None`` skips one); ``attrs`` are file attributes, e.g. class_names."""
    def write(name: str = "custom.h5", attrs: dict | None = None, chunks_per_event: bool = True, **datasets):
        path = tmp_path / name
        with h5py.File(path, "w") as f:
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
            for key, arr in datasets.items():
                if arr is None:
                    continue
                arr = np.asarray(arr)
                chunks = (1, *arr.shape[1:]) if chunks_per_event and arr.ndim == 4 and len(arr) else None
                f.create_dataset(key, data=arr, chunks=chunks, compression="gzip" if chunks else None)
        return path

    return write


def png_classes(root: Path, damage: str = "") -> Path:
    """Class folders 'nc' and 'nue' under ``root``, one 6x6 event each (ev0_xz.png, ev0_yz.png), for
    `scanner data import-images`; ``damage`` breaks them one way: 'corrupt', 'missing view', 'mixed sizes', 'no class
    folders' (the PNGs lie in ``root`` itself) or 'empty folder'."""
    root.mkdir(parents=True)
    if damage == "empty folder":
        return root
    for name in ("nc", "nue"):
        (root / name).mkdir()
        for view in ("xz", "yz"):
            Image.fromarray(np.zeros((6, 6), np.uint8)).save(root / name / f"ev0_{view}.png")
    if damage == "corrupt":
        (root / "nue" / "ev0_yz.png").write_bytes(b"not a png")
    elif damage == "missing view":
        (root / "nue" / "ev0_yz.png").unlink()
    elif damage == "mixed sizes":
        Image.fromarray(np.zeros((4, 5), np.uint8)).save(root / "nue" / "ev0_xz.png")
    elif damage == "no class folders":
        for png in list(root.rglob("*.png")):
            png.rename(root / f"{png.parent.name}_{png.name}")
        for folder in [p for p in root.iterdir() if p.is_dir()]:
            folder.rmdir()
    return root
