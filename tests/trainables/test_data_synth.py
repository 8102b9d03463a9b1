"""The synthetic LArTPC generator: schema, determinism, balance, truth that follows the physics."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from trainables.data import _lartpc as phys
from trainables.data import data_hash, write_synthetic
from trainables.data import synth
from trainables.errors import BadInput


def test_tiny_file_has_the_schema(tiny_h5):
    with h5py.File(tiny_h5) as f:
        assert f["images"].shape == (600, 2, 32, 32) and f["images"].dtype == np.float16
        assert f["images"].chunks == (1, 2, 32, 32) and f["images"].compression == "gzip"
        assert list(f.attrs["class_names"]) == ["NC", "nueCC", "numuCC"]
        assert list(f.attrs["target_names"]) == ["dx", "dy", "dz"] and f.attrs["direction"] == "unit_vector"
        labels = f["labels"][:]
        assert labels.dtype.kind == "i" and set(np.unique(labels)) == {0, 1, 2}
        for name, shape in (("energy", (600,)), ("lepton_energy", (600,)), ("lepton_dir", (600, 3)),
                            ("vertex", (600, 3)), ("targets", (600, 3)), ("split", (600,))):
            assert f[name].shape == shape, name
        assert f["split"].dtype == np.uint8 and set(np.unique(f["split"][:])) == {0, 1, 2}
        np.testing.assert_array_equal(f["targets"][:], f["lepton_dir"][:])
        images = f["images"][:].astype(np.float32)
        assert np.isfinite(images).all() and images.min() >= 0 and images.max() > 0


def test_classes_are_balanced_and_splits_near_70_15_15(tiny_h5):
    with h5py.File(tiny_h5) as f:
        counts = np.bincount(f["labels"][:], minlength=3)
        split = np.bincount(f["split"][:], minlength=3) / 600
    assert counts.min() > 0.25 * 600 and counts.max() < 0.42 * 600
    assert 0.62 < split[0] < 0.78 and 0.09 < split[1] < 0.21 and 0.09 < split[2] < 0.21


def test_truth_is_consistent(tiny_h5):
    with h5py.File(tiny_h5) as f:
        e, el, d, v = f["energy"][:], f["lepton_energy"][:], f["lepton_dir"][:], f["vertex"][:]
        charge = f["images"][:].astype(np.float64).sum(axis=(1, 2, 3))
    assert e.min() >= 0.5 and e.max() <= 5.0 and (el < e).all() and (el > 0).all()
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-5)
    assert v.min() >= 0 and v.max() <= phys.DETECTOR_CM
    assert np.mean(d[:, 2]) > 0.8  # leptons go forward along the beam
    assert np.corrcoef(e, charge)[0, 1] > 0.2  # more neutrino energy -> more visible charge


def test_muon_range_grows_with_energy_and_ends_in_a_bragg_rise():
    rng = np.random.default_rng(0)
    lengths = []
    for kinetic in (100.0, 250.0, 500.0):
        points, charge, end, _, stopped = phys.track(rng, np.zeros(3), np.array([0.0, 0.0, 1.0]), "mu", kinetic, 1.0)
        assert stopped
        lengths.append(len(points))
        assert charge[-3:].mean() > 2 * charge[len(charge) // 3: 2 * len(charge) // 3].mean()
    assert lengths[0] < lengths[1] < lengths[2]
    assert abs(lengths[2] - 500.0 / phys.MIP_DEDX) < 0.1 * lengths[2]  # ~2.1 MeV/cm


def test_pi0_showers_start_away_from_the_vertex_electrons_do_not():
    rng = np.random.default_rng(1)
    gaps = {True: [], False: []}
    for _ in range(60):
        for photon in (True, False):
            pts, _ = phys.shower(rng, np.zeros(3), np.array([0.0, 0.0, 1.0]), 500.0, 1.0, photon)
            gaps[photon].append(np.linalg.norm(pts, axis=1).min())
    assert np.median(gaps[True]) > 5.0 > np.median(gaps[False])


def test_same_seed_same_bytes_other_seed_other_events(tmp_path):
    a = write_synthetic(tmp_path / "a.h5", events=50, size=16, seed=3, progress=False)
    b = write_synthetic(tmp_path / "b.h5", events=50, size=16, seed=3, progress=False)
    c = write_synthetic(tmp_path / "c.h5", events=50, size=16, seed=4, progress=False)
    assert data_hash(a) == data_hash(b) != data_hash(c)
    with h5py.File(a) as fa, h5py.File(c) as fc:
        assert not np.array_equal(fa["images"][:], fc["images"][:])


def test_two_processes_write_the_same_arrays_as_one(tmp_path, monkeypatch):
    monkeypatch.setattr(synth, "BATCH", 16)
    monkeypatch.setattr(synth, "PARALLEL_MIN_EVENTS", 0)
    serial = write_synthetic(tmp_path / "s.h5", events=70, size=16, seed=5, progress=False, workers=1)
    parallel = write_synthetic(tmp_path / "p.h5", events=70, size=16, seed=5, progress=False, workers=2)
    assert data_hash(serial) == data_hash(parallel)


def test_nutau_class(tmp_path):
    path = write_synthetic(tmp_path / "tau.h5", events=80, size=16, seed=0, classes="nc,nue,numu,nutau",
                           progress=False)
    with h5py.File(path) as f:
        assert list(f.attrs["class_names"]) == ["NC", "nueCC", "numuCC", "nutauCC"]
        tau = f["labels"][:] == 3
        assert tau.any() and f["energy"][:][tau].min() >= 3.5  # above the tau threshold


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    calls = []

    def boom(*args):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(*args)

    real = synth.make_batch
    monkeypatch.setattr(synth, "BATCH", 8)
    monkeypatch.setattr(synth, "make_batch", boom)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic(tmp_path / "half.h5", events=40, size=16, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("classes", ["nc", "nc,nc", "nc,tau"])
def test_bad_classes(tmp_path, classes):
    with pytest.raises(BadInput, match="--classes"):
        write_synthetic(tmp_path / "x.h5", events=10, size=16, classes=classes, progress=False)
    assert not (tmp_path / "x.h5").exists()
