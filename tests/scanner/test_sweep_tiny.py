"""What the shared tiny sweep left in MLflow, Optuna and scans/<name>/ (the names docs/mlflow.md promises), via MlflowClient."""

from __future__ import annotations

import json
import shutil
import zipfile

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from scanner import cli
from scanner.targets import resolve_init

pytestmark = pytest.mark.slow  # the shared tiny sweep: Ray and a real sweep


@pytest.fixture(scope="module")
def runs(tiny_sweep):
    client = MlflowClient(tiny_sweep.tracking_uri)
    exp = client.get_experiment_by_name(tiny_sweep.name)
    all_runs = client.search_runs([exp.experiment_id], max_results=1000)
    parent = [r for r in all_runs if r.data.tags.get("scan.role") == "parent"]
    children = [r for r in all_runs if r.data.tags.get("scan.role") != "parent"]
    return client, parent, children


def test_sweep_exits_ok_and_prints_progress(tiny_sweep):
    assert tiny_sweep.exit_code == 0, tiny_sweep.output
    assert "running" in tiny_sweep.output and "best val/accuracy=" in tiny_sweep.output
    last = tiny_sweep.output.strip().splitlines()[-1]
    # the leader as the report ranks it, its value, and where the report is
    assert "best t0" in last and "with val/accuracy = " in last, last
    assert f"report {tiny_sweep.folder / 'scans' / 'tiny' / 'report' / 'index.html'}" in last, last


def test_the_python_api_leaves_the_process_as_it_found_it(tiny_sweep):
    """A notebook that calls run_sweep keeps its environment (Tune's and Ray's switches, MLflow's HTTP settings)
    and its Ctrl-C handler."""
    assert tiny_sweep.environ_changes == {}
    assert tiny_sweep.sigint_kept


def test_mlflow_holds_the_reference_the_data_and_opens_on_the_runs(runs, tiny_sweep):
    """The parent carries the trivial reference and the real class names; each trial names the data file it used
    (path and hash, MLflow's dataset input); the experiment opens on its runs, not on the GenAI traces page."""
    client, parent, children = runs
    p = parent[0]
    assert {"ref/val/accuracy", "ref/test/accuracy"} <= set(p.data.metrics)
    assert json.loads(p.data.tags["scan.class_names"]) == ["NC", "nueCC", "numuCC"]
    assert "sweep/best_objective" in p.data.metrics
    for c in children:
        inputs = client.get_run(c.info.run_id).inputs.dataset_inputs
        assert [i.dataset.digest for i in inputs] == [c.data.tags["scan.data_hash"]]
        assert json.loads(inputs[0].dataset.source)["uri"].endswith("tiny.h5")
    exp = client.get_experiment_by_name(tiny_sweep.name)
    assert exp.tags.get("mlflow.experimentKind") == "custom_model_development"


def test_one_parent_and_one_nested_child_per_trial(runs):
    client, parent, children = runs
    assert len(parent) == 1 and parent[0].info.run_name == "tiny"
    assert len(children) == 4  # 3 searched + the baseline
    assert len({c.data.tags["scan.trial_id"] for c in children}) == 4
    assert all(c.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for c in children)
    tags = parent[0].data.tags
    assert tags["scan.status"] == "finished" and tags["scan.objective"] == "val/accuracy"
    assert json.loads(tags["scan.also"]) == [] and parent[0].info.status == "FINISHED"
    names = {a.path for a in client.list_artifacts(parent[0].info.run_id)}
    assert {"space.yaml", "scan.json", "optuna_study.json"} <= names


def test_no_run_left_running_and_statuses_are_truthful(runs):
    _, _, children = runs
    for c in children:
        status = c.data.tags["scan.status"]
        assert status in ("completed", "stopped_early")
        assert c.info.status == "FINISHED"
        epochs = c.data.metrics["best/epoch"] if "best/epoch" in c.data.metrics else None
        assert epochs is not None


def test_baseline_first_unstopped_and_tagged(runs):
    client, _, children = runs
    base = [c for c in children if c.data.tags["scan.baseline"] == "true"]
    assert len(base) == 1 and base[0].info.run_name.startswith("t00 baseline small_cnn_tiny ce")
    assert "focal_gamma" not in base[0].info.run_name  # inactive conditionals stay out of the name
    assert base[0].data.tags["scan.status"] == "completed"
    assert [m.step for m in client.get_metric_history(base[0].info.run_id, "val/loss")] == [1, 2]


def test_child_runs_carry_contract_tags_params_and_metrics(runs, tiny_sweep):
    client, _, children = runs
    for c in children:
        tags = c.data.tags
        for key in ("scan.name", "scan.trial_id", "scan.space_hash", "scan.data_hash", "scan.varied",
                    "scan.class_names", "scan.checkpoint"):
            assert tags.get(key), key
        assert json.loads(tags["scan.class_names"]) == ["NC", "nueCC", "numuCC"]  # the file's class_names
        assert c.data.params["batch_size"] == "32"
        history = client.get_metric_history(c.info.run_id, "val/accuracy")
        steps = [m.step for m in history]
        assert steps == sorted(set(steps)) and steps[0] == 1  # step = epoch, each once
        assert "best/val/accuracy" in c.data.metrics
        assert not any(k.startswith("sys/gpu") for k in c.data.metrics)  # absent on CPU, never 0
        assert {a.path for a in client.list_artifacts(c.info.run_id, "val")} == {"val/confusion.json",
                                                                               "val/predictions.h5"}
        assert tags["scan.checkpoint"].startswith(str(tiny_sweep.folder / "scans" / "tiny" / "ray"))


def test_params_are_what_each_trial_ran_and_config_yaml_holds_the_rest(runs, tmp_path):
    """A cross-entropy trial shows no focal_gamma; defaults set nowhere are not params; config.yaml has them all."""
    client, _, children = runs
    fixed = {"batch_size", "num_workers"}
    for c in children:
        params = set(c.data.params)
        varied = json.loads(c.data.tags["scan.varied"])
        if c.data.tags["scan.baseline"] == "true":
            assert params == fixed | {"model", "loss", "lr"} and varied == []  # fixed + baseline; nothing sampled
        else:
            active = {"model", "loss", "lr"} | ({"focal_gamma"} if c.data.params["loss"] == "focal" else set())
            assert params == fixed | active and set(varied) == active
        config = yaml.safe_load(open(client.download_artifacts(c.info.run_id, "config.yaml", str(tmp_path))))
        assert {"ema_decay", "seed", "focal_gamma", "momentum", "lr", "model"} <= set(config)
        assert all(str(config[k]) == v for k, v in c.data.params.items())


def test_finals_on_the_test_split_for_baseline_and_top(runs):
    client, _, children = runs
    finals = [c for c in children if "test/accuracy" in c.data.metrics]
    assert len(finals) == 2  # final_top: 1, + the baseline
    assert any(c.data.tags["scan.baseline"] == "true" for c in finals)
    for c in finals:
        best_epoch = int(c.data.metrics["best/epoch"])
        assert [m.step for m in client.get_metric_history(c.info.run_id, "test/accuracy")] == [best_epoch]
        assert {a.path for a in client.list_artifacts(c.info.run_id, "test")} == {"test/confusion.json",
                                                                                 "test/predictions.h5"}


def test_scan_folder_and_optuna_study(tiny_sweep):
    folder = tiny_sweep.folder / "scans" / "tiny"
    info = json.loads((folder / "scan.json").read_text())
    assert info["tracking_uri"] == tiny_sweep.tracking_uri and info["data_path"].startswith("/")
    assert info["space"]["data"]["path"] == info["data_path"] and info["space_hash"]
    assert (folder / "ray" / "tune").is_dir()
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tiny_sweep.folder / 'scans' / 'optuna.db'}")
    assert len(study.trials) == 3  # the searched trials; the baseline is the reference, not a sample
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in study.trials)


def test_the_sweep_keeps_a_whole_copy_of_tunes_state_naming_every_trial(runs, tiny_sweep):
    _, _, children = runs
    with zipfile.ZipFile(tiny_sweep.folder / "scans" / "tiny" / "ray" / "tune-state.zip") as bundle:
        names = bundle.namelist()
        state = json.loads(bundle.read(max(n for n in names if n.startswith("experiment_state-"))))
    assert "tuner.pkl" in names and any(n.startswith("searcher-state-") for n in names)
    kept_ids = {json.loads(trial[0])["trial_id"] for trial in state["trial_data"]}
    searched = {c.data.tags["scan.trial_id"] for c in children if "scan.replica_of" not in c.data.tags}
    assert kept_ids == searched and len(kept_ids) == 4


def test_resume_with_damaged_tune_state_and_no_copy_is_one_line_and_touches_nothing(tiny_sweep, tmp_path,
                                                                                    monkeypatch, capsys):
    shutil.copytree(tiny_sweep.folder / "scans", tmp_path / "scans", ignore=shutil.ignore_patterns("*.zip"))
    experiment = tmp_path / "scans" / "tiny" / "ray" / "tune"
    state = max(experiment.glob("experiment_state-*.json"))
    state.write_bytes(state.read_bytes()[:1000])  # the disk filled while Tune wrote it
    before = sorted(p.name for p in experiment.iterdir())
    monkeypatch.chdir(tmp_path)
    assert cli.main(["resume", "tiny", "--tracking-uri", tiny_sweep.tracking_uri]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and state.name in err[0] and f"delete {tmp_path / 'scans' / 'tiny'}" in err[0], err
    assert sorted(p.name for p in experiment.iterdir()) == before and len(state.read_bytes()) == 1000


def test_second_run_of_the_same_name_exits_2(tiny_sweep, monkeypatch, capsys):
    monkeypatch.chdir(tiny_sweep.folder)
    code = cli.main(["run", str(tiny_sweep.space_path), "--tracking-uri", tiny_sweep.tracking_uri])
    assert code == 2
    err = capsys.readouterr().err
    assert "scanner resume tiny" in err and len(err.strip().splitlines()) == 1


def test_best_of_resolves_to_the_best_trial_checkpoint(runs, tiny_sweep):
    _, _, children = runs
    # the highest best/val/accuracy; a tie goes to the earlier trial (t01 before t03), as the report ranks
    best = min(children, key=lambda c: (-c.data.metrics["best/val/accuracy"], c.info.run_name.split()[0]))
    assert resolve_init("best-of:tiny", tiny_sweep.tracking_uri) == best.data.tags["scan.checkpoint"]
    one = children[0]
    assert resolve_init(f"run:{one.info.run_id}", tiny_sweep.tracking_uri) == one.data.tags["scan.checkpoint"]
