"""``scanner evaluate TARGET --data FILE.h5 --label NAME [...]``: systematics, a trained model on detector variants.

    scanner data synth --out noisy.h5 --events 3000 --size 32 --seed 0 --noise 0.2 --dead-wires 0.05
    scanner evaluate finals-of:demo --data noisy.h5 --label noisy          # the baseline, finalists and replicas
    scanner evaluate best-of:demo --data noisy.h5 --label noisy --data hot.h5 --label hot
    scanner evaluate run:<run id> --data noisy.h5 --label noisy --split all

Each run gets ``syst/<label>/<metric>`` (e.g. ``syst/noisy/accuracy``, with ``_err``) and the artifacts
``syst/<label>/predictions.h5``; an original with seed replicas also ``seeds/syst/<label>/<metric>``, the mean over
its seeds. A variant must hold the training data's views, image shape and classes (or targets).
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from scanner.cli.common import example_help
from trainables.contract import metric_key, syst_prefix
from trainables.errors import BadInput

SPLITS = ("all", "train", "val", "test")
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # part of a metric name: no '/', nothing MLflow refuses


def register(sub, parent) -> None:
    p = sub.add_parser(
        "evaluate", parents=[parent],
        help="evaluate trained checkpoints on detector variants (systematics): syst/<label>/... in MLflow",
        description="Evaluate the checkpoints of TARGET, with the weights and BatchNorm statistics the finals used, "
                    "on detector variants of the training data; log syst/<label>/<metric> to each run.",
        **example_help("scanner evaluate finals-of:demo --data noisy.h5 --label noisy"),
    )
    p.add_argument("target", help="run:<run id> (or a bare run id), best-of:<sweep>, or finals-of:<sweep> "
                                  "(the baseline, the finalists and their seed replicas)")
    p.add_argument("--data", action="append", type=Path, required=True, metavar="FILE.h5",
                   help="a variant events file (repeat with one --label each)")
    p.add_argument("--label", action="append", required=True, metavar="NAME",
                   help="the variant's name in the metric names, e.g. noisy -> syst/noisy/accuracy")
    p.add_argument("--split", choices=SPLITS, default=None,
                   help="events of the variant to use; default its test split when the file has a split dataset, "
                        "else all of it")
    p.set_defaults(handler=run_evaluate)


def labelled_variants(files: list[Path], labels: list[str]) -> list[tuple[str, Path]]:
    """(label, absolute path) pairs, in the order given; BadInput on a count mismatch, a bad or repeated label."""
    if len(files) != len(labels):
        raise BadInput(f"{len(files)} --data but {len(labels)} --label; fix: give one --label after each --data")
    for label in labels:
        if not LABEL.fullmatch(label):
            raise BadInput(f"--label '{label}': it becomes part of metric names (syst/<label>/...), so letters, "
                           f"digits, '_', '-' and '.' only; fix: e.g. --label {metric_key(label).strip('_.-') or 'v1'}")
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise BadInput(f"--label {repeated[0]} is given twice; fix: one label per variant")
    return [(label, Path(f).expanduser().resolve()) for label, f in zip(labels, files)]


def run_evaluate(args) -> int:
    # reason: torch, MLflow and the reports load only when the verb runs, not for `scanner --help`
    from reports import client_for
    from scanner import systematics as syst
    from scanner.tracking import check_reachable

    labelled = labelled_variants(args.data, args.label)
    check_reachable(args.tracking_uri)
    client = client_for(args.tracking_uri, sought=f"'{args.target}'")  # reading: a missing store is not created
    runs = syst.target_runs(args.target, args.tracking_uri, client)
    checkpoints = syst.load_checkpoints(runs, args.target, args.tracking_uri, client)
    jobs = syst.plan_jobs(checkpoints, labelled, args.split)
    with tempfile.TemporaryDirectory(prefix="scanner-evaluate-") as scratch:
        results = syst.evaluate_jobs(jobs, Path(scratch), say=lambda line: print(line, file=sys.stderr))
        aggregates = syst.seed_aggregates(results)
        syst.log_results(client, results, aggregates)
    print("\n".join(syst.shift_table(results, aggregates)))
    names = ", ".join(f"{syst_prefix(label)}/..." for label, _ in labelled)
    print(f"logged {names} to {len(checkpoints)} run(s) in {args.tracking_uri}; the report's Systematics section "
          "shows them (scanner report NAME)")
    return 0
