"""`scanner report NAME`: the ranking, physics and telemetry report of a sweep, from MLflow alone."""

from __future__ import annotations

from pathlib import Path

from scanner.cli.common import example_help


def register(sub, parent):
    p = sub.add_parser(
        "report", parents=[parent],
        help="rank a sweep's trials and write index.html, report.md and ranking.csv (works on running sweeps)",
        **example_help("scanner report demo --out report/ --at best"),
    )
    p.add_argument("name", help="sweep name (= MLflow experiment name)")
    p.add_argument("--out", type=Path, default=None, help="output folder; default scans/NAME/report")
    p.add_argument("--at", choices=("best", "last"), default="best",
                   help="score each trial at its best epoch (default) or its last epoch")
    p.add_argument("--no-log", action="store_true", help="do not log the report to the sweep's parent MLflow run")
    p.set_defaults(handler=run_report)


def run_report(args) -> int:
    from reports import load_sweep, write_report  # MLflow and pandas: not for --help

    out = (args.out or Path("scans") / args.name / "report").resolve()
    sweep = load_sweep(args.name, args.tracking_uri)
    if sweep.running:
        print(f"note: sweep '{args.name}' is still running; the report shows it as of now", flush=True)
    index = write_report(sweep, out, at=args.at, log_to_parent=not args.no_log)
    print(f"{len(sweep.trials)} trials ranked by {sweep.objective} ({sweep.mode}); report:")
    print(index)
    return 0
