"""Atomic writes: a file is either the old version or the complete new one, never half-written."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields a temporary path beside `path` (same extension); renames it over `path` on success."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    handle, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{ext}", dir=folder)
    os.close(handle)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes owner-only files; give the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, data: Any) -> None:
    """Writes `data` as indented JSON, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as file:
        json.dump(data, file, indent=2, sort_keys=True, default=_plain)
        file.write("\n")


def save_model(model, path: str) -> None:
    """`model.save(path)` (.keras), atomically; a failed write raises `CheckpointWriteError`, `path` unchanged."""
    try:
        with atomic_path(path) as tmp:
            model.save(tmp)
    except OSError as error:
        kept = f"The previous {os.path.basename(path)} is unchanged." if os.path.exists(path) else "Nothing was kept."
        raise write_failed(path, error, kept) from error


def _plain(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return str(value)


class CheckpointWriteError(OSError):
    """A checkpoint or backup could not be written (full disk, lost permissions); the previous one is intact."""


def write_failed(path: str, error: OSError, kept: str) -> CheckpointWriteError:
    """The error to raise when writing `path` failed with `error`; `kept` says what is still there."""
    return CheckpointWriteError(
        f"Could not write {path}: {error}. {kept} Free space (or fix the folder's permissions) and rerun "
        "the same command: it resumes from the last backup."
    )


def fsync_folder(folder: str) -> None:
    """Makes a rename inside `folder` durable (POSIX: the folder entry itself is synced)."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
