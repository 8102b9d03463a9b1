"""Checkpoints are read weights-only: a pickle that would run code is refused before it runs, a truncated or corrupt
state.pt is one clear error, and resume falls back to the newest checkpoint that loads."""

from __future__ import annotations

import os
import pathlib
from pathlib import Path

import numpy as np
import pytest
import torch

from trainables.checkpoint import (load_state, newest_loadable, numpy_reconstruct, read_torch_file, rng_state,
                                   safe_globals, save_state)
from trainables.errors import BadCheckpoint, BadInput
from trainables.models import create_model, load_init
from trainables.trial_model import checkpoint_state


class _Payload:
    """Unpickling this creates a file: the proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _state(model: torch.nn.Module) -> dict:
    return {"model": model.state_dict(), "eval_model": model.state_dict(), "epoch": 1, "rng": rng_state(),
            "config": {"model": "small_cnn_tiny"}, "meta": {"model": "small_cnn_tiny", "views": ["xz", "yz"]}}


def _malicious(folder: Path, marker: Path) -> Path:
    folder.mkdir(parents=True)
    state = _state(create_model("small_cnn_tiny", 2, 3))
    state["rng"] = _Payload(marker)
    torch.save(state, folder / "state.pt")
    return folder


def test_a_pickle_that_runs_code_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    folder = _malicious(tmp_path / "evil", marker)
    with pytest.raises(BadCheckpoint, match="refused, nothing in it was run") as info:
        load_state(folder)
    assert str(folder / "state.pt") in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(BadInput, match="refused"):
        load_init(create_model("small_cnn_tiny", 2, 3), str(folder))  # init: reads through the same function
    assert not marker.exists()


def test_a_real_state_round_trips_weights_only(tmp_path):
    model = create_model("small_cnn_tiny", 2, 3)
    save_state(tmp_path, _state(model))
    state = load_state(tmp_path)
    assert state["rng"]["numpy"][0] == "MT19937" and isinstance(state["rng"]["numpy"][1], np.ndarray)
    assert all(torch.equal(v, state["model"][k]) for k, v in model.state_dict().items())


def test_the_numpy_unpickler_is_pinned():
    """The one private numpy name we reach for: it must rebuild an array, and be in the allow-list."""
    rebuild = numpy_reconstruct()
    assert rebuild in safe_globals()
    assert isinstance(rebuild(np.ndarray, (0,), b"b"), np.ndarray)


def _intact_then_truncated(tmp_path: Path) -> tuple[Path, Path]:
    older, newer = tmp_path / "checkpoint_000001", tmp_path / "checkpoint_000002"
    model = create_model("small_cnn_tiny", 2, 3)
    for folder in (older, newer):
        folder.mkdir()
        save_state(folder, _state(model))
    data = (newer / "state.pt").read_bytes()
    (newer / "state.pt").write_bytes(data[: len(data) // 2])  # a kill during the copy, a full disk
    return older, newer


def test_a_truncated_state_is_one_clear_error(tmp_path):
    _, newer = _intact_then_truncated(tmp_path)
    with pytest.raises(BadCheckpoint, match=r"state.pt: not a weights-only torch checkpoint \((RuntimeError|ValueError)"):
        load_state(newer)
    (tmp_path / "garbage.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(BadCheckpoint, match="garbage.pt"):
        read_torch_file(tmp_path / "garbage.pt")
    with pytest.raises(BadCheckpoint, match="not found"):
        load_state(tmp_path / "nothing-here")


def test_newest_loadable_skips_truncated_and_refused_checkpoints(tmp_path):
    older, newer = _intact_then_truncated(tmp_path)
    evil = _malicious(tmp_path / "checkpoint_000003", tmp_path / "pwned")
    found, skipped = newest_loadable([evil, newer, older])
    assert found == older
    assert [folder for folder, _ in skipped] == [evil, newer]
    assert "refused" in skipped[0][1] and "not a weights-only torch checkpoint" in skipped[1][1]
    assert newest_loadable([newer]) == (None, [(newer, skipped[1][1])])
    assert not (tmp_path / "pwned").exists()


def test_a_dict_without_model_weights_is_not_a_training_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "state.pt")
    with pytest.raises(BadCheckpoint, match="no 'model' entry"):
        load_state(tmp_path)


def _one_line_naming(exc: BaseException, path: Path, why: str) -> None:
    text = str(exc)
    assert text.startswith(f"{path}: cannot read the checkpoint ({why})") and "fix:" in text and "\n" not in text


def test_a_path_the_system_will_not_look_at_is_one_clear_error_and_the_resume_falls_back(tmp_path):
    """stat() itself fails (here: a name too long for the file system; alike: a folder without permission, a dead
    mount): the checkpoint is unreadable, not a crash, and the sweep's fallback moves on to the older one."""
    older, _ = _intact_then_truncated(tmp_path)
    unreachable = tmp_path / ("x" * 300)
    with pytest.raises(BadCheckpoint) as info:
        load_state(unreachable)
    _one_line_naming(info.value, unreachable, "File name too long")
    assert newest_loadable([unreachable, older]) == (older, [(unreachable, str(info.value))])
    with pytest.raises(BadInput, match=r"^init '.*': .*cannot read the checkpoint \(File name too long\)"):
        load_init(create_model("small_cnn_tiny", 2, 3), str(unreachable))
    with pytest.raises(BadCheckpoint, match="cannot read the checkpoint"):
        checkpoint_state(unreachable)


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_an_io_error_while_reading_says_so_not_that_the_file_is_corrupt():
    """Reading /proc/self/mem from offset 0 is a real EIO: the disk (or here the kernel) failed, the file may be
    fine, so the fix is not "use an intact checkpoint"."""
    mem = Path("/proc/self/mem")
    with pytest.raises(BadCheckpoint) as info:
        read_torch_file(mem)
    _one_line_naming(info.value, mem, "Input/output error")


def test_a_checkpoint_without_read_permission_says_so(tmp_path):
    save_state(tmp_path, _state(create_model("small_cnn_tiny", 2, 3)))
    (tmp_path / "state.pt").chmod(0)
    if os.access(tmp_path / "state.pt", os.R_OK):  # root (as root, run under: setpriv --bounding-set=-dac_override)
        pytest.skip("this user reads files without read permission")
    with pytest.raises(BadCheckpoint) as info:
        load_state(tmp_path)
    _one_line_naming(info.value, tmp_path / "state.pt", "Permission denied")
