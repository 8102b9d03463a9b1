"""Recorded GPU structures and scripted clocks for the telemetry tests: torch.cuda.memory_stats() dicts, pynvml
entries and a fake pynvml module, CUDA events on a scripted device clock, and a host clock that moves only when told.

    def test_x(monkeypatch, scripted_cuda_events, clock): ...       # CUDA events and perf_counter under the test's hand
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(util=[50]))
"""

from __future__ import annotations

import types
from types import SimpleNamespace

import pynvml
import pytest
import torch

import trainables.telemetry as telemetry_module
from trainables.telemetry import EpochTelemetry

__all__ = ["clock", "scripted_cuda_events"]  # the fixtures, for conftest; tests import the helpers by name

GIB = 2**30


# A torch.cuda.memory_stats() dict as recorded after a training step (key names of torch 2.x; values chosen so
# the expected metrics come out in round numbers: 1.25 GiB allocated, 2 GiB reserved, 384 MiB inactive split).
RECORDED_STATS = {
    "active.all.allocated": 18342,
    "active.all.current": 187,
    "active.all.freed": 18155,
    "active.all.peak": 301,
    "active_bytes.all.current": 1342177280,
    "active_bytes.all.peak": 1879048192,
    "allocated_bytes.all.allocated": 981245952000,
    "allocated_bytes.all.current": 1342177280,
    "allocated_bytes.all.freed": 979903774720,
    "allocated_bytes.all.peak": 1879048192,
    "allocated_bytes.large_pool.current": 1337982976,
    "allocated_bytes.small_pool.current": 4194304,
    "inactive_split.all.current": 9,
    "inactive_split_bytes.all.current": 402653184,
    "inactive_split_bytes.all.peak": 536870912,
    "max_split_size": -1,
    "num_alloc_retries": 3,
    "num_device_alloc": 31,
    "num_device_free": 0,
    "num_ooms": 0,
    "num_sync_all_streams": 0,
    "requested_bytes.all.current": 1340000000,
    "reserved_bytes.all.current": 2147483648,
    "reserved_bytes.all.peak": 2684354560,
    "segment.all.current": 31,
}


# The same training step recorded under PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True: the allocator grows one
# mapped segment and keeps no split-block accounting, so inactive_split_bytes reads 0 although 768 MiB sit cached.
EXPANDABLE_STATS = dict(RECORDED_STATS, **{"inactive_split_bytes.all.current": 0, "inactive_split.all.current": 0,
                                           "segment.all.current": 1, "num_device_alloc": 7})


def nvml_process(pid: int, used_bytes: int | None):
    """One entry as pynvml's nvmlDeviceGetComputeRunningProcesses returns it: the real struct, made friendly."""
    raw = pynvml.c_nvmlProcessInfo_v3_t(pid=pid, usedGpuMemory=used_bytes if used_bytes is not None else 0,
                                        gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF)
    entry = pynvml.nvmlStructToFriendlyObject(raw)
    if used_bytes is None:
        entry.usedGpuMemory = None  # what pynvml puts for NVML_VALUE_NOT_AVAILABLE (Windows WDDM)
    return entry


class FakeNvmlError(Exception):
    pass


def fake_nvml(util=(), power_mw=(), uuids=("GPU-aaaa-1111", "GPU-bbbb-2222"), processes=None, proc_util=None):
    """A pynvml stand-in with pynvml's function names: handles are UUID strings; readings pop from the given
    sequences, then repeat the last. ``processes``: the compute-process list; ``proc_util``: per call of
    nvmlDeviceGetProcessUtilization, a list of (pid, smUtil) samples, or None for NVML's NOT_FOUND (no new sample).
    Without them those functions are unsupported, as on a pre-Maxwell GPU."""
    util, power_mw = list(util), list(power_mw)
    proc_util = list(proc_util) if proc_util is not None else None
    calls = []

    def next_of(seq):
        if not seq:
            raise FakeNvmlError("not supported")
        return seq.pop(0) if len(seq) > 1 else seq[0]

    def by_uuid(uuid):
        calls.append(("uuid", uuid))
        if uuid not in uuids:
            raise FakeNvmlError("not found")
        return uuid

    def running(handle):
        if processes is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return list(processes)

    def process_utilization(handle, last_seen_us):
        calls.append(("proc_util", last_seen_us))
        if proc_util is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        samples = next_of(proc_util) if proc_util else None
        if samples is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        stamp = last_seen_us + 100_000
        return [pynvml.c_nvmlProcessUtilizationSample_t(pid=pid, timeStamp=stamp, smUtil=sm, memUtil=0, encUtil=0,
                                                        decUtil=0) for pid, sm in samples]

    return types.SimpleNamespace(
        NVMLError=(FakeNvmlError, pynvml.NVMLError),
        NVML_ERROR_NOT_FOUND=pynvml.NVML_ERROR_NOT_FOUND,
        calls=calls,
        nvmlInit=lambda: calls.append(("init",)),
        nvmlShutdown=lambda: calls.append(("shutdown",)),
        nvmlDeviceGetCount=lambda: len(uuids),
        nvmlDeviceGetHandleByIndex=lambda i: uuids[i],
        nvmlDeviceGetHandleByUUID=by_uuid,
        nvmlDeviceGetUUID=lambda handle: handle,
        nvmlDeviceGetUtilizationRates=lambda handle: types.SimpleNamespace(gpu=next_of(util), memory=0),
        nvmlDeviceGetPowerUsage=lambda handle: next_of(power_mw),
        nvmlDeviceGetComputeRunningProcesses=running,
        nvmlDeviceGetProcessUtilization=process_utilization,
    )


class ScriptedEvent:
    """torch.cuda.Event with a scripted device clock: record() takes the next time (ms) from ``clock``."""

    clock: list[float] = []
    streams: list[object] = []
    synchronized: list["ScriptedEvent"] = []

    def __init__(self, enable_timing: bool = False):
        assert enable_timing
        self.at: float | None = None

    def record(self, stream=None):
        ScriptedEvent.streams.append(stream)
        self.at = ScriptedEvent.clock.pop(0)

    def synchronize(self):
        ScriptedEvent.synchronized.append(self)

    def elapsed_time(self, end: "ScriptedEvent") -> float:
        assert self.at is not None and end.at is not None, "elapsed_time of an event never recorded"
        return end.at - self.at


@pytest.fixture
def scripted_cuda_events(monkeypatch):
    ScriptedEvent.clock, ScriptedEvent.streams, ScriptedEvent.synchronized = [], [], []
    monkeypatch.setattr(torch.cuda, "Event", ScriptedEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: ("stream", str(device)))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: pytest.fail("no device-wide synchronize"))
    return ScriptedEvent


class ScriptedClock:
    """``time.perf_counter`` that moves only when the test says time passes: the expected figures are exact,
    whatever else runs on the machine."""

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> ScriptedClock:
    scripted = ScriptedClock()
    monkeypatch.setattr(telemetry_module.time, "perf_counter", scripted.perf_counter)
    return scripted


def slow_loader(clock: ScriptedClock, n_batches: int, load_s: float):
    for i in range(n_batches):
        clock.sleep(load_s)
        yield torch.full((4,), float(i))


def run_epoch(telemetry: EpochTelemetry, clock: ScriptedClock, load_s: float, compute_s: float) -> dict[str, float]:
    """Five batches of four samples; each takes ``load_s`` to arrive and ``compute_s`` to train on."""
    telemetry.start_epoch()
    for _ in telemetry.timed(slow_loader(clock, 5, load_s)):
        clock.sleep(compute_s)
    return telemetry.end_epoch(n_samples=20)


DEVICE_TOTAL = 40 * 2**30  # a recorded 40 GiB device


def cuda_stats_sequence(monkeypatch, *stats_dicts):
    """memory_stats() answers with the given dicts in turn (the epoch's start, then its end), then the last; the
    device reports its recorded total."""
    answers = list(stats_dicts)
    monkeypatch.setattr(torch.cuda, "memory_stats", lambda device: answers.pop(0) if len(answers) > 1 else answers[0])
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=DEVICE_TOTAL))
