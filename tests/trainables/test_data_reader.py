"""The schema check and the lazy reader: splits, select, weights, custom names, workers, truth, hash."""

from __future__ import annotations

import hashlib

import h5py
import numpy as np
import pytest
import torch
from fixtures_data import tiny_arrays

from trainables.config import DataConfig
from trainables.data import (H5Events, class_counts, data_hash, hash_split, make_loader, open_events,
                             read_truth)
from trainables.errors import BadInput


def test_open_events_describes_the_file(tiny_h5):
    ev = open_events(DataConfig(path=str(tiny_h5)), "classification")
    assert ev.n_events == 600 and ev.image_shape == (2, 32, 32) and ev.dtype == "float16"
    assert ev.class_names == ["NC", "nueCC", "numuCC"] and ev.target_names is None and not ev.has_weights
    assert {"energy", "lepton_energy", "lepton_dir", "vertex"} <= set(ev.truth_names)
    assert "labels" not in ev.truth_names and "targets" not in ev.truth_names
    with h5py.File(tiny_h5) as f:
        split = f["split"][:]
    for code, name in enumerate(("train", "val", "test")):
        np.testing.assert_array_equal(ev.split_indices[name], np.flatnonzero(split == code))
    reg = open_events(DataConfig(path=str(tiny_h5)), "regression")
    assert reg.target_names == ["dx", "dy", "dz"] and reg.direction == "unit_vector" and reg.class_names is None


def test_items_are_float32_of_order_one_with_labels_and_unit_weights(tiny_h5):
    cfg = DataConfig(path=str(tiny_h5))
    ds = H5Events(cfg, "classification", "val")
    image, y, w = ds[3]
    assert image.dtype == torch.float32 and image.shape == (2, 32, 32)
    assert y.dtype == torch.int64 and y.ndim == 0 and w.dtype == torch.float32 and float(w) == 1.0
    with h5py.File(tiny_h5) as f:
        index = ds.indices[3]
        raw = f["images"][index].astype(np.float32)
        assert int(y) == f["labels"][index]
    np.testing.assert_allclose(image.numpy(), raw / ds.events.pixel_scale, rtol=1e-6)
    lit = torch.cat([ds[i][0][ds[i][0] > 0] for i in range(len(ds))])
    assert 0.05 < float(lit.median()) < 2.0 and float(lit.quantile(0.99)) < 3.0


def test_regression_items_are_unit_vectors(tiny_h5):
    x, y, w = H5Events(DataConfig(path=str(tiny_h5)), "regression", "train")[0]
    assert y.dtype == torch.float32 and y.shape == (3,) and abs(float(y.norm()) - 1) < 1e-5


def test_loader_with_two_workers_reads_every_event_once_in_a_seeded_order(tiny_h5):
    cfg = DataConfig(path=str(tiny_h5))
    ev = open_events(cfg, "classification")

    def labels(seed, shuffle=True, workers=2):
        loader = make_loader(cfg, "classification", "train", 32, workers, shuffle, seed, events=ev)
        batches = [b for b in loader]
        assert all(x.shape[1:] == (2, 32, 32) and x.dtype == torch.float32 for x, _, _ in batches)
        return torch.cat([y for _, y, _ in batches]).numpy()

    a, b, c = labels(0), labels(0), labels(1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    with h5py.File(tiny_h5) as f:
        truth = f["labels"][:][ev.split_indices["train"]]
    np.testing.assert_array_equal(labels(0, shuffle=False, workers=0), truth)
    np.testing.assert_array_equal(np.sort(a), np.sort(truth))


def test_a_trailing_batch_of_one_is_dropped_only_when_shuffling(write_h5):
    arrays = tiny_arrays(n=40)
    path = write_h5(split=np.zeros(33, np.uint8), **{k: v[:33] for k, v in arrays.items()})
    cfg = DataConfig(path=str(path))
    sizes = [len(y) for _, y, _ in make_loader(cfg, "classification", "train", 8, 0, True, 0)]
    assert sizes == [8, 8, 8, 8]
    loader = make_loader(cfg, "classification", "train", 8, 0, False, 0)
    assert [len(y) for _, y, _ in loader] == [8, 8, 8, 8, 1] and len(loader) == 5


def test_select_keeps_the_original_label_indices(tiny_h5):
    cfg = DataConfig(path=str(tiny_h5), select={"labels": ["nueCC", "numuCC"]})
    ev = open_events(cfg, "regression")
    with h5py.File(tiny_h5) as f:
        labels = f["labels"][:]
    kept = np.concatenate(list(ev.split_indices.values()))
    assert set(labels[kept]) == {1, 2} and len(kept) == (labels > 0).sum()
    cls = open_events(cfg, "classification")
    assert cls.class_names == ["NC", "nueCC", "numuCC"]
    ys = {int(y) for _, y, _ in H5Events(cfg, "classification", "val", cls)}
    assert ys == {1, 2}
    counts = class_counts(cls, cfg, "train")
    assert counts[0] == 0 and counts.sum() == len(cls.split_indices["train"])


def test_select_unknown_class_names_the_file_and_the_choices(tiny_h5):
    with pytest.raises(BadInput, match=r"tiny\.h5.*unknown class 'nutauCC'.*NC, nueCC, numuCC"):
        open_events(DataConfig(path=str(tiny_h5), select={"labels": ["nutauCC"]}), "classification")
    with pytest.raises(BadInput, match="no dataset 'flavour'"):
        open_events(DataConfig(path=str(tiny_h5), select={"flavour": [1]}), "classification")


def test_weights_are_returned(write_h5):
    arrays = tiny_arrays(n=40)
    weights = np.linspace(0.5, 2.0, 40).astype(np.float32)
    cfg = DataConfig(path=str(write_h5(weights=weights, **arrays)))
    ds = H5Events(cfg, "classification", "train")
    assert ds.events.has_weights
    got = np.array([float(ds[i][2]) for i in range(len(ds))])
    np.testing.assert_allclose(got, weights[ds.indices])


def test_hash_split_when_the_file_has_none_is_stable_and_near_the_fractions(write_h5):
    arrays = tiny_arrays(n=2000, hw=4)
    cfg = DataConfig(path=str(write_h5(**arrays)), val_fraction=0.2, test_fraction=0.1)
    a, b = open_events(cfg, "classification"), open_events(cfg, "classification")
    every = np.sort(np.concatenate(list(a.split_indices.values())))
    np.testing.assert_array_equal(every, np.arange(2000))
    for name, frac in (("train", 0.7), ("val", 0.2), ("test", 0.1)):
        np.testing.assert_array_equal(a.split_indices[name], b.split_indices[name])
        assert abs(len(a.split_indices[name]) / 2000 - frac) < 0.04
    np.testing.assert_array_equal(hash_split(2000, 0.2, 0.1), hash_split(2000, 0.2, 0.1))


def test_custom_dataset_names_x_and_y(write_h5):
    arrays = tiny_arrays(n=30)
    path = write_h5(x=arrays["images"], y=arrays["labels"], attrs={"class_names": ["a", "b", "c"]})
    cfg = DataConfig(path=str(path), images="x", labels="y")
    ev = open_events(cfg, "classification")
    assert ev.class_names == ["a", "b", "c"] and ev.truth_names == []
    image, y, _ = H5Events(cfg, "classification", "train", ev)[0]
    assert image.shape == (2, 8, 8) and int(y) == arrays["labels"][ev.split_indices["train"][0]]


def test_files_without_class_names_or_chunking_still_read(write_h5):
    arrays = tiny_arrays(n=30)
    cfg = DataConfig(path=str(write_h5(chunks_per_event=False, **arrays)))
    ev = open_events(cfg, "classification")
    assert ev.class_names == ["0", "1", "2"]
    batch = next(iter(make_loader(cfg, "classification", "train", 4, 0, False, 0)))
    np.testing.assert_allclose(batch[0][0].numpy(), arrays["images"][ev.split_indices["train"][0]] / ev.pixel_scale,
                               rtol=1e-6)


def test_cache_gives_the_same_tensors(tiny_h5):
    lazy = H5Events(DataConfig(path=str(tiny_h5)), "classification", "test")
    cached = H5Events(DataConfig(path=str(tiny_h5), cache=True), "classification", "test")
    for i in (0, 5, len(lazy) - 1):
        assert torch.equal(lazy[i][0], cached[i][0]) and lazy[i][1] == cached[i][1]


def test_read_truth_follows_the_given_order(tiny_h5):
    idx = np.array([17, 3, 599, 3])
    truth = read_truth(DataConfig(path=str(tiny_h5)), idx)
    with h5py.File(tiny_h5) as f:
        for name in ("energy", "vertex", "lepton_dir", "lepton_energy"):
            np.testing.assert_array_equal(truth[name], f[name][:][idx])


def test_data_hash_is_the_content_sha256(tiny_h5, tmp_path):
    assert data_hash(tiny_h5) == hashlib.sha256(tiny_h5.read_bytes()).hexdigest()[:16]
    other = tmp_path / "other.h5"
    other.write_bytes(tiny_h5.read_bytes()[:-1] + b"x")
    assert data_hash(other) != data_hash(tiny_h5)
