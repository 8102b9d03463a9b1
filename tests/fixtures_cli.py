"""CLI fixtures: run ``scanner`` as a user's shell would, and look at what a command left in its working folder."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures_sweep import REPO
from mlflow.tracking import MlflowClient

from scanner.cli import main
from trainables.data import write_synthetic

__all__ = ["PROJECT_PACKAGES", "Pretrained", "cli_h5", "folder_listing", "installed_scanner", "pretrained",
           "run_cli"]

PROJECT_PACKAGES = ("scanner", "search_spaces", "trainables", "reports")

# What `pip install -e .` does: a finder on sys.meta_path *after* the path finder, not a sys.path entry. A folder on
# sys.path that is named like a package (even without __init__.py) is found before it; PYTHONPATH=<repo> would hide
# exactly the trap the shadowing test is about.
EDITABLE_FINDER = '''\
import importlib.abc, importlib.machinery, importlib.util, sys

class _EditableProject(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if path is None and name in {packages!r}:
            folder = {repo!r} + "/" + name
            return importlib.util.spec_from_file_location(name, folder + "/__init__.py",
                                                          submodule_search_locations=[folder])
        return None

sys.meta_path.insert(sys.meta_path.index(importlib.machinery.PathFinder) + 1, _EditableProject())
'''

ENTRY_POINT = "import sys\nfrom scanner.cli import main\nsys.exit(main())\n"  # pip's console script, in short


def installed_scanner(root: Path) -> tuple[list[str], dict[str, str]]:
    """(argv prefix, env) that run this checkout's ``scanner`` as an editable install does, in every process it
    starts (Ray's workers too: they inherit the environment and run ``sitecustomize``)."""
    site = root / "site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(EDITABLE_FINDER.format(repo=str(REPO), packages=PROJECT_PACKAGES))
    bin_dir = root / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "scanner").write_text(ENTRY_POINT)
    env = dict(os.environ, PYTHONPATH=str(site))
    return [sys.executable, str(bin_dir / "scanner")], env


def folder_listing(folder: Path) -> set[str]:
    """Every file and folder under ``folder``, relative: what a command created shows as a difference."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def run_cli(argv: list[str]) -> int:
    """``scanner ARGV`` in this process: its exit status, whether it returned or argparse exited."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


@pytest.fixture(scope="session")
def cli_h5(tmp_path_factory) -> Path:
    """400 synthetic events of 2x16x16 (NC, nueCC, numuCC; labels, direction targets and truth): copy it, never
    write to it."""
    return write_synthetic(tmp_path_factory.mktemp("cli_data") / "tiny.h5", events=400, size=16, seed=0,
                           progress=False)


@dataclass(frozen=True)
class Pretrained:
    """A `scanner train` run of small_cnn_tiny, 1 epoch: a store to take ``best-of:pretrain``/``run:<id>`` from."""

    folder: Path
    tracking_uri: str
    run_id: str
    trial_id: str
    checkpoint: Path


PRETRAIN_SPACE = """\
data: {{path: {h5}}}
fixed: {{model: small_cnn_tiny, batch_size: 64, num_workers: 0}}
"""


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory, cli_h5) -> Pretrained:
    folder = tmp_path_factory.mktemp("pretrain")
    space = folder / "pretrain.yaml"
    space.write_text(PRETRAIN_SPACE.format(h5=cli_h5))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            assert run_cli(["train", str(space), "--epochs", "1", "--tracking-uri", uri]) == 0
    finally:
        os.chdir(cwd)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("pretrain").experiment_id])
    tags = run.data.tags
    return Pretrained(folder, uri, run.info.run_id, tags["scan.trial_id"], Path(tags["scan.checkpoint"]))
