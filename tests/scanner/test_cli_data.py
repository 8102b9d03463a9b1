"""`scanner data ...` through the real CLI: outputs, and every bad input as one stderr line + exit 2, no file left."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from fixtures_data import png_classes, tiny_arrays
from PIL import Image

from scanner.cli import main


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_synth_then_inspect(tmp_path, capsys):
    out = tmp_path / "ev.h5"
    assert main(["data", "synth", "--out", str(out), "--events", "30", "--size", "16", "--seed", "2"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    with h5py.File(out) as f:
        assert f["images"].shape == (30, 2, 16, 16)
    png = tmp_path / "ev.png"
    assert main(["data", "inspect", str(out), "--display", str(png)]) == 0
    text = capsys.readouterr().out
    assert "events      30" in text and "classes     NC" in text and png.stat().st_size > 1000


def test_import_images_cli(tmp_path, capsys):
    for name in ("a", "b"):
        (tmp_path / "png" / name).mkdir(parents=True)
        for view in ("xz", "yz"):
            Image.fromarray(np.full((6, 6), 9, np.uint8)).save(tmp_path / "png" / name / f"e1_{view}.png")
    out = tmp_path / "imp.h5"
    assert main(["data", "import-images", str(tmp_path / "png"), "--out", str(out)]) == 0
    with h5py.File(out) as f:
        assert list(f.attrs["class_names"]) == ["a", "b"] and f["images"].shape == (2, 2, 6, 6)


def test_every_verb_has_help_with_an_example(capsys):
    for verb in ("synth", "inspect", "import-images"):
        with pytest.raises(SystemExit) as exit_:
            main(["data", verb, "--help"])
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        assert "example:" in text and f"scanner data {verb}" in text
    assert "DIR/<class_name>/<event_id>_<view>.png" in text


def _break(kind: str, write_h5, tmp_path):
    """A file broken in one way, and the words its error line must hold besides the file name."""
    a = tiny_arrays(n=40)
    if kind == "missing file":
        return tmp_path / "nothere.h5", ["file not found"]
    if kind == "not hdf5":
        path = tmp_path / "text.h5"
        path.write_text("hello")
        return path, ["not an HDF5 file"]
    if kind == "empty file":
        return write_h5("empty.h5"), ["no datasets"]
    if kind == "zero events":
        return write_h5("zero.h5", images=np.zeros((0, 2, 8, 8), np.float32), labels=np.zeros(0, np.int64)), \
            ["'images'", "0 events"]
    if kind == "missing images":
        return write_h5("noimg.h5", pixels=a["images"], labels=a["labels"]), ["'images' not found", "pixels"]
    if kind == "wrong rank":
        return write_h5("rank.h5", images=a["images"][:, 0], labels=a["labels"]), ["'images'", "rank 4"]
    if kind == "labels out of range":
        return write_h5("range.h5", images=a["images"], labels=a["labels"] + 5,
                        attrs={"class_names": ["x", "y", "z"]}), ["'labels'", "0..2"]
    if kind == "nan pixels":
        a["images"][0, 0, 1, 1] = np.nan
        return write_h5("nan.h5", **a), ["'images'", "NaN/inf"]
    if kind == "inf in the middle":
        a["images"][17, 1, 2, 2] = np.inf
        return write_h5("inf.h5", **a), ["'images'", "NaN/inf", "17"]
    if kind == "N mismatch":
        return write_h5("mismatch.h5", images=a["images"], labels=a["labels"][:30]), ["'labels'", "30", "40"]
    if kind == "bad weights":
        return write_h5("weights.h5", weights=np.full(40, -1.0), **a), ["'weights'", ">= 0"]
    if kind == "bad split codes":
        return write_h5("split.h5", split=np.full(40, 7, np.uint8), **a), ["'split'", "0 train"]
    raise AssertionError(kind)


BAD_FILES = ["missing file", "not hdf5", "empty file", "zero events", "missing images", "wrong rank",
             "labels out of range", "nan pixels", "inf in the middle", "N mismatch", "bad weights", "bad split codes"]


@pytest.mark.parametrize("kind", BAD_FILES)
def test_inspect_bad_file_is_one_line_exit_2_and_no_display(kind, write_h5, tmp_path, capsys):
    path, words = _break(kind, write_h5, tmp_path)
    png = tmp_path / "out" / "display.png"
    assert main(["data", "inspect", str(path), "--display", str(png)]) == 2
    line = one_error_line(capsys)
    assert line.startswith("scanner data: error: ") and path.name in line
    for word in words:
        assert word in line, (word, line)
    assert not png.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage, named", [
    ("corrupt", ["ev0_yz.png", "not a readable PNG"]),
    ("missing view", ["ev0_yz.png", "view 'yz' missing"]),
    ("mixed sizes", ["ev0_xz.png", "5x4"]),
    ("no class folders", ["no class sub-folders"]),
    ("not a folder", ["not a folder"]),
])
def test_import_bad_input_is_one_line_exit_2_and_no_file(damage, named, tmp_path, capsys):
    root = png_classes(tmp_path / "png", damage) if damage != "not a folder" else tmp_path / "nope"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert main(["data", "import-images", str(root), "--out", str(out_dir / "x.h5")]) == 2
    line = one_error_line(capsys)
    for word in named:
        assert word in line, (word, line)
    assert list(out_dir.iterdir()) == []


def test_synth_bad_arguments(tmp_path, capsys):
    assert main(["data", "synth", "--out", str(tmp_path / "s.h5"), "--classes", "nc,bogus"]) == 2
    assert "--classes" in one_error_line(capsys)
    assert main(["data", "synth", "--out", str(tmp_path / "s.h5"), "--events", "0"]) == 2
    assert "--events 0" in one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []
    assert main(["data", "synth", "--out", str(tmp_path), "--events", "5"]) == 2
    assert "is a folder" in one_error_line(capsys)
