"""``scanner evaluate`` through the real CLI, on a sweep's MLflow layout in a real sqlite store: the three kinds of
TARGET, syst/ metrics and artifacts, the seed means, and every refusal as one line, exit 2, nothing logged."""

from __future__ import annotations

import re

import h5py
import numpy as np
import pytest
from fixtures_checkpoint import hand_run
from fixtures_evaluate import EVENTS, SIZE
from fixtures_tracking import fresh_store
from mlflow.tracking import MlflowClient

from scanner.cli import main
from scanner.targets import resolve_run
from trainables.data import write_synthetic
from trainables.data.synth import Detector

FINALS = ("baseline", "t01", "t01-seed1")


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> dict:
    """The training events differently detected, and files that are not the training data."""
    folder = tmp_path_factory.mktemp("variants")

    def synth(name, size=SIZE, classes="nc,nue,numu", **knobs):
        return write_synthetic(folder / name, events=EVENTS, size=size, seed=0, classes=classes, progress=False,
                               detector=Detector(**knobs))

    files = {"noisy": synth("noisy.h5", noise_mips=0.2, dead_wire_fraction=0.05),
             "cold": synth("cold.h5", energy_scale=0.8), "small": synth("small.h5", size=8),
             "tau": synth("tau.h5", classes="nc,nue,numu,nutau"), "uv": synth("uv.h5")}
    with h5py.File(files["uv"], "a") as f:
        f.attrs["views"] = ["uz", "vz"]
    return files


def evaluate(sweep, *args) -> int:
    return main(["evaluate", *map(str, args), "--tracking-uri", sweep.uri])


def syst_keys(sweep, key: str, label: str) -> set[str]:
    return {k for k in sweep.metrics(key) if k.startswith((f"syst/{label}/", f"seeds/syst/{label}/"))}


def syst_artifacts(sweep, key: str, label: str) -> set[str]:
    return {a.path for a in sweep.client().list_artifacts(sweep.run_ids[key], f"syst/{label}")}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_finals_of_logs_every_final_and_replica_and_the_seed_mean(syst_sweep, variants, capsys):
    assert evaluate(syst_sweep, "finals-of:syst", "--data", variants["noisy"], "--label", "noisy") == 0
    captured = capsys.readouterr()
    out = captured.out
    evaluated = [line.split(" on ")[0] for line in captured.err.splitlines() if line.startswith("evaluated ")]
    assert evaluated == ["evaluated t00 baseline", "evaluated t01 t01", "evaluated t01-s1 t01-seed1"]  # in groups
    for key in FINALS:
        logged = syst_sweep.metrics(key)
        assert {"syst/noisy/accuracy", "syst/noisy/accuracy_err", "syst/noisy/efficiency/NC",
                "syst/noisy/efficiency/NC_err", "syst/noisy/loss"} <= set(logged), key
        assert syst_artifacts(syst_sweep, key, "noisy") == {"syst/noisy/predictions.h5", "syst/noisy/confusion.json"}
    assert not syst_keys(syst_sweep, "t02", "noisy")  # not a finalist
    t01, seed1 = syst_sweep.metrics("t01"), syst_sweep.metrics("t01-seed1")
    for name in ("accuracy", "efficiency/NC", "loss"):
        pair = [t01[f"syst/noisy/{name}"], seed1[f"syst/noisy/{name}"]]
        assert t01[f"seeds/syst/noisy/{name}"] == pytest.approx(np.mean(pair))
        assert t01[f"seeds/syst/noisy/{name}_std"] == pytest.approx(np.std(pair, ddof=1))
        assert t01[f"seeds/syst/noisy/{name}_err"] == pytest.approx(np.std(pair, ddof=1) / np.sqrt(2))
    assert not any(k.startswith("seeds/") for k in syst_sweep.metrics("baseline"))  # no replicas of its own
    assert not any(k.startswith("seeds/") for k in seed1)
    assert "seeds/n" not in t01  # the sweep's own count, logged with seeds/test/
    assert "nominal (test)" in out and "t01: mean of 2 seeds" in out and "t01-s1 seed 1 " in out
    shift = t01["syst/noisy/accuracy"] - t01["test/accuracy"]
    assert f"{shift:+.4f}" in out


def test_a_variant_of_the_whole_file_and_two_labels_at_once(syst_sweep, variants, capsys):
    run_id = syst_sweep.run_ids["t02"]
    assert evaluate(syst_sweep, f"run:{run_id}", "--data", variants["cold"], "--label", "cold", "--data",
                    syst_sweep.nominal, "--label", "nominal-all", "--split", "all") == 0
    assert "(all split, 300 events)" in capsys.readouterr().err
    logged = syst_sweep.metrics("t02")
    assert "syst/cold/accuracy" in logged and "syst/nominal-all/accuracy" in logged
    with h5py.File(syst_sweep.client().download_artifacts(run_id, "syst/cold/predictions.h5")) as f:
        assert len(f["index"]) == EVENTS
    assert not any(syst_keys(syst_sweep, k, "cold") for k in FINALS)


def test_a_bare_run_id_and_best_of(syst_sweep, variants):
    assert evaluate(syst_sweep, syst_sweep.run_ids["baseline"], "--data", variants["noisy"], "--label", "bare") == 0
    assert syst_keys(syst_sweep, "baseline", "bare") and not syst_keys(syst_sweep, "t01", "bare")
    assert evaluate(syst_sweep, "best-of:syst", "--data", variants["noisy"], "--label", "best") == 0
    best = resolve_run("best-of:syst", syst_sweep.uri).run_id  # ranked as the report ranks, never a replica
    assert [k for k, run_id in syst_sweep.run_ids.items() if syst_keys(syst_sweep, k, "best")] == [
        k for k, run_id in syst_sweep.run_ids.items() if run_id == best]


@pytest.mark.parametrize("bad, words", [("small", f"image shape (C, H, W) (2, 8, 8) vs (2, {SIZE}, {SIZE})"),
                                        ("tau", "classes [NC, nueCC, numuCC, nutauCC] vs [NC, nueCC, numuCC]"),
                                        ("uv", "views [uz, vz] vs [xz, yz]")])
def test_an_incompatible_variant_is_one_line_and_nothing_is_logged(syst_sweep, variants, capsys, bad, words):
    """The good variant comes first: it must not be logged either."""
    code = evaluate(syst_sweep, "finals-of:syst", "--data", variants["noisy"], "--label", f"ok-{bad}",
                    "--data", variants[bad], "--label", bad)
    line = one_error_line(capsys)
    assert code == 2 and line.startswith(f"scanner evaluate: error: {variants[bad]}: not compatible") and words in line
    for key in syst_sweep.run_ids:
        assert not syst_keys(syst_sweep, key, f"ok-{bad}") and not syst_keys(syst_sweep, key, bad)
        assert not syst_artifacts(syst_sweep, key, f"ok-{bad}")


@pytest.mark.parametrize("args, words", [
    (["--data", "x.h5", "--label", "no/slash"], "--label 'no/slash'"),
    (["--data", "x.h5", "--label", "a", "--data", "y.h5"], "2 --data but 1 --label"),
    (["--data", "x.h5", "--label", "a", "--data", "y.h5", "--label", "a"], "--label a is given twice"),
])
def test_bad_labels_are_one_line(syst_sweep, capsys, args, words):
    assert evaluate(syst_sweep, "finals-of:syst", *args) == 2
    assert words in one_error_line(capsys)


def test_a_run_whose_folder_is_gone_is_evaluated_from_the_checkpoint_it_carries(syst_sweep, variants, tmp_path,
                                                                                   monkeypatch, capsys):
    """As `export` and `explain` do: the run's checkpoint artifact, fetched into scans/_fetched/<run id>/."""
    uri = fresh_store(tmp_path / "store")
    client = MlflowClient(uri)
    gone = tmp_path / "elsewhere" / "checkpoint_000001"  # the sweep's folder, on another machine
    run_id = hand_run(client, "far", gone, syst_sweep.nominal)
    client.log_artifact(run_id, str(syst_sweep.checkpoints["t02"] / "state.pt"), "checkpoint")
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", f"run:{run_id}", "--data", str(variants["noisy"]), "--label", "noisy",
                 "--tracking-uri", uri]) == 0
    assert (tmp_path / "scans" / "_fetched" / run_id / "checkpoint" / "state.pt").is_file()
    assert "syst/noisy/accuracy" in client.get_run(run_id).data.metrics

    bare = hand_run(client, "far", gone, syst_sweep.nominal)  # carries no checkpoint
    capsys.readouterr()
    assert main(["evaluate", f"run:{bare}", "--data", str(variants["noisy"]), "--label", "noisy",
                 "--tracking-uri", uri]) == 2
    assert f"checkpoint {gone} of run {bare} is not on this machine and the run carries none" in one_error_line(capsys)


def test_bad_targets_and_files_are_one_line(syst_sweep, variants, tmp_path, capsys):
    assert evaluate(syst_sweep, "finals-of:nosuch", "--data", variants["noisy"], "--label", "x") == 2
    assert "no sweep named 'nosuch'" in one_error_line(capsys)
    assert evaluate(syst_sweep, "run:0123456789abcdef", "--data", variants["noisy"], "--label", "x") == 2
    assert "no MLflow run 0123456789abcdef" in one_error_line(capsys)
    assert evaluate(syst_sweep, "finals-of:syst", "--data", tmp_path / "missing.h5", "--label", "x") == 2
    assert "missing.h5: file not found" in one_error_line(capsys)
    client = syst_sweep.client()
    experiment = client.create_experiment("unfinished")
    client.create_run(experiment, run_name="unfinished", tags={"scan.role": "parent", "scan.name": "unfinished"})
    assert evaluate(syst_sweep, "finals-of:unfinished", "--data", variants["noisy"], "--label", "x") == 2
    assert "has no finals with a checkpoint yet" in one_error_line(capsys)


def test_help_has_an_example(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "scanner evaluate finals-of:demo --data noisy.h5 --label noisy" in out and "--tracking-uri" in out


@pytest.mark.slow
def test_on_a_real_sweep_the_nominal_file_reproduces_the_finals(tiny_sweep, tmp_path, capsys):
    """On the shared tiny sweep's Tune checkpoints: the training file through `scanner evaluate` gives exactly the
    finals' test/ figures (same weights, same BatchNorm statistics), and a variant shifts them."""
    assert tiny_sweep.exit_code == 0, tiny_sweep.output
    noisy = write_synthetic(tmp_path / "noisy.h5", events=400, size=16, seed=0, progress=False,
                            detector=Detector(noise_mips=0.3, dead_wire_fraction=0.1))
    uri = tiny_sweep.tracking_uri
    assert main(["evaluate", "finals-of:tiny", "--data", str(tiny_sweep.folder / "tiny.h5"), "--label", "nominal",
                 "--data", str(noisy), "--label", "noisy", "--tracking-uri", uri]) == 0
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny").experiment_id
    finals = client.search_runs([experiment], "tags.`scan.final` = 'true'")
    assert len(finals) == 2
    for run in finals:
        logged = client.get_run(run.info.run_id).data.metrics
        test = {k[len("test/"):]: v for k, v in logged.items() if k.startswith("test/")}
        assert {k: logged[f"syst/nominal/{k}"] for k in test} == pytest.approx(test, nan_ok=True)
        assert "syst/noisy/accuracy" in logged
    table = capsys.readouterr().out
    assert len(re.findall(r" nominal +accuracy ", table)) == 2 and len(re.findall(r" noisy +accuracy ", table)) == 2

    best = resolve_run("best-of:tiny", uri).run_id
    assert main(["evaluate", "best-of:tiny", "--data", str(noisy), "--label", "noisy-best", "--tracking-uri",
                 uri]) == 0
    tagged = [r.info.run_id for r in client.search_runs([experiment], "tags.`scan.trial_id` LIKE '%'")
              if "syst/noisy-best/accuracy" in r.data.metrics]
    assert tagged == [best]
