"""The few places where a report needs more of MLflow than ``MlflowClient``'s public methods give, each in one small
function pinned by a test (tests/reports/test_report_mlflow_compat.py), so an MLflow upgrade that moves them fails
there, in one place:

- ``latest_steps(run)``: the step of each metric's latest value (``Run.data.metrics`` has the values only);
- ``bulk_histories(client, run_ids, key)``: one metric's history for many runs in one store call
  (``get_metric_history_bulk_interval`` of the tracking store; the client has no bulk history call).

And opening a store to read without creating one: MLflow creates an empty ``mlflow.db`` for any sqlite URI it opens.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import unquote, urlparse

from reports.errors import ReportInputError
from trainables.environ import scoped_environ

PROBE_TIMEOUT_S = 3.0  # a remote store that does not answer within this is reported as unreachable
HISTORY_MAX_POINTS = 100_000  # per run and metric: more than any sweep logs, so the store samples nothing away
QUIET_MLFLOW = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # a report prints one line, not progress bars


def local_store_path(tracking_uri: str) -> Path | None:
    """The file (sqlite) or folder (file store) a local URI names; None for a server or an in-memory database."""
    if tracking_uri.startswith("sqlite:"):
        if not tracking_uri.startswith("sqlite:///"):
            return None  # sqlite:// is an in-memory database
        path = unquote(tracking_uri[len("sqlite:///"):].split("?", 1)[0])  # sqlite:///rel.db, sqlite:////abs.db
        return None if path in ("", ":memory:") else Path(path)
    if tracking_uri.startswith("file:"):
        return Path(unquote(urlparse(tracking_uri).path))
    if "://" not in tracking_uri:
        return Path(tracking_uri)
    return None


def check_readable_store(tracking_uri: str, sought: str = "sweep") -> None:
    """Reading a store must not create one: a missing sqlite file or store folder is one line naming the path and
    what was sought there (``sweep 'demo'``, ``'best-of:demo'``)."""
    path = local_store_path(tracking_uri)
    if path is not None and not path.exists():
        raise ReportInputError(f"no MLflow store at {path.absolute()} (from {tracking_uri}), so no {sought} there; "
                               "run the command in the folder where the sweep ran, or pass --tracking-uri")


def probe_server(tracking_uri: str) -> None:
    """Fail fast, in one line, on a server that is down: MLflow itself would retry for minutes.

    A socket probe rather than MLFLOW_HTTP_REQUEST_MAX_RETRIES=0: the report may run inside ``scanner run``, whose
    own logging must keep MLflow's retries."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    url = urlparse(tracking_uri)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise ReportInputError(
            f"MLflow server {tracking_uri} is unreachable ({exc.strerror or exc}); start it or pass --tracking-uri"
        ) from None


def open_client(tracking_uri: str, must_exist: bool = True, sought: str = "sweep"):
    """An ``MlflowClient`` on an existing store (``must_exist``: refuse to create one), or on a live server."""
    from mlflow.tracking import MlflowClient  # mlflow is slow to import: not for `scanner --help`

    if must_exist:
        check_readable_store(tracking_uri, sought)
    probe_server(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri)


def quiet_mlflow():
    """MLflow's artifact progress bars off while a report runs, restored afterwards (a notebook keeps its own)."""
    return scoped_environ(**{k: os.environ.get(k, v) for k, v in QUIET_MLFLOW.items()})  # a user's choice stays


def latest_steps(run) -> dict[str, int]:
    """{metric: step of its latest value} of a ``Run`` from ``search_runs``/``get_run``.

    ``RunData`` keeps the latest ``Metric`` objects (with their steps) in ``_metric_objs``; ``to_proto()`` would give
    the same publicly, at ~20x the cost for a 1,000-run sweep."""
    return {m.key: int(m.step) for m in run.data._metric_objs}


def bulk_histories(client, run_ids: list[str], key: str) -> dict[str, list[tuple[int, float]]]:
    """{run_id: [(step, value), ...] sorted by step} of metric ``key`` for many runs in one store call.

    The tracking store's ``get_metric_history_bulk_interval`` (MLflow >= 2.x; sqlite/SQL stores answer it with one
    session, other stores fall back to one history call per run). ``MlflowClient`` does not expose it."""
    store = client._tracking_client.store
    rows = store.get_metric_history_bulk_interval(run_ids, key, max_results=HISTORY_MAX_POINTS, start_step=None,
                                                  end_step=None)
    out: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        out.setdefault(row.run_id, []).append((int(row.step), float(row.value)))
    return {rid: sorted(points) for rid, points in out.items()}
