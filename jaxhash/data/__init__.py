"""Data sets for hashing experiments, where they live, and the named retrieval protocols.

``load_dataset(spec, data_dir=None)`` accepts a name -- ``mnist``, ``fashion-mnist``, ``cifar10``,
``cifar100``, ``digits``, ``tfds:NAME`` -- or a path: a folder of IDX files, of CIFAR pickle
batches, of images laid out ``split/class/*.ext``, or such an image folder as ``.tar.gz``.

Names are looked up in order: ``data_dir`` (the ``--data-dir`` option), the ``JAXHASH_DATA``
environment variable, then the standard places (``/usr/share/datasets/...`` from Debian's
``dataset-*`` packages). Inside a data folder each set has one entry: ``mnist/`` (IDX files),
``fashion-mnist/``, ``cifar10-jpg.tar.gz`` or ``cifar10/`` (pickle batches or an image folder),
``cifar100/``.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..atomic import atomic_write
from ..checks import check_positive_int
from ..images import MixedSizesError, ResizedToMostCommon, conform_images, to_features
from .cifar import load_pickle_folder, pickle_folder_kind
from .folders import ImageSet, is_archive, load_image_folder
from .idx import has_idx_set, load_idx_folder
from .source import DatasetSource, FolderSource, ImageSource, SourceEntries, class_of_path, source_entries

__all__ = [
    "Dataset",
    "RetrievalSplit",
    "load_dataset",
    "locate_dataset",
    "retrieval_split",
    "to_features",
    "load_image_folder",
    "ImageSet",
    "DatasetNotFoundError",
    "KNOWN_DATASETS",
    "DatasetSource",
    "FolderSource",
    "ImageSource",
    "SourceEntries",
    "source_entries",
    "class_of_path",
    "DatasetPart",
    "dataset_part",
]

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# name -> (entries to look for inside a data folder, standard places, how to get it)
KNOWN_DATASETS = {
    "mnist": (["mnist", "MNIST"], ["/usr/share/datasets/mnist"],
              "put the four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-...) in DIR/mnist/ and pass --data-dir DIR"),
    "fashion-mnist": (["fashion-mnist", "fashion_mnist"], ["/usr/share/datasets/fashion-mnist"],
                      "run  sudo apt-get install -y dataset-fashion-mnist  (Debian/Ubuntu), or put its IDX files in DIR/fashion-mnist/"),
    "cifar10": (["cifar10-jpg.tar.gz", "cifar10", "cifar-10-batches-py"], ["/usr/share/datasets/cifar10"],
                "put cifar10-jpg.tar.gz (train/<class>/*.jpg, test/<class>/*.jpg) or the python pickle batches (cifar-10-batches-py) in DIR/, "
                "or use tfds:cifar10 where the internet is reachable"),
    "cifar100": (["cifar100", "cifar-100-python"], ["/usr/share/datasets/cifar100"],
                 "put the python pickle batches (cifar-100-python: train, test, meta) in DIR/cifar100/, or use tfds:cifar100 where the internet is reachable"),
}


class DatasetNotFoundError(FileNotFoundError):
    """A named data set is not in any of the places searched."""


class Dataset(NamedTuple):
    """A labelled image data set with its official splits (an empty test split where none exists).

    x_*: ``(n, H, W, C)`` uint8 images; y_*: ``(n,)`` int32 labels; paths_*: file names where the
    images came from files (else ``None``), relative to ``root`` (the folder or archive).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    paths_train: tuple[str, ...] | None = None
    paths_test: tuple[str, ...] | None = None
    root: str | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])


class RetrievalSplit(NamedTuple):
    """Queries, database and training set of a retrieval protocol (database = training set here).

    Images are ``(n, H, W, C)`` uint8; labels ``(n,)`` int32; paths, where known, name the files.
    """

    protocol: str
    query_x: np.ndarray
    query_y: np.ndarray
    db_x: np.ndarray
    db_y: np.ndarray
    query_paths: tuple[str, ...] | None = None
    db_paths: tuple[str, ...] | None = None

    @property
    def train_x(self) -> np.ndarray:
        return self.db_x

    @property
    def train_y(self) -> np.ndarray:
        return self.db_y


# -- locating -------------------------------------------------------------------------------------

def _search_dirs(data_dir) -> list[Path]:
    dirs = []
    if data_dir is not None:
        dirs.append(Path(data_dir))
    if os.environ.get("JAXHASH_DATA"):
        dirs.extend(Path(p) for p in os.environ["JAXHASH_DATA"].split(os.pathsep) if p)
    return dirs


def _usable(name: str, path: Path) -> bool:
    if not path.exists():
        return False
    if name in ("mnist", "fashion-mnist"):
        return path.is_dir() and has_idx_set(path)
    if is_archive(path):
        return True
    if path.is_dir():
        return (pickle_folder_kind(path) is not None or pickle_folder_kind(path / "cifar-10-batches-py") is not None
                or pickle_folder_kind(path / "cifar-100-python") is not None or any(path.iterdir()))
    return False


def locate_dataset(name: str, data_dir=None) -> Path:
    """The path that holds data set ``name``, or a :class:`DatasetNotFoundError` saying how to get it."""
    key = name.lower()
    if key not in KNOWN_DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(KNOWN_DATASETS)}, digits, tfds:NAME, or a path")
    entries, standard, how = KNOWN_DATASETS[key]
    tried = []
    for folder in _search_dirs(data_dir):
        for entry in entries:
            tried.append(folder / entry)
            if _usable(key, folder / entry):
                return folder / entry
    for place in standard:
        tried.append(Path(place))
        if _usable(key, Path(place)):
            return Path(place)
    raise DatasetNotFoundError(
        f"data set {name!r} not found; looked in: {', '.join(map(str, tried))}.\nTo get it: {how}."
        "\n(DIR is the folder you pass with --data-dir or set in JAXHASH_DATA.)"
    )


# -- loading --------------------------------------------------------------------------------------

def _cache_dir() -> Path:
    return Path(os.environ.get("JAXHASH_CACHE", Path.home() / ".cache" / "jaxhash"))


def _cached_archive(path: Path, progress: bool, image_size=None, mixed_sizes: str = "refuse") -> dict[str, ImageSet]:
    """Decoding tens of thousands of JPEGs takes a while: keep the arrays in a cache keyed by file.

    An archive of one size is cached once for both ``mixed_sizes`` modes; one that was resized to
    its most common size is cached apart (only that mode may read it)."""
    stat = path.stat()
    sized = "" if image_size is None else f"|{image_size[0]}x{image_size[1]}"

    def entry(resized: bool) -> Path:
        # v2: an entry keeps the notes its decoding gave (skipped files, conversions, resizing) and tells them on a hit;
        # v3: those notes include dropped transparency; v4: and classes that are not one folder
        text = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|v4{sized}{'|most common' if resized else ''}"
        return _cache_dir() / f"{path.name}.{hashlib.sha256(text.encode()).hexdigest()[:20]}.npz"

    most_common = image_size is None and mixed_sizes != "refuse"
    for cache in [entry(False)] + ([entry(True)] if most_common else []):
        if cache.is_file():
            cached = _read_cache_entry(cache, path)
            if cached is not None:
                for note in cached[1]:
                    warnings.warn(note, stacklevel=3)
                return cached[0]
    with warnings.catch_warnings(record=True) as said:  # refuses a damaged archive: nothing cached
        sets = load_image_folder(path, image_size=image_size, progress=progress, mixed_sizes=mixed_sizes)
    for note in said:
        warnings.warn(note.message, stacklevel=3)  # a Warning instance keeps its category
    resized = any(issubclass(note.category, ResizedToMostCommon) for note in said)
    cache = entry(resized)
    # jaxhash's own notes, not libraries' warnings
    notes = [str(note.message) for note in said if note.category in (UserWarning, ResizedToMostCommon)]
    arrays = {"splits": np.asarray(sorted(sets)), "class_names": np.asarray(next(iter(sets.values())).class_names),
              "notes": np.asarray(notes, dtype=str)}
    for s, st in sets.items():
        arrays.update({f"{s}_x": st.images, f"{s}_y": st.labels, f"{s}_paths": np.asarray(st.paths)})
    try:
        atomic_write(cache, lambda f: np.savez(f, **arrays))
    except OSError:
        pass  # a read-only home only costs speed
    return sets


def _read_cache_entry(cache: Path, path: Path):
    """``(sets, notes)`` of a cache entry, or None (a damaged entry is removed, with a note)."""
    try:
        with np.load(cache, allow_pickle=False) as z:
            splits = [s for s in z["splits"]]
            names = tuple(str(c) for c in z["class_names"])
            sets = {s: ImageSet(z[f"{s}_x"], z[f"{s}_y"], names, tuple(str(p) for p in z[f"{s}_paths"])) for s in splits}
            return sets, [str(note) for note in z["notes"]]
    except Exception as err:  # noqa: BLE001 - a damaged zip raises almost anything; the cache is only a cache
        warnings.warn(f"discarded a damaged cache entry {cache} ({type(err).__name__}); decoding {path.name} again",
                      stacklevel=4)
        cache.unlink(missing_ok=True)
        return None


def _from_image_sets(name: str, sets: dict[str, ImageSet], root: Path) -> Dataset:
    if "train" in sets:
        train = sets["train"]
        test = sets.get("test") or next((sets[s] for s in ("val", "valid", "validation") if s in sets), None)
    else:
        train, test = sets.get("all") or next(iter(sets.values())), None
    left_out = [st for st in sets.values() if st is not train and st is not test and len(st.paths)]
    if left_out:
        n = sum(len(st.paths) for st in left_out)
        warnings.warn(f"images in {root}: {n} image{'' if n == 1 else 's'} outside the train and test folders "
                      f"{'is' if n == 1 else 'are'} left out (e.g. {left_out[0].paths[0]}): move them into a split's class "
                      "folders to use them", stacklevel=3)
    if test is None:
        test = ImageSet(train.images[:0], train.labels[:0], train.class_names, ())
    return Dataset(name, train.images, train.labels, test.images, test.labels, train.class_names, train.paths, test.paths,
                   str(root.resolve()))


def _load_path(path: Path, name: str, progress: bool, image_size=None, mixed_sizes: str = "refuse") -> Dataset:
    if path.is_dir() and has_idx_set(path):
        splits = load_idx_folder(path)
        classes = FASHION_CLASSES if "fashion" in name else tuple(str(i) for i in range(10))
        return Dataset(name, *splits["train"], *splits["test"], classes)
    for folder in (path, path / "cifar-10-batches-py", path / "cifar-100-python"):
        if folder.is_dir() and pickle_folder_kind(folder):
            splits, names = load_pickle_folder(folder)
            return Dataset(name, *splits["train"], *splits["test"], tuple(names))
    if path.is_dir():  # decoded once, resized while decoding: a folder of large photos never sits in memory at full size
        return _from_image_sets(name, load_image_folder(path, image_size, progress=progress, mixed_sizes=mixed_sizes), path)
    if is_archive(path):
        try:
            # at the images' own size (the archive's cache serves every image_size); mixed sizes to the most common if
            # allowed and no size is asked for
            sets = _cached_archive(path, progress, None, mixed_sizes if image_size is None else "refuse")
        except MixedSizesError:
            if image_size is None:
                raise
            sets = _cached_archive(path, progress, image_size)  # resized while decoding (load_dataset resizes the rest)
        return _from_image_sets(name, sets, path)
    raise ValueError(f"{path} is neither an IDX folder, CIFAR pickle batches, an image folder nor a .tar.gz of images")


def _load_digits() -> Dataset:
    try:
        from sklearn.datasets import load_digits  # noqa: PLC0415 - optional
    except ImportError:
        raise ImportError("the digits data set ships with scikit-learn: pip install 'jaxhash[digits]'") from None
    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return Dataset("digits", images, d.target.astype(np.int32), images[:0], d.target[:0].astype(np.int32), tuple(str(i) for i in range(10)))


def _load_tfds(name: str, data_dir) -> Dataset:
    try:
        import tensorflow_datasets as tfds  # noqa: PLC0415 - optional, online path
    except ImportError:
        raise ImportError(f"tfds:{name} needs tensorflow-datasets: pip install 'jaxhash[tfds]' (it downloads from the internet)") from None
    kwargs = {"data_dir": str(data_dir)} if data_dir else {}
    out = {}
    for split in ("train", "test"):
        x, y = tfds.as_numpy(tfds.load(name, split=split, batch_size=-1, as_supervised=True, **kwargs))
        out[split] = (np.asarray(x, np.uint8), np.asarray(y, np.int32))
    n_classes = int(max(out["train"][1].max(), out["test"][1].max())) + 1
    return Dataset(f"tfds:{name}", *out["train"], *out["test"], tuple(str(i) for i in range(n_classes)))


def load_dataset(spec: str, data_dir=None, progress: bool = True, image_size: tuple[int, int] | None = None,
                 mixed_sizes: str = "refuse", resized: dict | None = None) -> Dataset:
    """Load a data set by name or path (see the module docstring for where names are looked up).

    ``image_size`` = ``(H, W)`` resizes every image. Without it, an image folder of mixed sizes
    raises a :class:`~jaxhash.images.MixedSizesError` naming the sizes (``mixed_sizes="refuse"``)
    or is resized to its most common size with one note (``mixed_sizes="most common"``).
    ``resized``: a dict that receives ``{"from": (H, W, C)}`` where a data set of one size was resized to
    ``image_size`` after loading, for callers that chose the size themselves and say so.
    """
    if mixed_sizes not in ("refuse", "most common"):
        raise ValueError(f"mixed_sizes must be 'refuse' or 'most common', got {mixed_sizes!r}")
    if image_size is not None:
        image_size = (check_positive_int(image_size[0], "image height"), check_positive_int(image_size[1], "image width"))
    text = str(spec)
    key = text.lower()
    if key.startswith("tfds:"):
        dataset = _load_tfds(text[5:], data_dir)
    elif key == "digits":
        dataset = _load_digits()
    elif key in KNOWN_DATASETS:
        dataset = _load_path(locate_dataset(key, data_dir), key, progress, image_size, mixed_sizes)
    else:
        path = Path(text).expanduser()
        if not path.exists():
            raise DatasetNotFoundError(
                f"{spec!r} is neither a known data set ({', '.join(KNOWN_DATASETS)}, digits, tfds:NAME) nor an existing path"
            )
        dataset = _load_path(path, path.name.split(".")[0], progress, image_size, mixed_sizes)
    if image_size is not None and dataset.image_shape[:2] != tuple(image_size):
        shape = tuple(image_size) + (dataset.image_shape[2],)
        if resized is not None:
            resized["from"] = tuple(dataset.image_shape)
        dataset = dataset._replace(x_train=conform_images(dataset.x_train, shape, counts={}),
                                   x_test=conform_images(dataset.x_test, shape, counts={}))
    return dataset


# -- protocols ------------------------------------------------------------------------------------

def _parse_protocol(protocol: str) -> int | None:
    p = str(protocol).lower()
    if p == "official":
        return None
    if p.endswith("k") and p[:-1].isdigit():
        return int(p[:-1]) * 1000
    if p.isdigit() and int(p) > 0:
        return int(p)
    raise ValueError(f"unknown protocol {protocol!r}: use 'official', '1k' (1,000 queries, 100 per class) or a query count like 500")


def retrieval_split(dataset: Dataset, protocol: str = "1k", seed: int = 0, shuffle_official: bool = True) -> RetrievalSplit:
    """Split a data set by a named retrieval protocol.

    * ``official``: the official test split are the queries; the train split is database and
      training set, in an order drawn with ``seed`` (``shuffle_official=False``: as loaded). An
      image folder loads class by class, and exact search breaks ties in Hamming distance by
      database position: in class order, queries of the first classes would find their own
      class first among equally distant images and those of the last classes other classes.
    * ``1k`` (or any ``N``/``Nk``): N queries, N / n_classes per class, drawn with ``seed`` from
      train and test together; everything else is database and training set.
    """
    n_queries = _parse_protocol(protocol)
    if n_queries is None:
        if dataset.x_test.shape[0] == 0:
            raise ValueError(f"{dataset.name} has no official test split: use protocol '1k' or a query count")
        if not shuffle_official:
            return RetrievalSplit("official", dataset.x_test, dataset.y_test, dataset.x_train, dataset.y_train,
                                  dataset.paths_test, dataset.paths_train)
        order = np.random.default_rng(seed).permutation(len(dataset.y_train))
        paths = None if dataset.paths_train is None else tuple(dataset.paths_train[i] for i in order)
        return RetrievalSplit("official", dataset.x_test, dataset.y_test, dataset.x_train[order], dataset.y_train[order],
                              dataset.paths_test, paths)
    x = np.concatenate([dataset.x_train, dataset.x_test])
    y = np.concatenate([dataset.y_train, dataset.y_test])
    paths = None if dataset.paths_train is None else tuple(dataset.paths_train) + tuple(dataset.paths_test or ())
    classes = np.unique(y[y >= 0])
    per_class = n_queries // len(classes)
    if per_class == 0:
        raise ValueError(f"{n_queries} quer{'y' if n_queries == 1 else 'ies'} cannot cover {len(classes)} classes: use a protocol "
                         f"of at least {len(classes)} queries")
    sizes = {int(c): int((y == c).sum()) for c in classes}
    smallest = min(sizes, key=sizes.get)
    if sizes[smallest] <= per_class:
        names = dataset.class_names or ()
        name = repr(names[smallest]) if smallest < len(names) else str(smallest)
        most = (sizes[smallest] - 1) * len(classes)
        raise ValueError(f"class {name} of {dataset.name} has only {sizes[smallest]} images, too few for {per_class} queries "
                         f"per class (and one left in the database)"
                         + (f": use a protocol of at most {most} queries (--protocol {most})" if most else ""))
    rng = np.random.default_rng(seed)
    picked = []
    for c in classes:
        members = np.flatnonzero(y == c)
        picked.append(np.sort(rng.choice(members, per_class, replace=False)))
    query = np.concatenate(picked)
    rest = np.setdiff1d(np.arange(y.size), query)
    take = (lambda idx: tuple(paths[i] for i in idx)) if paths is not None else (lambda idx: None)
    return RetrievalSplit(str(protocol), x[query], y[query], x[rest], y[rest], take(query), take(rest))


class DatasetPart(NamedTuple):
    """The images of one part of a data set, with their labels and (where known) file paths."""

    images: np.ndarray
    labels: np.ndarray
    paths: tuple[str, ...] | None


def dataset_part(dataset: Dataset, part: str = "train", protocol: str | None = None, seed: int = 0,
                 shuffle_official: bool = True) -> DatasetPart:
    """``"train"``: the training images as loaded (every image of a folder without splits);
    ``"database"`` / ``"query"``: that part of ``retrieval_split(dataset, protocol, seed)``.

    The one rule that ``jaxhash fit``, ``jaxhash index`` and an index's :class:`DatasetSource`
    share, so that index entry ``i`` is always the same image.
    """
    if part == "train":
        return DatasetPart(dataset.x_train, dataset.y_train, dataset.paths_train)
    if part not in ("database", "query") or protocol is None:
        raise ValueError(f"part must be 'train', or 'database' / 'query' with a protocol; got {part!r}, protocol {protocol!r}")
    split = retrieval_split(dataset, protocol, seed, shuffle_official)
    if part == "database":
        return DatasetPart(split.db_x, split.db_y, split.db_paths)
    return DatasetPart(split.query_x, split.query_y, split.query_paths)
