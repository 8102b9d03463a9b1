"""The ``scanner`` command line. Every verb lives in its own ``scanner/_cmd_*.py`` module.

    scanner data synth --out lartpc.h5 --events 5000           # synthetic two-view LArTPC events
    scanner data inspect lartpc.h5 --display events.png         # shapes, classes, splits, an event display
    scanner train search_spaces/demo.yaml --set lr=3e-3         # one trial, no Ray, logged to MLflow
    scanner run search_spaces/demo.yaml --dry-run               # the plan, nothing started
    scanner run search_spaces/demo.yaml                         # the sweep
    scanner resume demo                                         # finish an interrupted sweep
    scanner report demo --out report/                           # ranking, physics and telemetry report
    scanner ui                                                  # the MLflow UI on this folder's store
    scanner slurm space.yaml --nodes 4 --gpus-per-node 4        # an sbatch script for a Ray cluster

Exit status: 0 ok, 1 the sweep ran but trials failed, 2 bad input (one line; the traceback only with --debug).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import textwrap
from pathlib import Path
from typing import Sequence

VERB_MODULES = ("data", "train", "run", "report", "ui", "slurm")


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage + message; a user wants one line that says what to do."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def default_tracking_uri(cwd: Path | None = None) -> str:
    """The flag, else ``MLFLOW_TRACKING_URI``, else sqlite in the working folder, made absolute."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return absolute_tracking_uri(env)
    return f"sqlite:///{((cwd or Path.cwd()) / 'mlflow.db').resolve()}"


def absolute_tracking_uri(uri: str) -> str:
    """Tune runs each trial in its own folder: a relative sqlite or file path would point elsewhere there."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    if uri.startswith("file:") or "://" in uri:
        return uri
    return Path(uri).resolve().as_uri()


def common_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--tracking-uri", help="MLflow store; default $MLFLOW_TRACKING_URI, else ./mlflow.db")
    parent.add_argument("--debug", action="store_true", help="show tracebacks")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="scanner",
        description="Tune deep-learning models on detector data: Ray Tune + Optuna sweeps, tracked in MLflow.",
        epilog=textwrap.dedent(__doc__.split("\n\n")[1]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=OneLineParser)
    sub.required = True
    parent = common_parent()
    for name in VERB_MODULES:
        importlib.import_module(f"scanner._cmd_{name}").register(sub, parent)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.tracking_uri = absolute_tracking_uri(args.tracking_uri) if args.tracking_uri else default_tracking_uri()
    from scanner.errors import bad_input_types

    try:
        return int(args.handler(args) or 0)
    except bad_input_types() as exc:
        if args.debug:
            raise
        print(f"scanner {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"scanner {args.verb}: interrupted", file=sys.stderr)
        return 130


def example_help(text: str) -> dict:
    """kwargs for ``add_parser`` so every verb's --help ends with a runnable example."""
    return {"epilog": "example:\n  " + text, "formatter_class": argparse.RawDescriptionHelpFormatter}
