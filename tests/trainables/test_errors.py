"""Which trial errors recur on a retry (is_recurring), and NaN/inf input pixels: one line naming file and event,
also from a DataLoader worker, ending the trial before any training step uses them."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from fixtures_data import tiny_arrays
from fixtures_loop import make_spec
from trainables.config import DataConfig
from trainables.data import make_loader
from trainables.errors import BadCheckpoint, BadInput, NonFiniteInput, TrialDiverged, is_recurring
from trainables.loop import train_trial
from trainables.reporting import MemoryReporter

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _raised(fn) -> BaseException:
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001  the test wants the exception object itself
        return exc
    raise AssertionError("nothing was raised")


def _shape_mismatch() -> None:
    torch.nn.Linear(4, 2)(torch.zeros(3, 5))


def _channel_mismatch() -> None:
    torch.nn.Conv2d(2, 4, 3)(torch.zeros(1, 3, 8, 8))


def _weights_mismatch() -> None:
    torch.nn.Linear(4, 2).load_state_dict(torch.nn.Linear(5, 2).state_dict())


@pytest.mark.parametrize("make", [
    lambda: _raised(lambda: __import__("no_such_module_anywhere")),
    lambda: BadInput("data.path: not found"),
    lambda: BadCheckpoint("state.pt: truncated"),
    lambda: NonFiniteInput("file.h5: event 7 has NaN/inf pixels"),
    lambda: TrialDiverged("training loss became nan"),
    lambda: _raised(_shape_mismatch),
    lambda: _raised(_channel_mismatch),
    lambda: _raised(_weights_mismatch),
    lambda: TypeError("unexpected keyword argument"),
], ids=["import", "bad-input", "bad-checkpoint", "nan-input", "diverged", "linear-shape", "conv-channels",
        "state-dict-size", "type-error"])
def test_errors_that_cannot_change_on_retry_recur(make):
    assert is_recurring(make())


@pytest.mark.parametrize("exc", [
    OSError(28, "No space left on device"),
    ConnectionError("tracking server unreachable"),
    MemoryError(),
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("CUDA error: an illegal memory access was encountered"),
    KeyboardInterrupt(),
], ids=["disk-full", "network", "host-memory", "cuda-oom", "cuda-error", "interrupt"])
def test_errors_of_the_machine_do_not_recur(exc):
    assert not is_recurring(exc)


def test_the_cause_of_a_wrapped_error_decides():
    try:
        try:
            raise ImportError("cannot import name 'baseline_config' from 'search_spaces' (unknown location)")
        except ImportError as inner:
            raise RuntimeError("trial failed") from inner
    except RuntimeError as outer:
        assert is_recurring(outer)


def test_a_worker_traceback_becomes_the_one_line_again():
    message = "f.h5: event 7 of dataset 'images' has NaN/inf pixels; fix: drop it"
    wrapped = ("Caught NonFiniteInput in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 1, in <module>\n'
               f"trainables.errors.NonFiniteInput: {message}\n")
    assert str(NonFiniteInput(wrapped)) == message
    assert str(pickle.loads(pickle.dumps(NonFiniteInput(message)))) == message


def _file_with_nan(write_h5, event: int, value: float):
    arrays = tiny_arrays(n=120, hw=16)
    arrays["images"][event, 1, 3, 4] = value
    split = np.zeros(120, dtype=np.uint8)
    split[100:] = 1
    return write_h5("nan.h5", attrs={"class_names": ["NC", "nueCC", "numuCC"]}, split=split, **arrays)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_nan_pixel_names_the_file_and_the_event_index(write_h5, workers):
    path = _file_with_nan(write_h5, event=57, value=np.nan)  # middle of the file: the cheap open check misses it
    loader = make_loader(DataConfig(path=str(path)), "classification", "train", 16, workers, True, 0)
    with pytest.raises(NonFiniteInput) as info:
        for _ in loader:
            pass
    text = str(info.value)
    assert text.startswith(f"{path}: event 57 of dataset 'images' has NaN/inf pixels") and "\n" not in text


def test_an_inf_pixel_fails_the_trial_at_once_with_its_reason(write_h5, tmp_path):
    path = _file_with_nan(write_h5, event=61, value=np.inf)
    reporter = MemoryReporter()
    outcome = train_trial(make_spec(path, tmp_path, epochs=2, num_workers=2, batch_size=16), reporter)
    assert outcome.status == "failed" and outcome.epochs == 1 and reporter.history == []
    assert outcome.failure.startswith(f"{path}: event 61 of dataset 'images' has NaN/inf pixels")
    assert "lower lr" not in outcome.failure
