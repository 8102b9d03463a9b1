"""The trial's device and its physical GPU follow CUDA_VISIBLE_DEVICES; a GPU reservation never trains on CPU
silently. This machine has no CUDA: the "CUDA present" cases switch torch's answer, nothing else."""

from __future__ import annotations

import os
import threading

import pytest
import torch

from trainables.device import (
    ALLOW_CPU_FALLBACK,
    START_BARRIER,
    GpuUnavailable,
    gpu_held,
    nvml_device_uuid_for,
    pick_device,
    wait_at_barrier,
)
from trainables.errors import BadInput


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


@pytest.mark.parametrize(
    "requested,environ,held",
    [
        (True, {}, True),
        (False, {"CUDA_VISIBLE_DEVICES": "3"}, False),  # the caller knows: Ray gave no GPU
        (None, {"CUDA_VISIBLE_DEVICES": "3"}, True),  # Ray lists the GPU it gave
        (None, {"CUDA_VISIBLE_DEVICES": ""}, False),
        (None, {}, False),
    ],
)
def test_gpu_held(requested, environ, held):
    assert gpu_held(requested, environ) is held


def test_a_gpu_trial_without_cuda_fails_in_one_line(capsys):
    assert not torch.cuda.is_available()  # these machines: the real answer, not a switched one
    with pytest.raises(GpuUnavailable) as err:
        pick_device(True, environ={"CUDA_VISIBLE_DEVICES": "2"})
    text = str(err.value)
    assert text.startswith("this trial holds a GPU but CUDA is not available: ")
    assert "\n" not in text and "CUDA_VISIBLE_DEVICES=2" in text and ALLOW_CPU_FALLBACK in text
    assert isinstance(err.value, BadInput)  # `scanner train` prints it as one line, exit 2
    with pytest.raises(GpuUnavailable):
        pick_device(None, environ={"CUDA_VISIBLE_DEVICES": "0"})  # Ray's variable alone is a reservation


def test_the_documented_switch_falls_back_to_cpu_and_says_so(capsys):
    device = pick_device(True, environ={"CUDA_VISIBLE_DEVICES": "1", ALLOW_CPU_FALLBACK: "1"})
    assert device == torch.device("cpu")
    line = capsys.readouterr().out.strip()
    assert line.startswith("scanner: trial device cpu (CUDA_VISIBLE_DEVICES=1;") and f"{ALLOW_CPU_FALLBACK}=1" in line
    with pytest.raises(GpuUnavailable):
        pick_device(True, environ={"CUDA_VISIBLE_DEVICES": "1", ALLOW_CPU_FALLBACK: "yes"})  # only "1" switches


def test_cpu_trials_stay_on_cpu_and_gpu_trials_take_cuda0(monkeypatch, capsys):
    assert pick_device(False, environ={}) == torch.device("cpu")
    assert pick_device(None, environ={"CUDA_VISIBLE_DEVICES": ""}) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device(True, environ={"CUDA_VISIBLE_DEVICES": "3"}) == torch.device("cuda", 0)  # = physical GPU 3
    assert pick_device(False, environ={}) == torch.device("cpu")  # a GPU it did not reserve is another trial's
    assert pick_device(None, environ={}) == torch.device("cuda", 0)  # scanner train: the machine is the user's
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[2] == "scanner: trial device cuda:0 (CUDA_VISIBLE_DEVICES=3)"
    assert lines[4] == "scanner: trial device cuda:0 (CUDA_VISIBLE_DEVICES unset)"


def test_start_barrier_waits_for_the_others_and_leaves_the_device_line(tmp_path):
    (tmp_path / "4242").write_text("scanner: trial device cpu (CUDA_VISIBLE_DEVICES=1)\n")  # a trial already there
    assert wait_at_barrier(f"{tmp_path}:2", "scanner: trial device cpu (CUDA_VISIBLE_DEVICES=0)", timeout_s=60) == 2
    assert (tmp_path / str(os.getpid())).read_text() == "scanner: trial device cpu (CUDA_VISIBLE_DEVICES=0)\n"
    assert not list(tmp_path.glob("timeout-*"))
    assert wait_at_barrier(f"{tmp_path}:3", "line", timeout_s=0.3) == 2  # nobody else comes: it gives up
    assert (tmp_path / f"timeout-{os.getpid()}").read_text() == "2 of 3 arrived\n"  # and says so
    late = threading.Timer(0.5, lambda: (tmp_path / "5151").write_text("a third trial\n"))
    late.start()
    assert wait_at_barrier(f"{tmp_path}:3", "line", timeout_s=600) == 3  # it waited for the late one
    late.join()
    with pytest.raises(BadInput):
        wait_at_barrier("no-count", "line")


def test_pick_device_stops_at_the_barrier_when_asked(tmp_path, capsys):
    environ = {"CUDA_VISIBLE_DEVICES": "", START_BARRIER: f"{tmp_path}:1"}
    assert pick_device(None, environ=environ) == torch.device("cpu")
    assert (tmp_path / str(os.getpid())).read_text().startswith("scanner: trial device cpu")
