"""`scanner ui`: a taken or invalid port is one line and exit 2 (no server, no URL of someone else's store), and a
SIGTERM or SIGHUP to `scanner ui` alone stops the whole MLflow server, as Ctrl-C does."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest
from fixtures_sweep import free_port

from scanner.cli import main


def one_error_line(capfd) -> str:
    captured = capfd.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "http://" not in captured.out  # no URL printed for a server that will not start
    return lines[0]


def test_a_taken_port_is_one_line_and_exit_2(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    with socket.socket() as other:  # another server (another store's UI) listens there
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        assert main(["ui", "--port", str(port)]) == 2
    line = one_error_line(capfd)
    assert f"--port {port}" in line and "already listens" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("port", ["0", "70000", "-5"])
def test_an_invalid_port_is_one_line_and_exit_2(tmp_path, monkeypatch, capfd, port):
    monkeypatch.chdir(tmp_path)
    assert main(["ui", "--port", port]) == 2
    assert f"--port {port}" in one_error_line(capfd)
    assert list(tmp_path.iterdir()) == []


def wait_until_served(url: str, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"the UI did not answer on {url}")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_signal_to_scanner_ui_alone_stops_the_whole_server(tmp_path, sig):
    port = free_port()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.Popen([sys.executable, "-m", "scanner", "ui", "--port", str(port), "--tracking-uri", uri],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    server: list[psutil.Process] = []
    try:
        wait_until_served(f"http://127.0.0.1:{port}/", proc)
        server = psutil.Process(proc.pid).children(recursive=True)
        assert server
        os.kill(proc.pid, sig)  # scanner ui only, as `kill PID` or a closed ssh session would
        proc.communicate(timeout=60)
        gone, alive = psutil.wait_procs(server, timeout=30)
        assert not alive, [p.cmdline() for p in alive]
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
        assert proc.returncode == 0
    finally:
        stop_what_we_started(proc, server)


def stop_what_we_started(proc: subprocess.Popen, known: list[psutil.Process]) -> None:
    if proc.poll() is None:
        known = known + psutil.Process(proc.pid).children(recursive=True)
        proc.kill()
        proc.wait()
    for child in known:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
