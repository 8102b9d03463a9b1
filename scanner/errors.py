"""Which exceptions are bad input (one line, exit 2) rather than a bug (traceback)."""

from __future__ import annotations

from trainables.errors import BadInput


def bad_input_types() -> tuple[type[BaseException], ...]:
    """BadInput from trainables/search_spaces/scanner, plus reports' own (reports may not import trainables)."""
    from reports.errors import ReportInputError

    return (BadInput, ReportInputError)
