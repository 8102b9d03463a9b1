"""``scanner run SPACE.yaml``: a sweep, or with --dry-run its plan."""

from __future__ import annotations

from scanner.cli.common import example_help


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


def run_command(args) -> int:
    from scanner.sweep.setup import dry_run  # the sweep's modules load torch and MLflow: not for --help

    if args.dry_run and args.address:
        print(cluster_plan(args.space, args.trials, args.address))
        return 0
    if args.dry_run:
        print(dry_run(args.space, args.trials, args.tracking_uri))
        return 0
    from scanner.sweep.lifecycle import run_sweep  # Ray and Tune load only when a sweep really runs

    return run_sweep(args.space, args.tracking_uri, address=args.address, trials=args.trials, quiet=args.quiet)


def cluster_plan(space_path: str, trials: int | None, address: str) -> str:
    """The plan against the cluster at ``address``: its CPUs and GPUs set how many trials run at once. Joining
    starts nothing on it; the connection is closed before returning."""
    from scanner.cluster import cluster_resources, ray_init, stop_ray  # Ray loads only with --address
    from scanner.sweep.setup import with_trials
    from search_spaces import format_plan, load_space

    space = with_trials(load_space(space_path), trials)
    started = ray_init(address)
    try:
        cpus, gpus = cluster_resources()
    finally:
        if started:
            stop_ray()
    return format_plan(space, cpus, gpus)
