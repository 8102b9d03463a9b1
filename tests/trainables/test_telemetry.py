"""Epoch telemetry: the CPU path for real, the GPU paths on recorded structures and fake NVML modules."""

from __future__ import annotations

import sys
import time
import types

import pytest
import torch

import trainables.telemetry as telemetry_module
from trainables.telemetry import EpochTelemetry, NvmlSampler, gpu_memory_metrics, nvml_device_uuid_for

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
    "num_alloc_retries": 0,
    "num_device_alloc": 31,
    "num_device_free": 0,
    "num_ooms": 0,
    "num_sync_all_streams": 0,
    "requested_bytes.all.current": 1340000000,
    "reserved_bytes.all.current": 2147483648,
    "reserved_bytes.all.peak": 2147483648,
    "segment.all.current": 31,
}


def test_gpu_memory_metrics_on_recorded_stats():
    metrics = gpu_memory_metrics(RECORDED_STATS)
    assert metrics == pytest.approx(
        {
            "sys/gpu_mem_allocated_gb": 1.25,
            "sys/gpu_mem_reserved_gb": 2.0,
            "sys/gpu_mem_peak_gb": 1.75,
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
    "index,visible,expected",
    [
        (0, "2,3", 2),
        (1, "2,3", 3),
        (1, " 2 , 3 ", 3),
        (0, "GPU-abc,GPU-def", "GPU-abc"),
        (1, "GPU-abc,GPU-def", "GPU-def"),
        (0, "MIG-12ab", "MIG-12ab"),
        (1, None, 1),
    ],
)
def test_nvml_device_uuid_for(index, visible, expected):
    assert nvml_device_uuid_for(index, visible) == expected


@pytest.mark.parametrize("index,visible", [(2, "2,3"), (0, ""), (0, "gpu0")])
def test_nvml_device_uuid_for_rejects_devices_not_visible(index, visible):
    with pytest.raises(ValueError):
        nvml_device_uuid_for(index, visible)


class FakeNvmlError(Exception):
    pass


def fake_nvml(util=(), power_mw=(), uuids=("GPU-aaaa-1111", "GPU-bbbb-2222")):
    """A pynvml stand-in: handles are UUID strings; readings pop from the given sequences, then repeat the last."""
    util, power_mw = list(util), list(power_mw)
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

    return types.SimpleNamespace(
        NVMLError=FakeNvmlError,
        calls=calls,
        nvmlInit=lambda: calls.append(("init",)),
        nvmlShutdown=lambda: calls.append(("shutdown",)),
        nvmlDeviceGetCount=lambda: len(uuids),
        nvmlDeviceGetHandleByIndex=lambda i: uuids[i],
        nvmlDeviceGetHandleByUUID=by_uuid,
        nvmlDeviceGetUUID=lambda handle: handle,
        nvmlDeviceGetUtilizationRates=lambda handle: types.SimpleNamespace(gpu=next_of(util), memory=0),
        nvmlDeviceGetPowerUsage=lambda handle: next_of(power_mw),
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
    sampler = NvmlSampler("h", nvml_module=fake_nvml(util=[70], power_mw=[150_000]), interval_s=0.01)
    sampler.start()
    time.sleep(0.2)
    sampler.stop()
    assert sampler._counts["sys/gpu_util_pct"] >= 2  # the thread, not means(), took these
    assert sampler.means() == pytest.approx({"sys/gpu_util_pct": 70.0, "sys/gpu_power_w": 150.0})
    assert sampler._thread is None


def _sleepy_loader(n_batches: int, sleep_s: float):
    for i in range(n_batches):
        time.sleep(sleep_s)
        yield torch.full((4,), float(i))


def _run_epoch(telemetry: EpochTelemetry, load_s: float, compute_s: float) -> dict[str, float]:
    telemetry.start_epoch()
    for _ in telemetry.timed(_sleepy_loader(5, load_s)):
        time.sleep(compute_s)
    return telemetry.end_epoch(n_samples=20)


def test_cpu_epoch_has_perf_and_process_metrics_and_no_gpu_keys(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a CUDA/NVML function was called on CPU")

    for name in ("memory_stats", "reset_peak_memory_stats", "max_memory_allocated", "current_device"):
        monkeypatch.setattr(torch.cuda, name, forbidden)
    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlInit=forbidden))
    with EpochTelemetry(torch.device("cpu")) as telemetry:
        metrics = _run_epoch(telemetry, load_s=0.01, compute_s=0.0)
    assert {"perf/epoch_s", "perf/samples_per_s", "perf/data_wait_frac", "sys/rss_gb", "sys/cpu_pct"} <= set(metrics)
    assert not [key for key in metrics if key.startswith("sys/gpu")]
    assert metrics["perf/epoch_s"] >= 0.05 and metrics["sys/rss_gb"] > 0
    assert 0 < metrics["perf/samples_per_s"] <= 20 / 0.05


def test_data_wait_fraction_follows_where_the_time_goes():
    with EpochTelemetry("cpu") as telemetry:
        waiting = _run_epoch(telemetry, load_s=0.03, compute_s=0.0)
        computing = _run_epoch(telemetry, load_s=0.0, compute_s=0.03)
    assert waiting["perf/data_wait_frac"] > 0.5
    assert computing["perf/data_wait_frac"] < 0.5


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


def test_cuda_path_with_recorded_stats_and_fake_nvml(monkeypatch):
    """The GPU branch end to end, without a GPU: recorded allocator stats, a fake NVML picked by UUID."""
    nvml = fake_nvml(util=[80], power_mw=[250_000])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb")  # abbreviated UUID, as CUDA allows
    resets = []
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: resets.append(device))
    monkeypatch.setattr(torch.cuda, "memory_stats", lambda device: RECORDED_STATS)
    telemetry = EpochTelemetry(torch.device("cuda:0"))
    metrics = _run_epoch(telemetry, load_s=0.0, compute_s=0.0)
    telemetry.close()
    assert resets == [torch.device("cuda:0")]
    assert metrics["sys/gpu_mem_reserved_gb"] == pytest.approx(2.0)
    assert metrics["sys/gpu_fragmentation"] == pytest.approx(0.5)
    assert metrics["sys/gpu_util_pct"] == pytest.approx(80.0)
    assert metrics["sys/gpu_power_w"] == pytest.approx(250.0)
    assert ("uuid", "GPU-bbbb") in nvml.calls and nvml.calls[-1] == ("shutdown",)


def test_cuda_path_prefers_torch_uuid_over_index(monkeypatch):
    nvml = fake_nvml()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    # CUDA's fastest-first order made torch's cuda:0 the GPU that NVML lists second
    monkeypatch.setattr(telemetry_module, "_torch_device_uuid", lambda index: "GPU-bbbb-2222")
    assert telemetry_module.nvml_handle_for(nvml, 0) == "GPU-bbbb-2222"
    monkeypatch.setattr(telemetry_module, "_torch_device_uuid", lambda index: None)
    assert telemetry_module.nvml_handle_for(nvml, 1) == "GPU-bbbb-2222"  # index fallback: physical 1


def test_missing_nvml_leaves_its_keys_out(monkeypatch):
    def no_driver():
        raise FakeNvmlError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlInit=no_driver, NVMLError=FakeNvmlError))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device: None)
    monkeypatch.setattr(torch.cuda, "memory_stats", lambda device: RECORDED_STATS)
    with EpochTelemetry("cuda:0") as telemetry:
        metrics = _run_epoch(telemetry, load_s=0.0, compute_s=0.0)
    assert "sys/gpu_mem_allocated_gb" in metrics
    assert "sys/gpu_util_pct" not in metrics and "sys/gpu_power_w" not in metrics
