"""Per-epoch performance and system telemetry of one trial: ``perf/*`` and ``sys/*`` (DESIGN.md "MLflow layout").

    telemetry = EpochTelemetry(device)
    for epoch in range(max_epochs):
        telemetry.start_epoch()
        for batch in telemetry.timed(train_loader):   # time blocked in next() = data wait
            ...
        reporter.report(telemetry.end_epoch(n_samples=len(train_set)))
    telemetry.close()

Cheap by construction: two ``perf_counter`` calls per step, a few psutil/CUDA-allocator reads per epoch, and NVML
read by a background thread every 0.5 s. No ``torch.cuda.synchronize`` or ``empty_cache``: both would change what
they measure. On CPU no CUDA or NVML function is ever called and no ``sys/gpu*`` key exists (absent, never 0).
Memory is in GiB (2**30 bytes), the unit nvidia-smi and torch's memory summary use.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Iterable, Iterator

import psutil
import torch

GIB = float(2**30)
NVML_INTERVAL_S = 0.5  # often enough to average a minutes-long epoch, rare enough to cost nothing


def gpu_memory_metrics(stats: dict, peak_bytes: int | None = None) -> dict[str, float]:
    """``sys/gpu_mem_*``, fragmentation and cache slack from a ``torch.cuda.memory_stats()`` dict.

    ``peak_bytes`` overrides ``allocated_bytes.all.peak`` (both mean "since the last reset_peak_memory_stats").
    Fragmentation = inactive split bytes / (reserved - allocated): the share of the allocator's cached free memory
    that sits in split blocks and cannot serve a large request. It is absent when nothing is cached free
    (reserved == allocated); the slack (reserved - allocated) / reserved is absent when nothing is reserved.
    An empty dict (the allocator never used) gives no keys.
    """
    allocated = stats.get("allocated_bytes.all.current")
    reserved = stats.get("reserved_bytes.all.current")
    if allocated is None or reserved is None:
        return {}
    out = {"sys/gpu_mem_allocated_gb": allocated / GIB, "sys/gpu_mem_reserved_gb": reserved / GIB}
    peak = peak_bytes if peak_bytes is not None else stats.get("allocated_bytes.all.peak")
    if peak is not None:
        out["sys/gpu_mem_peak_gb"] = peak / GIB
    free_cached = reserved - allocated
    inactive = stats.get("inactive_split_bytes.all.current")
    if free_cached > 0 and inactive is not None:
        out["sys/gpu_fragmentation"] = inactive / free_cached
    if reserved > 0:
        out["sys/gpu_cache_slack"] = free_cached / reserved
    return out


def nvml_device_uuid_for(torch_index: int, visible: str | None) -> str | int:
    """The NVML identity of torch's ``cuda:<torch_index>`` given ``CUDA_VISIBLE_DEVICES`` (None = unset).

    Returns the UUID string when the variable lists UUIDs (``GPU-...`` or ``MIG-...``, possibly abbreviated), else
    the physical index. Unset means every GPU is visible, so the torch index is the physical one.
    """
    if visible is None:
        return torch_index
    entries = [entry.strip() for entry in visible.split(",") if entry.strip()]
    if not 0 <= torch_index < len(entries):
        raise ValueError(f"cuda:{torch_index} is not among CUDA_VISIBLE_DEVICES='{visible}'")
    entry = entries[torch_index]
    if entry.isdigit():
        return int(entry)
    if entry.startswith(("GPU-", "MIG-")):
        return entry
    raise ValueError(f"cannot read CUDA_VISIBLE_DEVICES entry '{entry}' (expected an index or a GPU-/MIG- UUID)")


class NvmlSampler:
    """Averages GPU utilisation (%) and power (W) of one NVML device handle, read by a daemon thread.

    A reading the device does not support (e.g. power on some MIG slices) is dropped for good: its key is absent.
    ``means()`` covers the samples since ``start()`` or the last ``reset()``; when none was taken yet (an epoch
    shorter than the interval) it reads once on the spot rather than leave the epoch without a value.
    """

    def __init__(self, handle: Any, nvml_module: Any = None, interval_s: float = NVML_INTERVAL_S):
        if nvml_module is None:
            import pynvml as nvml_module
        self.handle, self.nvml, self.interval_s = handle, nvml_module, interval_s
        self._error = getattr(nvml_module, "NVMLError", Exception)
        self._readers = {"sys/gpu_util_pct": self._read_util, "sys/gpu_power_w": self._read_power}
        self._lock = threading.Lock()
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read_util(self) -> float:
        return float(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)

    def _read_power(self) -> float:
        return self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0  # NVML reports milliwatts

    def sample(self) -> None:
        for key, read in list(self._readers.items()):
            try:
                value = read()
            except self._error:
                self._readers.pop(key, None)  # unsupported on this device: stop asking
                continue
            with self._lock:
                self._sums[key] = self._sums.get(key, 0.0) + value
                self._counts[key] = self._counts.get(key, 0) + 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="nvml-sampler", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def reset(self) -> None:
        with self._lock:
            self._sums.clear()
            self._counts.clear()

    def means(self) -> dict[str, float]:
        with self._lock:
            empty = not self._counts
        if empty:
            self.sample()
        with self._lock:
            return {key: self._sums[key] / self._counts[key] for key in self._counts}


def _torch_device_uuid(torch_index: int) -> str | None:
    """``GPU-<uuid>`` of a CUDA device as torch sees it; immune to CUDA's fastest-first vs NVML's PCI ordering."""
    try:
        uuid = getattr(torch.cuda.get_device_properties(torch_index), "uuid", None)
    except (RuntimeError, AssertionError):  # torch without this device: fall back to the index
        return None
    return f"GPU-{uuid}" if uuid else None


def _nvml_handle_by_uuid(nvml: Any, uuid: str) -> Any:
    try:
        return nvml.nvmlDeviceGetHandleByUUID(uuid)
    except nvml.NVMLError:  # CUDA accepts abbreviated UUIDs, NVML only whole ones: match the prefix
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            if str(nvml.nvmlDeviceGetUUID(handle)).startswith(uuid):
                return handle
        raise


def nvml_handle_for(nvml: Any, torch_index: int) -> Any:
    """The NVML handle of this process's ``cuda:<torch_index>``, by UUID wherever possible."""
    physical = nvml_device_uuid_for(torch_index, os.environ.get("CUDA_VISIBLE_DEVICES"))
    if isinstance(physical, str):
        return _nvml_handle_by_uuid(nvml, physical)
    uuid = _torch_device_uuid(torch_index)
    if uuid is not None:
        try:
            return nvml.nvmlDeviceGetHandleByUUID(uuid)
        except nvml.NVMLError:
            pass
    return nvml.nvmlDeviceGetHandleByIndex(physical)  # right when CUDA_DEVICE_ORDER=PCI_BUS_ID


class EpochTelemetry:
    """Collects ``perf/*`` and ``sys/*`` metrics per epoch for one trial's device (see the module docstring)."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self._process = psutil.Process()
        self._cuda = self.device.type == "cuda"
        self._nvml = None
        self._sampler: NvmlSampler | None = self._open_nvml() if self._cuda else None
        self._epoch_start = time.perf_counter()
        self._cpu_start = self._cpu_seconds()
        self._wait_s = 0.0
        self._loop_s = 0.0

    def _cuda_index(self) -> int:
        return self.device.index if self.device.index is not None else torch.cuda.current_device()

    def _open_nvml(self) -> NvmlSampler | None:
        """NVML for this trial's GPU, or None (no driver library, no permission, device not found): keys absent."""
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:  # ImportError, or NVMLError_LibraryNotFound/DriverNotLoaded: telemetry must not kill a trial
            return None
        self._nvml = pynvml
        try:
            return NvmlSampler(nvml_handle_for(pynvml, self._cuda_index()), pynvml)
        except (pynvml.NVMLError, ValueError):
            return None

    def _cpu_seconds(self) -> float:
        times = self._process.cpu_times()
        return times.user + times.system

    def start_epoch(self) -> None:
        self._wait_s = self._loop_s = 0.0
        if self._cuda:
            torch.cuda.reset_peak_memory_stats(self.device)  # so the peak is this epoch's
        if self._sampler is not None:
            self._sampler.start()
            self._sampler.reset()
        self._cpu_start = self._cpu_seconds()
        self._epoch_start = time.perf_counter()

    def timed(self, loader: Iterable) -> Iterator:
        """Yield the loader's batches, adding the time blocked in ``iter()``/``next()`` to the data wait.

        Wrap the training loader only: its loop time (first ``iter`` to exhaustion or ``break``) is the denominator
        of ``perf/samples_per_s`` and ``perf/data_wait_frac``.
        """
        begin = time.perf_counter()
        try:
            iterator = iter(loader)  # starting workers is waiting for data too
            self._wait_s += time.perf_counter() - begin
            while True:
                asked = time.perf_counter()
                try:
                    batch = next(iterator)
                except StopIteration:
                    self._wait_s += time.perf_counter() - asked
                    return
                self._wait_s += time.perf_counter() - asked
                yield batch
        finally:
            self._loop_s += time.perf_counter() - begin

    def end_epoch(self, n_samples: int) -> dict[str, float]:
        """The epoch's metrics; ``n_samples`` is the number of training samples seen in the timed loop."""
        wall = time.perf_counter() - self._epoch_start
        loop = self._loop_s if self._loop_s > 0 else wall  # without timed(): the whole epoch is the loop
        out = {"perf/epoch_s": wall}
        if loop > 0:
            out["perf/samples_per_s"] = n_samples / loop
        if self._loop_s > 0:
            out["perf/data_wait_frac"] = min(1.0, self._wait_s / self._loop_s)  # wait / (wait + compute)
        out["sys/rss_gb"] = self._process.memory_info().rss / GIB
        if wall > 0:
            out["sys/cpu_pct"] = 100.0 * (self._cpu_seconds() - self._cpu_start) / wall  # % of one core
        if self._cuda:
            out.update(gpu_memory_metrics(torch.cuda.memory_stats(self.device)))
        if self._sampler is not None:
            out.update(self._sampler.means())
        return out

    def close(self) -> None:
        """Stop the NVML thread and release NVML (safe to call twice)."""
        if self._sampler is not None:
            self._sampler.stop()
            self._sampler = None
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
            self._nvml = None

    def __enter__(self) -> "EpochTelemetry":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
