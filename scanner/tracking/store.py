"""The MLflow store: is it reachable, the sweep's experiment, runs found by their tags (every page), the git sha."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Mapping

import requests
from mlflow.tracking import MlflowClient

from trainables.errors import BadInput


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, in one line, when the store cannot be written; before anything is created."""
    if uri.startswith(("http://", "https://")):
        try:
            requests.get(uri.rstrip("/") + "/health", timeout=timeout_s)
        except requests.RequestException as exc:
            raise BadInput(
                f"MLflow tracking server {uri} does not answer ({type(exc).__name__}); start it "
                f"(scanner ui / mlflow server) or pass --tracking-uri sqlite:///mlflow.db"
            ) from None
        return
    if uri.startswith("sqlite:///") or uri.startswith("file:"):
        path = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:") else Path(uri[len("file:"):].lstrip("/"))
        path = Path("/" + str(path).lstrip("/"))
        folder = path.parent if uri.startswith("sqlite:") else path
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise BadInput(f"MLflow store {uri}: {folder} is a file, not a folder; pass --tracking-uri elsewhere")
        if not os.access(folder, os.W_OK):
            raise BadInput(f"MLflow store {uri}: folder {folder} is not writable; pass --tracking-uri elsewhere")


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The sweep's experiment id, created once, in the driver (trials never create experiments: ray#36257)."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return client.create_experiment(name)
    if exp.lifecycle_stage == "deleted":
        raise BadInput(
            f"MLflow experiment '{name}' exists but is deleted; restore it (mlflow experiments restore "
            f"--experiment-id {exp.experiment_id}) or give the sweep a new name"
        )
    return exp.experiment_id


def git_sha() -> str | None:
    """The code version of this checkout, or None outside git (an installed wheel)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=3
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def find_runs_by_tag(client: MlflowClient, experiment_id: str, tags: Mapping[str, str]) -> list:
    """Runs of one experiment whose tags match; oldest first, so the original of a duplicate wins."""
    clauses = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client.search_runs([experiment_id], filter_string=clauses, max_results=1000)
    return sorted(runs, key=lambda r: r.info.start_time or 0)
