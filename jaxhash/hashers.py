"""The protocol every hashing method follows, its save/load, and the registry of methods.

A hasher follows scikit-learn's conventions: ``__init__`` only stores hyper-parameters (plain
keyword arguments, including ``n_bits`` and ``seed``), ``fit(x, y=None)`` learns attributes whose
names end in ``_`` and returns ``self``, and ``encode(x)`` returns ``(n, ceil(n_bits/32))`` uint32
packed codes. ``save(dir)`` / ``load(dir)`` keep the hyper-parameters as JSON and the learned
arrays as ``.npz``. A new method is one class plus one :func:`register` line (and, for a method
that ships with jaxhash, one line in ``_BUILTIN`` so that it is imported only when asked for).

What a hasher consumes is declared by its class attribute ``consumes``:

* ``"pixels"``: real-valued vectors ``(n, dim)``. Given ``(n, H, W, C)`` uint8 images, ``fit``
  flattens them to pixels in [0, 1] and records ``input_shape_ = (H, W, C)``; ``encode`` then
  takes images of any size and channel count and brings them to that shape first. Fitted on
  feature vectors instead, the hasher encodes feature vectors only (``input_shape_`` is None).
* ``"images"``: ``(n, H, W, C)`` uint8 images at ``input_shape_`` (neural image models).
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from .atomic import current_version, save_versioned
from .checks import check_features, check_n_bits, check_positive_int, n_words_for, npz_damage
from .images import as_image_batch, common_shape, conform_images, conversion_note, to_features

__all__ = ["Hasher", "register", "make_hasher", "load_hasher", "hasher_class", "available_methods", "NotFittedError"]

FORMAT_VERSION = 1
CONSUMES = ("pixels", "images")
_REGISTRY: dict[str, type["Hasher"]] = {}
# Methods that ship with jaxhash, imported on first use so that the command line and a
# pixel-hasher search never load Flax or Optax.
_BUILTIN = {
    "lsh": "jaxhash.baselines",
    "pcah": "jaxhash.baselines",
    "itq": "jaxhash.baselines",
    "sh": "jaxhash.baselines",
    "sph": "jaxhash.baselines",
    "kmh": "jaxhash.baselines",
    "dbn-ae": "jaxhash.semantic",
    "cnn-hash": "jaxhash.supervised",
    "cnn-hash-frozen": "jaxhash.supervised",
    "cnn-softmax": "jaxhash.supervised",
    "vae": "jaxhash.vae",
    "sparse-ae": "jaxhash.vae",
    "ae": "jaxhash.vae",
    "ae-umap": "jaxhash.vae",
    "patches": "jaxhash.patches",
}


class NotFittedError(RuntimeError):
    """``encode`` or ``save`` was called before ``fit``."""


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make a hasher available by ``name`` to :func:`make_hasher` and the CLI."""

    def deco(cls):
        if cls.consumes not in CONSUMES:
            raise ValueError(f"{cls.__name__}.consumes must be one of {CONSUMES}, got {cls.consumes!r}")
        cls.method = name
        _REGISTRY[name] = cls
        return cls

    return deco


def available_methods() -> list[str]:
    """Names of every registered or built-in method (imports nothing)."""
    return sorted(set(_REGISTRY) | set(_BUILTIN))


def hasher_class(name: str) -> type["Hasher"]:
    """The class registered as ``name``, importing its module on first use."""
    key = str(name).strip().lower()
    if key not in _REGISTRY and key in _BUILTIN:
        importlib.import_module(_BUILTIN[key])
    if key not in _REGISTRY:
        raise ValueError(f"unknown hashing method {name!r}; available: {', '.join(available_methods())}")
    return _REGISTRY[key]


def make_hasher(name: str, **params) -> "Hasher":
    """Instantiate a registered hasher, e.g. ``make_hasher("itq", n_bits=32, seed=0)``."""
    return hasher_class(name)(**params)


def load_hasher(path) -> "Hasher":
    """Load any saved hasher; the method is read from the saved files.

    A save publishes a new version while readers may be loading the previous one; if the version
    a reader was pointed to is removed meanwhile, the reader follows the pointer again.
    """
    path = Path(path)
    if path.is_file():
        raise ValueError(f"{path} is a file, not a saved hasher: pass the folder written by  jaxhash fit ... --out FOLDER")
    for _ in range(20):
        version = _current_version(path)
        files = path if version is None else version
        try:
            meta = _read_meta(files, path)
            cls = hasher_class(meta["method"])
            _check_saved_params(cls, meta["params"], path)
            return cls(**meta["params"])._restore(files, meta)
        except FileNotFoundError:
            if version is None or _current_version(path) == version:
                raise  # really missing, not replaced by a concurrent save
    raise RuntimeError(f"{path} changed 20 times while it was being read: retry when saving has stopped")


def _check_saved_params(cls, params: dict, path: Path) -> None:
    """Refuse saved settings this version's ``cls`` does not take (a model saved by a newer jaxhash)."""
    accepted = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        return
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"{path} holds a {cls.method!r} model with settings this jaxhash does not know "
                         f"({', '.join(unknown)}): it was saved by a newer jaxhash; upgrade jaxhash "
                         "(pip install -U jaxhash) or train the model again with this one")


def _current_version(path: Path):
    try:
        return current_version(path)
    except ValueError as err:
        raise ValueError(f"{err}: save the model again (jaxhash fit ... --out {path})") from None


def _read_meta(files: Path, path: Path) -> dict:
    """The hasher.json of a saved model's ``files`` folder (``path``: the model folder, for messages)."""
    meta_file = files / "hasher.json"
    try:
        text = meta_file.read_text()
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(f"no saved hasher in {path} (expected {meta_file}); train one with  jaxhash fit ... --out {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read {meta_file} ({err})") from None
    try:
        meta = json.loads(text)
        meta["method"], meta["params"]  # noqa: B018 - presence check
        if not isinstance(meta["params"], dict):
            raise TypeError
    except (ValueError, KeyError, TypeError, RecursionError):
        raise ValueError(f"{meta_file} is damaged: re-run  jaxhash fit  to recreate it") from None
    if not isinstance(meta.get("format_version", 0), int) or meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} was saved by a newer jaxhash (format {meta.get('format_version')}): upgrade jaxhash")
    return meta


class Hasher:
    """Base class: input checks, batching, packing, save/load. Subclasses implement ``_fit`` and ``_project``.

    ``_fit(x, y, rng)`` gets ``(n, dim)`` float32 features (``consumes = "pixels"``) or
    ``(n, H, W, C)`` uint8 images (``consumes = "images"``). ``_project(x)`` gets a batch of the
    same kind and returns real values ``(b, n_bits)`` whose sign is the code (bit = value > 0).
    """

    method = "base"
    consumes = "pixels"
    input_shape_: tuple[int, int, int] | None = None  # hashers saved before it was recorded

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

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "n_features_in_")

    # -- input ------------------------------------------------------------------------------
    def _fit_input(self, x):
        """Validate training input; returns ``(what _fit consumes, input shape or None)``."""
        images = as_image_batch(x)
        if images is not None:
            if len(images) < 2:
                raise ValueError(f"{self.method}: need at least 2 training images, got {len(images)}")
            shape = self._fit_shape(images)  # notes channel conversions
            counts: dict = {}
            images = conform_images(images, shape, counts)  # to the majority's channels; an image model's own size
            note = conversion_note(dict(counts, converted=0), shape)
            if note:
                warnings.warn(note, stacklevel=3)
            return (images if self.consumes == "images" else to_features(images)), shape
        if self.consumes == "images":
            raise ValueError(f"{self.method} learns from images: pass (n, H, W, C) uint8 images, got an array of shape {np.shape(x)}")
        x = check_features(x)
        if len(x) < 2:
            raise ValueError(f"{self.method}: need at least 2 training rows, got {len(x)}")
        return x, None

    def _fit_shape(self, images) -> tuple[int, int, int]:
        """The input shape a model fitted on ``images`` keeps. Pixel hashers keep the images' own
        size and the majority's channel count; an image model overrides this with its input size."""
        return common_shape(images, f"{self.method}: the training images")

    def input_size(self) -> tuple[int, int] | None:
        """The ``(H, W)`` images are resized to before fitting, for methods with an input size of
        their own (neural image hashers); None when the images' own size is kept."""
        return None

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(x) first")

    def _batches(self, x, batch_size: int):
        """Yield what ``_project`` consumes, ``batch_size`` rows at a time (images converted per batch,
        with one note at the end if any had another size or channel count)."""
        self._check_fitted()
        images = as_image_batch(x, self.input_shape_)
        if images is not None:
            x = images
            if self.input_shape_ is None:
                raise ValueError(f"this {self.method} hasher was fitted on feature vectors, not images, so it cannot encode "
                                 "images: fit it on (n, H, W, C) uint8 images (e.g. split.db_x) to use it on pictures")
            counts: dict = {}
            for start in range(0, len(x), batch_size):
                batch = conform_images(x[start : start + batch_size], self.input_shape_, counts)
                yield batch if self.consumes == "images" else to_features(batch)
            note = conversion_note(counts, self.input_shape_)
            kind = (bool(counts.get("converted")), bool(counts.get("resized")))
            noted = self.__dict__.setdefault("_noted_conversions", set())
            if note and kind not in noted:  # said once per model: encoding in many calls repeats no note
                noted.add(kind)
                warnings.warn(note, stacklevel=3)
            return
        if self.consumes == "images":
            raise ValueError(f"{self.method} encodes images: pass (n, H, W, C) uint8 images, got an array of shape {np.shape(x)}")
        x = check_features(x)
        if x.shape[1] != self.n_features_in_:
            hint = f" (images of shape {self.input_shape_} flatten to {self.n_features_in_})" if self.input_shape_ else ""
            raise ValueError(f"{self.method}: fitted on {self.n_features_in_} features but got {x.shape[1]}{hint}")
        for start in range(0, x.shape[0], batch_size):
            yield x[start : start + batch_size]

    # -- protocol ---------------------------------------------------------------------------
    def fit(self, x, y=None) -> "Hasher":
        """Learn the hash functions.

        Args:
          x: ``(n, H, W, C)`` uint8 images (recorded as ``input_shape_``, so the hasher can later
            encode pictures of any size), or, for pixel hashers, ``(n, dim)`` feature vectors.
          y: ``(n,)`` labels, used by supervised methods and ignored by the others.
        """
        self.n_bits = check_n_bits(self.n_bits)  # 16.0 -> 16: every method sees a Python int
        x, shape = self._fit_input(x)
        for name in ("n_features_in_", "input_shape_"):  # a failed fit leaves an unfitted hasher
            self.__dict__.pop(name, None)
        self._fit(x, None if y is None else np.asarray(y), np.random.default_rng(self.seed))
        self.input_shape_ = shape
        self.n_features_in_ = int(np.prod(x.shape[1:]))
        return self

    def project(self, x, batch_size: int = 4096) -> np.ndarray:
        """Real-valued outputs ``(n, n_bits)`` float32 before binarisation (bit = output > 0)."""
        batch_size = check_positive_int(batch_size, "batch_size")
        parts = [np.asarray(self._project(b), np.float32) for b in self._batches(x, batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, int(self.n_bits)), np.float32)

    def encode(self, x, batch_size: int = 4096, progress: bool = False) -> np.ndarray:
        """Packed codes ``(n, ceil(n_bits / 32))`` uint32, computed ``batch_size`` rows at a time.

        Args:
          x: images -- a ``(n, H, W, C)`` / ``(n, H, W)`` uint8 array or a list of ``(H, W[, C])``
            uint8 arrays of any sizes (converted to ``input_shape_``, with one note) -- or, for a
            hasher fitted on feature vectors, ``(n, dim)`` features.
          progress: show a progress bar (images per second) for long inputs.
        """
        return self.encode_details(x, batch_size, progress)["codes"]

    def encode_details(self, x, batch_size: int = 4096, progress: bool = False) -> dict:
        """``{"codes": packed codes, ...}`` plus whatever else the method computes in the same pass
        (neural image hashers add ``"features"`` and ``"probabilities"``); arguments as :meth:`encode`."""
        batch_size = check_positive_int(batch_size, "batch_size")
        total = len(x)
        bar = None
        if progress and total > batch_size:
            from .progress import progress as progress_bar  # noqa: PLC0415

            bar = progress_bar(total=total, desc=f"encoding ({self.method})", unit=" images", leave=False)
        parts: dict[str, list] = {}
        for batch in self._batches(x, batch_size):
            for name, value in self._encode_batch(batch).items():
                parts.setdefault(name, []).append(value)
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
        if not parts:
            return {"codes": np.zeros((0, n_words_for(self.n_bits)), np.uint32)}
        return {name: np.concatenate(values) for name, values in parts.items()}

    def _encode_batch(self, batch) -> dict:
        from .codes import pack_bits_host  # noqa: PLC0415

        return {"codes": pack_bits_host(np.asarray(self._project(batch)) > 0)}

    def fingerprint(self) -> str:
        """SHA-256 (hex) of the method and everything learned: equal fingerprints give equal codes.

        An index records the fingerprint of the model that built it, so that searching it with
        codes of another model (even one of the same code length) is refused.
        """
        self._check_fitted()
        digest = hashlib.sha256(f"{self.method}|{int(self.n_bits)}".encode())
        learned = self._learned()
        for name in sorted(learned):
            value = learned[name]
            if isinstance(value, np.ndarray):
                digest.update(f"|{name}:{value.dtype.str}:{value.shape}|".encode())
                digest.update(np.ascontiguousarray(value).tobytes())
            else:
                digest.update(f"|{name}={json.dumps(value, default=_jsonable, sort_keys=True)}".encode())
        return digest.hexdigest()

    def _fit(self, x, y, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def _loaded(self) -> None:
        """Called by a load once the saved attributes are set: rebuild what derives from them."""

    def _project(self, x):
        raise NotImplementedError

    # -- persistence ------------------------------------------------------------------------
    def _learned(self) -> dict:
        return {k: v for k, v in vars(self).items() if k.endswith("_") and not k.startswith("_")}

    def save(self, path) -> Path:
        """Save to folder ``path`` as a new version, published in one atomic step.

        A reader always loads a whole model (the previous one until the new one is complete), a
        failed or killed save leaves the previous model, and concurrent saves do not collide.
        """
        if not self.is_fitted:
            raise NotFittedError("fit the hasher before saving it")
        path = Path(path)
        learned = self._learned()
        arrays = {k: np.asarray(v) for k, v in learned.items() if isinstance(v, np.ndarray)}
        scalars = {k: v for k, v in learned.items() if k not in arrays}
        meta = {"format_version": FORMAT_VERSION, "method": self.method, "params": self.get_params(), "learned": scalars,
                "fingerprint": self.fingerprint()}
        text = json.dumps(meta, indent=2, default=_jsonable)

        def write_files(folder: Path) -> None:
            with open(folder / "arrays.npz", "wb") as f:
                np.savez(f, **arrays)
            (folder / "hasher.json").write_text(text)

        save_versioned(path, write_files)
        for name in ("hasher.json", "arrays.npz"):  # a model saved by jaxhash 0.1 at the same path
            (path / name).unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path) -> "Hasher":
        hasher = load_hasher(path)
        if cls is not Hasher and hasher.method != cls.method:
            raise ValueError(f"{path} holds a {hasher.method!r} hasher, not {cls.method!r}: use jaxhash.load_hasher")
        return hasher

    def _restore(self, files: Path, meta: dict) -> "Hasher":
        arrays_file = files / "arrays.npz"
        try:
            with np.load(arrays_file, allow_pickle=False) as arrays:
                for k in arrays.files:
                    setattr(self, k, arrays[k])
        except FileNotFoundError:
            raise FileNotFoundError(f"{arrays_file} is missing: re-run  jaxhash fit") from None
        except Exception as err:  # noqa: BLE001 - a damaged zip raises almost anything (NotImplementedError,
            # RuntimeError "encrypted", BadZipFile, zlib.error, ...): whatever it is, the file is damaged
            raise ValueError(f"{arrays_file} is damaged ({npz_damage(err)}): re-run  jaxhash fit") from None
        learned = meta.get("learned", {})
        if not isinstance(learned, dict):
            raise ValueError(f"{files / 'hasher.json'} is damaged (bad 'learned' record): re-run  jaxhash fit")
        for k, v in learned.items():
            setattr(self, k, tuple(v) if isinstance(v, list) else v)
        try:
            self._loaded()
            intact = self.is_fitted and ("fingerprint" not in meta or self.fingerprint() == meta["fingerprint"])
        except (TypeError, ValueError, AttributeError, KeyError):
            intact = False
        if not intact:  # what was read is not what was saved (models of jaxhash 0.1 have no fingerprint)
            raise ValueError(f"{files} is damaged (its content does not match its fingerprint): re-run  jaxhash fit")
        return self


def _jsonable(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot save {type(value).__name__} in hasher.json")
