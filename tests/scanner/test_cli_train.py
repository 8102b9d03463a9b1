"""``scanner train`` end to end: a real tiny HDF5 file, a real sqlite MLflow store, checked through MlflowClient."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from scanner.cli import main
from trainables.contract import PERF, SYS_CPU


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
    assert "completed after 2 epochs" in capsys.readouterr().out
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("train-check")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.003" and run.data.params["model"] == "small_cnn_tiny"
    assert run.data.params["loss"] == "ce"  # the task's default, resolved
    tags = run.data.tags
    assert tags["scan.status"] == "completed" and tags["scan.name"] == "train-check"
    assert len(tags["scan.data_hash"]) >= 12 and json.loads(tags["scan.class_names"]) == ["NC", "nueCC", "numuCC"]
    assert Path(tags["scan.checkpoint"], "state.pt").exists()
    history = client.get_metric_history(run.info.run_id, "val/accuracy")
    assert sorted(m.step for m in history) == [1, 2]
    logged = set(run.data.metrics)
    assert {"train/loss", "val/loss", "train/lr", "val/accuracy_err", "best/val/accuracy"} <= logged
    assert set(PERF) | set(SYS_CPU) <= logged
    assert not [k for k in logged if k.startswith("sys/gpu")]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "val")}
    assert artifacts == {"val/confusion.json", "val/predictions.h5"}


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
