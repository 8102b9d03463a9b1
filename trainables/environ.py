"""Process-wide settings a library reads (environment variables, logger levels), set for a while and then
restored: a notebook user who calls the Python API must find the process as it was.

    with scoped_environ(HF_HUB_OFFLINE="1", TUNE_DISABLE_SIGINT_HANDLER="1"):
        ...
    with scoped_log_level(("ray.tune",), logging.CRITICAL):
        ...
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator


@contextlib.contextmanager
def scoped_environ(**values: str | None) -> Iterator[None]:
    """Set (or, with None, remove) these variables inside the block; each gets its old value back afterwards."""
    old = {key: os.environ.get(key) for key in values}
    try:
        for key, value in values.items():
            _put(key, value)
        yield
    finally:
        for key, value in old.items():
            _put(key, value)


def _put(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


@contextlib.contextmanager
def scoped_log_level(names: tuple[str, ...], level: int) -> Iterator[None]:
    """These loggers at ``level`` inside the block, then at their own level again."""
    loggers = [logging.getLogger(name) for name in names]
    before = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, old in zip(loggers, before):
            logger.setLevel(old)
