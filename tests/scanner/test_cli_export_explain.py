"""`scanner explain` end to end on a real trained checkpoint and a real sqlite MLflow store: maps of a run are
written to --out (default explain/) and logged under explain/; a checkpoint folder logs nothing; bad input is one
line and exit 2."""

from __future__ import annotations

import json

import pytest

from fixtures_checkpoint import hand_run, with_meta
from fixtures_tracking import fresh_store
from mlflow.tracking import MlflowClient

from scanner.cli import main
from scanner.cli.explain import METHOD_NAMES
from trainables.explain import METHODS


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri = fresh_store(tmp_path_factory.mktemp("explain_store"))
    return uri, MlflowClient(tracking_uri=uri)


def test_maps_of_a_run_go_to_explain_and_to_the_run(store, tiny_checkpoint, tiny_h5, tmp_path, monkeypatch, capsys):
    uri, client = store
    run_id = hand_run(client, "exp", tiny_checkpoint, tiny_h5)
    monkeypatch.chdir(tmp_path)
    assert main(["explain", f"run:{run_id}", "--events", "3", "--patch", "8", "--stride", "8",
                 "--tracking-uri", uri]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("occlusion maps of 3 events (small_cnn_tiny") for line in lines)
    assert lines[-1] == str(tmp_path / "explain" / "explain.html")
    info = json.loads((tmp_path / "explain" / "explain.json").read_text())
    assert info["run_id"] == run_id and info["options"]["stride"] == 8 and len(info["events"]) == 3
    logged = {f.path for f in client.list_artifacts(run_id, "explain")}
    assert logged == {f"explain/{name}" for name in info["files"]}
    assert {"explain/explain.html", "explain/maps.npz"} <= logged


def test_maps_of_a_checkpoint_folder_log_nothing(tiny_checkpoint, tiny_h5, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    folder = with_meta(tiny_checkpoint, tmp_path / "ckpt", data_path=None)  # an older checkpoint: --data says where
    assert main(["explain", str(folder), "--index", "4,2", "--method", "saliency", "--out", "maps",
                 "--data", str(tiny_h5)]) == 0
    info = json.loads((tmp_path / "maps" / "explain.json").read_text())
    assert [e["index"] for e in info["events"]] == [4, 2] and info["run_id"] == ""
    assert not (tmp_path / "mlflow.db").exists()


EXPECTED = {"index text": "--index 3,x: expected comma-separated event numbers",
            "index range": "event index 100000 is outside", "patch": "--patch 64 --stride 4: expected",
            "out is a file": "is a file; fix: give a folder"}


@pytest.mark.parametrize("case", EXPECTED)
def test_bad_input_is_one_line_and_exit_2(case, tiny_checkpoint, tiny_h5, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    args = {"index text": ["--index", "3,x"], "index range": ["--index", "100000"], "patch": ["--patch", "64"],
            "out is a file": ["--out", str(tmp_path / "a_file")]}[case]
    out = [] if "--out" in args else ["--out", str(tmp_path / "maps")]
    assert main(["explain", str(tiny_checkpoint), "--data", str(tiny_h5), *args, *out]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("scanner explain: error: ") and EXPECTED[case] in err
    assert not (tmp_path / "maps").exists()


def test_the_cli_offers_exactly_the_registered_methods():
    assert sorted(METHOD_NAMES) == METHODS.names()
