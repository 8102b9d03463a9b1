"""Python's cyclic garbage collector paused while a report builds thousands of short-lived objects (SQLAlchemy rows
and MLflow entities of a 1,000-run sweep, matplotlib artists): its passes took more than half of the fetch. The
collector is switched back on afterwards (if it was on), and collects then; reference counting frees most objects
meanwhile, as always.

    with paused_gc():
        runs = client.search_runs(...)
"""

from __future__ import annotations

import contextlib
import gc
from typing import Iterator


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
