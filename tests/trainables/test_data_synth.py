"""The synthetic LArTPC generator: schema, determinism, balance, truth that follows the physics."""

from __future__ import annotations

import hashlib

import h5py
import numpy as np
import pytest

from scanner.cli import build_parser, main
from trainables.data import _lartpc as phys
from trainables.data import data_hash, synth, write_synthetic
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


# --------------------------------------------------------------------------------------------- detector knobs

def content_hash(path) -> str:
    """sha256 of every dataset's bytes and every attribute's value: the file's content, whatever the HDF5 layout."""
    digest = hashlib.sha256()
    with h5py.File(path) as f:
        for name in sorted(f):
            a = f[name][:]
            digest.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
            digest.update(np.ascontiguousarray(a).tobytes())
        for key in sorted(f.attrs):
            value = f.attrs[key]
            value = [str(x) for x in value] if isinstance(value, np.ndarray) else str(value)
            digest.update(f"{key}={value}|".encode())
    return digest.hexdigest()[:16]


# Written by the generator as it was before the detector knobs existed (commit 4fd9a47), with the same content_hash
# and data_hash: (events, size, seed, classes) -> (content hash, file hash under HDF5 2.0.0). Size 128 takes the
# unclamped diffusion path, size 16 the clamped one.
BEFORE_THE_KNOBS = {
    (60, 16, 3, "nc,nue,numu"): ("6bc53eb2c26306da", "60f90765b7144600"),
    (24, 128, 1, "nc,nue,numu,nutau"): ("8ee649769155f0a9", "fac5b55180b1bc16"),
}


@pytest.mark.parametrize("args", list(BEFORE_THE_KNOBS), ids=str)
def test_the_nominal_detector_writes_the_same_file_as_before_the_knobs(tmp_path, args):
    events, size, seed, classes = args
    plain = write_synthetic(tmp_path / "plain.h5", events=events, size=size, seed=seed, classes=classes,
                            progress=False)
    explicit = write_synthetic(tmp_path / "explicit.h5", events=events, size=size, seed=seed, classes=classes,
                               progress=False, detector=synth.Detector(0.1, 0.02, 0.3, 1.0, 1.0))
    want_content, want_file = BEFORE_THE_KNOBS[args]
    assert content_hash(plain) == want_content
    assert data_hash(plain) == data_hash(explicit)
    if h5py.version.hdf5_version == "2.0.0":  # the file's bytes also depend on the HDF5 library's layout
        assert data_hash(plain) == want_file


VARIANT = synth.Detector(noise_mips=0.2, dead_wire_fraction=0.1, threshold_mips=0.4, diffusion=2.0,
                         energy_scale=1.1)


def test_a_variant_holds_the_same_events_differently_detected(tmp_path):
    nominal = write_synthetic(tmp_path / "nominal.h5", events=40, size=32, seed=7, progress=False)
    variant = write_synthetic(tmp_path / "variant.h5", events=40, size=32, seed=7, progress=False, detector=VARIANT)
    with h5py.File(nominal) as fn, h5py.File(variant) as fv:
        for name in fn:
            if name != "images":
                np.testing.assert_array_equal(fn[name][:], fv[name][:], err_msg=name)
        assert not np.array_equal(fn["images"][:], fv["images"][:])
        assert not any(k.startswith("detector_") for k in fn.attrs)
        assert {k: float(v) for k, v in fv.attrs.items() if k.startswith("detector_")} == {
            "detector_noise_mips": 0.2, "detector_dead_wire_fraction": 0.1, "detector_threshold_mips": 0.4,
            "detector_diffusion": 2.0, "detector_energy_scale": 1.1}
        assert fv.attrs["generator"].endswith("--noise 0.2 --dead-wires 0.1 --threshold 0.4 --diffusion 2 "
                                              "--energy-scale 1.1")


def one_knob(tmp_path, **knob) -> tuple[np.ndarray, np.ndarray]:
    """Images (float64) of the nominal detector and of one with ``knob`` changed, same events."""
    nominal = write_synthetic(tmp_path / "n.h5", events=30, size=32, seed=2, progress=False)
    variant = write_synthetic(tmp_path / "v.h5", events=30, size=32, seed=2, progress=False,
                              detector=synth.Detector(**knob))
    with h5py.File(nominal) as fn, h5py.File(variant) as fv:
        return fn["images"][:].astype(np.float64), fv["images"][:].astype(np.float64)


def test_more_noise_lights_more_pixels(tmp_path):
    nominal, noisy = one_knob(tmp_path, noise_mips=0.2)
    assert (noisy > 0).sum() > 1.5 * (nominal > 0).sum()


def test_a_higher_threshold_keeps_fewer_pixels_and_no_charge_below_it(tmp_path):
    nominal, cut = one_knob(tmp_path, threshold_mips=0.6)
    mip = synth.phys.MIP_DEDX * synth.pixel_cm(32)
    assert (cut > 0).sum() < (nominal > 0).sum() and cut[cut > 0].min() >= 0.6 * mip * (1 - 1e-3)


def test_a_low_threshold_draws_noise_on_every_pixel(tmp_path):
    nominal, low = one_knob(tmp_path, threshold_mips=0.1)  # 1 sigma: the dense path
    assert (low > 0).mean() > 0.1 > (nominal > 0).mean()


def test_more_diffusion_spreads_the_charge(tmp_path):
    nominal, wide = one_knob(tmp_path, diffusion=2.0)
    assert (wide > 0).sum() > 1.2 * (nominal > 0).sum()


def test_the_energy_scale_scales_the_charge(tmp_path):
    nominal, scaled = one_knob(tmp_path, energy_scale=1.2)
    assert scaled.sum() / nominal.sum() == pytest.approx(1.2, rel=0.03)  # the threshold and noise shift it a bit


def test_more_dead_wires_keep_the_nominal_ones():
    nominal, more, none = (synth.dead_wires(128, 4, f) for f in (0.02, 0.06, 0.0))
    assert nominal.sum(axis=1).tolist() == [3, 3] and more.sum(axis=1).tolist() == [8, 8] and not none.any()
    assert (more[nominal]).all()
    fewer = synth.dead_wires(128, 4, 0.01)
    assert fewer.sum() == 2 and nominal[fewer].all()


def test_dead_wire_columns_are_empty_in_every_event(tmp_path):
    _, dead = one_knob(tmp_path, dead_wire_fraction=0.1)
    mask = synth.dead_wires(32, 2, 0.1)
    assert mask.sum() == 6 and not dead[:, mask].any()


@pytest.mark.parametrize("sigma, radius", [(0.5, 1), (1.6, 4)])
def test_the_blur_keeps_the_charge_and_spreads_it_by_sigma(sigma, radius):
    image = np.zeros((1, 1, 21, 21), np.float32)
    image[0, 0, 10, 10] = 1.0
    out = synth.blur(image, sigma, radius)[0, 0].astype(np.float64)
    rows = np.arange(21) - 10
    assert out.sum() == pytest.approx(1.0, rel=1e-6)
    variance = (out.sum(axis=1) * rows**2).sum()
    assert variance == pytest.approx(sigma**2, rel=0.05 if radius > 1 else 0.2)  # 3 taps: a bit narrow


@pytest.mark.parametrize("knob, value", [("noise_mips", -0.1), ("dead_wire_fraction", 1.0), ("threshold_mips", float("nan")),
                                         ("diffusion", -1.0), ("energy_scale", 0.0)])
def test_bad_knobs_are_one_line_and_leave_no_file(tmp_path, knob, value):
    with pytest.raises(BadInput) as err:
        write_synthetic(tmp_path / "x.h5", events=10, size=16, progress=False, detector=synth.Detector(**{knob: value}))
    assert "\n" not in str(err.value) and f"--{synth.CLI_FLAGS[knob]}" in str(err.value)
    assert not (tmp_path / "x.h5").exists()


def test_the_cli_knobs_default_to_the_nominal_detector_and_write_a_variant(tmp_path, capsys):
    args = build_parser().parse_args(["data", "synth", "--out", "x.h5"])
    assert synth.Detector(args.noise, args.dead_wires, args.threshold, args.diffusion, args.energy_scale).is_nominal
    out = tmp_path / "noisy.h5"
    assert main(["data", "synth", "--out", str(out), "--events", "20", "--size", "16", "--noise", "0.2",
                 "--dead-wires", "0.05"]) == 0
    assert "detector variant: --noise 0.2 --dead-wires 0.05" in capsys.readouterr().out
    with h5py.File(out) as f:
        assert float(f.attrs["detector_noise_mips"]) == 0.2 and float(f.attrs["detector_energy_scale"]) == 1.0
    assert main(["data", "synth", "--out", str(tmp_path / "bad.h5"), "--events", "20", "--noise", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--noise -1" in err[0] and not (tmp_path / "bad.h5").exists()
