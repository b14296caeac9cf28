"""Argument validation shared by every module: one place, one wording, errors that say the fix.

NumPy only (no JAX), so that any layer can validate before it touches a device. Each ``check_*``
returns the cleaned value (a Python ``int``, a C-contiguous array) or raises ``ValueError`` /
``TypeError`` naming the argument, what was given and what to do.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = [
    "WORD_BITS",
    "MAX_BITS",
    "n_words_for",
    "check_positive_int",
    "check_n_bits",
    "check_k",
    "check_radius",
    "check_codes",
    "check_same_width",
    "check_ids",
    "check_features",
    "check_labels",
]

WORD_BITS = 32
# The widest code jaxhash handles: search keys stay exact (see jaxhash.search) up to here.
MAX_BITS = 1 << 19
# Features beyond this magnitude overflow float32 once squared (distances, covariances).
MAX_FEATURE = 1e18


def _as_int(value, name: str) -> int:
    """``value`` as an exact Python int; refuses bools, None, NaN, inf and non-integral numbers."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, numbers.Integral):
        return int(value)
    if not math.isfinite(value) or int(value) != value:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def check_positive_int(value, name: str) -> int:
    """A positive integer (``1, 2, ...``), as ``int``."""
    out = _as_int(value, name)
    if out <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return out


def check_n_bits(n_bits) -> int:
    """A code length in bits: a positive integer up to :data:`MAX_BITS`."""
    out = check_positive_int(n_bits, "n_bits")
    if out > MAX_BITS:
        raise ValueError(f"n_bits must be at most {MAX_BITS} (64 KiB per code), got {n_bits!r}")
    return out


def n_words_for(n_bits: int) -> int:
    """Number of uint32 words that hold ``n_bits`` bits."""
    return math.ceil(check_n_bits(n_bits) / WORD_BITS)


def check_k(k, name: str = "k") -> int:
    """A number of neighbours (a positive integer)."""
    return check_positive_int(k, name)


def check_radius(radius, n_bits: int | None = None) -> int:
    """A Hamming radius: an integer in ``[0, n_bits]`` (no upper bound when ``n_bits`` is None)."""
    out = _as_int(radius, "radius")
    if out < 0 or (n_bits is not None and out > n_bits):
        upper = "" if n_bits is None else f", at most n_bits={n_bits}"
        raise ValueError(f"radius must be a non-negative integer{upper}, got {radius!r}")
    return out


def check_codes(codes, n_bits: int | None = None, name: str = "codes") -> np.ndarray:
    """Validate packed codes and return them as a C-contiguous ``(n, n_words)`` uint32 NumPy array.

    Raises a ``ValueError``/``TypeError`` that names the problem and the fix when the array is not
    2-D, not uint32, has the wrong number of words for ``n_bits``, or has bits set beyond ``n_bits``.
    """
    arr = np.asarray(codes)
    if arr.ndim == 1 and n_bits is not None and arr.shape[0] == n_words_for(n_bits):
        raise ValueError(f"{name} has shape {arr.shape}: pass a 2-D (n, n_words) array, e.g. {name}[None, :]")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, n_words) array of packed codes, got shape {arr.shape}")
    if arr.dtype != np.uint32:
        raise TypeError(f"{name} must be packed uint32 codes, got dtype {arr.dtype}{_codes_hint(arr)}")
    if n_bits is not None:
        n_words = n_words_for(n_bits)
        if arr.shape[1] != n_words:
            raise ValueError(
                f"{name} have {arr.shape[1]} word{'s' if arr.shape[1] != 1 else ''} ({arr.shape[1] * WORD_BITS} bits max) "
                f"but {n_bits}-bit codes need {n_words} word{'s' if n_words != 1 else ''}: codes from a hasher with another "
                "code length cannot be mixed"
            )
        spare = n_words * WORD_BITS - n_bits
        if spare and arr.shape[0] and np.any(arr[:, -1] >> np.uint32(WORD_BITS - spare)):
            raise ValueError(f"{name} have bits set beyond n_bits={n_bits}: they were packed for a longer code")
    return np.ascontiguousarray(arr)


def _codes_hint(arr: np.ndarray) -> str:
    """How codes of another dtype become packed words: unpacked bits, or bytes such as FAISS's binary codes."""
    if arr.dtype == np.bool_ or (arr.dtype == np.uint8 and arr.size and arr.max() <= 1):
        return " (these look like unpacked bits: call jaxhash.pack_bits first)"
    if arr.dtype == np.uint8 and arr.ndim == 2 and arr.shape[1] % 4 == 0:
        return (" (bytes, like FAISS's binary codes: np.ascontiguousarray(codes).view('<u4') reads them as words, the "
                "same bits)")
    return ""


def check_ids(ids, name: str = "ids") -> np.ndarray:
    """Index ids as a 1-D int64 array; refuses non-integral, non-finite or non-numeric values."""
    arr = np.asarray(ids)
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating) or arr.size == 0):
        raise TypeError(f"{name} must be integers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating):
        bad = arr[~np.isfinite(arr) | (arr != np.round(arr)) | (np.abs(arr) >= 2.0**63)] if arr.size else arr
        if bad.size:
            raise ValueError(f"{name} must be 64-bit integers, got {bad.ravel()[:3].tolist()}")
    if arr.dtype == np.uint64 and arr.size and arr.max() >= 2**63:
        raise ValueError(f"{name} must be 64-bit signed integers, got {arr.max()}")
    return arr.astype(np.int64).ravel()


def check_same_width(query_words: int, database_words: int) -> None:
    """Query and database codes must have the same number of words (come from the same code length)."""
    if query_words != database_words:
        raise ValueError(
            f"query codes have {query_words} words but the database has {database_words}: "
            "queries and database must come from hashers with the same code length"
        )


def check_features(x, name: str = "features") -> np.ndarray:
    """Real-valued ``(n, dim)`` features as float32, finite."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, dim) array, got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_):
        raise TypeError(f"{name} must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise ValueError(f"{name}: {bad} rows contain NaN or infinite values; drop or impute them first")
    largest = float(np.abs(x).max()) if x.size else 0.0
    if largest > MAX_FEATURE:
        raise ValueError(f"{name} reach {largest:.3g}: their squares overflow float32 arithmetic; standardise them "
                         "first, e.g. (x - x.mean(0)) / x.std()")
    return x


def check_labels(labels, n: int, name: str) -> np.ndarray:
    """``(n,)`` class ids or ``(n, n_classes)`` multi-hot labels (any comparable values; no NaN, which equals nothing)."""
    labels = np.asarray(labels)
    if labels.ndim not in (1, 2) or labels.shape[0] != n:
        raise ValueError(f"{name} must be (n,) class ids or (n, n_classes) multi-hot with n={n}, got shape {labels.shape}")
    if labels.dtype.kind in "fc" and not np.all(np.isfinite(labels)):
        raise ValueError(f"{name} hold {int(np.sum(~np.isfinite(labels)))} NaN or infinite values: a NaN label matches no "
                         "other, so those items would count as irrelevant to every query; drop them or give them a class")
    return labels


def npz_damage(err: BaseException) -> str:
    """What went wrong reading a ``.npz`` file, for a message: NumPy's own refusal of pickled data advises
    loading it unsafely, which jaxhash never does."""
    if "pickle" in str(err):
        return "it is not a NumPy archive of plain arrays"
    return f"{type(err).__name__}: {err}"
