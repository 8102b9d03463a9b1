"""Loop overhead: the trainable loop (telemetry + MLflow logging + epoch checkpoints + validation) vs a bare PyTorch loop.

    python benchmarks/bench_loop_overhead.py                 # 2000 events, 64x64, small_cnn, 3 epochs
    python benchmarks/bench_loop_overhead.py --events 4000 --model resnet18

Both loops train the same model on the same HDF5 file, batches, threads and number of epochs, and both validate
once per epoch; the bare loop has no telemetry, no metrics, no checkpoints and no MLflow. Precise BatchNorm is off
on both sides (bench_precise_bn.py measures it). Target: >= 0.97x.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _header import print_header  # benchmarks/ is on sys.path when a script runs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

from trainables.config import DataConfig, TrialConfig, TrialSpec  # noqa: E402
from trainables.data import make_loader, open_events, write_synthetic  # noqa: E402
from trainables.models import create_model  # noqa: E402


def bare_loop(data: DataConfig, cfg: TrialConfig, epochs: int) -> float:
    """Timed from the file's opening, as train_trial is: both pay for building the model and the loaders."""
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    events = open_events(data, "classification")
    model = create_model(cfg.model, events.image_shape[0], len(events.class_names))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    train = make_loader(data, "classification", "train", cfg.batch_size, cfg.num_workers, True, cfg.seed, events)
    val = make_loader(data, "classification", "val", cfg.batch_size, cfg.num_workers, False, cfg.seed, events)
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(epochs):
        model.train()
        for images, y, _w in train:
            loss = loss_fn(model(images), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for images, y, _w in val:
                model(images)
    return len(train.dataset) * epochs / (time.perf_counter() - start)


def trainable_loop(data: DataConfig, cfg: TrialConfig, epochs: int, workdir: Path) -> float:
    from mlflow.tracking import MlflowClient

    from scanner.cli.train import MlflowRunReporter
    from trainables.loop import train_trial

    workdir.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("p1")).info.run_id
    spec = TrialSpec("classification", data, cfg, epochs, workdir=str(workdir))
    reporter = MlflowRunReporter(client, run_id, workdir / "ckpt", "val/accuracy", epochs)
    start = time.perf_counter()
    train_trial(spec, reporter)
    elapsed = time.perf_counter() - start
    return len(open_events(data, "classification").split_indices["train"]) * epochs / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--model", default="small_cnn")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print_header()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        h5 = write_synthetic(tmp / "p1.h5", events=args.events, size=args.size, seed=0, progress=False)
        data = DataConfig(path=str(h5))
        # precise_bn 0: recomputing BatchNorm statistics is evaluation work the bare loop does not do, not overhead;
        # its cost is measured on its own (benchmarks/bench_precise_bn.py)
        cfg = TrialConfig.from_dict({"model": args.model, "num_workers": 0, "lr_schedule": "constant",
                                     "precise_bn": 0})
        bare_loop(data, cfg, 1)  # warm-up: page cache, allocator, kernels
        trainable_loop(data, cfg, 1, tmp / "warm")  # and the loop's one-off imports (torch._dynamo via EMA/AMP)
        bare, ours = [], []
        for round_ in range(args.rounds):  # alternate and pair the rounds: the shared machine's speed drifts
            bare.append(bare_loop(data, cfg, args.epochs))
            ours.append(trainable_loop(data, cfg, args.epochs, tmp / f"r{round_}"))
    print(f"bare loop            {' / '.join(f'{b:.1f}' for b in bare)} samples/s; load {os.getloadavg()[0]:.1f}")
    print(f"trainable loop  {' / '.join(f'{o:.1f}' for o in ours)} samples/s (telemetry, metrics, checkpoints, "
          "MLflow sqlite)")
    paired = sorted(o / b for o, b in zip(ours, bare))
    print(f"ratio trainable/bare per round: {', '.join(f'{r:.3f}' for r in paired)}; "
          f"median {paired[len(paired) // 2]:.3f}; best of each {max(ours) / max(bare):.3f}  (target >= 0.97)")


if __name__ == "__main__":
    main()
