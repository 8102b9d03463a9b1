"""A whole epoch of telemetry on the CUDA path without a GPU: recorded memory_stats, a fake pynvml, CUDA events on a
scripted device clock. Every GPU key is there on CUDA, and a key NVML cannot give is absent, never 0."""

from __future__ import annotations

import os
import sys
import types

import pynvml
import pytest
import torch
from fixtures_telemetry import (
    EXPANDABLE_STATS,
    GIB,
    RECORDED_STATS,
    FakeNvmlError,
    cuda_stats_sequence,
    fake_nvml,
    nvml_process,
    run_epoch,
)

import trainables.telemetry as telemetry_module
from trainables.telemetry import EpochTelemetry


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
    cuda_stats_sequence(monkeypatch, dict(RECORDED_STATS, num_alloc_retries=1), RECORDED_STATS)
    scripted_cuda_events.clock = [float(t) for t in range(10)]  # 5 steps of 1 ms
    telemetry = EpochTelemetry(torch.device("cuda:0"))
    metrics = run_epoch(telemetry, clock, load_s=0.0, compute_s=0.0)
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
    cuda_stats_sequence(monkeypatch, RECORDED_STATS)
    scripted_cuda_events.clock = [float(t) for t in range(10)]
    with EpochTelemetry("cuda:0") as telemetry:
        metrics = run_epoch(telemetry, clock, load_s=0.0, compute_s=0.0)
    assert metrics["sys/gpu_procs_sharing"] == 2.0
    assert "sys/gpu_proc_mem_gb" not in metrics and "sys/gpu_proc_util_pct" not in metrics


def test_cuda_with_expandable_segments_has_no_fragmentation(monkeypatch, scripted_cuda_events, clock):
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(util=[50], power_mw=[100_000]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa-1111")
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: None)
    cuda_stats_sequence(monkeypatch, EXPANDABLE_STATS)
    scripted_cuda_events.clock = [float(t) for t in range(10)]
    with EpochTelemetry("cuda:0") as telemetry:
        metrics = run_epoch(telemetry, clock, load_s=0.0, compute_s=0.0)
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
    cuda_stats_sequence(monkeypatch, RECORDED_STATS)
    scripted_cuda_events.clock = [float(t) for t in range(10)]
    with EpochTelemetry("cuda:0") as telemetry:
        metrics = run_epoch(telemetry, clock, load_s=0.0, compute_s=0.0)
    assert "sys/gpu_mem_allocated_gb" in metrics
    nvml_keys = ("sys/gpu_util_pct", "sys/gpu_power_w", "sys/gpu_proc_mem_gb", "sys/gpu_procs_sharing",
                 "sys/gpu_proc_util_pct")
    assert not [key for key in nvml_keys if key in metrics]
