"""Bad input to a report (unknown sweep, unreachable store): one line and exit 2 in the CLI."""


class ReportInputError(ValueError):
    """The message names the thing and the fix."""
