"""Binary codes: binarize, pack, unpack, Hamming distance.

Every hasher in jaxhash ends in the same format: a ``(n, n_words)`` ``uint32`` array of packed
bits, ``n_words = ceil(n_bits / 32)``.

Bit order (little-endian throughout): bit ``j`` of a code is stored in word ``j // 32`` at bit
position ``j % 32`` (value ``1 << (j % 32)``). Unused high bits of the last word are zero. Viewed
as bytes on a little-endian machine (``codes.view(np.uint8)``), this is exactly FAISS's binary
layout: bit ``j`` in byte ``j // 8`` at position ``j % 8``.

Everything here is pure and jit-able. :func:`check_codes` and :func:`n_words_for` live in
:mod:`jaxhash.checks` (validation in one place) and are re-exported here.
"""
from __future__ import annotations

import numpy as np

from ._deferred import deferred_jit, jax, jnp
from .checks import WORD_BITS, check_codes, n_words_for

__all__ = [
    "WORD_BITS",
    "n_words_for",
    "pack_bits_host",
    "hamming_rows_host",
    "popcount_host",
    "binarize",
    "pack_bits",
    "unpack_bits",
    "hamming_distance",
    "pairwise_hamming",
    "check_codes",
]


def binarize(values, method: str = "sign", threshold: float = 0.0):
    """Turn real-valued outputs into bits.

    Args:
      values: ``(..., n_bits)`` float array (e.g. projections, sigmoid activations).
      method: ``"sign"`` gives 1 where ``values > 0`` (ties at exactly 0 give 0);
        ``"threshold"`` gives 1 where ``values > threshold`` (use 0.5 for sigmoid outputs).
      threshold: used by ``method="threshold"``.
    Returns:
      ``(..., n_bits)`` bool array.
    """
    values = jnp.asarray(values)
    if method == "sign":
        return values > jnp.zeros((), values.dtype)
    if method == "threshold":
        return values > jnp.asarray(threshold, values.dtype)
    raise ValueError(f"unknown binarize method {method!r}; use 'sign' or 'threshold'")


def pack_bits(bits):
    """Pack ``(n, n_bits)`` bits into ``(n, ceil(n_bits / 32))`` uint32 words.

    Args:
      bits: ``(n, n_bits)`` array of bool or integers in {0, 1} (any ``n_bits`` >= 1).
    Returns:
      ``(n, n_words)`` uint32 array; bit ``j`` goes to word ``j // 32``, position ``j % 32``.
    """
    bits = jnp.asarray(bits)
    if bits.ndim != 2:
        raise ValueError(f"pack_bits expects a (n, n_bits) array, got shape {bits.shape}")
    n, n_bits = bits.shape
    n_words = n_words_for(n_bits)
    padded = jnp.zeros((n, n_words * WORD_BITS), jnp.uint32)
    nonzero = bits if bits.dtype == jnp.bool_ else bits != jnp.zeros((), bits.dtype)
    padded = padded.at[:, :n_bits].set(nonzero.astype(jnp.uint32))
    weights = jnp.left_shift(jnp.uint32(1), jnp.arange(WORD_BITS, dtype=jnp.uint32))
    return jnp.sum(padded.reshape(n, n_words, WORD_BITS) * weights, axis=-1, dtype=jnp.uint32)


_BYTE_POPCOUNT = np.array([bin(b).count("1") for b in range(256)], np.uint8)


def popcount_host(words: np.ndarray) -> np.ndarray:
    """Ones in each element of an unsigned integer array (uint8 to uint64), in NumPy: the same shape, uint8."""
    words = np.asarray(words)
    if words.dtype.kind != "u":
        raise TypeError(f"popcount_host counts the bits of unsigned integers, got {words.dtype}")
    if hasattr(np, "bitwise_count"):  # NumPy >= 2.0
        return np.bitwise_count(words)
    size = words.dtype.itemsize
    as_bytes = _BYTE_POPCOUNT[np.ascontiguousarray(words).view(np.uint8)].reshape(*words.shape, size)
    return as_bytes.sum(-1, dtype=np.uint8)


def hamming_rows_host(codes: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Hamming distances ``(n,)`` int64 in NumPy between ``(n, n_words)`` uint32 codes and one
    ``(n_words,)`` query (or ``(n, n_words)`` queries, row by row): for work too small for a device."""
    return popcount_host(np.bitwise_xor(codes, query)).sum(axis=1, dtype=np.int64)


def pack_bits_host(bits) -> np.ndarray:
    """:func:`pack_bits` in NumPy, for bits already on the host (the same words, bit for bit).

    Encoding one query is a handful of tiny arrays, where a device round trip per operation costs
    more than the packing: hashers pack their codes here.
    """
    bits = np.asarray(bits)
    if bits.ndim != 2:
        raise ValueError(f"pack_bits_host expects a (n, n_bits) array, got shape {bits.shape}")
    n, n_bits = bits.shape
    n_words = n_words_for(n_bits)
    padded = np.zeros((n, n_words * WORD_BITS), np.bool_)
    padded[:, :n_bits] = bits != 0
    packed = np.packbits(padded, axis=1, bitorder="little")  # byte b holds bits 8b .. 8b+7, lowest first
    return np.ascontiguousarray(packed).view("<u4").astype(np.uint32, copy=False).reshape(n, n_words)


def unpack_bits(codes, n_bits: int):
    """Inverse of :func:`pack_bits`: ``(n, n_words)`` uint32 -> ``(n, n_bits)`` uint8 in {0, 1}."""
    codes = jnp.asarray(codes)
    n_words = n_words_for(n_bits)
    if codes.ndim != 2 or codes.shape[1] != n_words:
        raise ValueError(
            f"unpack_bits expects ({'n'}, {n_words}) uint32 codes for n_bits={n_bits}, got shape {codes.shape}"
        )
    shifts = jnp.arange(WORD_BITS, dtype=jnp.uint32)
    bits = jnp.bitwise_and(jnp.right_shift(codes[:, :, None], shifts), jnp.uint32(1))
    return bits.reshape(codes.shape[0], n_words * WORD_BITS)[:, :n_bits].astype(jnp.uint8)


def _check_code_pair(a, b, ndim: int) -> None:
    """Refuse, while tracing, codes that are not packed uint32 words of ``ndim`` dimensions and of one width:
    XOR would broadcast them into wrong distances instead of failing."""
    for codes, which in ((a, "first"), (b, "second")):
        if jnp.ndim(codes) != ndim:
            raise ValueError(f"the {which} codes must be {'(n_words,)' if ndim == 1 else '(n, n_words)'} packed words, "
                             f"got shape {jnp.shape(codes)}")
        dtype = getattr(codes, "dtype", None) or np.asarray(codes).dtype
        if dtype != np.uint32:
            raise TypeError(f"the {which} codes must be packed uint32 words, got dtype {dtype}: "
                            "pack bits with jaxhash.pack_bits, or take codes from a hasher's encode")
    if jnp.shape(a)[-1] != jnp.shape(b)[-1]:
        raise ValueError(f"codes of {jnp.shape(a)[-1]} and {jnp.shape(b)[-1]} words cannot be compared: they come from "
                         "hashers with different code lengths")


def hamming_distance(a, b):
    """Hamming distance between two packed codes ``(n_words,)`` uint32 -> int32 scalar."""
    _check_code_pair(a, b, 1)
    return jnp.sum(jnp.bitwise_count(jnp.bitwise_xor(a, b)), dtype=jnp.int32)


def pairwise_hamming(query_codes, database_codes):
    """All distances between ``(q, n_words)`` and ``(m, n_words)`` uint32 packed codes -> ``(q, m)`` int32."""
    _check_code_pair(query_codes, database_codes, 2)  # before jit turns int64 into int32
    return _pairwise_hamming(query_codes, database_codes)


@deferred_jit
def _pairwise_hamming(query_codes, database_codes):
    one_to_all = jax.vmap(hamming_distance, in_axes=(None, 0))
    return jax.vmap(one_to_all, in_axes=(0, None))(query_codes, database_codes)
