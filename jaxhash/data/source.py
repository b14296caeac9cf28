"""Where an index's images come from: one typed record, written into and read from the ``.jhx`` header.

* :class:`DatasetSource` -- entry ``i`` is image ``i`` of a named data set's part: its training
  images (``"train"``), or the database or query part of a retrieval protocol.
* :class:`FolderSource` -- entry ``i`` is the file ``paths[i]`` (relative, POSIX) under ``root``,
  a folder or a ``.tar.gz``; the class of an image is its parent folder's name.

:func:`source_to_json` is the one writer and :func:`source_from_json` the one reader;
:func:`source_entries` gives the images and class names of index entries.
"""
from __future__ import annotations

import tarfile
import warnings
from pathlib import Path
from typing import NamedTuple, Sequence, Union

import numpy as np

__all__ = [
    "DatasetSource",
    "FolderSource",
    "ImageSource",
    "source_to_json",
    "source_from_json",
    "source_from_legacy_metadata",
    "source_entries",
    "SourceEntries",
    "class_of_path",
]

PARTS = ("train", "database", "query")


class DatasetSource(NamedTuple):
    """Images of a data set loaded with ``load_dataset(name, data_dir)``.

    part: ``"train"`` (the data set's training images, as loaded) or ``"database"`` / ``"query"``
    of ``retrieval_split(dataset, protocol, seed, shuffle_official)``; indexes written before the
    official database was shuffled read ``shuffle_official=False``.
    """

    name: str
    data_dir: str | None = None
    part: str = "train"
    protocol: str | None = None
    seed: int = 0
    image_size: tuple[int, int] | None = None
    shuffle_official: bool = True

    def check(self) -> "DatasetSource":
        if self.part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {self.part!r}")
        if self.part != "train" and self.protocol is None:
            raise ValueError(f"the {self.part} part of a data set needs a retrieval protocol (e.g. '1k')")
        return self


class FolderSource(NamedTuple):
    """Files under ``root`` (an absolute folder or ``.tar.gz`` path); ``paths[i]`` is entry ``i``."""

    root: str
    paths: tuple[str, ...]


ImageSource = Union[DatasetSource, FolderSource]


def source_to_json(source: ImageSource | None) -> dict | None:
    if source is None:
        return None
    if isinstance(source, DatasetSource):
        src = source.check()
        return {"kind": "dataset", "name": src.name, "data_dir": src.data_dir, "part": src.part,
                "protocol": src.protocol, "seed": int(src.seed),
                "image_size": None if src.image_size is None else [int(s) for s in src.image_size],
                "shuffle_official": bool(src.shuffle_official)}
    if isinstance(source, FolderSource):
        return {"kind": "folder", "root": str(source.root), "paths": [str(p) for p in source.paths]}
    raise TypeError(f"an index source is a DatasetSource or a FolderSource, got {type(source).__name__}")


def source_from_json(record) -> ImageSource | None:
    """Inverse of :func:`source_to_json`; raises ``ValueError`` on a malformed record."""
    if record is None:
        return None
    try:
        kind = record["kind"]
        if kind == "dataset":
            size = record.get("image_size")
            return DatasetSource(str(record["name"]), record.get("data_dir"), str(record["part"]), record.get("protocol"),
                                 int(record.get("seed", 0)), None if size is None else (int(size[0]), int(size[1])),
                                 bool(record.get("shuffle_official", False))).check()
        if kind == "folder":
            return FolderSource(str(record["root"]), tuple(str(p) for p in record["paths"]))
    except (KeyError, TypeError, IndexError, ValueError) as err:
        raise ValueError(f"malformed image source record ({err})") from None
    raise ValueError(f"unknown image source kind {record.get('kind')!r}")


def source_from_legacy_metadata(metadata: dict) -> ImageSource | None:
    """The source of a version-1 index, whose ``metadata`` held ``root``/``paths`` or ``data``/``protocol``/``seed``."""
    if metadata.get("paths") is not None and metadata.get("root"):
        return FolderSource(str(metadata["root"]), tuple(metadata["paths"]))
    if metadata.get("data"):
        return DatasetSource(metadata["data"], metadata.get("data_dir"), "database", metadata.get("protocol", "1k"),
                             int(metadata.get("seed", 0)), shuffle_official=False)
    return None


def class_of_path(path: str) -> str | None:
    """Class of a file in a ``class/file`` or ``split/class/file`` layout (its parent folder), or None."""
    from .folders import _split_class  # noqa: PLC0415

    return _split_class(path)[1] or None


def _dataset_part(source: DatasetSource):
    """``(images, labels, class names)`` of the source's part, or None (with one note) if the data
    set cannot be loaded any more (moved, deleted)."""
    from . import dataset_part, load_dataset  # noqa: PLC0415 - the package imports this module

    try:
        dataset = load_dataset(source.name, source.data_dir, progress=False, image_size=source.image_size)
    except (OSError, ValueError, ImportError) as err:
        warnings.warn(f"the index's images cannot be shown: {err}", stacklevel=3)
        return None
    part = dataset_part(dataset, source.part, source.protocol, source.seed, source.shuffle_official)
    return part.images, part.labels, dataset.class_names


class SourceEntries(NamedTuple):
    """What a source says about some index entries: ``images[n]`` (``(H, W, C)`` uint8 at the stored
    size, None where unreadable) and ``classes[n]`` (class name or None) of entry ``ids[n]``, and
    ``class_names``, every class the source files images under."""

    images: list
    classes: list
    class_names: frozenset


def source_entries(source: ImageSource | None, ids: Sequence[int], images: bool = True) -> SourceEntries:
    """Images and classes of index entries ``ids`` (a data set is loaded once, files are read once).

    ``images=False`` skips reading image files (``images`` is then all None; classes of a folder
    source come from the paths alone).
    """
    ids = [int(i) for i in ids]
    loaded = _dataset_part(source) if isinstance(source, DatasetSource) else None
    if loaded is not None:
        pixels, labels, names = loaded
        inside = [0 <= i < len(pixels) for i in ids]
        return SourceEntries([pixels[i] if ok and images else None for i, ok in zip(ids, inside)],
                             [names[labels[i]] if ok and 0 <= labels[i] < len(names) else None for i, ok in zip(ids, inside)],
                             frozenset(names))
    if isinstance(source, FolderSource):
        return SourceEntries(_folder_images(source, ids) if images else [None] * len(ids),
                             [class_of_path(source.paths[i]) if 0 <= i < len(source.paths) else None for i in ids],
                             frozenset(c for c in map(class_of_path, source.paths) if c))
    return SourceEntries([None] * len(ids), [None] * len(ids), frozenset())


def _folder_images(source: FolderSource, ids: list[int]) -> list[np.ndarray | None]:
    from ..images import decode_image  # noqa: PLC0415
    from .folders import is_archive, open_archive  # noqa: PLC0415

    out: list[np.ndarray | None] = [None] * len(ids)
    wanted: dict[str, list[int]] = {}
    for n, i in enumerate(ids):
        if 0 <= i < len(source.paths):
            wanted.setdefault(source.paths[i], []).append(n)
    root = Path(source.root)

    def put(name, data):
        try:
            image = decode_image(data)
        except (OSError, ValueError, SyntaxError):
            return
        for n in wanted[name]:
            out[n] = image

    if is_archive(root):
        try:
            with open_archive(root) as tar:
                for member in tar:
                    name = member.name.lstrip("./")
                    if name in wanted and member.isfile():
                        put(name, tar.extractfile(member).read())
        except (tarfile.TarError, OSError, EOFError):
            pass  # a moved or damaged archive: its images show as missing
        return out
    for name in wanted:
        try:
            put(name, (root / name).read_bytes())
        except OSError:
            pass
    return out
