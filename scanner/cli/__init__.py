"""The ``scanner`` command line. Every verb lives in its own module here (``scanner/cli/<verb>.py``).

    scanner data synth --out lartpc.h5 --events 5000           # synthetic two-view LArTPC events
    scanner data inspect lartpc.h5 --display events.png         # shapes, classes, splits, an event display
    scanner train search_spaces/demo.yaml --set lr=3e-3         # one trial, no Ray, logged to MLflow
    scanner run search_spaces/demo.yaml --dry-run               # the plan, nothing started
    scanner run search_spaces/demo.yaml                         # the sweep
    scanner resume demo                                         # finish an interrupted sweep
    scanner report demo --out report/                           # ranking, physics and telemetry report
    scanner evaluate finals-of:demo --data noisy.h5 --label noisy  # the finals on a detector variant
    scanner export best-of:demo --out demo.onnx                 # ONNX, checked against PyTorch on real events
    scanner explain best-of:demo --events 6 --method occlusion  # attribution maps over the event display
    scanner ui                                                  # the MLflow UI on this folder's store
    scanner slurm space.yaml --nodes 4 --gpus-per-node 4        # an sbatch script for a Ray cluster

Exit status: 0 ok, 1 the sweep ran but trials failed, 2 bad input (one line; the traceback only with --debug).
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from typing import Sequence

from scanner.cli import data, evaluate, explain, export, report, resume, run, slurm, train, ui
from scanner.cli.common import OneLineParser, absolute_tracking_uri, common_parent, default_tracking_uri
from scanner.errors import Interrupted, SweepFailed
from trainables.environ import scoped_environ
from trainables.errors import BadInput

PROGRESS_BARS = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"  # MLflow's download bars: off unless the user asks
VERBS = (data, train, run, resume, report, evaluate, export, explain, ui, slurm)

__all__ = ["build_parser", "main", "absolute_tracking_uri", "default_tracking_uri"]


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
    for verb in VERBS:
        verb.register(sub, parent)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.tracking_uri = absolute_tracking_uri(args.tracking_uri) if args.tracking_uri else default_tracking_uri()
    try:
        with scoped_environ(**{PROGRESS_BARS: os.environ.get(PROGRESS_BARS, "false")}):  # a command prints lines
            return int(args.handler(args) or 0)
    except BadInput as exc:
        if args.debug:
            raise
        print(f"scanner {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"scanner {args.verb}: {exc}", file=sys.stderr)
        return 130
    except SweepFailed as exc:
        if args.debug:
            raise
        print(f"scanner {args.verb}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"scanner {args.verb}: interrupted", file=sys.stderr)
        return 130
