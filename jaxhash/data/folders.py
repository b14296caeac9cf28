"""Images from folders laid out ``split/class/*.ext`` (or ``class/*.ext``), or the same in a .tar.gz."""
from __future__ import annotations

import tarfile
import warnings
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator, NamedTuple

import numpy as np
from PIL import UnidentifiedImageError

from ..images import alpha_note, channels_note, common_shape, conform_images, decode_image

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
SPLIT_NAMES = ("train", "test", "val", "valid", "validation", "query", "database")


class ImageSet(NamedTuple):
    """Decoded images of one split: ``images (n, H, W, C)`` uint8, ``labels (n,)`` int32 (-1 if
    unlabelled), ``class_names``, and ``paths`` (relative to the folder or archive)."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    paths: tuple[str, ...]


def is_archive(path: Path) -> bool:
    return path.is_file() and (path.name.endswith(".tar.gz") or path.name.endswith(".tgz") or path.suffix == ".tar")


def open_archive(path: Path) -> tarfile.TarFile:
    """Open a .tar.gz / .tgz / .tar for reading, by its name (no guessing between compressions)."""
    return tarfile.open(path, "r:" if path.suffix == ".tar" else "r:gz")


# A single image file larger than this is not decoded (a photo is a few MB; this bounds memory).
MAX_IMAGE_FILE_BYTES = 256 << 20


def _iter_entries(root: Path) -> Iterator[tuple[str, int, Callable[[], bytes]]]:
    """Yield ``(relative posix path, size in bytes, read)`` for every file under a folder or in an archive.

    ``read()`` must be called before the next item is taken (archives are read in one pass).
    An archive is read to its end, so that a gzip CRC error is found even past the last member.
    """
    if is_archive(root):
        try:
            with open_archive(root) as tar:
                for member in tar:
                    if member.isfile():
                        yield _member_name(member.name), member.size, (lambda m=member: tar.extractfile(m).read())
                while tar.fileobj.read(1 << 20):  # the rest: padding and the gzip trailer with its CRC
                    pass
        except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            raise ValueError(f"cannot read archive {root} ({reason}): it is truncated or damaged; download or copy it again") from None
        return
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        yield path.relative_to(root).as_posix(), path.stat().st_size, path.read_bytes


def _member_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def _split_class(rel: str) -> tuple[str, str]:
    parts = PurePosixPath(rel).parts
    if len(parts) >= 3 and parts[-3].lower() in SPLIT_NAMES:
        return parts[-3].lower(), parts[-2]
    if len(parts) >= 2:
        return "all", parts[-2]
    return "all", ""


def _class_folders_note(root: Path, labelled: list[str]) -> str | None:
    """A note where a class is not one folder: folders of one name in several places are one class, and a
    class folder inside another class's folder is a class of its own (its images are not the outer class's).
    ``labelled``: the relative paths of the labelled images."""
    folders: set[str] = set()
    places: dict[str, set[str]] = {}  # class name -> its folders, a split's folder left out (train/cat, test/cat: one)
    for rel in labelled:
        split, cls = _split_class(rel)
        parts = PurePosixPath(rel).parts[:-1]
        folders.add("/".join(parts))
        places.setdefault(cls, set()).add("/".join(parts if split == "all" else parts[:-2] + parts[-1:]))
    merged = sorted(cls for cls, paths in places.items() if len(paths) > 1)
    inner = sorted(f for f in folders if any(str(up) in folders for up in PurePosixPath(f).parents))
    said = []
    if merged:
        cls = merged[0]
        shown = sorted(f for f in folders if PurePosixPath(f).name == cls)
        more = f" (and {len(merged) - 1} more such classes)" if len(merged) > 1 else ""
        said.append(f"the folders {', '.join(shown[:3])}{' ...' if len(shown) > 3 else ''} are one class, {cls!r}, "
                    f"by their name{more}")
    if inner:
        said.append(f"{inner[0]} is a class of its own, inside another class's folder"
                    + (f" (and {len(inner) - 1} more folders)" if len(inner) > 1 else ""))
    if not said:
        return None
    return (f"images in {root}: " + "; ".join(said) + ". A class is the name of the folder an image is in: rename or "
            "move folders if that is not what you meant")


def _regrey_colour_images(root: Path, records: dict, image_size: tuple[int, int]) -> None:
    """Decode the colour images of a mostly grey set again, made grey before resizing as a query image is (resized
    first, then made grey, they round differently); a second pass over an archive, reading only those."""
    colour = {rel: (recs, i) for recs in records.values() for i, (rel, _, img) in enumerate(recs) if img.shape[2] == 3}
    if not colour:
        return
    for rel, _, read in _iter_entries(root):
        if rel in colour:
            recs, i = colour[rel]
            try:
                recs[i] = (rel, recs[i][1], decode_image(read(), image_size, 1))
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
                pass  # changed since the first reading: its first decoding stays


def load_image_folder(root, image_size: tuple[int, int] | None = None, channels: int | None = None,
                      progress: bool = True, mixed_sizes: str = "refuse") -> dict[str, ImageSet]:
    """Load every image under ``root`` (a folder or a .tar.gz), grouped by split.

    Layout ``split/class/name.ext`` gives splits (train, test, ...) and labels; ``class/name.ext``
    gives one split ``"all"``; loose files are unlabelled (label -1). Files that are not readable
    images (other extensions, undecodable, over 256 MB, or declaring more pixels than Pillow's
    decompression-bomb limit) are skipped without being read where possible, and listed in one
    warning. A damaged archive (gzip CRC, truncation) is refused.

    ``image_size`` = ``(H, W)`` resizes every image. Without it, images of several sizes raise a
    :class:`~jaxhash.images.MixedSizesError` (``mixed_sizes="refuse"``) or are resized to the most
    common size with one note (``mixed_sizes="most common"``, for models that resize every image
    anyway); either way each file is decoded once.
    ``channels`` = 1 or 3 converts every image (one note says how many were converted); without it
    a folder mixing grey and colour images is converted to the channel count of the majority, with one note.

    Returns ``{split: ImageSet}``; class ids are the sorted class-folder names, shared by splits.
    """
    from ..progress import progress as bar  # noqa: PLC0415

    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"no image folder or archive at {root}")
    records: dict[str, list[tuple[str, str, np.ndarray]]] = {}
    skipped: list[str] = []
    decoded: dict[str, int] = {}
    for rel, size, read in bar(_iter_entries(root), desc=f"reading {root.name}", unit=" files", disable=not progress, leave=False):
        if PurePosixPath(rel).suffix.lower() not in IMAGE_EXTENSIONS or size > MAX_IMAGE_FILE_BYTES:
            if not PurePosixPath(rel).name.startswith("."):
                skipped.append(rel)
            continue
        try:
            image = decode_image(read(), image_size, channels, counts=decoded)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            skipped.append(rel)
            continue
        split, cls = _split_class(rel)
        records.setdefault(split, []).append((rel, cls, image))
    if skipped:
        shown = ", ".join(skipped[:10]) + (f", ... ({len(skipped) - 10} more)" if len(skipped) > 10 else "")
        files = "an unreadable or non-image file" if len(skipped) == 1 else f"{len(skipped)} unreadable or non-image files"
        warnings.warn(f"skipped {files} in {root}: {shown}", stacklevel=2)
    n_images = sum(len(recs) for recs in records.values())
    for note in (alpha_note(decoded.get("alpha", 0), f"images in {root}"),
                 channels_note(f"images in {root}", decoded.get("converted", 0), n_images, channels) if channels else None):
        if note:
            warnings.warn(note, stacklevel=2)
    if not records:
        raise ValueError(f"no readable images found in {root} (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    images = [img for recs in records.values() for _, _, img in recs]
    shape = common_shape(images, f"images in {root}", mixed_sizes)
    if image_size is not None and channels is None and shape[2] == 1:
        _regrey_colour_images(root, records, image_size)
    class_names = tuple(sorted({cls for recs in records.values() for _, cls, _ in recs if cls}))
    note = _class_folders_note(root, [rel for recs in records.values() for rel, cls, _ in recs if cls])
    if note:
        warnings.warn(note, stacklevel=2)
    class_id = {c: i for i, c in enumerate(class_names)}
    out = {}
    for split, recs in records.items():
        recs.sort(key=lambda r: r[0])
        out[split] = ImageSet(
            conform_images([r[2] for r in recs], shape, counts={}),
            np.asarray([class_id.get(r[1], -1) for r in recs], np.int32),
            class_names,
            tuple(r[0] for r in recs),
        )
    return out
