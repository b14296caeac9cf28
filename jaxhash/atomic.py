"""Saving files so that a reader sees the old version or the new one, never a mixture.

* :func:`atomic_write` -- a file written to a temporary name in the same folder, flushed to disk
  and renamed over the target in one step.
* :func:`save_versioned` / :func:`current_version` -- a folder of several files (a saved hasher)
  written as a new version sub-folder, then published by atomically replacing a one-line pointer
  file ``CURRENT``; the previous version is kept for readers still on it, older ones are removed.

Temporary names carry the writer's process id (``.NAME.PID-RANDOM.tmp``), so a later write can
remove the leftovers of a writer that was killed without touching those of a live one. Files
and folders are created with the usual permissions (the umask applies), not 0600 / 0700.
"""
from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Callable, Iterable

__all__ = ["atomic_write", "save_versioned", "current_version", "POINTER"]

POINTER = "CURRENT"
_VERSION_PREFIX = "v-"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or cannot tell: leave it alone
    return True


def _owner_pid(name: str) -> int | None:
    """The pid in ``.NAME.PID-RANDOM.tmp`` or ``v-TIME-PID-RANDOM``, or None."""
    try:
        if name.endswith(".tmp"):
            return int(name[:-4].rsplit(".", 1)[1].split("-")[0])
        if name.startswith(_VERSION_PREFIX):
            return int(name.split("-")[2])
    except (IndexError, ValueError):
        return None
    return None


def _remove_stale_temporaries(folder: Path, name: str) -> None:
    prefix = f".{name}."
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(prefix) and entry.name.endswith(".tmp"):
            pid = _owner_pid(entry.name)
            if pid is not None and not _pid_alive(pid):
                try:
                    entry.unlink()
                except OSError:
                    pass


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write: Callable[[object], None] | Iterable[bytes]) -> Path:
    """Write ``path`` atomically: ``write`` is a function given the open binary file, or an
    iterable of byte chunks. A crash or an exception leaves the previous file (or none) in place.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: give a file name, e.g. {path / 'out'}")
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(folder, path.name)
    tmp = folder / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(write):
                write(f)
            else:
                for chunk in write:
                    f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(folder)
    return path


def current_version(folder) -> Path | None:
    """The version sub-folder ``CURRENT`` points to, or None when there is no pointer."""
    folder = Path(folder)
    try:
        name = (folder / POINTER).read_text().strip()
    except FileNotFoundError:
        return None
    if not name.startswith(_VERSION_PREFIX) or "/" in name or "\\" in name:
        raise ValueError(f"{folder / POINTER} is damaged (it names {name!r}, not a version folder)")
    return folder / name


def save_versioned(folder, write_files: Callable[[Path], None]) -> Path:
    """Save a set of files as a new version of ``folder`` and publish it in one atomic step.

    ``write_files(version_dir)`` writes the files into a fresh sub-folder. Then ``CURRENT`` is
    replaced atomically to point at it. The version it replaced stays (a reader may still be
    reading it); this process's older versions and those of writers that died are removed.
    Returns ``folder``.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file: a saved model is a folder; choose another path")
    folder.mkdir(parents=True, exist_ok=True)
    version = folder / f"{_VERSION_PREFIX}{time.time_ns()}-{os.getpid()}-{secrets.token_hex(3)}"
    version.mkdir(0o777)
    try:
        write_files(version)
        for entry in version.iterdir():
            with open(entry, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(version)
        previous = current_version(folder) if (folder / POINTER).exists() else None
        atomic_write(folder / POINTER, [version.name.encode() + b"\n"])
    except BaseException:
        shutil.rmtree(version, ignore_errors=True)
        raise
    # Remove our own earlier versions and those of dead writers; another live process's
    # versions may still be being written, and that process removes them itself.
    keep = {version.name} | ({previous.name} if previous is not None else set())
    for entry in folder.iterdir():
        if entry.name.startswith(_VERSION_PREFIX) and entry.name not in keep and entry.is_dir():
            pid = _owner_pid(entry.name)
            if pid is None or pid == os.getpid() or not _pid_alive(pid):
                shutil.rmtree(entry, ignore_errors=True)
    return folder
