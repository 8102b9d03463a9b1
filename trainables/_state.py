"""What one trial's checkpoint holds (``state.pt``), how a trial continues from it, and the ``best/`` block."""

from __future__ import annotations

import math
from typing import Any

from trainables._epoch import Parts, num_outputs
from trainables.checkpoint import rng_state
from trainables.config import TrialConfig, TrialSpec
from trainables.data import EventFile, data_hash
from trainables.data.schema import open_h5

MAIN_PHYSICS = ("accuracy", "efficiency/", "purity/", "fom/", "resolution68_deg", "bias/", "rms/")


def data_meta(spec: TrialSpec, events: EventFile) -> dict[str, Any]:
    """What an export needs to know about the data without opening it: computed once per trial (the hash reads the
    whole file)."""
    with open_h5(spec.data.path) as f:
        views = f.attrs.get("views")
    if isinstance(views, (str, bytes)):  # one view written as a scalar attribute
        views = [views]
    return {
        "pixel_scale": float(events.pixel_scale),
        "image_shape": [int(s) for s in events.image_shape],
        "views": None if views is None else [v.decode() if isinstance(v, bytes) else str(v) for v in views],
        "data_hash": spec.data_hash or data_hash(spec.data.path),
        "data_path": str(spec.data.path),
    }


def trial_state(p: Parts, epoch: int, best: dict[str, float], metrics: dict[str, float], data: dict[str, Any],
                oom_retries: int) -> dict[str, Any]:
    """The checkpoint of ``epoch``. ``eval_model`` and ``model``/``ema_model`` share their tensors: torch.save
    writes each storage once, so the entry costs no space."""
    spec = p.spec
    return {
        "model": p.model.state_dict(),
        "ema": p.ema.state_dict() if p.ema is not None else None,
        "ema_model": p.ema.model_state_dict() if p.ema is not None else None,
        "eval_model": p.evaluated.state_dict(),  # EMA or live, with the BatchNorm statistics evaluation used
        "optimizer": p.optimizer.state_dict(),
        "scheduler": p.schedule.state_dict(),
        "scaler": p.scaler.state_dict() if p.scaler is not None else None,
        "epoch": epoch,
        "best": {k: float(v) for k, v in best.items()},
        "metrics": {k: float(v) for k, v in metrics.items()},  # a trial restored at its last epoch reports it again
        "rng": rng_state(),
        "config": p.cfg.as_params(),  # with the halved batch size and LR after an out-of-memory retry
        "oom_retries": oom_retries,
        "meta": {
            "model": p.cfg.model,
            "in_channels": p.events.image_shape[0],
            "num_outputs": num_outputs(p.events),
            "task": spec.task,
            "class_names": p.events.class_names,
            "target_names": p.events.target_names,
            "direction": p.events.direction,
            **data,
        },
    }


def resumed_config(cfg: TrialConfig, state: dict[str, Any] | None) -> tuple[TrialConfig, int]:
    """The config a trial continues with: after out-of-memory retries the checkpoint's smaller batch size and LR."""
    if not state or not state.get("oom_retries"):
        return cfg, 0
    saved = state["config"]
    return cfg.replace(batch_size=int(saved["batch_size"]), lr=float(saved["lr"])), int(state["oom_retries"])


def restore(p: Parts, state: dict[str, Any]) -> tuple[int, dict[str, float], dict[str, float]]:
    """Load ``state`` into the parts; returns (epoch, best, last metrics). When the batch size changed since the
    checkpoint (an out-of-memory retry), the LRs are the new config's and the schedule continues at the step the
    finished epochs take at the new batch size."""
    epoch = int(state["epoch"])
    p.model.load_state_dict(state["model"])
    fresh = [(g["lr"], g.get("initial_lr")) for g in p.optimizer.param_groups]
    p.optimizer.load_state_dict(state["optimizer"])
    if p.ema is not None and state.get("ema") is not None:
        p.ema.load_state_dict(state["ema"])
    if p.scaler is not None and state.get("scaler") is not None:
        p.scaler.load_state_dict(state["scaler"])
    if int(state["config"]["batch_size"]) == p.cfg.batch_size:
        p.schedule.load_state_dict(state["scheduler"])
    else:
        for group, (lr, initial) in zip(p.optimizer.param_groups, fresh):
            group["lr"], group["initial_lr"] = lr, initial
        p.schedule.load_state_dict(_rescaled_schedule(state["scheduler"], p, epoch * len(p.train_loader)))
    return epoch, dict(state.get("best") or {}), dict(state.get("metrics") or {})


def _rescaled_schedule(saved: dict[str, Any], p: Parts, steps_done: int) -> dict[str, Any]:
    """The saved schedule state (plateau cuts kept) at ``steps_done`` of the new schedule, on the new base LRs: the
    two public entries of torch's LRScheduler state (pinned by the halve_batch test's LR figures)."""
    lam = {**saved["lambda"], "base_lrs": [g["initial_lr"] for g in p.optimizer.param_groups], "last_epoch": steps_done}
    return {**saved, "lambda": lam}


def is_better(value: float | None, best: float | None, mode: str) -> bool:
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if mode == "max" else value < best


def best_block(metrics: dict[str, float], objective: str, epoch: int, previous: dict[str, float]) -> dict[str, float]:
    """``best/<metric>``: the objective and the main physics metrics of the best epoch (with their errors). Every
    figure of the block comes from that epoch: one the run logged before but undefined now is NaN (a logged value
    cannot be removed), so a ``best/`` value of an earlier epoch never stands beside this one's."""
    keep = {objective, "val/loss"}
    keep |= {k for k in metrics if k.startswith("val/") and k[4:].startswith(MAIN_PHYSICS)}
    block = {f"best/{k}": float(v) for k, v in metrics.items() if k in keep}
    block.update({k: math.nan for k in previous if k not in block})
    block["best/epoch"] = float(epoch)
    return block
