"""The CLI frame: every verb is listed, has --help with a runnable example, and a bad flag is one line, exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from scanner.cli import absolute_tracking_uri, build_parser, main

VERBS = [["data", "synth"], ["data", "inspect"], ["data", "import-images"], ["train"], ["run"], ["resume"],
         ["report"], ["evaluate"], ["export"], ["explain"], ["ui"], ["slurm"]]


def test_top_level_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for verb in ("data", "train", "run", "resume", "report", "ui", "slurm"):
        assert f"    {verb} " in out, verb


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_every_verb_has_help_with_an_example(verb, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*verb, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out and f"scanner {' '.join(verb)}" in out.split("example:")[1]
    assert "--tracking-uri" in out and "--debug" in out


def test_an_unknown_flag_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "space.yaml", "--trails", "3"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--trails" in err and "--help" in err


def test_tracking_uris_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_tracking_uri("sqlite:///m.db") == f"sqlite:///{tmp_path / 'm.db'}"
    assert absolute_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert absolute_tracking_uri("runs") == (tmp_path / "runs").as_uri()
    assert build_parser().parse_args(["resume", "demo"]).verb == "resume"


def test_the_cli_loads_no_heavy_library_before_a_verb_runs():
    """`scanner --help` and a mistyped flag answer at once: torch, MLflow, Ray and Optuna load inside the verbs."""
    code = "import sys, scanner.cli; print(sorted(m for m in ('torch', 'mlflow', 'ray', 'optuna') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
