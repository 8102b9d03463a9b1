"""Bad input ends with one line and exit 2 before anything exists: no scans/ folder, no MLflow experiment."""

from __future__ import annotations

import contextlib
import socket
import threading

import pytest

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


def test_unreachable_tracking_server_is_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    space = write_tiny_space(tmp_path, "away")
    code = cli.main(["run", str(space), "--tracking-uri", f"http://127.0.0.1:{free_port()}"])
    err = capsys.readouterr().err
    assert code == 2 and "does not answer" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "scans").exists()


@pytest.mark.slow  # a listening server, and the check's full timeout
def test_a_silent_tracking_server_is_asked_once_not_retried(tmp_path, monkeypatch, capsys):
    """A server that accepts and never answers (a hung proxy): one request with the check's own timeout, then one
    line, instead of MLflow's retries with back-off for minutes."""
    monkeypatch.chdir(tmp_path)
    space = write_tiny_space(tmp_path, "silent")
    with socket.create_server(("127.0.0.1", 0)) as server:
        accepted = []
        server.settimeout(60)

        def accept_and_say_nothing():
            with contextlib.suppress(OSError):  # the server closes when the test ends
                while True:
                    accepted.append(server.accept()[0])

        listener = threading.Thread(target=accept_and_say_nothing, daemon=True)
        listener.start()
        code = cli.main(["run", str(space), "--tracking-uri", f"http://127.0.0.1:{server.getsockname()[1]}"])
        for connection in accepted:
            connection.close()
    err = capsys.readouterr().err
    assert code == 2 and "does not answer (ReadTimeout)" in err and len(err.strip().splitlines()) == 1
    assert len(accepted) == 1
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
