"""CIFAR-10 / CIFAR-100 in the "python version" pickle batches, read with a restricted unpickler.

Pickle files can run arbitrary code when loaded; a data folder is not trusted, so batches are
read with an unpickler that allows only the NumPy array constructors a batch needs.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR100_FILES = {"train": ["train"], "test": ["test"]}


# What a CIFAR batch (Python 2 or 3, NumPy 1 or 2, any pickle protocol) needs to rebuild its
# arrays; nothing else is ever imported or called while loading one.
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global but the few NumPy and codec functions above."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a CIFAR batch never holds "
                                     "(refused: loading it could run code)")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, RecursionError) as err:
        raise ValueError(f"cannot read CIFAR batch {path}: {err}") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path} is not a CIFAR batch (it holds a {type(batch).__name__}, not a dict)")
    return batch


def _field(batch: dict, key: bytes, path: Path):
    if key not in batch:
        raise ValueError(f"{path} is not a CIFAR batch: it has no {key.decode()!r} entry")
    return batch[key]


def pickle_folder_kind(folder: Path) -> str | None:
    """"cifar10", "cifar100" or None, by the batch files present."""
    if all((folder / f).is_file() for files in CIFAR10_FILES.values() for f in files):
        return "cifar10"
    if all((folder / f).is_file() for files in CIFAR100_FILES.values() for f in files):
        return "cifar100"
    return None


def load_pickle_folder(folder) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """``({"train": (images (n, 32, 32, 3) uint8, labels), "test": ...}, class_names)``."""
    folder = Path(folder)
    kind = pickle_folder_kind(folder)
    if kind is None:
        raise FileNotFoundError(f"{folder} holds neither CIFAR-10 (data_batch_1..5, test_batch) nor CIFAR-100 (train, test) batches")
    files, label_key = (CIFAR10_FILES, b"labels") if kind == "cifar10" else (CIFAR100_FILES, b"fine_labels")
    splits = {}
    for split, names in files.items():
        datas, labels = [], []
        for name in names:
            batch = _unpickle(folder / name)
            data, label = np.asarray(_field(batch, b"data", folder / name)), np.asarray(_field(batch, label_key, folder / name))
            if data.ndim != 2 or data.shape[1] != 3072 or label.shape != (data.shape[0],):
                raise ValueError(f"{folder / name} is not a CIFAR batch: data {data.shape} and labels {label.shape} "
                                 "should be (n, 3072) and (n,)")
            datas.append(data.astype(np.uint8))
            labels.append(label.astype(np.int32))
        data = np.concatenate(datas)
        splits[split] = (data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), np.concatenate(labels))
    meta_name, meta_key = ("batches.meta", b"label_names") if kind == "cifar10" else ("meta", b"fine_label_names")
    n_classes = int(max(lab.max() for _, lab in splits.values())) + 1
    names = [str(i) for i in range(n_classes)]
    if (folder / meta_name).is_file():
        names = [bytes(n).decode(errors="replace") for n in _field(_unpickle(folder / meta_name), meta_key, folder / meta_name)]
    return splits, names
