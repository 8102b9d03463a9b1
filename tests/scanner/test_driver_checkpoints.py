"""The driver's checkpoint callback without Ray: Tune's checkpoints as folders with or without an epoch mark, the
driver's writer on a real sqlite store. A checkpoint that cannot be judged is skipped, never a crash inside Tune."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import yaml

from scanner.sweep.driver import SweepDriver
from scanner.sweep.progress import ProgressLine
from scanner.sweep.results import EPOCH_KEY, EPOCH_MARK, FAILURE_KEY, IS_BEST_KEY, becomes_best, read_mark, write_mark
from scanner.sweep.states import SweepInfo, TrialState
from search_spaces import load_space
from trainables.checkpoint import write_confusion
from trainables.contract import Status, Tag
from trainables.reporting import oom_record

SPACE = {"name": "marks", "task": "classification", "data": {"path": "events.h5"},
         "objective": {"metric": "val/accuracy", "mode": "max"}, "budget": {"trials": 4, "max_epochs": 2},
         "space": {"lr": {"float": [1e-4, 1e-1], "log": True}}}


@pytest.fixture
def driver(sqlite_store, tmp_path):
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
    space = load_space(tmp_path / "space.yaml", require_data=False)
    info = SweepInfo("marks", "i1", sqlite_store.experiment_id, space, None, None, None, None, {},
                     str(tmp_path / "configs"), log_checkpoints=True)
    writer = sqlite_store.writer()
    driver = SweepDriver(info, writer, ProgressLine(space.objective.metric, space.objective.mode, quiet=True))
    for trial_id, replica_of in (("orig", None), ("rep", "orig")):
        sqlite_store.start_trial(writer, trial_id)
        driver.trials[trial_id] = TrialState(trial_id, 1, False, f"t01 {trial_id}", replica_of=replica_of)
    yield driver
    writer.close(timeout_s=60, say=False)


def checkpoint(tmp_path, name: str, mark: str | None):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "state.pt").write_bytes(b"weights")
    if mark is not None:
        (folder / EPOCH_MARK).write_text(mark)
    return SimpleNamespace(path=str(folder))


@pytest.mark.parametrize("mark", [None, "", '{"epoch": 2, "is_be', '[2, true]', '{"is_best": true}'])
def test_a_replica_checkpoint_without_a_readable_mark_is_skipped(driver, sqlite_store, tmp_path, mark):
    """Missing, cut short, or not a mark at all: the replica keeps no best and its run gets no checkpoint tag."""
    driver.on_checkpoint(0, [], SimpleNamespace(trial_id="rep"), checkpoint(tmp_path, "ck", mark))
    state = driver.trials["rep"]
    assert state.last_checkpoint == str(tmp_path / "ck")
    assert state.best_checkpoint is None and state.best_epoch is None
    assert driver.writer.flush(timeout_s=60)
    run = sqlite_store.client.get_run(driver.writer.run_id("rep"))
    assert "scan.checkpoint" not in run.data.tags


def test_a_replica_takes_its_latest_marked_checkpoint_and_a_search_trial_its_best(driver, sqlite_store, tmp_path):
    not_best = '{"epoch": 2, "is_best": false}'
    driver.on_checkpoint(0, [], SimpleNamespace(trial_id="rep"), checkpoint(tmp_path, "rep2", not_best))
    driver.on_checkpoint(0, [], SimpleNamespace(trial_id="orig"), checkpoint(tmp_path, "orig2", not_best))
    assert (driver.trials["rep"].best_checkpoint, driver.trials["rep"].best_epoch) == (str(tmp_path / "rep2"), 2)
    assert driver.trials["orig"].best_checkpoint is None
    assert driver.writer.flush(timeout_s=60)
    run_id = driver.writer.run_id("rep")
    assert sqlite_store.client.get_run(run_id).data.tags["scan.checkpoint"] == str(tmp_path / "rep2")
    assert "checkpoint/state.pt" in {a.path for a in sqlite_store.client.list_artifacts(run_id, "checkpoint")}


def test_a_mark_reads_back_and_only_a_marked_checkpoint_is_judged(tmp_path):
    write_mark(tmp_path, 3, True)
    assert read_mark(tmp_path) == {"epoch": 3, "is_best": True}
    assert becomes_best(read_mark(tmp_path), replica=False) and becomes_best(read_mark(tmp_path), replica=True)
    assert not becomes_best({"epoch": 3, "is_best": False}, replica=False)
    assert becomes_best({"epoch": 3, "is_best": False}, replica=True)
    assert not becomes_best(None, replica=True) and not becomes_best(None, replica=False)


def test_a_trial_that_fails_after_halving_its_batch_keeps_the_oom_tags(driver, sqlite_store):
    """Out of memory again after two halvings, before any epoch of the smallest batch: the failure report is the
    only one that says how far the halving went, and the run must say it too."""
    failure = {"val/accuracy": float("nan"), EPOCH_KEY: 1, **oom_record(2, 8),
               FAILURE_KEY: "out of memory at epoch 1 step 3 (after 2 halvings of the batch); try batch_size <= 4"}
    driver.on_trial_result(0, [], SimpleNamespace(trial_id="orig"), failure)
    assert driver.trials["orig"].failure.startswith("out of memory at epoch 1")
    assert driver.writer.flush(timeout_s=60)
    tags = sqlite_store.client.get_run(driver.writer.run_id("orig")).data.tags
    assert (tags[Tag.OOM_RETRIES], tags[Tag.BATCH_SIZE_FINAL]) == ("2", "8")


def test_a_retry_says_whether_it_starts_from_a_checkpoint_or_from_the_start(driver, tmp_path, capsys):
    driver.progress.quiet = False
    trial = SimpleNamespace(trial_id="orig", checkpoint=None)
    driver.on_trial_recover(0, [], trial)
    driver.on_checkpoint(0, [], trial, checkpoint(tmp_path, "ck", '{"epoch": 1}'))
    driver.on_trial_recover(0, [], trial)
    # after a resume this driver saw no checkpoint, but Tune's trial holds one
    driver.on_trial_recover(0, [], SimpleNamespace(trial_id="rep", checkpoint=checkpoint(tmp_path, "rk", None)))
    said = [line.split("] ", 1)[1] for line in capsys.readouterr().out.splitlines() if "retrying" in line]
    orig, rep = driver.trials["orig"].label, driver.trials["rep"].label
    assert said == [f"trial {orig} died; retrying from the start (it had no checkpoint yet)",
                    f"trial {orig} died; retrying from its last epoch checkpoint",
                    f"trial {rep} died; retrying from its last epoch checkpoint"], said


def test_a_trial_at_chance_that_predicts_one_class_is_flagged_on_its_run_and_in_the_console(driver, sqlite_store,
                                                                                          tmp_path, capsys):
    """Its training loss fell by half, its best validation accuracy sits at the majority-class reference, and its
    best epoch's confusion matrix has one column: the three flags, on the run's scan.flags and in one line."""
    driver.info.reference = {"ref/val/accuracy": 0.40, "ref/val/accuracy_err": 0.02}
    driver.progress.quiet = False
    trial = SimpleNamespace(trial_id="orig")
    for epoch, loss, accuracy in ((1, 1.0, 0.39), (2, 0.5, 0.38)):
        metrics = {"train/loss": loss, "val/accuracy": accuracy, "best/val/accuracy": 0.39,
                   "best/val/accuracy_err": 0.02, "best/epoch": 1.0}
        driver.on_trial_result(0, [], trial, {**metrics, EPOCH_KEY: epoch, IS_BEST_KEY: epoch == 1})
        if epoch == 1:
            folder = checkpoint(tmp_path, "best", '{"epoch": 1, "is_best": true}')
            write_confusion(tmp_path / "best", ["NC", "nueCC", "numuCC"], [[0, 40, 0], [0, 39, 0], [0, 21, 0]])
            driver.on_checkpoint(0, [], trial, folder)
    state = driver.trials["orig"]
    state.epochs = state.max_epochs
    driver.finish(state, Status.COMPLETED)
    assert driver.writer.flush(timeout_s=60)
    tags = sqlite_store.client.get_run(driver.writer.run_id("orig")).data.tags
    assert tags[Tag.FLAGS] == "chance,single_class,below_reference"
    said = [line for line in capsys.readouterr().out.splitlines() if "flagged" in line]
    assert len(said) == 1 and said[0].endswith("flagged: chance, single_class, below_reference (see docs/mlflow.md, "
                                               "scan.flags)"), said
