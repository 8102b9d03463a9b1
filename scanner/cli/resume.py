"""``scanner resume NAME``: finish an interrupted sweep from ``scans/NAME/scan.json``."""

from __future__ import annotations

from scanner.cli.common import example_help


def register(sub, parent) -> None:
    r = sub.add_parser(
        "resume",
        parents=[parent],
        help="finish an interrupted sweep from scans/NAME/scan.json",
        description="Finish an interrupted sweep: Tune restores its trials and searcher; MLflow keeps one run per trial.",
        **example_help("scanner resume demo"),
    )
    r.add_argument("name", help="the sweep name (the folder under scans/)")
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    r.set_defaults(handler=resume_command)


def resume_command(args) -> int:
    from scanner.sweep.lifecycle import resume_sweep  # Ray and Tune load only when a sweep really runs

    return resume_sweep(args.name, args.tracking_uri, quiet=args.quiet)
