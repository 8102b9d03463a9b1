"""Bad input to a report (unknown sweep, unreachable store): one line and exit 2 in the CLI."""

from trainables.errors import BadInput


class ReportInputError(BadInput):
    """The message names the thing and the fix."""
