"""The architecture contracts of setup.cfg (import-linter), and that they can fail: a package that breaks a rule
(reports importing torch, a cycle between siblings) is reported broken."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "setup.cfg", "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"})


def test_the_project_keeps_every_contract():
    out = lint(REPO)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_a_broken_rule_is_caught(tmp_path):
    """A copy of the tree where reports imports torch inside a function, and trainables imports back into a module
    that imports it: both contracts break."""
    for name in ("scanner", "search_spaces", "trainables", "reports"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "setup.cfg", tmp_path / "setup.cfg")
    with open(tmp_path / "reports" / "_render.py", "a") as f:
        f.write("\n\ndef _late():\n    import torch  # noqa: F401\n")
    with open(tmp_path / "trainables" / "contract.py", "a") as f:
        f.write("\n\ndef _late():\n    import trainables.files  # noqa: F401\n")
    with open(tmp_path / "trainables" / "files.py", "a") as f:
        f.write("\n\ndef _back():\n    import trainables.contract  # noqa: F401\n")
    out = lint(tmp_path)
    assert out.returncode != 0
    assert "reports reads MLflow only" in out.stdout and "no import cycles inside a package BROKEN" in out.stdout
