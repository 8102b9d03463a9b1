"""``scanner run SPACE.yaml``: a sweep, or with --dry-run its plan."""

from __future__ import annotations

from functools import partial

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
    from scanner.sweep.setup import dry_run, local_cluster  # torch and MLflow: not for --help

    if args.dry_run:
        cluster = partial(cluster_resources_at, args.address) if args.address else local_cluster
        print(dry_run(args.space, args.trials, args.tracking_uri, cluster))
        return 0
    from scanner.sweep.lifecycle import run_sweep  # Ray and Tune load only when a sweep really runs

    return run_sweep(args.space, args.tracking_uri, address=args.address, trials=args.trials, quiet=args.quiet)


def cluster_resources_at(address: str) -> tuple[float, float]:
    """CPUs and GPUs of the cluster at ``address``: they set how many trials run at once. Joining starts nothing
    on it; the connection is closed before returning."""
    from scanner.cluster import cluster_resources, ray_init, stop_ray  # Ray loads only with --address

    started = ray_init(address)
    try:
        return cluster_resources()
    finally:
        if started:
            stop_ray()
