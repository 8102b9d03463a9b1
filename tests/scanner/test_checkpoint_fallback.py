"""A truncated latest checkpoint (a kill during its copy, a full disk) does not fail the trial: the trainable goes on
from the newest kept checkpoint that loads, and says so in the trial's log. Nor does a checkpoint Tune deleted just
before a kill while its snapshot still names it. Real checkpoints written by the loop;
Ray's two session calls are stood in for (no Tune session runs here)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from types import SimpleNamespace

from fixtures_loop import KeepingReporter, make_spec
from ray import tune

from scanner.sweep import trial as trial_module
from scanner.sweep.trial import TuneReporter
from scanner.sweep.tuner import stand_ins_for_deleted_checkpoints
from trainables.checkpoint import load_state
from trainables.contract import Artifact
from trainables.loop import train_trial


def test_resume_falls_back_to_the_newest_checkpoint_that_loads(tiny_h5, tmp_path, monkeypatch, capsys):
    kept = tmp_path / "kept"
    train_trial(make_spec(tiny_h5, tmp_path / "scratch", epochs=3), KeepingReporter(kept))
    trial_dir = tmp_path / "trial"
    for epoch in (1, 2, 3):  # Tune's folders of a trial: checkpoint_000000 ... (the latest last)
        shutil.copytree(kept / f"epoch{epoch}", trial_dir / f"checkpoint_{epoch - 1:06d}")
    latest = trial_dir / "checkpoint_000002"
    state = latest / Artifact.STATE
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 3])  # truncated mid-copy

    monkeypatch.setattr(trial_module.tune, "get_checkpoint",
                        lambda: SimpleNamespace(as_directory=lambda: contextlib.nullcontext(str(latest))))
    monkeypatch.setattr(trial_module.tune, "get_context", lambda: SimpleNamespace(get_trial_dir=lambda: str(trial_dir)))
    folder = TuneReporter().resume_from()
    assert folder == trial_dir / "checkpoint_000001" and load_state(folder)["epoch"] == 2
    log = capsys.readouterr().err
    assert f"checkpoint {latest} does not load" in log and f"resuming from {folder}" in log


def test_a_checkpoint_deleted_before_tunes_snapshot_is_stood_in_for_and_the_newest_resumes(tiny_h5, tmp_path,
                                                                                            monkeypatch):
    """Tune deleted checkpoint_000001 when checkpoint_000002 arrived, and was killed before its snapshot stopped
    naming it: Tune's restore hands the trial the missing folder."""
    kept = tmp_path / "kept"
    train_trial(make_spec(tiny_h5, tmp_path / "scratch", epochs=3), KeepingReporter(kept))
    experiment = tmp_path / "experiment"
    trial_dir = experiment / "run_trial_00000"
    shutil.copytree(kept / "epoch3", trial_dir / "checkpoint_000002")
    (experiment / "run_trial_00001" / "checkpoint_000000").mkdir(parents=True)  # a trial with nothing missing
    named = trial_dir / "checkpoint_000001"

    with stand_ins_for_deleted_checkpoints(experiment) as made:
        assert sorted(made) == [trial_dir / "checkpoint_000000", named]
        assert named.is_dir()  # Tune's "does not exist on storage anymore" check passes
        monkeypatch.setattr(trial_module.tune, "get_checkpoint",
                            lambda: SimpleNamespace(as_directory=lambda: contextlib.nullcontext(str(named))))
        monkeypatch.setattr(trial_module.tune, "get_context",
                            lambda: SimpleNamespace(get_trial_dir=lambda: str(trial_dir)))
        folder = TuneReporter().resume_from()
        assert folder == trial_dir / "checkpoint_000002" and load_state(folder)["epoch"] == 3
    assert sorted(p.name for p in trial_dir.iterdir()) == ["checkpoint_000002"]  # the stand-ins are gone
    assert (experiment / "run_trial_00001" / "checkpoint_000000").is_dir()


def test_a_local_checkpoint_is_read_where_tune_keeps_it_not_copied_to_the_temp_folder(tiny_h5, tmp_path,
                                                                                      monkeypatch):
    """Ray's to_directory() copies a checkpoint into the system temp folder and leaves it there: one copy per resumed
    trial. A real local tune.Checkpoint is read in place while the trial holds it."""
    kept = tmp_path / "kept"
    train_trial(make_spec(tiny_h5, tmp_path / "scratch", epochs=1), KeepingReporter(kept))
    trial_dir = tmp_path / "trial"
    shutil.copytree(kept / "epoch1", trial_dir / "checkpoint_000000")
    system_temp = tmp_path / "system-temp"
    system_temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_temp))
    checkpoint = tune.Checkpoint.from_directory(str(trial_dir / "checkpoint_000000"))
    monkeypatch.setattr(trial_module.tune, "get_checkpoint", lambda: checkpoint)
    monkeypatch.setattr(trial_module.tune, "get_context", lambda: SimpleNamespace(get_trial_dir=lambda: str(trial_dir)))
    reporter = TuneReporter()
    with reporter.held:
        assert reporter.resume_from() == trial_dir / "checkpoint_000000"
    assert list(system_temp.iterdir()) == []
