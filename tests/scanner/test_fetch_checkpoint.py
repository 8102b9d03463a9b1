"""A run's checkpoint fetched from its MLflow artifact when its folder is not here (a real sqlite store): never a
partial folder taken as whole, whether a download died half-way or two commands fetched at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures_tracking import fresh_store
from mlflow.tracking import MlflowClient

from scanner import targets
from scanner.targets import resolve_run
from trainables.errors import BadInput

STATE = bytes(range(256)) * 256  # 64 KiB: a half of it is a truncated state.pt


class Killed(BaseException):
    """The process dies in the middle of a download (nothing of ours catches it)."""


@pytest.fixture
def carried(tmp_path, monkeypatch) -> tuple[str, str, Path]:
    """A run whose checkpoint folder is gone but which carries its state.pt as an artifact; the cwd holds scans/."""
    uri = fresh_store(tmp_path / "store")
    client = MlflowClient(uri)
    experiment = client.create_experiment("far", artifact_location=(tmp_path / "store" / "artifacts").as_uri())
    logged = tmp_path / "elsewhere" / "checkpoint_000001"
    logged.mkdir(parents=True)
    (logged / "state.pt").write_bytes(STATE)
    run_id = client.create_run(experiment, tags={"scan.checkpoint": str(logged), "scan.trial_id": "t1"}).info.run_id
    client.log_artifact(run_id, str(logged / "state.pt"), "checkpoint")
    (logged / "state.pt").unlink()
    logged.rmdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return uri, run_id, work / "scans" / "_fetched"


def fetched_state(uri: str, run_id: str) -> bytes:
    return (Path(resolve_run(f"run:{run_id}", uri).checkpoint) / "state.pt").read_bytes()


def test_the_carried_checkpoint_is_fetched_once_into_its_own_folder(carried):
    uri, run_id, fetched = carried
    resolved = resolve_run(f"run:{run_id}", uri)
    assert resolved.checkpoint == str(fetched / run_id / "checkpoint")
    assert (Path(resolved.checkpoint) / "state.pt").read_bytes() == STATE
    assert [p.name for p in fetched.iterdir()] == [run_id]  # no download folder left beside it
    assert fetched_state(uri, run_id) == STATE


def test_a_partial_folder_left_under_the_runs_name_is_fetched_again(carried):
    """What a download killed half-way used to leave: the state file there, cut short."""
    uri, run_id, fetched = carried
    partial = fetched / run_id / "checkpoint"
    partial.mkdir(parents=True)
    (partial / "state.pt").write_bytes(STATE[:len(STATE) // 2])
    assert fetched_state(uri, run_id) == STATE
    assert [p.name for p in fetched.iterdir()] == [run_id]


def test_a_download_that_dies_half_way_leaves_nothing_taken_as_whole(carried, monkeypatch):
    uri, run_id, fetched = carried

    def dies_half_way(self, run_id, path, dst_path=None):
        folder = Path(dst_path) / path
        folder.mkdir(parents=True)
        (folder / "state.pt").write_bytes(STATE[:len(STATE) // 2])
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(MlflowClient, "download_artifacts", dies_half_way)
        with pytest.raises(Killed):
            resolve_run(f"run:{run_id}", uri)
    assert not (fetched / run_id).exists()
    assert fetched_state(uri, run_id) == STATE


def test_two_commands_fetching_at_once_keep_the_first_whole_folder_and_no_other(carried, monkeypatch):
    """The other command finishes while ours downloads: its folder stays as it is, ours is removed."""
    uri, run_id, fetched = carried
    download = MlflowClient.download_artifacts
    theirs: list[int] = []  # the inode of the state file the other command put in place

    def another_command_first(self, run_id, path, dst_path=None):
        if not theirs:
            monkeypatch.setattr(MlflowClient, "download_artifacts", download)
            theirs.append((Path(resolve_run(f"run:{run_id}", uri).checkpoint) / "state.pt").stat().st_ino)
        return download(self, run_id, path, dst_path)

    monkeypatch.setattr(MlflowClient, "download_artifacts", another_command_first)
    ours = Path(resolve_run(f"run:{run_id}", uri).checkpoint) / "state.pt"
    assert theirs and ours.stat().st_ino == theirs[0]
    assert ours.read_bytes() == STATE
    assert [p.name for p in fetched.iterdir()] == [run_id]


def test_a_run_that_carries_no_checkpoint_is_one_line(carried):
    uri, run_id, _ = carried
    client = MlflowClient(uri)
    bare = client.create_run(client.get_run(run_id).info.experiment_id,
                             tags={"scan.checkpoint": "/nowhere/checkpoint_000001"}).info.run_id
    with pytest.raises(BadInput, match=f"'run:{bare}': checkpoint /nowhere/checkpoint_000001 of run {bare} is not on "
                                       "this machine and the run carries none"):
        targets.resolve_run(f"run:{bare}", uri)
