"""`scanner run` before anything starts: --dry-run shows what `best-of:` resolves to, the keys only the baseline
gets, and the sweep keeps the run and trial its inits came from (scan.json, for scanner resume)."""

from __future__ import annotations

import json
import shutil

from fixtures_sweep import TINY_SPACE, free_port
from mlflow.tracking import MlflowClient

from scanner.cli import main
from scanner.sweep.driver import SweepDriver
from scanner.sweep.lifecycle import sweep_info
from scanner.sweep.progress import ProgressLine
from scanner.sweep.results import BASELINE_KEY
from scanner.sweep.setup import create_folder, load_sweep_folder, prepare
from scanner.tracking import MlflowWriter, ensure_experiment
from trainables.contract import Tag

TRANSFER = (TINY_SPACE.format(name="transfer", trials=2, epochs=1)
            .replace("  num_workers: 0\n", "  num_workers: 0\n  model: small_cnn_tiny\n  mode: finetune\n"
                     "  init: best-of:pretrain\n")
            .replace("  model: {choice: [small_cnn_tiny, resnet_tiny]}\n", "")
            .replace("  model: small_cnn_tiny\n  loss: ce\n", "  loss: ce\n  ema_decay: 0.99\n"))


def transfer_space(folder, cli_h5):
    shutil.copy(cli_h5, folder / "tiny.h5")
    path = folder / "transfer.yaml"
    path.write_text(TRANSFER)
    return path


def test_dry_run_shows_what_best_of_resolves_to(pretrained, cli_h5, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    space = transfer_space(tmp_path, cli_h5)
    assert main(["run", str(space), "--dry-run", "--tracking-uri", pretrained.tracking_uri]) == 0
    out = capsys.readouterr().out
    assert (f"best-of:pretrain -> run {pretrained.run_id} (trial {pretrained.trial_id}), checkpoint "
            f"{pretrained.checkpoint}") in out
    assert "ema_decay=0.99 is set only under baseline:" in out and "ema_decay=0.0" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.h5", "transfer.yaml"]


def test_the_sweep_keeps_the_run_and_trial_of_its_inits(pretrained, cli_h5, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = transfer_space(tmp_path, cli_h5)
    sweep = prepare(str(space), pretrained.tracking_uri, None, None)
    source = {"checkpoint": str(pretrained.checkpoint), "run_id": pretrained.run_id, "trial_id": pretrained.trial_id}
    assert sweep.init_sources == {"best-of:pretrain": source}
    assert sweep.init_map == {"best-of:pretrain": str(pretrained.checkpoint)}
    create_folder(sweep, str(space))
    assert json.loads(sweep.scan_json.read_text())["init_sources"] == {"best-of:pretrain": source}
    assert load_sweep_folder("transfer").init_sources == {"best-of:pretrain": source}


def test_every_trial_of_a_transfer_sweep_names_the_run_and_trial_it_starts_from(pretrained, cli_h5, tmp_path,
                                                                               monkeypatch):
    """The driver's runs, baseline and searched trial alike, carry scan.init_run_id and scan.init_trial_id, so a
    transfer chain can be followed in MLflow (the driver and its writer on the real store)."""
    monkeypatch.chdir(tmp_path)
    sweep = prepare(str(transfer_space(tmp_path, cli_h5)), pretrained.tracking_uri, None, None)
    create_folder(sweep, str(sweep.space.source_path))
    client = MlflowClient(pretrained.tracking_uri)
    info = sweep_info(sweep, ensure_experiment(client, sweep.name))
    writer = MlflowWriter(sweep.tracking_uri, sweep.journal)
    driver = SweepDriver(info, writer, ProgressLine("val/accuracy", "max", quiet=True))
    driver.adopt("base", {BASELINE_KEY: True}, "1_baseline")
    driver.adopt("searched", {"lr": 2.0e-3}, "2_lr=0.002")
    assert writer.flush(60)
    run_ids = writer.run_ids()
    assert writer.close(60)
    for key in ("base", "searched"):
        tags = client.get_run(run_ids[key]).data.tags
        assert (tags[Tag.INIT_RUN_ID], tags[Tag.INIT_TRIAL_ID]) == (pretrained.run_id, pretrained.trial_id), key


def test_train_of_a_sweep_file_warns_once_about_keys_only_the_baseline_gets(cli_h5, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    space = transfer_space(tmp_path, cli_h5)
    space.write_text(space.read_text().replace("  mode: finetune\n  init: best-of:pretrain\n", ""))
    assert main(["train", str(space), "--epochs", "1"]) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "only under baseline:" in line] == [
        "warning: transfer.yaml: ema_decay=0.99 is set only under baseline:, so the searched trials train with the "
        "default ema_decay=0.0; move it to fixed: for every trial, or to space: to search"]


def test_run_of_a_file_with_keys_only_the_baseline_gets_warns_before_anything_starts(cli_h5, tmp_path, monkeypatch,
                                                                                      capsys):
    """The warning comes first, once: here the cluster named by --address is not there, so the run stops right
    after it, in one line, and leaves nothing."""
    monkeypatch.chdir(tmp_path)
    space = transfer_space(tmp_path, cli_h5)
    space.write_text(space.read_text().replace("  mode: finetune\n  init: best-of:pretrain\n", ""))
    assert main(["run", str(space), "--address", f"127.0.0.1:{free_port()}"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err[0].startswith("warning: transfer.yaml: ema_decay=0.99 is set only under baseline:")
    assert len(err) == 2 and err[1].startswith("scanner run: ") and "--address" in err[1], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.h5", "transfer.yaml"]
