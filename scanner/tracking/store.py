"""The MLflow store: is its URI right and can it be written, the sweep's experiment, runs found by their tags (every
page), the git sha.

    check_reachable("sqlite:////data/scans/mlflow.db")    # BadInput, one line, when the store cannot be used
    find_runs_by_tag(client, experiment_id, {"scan.instance": "1a2b"})
"""

from __future__ import annotations

import difflib
import logging
import os
import subprocess
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import urlparse
from urllib.request import url2pathname

import requests
from mlflow import environment_variables
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service.utils import _tracking_store_registry
from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException
from mlflow.utils.uri import get_uri_scheme
from sqlalchemy.engine import make_url

from trainables.contract import EXPERIMENT_KIND, Tag
from trainables.environ import scoped_log_level
from trainables.errors import BadInput

SEARCH_PAGE = 1000  # runs per search_runs page (MLflow's default page; every page is read)
URI_FORMS = "http(s)://HOST:PORT, sqlite:///PATH/mlflow.db or file:///PATH/mlruns"


# --------------------------------------------------------------------------------------------- the tracking URI


def mlflow_unknown_scheme(uri: str) -> list[str] | None:
    """None when MLflow can open ``uri``'s scheme, else the schemes it can open (its own plugins included).

    Compat: MLflow's tracking-store registry is a private module object (``_tracking_store_registry``); its
    ``get_store_builder`` is how MLflow itself resolves a URI. Pinned by a test."""
    try:
        _tracking_store_registry.get_store_builder(uri)
    except UnsupportedModelRegistryStoreURIException as exc:
        return [s for s in exc.supported_uri_schemes if s]
    return None


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, in one line, when the store cannot be used; before anything is created, and creating nothing.

    A scheme MLflow does not know, a local store whose folder is missing or cannot be written, a server that does not
    answer: each is a ``BadInput`` naming the URI and the fix. Other schemes that MLflow opens (databricks,
    postgresql, ...) are left to MLflow: they need credentials or drivers that only MLflow knows how to use."""
    known = mlflow_unknown_scheme(uri)
    scheme = uri if uri in ("databricks", "databricks-uc", "uc") else get_uri_scheme(uri)
    if known is not None:
        ours = [s for s in CHECKS if s]
        close = difflib.get_close_matches(scheme, ours + known, n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        others = ", ".join(sorted(set(known) - set(ours)))
        raise BadInput(f"tracking URI {uri}: unknown scheme '{scheme}'{hint}; use {URI_FORMS} (MLflow also opens "
                       f"{others})")
    check = CHECKS.get(scheme)
    if check is not None:
        check(uri, timeout_s)


def _check_server(uri: str, timeout_s: float) -> None:
    try:
        requests.get(uri.rstrip("/") + "/health", timeout=timeout_s)
    except requests.RequestException as exc:
        raise BadInput(
            f"MLflow tracking server {uri} does not answer ({type(exc).__name__}); start it "
            f"(scanner ui / mlflow server) or pass --tracking-uri sqlite:///mlflow.db"
        ) from None


def _check_sqlite(uri: str, timeout_s: float) -> None:
    database = make_url(uri).database
    if not database or database == ":memory:":
        raise BadInput(f"tracking URI {uri}: an in-memory store is lost with the process; name a file, "
                       f"e.g. sqlite:///mlflow.db")
    path = Path(database).absolute()
    if path.is_dir():
        raise BadInput(f"MLflow store {uri}: {path} is a folder, not a database file; fix the path")
    _check_folder(uri, path.parent)


def _check_file_store(uri: str, timeout_s: float) -> None:
    allowed = getattr(environment_variables, "MLFLOW_ALLOW_FILE_STORE", None)  # absent before MLflow 3.x refused it
    if allowed is not None and not allowed.get():
        raise BadInput(f"MLflow store {uri}: MLflow no longer opens a file store unless MLFLOW_ALLOW_FILE_STORE=true; "
                       f"use sqlite:///PATH/mlflow.db ('mlflow migrate-filestore' converts one)")
    path = Path(url2pathname(urlparse(uri).path) if uri.startswith("file:") else uri).absolute()
    if path.exists() and not path.is_dir():
        raise BadInput(f"MLflow store {uri}: {path} is a file, not a folder; fix the path")
    _check_folder(uri, path if path.exists() else path.parent)  # the store's own folder is MLflow's to create


def _check_folder(uri: str, folder: Path) -> None:
    """The folder that will hold the store: it exists (a typo must not grow a tree of folders), and can be written."""
    if not folder.exists():
        blocking = next((p for p in folder.parents if p.exists()), None)
        if blocking is not None and not blocking.is_dir():
            raise BadInput(f"MLflow store {uri}: {blocking} is a file, not a folder; fix the path")
        raise BadInput(f"MLflow store {uri}: folder {folder} does not exist; create the folder or fix the path")
    if not folder.is_dir():
        raise BadInput(f"MLflow store {uri}: {folder} is a file, not a folder; fix the path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadInput(f"MLflow store {uri}: folder {folder} cannot be written; pass --tracking-uri with a folder "
                       f"you can write")


CHECKS: dict[str, Callable[[str, float], None]] = {  # our checks, by the scheme MLflow reads from the URI
    "http": _check_server,
    "https": _check_server,
    "sqlite": _check_sqlite,
    "file": _check_file_store,
    "": _check_file_store,  # a bare path: MLflow's file store
}


# --------------------------------------------------------------------------------------------- experiments and runs


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The sweep's experiment id, created once, in the driver (trials never create experiments: ray#36257)."""
    exp = client.get_experiment_by_name(name)
    if exp is None:  # it opens on its runs in the MLflow UI, not on the GenAI traces page
        return client.create_experiment(name, tags={Tag.EXPERIMENT_KIND: EXPERIMENT_KIND})
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


def find_runs_by_tag(client: MlflowClient, experiment_id: str, tags: Mapping[str, str],
                     page_size: int = SEARCH_PAGE) -> list[Run]:
    """Every run of one experiment whose tags match (all pages); oldest first, so the original of a duplicate wins."""
    clauses = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return sorted(search_all(client, experiment_id, clauses, page_size), key=lambda r: r.info.start_time or 0)


def search_all(client: MlflowClient, experiment_id: str, filter_string: str, page_size: int = SEARCH_PAGE) -> list[Run]:
    """Every run of one experiment that the filter matches, page after page (one page holds at most 1,000)."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=page_size,
                                  page_token=token)
        runs += page
        token = page.token
        if not token:
            return runs


STORE_CREATION_LOGGER = "mlflow.store.db.utils"  # "Creating initial MLflow database tables...": two INFO lines


def quiet_store_creation():
    """MLflow announces a new sqlite store's schema on stderr; a command's own output says what it made."""
    return scoped_log_level((STORE_CREATION_LOGGER,), logging.WARNING)
