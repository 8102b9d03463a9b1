"""Small file helpers shared by the writers: atomic output and a progress bar that honours TQDM_DISABLE."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temp path next to ``path``; rename it onto ``path`` only if the block succeeds (also on Ctrl-C)."""
    from trainables.errors import BadInput

    path = Path(path)
    if path.is_dir():
        raise BadInput(f"{path}: is a folder; expected a file name to write; fix: e.g. {path / 'events.h5'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise BadInput(f"{path}: cannot write here ({exc.strerror}); fix: choose a writable folder") from None
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the user expects an ordinary file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def progress_bar(total: int, desc: str, enabled: bool = True, unit: str = "ev"):
    from tqdm.auto import tqdm

    # an explicit disable= would override tqdm's own TQDM_DISABLE handling, so read it here
    off = not enabled or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")
    return tqdm(total=total, desc=desc, unit=unit, disable=off, mininterval=0.5)
