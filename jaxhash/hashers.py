"""The protocol every hashing method follows, its save/load, and the registry of methods.

A hasher follows scikit-learn's conventions: ``__init__`` only stores hyper-parameters (plain
keyword arguments, including ``n_bits`` and ``seed``), ``fit(x, y=None)`` learns attributes whose
names end in ``_`` and returns ``self``, and ``encode(x)`` returns ``(n, ceil(n_bits/32))`` uint32
packed codes. ``save(dir)`` / ``load(dir)`` keep the hyper-parameters as JSON and the learned
arrays as ``.npz``. A new method is one class plus one :func:`register` line.
"""
from __future__ import annotations

import inspect
import json
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from .codes import pack_bits

__all__ = ["Hasher", "register", "make_hasher", "load_hasher", "available_methods", "NotFittedError"]

FORMAT_VERSION = 1
_REGISTRY: dict[str, type["Hasher"]] = {}


class NotFittedError(RuntimeError):
    """``encode`` or ``save`` was called before ``fit``."""


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make a hasher available by ``name`` to :func:`make_hasher` and the CLI."""

    def deco(cls):
        cls.method = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available_methods() -> list[str]:
    return sorted(_REGISTRY)


def make_hasher(name: str, **params) -> "Hasher":
    """Instantiate a registered hasher, e.g. ``make_hasher("itq", n_bits=32, seed=0)``."""
    key = name.strip().lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown hashing method {name!r}; available: {', '.join(available_methods())}")
    return _REGISTRY[key](**params)


def load_hasher(path) -> "Hasher":
    """Load any saved hasher; the method is read from the saved files."""
    path = Path(path)
    meta = _read_meta(path)
    return make_hasher(meta["method"], **meta["params"])._restore(path, meta)


def _read_meta(path: Path) -> dict:
    meta_file = path / "hasher.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"no saved hasher in {path} (expected {meta_file}); train one with  jaxhash fit ... --out {path}")
    try:
        meta = json.loads(meta_file.read_text())
        meta["method"], meta["params"]  # noqa: B018 - presence check
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{meta_file} is damaged: re-run  jaxhash fit  to recreate it") from None
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} was saved by a newer jaxhash (format {meta['format_version']}): upgrade jaxhash")
    return meta


class Hasher:
    """Base class: input checks, packing, save/load. Subclasses implement ``_fit`` and ``_project``.

    ``_project(x)`` returns real values ``(n, n_bits)`` whose sign is the code (bit = value > 0).
    """

    method = "base"

    def __init__(self, n_bits: int = 32, seed: int = 0):
        self.n_bits = n_bits
        self.seed = seed

    # -- hyper-parameters -------------------------------------------------------------------
    def get_params(self) -> dict:
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- input checks -----------------------------------------------------------------------
    def _check_x(self, x, fitting: bool) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"{self.method}: expected features as a 2-D (n, dim) array, got shape {x.shape}; flatten images with x.reshape(len(x), -1)")
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_):
            raise TypeError(f"{self.method}: features must be numeric, got dtype {x.dtype}")
        x = x.astype(np.float32)
        if not np.all(np.isfinite(x)):
            bad = int((~np.isfinite(x)).any(axis=1).sum())
            raise ValueError(f"{self.method}: {bad} rows contain NaN or infinite values; drop or impute them first")
        if fitting:
            if isinstance(self.n_bits, bool) or int(self.n_bits) != self.n_bits or self.n_bits <= 0:
                raise ValueError(f"n_bits must be a positive integer, got {self.n_bits!r}")
            if x.shape[0] < 2:
                raise ValueError(f"{self.method}: need at least 2 training rows, got {x.shape[0]}")
        elif not self.is_fitted:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(x) first")
        elif x.shape[1] != self.n_features_in_:
            raise ValueError(f"{self.method}: fitted on {self.n_features_in_} features but got {x.shape[1]}")
        return x

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "n_features_in_")

    # -- protocol ---------------------------------------------------------------------------
    def fit(self, x, y=None) -> "Hasher":
        """Learn the hash functions from ``(n, dim)`` features (``y`` is ignored by unsupervised methods)."""
        x = self._check_x(x, fitting=True)
        self.n_features_in_ = x.shape[1]
        self._fit(x, None if y is None else np.asarray(y), np.random.default_rng(self.seed))
        return self

    def project(self, x) -> np.ndarray:
        """Real-valued outputs ``(n, n_bits)`` float32 before binarisation (bit = output > 0)."""
        x = self._check_x(x, fitting=False)
        return np.asarray(self._project(x), np.float32)

    def encode(self, x, batch_size: int = 65536) -> np.ndarray:
        """Packed codes ``(n, ceil(n_bits / 32))`` uint32 of ``(n, dim)`` features."""
        x = self._check_x(x, fitting=False)
        parts = [np.asarray(pack_bits(np.asarray(self._project(x[i : i + batch_size])) > 0)) for i in range(0, x.shape[0], batch_size)]
        if not parts:
            return np.zeros((0, -(-self.n_bits // 32)), np.uint32)
        return np.concatenate(parts)

    def _fit(self, x: np.ndarray, y, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def _project(self, x: np.ndarray):
        raise NotImplementedError

    # -- persistence ------------------------------------------------------------------------
    def _learned(self) -> dict:
        return {k: v for k, v in vars(self).items() if k.endswith("_") and not k.startswith("_")}

    def save(self, path) -> Path:
        """Save to folder ``path`` (created or replaced as a whole; a crash leaves the old one)."""
        if not self.is_fitted:
            raise NotFittedError("fit the hasher before saving it")
        path = Path(path)
        learned = self._learned()
        arrays = {k: np.asarray(v) for k, v in learned.items() if isinstance(v, np.ndarray)}
        scalars = {k: v for k, v in learned.items() if k not in arrays}
        meta = {"format_version": FORMAT_VERSION, "method": self.method, "params": self.get_params(), "learned": scalars}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            np.savez(tmp / "arrays.npz", **arrays)
            (tmp / "hasher.json").write_text(json.dumps(meta, indent=2, default=_jsonable))
            old = None
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                path.rename(old)
            tmp.rename(path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path) -> "Hasher":
        path = Path(path)
        meta = _read_meta(path)
        if meta["method"] != cls.method and cls is not Hasher:
            raise ValueError(f"{path} holds a {meta['method']!r} hasher, not {cls.method!r}: use jaxhash.load_hasher")
        return load_hasher(path)

    def _restore(self, path: Path, meta: dict) -> "Hasher":
        try:
            with np.load(path / "arrays.npz") as arrays:
                for k in arrays.files:
                    setattr(self, k, arrays[k])
        except (OSError, ValueError) as err:
            raise ValueError(f"{path / 'arrays.npz'} is damaged ({err}): re-run  jaxhash fit") from None
        for k, v in meta.get("learned", {}).items():
            setattr(self, k, tuple(v) if isinstance(v, list) else v)
        return self


def _jsonable(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot save {type(value).__name__} in hasher.json")
