"""Which device a trial trains on, and which physical GPU that is: both follow ``CUDA_VISIBLE_DEVICES``.

    from trainables.device import pick_device
    device = pick_device(gpu_requested=True)   # cuda:0 = the first GPU Ray gave this process
    device = pick_device(gpu_requested=False)  # cpu: a GPU this trial did not reserve belongs to another trial
    device = pick_device(None)                 # not scheduled (scanner train): a GPU listed in
                                               # CUDA_VISIBLE_DEVICES counts as reserved; else CUDA if any

Ray sets ``CUDA_VISIBLE_DEVICES`` to the GPU ids it gave a trial, so torch's ``cuda:0`` is that GPU (with
``gpu: 0.5`` two trials see the same id). A trial that holds a GPU on a machine without CUDA fails with one line
instead of training on CPU for hours, unless ``SCANNER_ALLOW_CPU_FALLBACK=1`` is set where the trials run (for
tests with Ray's logical GPUs: ``ray start --num-gpus 4`` on a machine without any).

``SCANNER_START_BARRIER=<folder>:<n>`` (for checks and tests) holds each trial at this point until ``n`` trials have
reached it, each leaving its device line in ``<folder>/<pid>``: trials that must overlap (two sharing a GPU, eight on
four logical GPUs) then do, however slowly a loaded machine starts them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Mapping

import torch

from trainables.errors import BadInput
from trainables.files import atomic_write_text

ALLOW_CPU_FALLBACK = "SCANNER_ALLOW_CPU_FALLBACK"
START_BARRIER = "SCANNER_START_BARRIER"
BARRIER_TIMEOUT_S = 300.0  # then go on: the check that wanted the overlap reports it missing
VISIBLE = "CUDA_VISIBLE_DEVICES"


class GpuUnavailable(BadInput):
    """The trial holds a GPU reservation, but this process has no CUDA: a one-line failure, not a silent CPU run."""


def visible_entries(visible: str | None) -> list[str] | None:
    """The entries of a ``CUDA_VISIBLE_DEVICES`` value (None = unset: every GPU is visible)."""
    if visible is None:
        return None
    return [entry.strip() for entry in visible.split(",") if entry.strip()]


def nvml_device_uuid_for(torch_index: int, visible: str | None) -> str | int:
    """The NVML identity of torch's ``cuda:<torch_index>`` given ``CUDA_VISIBLE_DEVICES`` (None = unset).

    Returns the UUID string when the variable lists UUIDs (``GPU-...`` or ``MIG-...``, possibly abbreviated), else
    the physical index. Unset means every GPU is visible, so the torch index is the physical one.
    """
    entries = visible_entries(visible)
    if entries is None:
        return torch_index
    if not 0 <= torch_index < len(entries):
        raise ValueError(f"cuda:{torch_index} is not among {VISIBLE}='{visible}'")
    entry = entries[torch_index]
    if entry.isdigit():
        return int(entry)
    if entry.startswith(("GPU-", "MIG-")):
        return entry
    raise ValueError(f"cannot read {VISIBLE} entry '{entry}' (expected an index or a GPU-/MIG- UUID)")


def gpu_held(gpu_requested: bool | None, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process holds a GPU: what the caller says, else whether ``CUDA_VISIBLE_DEVICES`` lists one."""
    if gpu_requested is not None:
        return bool(gpu_requested)
    return bool(visible_entries(environ.get(VISIBLE)))


def cuda_missing_reason() -> str | None:
    """Why torch cannot use CUDA here (None when it can)."""
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is built without CUDA"
    return "torch finds no CUDA device (no NVIDIA driver, or no GPU in this process's view)"


def _visible_text(environ: Mapping[str, str]) -> str:
    value = environ.get(VISIBLE)
    return f"{VISIBLE}={value}" if value is not None else f"{VISIBLE} unset"


def pick_device(gpu_requested: bool | None = None, environ: Mapping[str, str] = os.environ,
                announce: bool = True) -> torch.device:
    """The trial's device (see the module docstring), announced in one line on stdout (the trial's log) unless
    ``announce`` is False (an evaluation, an export: their own output says what they did)."""
    held = gpu_held(gpu_requested, environ)
    missing = cuda_missing_reason() if held or gpu_requested is None else None
    visible = _visible_text(environ)
    if held and missing is None:
        device, note = torch.device("cuda", 0), ""
    elif held:
        if environ.get(ALLOW_CPU_FALLBACK) != "1":
            raise GpuUnavailable(f"this trial holds a GPU but CUDA is not available: {missing} ({visible}); run it "
                                 f"on a GPU node, set resources.gpu: 0, or set {ALLOW_CPU_FALLBACK}=1 where the "
                                 "trials run to train on CPU anyway")
        device, note = torch.device("cpu"), f"; it holds a GPU but CUDA is not available, {ALLOW_CPU_FALLBACK}=1"
    elif gpu_requested is None and missing is None:
        device, note = torch.device("cuda", 0), ""  # not scheduled: the machine's GPUs are the user's
    else:
        device, note = torch.device("cpu"), ""
    line = f"scanner: trial device {device} ({visible}{note})"
    if not announce:
        return device
    print(line, flush=True)  # the trial's log (stdout): not an error, and scanner train's stderr stays for errors
    if environ.get(START_BARRIER):
        wait_at_barrier(environ[START_BARRIER], line)
    return device


def wait_at_barrier(spec: str, line: str, timeout_s: float = BARRIER_TIMEOUT_S) -> int:
    """``<folder>:<n>``: leave ``line`` in ``<folder>/<pid>``, then wait until ``n`` files are there. Returns how many
    trials had arrived; a timeout also leaves ``<folder>/timeout-<pid>`` saying so, since the trial goes on."""
    folder, _, count = spec.rpartition(":")
    if not folder or not count.isdigit():
        raise BadInput(f"{START_BARRIER}={spec!r}: expected <folder>:<number of trials>")
    atomic_write_text(Path(folder) / str(os.getpid()), line + "\n")
    deadline = time.monotonic() + timeout_s
    while (arrived := sum(1 for p in Path(folder).iterdir() if p.name.isdigit())) < int(count):
        if time.monotonic() > deadline:
            atomic_write_text(Path(folder) / f"timeout-{os.getpid()}", f"{arrived} of {count} arrived\n")
            break
        time.sleep(0.2)
    return arrived
