"""Images from folders laid out ``split/class/*.ext`` (or ``class/*.ext``), or the same in a .tar.gz."""
from __future__ import annotations

import tarfile
import warnings
from pathlib import Path, PurePosixPath
from typing import Iterator, NamedTuple

import numpy as np
from PIL import UnidentifiedImageError

from ..images import conform_images, decode_image

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
    images are skipped and listed in one warning.

    ``image_size`` = ``(H, W)`` resizes every image; without it all images must share one size.
    ``channels`` = 1 or 3 converts every image; without it a folder mixing grey and colour images
    is converted to the channel count of the majority, with one note.

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
    images = [img for recs in records.values() for _, _, img in recs]
    shape = _common_shape(root, images)
    class_names = tuple(sorted({cls for recs in records.values() for _, cls, _ in recs if cls}))
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


def _common_shape(root: Path, images: list[np.ndarray]) -> tuple[int, int, int]:
    """The one size all images share (else a clear error), and the majority's channel count (with a note)."""
    sizes: dict[tuple[int, int], int] = {}
    channel_counts = {1: 0, 3: 0}
    for img in images:
        sizes[img.shape[:2]] = sizes.get(img.shape[:2], 0) + 1
        channel_counts[img.shape[2]] += 1
    if len(sizes) > 1:
        common = sorted(sizes.items(), key=lambda kv: -kv[1])
        listed = ", ".join(f"{h}x{w} ({n} images)" for (h, w), n in common[:4]) + (", ..." if len(common) > 4 else "")
        (h, w), _ = common[0]
        raise ValueError(f"images in {root} have different sizes: {listed}. Resize them to one size on loading: "
                         f"--image-size {h}x{w} on the command line, or image_size=({h}, {w}) in Python")
    channels = 3 if channel_counts[3] >= channel_counts[1] else 1
    minority = channel_counts[1 if channels == 3 else 3]
    if minority:
        warnings.warn(f"{root}: converted {minority} {'grey' if channels == 3 else 'colour'} images to "
                      f"{'RGB' if channels == 3 else 'grey'} ({channel_counts[channels]} of {len(images)} images are "
                      f"{'RGB' if channels == 3 else 'grey'})", stacklevel=3)
    return next(iter(sizes)) + (channels,)
