"""Physics figures of one trial recomputed from its ``predictions.h5``: cut scans, binned efficiency and purity,
residuals and the 68 % resolution against energy. Pure numpy, so each number can be checked by hand in a test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

N_ENERGY_BINS = 8  # quantile bins: equal statistics per bin keeps every point's error bar comparable
N_BOOTSTRAP = 100  # resolution error per bin; 100 resamples give the error to ~7 %, plenty for a plot
CUTS = np.linspace(0.0, 1.0, 101)  # the signal-score cut scan, in steps of 0.01


@dataclass
class Predictions:
    kind: str  # classification | regression
    names: list[str]  # class_names or target_names
    label: np.ndarray | None = None
    scores: np.ndarray | None = None
    target: np.ndarray | None = None
    pred: np.ndarray | None = None
    direction: str = ""
    truth: dict[str, np.ndarray] = field(default_factory=dict)  # energy, lepton_energy, ...


def read_predictions(path: Path) -> Predictions:
    import h5py

    with h5py.File(path, "r") as f:
        truth = {k: f[k][()] for k in f if k not in ("index", "label", "scores", "target", "pred") and f[k].ndim == 1}
        direction = _attr_str(f.attrs.get("direction", ""))
        if "scores" in f:
            names = [_attr_str(n) for n in f.attrs.get("class_names", [])]
            scores = f["scores"][()].astype(np.float64)
            names = names or [f"class{i}" for i in range(scores.shape[1])]
            return Predictions("classification", names, label=f["label"][()].astype(int), scores=scores, truth=truth)
        names = [_attr_str(n) for n in f.attrs.get("target_names", [])]
        target, pred = f["target"][()].astype(np.float64), f["pred"][()].astype(np.float64)
        names = names or [f"target{i}" for i in range(target.shape[1])]
        return Predictions("regression", names, target=target, pred=pred, direction=direction, truth=truth)


def _attr_str(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def wilson(k: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fraction k/n and its Wilson 1-sigma half-width (the contract's error for efficiencies and purities)."""
    k, n = np.asarray(k, float), np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(n > 0, k / n, np.nan)
        half = np.where(n > 0, np.sqrt(p * (1 - p) / n + 1 / (4 * n**2)) / (1 + 1 / n), np.nan)
    return p, half


def signal_class(names: list[str]) -> int:
    """The class a cut selects: an electron-neutrino class when there is one (the oscillation signal), else the last."""
    for i, n in enumerate(names):
        if "nue" in n.lower():
            return i
    return len(names) - 1


def cut_scan(p: Predictions, signal: int) -> dict[str, np.ndarray]:
    """Efficiency, purity and FOM (eff x pur) of ``score[signal] > cut`` for each cut."""
    s = p.scores[:, signal]
    is_sig = p.label == signal
    n_sig = is_sig.sum()
    sel = s[None, :] > CUTS[:, None]
    tp = (sel & is_sig[None, :]).sum(1)
    n_sel = sel.sum(1)
    eff, _ = wilson(tp, np.full_like(tp, n_sig))
    pur, _ = wilson(tp, n_sel)
    return {"cut": CUTS, "efficiency": eff, "purity": pur, "fom": eff * pur}


def quantile_bins(x: np.ndarray, n: int = N_ENERGY_BINS) -> np.ndarray:
    edges = np.unique(np.quantile(x, np.linspace(0, 1, n + 1)))
    return edges if len(edges) > 1 else np.array([x.min(), x.max() + 1e-9])


def _bin_index(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)


def binned_eff_purity(p: Predictions, energy: np.ndarray) -> dict[str, np.ndarray]:
    """Per class and energy bin: efficiency (truth c, predicted c / truth c) and purity (/ predicted c)."""
    edges = quantile_bins(energy)
    idx = _bin_index(energy, edges)
    predicted = p.scores.argmax(1)
    nb, nc = len(edges) - 1, len(p.names)
    out = {k: np.full((nc, nb), np.nan) for k in ("eff", "eff_err", "pur", "pur_err")}
    for b in range(nb):
        m = idx == b
        for c in range(nc):
            tp = np.sum(m & (p.label == c) & (predicted == c))
            out["eff"][c, b], out["eff_err"][c, b] = wilson(tp, np.sum(m & (p.label == c)))
            out["pur"][c, b], out["pur_err"][c, b] = wilson(tp, np.sum(m & (predicted == c)))
    out["edges"] = edges
    return out


def unit_vectors(v: np.ndarray, direction: str) -> np.ndarray:
    if direction == "theta_phi":
        th, ph = v[:, 0], v[:, 1]
        v = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], axis=1)
    return v / np.clip(np.linalg.norm(v, axis=1, keepdims=True), 1e-12, None)


def opening_angle_deg(p: Predictions) -> np.ndarray | None:
    if p.direction not in ("unit_vector", "theta_phi"):
        return None
    cos = np.sum(unit_vectors(p.pred, p.direction) * unit_vectors(p.target, p.direction), axis=1)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def residuals(p: Predictions) -> dict[str, np.ndarray]:
    """pred - target per target; phi residuals wrapped to (-pi, pi] (the contract's convention)."""
    out = {}
    for k, name in enumerate(p.names):
        r = p.pred[:, k] - p.target[:, k]
        if name.lower().startswith("phi"):
            r = np.pi - np.mod(np.pi - r, 2 * np.pi)
        out[name] = r
    return out


def binned_resolution(values: np.ndarray, energy: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """68 % quantile of ``values`` (opening angle or |residual|) per energy bin, with a bootstrap 1-sigma error."""
    rng = np.random.default_rng(seed)
    edges = quantile_bins(energy)
    idx = _bin_index(energy, edges)
    q = np.full(len(edges) - 1, np.nan)
    err = np.full(len(edges) - 1, np.nan)
    for b in range(len(edges) - 1):
        v = values[idx == b]
        if len(v) == 0:
            continue
        q[b] = np.quantile(v, 0.68)
        boot = [np.quantile(rng.choice(v, len(v)), 0.68) for _ in range(N_BOOTSTRAP)]
        err[b] = np.std(boot)
    return {"edges": edges, "q68": q, "err": err}
