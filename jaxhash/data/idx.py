"""IDX files (MNIST, Fashion-MNIST), plain or gzip-compressed."""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw) into a NumPy array of its stored shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"cannot read IDX file {path}: {err}; the file may be truncated, download it again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    dims = np.frombuffer(data, ">u4", ndim, 4).astype(int)
    dtype = np.dtype(_DTYPES[data[2]])
    count = int(np.prod(dims))
    offset = 4 + 4 * ndim
    if len(data) - offset < count * dtype.itemsize:
        raise ValueError(f"{path} is truncated: expected {count} values of shape {tuple(dims)}")
    return np.frombuffer(data, dtype, count, offset).reshape(dims).astype(dtype.newbyteorder("="))


IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def find_idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    return None


def has_idx_set(folder: Path) -> bool:
    return all(find_idx_file(folder, s) for pair in IDX_FILES.values() for s in pair)


def load_idx_folder(folder) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images (n, 28, 28, 1) uint8, labels (n,) int32), "test": ...}`` from a folder."""
    folder = Path(folder)
    out = {}
    for split, (img_stem, lab_stem) in IDX_FILES.items():
        img_path, lab_path = find_idx_file(folder, img_stem), find_idx_file(folder, lab_stem)
        if img_path is None or lab_path is None:
            raise FileNotFoundError(f"{folder} lacks {img_stem}[.gz] or {lab_stem}[.gz]")
        images, labels = read_idx(img_path), read_idx(lab_path)
        if images.ndim != 3 or labels.shape != (images.shape[0],):
            raise ValueError(f"{img_path} and {lab_path} do not match: shapes {images.shape} and {labels.shape}")
        out[split] = (images[..., None].astype(np.uint8), labels.astype(np.int32))
    return out
