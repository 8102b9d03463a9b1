"""How a command ends other than by bad input (``trainables.errors.BadInput``: one line, exit 2)."""

from __future__ import annotations


class Interrupted(Exception):
    """Ctrl-C, handled: the message says what was kept and what to run next (exit 130)."""


class SweepFailed(Exception):
    """The sweep ran but cannot go on (every trial fails alike, no space left): one line, exit 1."""
