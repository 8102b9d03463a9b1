"""`scanner ui`: the MLflow UI on this store (a subprocess on the terminal; Ctrl-C stops it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from scanner.cli.common import example_help

DEFAULT_HOST = "127.0.0.1"  # loopback: the UI has no authentication, so it is not exposed unless asked
DEFAULT_PORT = 5000  # MLflow's own default, which the report's run links assume


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


def run_ui(args) -> int:
    url_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(f"MLflow UI for {args.tracking_uri}: http://{url_host}:{args.port}  (Ctrl-C stops it)")
    print(f"Optuna study: optuna-dashboard sqlite:///{optuna_db(args.tracking_uri).resolve()}"
          "  (pip install optuna-dashboard)", flush=True)
    proc = subprocess.Popen(ui_command(args.tracking_uri, args.host, args.port), env=ui_env())
    try:
        return proc.wait()
    except KeyboardInterrupt:  # the terminal sent SIGINT to both; give the server a moment to shut down
        try:
            return proc.wait(timeout=10) and 0
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait()
        return 0
