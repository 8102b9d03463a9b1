"""``scanner train SPACE.yaml [--set key=value ...]``: one trial, no Ray, logged straight to MLflow.

It trains ``fixed`` + ``baseline`` + the ``--set`` overrides for ``budget.max_epochs`` epochs, so any sweep file is
also a single-run training config, and a file with only ``data:`` and ``fixed:`` is one too (the name is the file's
stem, the task what the data file holds, the objective the task's default).

    scanner train search_spaces/demo.yaml --set lr=3e-3 --epochs 2
    scanner train my_training.yaml           # data: {path: events.h5} and fixed: {model: resnet18} only
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import yaml

from scanner.cli.common import example_help
from trainables.contract import MLFLOW_STATUS, Artifact, Status, Tag, tag_value
from trainables.errors import BadInput


def register(sub, parent) -> None:
    p = sub.add_parser(
        "train",
        parents=[parent],
        help="train one config of a space file (fixed + baseline + --set), no Ray",
        description="Train one config (fixed + baseline + --set overrides) and log it to MLflow.",
        **example_help("scanner train search_spaces/demo.yaml --set model=small_cnn --set lr=3e-3"),
    )
    p.add_argument("space", help="search-space YAML (only `data` is required for a training config)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a trial key")
    p.add_argument("--epochs", type=int, metavar="N", help="train N epochs instead of budget.max_epochs")
    p.set_defaults(handler=run_train)


class MlflowRunReporter:
    """Adapts the loop's reporter interface to one MLflow run: metrics with step = epoch, the best checkpoint kept,
    and one progress line per epoch."""

    def __init__(self, client, run_id: str, checkpoint_root: Path, objective: str, epochs: int):
        self.client, self.run_id, self.root = client, run_id, checkpoint_root
        self.objective, self.epochs = objective, epochs
        self.best_dir = checkpoint_root / "best"
        self.reported = 0  # epochs reported so far

    def resume_from(self) -> Path | None:
        return None

    def report(self, epoch: int, metrics: dict[str, float], checkpoint_dir: Path, is_best: bool) -> None:
        # MLflow and torch load here, not for --help
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
            self.client.set_tag(self.run_id, Tag.CHECKPOINT, str(self.best_dir))
        self.reported += 1
        print(epoch_line(epoch, self.epochs, self.objective, metrics), flush=True)

    def forget_if_empty(self) -> None:
        """A run that never finished an epoch keeps its record in MLflow (failed, with the reason) but leaves no
        folder behind: ``scans/_train/<name>/<run>/`` and the parents it emptied go."""
        if self.reported:
            return
        shutil.rmtree(self.root, ignore_errors=True)
        scans = self.root.parents[2]
        for folder in (self.root.parent, self.root.parent.parent, scans):
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break


def epoch_line(epoch: int, epochs: int, objective: str, metrics: dict[str, float]) -> str:
    """``epoch 2/8  val/accuracy 0.612 (best 0.640 at 1)  train/loss 0.84  12.3 s``."""
    words = [f"epoch {epoch}/{epochs}"]
    if objective in metrics:
        words.append(f"{objective} {metrics[objective]:.4g}")
        best, at = metrics.get(f"best/{objective}"), metrics.get("best/epoch")
        if best is not None and at is not None and int(at) != epoch:
            words[-1] += f" (best {best:.4g} at {int(at)})"
    if "train/loss" in metrics:
        words.append(f"train/loss {metrics['train/loss']:.4g}")
    if "perf/epoch_s" in metrics:
        words.append(f"{metrics['perf/epoch_s']:.1f} s")
    return "  ".join(words)


def _replace_tree(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


def run_train(args) -> int:
    # MLflow and torch load here, not for --help
    from mlflow.tracking import MlflowClient

    from scanner.targets import check_inits, resolve_inits
    from scanner.tracking import check_reachable, ensure_experiment, quiet_store_creation, trial_run_name
    from search_spaces import baseline_only_warning, load_space, parse_set, train_config
    from trainables.config import TrialSpec
    from trainables.data import data_hash, open_events

    if args.epochs is not None and args.epochs < 1:
        raise BadInput(f"--epochs {args.epochs}: give a number of epochs >= 1")
    space = load_space(args.space, overrides=parse_set(args.set), training=True)
    events = open_events(space.data, space.task)  # schema errors before any run exists
    check_reachable(args.tracking_uri)
    cfg = train_config(space)
    resolved = resolve_inits([cfg.init], args.tracking_uri)
    check_inits(space, events, resolved, searched=False)  # hub offline, an architecture that does not fit: now
    warning = baseline_only_warning(space)  # this run trains them; a sweep of the same file would not
    if warning and space.space:
        print(warning, file=sys.stderr, flush=True)
    source = resolved.get(cfg.init)
    if source is not None:
        cfg = cfg.replace(init=source.checkpoint)
    with quiet_store_creation():
        client = MlflowClient(args.tracking_uri)
        experiment_id = ensure_experiment(client, space.name)
    run_name = trial_run_name(0, cfg.as_params(), list(space.overrides), False)
    digest = data_hash(space.data.path)
    run = client.create_run(experiment_id, run_name=run_name, tags=train_tags(space, events, source, digest))
    run_id = run.info.run_id
    root = Path("scans").resolve() / "_train" / space.name / run_id  # scans/<name>/ belongs to sweeps
    root.mkdir(parents=True, exist_ok=True)
    log_what_runs(client, run_id, space, cfg, events, root, digest)
    epochs = args.epochs or space.budget.max_epochs
    spec = TrialSpec(space.task, space.data, cfg, epochs, space.objective.metric,
                     space.objective.mode, workdir=str(root.parent))
    print(f"run {run_id} '{run_name}' in experiment '{space.name}': {epochs} epochs on {Path(space.data.path).name}",
          flush=True)
    reporter = MlflowRunReporter(client, run_id, root, space.objective.metric, epochs)
    return _train_and_close(client, run_id, spec, reporter)


def train_tags(space, events, source, digest: str) -> dict[str, str]:
    """The sweep's contract tags of a trial run, and where a ``best-of:``/``run:`` init came from."""
    # MLflow and torch load here, not for --help
    from scanner.tracking import git_sha, trial_tags

    tags = trial_tags(
        name=space.name,
        trial_id=f"train-{time.strftime('%Y%m%d-%H%M%S')}",
        space_hash=space.space_hash,
        git_sha=git_sha(),
        data_hash=digest,
        baseline=False,
        varied=[],
        class_names=events.class_names,
        target_names=events.target_names,
    )
    if source is not None:
        tags[Tag.INIT_RUN_ID] = source.run_id or ""
        tags[Tag.INIT_TRIAL_ID] = source.trial_id or ""
    return tags


def log_what_runs(client, run_id: str, space, cfg, events, root: Path, digest: str) -> None:
    """As a sweep's trial: params are what was set (fixed + baseline + --set), ``config.yaml`` the full resolved
    config, and the data file a dataset input (path, content hash, shape)."""
    # MLflow and torch load here, not for --help
    from scanner.tracking.dataset import dataset_input
    from search_spaces import ran_params
    from trainables.files import atomic_write_text

    for key, value in ran_params(space, None).items():
        client.log_param(run_id, key, str(value))
    config = atomic_write_text(root / Artifact.CONFIG, yaml.safe_dump(cfg.as_params(), sort_keys=False))
    client.log_artifact(run_id, str(config))
    client.log_inputs(run_id, datasets=[dataset_input(events, digest)])


def _train_and_close(client, run_id: str, spec, reporter: MlflowRunReporter) -> int:
    # MLflow and torch load here, not for --help
    from trainables.loop import train_trial

    try:
        outcome = train_trial(spec, reporter, progress=sys.stderr.isatty())
    except KeyboardInterrupt:
        client.set_tag(run_id, Tag.STATUS, Status.FAILED)
        client.set_tag(run_id, Tag.FAILURE, "interrupted by the user")
        client.set_terminated(run_id, "KILLED")
        reporter.forget_if_empty()
        raise
    except BaseException as exc:
        client.set_tag(run_id, Tag.STATUS, Status.FAILED)
        client.set_tag(run_id, Tag.FAILURE, tag_value(f"{type(exc).__name__}: {exc}"))
        client.set_terminated(run_id, "FAILED")
        reporter.forget_if_empty()
        raise
    client.set_tag(run_id, Tag.STATUS, outcome.status)
    if outcome.failure:
        client.set_tag(run_id, Tag.FAILURE, tag_value(outcome.failure))
    client.set_terminated(run_id, MLFLOW_STATUS.get(outcome.status, "FAILED"))
    objective = f"best/{spec.objective}"
    summary = f"{objective} = {outcome.best.get(objective, float('nan')):.4g}" if outcome.best else "no epoch finished"
    if outcome.bad_input:  # the run stays as the record; the user reads one line that names the event
        reporter.forget_if_empty()
        raise BadInput(outcome.failure)
    print(f"run {run_id} {outcome.status} after {outcome.epochs} epochs: {summary}; checkpoint {reporter.best_dir}")
    return 0 if outcome.status == Status.COMPLETED else 1
