"""`scanner explain TARGET`: attribution maps of a trial's outputs on validation events, drawn over the events.

    scanner explain best-of:demo                                  # occlusion, 6 events spread over the classes
    scanner explain best-of:demo --method saliency --events 12 --out maps/
    scanner explain run:3f2a... --index 17,230,981 --method integrated-gradients
    scanner explain scans/_train/demo/<run>/best --patch 4 --stride 2       # a checkpoint folder: nothing logged

Writes event_<i>.png per event, explain.html, explain.json and maps.npz to --out (default explain/), and logs them
to the run under explain/.
"""

from __future__ import annotations

from pathlib import Path

from scanner.cli.common import example_help
from trainables.contract import Artifact
from scanner.cli.export import resolve_trial, tracking_client
from trainables.errors import BadInput

METHOD_NAMES = ("occlusion", "saliency", "integrated-gradients")  # trainables.explain.METHODS, without torch


def register(sub, parent) -> None:
    p = sub.add_parser(
        "explain", parents=[parent],
        help="attribution maps (occlusion, saliency, integrated gradients) over validation events",
        description="Which pixels drive a trial's output: captum attribution maps for chosen validation events, per "
                    "view, for the predicted and the true class (regression: each target), drawn over the event "
                    "display. Occlusion is batched and skips copies it has already evaluated.",
        **example_help("scanner explain best-of:demo --events 6 --method occlusion"),
    )
    p.add_argument("target", help="run:<id> | <run id> | best-of:<sweep> | a checkpoint folder")
    p.add_argument("--events", type=int, default=6, metavar="N",
                   help="N validation events, spread evenly over the classes (default 6)")
    p.add_argument("--index", metavar="I,J,K", help="these file indices instead of --events")
    p.add_argument("--method", choices=METHOD_NAMES, default="occlusion", help="default occlusion")
    p.add_argument("--patch", type=int, default=8, help="occlusion: side of the hidden square, pixels (default 8)")
    p.add_argument("--stride", type=int, default=4, help="occlusion: step between patches, pixels (default 4)")
    p.add_argument("--batch", type=int, default=64,
                   help="occluded copies / integration steps per forward pass (default 64)")
    p.add_argument("--out", type=Path, default=Path("explain"), help="output folder (default explain/)")
    p.add_argument("--data", type=Path, metavar="FILE", help="the trial's events file, when it has moved")
    p.set_defaults(handler=run_explain)


def parse_index(text: str) -> list[int]:
    try:
        index = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise BadInput(f"--index {text}: expected comma-separated event numbers, e.g. --index 17,230,981") from None
    if not index:
        raise BadInput(f"--index '{text}': no event numbers; e.g. --index 17,230,981")
    return index


def run_explain(args) -> int:
    import numpy as np  # torch and captum below: not for --help

    # captum and torch: not for --help
    from trainables.explain import ExplainOptions, explain_events, pick_events
    from trainables.explain_files import PAGE, write_explanation
    from trainables.trial_model import load_trial

    options = ExplainOptions(method=args.method, patch=args.patch, stride=args.stride, batch=args.batch)
    index = parse_index(args.index) if args.index else None
    out = Path(args.out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out}: is a file; fix: give a folder, e.g. --out explain/")
    target = resolve_trial(args.target, args.tracking_uri, args.data)
    trial = load_trial(target.checkpoint, target.data, target.state)
    options.check(trial.image_shape)
    chosen = np.asarray(index) if index is not None else pick_events(trial, args.events)
    explanation = explain_events(trial, chosen, options)
    files = write_explanation(explanation, out, target.run_id or "")
    print(f"{args.method} maps of {len(explanation.events)} events ({trial.name}, {trial.weights} weights, "
          f"{explanation.forwards} model evaluations)")
    if target.run_id:
        client = tracking_client(args.tracking_uri)
        for path in files:
            client.log_artifact(target.run_id, str(path), Artifact.EXPLAIN_DIR)
        print(f"logged to run {target.run_id} under {Artifact.EXPLAIN_DIR}/")
    print(out / PAGE)
    return 0
