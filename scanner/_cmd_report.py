"""`scanner report` (placeholder until its issue lands)."""

from scanner.cli import example_help


def register(sub, parent):
    p = sub.add_parser("report", parents=[parent], help="(not yet built)", **example_help("scanner report --help"))
    p.set_defaults(handler=lambda args: (_ for _ in ()).throw(NotImplementedError("scanner report")))
