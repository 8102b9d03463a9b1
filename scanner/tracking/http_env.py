"""MLflow's own HTTP retries, off while a spooled writer lives, and back as they were once the last one closes.

MLflow retries each HTTP request itself, blocking its caller for minutes; the writer retries on its own, so it wants
one attempt each. MLflow reads these settings from the environment at every request, so they are process-wide: held
by a count, they do not outlive the writers and leak into a report, a notebook's MlflowClient or a test's.
"""

from __future__ import annotations

import os
import threading

WRITER_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}

_lock = threading.Lock()
_holders = 0
_before: dict[str, str | None] = {}  # what the environment held when the first writer opened


def hold_fail_fast() -> None:
    """One attempt per request, 10 s each, until every holder has released. A user's own setting wins."""
    global _holders
    with _lock:
        if _holders == 0:
            _before.clear()
            for key, value in WRITER_HTTP_ENV.items():
                _before[key] = os.environ.get(key)
                os.environ.setdefault(key, value)
        _holders += 1


def release_fail_fast() -> None:
    global _holders
    with _lock:
        _holders = max(0, _holders - 1)
        if _holders:
            return
        for key, value in _before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
