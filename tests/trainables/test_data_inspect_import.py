"""`data inspect` (summary, full NaN scan, event display) and `data import-images` (PNG folders -> HDF5)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from fixtures_data import tiny_arrays
from PIL import Image

from trainables.config import DataConfig
from trainables.data import H5Events, open_events
from trainables.data.import_images import import_images
from trainables.data.inspect import inspect_file
from trainables.errors import BadInput


def test_inspect_summarises_and_draws(tiny_h5, tmp_path):
    png = tmp_path / "display.png"
    text = "\n".join(inspect_file(tiny_h5, display=png, progress=False))
    assert "(2, 32, 32) float16" in text and "NC " in text and "nueCC " in text and "numuCC " in text
    assert "from the split dataset" in text and "direction=unit_vector" in text and "|target|" in text
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size[0] > 200 and img.size[1] > 400  # 6 rows of 2 views
        assert np.asarray(img.convert("L")).std() > 5  # not a blank canvas


def test_inspect_finds_nan_in_the_middle_that_the_cheap_check_skips(write_h5):
    arrays = tiny_arrays(n=40)
    arrays["images"][20, 1, 3, 3] = np.nan
    path = write_h5(**arrays)
    open_events(DataConfig(path=str(path)), "classification")  # first/last events only: passes
    with pytest.raises(BadInput, match=r"custom\.h5: dataset 'images' has NaN/inf pixels in 1 events \(first: \[20\]"):
        inspect_file(path, progress=False)


def test_inspect_of_a_regression_only_file(write_h5, tmp_path):
    arrays = tiny_arrays(n=20)
    path = write_h5(images=arrays["images"], targets=arrays["targets"],
                    attrs={"direction": "unit_vector", "target_names": ["dx", "dy", "dz"]})
    text = "\n".join(inspect_file(path, display=tmp_path / "r.png", progress=False))
    assert "hash of the index" in text and "dz" in text and (tmp_path / "r.png").stat().st_size > 0


def write_pngs(root, classes=("NC", "numuCC", "nueCC"), per_class=3, size=(12, 16), views=("xz", "yz"), mode="L"):
    rng = np.random.default_rng(0)
    arrays = {}
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            for view in views:
                arr = rng.integers(0, 256, size, dtype=np.uint8)
                Image.fromarray(arr, mode=mode).save(root / name / f"ev{k}_{view}.png")
                arrays[(name, f"ev{k}", view)] = arr
    return arrays


def test_import_round_trip(tmp_path):
    arrays = write_pngs(tmp_path / "pngs")
    out = import_images(tmp_path / "pngs", tmp_path / "events.h5", progress=False)
    cfg = DataConfig(path=str(out))
    ev = open_events(cfg, "classification")
    assert ev.class_names == ["NC", "nueCC", "numuCC"] and ev.image_shape == (2, 12, 16) and ev.dtype == "uint8"

    with h5py.File(out) as f:
        ids = [s.decode() for s in f["event_id"][:]]
        labels, images = f["labels"][:], f["images"][:]
        assert f["split"].dtype == np.uint8 and list(f.attrs["views"]) == ["xz", "yz"]
    assert len(ids) == 9
    for i, event in enumerate(ids):
        name, eid = event.split("/")
        assert ev.class_names[labels[i]] == name
        np.testing.assert_array_equal(images[i, 0], arrays[(name, eid, "xz")])
        np.testing.assert_array_equal(images[i, 1], arrays[(name, eid, "yz")])
    assert float(H5Events(cfg, "classification", "train", ev)[0][0].max()) <= 1.0  # uint8 / 255


@pytest.mark.parametrize("damage, named", [
    ("corrupt", "ev1_yz.png: not a readable PNG"),
    ("missing_view", "ev2_yz.png: view 'yz' missing"),
    ("other_size", "ev0_xz.png: image is 9x7"),
])
def test_import_bad_inputs_leave_no_file(tmp_path, damage, named):
    root = tmp_path / "pngs"
    write_pngs(root)
    if damage == "corrupt":
        (root / "nueCC" / "ev1_yz.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    elif damage == "missing_view":
        (root / "numuCC" / "ev2_yz.png").unlink()
    else:
        Image.fromarray(np.zeros((7, 9), np.uint8)).save(root / "numuCC" / "ev0_xz.png")
    with pytest.raises(BadInput, match=named):
        import_images(root, tmp_path / "out" / "events.h5", progress=False)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
