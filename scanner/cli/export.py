"""`scanner export TARGET --out model.onnx`: the trial's evaluated model as one ONNX file, checked on real events.

    scanner export best-of:demo --out demo.onnx                       # the sweep's best trial
    scanner export run:3f2a... --out m.onnx --opset 20 --tolerance 1e-5
    scanner export scans/_train/demo/<run>/best --out m.onnx --parity-data moved/lartpc.h5   # no run: nothing logged

TARGET: ``run:<id>`` or a bare run id, ``best-of:<sweep>``, or a checkpoint folder (the one holding state.pt).
This module also holds the TARGET resolution that ``scanner explain`` shares.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scanner.cli.common import example_help
from trainables.config import DataConfig
from trainables.contract import Artifact, Tag
from trainables.errors import BadInput

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient


def register(sub, parent) -> None:
    p = sub.add_parser(
        "export", parents=[parent],
        help="write a trial's model as one ONNX file, checked against PyTorch on validation events",
        description="Export the evaluated model of one trial (EMA weights when EMA was on) to ONNX. The graph takes "
                    "the images as stored (N, C, H, W) cast to float32, divides by the file's pixel scale and returns "
                    "scores (softmax) or pred, as predictions.h5. Parity with PyTorch is checked on every export; "
                    "above --tolerance the export is refused (exit 1) and nothing is written.",
        **example_help("scanner export best-of:demo --out demo.onnx"),
    )
    p.add_argument("target", help="run:<id> | <run id> | best-of:<sweep> | a checkpoint folder")
    p.add_argument("--out", required=True, type=Path, help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset, 18..23 (default 18: the most widely loadable)")
    p.add_argument("--parity-data", type=Path, metavar="FILE",
                   help="the trial's events file, when it has moved (default: the file the trial trained on)")
    p.add_argument("--parity-events", type=int, default=256, metavar="N",
                   help="validation events of the parity check (default 256)")
    p.add_argument("--tolerance", type=float, default=1e-4, help="largest accepted max |Δ| (default 1e-4)")
    p.set_defaults(handler=run_export)


# --------------------------------------------------------------------------------------------- TARGET resolution


@dataclass
class TrialTarget:
    checkpoint: Path
    state: dict[str, Any]  # its state.pt, loaded once
    run: "Run | None" = None  # None: a checkpoint folder given directly, nothing is logged
    data: DataConfig | None = None  # the events file and dataset names it trained on, when known

    @property
    def run_id(self) -> str | None:
        return self.run.info.run_id if self.run is not None else None

    @property
    def run_tags(self) -> dict[str, str]:
        return dict(self.run.data.tags) if self.run is not None else {}


def resolve_trial(target: str, tracking_uri: str, moved_to: Path | None = None) -> TrialTarget:
    """A checkpoint folder as is; ``run:``/``best-of:``/a bare run id through MLflow (scanner.targets). The data:
    ``moved_to`` under the sweep's dataset names, else the sweep's ``space.yaml``, else the file the checkpoint
    names (scanner.systematics.training_data, as ``scanner evaluate`` finds it)."""
    # onnx, onnxruntime and torch: not for --help
    from scanner.systematics import training_data  # torch and MLflow: not for --help
    from scanner.targets import PREFIXES, resolve_run
    from trainables.trial_model import checkpoint_state

    if moved_to is not None and not Path(moved_to).is_file():
        raise BadInput(f"{moved_to}: file not found; fix: give the trial's HDF5 events file")
    path = Path(target).expanduser()
    run = None
    if not target.startswith(PREFIXES) and (path.is_dir() or path.name == Artifact.STATE):
        folder = (path.parent if path.name == Artifact.STATE else path).resolve()
    else:
        resolved = resolve_run(target, tracking_uri)  # a missing store is one line there, and none is created
        folder, run = Path(resolved.checkpoint), tracking_client(tracking_uri).get_run(resolved.run_id)
    state = checkpoint_state(folder)
    data = training_data(run, tracking_client(tracking_uri), state["meta"], {}) if run is not None else None
    if moved_to is not None:
        moved = str(Path(moved_to).resolve())
        data = dataclasses.replace(data, path=moved) if data is not None else DataConfig(path=moved)
    return TrialTarget(folder, state, run, data)


def tracking_client(tracking_uri: str) -> "MlflowClient":
    from reports import client_for  # MLflow is slow to import: not for --help

    return client_for(tracking_uri)


def check_writable_file(out: Path, flag: str = "--out") -> Path:
    """Refuse an unwritable destination before minutes of work, not after."""
    out = Path(out).expanduser().resolve()
    if out.is_dir():
        raise BadInput(f"{flag} {out}: is a folder; fix: give a file name, e.g. {out / 'model.onnx'}")
    folder = out.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise BadInput(f"{flag} {out}: {folder} is not a writable folder; fix: choose a writable place")
    return out


def provenance(target: TrialTarget, meta: dict[str, Any]) -> tuple[str, str | None]:
    """The training code's git sha and the data hash, from the run's tags, else the checkpoint's meta."""
    git = target.run_tags.get(Tag.GIT_SHA) or meta.get("git_sha") or ""
    return git, target.run_tags.get(Tag.DATA_HASH) or meta.get("data_hash")


# --------------------------------------------------------------------------------------------------- the verb


def run_export(args) -> int:
    # onnx, onnxruntime and torch: not for --help
    from trainables.data import data_hash  # torch, onnx and onnxruntime: not for --help
    from trainables.export import DEFAULT_OPSET, ParityRefused, check_opset, export_trial, onnx_metadata
    from trainables.trial_model import load_trial, read_stored

    opset = args.opset if args.opset is not None else DEFAULT_OPSET
    check_opset(opset)
    if args.parity_events < 1:
        raise BadInput(f"--parity-events {args.parity_events}: give a number of events >= 1")
    if not args.tolerance >= 0:
        raise BadInput(f"--tolerance {args.tolerance}: give a non-negative number, e.g. 1e-4")
    out = check_writable_file(args.out)
    target = resolve_trial(args.target, args.tracking_uri, args.parity_data)
    trial = load_trial(target.checkpoint, target.data, target.state)
    git, hashed = provenance(target, trial.meta)
    trial.data_hash = hashed or data_hash(trial.data.path)
    index, images = read_stored(trial.data, trial.task, "val", args.parity_events)
    metadata = onnx_metadata(trial, target.run_id or "", git)
    where = f"{len(index)} validation events of {trial.data.path}"
    try:
        result = export_trial(trial, images, out, opset, args.tolerance, metadata)
    except ParityRefused as refused:
        _log_parity(args.tracking_uri, target.run_id, refused.parity.metrics())
        print(f"scanner export: {trial.name} ({trial.weights}) on {where}: {refused}", file=sys.stderr)
        return 1
    parity = result.parity
    print(f"parity on {where}: max |Δ| {parity.max_abs_diff:.3g} (tolerance {args.tolerance:.3g}), "
          f"argmax agreement {parity.agreement_text()}")
    _log_parity(args.tracking_uri, target.run_id, parity.metrics())
    logged = ""
    if target.run_id:
        tracking_client(args.tracking_uri).log_artifact(target.run_id, str(out), Artifact.EXPORT_DIR)
        logged = f"; logged to run {target.run_id} as {Artifact.EXPORT_DIR}/{out.name}"
    print(f"wrote {trial.name} ({trial.weights} weights, opset {result.opset}, input {trial.image_shape} "
          f"float32, output '{trial.output_name}'){logged}:")
    print(out)
    return 0


def _log_parity(tracking_uri: str, run_id: str | None, metrics: dict[str, float]) -> None:
    if not run_id:
        return
    client = tracking_client(tracking_uri)
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
