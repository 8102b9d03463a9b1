"""Tune's state files kept whole: a truncated file (a full disk during Tune's copy) is found, the last whole set is
kept as one zip only once it stopped changing, and a resume puts it back instead of letting Tune start over."""

from __future__ import annotations

import json
import os
import pickle
import zipfile

import pytest

from fixtures_faults import fill, small_disk
from scanner.sweep.tune_state import StateKeeper, keep, kept_copy, put_back_if_damaged, reads_whole
from trainables.errors import BadInput


def tune_files(experiment, stamp="2026-12-02_10-00-00", trials=3):
    """The files Tune writes at the top of its experiment folder, as Tune names them."""
    experiment.mkdir(parents=True, exist_ok=True)
    (experiment / f"experiment_state-{stamp}.json").write_text(json.dumps({"trial_data": list(range(trials))}))
    (experiment / f"search_gen_state-{stamp}.json").write_bytes(pickle.dumps({"counter": trials}))  # a pickle, too
    (experiment / f"searcher-state-{stamp}.pkl").write_bytes(pickle.dumps({"suggested": list(range(trials))}))
    (experiment / "tuner.pkl").write_bytes(pickle.dumps({"name": "tune"}))
    (experiment / ".validate_storage_marker").write_text("")
    (experiment / f"run_trial_{trials}").mkdir(exist_ok=True)
    return experiment


def truncate(path, keep_bytes=None):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep_bytes is None else keep_bytes])


def test_a_truncated_json_or_pickle_does_not_read_whole_and_a_whole_one_does(tmp_path):
    experiment = tune_files(tmp_path / "tune")
    names = ["experiment_state-2026-12-02_10-00-00.json", "searcher-state-2026-12-02_10-00-00.pkl",
             "search_gen_state-2026-12-02_10-00-00.json"]
    assert all(reads_whole(experiment / n) for n in names)
    truncate(experiment / names[0])
    truncate(experiment / names[1])
    truncate(experiment / names[2])
    (experiment / "tuner.pkl").write_bytes(b"")
    assert not any(reads_whole(experiment / n) for n in [*names, "tuner.pkl"])
    assert not reads_whole(experiment / "missing.json")


def test_the_resume_puts_the_last_whole_state_back_and_sets_a_newer_broken_one_aside(tmp_path):
    experiment = tune_files(tmp_path / "ray" / "tune")
    assert keep(experiment)
    truncate(experiment / "experiment_state-2026-12-02_10-00-00.json")
    tune_files(experiment, stamp="2026-12-02_11-00-00", trials=5)  # a later session's files, then the disk filled
    truncate(experiment / "searcher-state-2026-12-02_11-00-00.pkl")

    damaged = put_back_if_damaged(experiment)

    assert damaged == ["experiment_state-2026-12-02_10-00-00.json", "searcher-state-2026-12-02_11-00-00.pkl"]
    state = json.loads((experiment / "experiment_state-2026-12-02_10-00-00.json").read_text())
    assert state == {"trial_data": [0, 1, 2]}
    left = sorted(p.name for p in experiment.iterdir() if p.suffix in (".json", ".pkl"))
    assert left == ["experiment_state-2026-12-02_10-00-00.json", "search_gen_state-2026-12-02_10-00-00.json",
                    "searcher-state-2026-12-02_10-00-00.pkl", "tuner.pkl"]
    assert (experiment / "searcher-state-2026-12-02_11-00-00.pkl.damaged").exists()
    assert (experiment / "run_trial_5").is_dir()  # trial folders are Tune's to reconcile; nothing else moves
    assert put_back_if_damaged(experiment) == []


def test_whole_state_is_left_as_it_is(tmp_path):
    experiment = tune_files(tmp_path / "ray" / "tune")
    assert keep(experiment)
    tune_files(experiment, trials=7)  # newer and whole: Tune's own files win
    assert put_back_if_damaged(experiment) == []
    assert json.loads((experiment / "experiment_state-2026-12-02_10-00-00.json").read_text())["trial_data"][-1] == 6


def test_damaged_state_without_a_kept_copy_is_one_line_naming_the_file_and_the_fix(tmp_path):
    experiment = tune_files(tmp_path / "scans" / "full" / "ray" / "tune")
    truncate(experiment / "experiment_state-2026-12-02_10-00-00.json")
    with pytest.raises(BadInput) as err:
        put_back_if_damaged(experiment)
    said = str(err.value)
    assert "\n" not in said and "experiment_state-2026-12-02_10-00-00.json" in said
    assert f"delete {tmp_path / 'scans' / 'full'}" in said


def test_a_damaged_set_is_never_kept_over_a_whole_one(tmp_path):
    experiment = tune_files(tmp_path / "tune")
    assert keep(experiment)
    truncate(experiment / "search_gen_state-2026-12-02_10-00-00.json")
    assert not keep(experiment)
    with zipfile.ZipFile(kept_copy(experiment)) as bundle:
        assert pickle.loads(bundle.read("search_gen_state-2026-12-02_10-00-00.json")) == {"counter": 3}


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_the_keeper_keeps_a_set_only_once_it_has_stopped_changing(tmp_path):
    experiment = tune_files(tmp_path / "tune")
    clock = Clock()
    keeper = StateKeeper(experiment, clock=clock)
    keeper.on_step_end(1, [])
    assert not kept_copy(experiment).exists()  # seen once: Tune may be copying it right now
    clock.now += 0.5
    keeper.on_step_end(2, [])
    assert not kept_copy(experiment).exists()  # too soon to look again
    clock.now += 1.0
    keeper.on_step_end(3, [])
    assert kept_copy(experiment).exists()

    tune_files(experiment, trials=4)
    state = experiment / "experiment_state-2026-12-02_10-00-00.json"
    os.utime(state, ns=(state.stat().st_atime_ns, state.stat().st_mtime_ns + 10**9))
    clock.now += 1.0
    keeper.on_step_end(4, [])
    with zipfile.ZipFile(kept_copy(experiment)) as bundle:
        assert json.loads(bundle.read(state.name))["trial_data"] == [0, 1, 2]  # changed since the last look
    clock.now += 1.0
    keeper.on_step_end(5, [])
    with zipfile.ZipFile(kept_copy(experiment)) as bundle:
        assert json.loads(bundle.read(state.name))["trial_data"] == [0, 1, 2, 3]


def test_on_a_full_disk_the_older_whole_copy_stays(tmp_path):
    with small_disk(tmp_path / "scans", "1m") as disk:
        experiment = tune_files(disk / "tune")
        assert keep(experiment)
        tune_files(experiment, trials=4)
        fill(disk)
        assert not keep(experiment)
        with zipfile.ZipFile(kept_copy(experiment)) as bundle:
            assert json.loads(bundle.read("experiment_state-2026-12-02_10-00-00.json"))["trial_data"] == [0, 1, 2]
        assert [p.name for p in experiment.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_at_the_end_the_keeper_takes_tunes_final_state_unless_it_is_still_being_copied(tmp_path):
    experiment = tune_files(tmp_path / "tune")
    state = experiment / "experiment_state-2026-12-02_10-00-00.json"

    def copy_under_way(seconds):
        state.write_text(json.dumps({"trial_data": [0, 1, 2, 3]}))
        os.utime(state, ns=(state.stat().st_atime_ns, state.stat().st_mtime_ns + 10**9))

    StateKeeper(experiment, sleep=copy_under_way).on_experiment_end([])
    assert not kept_copy(experiment).exists()
    slept = []
    StateKeeper(experiment, sleep=slept.append).on_experiment_end([])
    with zipfile.ZipFile(kept_copy(experiment)) as bundle:
        assert json.loads(bundle.read(state.name))["trial_data"] == [0, 1, 2, 3]
    assert slept and slept[0] < 1
