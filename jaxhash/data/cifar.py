"""CIFAR-10 / CIFAR-100 in the "python version" pickle batches."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR100_FILES = {"train": ["train"], "test": ["test"]}


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except (OSError, pickle.UnpicklingError, EOFError) as err:
        raise ValueError(f"cannot read CIFAR batch {path}: {err}") from None


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
        batches = [_unpickle(folder / n) for n in names]
        data = np.concatenate([np.asarray(b[b"data"], np.uint8) for b in batches])
        labels = np.concatenate([np.asarray(b[label_key], np.int32) for b in batches])
        splits[split] = (data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels)
    meta_name, meta_key = ("batches.meta", b"label_names") if kind == "cifar10" else ("meta", b"fine_label_names")
    n_classes = int(max(lab.max() for _, lab in splits.values())) + 1
    names = [str(i) for i in range(n_classes)]
    if (folder / meta_name).is_file():
        names = [n.decode() for n in _unpickle(folder / meta_name)[meta_key]]
    return splits, names
