"""Toy neutrino interactions in a liquid-argon TPC: particles -> 3D energy deposits (x, y, z, MeV).

Coarse but physical where it matters for a classifier: muons are long MIP tracks that wiggle (Highland multiple
scattering) and rise at a Bragg peak where they stop; protons are short dense stubs; charged pions look like muons
but may interact (a kink or a star); electrons start a shower at the vertex; pi0 -> gamma gamma showers start away
from the vertex after a conversion gap. Everything is numpy on small arrays: a few Python calls per particle.
"""

from __future__ import annotations

import math

import numpy as np

DETECTOR_CM = 200.0  # side of the cubic volume; a 1 GeV muon (~4.5 m) leaves it, a proton stub (~cm) does not
MIP_DEDX = 2.1  # MeV/cm, minimum ionising in LAr
X0_CM = 14.0  # radiation length of LAr
EC_MEV = 32.0  # critical energy of LAr: sets the depth of the shower maximum
GAMMA_MFP_CM = 9.0 / 7.0 * X0_CM  # photon conversion length: the gap that tells pi0 showers from electrons
PION_INTERACTION_CM = 90.0  # a bit shorter than LAr's ~1 m, so kinks and stars are common enough to see
BEAM = np.array([0.0, 0.0, 1.0])  # neutrinos travel along +z
MASS = {"mu": 105.66, "pi": 139.57, "p": 938.27, "e": 0.511, "pi0": 134.98}  # MeV
PROTON_RANGE_A, PROTON_RANGE_P = 0.0022, 1.77  # Bragg-Kleeman: R[cm] = a T[MeV]^p for protons in LAr


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.sqrt((v * v).sum(axis=-1, keepdims=True))


def perpendicular_basis(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors normal to ``d`` and to each other (plain float maths: np.cross costs 100x more here)."""
    x, y, z = float(d[0]), float(d[1]), float(d[2])
    if abs(x) < 0.9:  # u = d x (1, 0, 0)
        u = (0.0, z, -y)
    else:  # u = d x (0, 1, 0)
        u = (-z, 0.0, x)
    norm = math.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2)
    u = (u[0] / norm, u[1] / norm, u[2] / norm)
    v = (y * u[2] - z * u[1], z * u[0] - x * u[2], x * u[1] - y * u[0])
    return np.array(u), np.array(v)


def tilt(rng: np.random.Generator, d: np.ndarray, theta: float) -> np.ndarray:
    """``d`` turned by polar angle ``theta`` at a random azimuth."""
    u, v = perpendicular_basis(d)
    phi = rng.uniform(0, 2 * np.pi)
    return unit(math.cos(theta) * d + math.sin(theta) * (math.cos(phi) * u + math.sin(phi) * v))


def proton_dedx(residual_cm: np.ndarray) -> np.ndarray:
    """dE/dx of a proton with ``residual_cm`` left to stop (the derivative of Bragg-Kleeman)."""
    r = np.maximum(residual_cm, 0.05)
    kinetic = (r / PROTON_RANGE_A) ** (1.0 / PROTON_RANGE_P)
    return kinetic / (PROTON_RANGE_P * r)


def track_range(kind: str, kinetic: float) -> float:
    if kind == "p":
        return PROTON_RANGE_A * kinetic**PROTON_RANGE_P
    return kinetic / MIP_DEDX  # muons, pions, electrons: minimum ionising nearly all the way


def track_dedx(kind: str, residual: np.ndarray) -> np.ndarray:
    if kind == "p":
        return proton_dedx(residual)
    # A lighter particle stops like a proton whose residual range is scaled by the mass ratio.
    return np.maximum(MIP_DEDX, proton_dedx(residual * MASS["p"] / MASS[kind]))


def track(rng, start, direction, kind: str, kinetic: float, step: float, max_len: float = 1e9, dedx_scale=1.0):
    """Deposits of a charged track that scatters and ranges out. Returns (points (n,3), charge (n,), end point)."""
    full_range = track_range(kind, kinetic)
    length = min(full_range, max_len, 1.8 * DETECTOR_CM)  # longer tracks have left the volume anyway
    n = max(int(length / step), 1)
    s = (np.arange(n) + 0.5) * step
    residual = full_range - s
    dedx = track_dedx(kind, residual) * dedx_scale
    charge = dedx * step * rng.gamma(8.0, 1.0 / 8.0, n)  # Landau-ish fluctuation of each step's deposit
    if kind == "p":
        t_left = (np.maximum(residual, 0.05) / PROTON_RANGE_A) ** (1 / PROTON_RANGE_P)
    else:
        t_left = np.maximum(residual * MIP_DEDX, 1.0)
    m = MASS[kind]
    p = np.sqrt(t_left**2 + 2 * t_left * m)
    beta = p / (t_left + m)
    theta0 = np.minimum(13.6 / (beta * p) * np.sqrt(step / X0_CM) * (1 + 0.038 * np.log(step / X0_CM)), 0.5)
    u, v = perpendicular_basis(direction)
    kicks = rng.standard_normal((2, n)) * theta0
    a1, a2 = np.cumsum(kicks, axis=1)
    dirs = unit(direction + a1[:, None] * u + a2[:, None] * v)
    points = start + np.cumsum(dirs * step, axis=0) - dirs * (step / 2)
    end = points[-1] + dirs[-1] * (step / 2)
    return points, charge, end, dirs[-1], length >= full_range


def shower(rng, start, direction, energy: float, step: float, photon: bool):
    """An EM shower: a short trunk, then branches whose depth follows a gamma profile inside a widening cone."""
    if photon:
        start = start + direction * rng.exponential(GAMMA_MFP_CM)
    trunk_len = min(rng.uniform(2.0, 8.0), energy / (2 * MIP_DEDX))
    # A photon converts into an e+e- pair: twice the ionisation of a single electron in the trunk.
    trunk_pts, trunk_q, _, _, _ = track(rng, start, direction, "e", trunk_len * MIP_DEDX, step,
                                        dedx_scale=2.0 if photon else 1.0)
    e_left = max(energy - trunk_q.sum(), 1.0)
    n_branch = int(np.clip(round(e_left / 12.0), 1, 200))  # one branch per ~12 MeV
    t_max = max(np.log(max(energy, EC_MEV) / EC_MEV) + (0.5 if photon else -0.5), 0.3)
    b = 0.5
    depth = rng.gamma(b * t_max + 1.0, 1.0 / b, n_branch) * X0_CM * 0.8
    lateral = rng.standard_normal((n_branch, 2)) * (0.12 * depth + 0.5)[:, None]  # the cone widens
    far = rng.random(n_branch) < 0.12  # photons that travel before converting: disconnected blobs
    lateral[far] *= 3.0
    u, v = perpendicular_basis(direction)
    origin = start + depth[:, None] * direction + lateral[:, :1] * u + lateral[:, 1:] * v
    theta = np.abs(rng.normal(0.0, 0.45, n_branch))
    phi = rng.uniform(0, 2 * np.pi, n_branch)
    bdir = unit(np.cos(theta)[:, None] * direction
                + np.sin(theta)[:, None] * (np.cos(phi)[:, None] * u + np.sin(phi)[:, None] * v))
    blen = rng.exponential(5.0, n_branch) + step
    share = rng.dirichlet(np.ones(n_branch)) * e_left * 0.92  # ~8 % escapes as soft photons/neutrons
    nstep = np.maximum((blen / step).astype(int), 1)
    which = np.repeat(np.arange(n_branch), nstep)
    offsets = np.arange(which.size) - np.repeat(np.cumsum(nstep) - nstep, nstep)
    pts = origin[which] + bdir[which] * ((offsets + 0.5) * step)[:, None]
    q = (share / nstep)[which]
    return np.concatenate([trunk_pts, pts]), np.concatenate([trunk_q, q])


class Deposits:
    """Collects (points, charge) pieces of one event."""

    def __init__(self):
        self.points, self.charge = [], []

    def add(self, points, charge):
        self.points.append(points)
        self.charge.append(charge)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.points:
            return np.zeros((0, 3)), np.zeros(0)
        return np.concatenate(self.points), np.concatenate(self.charge)


def forward_direction(rng, spread: float = 1.2) -> np.ndarray:
    """Hadron directions: forward-biased (boost along the beam) but wide."""
    return unit(BEAM * rng.uniform(0.0, spread) + unit(rng.standard_normal(3)))


def add_charged_pion(rng, dep: Deposits, start, direction, kinetic, step):
    stop_at = rng.exponential(PION_INTERACTION_CM)
    pts, q, end, last_dir, stopped = track(rng, start, direction, "pi", kinetic, step, max_len=stop_at)
    dep.add(pts, q)
    if stopped:
        return
    left = kinetic - q.sum()
    for _ in range(rng.integers(0, 3)):  # the interaction: a kink or a small star of protons
        dep.add(*track(rng, end, tilt(rng, last_dir, rng.uniform(0.3, 2.0)), "p",
                       rng.uniform(0.1, 0.5) * max(left, 60.0), step)[:2])
    if left > 80 and rng.random() < 0.5:
        dep.add(*track(rng, end, tilt(rng, last_dir, rng.uniform(0.2, 1.2)), "pi", 0.6 * left, step)[:2])


def add_pi0(rng, dep: Deposits, vertex, direction, kinetic, step):
    """pi0 -> gamma gamma: lab energies flat in [0, E]; the opening angle from the invariant mass."""
    e = kinetic + MASS["pi0"]
    z = rng.uniform(0.05, 0.95)
    e1, e2 = z * e, (1 - z) * e
    cos_open = np.clip(1 - MASS["pi0"] ** 2 / (2 * e1 * e2), -1, 1)
    opening = np.arccos(cos_open)
    u, v = perpendicular_basis(direction)
    phi = rng.uniform(0, 2 * np.pi)
    axis = np.cos(phi) * u + np.sin(phi) * v
    for energy, angle in ((e1, opening * e2 / e), (e2, -opening * e1 / e)):
        gdir = unit(np.cos(angle) * direction + np.sin(angle) * axis)
        dep.add(*shower(rng, vertex, gdir, energy, step, photon=True))


def add_hadrons(rng, dep: Deposits, vertex, e_had_gev: float, step: float) -> dict[str, int]:
    """The hadronic system, in every class: 0 to several protons, charged pions and pi0s."""
    n_p = min(rng.poisson(0.5 + 1.2 * e_had_gev), 5)
    n_pi = min(rng.poisson(0.25 + 0.9 * e_had_gev), 4)
    n_pi0 = min(rng.poisson(0.1 + 0.55 * e_had_gev), 3)
    if n_p + n_pi + n_pi0 == 0:
        n_p = 1  # a visible vertex: events with nothing to see are cut before any classifier
    visible = 1000 * e_had_gev * rng.uniform(0.5, 0.85)  # the rest goes to neutrons, binding, masses
    share = rng.dirichlet(np.ones(n_p + n_pi + n_pi0)) * visible
    for t in share[:n_p]:
        dep.add(*track(rng, vertex, forward_direction(rng), "p", float(np.clip(t, 15.0, 700.0)), step)[:2])
    for t in share[n_p:n_p + n_pi]:
        add_charged_pion(rng, dep, vertex, forward_direction(rng), max(t, 30.0), step)
    for t in share[n_p + n_pi:]:
        add_pi0(rng, dep, vertex, forward_direction(rng), max(t, 20.0), step)
    return {"n_protons": n_p, "n_pions": n_pi, "n_pi0": n_pi0}


def lepton_direction(rng, lepton_gev: float) -> np.ndarray:
    """Forward-peaked: the transverse momentum is a few hundred MeV, so soft leptons go wide."""
    pt = rng.rayleigh(0.3)
    theta = np.arctan2(pt, max(lepton_gev, 0.05))
    return tilt(rng, BEAM, theta)


def add_lepton(rng, dep: Deposits, flavour: str, vertex, d, e_gev: float, step: float) -> None:
    if flavour == "numu":
        kinetic = max(1000 * e_gev - MASS["mu"], 20.0)
        pts, q, end, _, stopped = track(rng, vertex, d, "mu", kinetic, step)
        dep.add(pts, q)
        if stopped:  # Michel electron from the muon decay at rest
            dep.add(*track(rng, end, unit(rng.standard_normal(3)), "e", rng.uniform(10, 50), step)[:2])
    elif flavour == "nue":
        dep.add(*shower(rng, vertex, d, 1000 * e_gev, step, photon=False))
    elif flavour == "nutau":  # the tau decays at once: e, mu, or pions sharing its energy
        mode = rng.random()
        if mode < 0.18:
            add_lepton(rng, dep, "nue", vertex, tilt(rng, d, 0.2), e_gev * rng.uniform(0.2, 0.7), step)
        elif mode < 0.35:
            add_lepton(rng, dep, "numu", vertex, tilt(rng, d, 0.2), e_gev * rng.uniform(0.2, 0.7), step)
        else:
            e = 1000 * e_gev * 0.6
            add_charged_pion(rng, dep, vertex, tilt(rng, d, 0.15), e * rng.uniform(0.3, 0.7), step)
            if rng.random() < 0.6:
                add_pi0(rng, dep, vertex, tilt(rng, d, 0.3), e * rng.uniform(0.2, 0.5), step)


def interaction(rng: np.random.Generator, flavour: str, step: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """One neutrino interaction of ``flavour`` in {nc, nue, numu, nutau}: deposits and truth."""
    if flavour == "nutau":  # above the tau production threshold only
        energy = rng.uniform(3.5, 6.0)
    else:
        energy = 0.5 + 4.5 * rng.beta(2.0, 3.0)  # 0.5-5 GeV, peaked near 2 GeV like a wide-band beam
    y = 0.02 + 0.9 * rng.beta(1.0, 2.2)  # inelasticity: the hadronic share of the energy
    margin = 0.05 * DETECTOR_CM
    vertex = rng.uniform(margin, DETECTOR_CM - margin, 3)
    lepton_gev = energy * (1 - y)
    d = lepton_direction(rng, lepton_gev)
    dep = Deposits()
    counts = add_hadrons(rng, dep, vertex, energy * y, step)
    if flavour != "nc":  # an NC event's outgoing neutrino is invisible
        add_lepton(rng, dep, flavour, vertex, d, lepton_gev, step)
    points, charge = dep.arrays()
    truth = {"energy": energy, "lepton_energy": lepton_gev, "lepton_dir": d, "vertex": vertex, **counts}
    return points, charge, truth
