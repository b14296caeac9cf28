"""Where the service may read images from: folders inside allowed roots, and uploaded zip files.

Nothing a client sends is used as a path as it is: a server-side folder must resolve (symlinks
followed) inside one of the roots named at start-up, every file found in it must too, and the
members of an uploaded zip are written under new names (``<class>/<n>.<ext>``), with their class
folder reduced to a safe name.
"""
from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from ..data.folders import IMAGE_EXTENSIONS, SPLIT_NAMES

__all__ = ["ImageFile", "RequestError", "Limits", "allowed_folder", "list_image_files", "extract_zip", "class_counts"]


class RequestError(ValueError):
    """Bad input from a client: answered with ``status`` and this message, and nothing is changed."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Limits(NamedTuple):
    """What one request may bring: bytes of an upload, pixels of one image, and for a zip its
    total uncompressed bytes, members, and the largest compression ratio of a member."""

    upload_bytes: int = 32 << 20
    zip_bytes: int = 1 << 30
    image_pixels: int = 40_000_000
    zip_uncompressed_bytes: int = 4 << 30
    zip_members: int = 200_000
    zip_ratio: float = 200.0


class ImageFile(NamedTuple):
    """An image file found for a job: its path on this machine and its class folder (or None)."""

    path: Path
    label: str | None


def _inside(path: Path, roots) -> bool:
    return any(path == root or root in path.parents for root in roots)


def allowed_folder(folder: str, roots) -> Path:
    """``folder`` resolved, if it is an existing folder inside one of ``roots``; else RequestError."""
    if not roots:
        raise RequestError("the server was started without --allow-root, so it reads no folders of this machine: "
                           "restart it with --allow-root FOLDER, or upload a zip file", 403)
    resolved_roots = [Path(r).resolve() for r in roots]
    try:
        path = Path(folder).expanduser().resolve(strict=True)
    except (OSError, RuntimeError):
        raise RequestError(f"folder {folder!r} does not exist on the server", 404) from None
    if not _inside(path, resolved_roots):
        raise RequestError(f"folder {folder!r} is outside the allowed roots ({', '.join(map(str, resolved_roots))}): "
                           "pick a folder inside one of them, or restart the server with --allow-root", 403)
    if not path.is_dir():
        raise RequestError(f"{folder!r} is a file, not a folder", 400)
    return path


def _label_of(rel: PurePosixPath) -> str | None:
    parts = rel.parts[:-1]
    if parts and parts[0].lower() in SPLIT_NAMES:
        parts = parts[1:]
    return parts[-1] if parts else None


def list_image_files(folder: Path, roots=None) -> tuple[list[ImageFile], int]:
    """Image files under ``folder`` (sorted), and how many were skipped because a symlink led
    outside ``roots``. The class of a file is its parent folder's name (a leading train/test/...
    folder is skipped); files directly in ``folder`` have none."""
    resolved_roots = [Path(r).resolve() for r in (roots or [folder])]
    found, escaped = [], 0
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            path = Path(dirpath) / name
            real = path.resolve()
            if not _inside(real, resolved_roots) or not real.is_file():
                escaped += 1
                continue
            found.append(ImageFile(real, _label_of(PurePosixPath(path.relative_to(folder).as_posix()))))
    return found, escaped


def class_counts(files) -> dict[str, int]:
    counts: dict[str, int] = {}
    for f in files:
        if f.label is not None:
            counts[f.label] = counts.get(f.label, 0) + 1
    return counts


def _safe_name(label: str) -> str:
    cleaned = re.sub(r"[^\w.\- ]+", "_", label, flags=re.UNICODE).strip(" .") or "class"
    return cleaned[:100]


def _unused_name(folder: Path, rel: PurePosixPath, taken: dict) -> Path:
    """``folder/<the member's own name>`` (made safe), numbered where a member of another folder took it: the
    stored images, their log lines and search results keep the names the user gave them. ``taken`` counts the
    names given so far (numbering is then one step per member, however many share a name)."""
    stem, suffix = _safe_name(rel.stem), rel.suffix.lower()
    key = (folder, stem.lower(), suffix)
    n = taken.get(key, 0)
    while True:  # a member may itself be called "a (2).jpg": step past it
        n += 1
        path = folder / (f"{stem}{suffix}" if n == 1 else f"{stem} ({n}){suffix}")
        if not path.exists():
            taken[key] = n
            return path


def extract_zip(zip_path: Path, dest: Path, limits: Limits = Limits()) -> int:
    """Check an uploaded zip and write its images under ``dest`` as ``<class>/<name>.<ext>``.

    Refused (RequestError, nothing written) when a member's name is absolute or climbs out with
    ``..``, when there are too many members, too many bytes once uncompressed, or a member
    compressed beyond ``limits.zip_ratio`` (a zip bomb). Returns the number of images written.
    """
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError):
        raise RequestError("the upload is not a readable zip file") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > limits.zip_members:
            raise RequestError(f"the zip holds {len(members):,} files, more than the limit of {limits.zip_members:,}", 413)
        total = 0
        chosen = []
        for m in members:
            name = m.filename.replace("\\", "/")
            rel = PurePosixPath(name)
            if name.startswith("/") or rel.is_absolute() or ".." in rel.parts or re.match(r"^[A-Za-z]:", name):
                raise RequestError(f"the zip member {name!r} would be written outside its folder: refused")
            if m.file_size > 0 and m.compress_size > 0 and m.file_size / m.compress_size > limits.zip_ratio:
                raise RequestError(f"the zip member {name!r} expands {m.file_size / m.compress_size:.0f} times "
                                   f"(more than {limits.zip_ratio:.0f}): a zip bomb is refused", 413)
            total += m.file_size
            if total > limits.zip_uncompressed_bytes:
                raise RequestError(f"the zip expands to more than {limits.zip_uncompressed_bytes:,} bytes: refused", 413)
            if rel.suffix.lower() in IMAGE_EXTENSIONS and not rel.name.startswith("."):
                chosen.append((m, rel))
        if not chosen:
            raise RequestError("the zip holds no image files (.jpg, .png, ...)")
        dest.mkdir(parents=True, exist_ok=True)
        taken: dict = {}
        for m, rel in chosen:
            label = _label_of(rel)
            folder = dest / _safe_name(label) if label is not None else dest
            folder.mkdir(parents=True, exist_ok=True)
            with archive.open(m) as src, open(_unused_name(folder, rel, taken), "xb") as out:
                remaining = limits.zip_uncompressed_bytes
                while chunk := src.read(1 << 20):  # a member that lies about its size stops at the limit
                    remaining -= len(chunk)
                    if remaining < 0:
                        raise RequestError("the zip expands beyond its declared size: refused", 413)
                    out.write(chunk)
    return len(chosen)
