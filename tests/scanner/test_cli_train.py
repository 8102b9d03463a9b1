"""``scanner train`` end to end: a real tiny HDF5 file, a real sqlite MLflow store, checked through MlflowClient."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from scanner.cli import main
from trainables.contract import PERF, SYS_CPU, Artifact


def write_space(folder: Path, h5: Path, extra: str = "") -> Path:
    path = folder / "one.yaml"
    path.write_text(
        f"""name: train-check
task: classification
data: {{path: {h5}}}
objective: {{metric: val/accuracy, mode: max}}
budget: {{max_epochs: 2}}
fixed: {{model: small_cnn_tiny, batch_size: 32, num_workers: 0}}
{extra}"""
    )
    return path


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_train_logs_the_contract_layout(tiny_h5, tmp_path, store, capsys):
    space = write_space(tmp_path, tiny_h5)
    assert main(["train", str(space), "--tracking-uri", store, "--set", "lr=3e-3"]) == 0
    out = capsys.readouterr().out
    assert "completed after 2 epochs" in out
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert [e.split()[1] for e in epochs] == ["1/2", "2/2"] and all("val/accuracy" in e for e in epochs)
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("train-check")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "t00 small_cnn_tiny ce lr=3e-3"  # the --set override is in the name
    # params: what the file and --set set, as a sweep's trial; defaults only in config.yaml
    assert run.data.params == {"model": "small_cnn_tiny", "batch_size": "32", "num_workers": "0", "lr": "0.003"}
    config_file = client.download_artifacts(run.info.run_id, Artifact.CONFIG, str(tmp_path))
    config = yaml.safe_load(Path(config_file).read_text())
    assert config["loss"] == "ce" and config["lr"] == 0.003 and config["optimizer"] == "adamw"
    tags = run.data.tags
    assert tags["scan.status"] == "completed" and tags["scan.name"] == "train-check"
    assert len(tags["scan.data_hash"]) >= 12 and json.loads(tags["scan.class_names"]) == ["NC", "nueCC", "numuCC"]
    assert Path(tags["scan.checkpoint"], "state.pt").exists()
    (used,) = run.inputs.dataset_inputs
    assert used.dataset.digest == tags["scan.data_hash"] and json.loads(used.dataset.source)["uri"] == str(tiny_h5)
    profile = json.loads(used.dataset.profile)
    assert profile["events"] == 600 and profile["image_shape"] == [2, 32, 32]
    assert sum(profile["splits"].values()) == 600
    assert {t.key: t.value for t in used.tags} == {"mlflow.data.context": "training"}
    history = client.get_metric_history(run.info.run_id, "val/accuracy")
    assert sorted(m.step for m in history) == [1, 2]
    logged = set(run.data.metrics)
    assert {"train/loss", "val/loss", "train/lr", "val/accuracy_err", "best/val/accuracy"} <= logged
    assert set(PERF) | set(SYS_CPU) <= logged
    assert not [k for k in logged if k.startswith("sys/gpu")]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "val")}
    assert artifacts == {"val/confusion.json", "val/predictions.h5"}


def test_a_file_with_only_data_and_fixed_is_a_training_config(cli_h5, tmp_path, store, capsys):
    space = tmp_path / "quick_look.yaml"
    space.write_text(f"data: {{path: {cli_h5}}}\nfixed: {{model: small_cnn_tiny, num_workers: 0}}\n")
    assert main(["train", str(space), "--tracking-uri", store, "--epochs", "1"]) == 0
    assert "epoch 1/1  val/accuracy" in capsys.readouterr().out  # the file holds labels: classification
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("quick_look").experiment_id])
    assert run.info.status == "FINISHED" and "best/val/accuracy" in run.data.metrics


def test_an_init_from_another_run_is_tagged_and_checked_before_a_run_exists(pretrained, tmp_path, monkeypatch,
                                                                          capsys):
    monkeypatch.chdir(tmp_path)
    space = tmp_path / "finetune.yaml"
    space.write_text(Path(pretrained.folder / "pretrain.yaml").read_text())
    store = pretrained.tracking_uri
    client = MlflowClient(store)
    wrong = ["--set", "model=resnet_tiny", "--set", "mode=finetune", "--set", f"init=run:{pretrained.run_id}"]
    assert main(["train", str(space), "--tracking-uri", store, "--epochs", "1", *wrong]) == 2
    line = capsys.readouterr().err.strip()
    assert len(line.splitlines()) == 1 and "small_cnn_tiny" in line and "resnet_tiny" in line, line
    assert client.get_experiment_by_name("finetune") is None  # checked before any run was created
    right = ["--set", "mode=finetune", "--set", "init=best-of:pretrain"]
    assert main(["train", str(space), "--tracking-uri", store, "--epochs", "1", *right]) == 0
    (run,) = client.search_runs([client.get_experiment_by_name("finetune").experiment_id])
    assert run.data.tags["scan.init_run_id"] == pretrained.run_id
    assert run.data.tags["scan.init_trial_id"] == pretrained.trial_id
    assert run.data.params["init"] == "best-of:pretrain"  # what was asked; config.yaml holds the checkpoint


@pytest.mark.parametrize(
    "args, words",
    [
        (["--set", "lrr=3"], ["lrr", "lr"]),
        (["--set", "model=resnet999"], ["resnet999", "known"]),
        (["--epochs", "0"], ["--epochs", ">= 1"]),
    ],
)
def test_bad_input_is_one_line_and_creates_nothing(tiny_h5, tmp_path, store, capsys, args, words):
    space = write_space(tmp_path, tiny_h5)
    assert main(["train", str(space), "--tracking-uri", store, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(w in err for w in words), err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "scans").exists()


def test_broken_data_file_is_one_line(tmp_path, store, capsys):
    bad = tmp_path / "not.h5"
    bad.write_text("this is not HDF5")
    space = write_space(tmp_path, bad)
    assert main(["train", str(space), "--tracking-uri", store]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not.h5" in err
