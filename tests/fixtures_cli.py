"""CLI fixtures: run ``scanner`` as a user's shell would, and look at what a command left in its working folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from fixtures_sweep import REPO

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
