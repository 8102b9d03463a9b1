"""A working folder that holds folders named like the project's packages (a `search_spaces/` of YAML files, the
user's own `trainables` package) must not break the trials: Ray puts that folder first on every worker's path."""

from __future__ import annotations

import subprocess

import pytest
from fixtures_cli import PROJECT_PACKAGES, installed_scanner
from fixtures_sweep import write_tiny_space

from scanner.cluster import InstalledFirst


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["plain folders", "user packages"])
def test_a_sweep_runs_beside_folders_named_like_the_packages(tmp_path, layout):
    work = tmp_path / "work"
    for name in PROJECT_PACKAGES:
        (work / name).mkdir(parents=True)
        if layout == "user packages":
            (work / name / "__init__.py").write_text("MINE = True\n")
    (work / "search_spaces" / "notes.yaml").write_text("a: 1\n")
    space = write_tiny_space(work / "search_spaces", "shadow", trials=1, epochs=1)
    argv, env = installed_scanner(tmp_path / "install")
    done = subprocess.run([*argv, "run", str(space.relative_to(work))], cwd=work, env=env,
                          capture_output=True, text=True, timeout=900)
    out = done.stdout + done.stderr
    assert "ImportError" not in out and "unknown location" not in out, out
    assert done.returncode == 0, out
    assert "(0 stopped early, 0 failed)" in out, out


def test_installed_first_prefers_the_installed_package_over_a_later_folder(tmp_path):
    installed, later = tmp_path / "site", tmp_path / "work"
    (installed / "detpkg").mkdir(parents=True)
    (installed / "detpkg" / "__init__.py").write_text("")
    (later / "detpkg").mkdir(parents=True)  # a plain folder: a namespace portion, first on the path in a worker
    (later / "own.py").write_text("")
    finder = InstalledFirst([str(installed)])
    assert finder.find_spec("detpkg").origin == str(installed / "detpkg" / "__init__.py")
    assert finder.find_spec("own") is None  # the user's own module: left to the normal search
    assert finder.find_spec("detpkg.sub", path=[str(installed / "detpkg")]) is None  # submodules follow __path__
