"""What the writer does with an error: retry it (the store is away), report it (MLflow refused), or stop (a bug).

    transient(exc)   # retry with back-off: the network, HTTP 5xx/408/429, a timeout, a locked or full store
    refused(exc)     # MLflow (or the artifact store) said no to this record: drop it, and say so
    anything else    # a bug (KeyError, TypeError, ...): the writer stops and the next call raises WriterFailed

Classified by type and code, walking the exception's causes: MLflow wraps a network error in an
``MlflowException(INTERNAL_ERROR)`` raised from the ``requests`` error, a 5xx answer in one raised from
``requests.RetryError``, and a locked sqlite store in ``MlflowException(TEMPORARILY_UNAVAILABLE)`` raised from
sqlalchemy's ``OperationalError`` (itself raised from ``sqlite3.OperationalError``).
"""

from __future__ import annotations

import errno
import sqlite3
from typing import Iterator

import requests
from mlflow.exceptions import ERROR_CODE_TO_HTTP_STATUS, MlflowException, RestException

TRANSIENT_HTTP = frozenset({408, 429, 500, 502, 503, 504})  # the answers MLflow's own HTTP client retries
TRANSIENT_MLFLOW_CODES = frozenset(
    {"TEMPORARILY_UNAVAILABLE", "DEADLINE_EXCEEDED", "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED"}
)
NETWORK_ERRORS = (
    requests.ConnectionError,  # refused, reset, DNS, proxy, TLS handshake
    requests.Timeout,
    requests.exceptions.RetryError,  # a 5xx/429 answer once MLflow's retries (0 while a writer lives) are used up
    requests.exceptions.ChunkedEncodingError,  # the server died mid-answer
    ConnectionError,
    TimeoutError,
)
SQLITE_TRANSIENT = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_FULL})
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class WriterFailed(RuntimeError):
    """The writer's thread stopped on an error that is not MLflow's (a bug): raised by the next call on the writer.
    The journal keeps every record not yet written; the cause is chained (``raise ... from``)."""


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what it was raised from, and so on."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def disk_full(exc: BaseException) -> bool:
    """No space left: an OSError's ENOSPC/EDQUOT or sqlite's SQLITE_FULL, anywhere in the causes."""
    for link in causes(exc):
        if isinstance(link, OSError) and link.errno in FULL_ERRNOS:
            return True
        if isinstance(link, sqlite3.Error) and sqlite_code(link) == sqlite3.SQLITE_FULL:
            return True
    return False


def sqlite_code(exc: sqlite3.Error) -> int | None:
    """The primary result code (the low byte of an extended code such as SQLITE_BUSY_SNAPSHOT)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def _transient_link(link: BaseException) -> bool:
    if isinstance(link, NETWORK_ERRORS):
        return True
    if isinstance(link, requests.HTTPError):  # artifact uploads raise these for a bad status
        return link.response is not None and link.response.status_code in TRANSIENT_HTTP
    if isinstance(link, RestException):  # the server answered with an MLflow error: its HTTP status decides
        return ERROR_CODE_TO_HTTP_STATUS.get(link.error_code, 500) in TRANSIENT_HTTP
    if isinstance(link, MlflowException):
        return link.error_code in TRANSIENT_MLFLOW_CODES
    if isinstance(link, sqlite3.Error):
        return sqlite_code(link) in SQLITE_TRANSIENT
    return isinstance(link, OSError) and link.errno in FULL_ERRNOS


def transient(exc: BaseException) -> bool:
    """The store is away, busy or full: the same request can succeed later."""
    return any(_transient_link(link) for link in causes(exc))


def refused(exc: BaseException) -> bool:
    """MLflow, or the artifact store, refused this request for good (a changed param, a bad name, a deleted run,
    a permission): retrying cannot help."""
    return isinstance(exc, (MlflowException, OSError)) and not transient(exc)


def reason(exc: BaseException, limit: int = 400) -> str:
    """MLflow's own words, on one line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
