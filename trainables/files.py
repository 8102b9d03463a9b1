"""Writing files so that no reader ever sees half of one, and a progress bar that honours TQDM_DISABLE.

Torch-free: the data tools, the checkpoints, the sweep's own files and the reports all write through here.

    with atomic_output("events.h5") as tmp:          # write tmp; it becomes events.h5 only if the block succeeds
        h5py.File(tmp, "w")...
    atomic_write_text(folder / "scan.json", text)
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Iterator

from trainables.errors import BadInput

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def user_mode(executable: bool = False) -> int:
    """The permissions an ordinary ``open()`` (or ``chmod +x``) would give under the user's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if executable else 0o666) & ~umask


@contextlib.contextmanager
def atomic_output(path, executable: bool = False) -> Iterator[Path]:
    """Yield a temp path next to ``path``; rename it onto ``path`` only if the block succeeds (also on Ctrl-C).

    The file gets the user's normal permissions (mkstemp's 0600 would hide it from colleagues on a shared disk)."""
    path = Path(path)
    if path.is_dir():
        raise BadInput(f"{path}: is a folder; expected a file name to write; fix: e.g. {path / 'events.h5'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if exc.errno in DISK_FULL:  # not the user's path: the disk, which may have room again later
            raise
        raise BadInput(f"{path}: cannot write here ({exc.strerror}); fix: choose a writable folder") from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, user_mode(executable))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str, executable: bool = False) -> Path:
    with atomic_output(path, executable) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def progress_bar(total: int, desc: str, enabled: bool = True, unit: str = "ev"):
    from tqdm.auto import tqdm  # heavy-ish, and only the data tools draw bars

    # an explicit disable= would override tqdm's own TQDM_DISABLE handling, so read it here
    off = not enabled or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")
    return tqdm(total=total, desc=desc, unit=unit, disable=off, mininterval=0.5)
