"""Errors that the CLI turns into one line and exit status 2 (bad input), or into a failed trial."""

from __future__ import annotations


class BadInput(ValueError):
    """A user's input is wrong: a file, a key, a value. The message names the thing and the fix."""


class TrialDiverged(RuntimeError):
    """The loss went NaN/inf: the trial stops with this reason (``scan.failure``), the caller goes on."""
