"""`scanner export` end to end on a real trained checkpoint and a real sqlite MLflow store: a run's export is logged
(parity metrics, the .onnx artifact, run id and git sha in the metadata), a checkpoint folder logs nothing, a broken
export exits 1 leaving nothing, bad input is one line and exit 2."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest
from fixtures_checkpoint import hand_run, perturbed, with_meta
from fixtures_tracking import fresh_store
from mlflow.tracking import MlflowClient

import trainables.export as export
from scanner.cli import main


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri = fresh_store(tmp_path_factory.mktemp("export_store"))
    return uri, MlflowClient(tracking_uri=uri)


def metadata(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def test_export_of_a_run_logs_parity_and_the_file(store, tiny_checkpoint, tiny_h5, tmp_path, capsys):
    uri, client = store
    run_id = hand_run(client, "exp", tiny_checkpoint, tiny_h5, {"scan.git_sha": "c0ffee", "scan.data_hash": "d1"})
    out = tmp_path / "nested" / "model.onnx"
    assert main(["export", f"run:{run_id}", "--out", str(out), "--tracking-uri", uri, "--parity-events", "64"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("parity on 64 validation events of ") and "argmax agreement 1.0000" in lines[0]
    assert lines[-1] == str(out) and f"logged to run {run_id} as export/model.onnx" in lines[-2]
    metrics = client.get_run(run_id).data.metrics
    assert metrics["export/max_abs_diff"] <= 1e-4 and metrics["export/argmax_agreement"] == 1.0
    assert [f.path for f in client.list_artifacts(run_id, "export")] == ["export/model.onnx"]
    meta = metadata(out)
    assert (meta["run_id"], meta["git_sha"], meta["data_hash"]) == (run_id, "c0ffee", "d1")
    assert json.loads(meta["class_names"]) == ["NC", "nueCC", "numuCC"]


def test_export_of_a_checkpoint_folder_logs_nothing(tiny_checkpoint, tiny_h5, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    folder = with_meta(tiny_checkpoint, tmp_path / "ckpt", data_path=str(tiny_h5))  # a checkpoint naming its file
    assert main(["export", str(folder), "--out", "m.onnx", "--opset", "20"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(tmp_path / "m.onnx")
    meta = metadata(tmp_path / "m.onnx")
    assert meta["run_id"] == "" and len(meta["data_hash"]) == 16  # hashed from the file itself
    assert not (tmp_path / "mlflow.db").exists()


def test_opset_parity_data_and_tolerance_do_what_they_say(store, tiny_checkpoint, tiny_h5, tmp_path, capsys):
    """--opset is the file's opset; --parity-data reads a moved events file; --tolerance 0 refuses any difference
    (max |Δ| of a float graph against torch is never exactly 0 here: the test needs that, and checks it)."""
    uri, client = store
    moved = tmp_path / "moved" / "events.h5"
    moved.parent.mkdir()
    shutil.copyfile(tiny_h5, moved)
    run_id = hand_run(client, "exp", tiny_checkpoint, tmp_path / "gone.h5")  # the run names a file that has moved
    out = tmp_path / "model.onnx"
    assert main(["export", run_id, "--out", str(out), "--tracking-uri", uri, "--opset", "20",
                 "--parity-data", str(moved), "--parity-events", "32"]) == 0
    assert f"validation events of {moved}" in capsys.readouterr().out
    model = onnx.load(str(out), load_external_data=False)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [20]
    assert client.get_run(run_id).data.metrics["export/max_abs_diff"] > 0
    strict = tmp_path / "strict.onnx"
    assert main(["export", run_id, "--out", str(strict), "--tracking-uri", uri, "--parity-data", str(moved),
                 "--parity-events", "32", "--tolerance", "0"]) == 1
    assert "export refused, nothing written" in capsys.readouterr().err and not strict.exists()


def test_a_broken_export_exits_1_and_leaves_nothing(store, tiny_checkpoint, tiny_h5, tmp_path, monkeypatch, capsys):
    uri, client = store
    run_id = hand_run(client, "exp", tiny_checkpoint, tiny_h5)
    real = export.to_onnx
    monkeypatch.setattr(export, "to_onnx", lambda *a, **k: perturbed(real(*a, **k)))  # a wrong graph, really checked
    out = tmp_path / "model.onnx"
    assert main(["export", run_id, "--out", str(out), "--tracking-uri", uri]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "max |Δ|" in err and "export refused, nothing written" in err
    assert list(tmp_path.iterdir()) == []
    assert client.get_run(run_id).data.metrics["export/max_abs_diff"] > 1e-3
    assert client.list_artifacts(run_id, "export") == []


EXPECTED = {"unknown run": "no MLflow run 0123456789abcdef", "unknown sweep": "no sweep named 'nosuch'",
            "no store": "no MLflow store at", "missing data": "moved.h5: file not found",
            "out in a file": "a_file is not a writable folder", "opset": "--opset 7: ",
            "not a checkpoint": "no state.pt here", "no data": "does not name its events file"}


@pytest.mark.parametrize("case", EXPECTED)
def test_bad_input_is_one_line_and_exit_2(case, store, tiny_checkpoint, tmp_path, capsys):
    uri, client = store
    run_id = hand_run(client, "exp", tiny_checkpoint, None)
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "empty").mkdir()
    args = {
        "unknown run": ["run:0123456789abcdef", "--tracking-uri", uri],
        "unknown sweep": ["best-of:nosuch", "--tracking-uri", uri],
        "no store": ["run:abc", "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}"],
        "missing data": [run_id, "--tracking-uri", uri, "--parity-data", str(tmp_path / "moved.h5")],
        "out in a file": [run_id, "--tracking-uri", uri, "--out", str(tmp_path / "a_file" / "m.onnx")],
        "opset": [str(tiny_checkpoint), "--opset", "7", "--parity-data", str(tmp_path / "a_file")],
        "not a checkpoint": [str(tmp_path / "empty")],
        # neither a sweep's space.yaml nor a data_path in the checkpoint
        "no data": [hand_run(client, "exp", with_meta(tiny_checkpoint, tmp_path / "old", data_path=None), None),
                    "--tracking-uri", uri],
    }[case]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "m.onnx")]
    assert main(["export", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("scanner export: error: ") and EXPECTED[case] in err
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "none.db").exists()


@pytest.mark.parametrize("verb", ["export", "explain"])
def test_help_has_a_runnable_example(verb, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([verb, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert f"scanner {verb} best-of:demo" in out.split("example:")[1] and "--tracking-uri" in out
