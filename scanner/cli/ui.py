"""`scanner ui`: the MLflow UI on this store (a subprocess in its own process group; Ctrl-C, SIGTERM or SIGHUP
stops the whole group)."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

from scanner.cli.common import example_help
from trainables.contract import UI_PORT
from trainables.errors import BadInput

DEFAULT_HOST = "127.0.0.1"  # loopback: the UI has no authentication, so it is not exposed unless asked
DEFAULT_PORT = UI_PORT  # MLflow's own default, which a report's run links for a local store assume
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # a `kill`, a closed terminal or ssh session: the server goes too
STOP_WAIT_S = 10.0  # the server's own shutdown, before the group is killed


def register(sub, parent):
    p = sub.add_parser("ui", parents=[parent], help="the MLflow UI on the store (and how to open the Optuna study)",
                       **example_help("scanner ui --port 5000"))
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST} (loopback only)")
    p.set_defaults(handler=run_ui)


def ui_command(tracking_uri: str, host: str, port: int) -> list[str]:
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    launcher = [mlflow] if mlflow else [sys.executable, "-m", "mlflow"]
    return launcher + ["ui", "--backend-store-uri", tracking_uri, "--host", host, "--port", str(port)]


def ui_env() -> dict[str, str]:
    """MLflow's job runner (huey consumers for GenAI scorers) off unless asked for: nothing here uses it, and its
    four extra processes slowed the UI's start by ~20 s on 2 cores."""
    env = os.environ.copy()
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return env


def optuna_db(tracking_uri: str) -> Path:
    """scans/optuna.db beside the MLflow sqlite file (the folder the sweep ran in), else in this folder."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///"):]).parent / "scans" / "optuna.db"
    return Path.cwd() / "scans" / "optuna.db"


def check_port(host: str, port: int) -> None:
    """A port that is out of range or already served (another MLflow UI, on another store) is bad input: today's
    server would fail to bind, or the printed URL would show someone else's store."""
    if not 0 < port < 65536:
        raise BadInput(f"--port {port}: not a TCP port; give one in 1..65535, e.g. --port {DEFAULT_PORT}")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no owner
        try:
            probe.bind((host, port))
        except socket.gaierror:
            raise BadInput(f"--host {host}: not an address of this machine; use --host 127.0.0.1") from None
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise BadInput(f"--port {port}: something already listens on {host}:{port} (another MLflow UI?); "
                               f"stop it or pass another port, e.g. --port {port + 1}") from None
            raise BadInput(f"--host {host} --port {port}: cannot listen there ({exc.strerror}); "
                           f"use --host 127.0.0.1 and a port above 1023") from None


class StopRequested(Exception):
    """SIGTERM or SIGHUP reached ``scanner ui``."""


def _raise_stop(signum, frame) -> None:
    raise StopRequested(signal.Signals(signum).name)


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's whole process group (MLflow's launcher and its workers); after ``STOP_WAIT_S``, or
    once the launcher is gone, SIGKILL to whatever is left of the group."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break  # the whole group is gone
        try:
            proc.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            pass
    proc.wait()


def run_ui(args) -> int:
    check_port(args.host, args.port)
    url_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(f"MLflow UI for {args.tracking_uri}: http://{url_host}:{args.port}  (Ctrl-C stops it)")
    print(f"Optuna study: optuna-dashboard sqlite:///{optuna_db(args.tracking_uri).resolve()}"
          "  (pip install optuna-dashboard)", flush=True)
    previous = {sig: signal.signal(sig, _raise_stop) for sig in STOP_SIGNALS}
    proc = None
    try:
        # its own process group: a signal to scanner ui alone (kill, a closed ssh session) must still reach it
        proc = subprocess.Popen(ui_command(args.tracking_uri, args.host, args.port), env=ui_env(),
                                start_new_session=True)
        return proc.wait()
    except (KeyboardInterrupt, StopRequested):
        if proc is not None:
            stop_group(proc)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
