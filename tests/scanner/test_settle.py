"""Closing the runs a resumed sweep's Tune never heard of, on a real sqlite MLflow store through the real writer."""

from __future__ import annotations

from scanner.sweep.settle import ORPHAN, close_leftovers
from trainables.contract import Status, Tag

INSTANCE = "20261203-000000-abcdef"


def _trial(store, writer, key: str, status: str, ended: str | None, failure: str | None = None) -> str:
    tags = {Tag.INSTANCE: INSTANCE, Tag.STATUS: status, **({Tag.FAILURE: failure} if failure else {})}
    store.start_trial(writer, key, **tags)
    if ended:
        writer.end_run(key, ended)
    return key


def test_every_run_tune_never_recorded_ends_killed_once_and_recovered_runs_keep_their_failure_as_history(
        sqlite_store):
    writer = sqlite_store.writer()
    _trial(sqlite_store, writer, "running", Status.RUNNING, None)
    _trial(sqlite_store, writer, "failed", Status.FAILED, "FAILED", "no space left on device")
    # finished before the full disk, but Tune's last whole state is older: Tune searches it again
    _trial(sqlite_store, writer, "finished", Status.COMPLETED, "FINISHED")
    _trial(sqlite_store, writer, "recovered", Status.COMPLETED, "FINISHED", "interrupted by the user")
    _trial(sqlite_store, writer, "known", Status.COMPLETED, "FINISHED")
    assert writer.flush(30)
    ids = writer.run_ids()

    known = {"recovered", "known"}
    for _ in range(2):  # a second resume closes nothing twice
        close_leftovers(writer, sqlite_store.experiment_id, INSTANCE, known)
        assert writer.flush(30)
    writer.close()

    runs = {key: sqlite_store.client.get_run(ids[key]) for key in ids}
    for key in ("running", "failed", "finished"):
        assert runs[key].info.status == "KILLED", key
        assert runs[key].data.tags[Tag.FAILURE] == ORPHAN and runs[key].data.tags[Tag.STATUS] == Status.FAILED
    assert runs["failed"].data.tags[Tag.FAILURE_HISTORY] == "no space left on device"
    assert Tag.FAILURE_HISTORY not in runs["finished"].data.tags
    assert runs["recovered"].info.status == "FINISHED" and Tag.FAILURE not in runs["recovered"].data.tags
    assert runs["recovered"].data.tags[Tag.FAILURE_HISTORY] == "interrupted by the user"
    assert runs["known"].info.status == "FINISHED" and runs["known"].data.tags[Tag.STATUS] == Status.COMPLETED
