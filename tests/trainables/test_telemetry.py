"""Epoch telemetry: the memory and NVML readings on recorded structures, the step times, and the CPU path for real
(on a scripted clock). The whole CUDA epoch is in test_telemetry_cuda.py."""

from __future__ import annotations

import sys
import threading
import time
import types

import pynvml
import pytest
import torch
from fixtures_telemetry import (
    EXPANDABLE_STATS,
    GIB,
    RECORDED_STATS,
    fake_nvml,
    nvml_process,
    run_epoch,
)

from trainables.telemetry import (
    EpochTelemetry,
    NvmlSampler,
    StepTimes,
    allocator_event_metrics,
    expandable_segments,
    gpu_memory_metrics,
    process_gpu_metrics,
)


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


def test_process_metrics_on_a_device_shared_by_two_trials():
    processes = [nvml_process(4242, 3 * GIB), nvml_process(5151, 5 * GIB)]
    assert process_gpu_metrics(processes, pid=4242) == {"sys/gpu_procs_sharing": 2.0, "sys/gpu_proc_mem_gb": 3.0}
    assert process_gpu_metrics(processes, pid=5151)["sys/gpu_proc_mem_gb"] == 5.0


def test_process_metrics_without_this_pid_guess_nothing():
    container = [nvml_process(918273, 3 * GIB), nvml_process(918274, 5 * GIB)]  # host PIDs seen from a container
    assert process_gpu_metrics(container, pid=12) == {"sys/gpu_procs_sharing": 2.0}
    assert process_gpu_metrics([], pid=12) == {}  # NVML lists nothing while we compute: no count either
    assert process_gpu_metrics([nvml_process(12, None)], pid=12) == {"sys/gpu_procs_sharing": 1.0}


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


def test_cpu_epoch_has_perf_and_process_metrics_and_no_gpu_keys(monkeypatch, clock):
    def forbidden(*args, **kwargs):
        raise AssertionError("a CUDA/NVML function was called on CPU")

    for name in ("memory_stats", "reset_peak_memory_stats", "max_memory_allocated", "current_device"):
        monkeypatch.setattr(torch.cuda, name, forbidden)
    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlInit=forbidden))
    with EpochTelemetry(torch.device("cpu")) as telemetry:
        metrics = run_epoch(telemetry, clock, load_s=0.01, compute_s=0.02)
    assert {"perf/epoch_s", "perf/samples_per_s", "perf/data_wait_frac", "sys/rss_gb", "sys/cpu_pct",
            "perf/step_ms_p50", "perf/step_ms_p95"} <= set(metrics)
    assert not [key for key in metrics if key.startswith("sys/gpu")]
    assert metrics["perf/epoch_s"] == pytest.approx(0.15) and metrics["sys/rss_gb"] > 0
    assert metrics["perf/samples_per_s"] == pytest.approx(20 / 0.15)
    assert metrics["perf/step_ms_p50"] == pytest.approx(20.0) and metrics["perf/step_ms_p95"] == pytest.approx(20.0)


def test_cpu_step_times_exclude_the_data_wait(clock):
    with EpochTelemetry("cpu") as telemetry:
        waiting = run_epoch(telemetry, clock, load_s=0.1, compute_s=0.0)
        computing = run_epoch(telemetry, clock, load_s=0.0, compute_s=0.03)
    assert waiting["perf/step_ms_p50"] == pytest.approx(0.0)  # with the 100 ms waits counted it would be 100
    assert computing["perf/step_ms_p50"] == pytest.approx(30.0)


def test_data_wait_fraction_follows_where_the_time_goes(clock):
    with EpochTelemetry("cpu") as telemetry:
        waiting = run_epoch(telemetry, clock, load_s=0.03, compute_s=0.01)
        computing = run_epoch(telemetry, clock, load_s=0.01, compute_s=0.03)
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
