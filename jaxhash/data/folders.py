"""Images from folders laid out ``split/class/*.ext`` (or ``class/*.ext``), or the same in a .tar.gz."""
from __future__ import annotations

import io
import tarfile
import warnings
from pathlib import Path, PurePosixPath
from typing import Iterator, NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

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


def _iter_entries(root: Path) -> Iterator[tuple[str, callable]]:
    """Yield ``(relative posix path, read_bytes)`` for every file under a folder or in an archive."""
    if is_archive(root):
        try:
            with tarfile.open(root) as tar:
                for member in tar:
                    if member.isfile():
                        data = tar.extractfile(member).read()
                        yield member.name.lstrip("./"), (lambda d=data: d)
        except (tarfile.TarError, OSError, EOFError) as err:
            raise ValueError(f"cannot read archive {root}: {err}; it may be truncated, download it again") from None
        return
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        yield path.relative_to(root).as_posix(), path.read_bytes


def decode_image(data: bytes, image_size: tuple[int, int] | None, channels: int | None) -> np.ndarray:
    """Decode bytes to ``(H, W, C)`` uint8; convert to ``channels`` (1 or 3) and resize if asked."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        if channels == 1 or (channels is None and img.mode in ("L", "1", "I;16", "I")):
            img = img.convert("L")
        else:
            img = img.convert("RGB")
        if image_size is not None and img.size != (image_size[1], image_size[0]):
            img = img.resize((image_size[1], image_size[0]), Image.BILINEAR)
        arr = np.asarray(img, np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def _split_class(rel: str) -> tuple[str, str]:
    parts = PurePosixPath(rel).parts
    if len(parts) >= 3 and parts[-3].lower() in SPLIT_NAMES:
        return parts[-3].lower(), parts[-2]
    if len(parts) >= 2:
        return "all", parts[-2]
    return "all", ""


def load_image_folder(root, image_size: tuple[int, int] | None = None, channels: int | None = None,
                      progress: bool = True) -> dict[str, ImageSet]:
    """Load every image under ``root`` (a folder or a .tar.gz), grouped by split.

    Layout ``split/class/name.ext`` gives splits (train, test, ...) and labels; ``class/name.ext``
    gives one split ``"all"``; loose files are unlabelled (label -1). Files that are not readable
    images are skipped and listed in one warning. Without ``image_size`` all images must share
    one size.

    Returns ``{split: ImageSet}``; class ids are the sorted class-folder names, shared by splits.
    """
    from ..progress import progress as bar  # noqa: PLC0415

    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"no image folder or archive at {root}")
    records: dict[str, list[tuple[str, str, np.ndarray]]] = {}
    skipped: list[str] = []
    for rel, read in bar(_iter_entries(root), desc=f"reading {root.name}", unit=" files", disable=not progress, leave=False):
        if PurePosixPath(rel).suffix.lower() not in IMAGE_EXTENSIONS:
            if not PurePosixPath(rel).name.startswith("."):
                skipped.append(rel)
            continue
        try:
            image = decode_image(read(), image_size, channels)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            skipped.append(rel)
            continue
        split, cls = _split_class(rel)
        records.setdefault(split, []).append((rel, cls, image))
    if skipped:
        shown = ", ".join(skipped[:10]) + (f", ... ({len(skipped) - 10} more)" if len(skipped) > 10 else "")
        warnings.warn(f"skipped {len(skipped)} unreadable or non-image files in {root}: {shown}", stacklevel=2)
    if not records:
        raise ValueError(f"no readable images found in {root} (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    shapes = {img.shape for recs in records.values() for _, _, img in recs}
    if len(shapes) > 1:
        raise ValueError(f"images in {root} have different sizes {sorted(shapes)[:4]}...: pass image_size=(H, W) to resize them")
    class_names = tuple(sorted({cls for recs in records.values() for _, cls, _ in recs if cls}))
    class_id = {c: i for i, c in enumerate(class_names)}
    out = {}
    for split, recs in records.items():
        recs.sort(key=lambda r: r[0])
        out[split] = ImageSet(
            np.stack([r[2] for r in recs]),
            np.asarray([class_id.get(r[1], -1) for r in recs], np.int32),
            class_names,
            tuple(r[0] for r in recs),
        )
    return out
