"""Epoch telemetry: the CPU path for real, the GPU paths on recorded structures and fake NVML modules."""

from __future__ import annotations

import os
import sys
import threading
from types import SimpleNamespace
import time
import types

import pynvml
import pytest
import torch

import trainables.telemetry as telemetry_module
from trainables.telemetry import (
    EpochTelemetry,
    NvmlSampler,
    StepTimes,
    allocator_event_metrics,
    expandable_segments,
    gpu_memory_metrics,
    process_gpu_metrics,
)

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


def test_gpu_memory_metrics_on_recorded_stats():
    metrics = gpu_memory_metrics(RECORDED_STATS)
    assert metrics == pytest.approx(
        {
            "sys/gpu_mem_allocated_gb": 1.25,
            "sys/gpu_mem_reserved_gb": 2.0,
            "sys/gpu_mem_peak_gb": 1.75,
            "sys/gpu_mem_peak_reserved_gb": 2.5,
            "sys/gpu_fragmentation": 0.375 / 0.75,  # 384 MiB split of the 768 MiB cached free
            "sys/gpu_cache_slack": 0.75 / 2.0,
        }
    )
    assert gpu_memory_metrics(RECORDED_STATS, peak_bytes=GIB)["sys/gpu_mem_peak_gb"] == pytest.approx(1.0)


def test_fragmentation_absent_when_nothing_is_cached_free():
    stats = dict(RECORDED_STATS, **{"reserved_bytes.all.current": 1342177280, "inactive_split_bytes.all.current": 0})
    metrics = gpu_memory_metrics(stats)
    assert "sys/gpu_fragmentation" not in metrics
    assert metrics["sys/gpu_cache_slack"] == 0.0
    assert gpu_memory_metrics({}) == {}  # allocator never used: nothing to report


@pytest.mark.parametrize(
    "environ,expected",
    [
        ({}, False),
        ({"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}, True),
        ({"PYTORCH_ALLOC_CONF": "max_split_size_mb:128, expandable_segments:true"}, True),
        ({"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:False"}, False),
        ({"PYTORCH_CUDA_ALLOC_CONF": "backend:cudaMallocAsync"}, False),
    ],
)
def test_expandable_segments_read_from_the_allocator_config(environ, expected):
    assert expandable_segments(environ) is expected


# The same training step recorded under PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True: the allocator grows one
# mapped segment and keeps no split-block accounting, so inactive_split_bytes reads 0 although 768 MiB sit cached.
EXPANDABLE_STATS = dict(RECORDED_STATS, **{"inactive_split_bytes.all.current": 0, "inactive_split.all.current": 0,
                                           "segment.all.current": 1, "num_device_alloc": 7})


def test_fragmentation_absent_with_expandable_segments_not_zero():
    plain = gpu_memory_metrics(EXPANDABLE_STATS)
    assert plain["sys/gpu_fragmentation"] == 0.0  # what a naive reading would report: wrong
    metrics = gpu_memory_metrics(EXPANDABLE_STATS, expandable=True)
    assert "sys/gpu_fragmentation" not in metrics
    assert metrics["sys/gpu_cache_slack"] == pytest.approx(0.375)  # the rest is still measured
    assert metrics["sys/gpu_mem_peak_reserved_gb"] == pytest.approx(2.5)


def test_allocator_retries_and_ooms_are_the_epochs_change():
    start = {"num_alloc_retries": 1, "num_ooms": 0}
    end = dict(RECORDED_STATS, num_alloc_retries=4, num_ooms=1)
    assert allocator_event_metrics(start, end) == {"sys/gpu_alloc_retries": 3.0, "sys/gpu_ooms": 1.0}
    assert allocator_event_metrics(end, end) == {"sys/gpu_alloc_retries": 0.0, "sys/gpu_ooms": 0.0}
    assert allocator_event_metrics({}, {}) == {}  # an allocator that never ran reports no counters


def nvml_process(pid: int, used_bytes: int | None):
    """One entry as pynvml's nvmlDeviceGetComputeRunningProcesses returns it: the real struct, made friendly."""
    raw = pynvml.c_nvmlProcessInfo_v3_t(pid=pid, usedGpuMemory=used_bytes if used_bytes is not None else 0,
                                        gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF)
    entry = pynvml.nvmlStructToFriendlyObject(raw)
    if used_bytes is None:
        entry.usedGpuMemory = None  # what pynvml puts for NVML_VALUE_NOT_AVAILABLE (Windows WDDM)
    return entry


def test_process_metrics_on_a_device_shared_by_two_trials():
    processes = [nvml_process(4242, 3 * GIB), nvml_process(5151, 5 * GIB)]
    assert process_gpu_metrics(processes, pid=4242) == {"sys/gpu_procs_sharing": 2.0, "sys/gpu_proc_mem_gb": 3.0}
    assert process_gpu_metrics(processes, pid=5151)["sys/gpu_proc_mem_gb"] == 5.0


def test_process_metrics_without_this_pid_guess_nothing():
    container = [nvml_process(918273, 3 * GIB), nvml_process(918274, 5 * GIB)]  # host PIDs seen from a container
    assert process_gpu_metrics(container, pid=12) == {"sys/gpu_procs_sharing": 2.0}
    assert process_gpu_metrics([], pid=12) == {}  # NVML lists nothing while we compute: no count either
    assert process_gpu_metrics([nvml_process(12, None)], pid=12) == {"sys/gpu_procs_sharing": 1.0}


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


def test_nvml_sampler_means_of_known_sequences():
    nvml = fake_nvml(util=[10, 20, 30, 40], power_mw=[100_000, 200_000, 300_000, 400_000])
    sampler = NvmlSampler("GPU-aaaa-1111", nvml_module=nvml)
    for _ in range(4):
        sampler.sample()
    assert sampler.means() == pytest.approx({"sys/gpu_util_pct": 25.0, "sys/gpu_power_w": 250.0})
    sampler.reset()
    assert sampler.means() == pytest.approx({"sys/gpu_util_pct": 40.0, "sys/gpu_power_w": 400.0})  # read on demand


def test_nvml_sampler_drops_unsupported_readings():
    sampler = NvmlSampler("h", nvml_module=fake_nvml(util=[55], power_mw=[]))  # power not supported (MIG slice)
    sampler.sample()
    sampler.sample()
    assert sampler.means() == {"sys/gpu_util_pct": 55.0}


def test_nvml_sampler_thread_samples_and_stops():
    nvml = fake_nvml(util=[70], power_mw=[150_000])
    read_util, reads, twice = nvml.nvmlDeviceGetUtilizationRates, [], threading.Event()

    def counted_util(handle):
        reads.append(threading.current_thread().name)
        if len(reads) >= 2:
            twice.set()
        return read_util(handle)

    nvml.nvmlDeviceGetUtilizationRates = counted_util
    sampler = NvmlSampler("h", nvml_module=nvml, interval_s=0.01)
    sampler.start()
    assert twice.wait(60), "the sampler thread never read NVML twice"
    sampler.stop()
    assert set(reads) == {"nvml-sampler"}  # the thread, not means(), took these
    assert not [t for t in threading.enumerate() if t.name == "nvml-sampler"]
    assert sampler.means() == pytest.approx({"sys/gpu_util_pct": 70.0, "sys/gpu_power_w": 150.0})


def test_nvml_sampler_this_process_sm_share():
    me, other = 4242, 5151
    nvml = fake_nvml(util=[90], power_mw=[200_000],
                     proc_util=[[(me, 30), (other, 60)], None, [(other, 80)], [(me, 50), (other, 40)]])
    sampler = NvmlSampler("h", nvml_module=nvml, pid=me)
    for _ in range(4):
        sampler.sample()
    # read 1: 30; read 2: NOT_FOUND, no new sample (skipped); read 3: only the other PID used the SMs (0); read 4: 50
    assert sampler.means()["sys/gpu_proc_util_pct"] == pytest.approx((30 + 0 + 50) / 3)
    seen = [c[1] for c in nvml.calls if c[0] == "proc_util"]
    assert seen == [0, 100_000, 100_000, 200_000]  # each read asks only for samples newer than the last one seen


def test_nvml_sampler_without_per_process_utilisation_drops_only_that_key():
    sampler = NvmlSampler("h", nvml_module=fake_nvml(util=[55], power_mw=[100_000], proc_util=None), pid=1)
    sampler.sample()
    assert sampler.means() == pytest.approx({"sys/gpu_util_pct": 55.0, "sys/gpu_power_w": 100.0})


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


def test_step_times_on_cuda_come_from_events_read_once(scripted_cuda_events):
    durations = [2.0, 4.0, 6.0, 8.0, 100.0]
    for i, d in enumerate(durations):  # begin/end pairs on the device clock, 1000 ms apart
        scripted_cuda_events.clock += [1000.0 * i, 1000.0 * i + d]
    steps = StepTimes(torch.device("cuda:0"))
    for _ in durations:
        steps.begin()
        steps.end(host_s=0.000_01)  # what the host saw: launches only, ignored on CUDA
    assert scripted_cuda_events.synchronized == []  # nothing waits per step
    out = steps.percentiles()
    assert out == pytest.approx({"perf/step_ms_p50": 6.0, "perf/step_ms_p95": 81.6})  # numpy's linear percentile
    assert len(scripted_cuda_events.synchronized) == 1  # one wait, on the epoch's last event
    assert set(scripted_cuda_events.streams) == {("stream", "cuda:0")}


def test_step_times_on_cpu_are_the_host_times():
    steps = StepTimes(None)
    for seconds in (0.010, 0.020, 0.030):
        steps.begin()
        steps.end(host_s=seconds)
    assert steps.percentiles() == pytest.approx({"perf/step_ms_p50": 20.0, "perf/step_ms_p95": 29.0})
    steps.reset()
    assert steps.percentiles() == {}  # no step: no key


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


def _slow_loader(clock: ScriptedClock, n_batches: int, load_s: float):
    for i in range(n_batches):
        clock.sleep(load_s)
        yield torch.full((4,), float(i))


def _run_epoch(telemetry: EpochTelemetry, clock: ScriptedClock, load_s: float, compute_s: float) -> dict[str, float]:
    """Five batches of four samples; each takes ``load_s`` to arrive and ``compute_s`` to train on."""
    telemetry.start_epoch()
    for _ in telemetry.timed(_slow_loader(clock, 5, load_s)):
        clock.sleep(compute_s)
    return telemetry.end_epoch(n_samples=20)


def test_cpu_epoch_has_perf_and_process_metrics_and_no_gpu_keys(monkeypatch, clock):
    def forbidden(*args, **kwargs):
        raise AssertionError("a CUDA/NVML function was called on CPU")

    for name in ("memory_stats", "reset_peak_memory_stats", "max_memory_allocated", "current_device"):
        monkeypatch.setattr(torch.cuda, name, forbidden)
    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlInit=forbidden))
    with EpochTelemetry(torch.device("cpu")) as telemetry:
        metrics = _run_epoch(telemetry, clock, load_s=0.01, compute_s=0.02)
    assert {"perf/epoch_s", "perf/samples_per_s", "perf/data_wait_frac", "sys/rss_gb", "sys/cpu_pct",
            "perf/step_ms_p50", "perf/step_ms_p95"} <= set(metrics)
    assert not [key for key in metrics if key.startswith("sys/gpu")]
    assert metrics["perf/epoch_s"] == pytest.approx(0.15) and metrics["sys/rss_gb"] > 0
    assert metrics["perf/samples_per_s"] == pytest.approx(20 / 0.15)
    assert metrics["perf/step_ms_p50"] == pytest.approx(20.0) and metrics["perf/step_ms_p95"] == pytest.approx(20.0)


def test_cpu_step_times_exclude_the_data_wait(clock):
    with EpochTelemetry("cpu") as telemetry:
        waiting = _run_epoch(telemetry, clock, load_s=0.1, compute_s=0.0)
        computing = _run_epoch(telemetry, clock, load_s=0.0, compute_s=0.03)
    assert waiting["perf/step_ms_p50"] == pytest.approx(0.0)  # with the 100 ms waits counted it would be 100
    assert computing["perf/step_ms_p50"] == pytest.approx(30.0)


def test_data_wait_fraction_follows_where_the_time_goes(clock):
    with EpochTelemetry("cpu") as telemetry:
        waiting = _run_epoch(telemetry, clock, load_s=0.03, compute_s=0.01)
        computing = _run_epoch(telemetry, clock, load_s=0.01, compute_s=0.03)
    assert waiting["perf/data_wait_frac"] == pytest.approx(0.75)
    assert computing["perf/data_wait_frac"] == pytest.approx(0.25)


def test_cpu_pct_counts_this_process_busy_time():
    with EpochTelemetry("cpu") as telemetry:
        telemetry.start_epoch()
        deadline = time.perf_counter() + 0.3
        while time.perf_counter() < deadline:  # spin: ~100 % of one core
            pass
        busy = telemetry.end_epoch(n_samples=1)
        telemetry.start_epoch()
        time.sleep(0.3)
        idle = telemetry.end_epoch(n_samples=1)
    assert busy["sys/cpu_pct"] > idle["sys/cpu_pct"]
    assert "perf/data_wait_frac" not in busy  # no timed() loop: nothing to split


DEVICE_TOTAL = 40 * 2**30  # a recorded 40 GiB device


def _cuda_stats_sequence(monkeypatch, *stats_dicts):
    """memory_stats() answers with the given dicts in turn (the epoch's start, then its end), then the last; the
    device reports its recorded total."""
    answers = list(stats_dicts)
    monkeypatch.setattr(torch.cuda, "memory_stats", lambda device: answers.pop(0) if len(answers) > 1 else answers[0])
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=DEVICE_TOTAL))


def test_cuda_path_with_recorded_stats_and_fake_nvml(monkeypatch, scripted_cuda_events, clock):
    """The GPU branch end to end, without a GPU: recorded allocator stats, a fake NVML picked by UUID, a device
    shared with a second trial's process."""
    me = os.getpid()
    nvml = fake_nvml(util=[80], power_mw=[250_000], processes=[nvml_process(me, 3 * GIB), nvml_process(me + 1, GIB)],
                     proc_util=[[(me, 35), (me + 1, 45)]])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb")  # abbreviated UUID, as CUDA allows
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)
    resets = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: resets.append(device))
    _cuda_stats_sequence(monkeypatch, dict(RECORDED_STATS, num_alloc_retries=1), RECORDED_STATS)
    scripted_cuda_events.clock = [float(t) for t in range(10)]  # 5 steps of 1 ms
    telemetry = EpochTelemetry(torch.device("cuda:0"))
    metrics = _run_epoch(telemetry, clock, load_s=0.0, compute_s=0.0)
    telemetry.close()
    assert resets == [torch.device("cuda:0")]
    assert metrics["sys/gpu_mem_reserved_gb"] == pytest.approx(2.0)
    assert metrics["sys/gpu_mem_peak_reserved_gb"] == pytest.approx(2.5)
    assert metrics["sys/gpu_mem_total_gb"] == pytest.approx(40.0)  # what the peak is read against
    assert metrics["sys/gpu_fragmentation"] == pytest.approx(0.5)
    assert metrics["sys/gpu_alloc_retries"] == 2.0 and metrics["sys/gpu_ooms"] == 0.0
    assert metrics["sys/gpu_util_pct"] == pytest.approx(80.0)
    assert metrics["sys/gpu_power_w"] == pytest.approx(250.0)
    assert metrics["sys/gpu_procs_sharing"] == 2.0
    assert metrics["sys/gpu_proc_mem_gb"] == pytest.approx(3.0)
    assert metrics["sys/gpu_proc_util_pct"] == pytest.approx(35.0)
    assert metrics["perf/step_ms_p50"] == pytest.approx(1.0) and metrics["perf/step_ms_p95"] == pytest.approx(1.0)
    assert ("uuid", "GPU-bbbb") in nvml.calls and nvml.calls[-1] == ("shutdown",)


def test_cuda_in_a_container_leaves_per_process_keys_out(monkeypatch, scripted_cuda_events, clock):
    """NVML lists host PIDs that are not ours: sharing is counted, this process's memory and SM share are absent."""
    nvml = fake_nvml(util=[80], power_mw=[250_000], processes=[nvml_process(70001, 3 * GIB), nvml_process(70002, GIB)],
                     proc_util=[[(70001, 35)]])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    monkeypatch.setattr(telemetry_module, "_torch_device_uuid", lambda index: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: None)
    _cuda_stats_sequence(monkeypatch, RECORDED_STATS)
    scripted_cuda_events.clock = [float(t) for t in range(10)]
    with EpochTelemetry("cuda:0") as telemetry:
        metrics = _run_epoch(telemetry, clock, load_s=0.0, compute_s=0.0)
    assert metrics["sys/gpu_procs_sharing"] == 2.0
    assert "sys/gpu_proc_mem_gb" not in metrics and "sys/gpu_proc_util_pct" not in metrics


def test_cuda_with_expandable_segments_has_no_fragmentation(monkeypatch, scripted_cuda_events, clock):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(util=[50], power_mw=[100_000]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa-1111")
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: None)
    _cuda_stats_sequence(monkeypatch, EXPANDABLE_STATS)
    scripted_cuda_events.clock = [float(t) for t in range(10)]
    with EpochTelemetry("cuda:0") as telemetry:
        metrics = _run_epoch(telemetry, clock, load_s=0.0, compute_s=0.0)
    assert "sys/gpu_fragmentation" not in metrics
    assert metrics["sys/gpu_cache_slack"] == pytest.approx(0.375)
    assert "sys/gpu_proc_mem_gb" not in metrics  # this fake NVML lists no processes: nothing per process


def test_cuda_path_prefers_torch_uuid_over_index(monkeypatch):
    nvml = fake_nvml()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    # CUDA's fastest-first order made torch's cuda:0 the GPU that NVML lists second
    monkeypatch.setattr(telemetry_module, "_torch_device_uuid", lambda index: "GPU-bbbb-2222")
    assert telemetry_module.nvml_handle_for(nvml, 0) == "GPU-bbbb-2222"
    monkeypatch.setattr(telemetry_module, "_torch_device_uuid", lambda index: None)
    assert telemetry_module.nvml_handle_for(nvml, 1) == "GPU-bbbb-2222"  # index fallback: physical 1


def test_missing_nvml_leaves_its_keys_out(monkeypatch, scripted_cuda_events, clock):
    def no_driver():
        raise FakeNvmlError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlInit=no_driver, NVMLError=FakeNvmlError))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: None)
    _cuda_stats_sequence(monkeypatch, RECORDED_STATS)
    scripted_cuda_events.clock = [float(t) for t in range(10)]
    with EpochTelemetry("cuda:0") as telemetry:
        metrics = _run_epoch(telemetry, clock, load_s=0.0, compute_s=0.0)
    assert "sys/gpu_mem_allocated_gb" in metrics
    nvml_keys = ("sys/gpu_util_pct", "sys/gpu_power_w", "sys/gpu_proc_mem_gb", "sys/gpu_procs_sharing",
                 "sys/gpu_proc_util_pct")
    assert not [key for key in nvml_keys if key in metrics]
