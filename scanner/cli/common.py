"""What every verb shares: the one-line argparse errors, the common flags, the tracking URI, the --help example."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage + message; a user wants one line that says what to do."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def default_tracking_uri(cwd: Path | None = None) -> str:
    """The flag, else ``MLFLOW_TRACKING_URI``, else sqlite in the working folder, made absolute."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return absolute_tracking_uri(env)
    return f"sqlite:///{((cwd or Path.cwd()) / 'mlflow.db').resolve()}"


def absolute_tracking_uri(uri: str) -> str:
    """Tune runs each trial in its own folder: a relative sqlite or file path would point elsewhere there."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    if uri.startswith("file:") or "://" in uri:
        return uri
    return Path(uri).resolve().as_uri()


def common_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--tracking-uri", help="MLflow store; default $MLFLOW_TRACKING_URI, else ./mlflow.db")
    parent.add_argument("--debug", action="store_true", help="show tracebacks")
    return parent


def example_help(text: str) -> dict:
    """kwargs for ``add_parser`` so every verb's --help ends with a runnable example."""
    return {"epilog": "example:\n  " + text, "formatter_class": argparse.RawDescriptionHelpFormatter}
