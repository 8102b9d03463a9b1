"""``scanner train SPACE.yaml [--set key=value ...]``: one trial, no Ray, logged straight to MLflow.

It trains ``fixed`` + ``baseline`` + the ``--set`` overrides for ``budget.max_epochs`` epochs, so any sweep file is
also a single-run training config.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from scanner.cli.common import example_help


def register(sub, parent) -> None:
    p = sub.add_parser(
        "train",
        parents=[parent],
        help="train one config of a space file (fixed + baseline + --set), no Ray",
        description="Train one config (fixed + baseline + --set overrides) and log it to MLflow.",
        **example_help("scanner train search_spaces/demo.yaml --set model=small_cnn --set lr=3e-3"),
    )
    p.add_argument("space", help="search-space YAML (only `fixed` is required for a training config)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a trial key")
    p.add_argument("--epochs", type=int, metavar="N", help="train N epochs instead of budget.max_epochs")
    p.set_defaults(handler=run_train)


class MlflowRunReporter:
    """Adapts the loop's reporter interface to one MLflow run: metrics with step = epoch, the best checkpoint kept."""

    def __init__(self, client, run_id: str, checkpoint_root: Path):
        self.client, self.run_id, self.root = client, run_id, checkpoint_root
        self.best_dir = checkpoint_root / "best"

    def resume_from(self) -> Path | None:
        return None

    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path, is_best: bool) -> None:
        from mlflow.entities import Metric

        from scanner.tracking import MAX_BATCH_METRICS, log_checkpoint_artifacts

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, epoch) for k, v in metrics.items() if "/" in k]  # not the plain keys
        for start in range(0, len(batch), MAX_BATCH_METRICS):
            self.client.log_batch(self.run_id, metrics=batch[start : start + MAX_BATCH_METRICS])
        _replace_tree(checkpoint_dir, self.root / "latest")
        if is_best:
            _replace_tree(checkpoint_dir, self.best_dir)
            log_checkpoint_artifacts(self.client, self.run_id, self.best_dir, artifact_path="val")
            self.client.set_tag(self.run_id, "scan.checkpoint", str(self.best_dir))


def _replace_tree(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


def run_train(args) -> int:
    from mlflow.tracking import MlflowClient

    from scanner.targets import resolve_init
    from scanner.tracking import check_reachable, ensure_experiment, git_sha, trial_run_name, trial_tags
    from search_spaces import load_space, parse_set, train_config
    from trainables.config import TrialSpec
    from trainables.data import data_hash, open_events
    from trainables.errors import BadInput

    if args.epochs is not None and args.epochs < 1:
        raise BadInput(f"--epochs {args.epochs}: give a number of epochs >= 1")
    space = load_space(args.space, overrides=parse_set(args.set))
    events = open_events(space.data, space.task)  # schema errors before any run exists
    check_reachable(args.tracking_uri)
    cfg = train_config(space)
    if cfg.mode != "scratch":
        cfg = cfg.replace(init=resolve_init(cfg.init, args.tracking_uri))
    client = MlflowClient(args.tracking_uri)
    experiment_id = ensure_experiment(client, space.name)
    tags = trial_tags(
        name=space.name,
        trial_id=f"train-{time.strftime('%Y%m%d-%H%M%S')}",
        space_hash=space.space_hash,
        git_sha=git_sha(),
        data_hash=data_hash(space.data.path),
        baseline=False,
        varied=[],
        class_names=events.class_names,
        target_names=events.target_names,
    )
    run = client.create_run(experiment_id, run_name=trial_run_name(0, cfg.as_params(), [], False), tags=tags)
    run_id = run.info.run_id
    for key, value in cfg.as_params().items():
        client.log_param(run_id, key, str(value))
    root = Path("scans").resolve() / "_train" / space.name / run_id  # scans/<name>/ belongs to sweeps
    epochs = args.epochs or space.budget.max_epochs
    spec = TrialSpec(space.task, space.data, cfg, epochs, space.objective.metric,
                     space.objective.mode, workdir=str(root.parent))
    root.mkdir(parents=True, exist_ok=True)
    return _train_and_close(client, run_id, spec, MlflowRunReporter(client, run_id, root))


def _train_and_close(client, run_id: str, spec, reporter: MlflowRunReporter) -> int:
    from trainables.loop import train_trial

    try:
        outcome = train_trial(spec, reporter, progress=sys.stderr.isatty())
    except KeyboardInterrupt:
        client.set_tag(run_id, "scan.status", "failed")
        client.set_tag(run_id, "scan.failure", "interrupted by the user")
        client.set_terminated(run_id, "KILLED")
        raise
    except BaseException as exc:
        client.set_tag(run_id, "scan.status", "failed")
        client.set_tag(run_id, "scan.failure", f"{type(exc).__name__}: {exc}"[:4000])
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_tag(run_id, "scan.status", outcome.status)
    if outcome.failure:
        client.set_tag(run_id, "scan.failure", outcome.failure)
    client.set_terminated(run_id, "FINISHED" if outcome.status == "completed" else "FAILED")
    objective = f"best/{spec.objective}"
    summary = f"{objective} = {outcome.best.get(objective, float('nan')):.4g}" if outcome.best else "no epoch finished"
    print(f"run {run_id} {outcome.status} after {outcome.epochs} epochs: {summary}; checkpoint {reporter.best_dir}")
    return 0 if outcome.status == "completed" else 1
