"""Per-epoch performance and system telemetry of one trial: ``perf/*`` and ``sys/*`` (docs/mlflow.md, docs/gpu.md).

    telemetry = EpochTelemetry(device)
    for epoch in range(max_epochs):
        telemetry.start_epoch()
        for batch in telemetry.timed(train_loader):   # time blocked in next() = data wait; the rest = the step
            ...
        reporter.report(telemetry.end_epoch(n_samples=len(train_set)))
    telemetry.close()

Cheap by construction: two ``perf_counter`` calls per step (on CUDA also two recorded CUDA events, read once per
epoch), a few psutil/CUDA-allocator reads per epoch, and NVML read by a background thread every 0.5 s. No
``torch.cuda.synchronize`` per step and no ``empty_cache``: both would change what they measure. On CPU no CUDA or
NVML function is ever called and no ``sys/gpu*`` key exists (absent, never 0). Memory is in GiB (2**30 bytes), the
unit nvidia-smi and torch's memory summary use.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import psutil
import torch

from trainables.device import VISIBLE, nvml_device_uuid_for

GIB = float(2**30)
NVML_INTERVAL_S = 0.5  # often enough to average a minutes-long epoch, rare enough to cost nothing
ALLOC_CONF_VARS = ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF")  # torch's current name, and the older one
ALLOCATOR_EVENTS = {"num_alloc_retries": "sys/gpu_alloc_retries", "num_ooms": "sys/gpu_ooms"}


def expandable_segments(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the caching allocator runs with ``expandable_segments:True`` (``PYTORCH_ALLOC_CONF`` or
    ``PYTORCH_CUDA_ALLOC_CONF``): it then maps segments that grow, and reports no inactive split bytes."""
    for name in ALLOC_CONF_VARS:
        for option in environ.get(name, "").split(","):
            key, _, value = option.partition(":")
            if key.strip() == "expandable_segments" and value.strip().lower() in ("true", "1"):
                return True
    return False


def gpu_memory_metrics(stats: dict, peak_bytes: int | None = None,
                       expandable: bool = False) -> dict[str, float]:
    """``sys/gpu_mem_*``, fragmentation and cache slack from a ``torch.cuda.memory_stats()`` dict.

    ``peak_bytes`` overrides ``allocated_bytes.all.peak``; it and ``reserved_bytes.all.peak`` both mean "since the
    last reset_peak_memory_stats" (the epoch's start). Fragmentation = inactive split bytes / (reserved - allocated):
    the share of the allocator's cached free memory that sits in split blocks and cannot serve a large request. It
    is absent when nothing is cached free (reserved == allocated), and with ``expandable`` segments, whose
    allocator does not count inactive split bytes (a 0 there would be a wrong number). The slack
    (reserved - allocated) / reserved is absent when nothing is reserved. An empty dict (the allocator never used)
    gives no keys.
    """
    allocated = stats.get("allocated_bytes.all.current")
    reserved = stats.get("reserved_bytes.all.current")
    if allocated is None or reserved is None:
        return {}
    out = {"sys/gpu_mem_allocated_gb": allocated / GIB, "sys/gpu_mem_reserved_gb": reserved / GIB}
    peak = peak_bytes if peak_bytes is not None else stats.get("allocated_bytes.all.peak")
    if peak is not None:
        out["sys/gpu_mem_peak_gb"] = peak / GIB
    peak_reserved = stats.get("reserved_bytes.all.peak")
    if peak_reserved is not None:
        out["sys/gpu_mem_peak_reserved_gb"] = peak_reserved / GIB
    free_cached = reserved - allocated
    inactive = stats.get("inactive_split_bytes.all.current")
    if free_cached > 0 and inactive is not None and not expandable:
        out["sys/gpu_fragmentation"] = inactive / free_cached
    if reserved > 0:
        out["sys/gpu_cache_slack"] = free_cached / reserved
    return out


def allocator_event_metrics(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, float]:
    """How many cudaMalloc retries (the cache flushed to serve a request: the warning before an out-of-memory
    error, and a slowdown) and out-of-memory errors the allocator counted between two ``memory_stats()``."""
    return {key: float(after[stat] - before.get(stat, 0)) for stat, key in ALLOCATOR_EVENTS.items() if stat in after}


def process_gpu_metrics(processes: Sequence[Any], pid: int) -> dict[str, float]:
    """From NVML's running compute processes of one device (``nvmlDeviceGetComputeRunningProcesses``): how many
    share it, and this PID's memory as the driver sees it (allocator cache + CUDA context).

    A list without this PID (a container sees host PIDs) gives no per-process key: nothing is guessed. An empty list
    while this process computes there means NVML cannot see processes at all, so the count is absent too.
    """
    if not processes:
        return {}
    out = {"sys/gpu_procs_sharing": float(len({p.pid for p in processes}))}
    own = [p.usedGpuMemory for p in processes if p.pid == pid]
    if own and all(used is not None for used in own):  # None: the driver cannot tell (Windows WDDM)
        out["sys/gpu_proc_mem_gb"] = sum(own) / GIB
    return out


class NvmlSampler:
    """Averages GPU utilisation (%), power (W) and this process's SM share (%) of one NVML device handle, read by a
    daemon thread.

    A reading the device does not support (e.g. power on some MIG slices, per-process utilisation before Maxwell)
    is dropped for good: its key is absent. ``means()`` covers the samples since ``start()`` or the last
    ``reset()``; when none was taken yet (an epoch shorter than the interval) it reads once on the spot rather than
    leave the epoch without a value.
    """

    def __init__(self, handle: Any, nvml_module: Any = None, interval_s: float = NVML_INTERVAL_S,
                 pid: int | None = None):
        if nvml_module is None:
            # NVML only on CUDA
            import pynvml as nvml_module
        self.handle, self.nvml, self.interval_s = handle, nvml_module, interval_s
        self.pid = os.getpid() if pid is None else pid
        self._error = getattr(nvml_module, "NVMLError", Exception)
        self._readers = {"sys/gpu_util_pct": self._read_util, "sys/gpu_power_w": self._read_power,
                         "sys/gpu_proc_util_pct": self._read_proc_util}
        self._lock = threading.Lock()
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._util_seen_us = 0  # NVML's per-process samples newer than this CPU timestamp (microseconds) are new
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read_util(self) -> float:
        return float(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)

    def _read_power(self) -> float:
        return self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0  # NVML reports milliwatts

    def _read_proc_util(self) -> float | None:
        """This PID's ``smUtil`` in the samples since the last read; None when the driver took no new sample."""
        try:
            samples = self.nvml.nvmlDeviceGetProcessUtilization(self.handle, self._util_seen_us)
        except self._error as exc:
            if getattr(exc, "value", None) == getattr(self.nvml, "NVML_ERROR_NOT_FOUND", 6):
                return None  # NVML's answer for "no sample since that timestamp"
            raise
        if not samples:
            return None
        self._util_seen_us = max(self._util_seen_us, *(int(s.timeStamp) for s in samples))
        own = [float(s.smUtil) for s in samples if s.pid == self.pid]
        return sum(own) / len(own) if own else 0.0  # NVML lists only the processes that used the SMs

    def sample(self) -> None:
        for key, read in list(self._readers.items()):
            try:
                value = read()
            except self._error:
                self._readers.pop(key, None)  # unsupported on this device: stop asking
                continue
            if value is None:
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
            self._util_seen_us = int(time.time() * 1e6)  # this epoch's samples only

    def means(self) -> dict[str, float]:
        with self._lock:
            empty = not self._counts
        if empty:
            self.sample()
        with self._lock:
            return {key: self._sums[key] / self._counts[key] for key in self._counts}

    def processes(self) -> list[Any]:
        """NVML's running compute processes on this device ([] when the driver will not list them)."""
        try:
            return list(self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle))
        except self._error:
            return []


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
    physical = nvml_device_uuid_for(torch_index, os.environ.get(VISIBLE))
    if isinstance(physical, str):
        return _nvml_handle_by_uuid(nvml, physical)
    uuid = _torch_device_uuid(torch_index)
    if uuid is not None:
        try:
            return nvml.nvmlDeviceGetHandleByUUID(uuid)
        except nvml.NVMLError:
            pass
    return nvml.nvmlDeviceGetHandleByIndex(physical)  # right when CUDA_DEVICE_ORDER=PCI_BUS_ID


class StepTimes:
    """Each training step's time, from the batch in hand to the next batch asked for (the data wait excluded).

    On CUDA the host sees only kernel launches, so two CUDA events bracket each step on the device's stream and are
    read once, in ``percentiles()``, after the epoch's last one completed: no synchronize per step. On CPU the host
    times that ``EpochTelemetry.timed`` takes anyway are the step times.
    """

    def __init__(self, cuda_device: torch.device | None = None):
        self.cuda_device = cuda_device
        self.reset()

    def reset(self) -> None:
        self._host_ms: list[float] = []
        self._events: list[tuple[Any, Any]] = []
        self._open: Any = None

    def _event(self) -> Any:
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.cuda_device))
        return event

    def begin(self) -> None:
        if self.cuda_device is not None:
            self._open = self._event()

    def end(self, host_s: float) -> None:
        if self.cuda_device is None:
            self._host_ms.append(1000.0 * host_s)
        elif self._open is not None:
            self._events.append((self._open, self._event()))
            self._open = None

    def percentiles(self) -> dict[str, float]:
        """``perf/step_ms_p50`` and ``perf/step_ms_p95`` of the steps since ``reset()`` (none: no keys)."""
        if self._events:
            self._events[-1][1].synchronize()  # once per epoch; every earlier event completed before it
            times = [start.elapsed_time(stop) for start, stop in self._events]
        else:
            times = self._host_ms
        if not times:
            return {}
        p50, p95 = np.percentile(np.asarray(times, dtype=np.float64), [50, 95])
        return {"perf/step_ms_p50": float(p50), "perf/step_ms_p95": float(p95)}


class EpochTelemetry:
    """Collects ``perf/*`` and ``sys/*`` metrics per epoch for one trial's device (see the module docstring)."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self._process = psutil.Process()
        self._cuda = self.device.type == "cuda"
        self._expandable = self._cuda and expandable_segments()
        self._device_total = torch.cuda.get_device_properties(self.device).total_memory if self._cuda else 0
        self._nvml = None
        self._sampler: NvmlSampler | None = self._open_nvml() if self._cuda else None
        self._steps = StepTimes(self.device if self._cuda else None)
        self._allocator_start: dict[str, int] = {}
        self._epoch_start = time.perf_counter()
        self._cpu_start = self._cpu_seconds()
        self._wait_s = 0.0
        self._loop_s = 0.0

    def _cuda_index(self) -> int:
        return self.device.index if self.device.index is not None else torch.cuda.current_device()

    def _open_nvml(self) -> NvmlSampler | None:
        """NVML for this trial's GPU, or None (no driver library, no permission, device not found): keys absent."""
        try:
            # NVML only on CUDA
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

    def _allocator_counts(self) -> dict[str, int]:
        stats = torch.cuda.memory_stats(self.device)
        return {stat: int(stats[stat]) for stat in ALLOCATOR_EVENTS if stat in stats}

    def start_epoch(self) -> None:
        self._wait_s = self._loop_s = 0.0
        self._steps.reset()
        if self._cuda:
            torch.cuda.reset_peak_memory_stats(self.device)  # so the peaks are this epoch's
            self._allocator_start = self._allocator_counts()  # cumulative counters: the epoch's are a difference
        if self._sampler is not None:
            self._sampler.start()
            self._sampler.reset()
        self._cpu_start = self._cpu_seconds()
        self._epoch_start = time.perf_counter()

    def timed(self, loader: Iterable) -> Iterator:
        """Yield the loader's batches, adding the time blocked in ``iter()``/``next()`` to the data wait and the
        time between a batch's delivery and the next request to the step times.

        Wrap the training loader only: its loop time (first ``iter`` to exhaustion or ``break``) is the denominator
        of ``perf/samples_per_s`` and ``perf/data_wait_frac``.
        """
        begin = time.perf_counter()
        delivered = None
        try:
            iterator = iter(loader)  # starting workers is waiting for data too
            self._wait_s += time.perf_counter() - begin
            while True:
                asked = time.perf_counter()
                if delivered is not None:
                    self._steps.end(asked - delivered)
                try:
                    batch = next(iterator)
                except StopIteration:
                    self._wait_s += time.perf_counter() - asked
                    return
                delivered = time.perf_counter()
                self._wait_s += delivered - asked
                self._steps.begin()
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
        out.update(self._steps.percentiles())
        out["sys/rss_gb"] = self._process.memory_info().rss / GIB
        if wall > 0:
            out["sys/cpu_pct"] = 100.0 * (self._cpu_seconds() - self._cpu_start) / wall  # % of one core
        if self._cuda:
            stats = torch.cuda.memory_stats(self.device)
            out.update(gpu_memory_metrics(stats, expandable=self._expandable))
            out.update(allocator_event_metrics(self._allocator_start, stats))
            out["sys/gpu_mem_total_gb"] = self._device_total / GIB  # peak reserved is read against it
        if self._sampler is not None:
            out.update(self._nvml_metrics(self._sampler))
        return out

    @staticmethod
    def _nvml_metrics(sampler: NvmlSampler) -> dict[str, float]:
        """Device means, and the per-process figures only when NVML lists this PID (else they would be guesses)."""
        out = sampler.means()
        processes = sampler.processes()
        out.update(process_gpu_metrics(processes, sampler.pid))
        if not any(p.pid == sampler.pid for p in processes):
            out.pop("sys/gpu_proc_util_pct", None)
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
