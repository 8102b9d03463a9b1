"""Physics figures of one trial recomputed from its ``predictions.h5``: ROC curves, cut scans, binned efficiency and
purity, residuals with bias and RMS, the 68 % resolution against energy. The physics itself (Wilson errors, weighted
quantiles and their bootstrap errors, ROC AUC, opening angle, φ wrap) is ``trainables.physics``, the code that
scored the trial; event weights are used wherever the file has them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from reports.errors import ReportInputError
from trainables.physics import (RESOLUTION_Q, bootstrap_quantile_err, effective_count, is_azimuth, normalised,
                                opening_angle_deg as _opening_angle, weighted_fraction_err, weighted_quantile,
                                weighted_roc_auc, wilson_err, wrap_phi)

N_ENERGY_BINS = 8  # quantile bins: equal statistics per bin keeps every point's error bar comparable
N_BOOTSTRAP = 100  # resolution error per bin; 100 resamples give the error to ~7 %, plenty for a plot
CUTS = np.linspace(0.0, 1.0, 101)  # the signal-score cut scan, in steps of 0.01
_STANDARD = ("index", "label", "scores", "target", "pred", "weights")
# A neutral-current class has no visible lepton (its outgoing lepton is a neutrino): "NC" in the name (NC, NCpi0,
# numuNC), or a lower-case name starting with "nc" (the synthetic classes nc, nue, numu).
_NC = re.compile(r"NC|^nc", re.ASCII)


@dataclass
class Predictions:
    kind: str  # classification | regression
    names: list[str]  # class_names or target_names (real names)
    index: np.ndarray | None = None  # event ids: pairs two trials' predictions event by event
    label: np.ndarray | None = None
    scores: np.ndarray | None = None
    target: np.ndarray | None = None
    pred: np.ndarray | None = None
    weights: np.ndarray | None = None  # None: unit weights
    direction: str = ""
    truth: dict[str, np.ndarray] = field(default_factory=dict)  # energy, lepton_energy, ...

    @property
    def n(self) -> int:
        return len(self.label if self.label is not None else self.target)

    @property
    def w(self) -> np.ndarray:
        return self.weights if self.weights is not None else np.ones(self.n)


def read_predictions(path: Path, source: str | None = None) -> Predictions:
    """The file's predictions and truths, checked to hold the same events (``source`` names the file in the error:
    e.g. the run and artifact it was downloaded from; default the path)."""
    p = _read(path)
    check_aligned(p, source or str(path))
    return p


_NOT_ALIGNED_FIX = ("the file does not come from one evaluation; write it again or delete it from the run (the report "
                    "then skips what needs it)")


def check_aligned(p: Predictions, source: str) -> None:
    """Every per-event array holds as many events as the truth (``label`` or ``target``), the outputs have one
    column per name and event ids are unique: otherwise one line naming the file, never a silent broadcast or
    truncation."""
    truth = "label" if p.kind == "classification" else "target"
    arrays = {"scores": p.scores, "pred": p.pred, "index": p.index, "weights": p.weights, **p.truth}
    for name, values in arrays.items():
        if values is not None and len(values) != p.n:
            raise ReportInputError(f"{source}: '{name}' has {len(values)} events but '{truth}' has {p.n}, so the "
                                   f"predictions and truths are not aligned; {_NOT_ALIGNED_FIX}")
    expected = (p.n, len(p.names))
    for name in ("scores",) if p.kind == "classification" else ("pred", "target"):
        shape = np.shape(getattr(p, name))
        if shape != expected:
            raise ReportInputError(f"{source}: '{name}' has shape {shape}, expected {expected} ({p.n} events, one "
                                   f"column per name of {p.names}); {_NOT_ALIGNED_FIX}")
    if p.index is not None and np.unique(p.index).size != p.n:
        raise ReportInputError(f"{source}: 'index' repeats event ids, so its events cannot be paired with another "
                               f"trial's; {_NOT_ALIGNED_FIX}")


def _read(path: Path) -> Predictions:
    with h5py.File(path, "r") as f:
        truth = {k: f[k][()] for k in f if k not in _STANDARD and f[k].ndim == 1}
        direction = _attr_str(f.attrs.get("direction", ""))
        weights = f["weights"][()].astype(np.float64) if "weights" in f else None
        index = f["index"][()] if "index" in f else None
        if "scores" in f:
            names = [_attr_str(n) for n in f.attrs.get("class_names", [])]
            scores = f["scores"][()].astype(np.float64)
            names = names or [f"class{i}" for i in range(scores.shape[1])]
            return Predictions("classification", names, index=index, label=f["label"][()].astype(int),
                               scores=scores, weights=weights, truth=truth)
        names = [_attr_str(n) for n in f.attrs.get("target_names", [])]
        target, pred = f["target"][()].astype(np.float64), f["pred"][()].astype(np.float64)
        names = names or [f"target{i}" for i in range(target.shape[1])]
        return Predictions("regression", names, index=index, target=target, pred=pred, weights=weights,
                           direction=direction, truth=truth)


def _attr_str(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def wilson(k: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fraction k/n and its Wilson 1-sigma half-width (``trainables.physics.wilson_err``); NaN where n = 0."""
    k, n = np.asarray(k, float), np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(n > 0, k / n, np.nan)
    return p, np.asarray(wilson_err(k, n))


def signal_class(names: list[str]) -> int:
    """The class a cut selects: an electron-neutrino class when there is one (the oscillation signal), else the last."""
    for i, n in enumerate(names):
        if "nue" in n.lower():
            return i
    return len(names) - 1


def has_visible_lepton(class_name: str) -> bool:
    """False for a neutral-current class (its "lepton" is the outgoing neutrino, which the detector never sees)."""
    return _NC.search(class_name) is None


def is_lepton_variable(truth_name: str) -> bool:
    return "lepton" in truth_name.lower()


def roc_curve(p: Predictions, c: int) -> dict[str, np.ndarray | float | None]:
    """One-vs-rest ROC of class ``c``'s score: signal efficiency (TPR) against background acceptance (FPR),
    weighted; with its AUC (``trainables.physics.weighted_roc_auc``, the trainer's definition)."""
    s, positive, w = p.scores[:, c], p.label == c, p.w
    order = np.argsort(-s, kind="stable")
    tp = np.concatenate([[0.0], np.cumsum(np.where(positive, w, 0.0)[order])])
    fp = np.concatenate([[0.0], np.cumsum(np.where(positive, 0.0, w)[order])])
    auc = weighted_roc_auc(s, positive, w)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"tpr": tp / tp[-1], "fpr": fp / fp[-1], "auc": auc}


def cut_scan(p: Predictions, signal: int) -> dict[str, np.ndarray]:
    """Weighted efficiency, purity and FOM (eff x pur) of ``score[signal] > cut`` for each cut."""
    s, w = p.scores[:, signal], p.w
    is_sig = p.label == signal
    sel = s[None, :] > CUTS[:, None]
    tp = (sel & is_sig[None, :]) @ w
    n_sel = sel @ w
    with np.errstate(invalid="ignore", divide="ignore"):
        eff = tp / np.sum(w[is_sig]) if np.sum(w[is_sig]) > 0 else np.full(len(CUTS), np.nan)
        pur = np.where(n_sel > 0, tp / n_sel, np.nan)
    return {"cut": CUTS, "efficiency": eff, "purity": pur, "fom": eff * pur}


def quantile_bins(x: np.ndarray, n: int = N_ENERGY_BINS) -> np.ndarray:
    edges = np.unique(np.quantile(x, np.linspace(0, 1, n + 1)))
    return edges if len(edges) > 1 else np.array([x.min(), x.max() + 1e-9])


def _bin_index(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)


def _fraction(passed: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    result = weighted_fraction_err(passed, w) if passed.size else None
    return result if result is not None else (math.nan, math.nan)


def binned_eff_purity(p: Predictions, energy: np.ndarray, keep: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per class and energy bin: weighted efficiency (truth c, predicted c / truth c) and purity (/ predicted c),
    with Wilson errors at the effective count; ``keep`` restricts the events (e.g. those with a visible lepton)."""
    keep = np.ones(p.n, bool) if keep is None else keep
    edges = quantile_bins(energy[keep])
    idx = _bin_index(energy, edges)
    predicted, w = p.scores.argmax(1), p.w
    correct = predicted == p.label
    nb, nc = len(edges) - 1, len(p.names)
    out = {k: np.full((nc, nb), np.nan) for k in ("eff", "eff_err", "pur", "pur_err")}
    for b in range(nb):
        in_bin = keep & (idx == b)
        for c in range(nc):
            truth_c, pred_c = in_bin & (p.label == c), in_bin & (predicted == c)
            out["eff"][c, b], out["eff_err"][c, b] = _fraction(correct[truth_c], w[truth_c])
            out["pur"][c, b], out["pur_err"][c, b] = _fraction(correct[pred_c], w[pred_c])
    out["edges"] = edges
    return out


def opening_angle_deg(p: Predictions) -> np.ndarray | None:
    if p.direction not in ("unit_vector", "theta_phi"):
        return None
    return _opening_angle(p.pred, p.target, p.direction)


def residuals(p: Predictions) -> dict[str, np.ndarray]:
    """pred - target per target, as the trainer scores them: a unit-vector prediction normalised first, azimuths
    wrapped into (-π, π]."""
    pred = np.nan_to_num(normalised(p.pred)) if p.direction == "unit_vector" else p.pred
    out = {}
    for k, name in enumerate(p.names):
        r = pred[:, k] - p.target[:, k]
        out[name] = wrap_phi(r) if is_azimuth(name, k, p.direction or None) else r
    return out


def bias_rms(p: Predictions, res: dict[str, np.ndarray]) -> dict[str, tuple[float, float, float, float]]:
    """{target: (bias, bias_err, rms, rms_err)}: weighted mean residual and RMS about it, with their 1-sigma errors
    at the Kish effective count: σ_bias = RMS / √N_eff, σ_RMS = RMS / √(2 N_eff) (Gaussian residuals)."""
    w = p.w
    n_eff = effective_count(w)
    out = {}
    for name, r in res.items():
        bias = float(np.sum(w * r) / np.sum(w))
        rms = float(np.sqrt(np.sum(w * (r - bias) ** 2) / np.sum(w)))
        out[name] = (bias, rms / math.sqrt(n_eff), rms, rms / math.sqrt(2 * n_eff))
    return out


def binned_resolution(values: np.ndarray, energy: np.ndarray, weights: np.ndarray | None = None, seed: int = 0
                      ) -> dict[str, np.ndarray]:
    """Weighted 68 % quantile of ``values`` (opening angle or |residual|) per energy bin, with a bootstrap error."""
    edges = quantile_bins(energy)
    idx = _bin_index(energy, edges)
    w = np.ones(len(values)) if weights is None else weights
    q = np.full(len(edges) - 1, np.nan)
    err = np.full(len(edges) - 1, np.nan)
    for b in range(len(edges) - 1):
        m = (idx == b) & (w > 0)
        if not m.any():
            continue
        q[b] = weighted_quantile(values[m], RESOLUTION_Q, w[m])
        e = bootstrap_quantile_err(values[m], RESOLUTION_Q, w[m], N_BOOTSTRAP, seed + b)
        err[b] = np.nan if e is None else e
    return {"edges": edges, "q68": q, "err": err}
