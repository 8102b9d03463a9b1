"""Bad input ends with one line and exit 2 before anything exists: no scans/ folder, no MLflow experiment."""

from __future__ import annotations

import time

from fixtures_sweep import free_port, write_tiny_space
from scanner import cli


def test_bad_space_creates_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    space = write_tiny_space(tmp_path, "bad")
    space.write_text(space.read_text().replace("model: {choice: [small_cnn_tiny, resnet_tiny]}",
                                               "model: {choice: [small_cnn_tiny, no_such_net]}"))
    code = cli.main(["run", str(space)])
    assert code == 2 and "no_such_net" in capsys.readouterr().err
    assert not (tmp_path / "scans").exists() and not (tmp_path / "mlflow.db").exists()


def test_unreachable_tracking_server_is_exit_2_fast(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    space = write_tiny_space(tmp_path, "away")
    start = time.monotonic()
    code = cli.main(["run", str(space), "--tracking-uri", f"http://127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err
    assert code == 2 and "does not answer" in err and len(err.strip().splitlines()) == 1
    assert time.monotonic() - start < 30  # generous: the check itself has a 5 s timeout
    assert not (tmp_path / "scans").exists()


def test_dry_run_prints_the_plan_and_starts_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    space = write_tiny_space(tmp_path, "plan")
    assert cli.main(["run", str(space), "--dry-run", "--trials", "5"]) == 0
    out = capsys.readouterr().out
    assert "lr" in out and "model" in out
    assert not (tmp_path / "scans").exists() and not (tmp_path / "mlflow.db").exists()


def test_resume_of_an_unknown_sweep_is_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["resume", "nothing-here"]) == 2
    assert "scanner" in capsys.readouterr().err


def test_address_where_no_ray_answers_is_exit_2_fast(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    space = write_tiny_space(tmp_path, "nowhere")
    code = cli.main(["run", str(space), "--address", f"127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err
    assert code == 2 and "no Ray cluster answers" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "scans").exists()
