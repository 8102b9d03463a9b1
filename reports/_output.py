"""Writing a report into a folder that may hold other things (``--out .`` in a project folder): beside them, never
over them.

The report lists what it wrote in a manifest, ``.scanner-report.json`` (each file's path and SHA-256). A later report
into the same folder replaces or removes only files that the manifest lists and that nobody changed since. A file
of the same name that the manifest does not list (a user's ``index.html``), or a listed file that was edited since,
stops the report with one line before anything is written: it is never overwritten. Each file is written atomically
(a reader sees the old or the new file, never half of one) with the user's normal permissions (umask), and folders
are created with them too, so colleagues on a shared file system can open the report.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

from reports.errors import ReportInputError
from trainables.files import atomic_write_text, atomic_output

MANIFEST = ".scanner-report.json"
MANIFEST_KIND = "scanner-report"  # marks the file as ours (a user's JSON of that name is refused like any file)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_manifest(folder: Path) -> dict[str, str | None]:
    """{relative path: sha256 or None (written by an interrupted report)} of the report in ``folder``; {} if none."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or data.get("kind") != MANIFEST_KIND or not isinstance(data.get("files"), dict):
        raise ReportInputError(f"{path} is not a report manifest; move it or choose another --out folder")
    return {str(k): (v if isinstance(v, str) else None) for k, v in data["files"].items() if _inside(k)}


def _inside(rel: str) -> bool:
    """A manifest entry must name a file inside the folder (a hand-edited '../x' is ignored, never removed)."""
    parts = Path(rel).parts
    return bool(parts) and not Path(rel).is_absolute() and ".." not in parts


def _ours(path: Path, recorded: str | None) -> bool:
    """The file is as the last report left it (or that report was interrupted before it could record its hash)."""
    return recorded is None or _digest(path.read_bytes()) == recorded


def check_folder(folder: Path, names: list[str]) -> dict[str, str | None]:
    """Refuse, in one line, when writing ``names`` into ``folder`` would replace a file the report does not own."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ReportInputError(f"--out {folder} is a file; give a folder for the report")
    listed = read_manifest(folder)
    for rel in names:
        target = folder / rel
        if not (target.exists() or target.is_symlink()):
            continue
        if target.is_dir() or target.is_symlink():
            raise ReportInputError(f"{target} is in the way of the report (a folder or a link); move it or choose "
                                   "another --out folder")
        if rel not in listed:
            raise ReportInputError(f"{target} exists and was not written by a report; the report never overwrites "
                                   "it: move it or choose another --out folder")
        if not _ours(target, listed[rel]):
            raise ReportInputError(f"{target} was changed since the report wrote it; move it (or delete it) or choose "
                                   "another --out folder")
    return listed


def write_files(folder: Path, files: dict[str, bytes]) -> list[Path]:
    """Write ``files`` ({relative path: content}) into ``folder`` beside what is there; returns the paths written.

    Files of the previous report that this one no longer writes (a figure of a section that went away) are removed
    when unchanged. The manifest is written before the files (listing them as pending) and after them (with hashes),
    so an interrupted report leaves a folder the next report can still clean up."""
    folder = Path(folder)
    listed = check_folder(folder, list(files))
    folder.mkdir(parents=True, exist_ok=True)  # mkdir honours the umask: drwxr-xr-x for most users
    _write_manifest(folder, {**listed, **{rel: None for rel in files}})
    written = []
    for rel, data in files.items():
        with atomic_output(folder / rel) as tmp:
            tmp.write_bytes(data)
        written.append(folder / rel)
    for rel, recorded in listed.items():
        stale = folder / rel
        if rel not in files and stale.is_file() and _ours(stale, recorded):
            stale.unlink()
            _remove_empty_parents(stale.parent, folder)
    _write_manifest(folder, {rel: _digest(data) for rel, data in files.items()})
    return written


def _remove_empty_parents(path: Path, stop: Path) -> None:
    while path != stop and stop in path.parents:
        with contextlib.suppress(OSError):  # not empty (a user's file in it): it stays
            path.rmdir()
        path = path.parent


def _write_manifest(folder: Path, files: dict[str, str | None]) -> None:
    text = json.dumps({"kind": MANIFEST_KIND, "note": "files written by 'scanner report'; a later report replaces "
                       "only these", "files": dict(sorted(files.items()))}, indent=1)
    atomic_write_text(folder / MANIFEST, text + "\n")


def report_files(folder: Path) -> list[Path]:
    """The files of the report in ``folder`` (from its manifest), to log or copy; [] when there is none."""
    folder = Path(folder)
    return [folder / rel for rel in sorted(read_manifest(folder)) if (folder / rel).is_file()]
