"""``scanner run SPACE.yaml`` and ``scanner resume NAME``."""

from __future__ import annotations

from scanner.cli import example_help


def register(sub, parent) -> None:
    p = sub.add_parser(
        "run",
        parents=[parent],
        help="run a sweep: Ray Tune + Optuna, tracked in MLflow",
        description="Run a sweep of a search-space YAML; writes scans/<name>/ and one MLflow experiment.",
        **example_help("scanner run search_spaces/demo.yaml --dry-run"),
    )
    p.add_argument("space", help="search-space YAML")
    p.add_argument("--address", help="join a Ray cluster (auto, host:port or ray://host:port) instead of a private one")
    p.add_argument("--dry-run", action="store_true", help="print the plan and start nothing")
    p.add_argument("--trials", type=int, help="override budget.trials (the baseline comes on top)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(handler=run_command)

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


def run_command(args) -> int:
    from scanner.sweep import dry_run, run_sweep

    if args.dry_run:
        print(dry_run(args.space, args.trials))
        return 0
    return run_sweep(args.space, args.tracking_uri, address=args.address, trials=args.trials, quiet=args.quiet)


def resume_command(args) -> int:
    from scanner.resume import resume_sweep

    return resume_sweep(args.name, args.tracking_uri, quiet=args.quiet)
