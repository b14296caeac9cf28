"""Exact Hamming search over packed uint32 codes: k-nearest neighbours, radius search, re-ranking.

Results are exact and deterministic: neighbours are ordered by (distance, database position), so
among equal distances the smaller position comes first -- the same order as a stable NumPy sort.

k-nearest search is a two-pass scheme that never sorts the whole database:

1. The database of ``n`` codes is cut into groups of ``group_size`` consecutive codes, laid out as
   ``(n_words, group_size, n_groups)`` "planes". For a block of queries one fused pass computes
   every distance and keeps the minimum per group. Since groups hold consecutive positions,
   ordering groups by (minimum, group) is ordering their best members by (distance, position).
2. The ``k`` best groups are picked (``lax.top_k`` on accelerators, NumPy's partition of keys that
   carry their group on the CPU; both put the lower group first among equal minima); every true
   top-k neighbour lies in them, because each unselected code is beaten by the best member of each
   of the ``k`` selected groups. Only those ``k * group_size`` codes are rescanned. The same
   argument, one level up, first picks ``k`` strided "super-groups" of groups, so that a selection
   never runs over more than a few thousand keys per query.

Memory stays bounded by processing queries in blocks: a block holds ``block * n_groups`` keys.
Two blocks are in flight at once (``JAXHASH_SEARCH_THREADS`` changes that). On a CPU without a
vector popcount of 32-bit lanes the planes hold bytes instead of words (:func:`default_layout`);
for codes of 8 words the group minima then saturate at 255, and a query that this leaves unsure
is scanned exactly (:func:`_saturates`).
A few queries in a process that has not loaded JAX are scanned with NumPy (:func:`knn_search_host`).
"""
from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from ._deferred import deferred_jit, jax, jnp
from .checks import WORD_BITS, check_codes, check_features, check_k, check_radius, check_same_width
from .codes import hamming_rows_host, pairwise_hamming

__all__ = [
    "MISSING_DISTANCE",
    "PackedDatabase",
    "prepare_database",
    "knn_search",
    "knn_search_host",
    "default_layout",
    "HOST_SEARCH_MAX_QUERIES",
    "euclidean_knn",
    "squared_distances",
    "ShardedDatabase",
    "shard_database",
    "sharded_knn_search",
    "radius_search",
    "rerank_euclidean",
    "search_and_rerank",
]

# Distance reported where fewer than k neighbours exist (FAISS reports the same), with id -1.
MISSING_DISTANCE = np.iinfo(np.int32).max
# Float32 holds every key exactly while it stays below 2**24.
_MAX_EXACT_KEY = 2**24
_SEARCH_THREADS = int(os.environ.get("JAXHASH_SEARCH_THREADS", "2"))


class PackedDatabase(NamedTuple):
    """Database codes laid out for :func:`knn_search` (see the module docstring).

    planes: ``(n_units, group_size, n_groups)``: uint32 words (``n_units = n_words``), or uint8 bytes
      (``n_units = 4 * n_words``, byte ``j`` of word ``w`` in unit ``4 w + j``; see :func:`default_layout`).
      The code at position ``p`` is ``planes[:, p % group_size, p // group_size]``. Padding beyond
      ``n_valid`` repeats the last code, so a partly filled group keeps the true minimum of its real codes.
    n_valid: number of real codes (python int).
    rows: the same padded codes as ``(n_groups * group_size, n_words)`` uint32 rows (on a CPU, or with
      bytes planes), for the second pass: gathering a candidate from one row is cheaper than from
      ``n_units`` planes (2-core EPYC, 1,000 queries, k = 100, 1M codes: 12 -> 6.5 ms at 128 bits,
      44 -> 9.4 ms at 256), and counting words is cheaper than counting bytes. It doubles the memory of
      the codes; accelerators go without.
    """

    planes: jax.Array
    n_valid: int
    rows: jax.Array | None = None

    @property
    def group_size(self) -> int:
        return self.planes.shape[1]

    @property
    def n_groups(self) -> int:
        return self.planes.shape[2]


# Groups are themselves gathered in SUPER_GROUP_SIZE strided super-groups (group g belongs to
# super-group g % n_super) so that the first selection sees only n / (group_size * 16) keys per query.
SUPER_GROUP_SIZE = 16


# Above this many unrolled (slot, word) steps the distance kernels loop instead of unrolling,
# which keeps compile times short for wide codes and large groups (bytes count a quarter step each).
_UNROLL_LIMIT = 256
LAYOUTS = ("words", "bytes")
_MAX_BYTE_COUNT_BITS = 254  # distances (and the 255 of "farther than any code") fit in a byte
# Codes of 8 words (225..256 bits) in bytes still sum in bytes, saturating at 255 (see _saturates).
_MAX_BYTE_LAYOUT_BITS = 256
_SATURATED = 255


def default_layout(n_bits: int | None = None) -> str:
    """How :func:`prepare_database` lays out ``n_bits``-bit codes: ``"bytes"`` on a CPU without a
    vector popcount of 32-bit lanes (no AVX-512 VPOPCNTDQ: AVX2 counts 32 bytes per instruction
    sequence, 8 words) for codes of up to 256 bits, whose distances are then summed in bytes too;
    else ``"words"`` (accelerators, AVX-512 with VPOPCNTDQ, wider codes). On a 2-core AVX2 EPYC,
    bytes searched 1M codes 1.3x faster at 64 and 128 bits; at 256 bits the first pass of 1,000
    queries took 303 ms instead of 419 (an AVX-512 EPYC held to AVX2).
    Processors whose flags cannot be read (ARM, macOS) get bytes too, unmeasured there.
    ``JAXHASH_SEARCH_LAYOUT=words|bytes`` chooses. Results are the same either way.
    """
    chosen = os.environ.get("JAXHASH_SEARCH_LAYOUT", "").strip().lower()
    if chosen:
        if chosen not in LAYOUTS:
            raise ValueError(f"JAXHASH_SEARCH_LAYOUT must be one of {', '.join(LAYOUTS)}, got {chosen!r}")
        return chosen
    if (n_bits is not None and n_bits > _MAX_BYTE_LAYOUT_BITS) or jax.default_backend() != "cpu":
        return "words"
    return "words" if _cpu_popcounts_32_bit_lanes() else "bytes"


def _cpu_popcounts_32_bit_lanes() -> bool:
    """Whether XLA:CPU may use AVX-512 VPOPCNTDQ here (Linux's /proc/cpuinfo, and no lower
    ``--xla_cpu_max_isa`` in XLA_FLAGS)."""
    caps = [f.split("=", 1)[1].strip("'\"").upper() for f in os.environ.get("XLA_FLAGS", "").split()
            if f.startswith("--xla_cpu_max_isa=")]
    if caps and caps[-1] in ("SSE4_2", "AVX", "AVX2"):  # the last one counts, as for any absl flag
        return False
    return "avx512_vpopcntdq" in _cpu_flags()


@functools.cache
def _cpu_flags() -> frozenset:
    """The processor's feature flags from Linux's /proc/cpuinfo (read once: every prepared database asks), or none."""
    try:
        with open("/proc/cpuinfo") as info:
            return frozenset(next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), ()))
    except OSError:
        return frozenset()


def _code_bits(planes) -> int:
    """Bits per code of planes ``(n_units, ...)`` of uint32 words or uint8 bytes."""
    return planes.shape[0] * np.dtype(planes.dtype).itemsize * 8


def _as_units(queries: np.ndarray, dtype) -> np.ndarray:
    """``(q, n_words)`` uint32 codes in the unit of planes of ``dtype`` (uint8: little-endian bytes)."""
    if np.dtype(dtype) == np.uint32:
        return queries
    return np.ascontiguousarray(queries, dtype="<u4").view(np.uint8)


def _max_groups(n_words: int) -> int:
    # Member keys (minimum * n_groups + group) must stay exact in float32; MAX_BITS keeps this >= 16.
    return _MAX_EXACT_KEY // (n_words * WORD_BITS + 2) // SUPER_GROUP_SIZE * SUPER_GROUP_SIZE


def _n_groups(n: int, group_size: int) -> int:
    """Groups of ``group_size`` codes for ``n`` codes, padded to whole super-groups."""
    n_groups = max(1, -(-n // group_size))
    return -(-n_groups // SUPER_GROUP_SIZE) * SUPER_GROUP_SIZE


def _default_group_size(n: int, n_words: int) -> int:
    size = 1 if n <= 8192 else 16  # small databases: one code per group, if the keys allow it
    while _n_groups(n, size) > _max_groups(n_words):
        size *= 2
    return size


def prepare_database(codes, group_size: int | None = None, layout: str | None = None) -> PackedDatabase:
    """Lay out ``(n, n_words)`` uint32 codes for fast k-nearest search (a copy; O(n) time), as
    words or bytes (``layout``, default :func:`default_layout`)."""
    codes = check_codes(codes, name="database codes")
    layout = layout or default_layout(codes.shape[1] * WORD_BITS)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    n, n_words = codes.shape
    if group_size is None:
        group_size = _default_group_size(n, n_words)
    n_groups = _n_groups(n, group_size)
    if n_groups > _max_groups(n_words):
        raise ValueError(f"group_size={group_size} makes {n_groups} groups; use at least {_default_group_size(n, n_words)}")
    padded = np.empty((n_groups * group_size, n_words), np.uint32)
    padded[:n] = codes
    padded[n:] = codes[-1] if n else 0
    units = _as_units(padded, np.uint8 if layout == "bytes" else np.uint32)
    planes = np.ascontiguousarray(units.reshape(n_groups, group_size, units.shape[1]).transpose(2, 1, 0))
    keep_rows = layout == "bytes" or jax.default_backend() == "cpu"
    return PackedDatabase(jnp.asarray(planes), n, jnp.asarray(padded) if keep_rows else None)


def _far(n_bits: int):
    return jnp.int32(n_bits + 1)  # farther than any real code


def _saturates(planes) -> bool:
    """Whether pass 1 counts these planes' distances in bytes that saturate at 255: bytes of codes of 8
    words, 225..256 bits (32 lanes per AVX2 instruction instead of 16). Group minima of 255 then stand for
    255, 256 and padding alike. Where a query's chosen groups include one and its k-th distance is 255 or
    more, a group left out might hold a closer code, so that query is answered by an exact scan
    (:func:`_knn_block_numpy`): results stay exact. Only a query with fewer than k codes closer than 255
    bits (near the complement of most codes) takes that path. Selection runs in NumPy for these planes."""
    return np.dtype(planes.dtype) == np.uint8 and _MAX_BYTE_COUNT_BITS < _code_bits(planes) <= _MAX_BYTE_LAYOUT_BITS


def _count_dtype(planes):
    """What distances are summed in: int32 for words; for bytes the narrowest type that holds any
    distance (uint8 up to 254 bits: 32 lanes per AVX2 instruction), or saturating uint8 (:func:`_saturates`)."""
    if np.dtype(planes.dtype) == np.uint32:
        return jnp.int32
    return jnp.uint8 if _saturates(planes) else _key_dtype(_code_bits(planes))


def _group_far(planes):
    """The group minimum that pass 1 gives groups of padding only: farther than any code, or the saturated 255."""
    return _SATURATED if _saturates(planes) else _code_bits(planes) + 1


def _unrolled_units(planes) -> int:
    return 16 if np.dtype(planes.dtype) == np.uint32 else 64  # beyond: one reduction instead of an unrolled sum


def _slot_distances(slot_codes, queries_t):
    """Distances ``(n_groups, b)`` between one slot's codes ``(n_units, n_groups)`` and ``(n_units, b)``
    queries, in :func:`_count_dtype`."""
    n_units, count = slot_codes.shape[0], _count_dtype(slot_codes)
    if n_units > _unrolled_units(slot_codes):
        return jnp.sum(jnp.bitwise_count(jnp.bitwise_xor(slot_codes[:, :, None], queries_t[:, None, :])).astype(count), axis=0,
                       dtype=count)
    # bytes: sums of up to 31 bytes' counts stay in one byte; only those partial sums are widened (or
    # added with saturation at 255)
    chunk = 31 if np.dtype(slot_codes.dtype) == np.uint8 else n_units
    saturate = _saturates(slot_codes)
    dist = None
    for start in range(0, n_units, chunk):
        part = None
        for w in range(start, min(start + chunk, n_units)):
            x = jnp.bitwise_count(jnp.bitwise_xor(slot_codes[w][:, None], queries_t[w][None, :]))
            x = x if chunk < n_units else x.astype(count)
            part = x if part is None else part + x
        part = part.astype(count)
        if dist is None:
            dist = part
        else:
            dist = dist + (jnp.minimum(part, jnp.uint8(_SATURATED) - dist) if saturate else part)
    return dist


@deferred_jit
def _group_keys(queries_t, planes, n_valid):
    """Pass 1: ``(n_units, b)`` queries -> group minima ``(n_groups, b)`` (uint8 up to 254 bits and for
    saturating bytes (:func:`_saturates`), then uint16, int32 beyond 65,534 bits).

    The query block is the minor axis, so every database word is read once per block and the
    XOR/popcount runs vectorised across queries. The slot minimum is an unrolled chain of
    elementwise steps: XLA fuses it into one loop (a reduce over the slot axis vectorises worse);
    past ``_UNROLL_LIMIT`` steps (wide codes, large groups) it is a loop over slots.
    """
    _, group_size, n_groups = planes.shape
    n_bits = _code_bits(planes)
    if group_size * n_bits <= _UNROLL_LIMIT * WORD_BITS:
        best = None
        for slot in range(group_size):
            dist = _slot_distances(planes[:, slot], queries_t)
            best = dist if best is None else jnp.minimum(best, dist)
    else:
        best = jax.lax.fori_loop(1, group_size, lambda s, b: jnp.minimum(b, _slot_distances(planes[:, s], queries_t)),
                                 _slot_distances(planes[:, 0], queries_t))
    group = jax.lax.broadcasted_iota(jnp.int32, (n_groups, 1), 0)
    best = jnp.where(group * group_size < n_valid, best, jnp.asarray(_group_far(planes), best.dtype))  # padding only
    # Writing the minima is most of this pass's memory traffic: store them as narrow as they fit.
    return best.astype(jnp.uint8 if _saturates(planes) else _key_dtype(n_bits))


def _key_dtype(n_bits: int):
    far = n_bits + 1
    return jnp.uint8 if far <= 255 else jnp.uint16 if far <= 65535 else jnp.int32


def _smallest(keys, k):
    """Indices of the ``k`` smallest keys per row, best first (``lax.top_k``: lower index on ties)."""
    return jax.lax.top_k(-keys.astype(jnp.float32), k)[1]


@deferred_jit(static_argnames=("k",))
def _select_topk(queries, planes, n_valid, group_keys, k, rows=None):
    """Best super-groups -> best groups -> exact top-k of their codes, all on the device.

    Kept apart from :func:`_group_keys` on purpose: inside one jit XLA fuses the distance loop
    into the super-key reduction and computes every distance twice (measured: 10x slower).
    """
    _, _, n_groups = planes.shape
    n_super = n_groups // SUPER_GROUP_SIZE
    # Without its super-group part the key stays small (exact in float32); top_k's lower-index
    # rule then orders equal keys by super-group, which is the same order.
    super_keys = _super_keys_columns(group_keys) // n_super
    best_super = _smallest(super_keys.T, min(k, n_super))
    member_keys = _member_keys(group_keys, best_super)
    best_groups = jnp.take_along_axis(member_keys, _smallest(member_keys, min(k, member_keys.shape[1])), axis=1) % n_groups
    dist, pos = _rescan(queries, planes, n_valid, jnp.sort(best_groups, axis=1), rows)  # positions ascend
    order = _smallest(dist, min(k, dist.shape[1]))
    dist_out = jnp.take_along_axis(dist, order, axis=1)
    pos_out = jnp.take_along_axis(pos, order, axis=1)
    missing = dist_out >= _far(_code_bits(planes))
    return (jnp.where(missing, jnp.int32(MISSING_DISTANCE), dist_out), jnp.where(missing, jnp.int32(-1), pos_out))


def _knn_block_topk(queries, planes, n_valid, k, rows=None):
    """One query block, selection by ``lax.top_k`` on the device (accelerators)."""
    q = jnp.asarray(queries)
    d, p = _select_topk(q, planes, n_valid, _group_keys(q.T, planes, n_valid), k, rows)
    return np.asarray(d), np.asarray(p)


# -- CPU path: the same passes, with selection by NumPy's partition ----------------------------------
# XLA:CPU's top_k is a scalar insertion loop (~1.6 ns per key plus ~20 us per row at k = 100);
# NumPy's partition of unique keys (SIMD quickselect) is several times cheaper and releases the GIL,
# so two query blocks select in parallel.

@deferred_jit
def _super_keys_columns(group_keys):
    """Group minima ``(n_groups, b)`` -> unique super-group keys ``(n_super, b)`` int32.

    key = (minimum * 16 + step) * n_super + super_group: ordering by it is ordering the
    super-groups' best member groups by (minimum, group). The result stays query-minor: XLA
    fuses a transpose here into the reduction and walks memory badly (measured 25x slower).
    """
    n_groups, b = group_keys.shape
    n_super = n_groups // SUPER_GROUP_SIZE
    steps = jnp.arange(SUPER_GROUP_SIZE, dtype=jnp.int32)[:, None, None]
    best = jnp.min(group_keys.astype(jnp.int32).reshape(SUPER_GROUP_SIZE, n_super, b) * SUPER_GROUP_SIZE + steps, axis=0)
    return best * n_super + jnp.arange(n_super, dtype=jnp.int32)[:, None]


@deferred_jit
def _member_keys(group_keys, best_super):
    """Unique keys ``minimum * n_groups + group`` ``(b, ks * 16)`` of the member groups of the chosen
    super-groups (``key % n_groups`` is the group)."""
    n_groups, b = group_keys.shape
    n_super = n_groups // SUPER_GROUP_SIZE
    steps = jnp.arange(SUPER_GROUP_SIZE, dtype=jnp.int32)
    member = (steps[None, None, :] * n_super + best_super[:, :, None]).reshape(b, -1)
    rows = jnp.arange(b, dtype=jnp.int32)[:, None]
    return group_keys[member, rows].astype(jnp.int32) * n_groups + member


@deferred_jit
def _rescan(queries, planes, n_valid, groups, rows=None):
    """Distances and positions ``(b, kg * group_size)`` int32 of every code in the given groups
    (gathered from ``rows`` where given, else from the planes)."""
    n_units, group_size, _ = planes.shape
    if rows is not None:
        # bytes units back to their words (units are little-endian bytes; XLA's hosts are little-endian too)
        words = queries if queries.dtype == jnp.uint32 else jax.lax.bitcast_convert_type(
            queries.reshape(queries.shape[0], -1, 4), jnp.uint32)
        pos = groups[:, :, None] * group_size + jnp.arange(group_size, dtype=jnp.int32)  # (b, kg, s)
        cand = jnp.take(rows, pos, axis=0)  # (b, kg, s, n_words)
        dist = jnp.sum(jnp.bitwise_count(jnp.bitwise_xor(cand, words[:, None, None, :])).astype(jnp.int32), axis=3)
        dist = jnp.where(pos < n_valid, dist, _far(_code_bits(planes)))
        return dist.reshape(queries.shape[0], -1), pos.reshape(queries.shape[0], -1)
    cand = jnp.take(planes, groups, axis=2)  # (n_units, s, b, kg)
    if n_units > _unrolled_units(planes):
        dist = jnp.sum(jnp.bitwise_count(jnp.bitwise_xor(queries.T[:, None, :, None], cand)).astype(jnp.int32), axis=0)
    else:
        dist = None
        for w in range(n_units):
            x = jnp.bitwise_count(jnp.bitwise_xor(queries[None, :, w, None], cand[w])).astype(jnp.int32)
            dist = x if dist is None else dist + x
    pos = groups[None] * group_size + jnp.arange(group_size, dtype=jnp.int32)[:, None, None]
    dist = jnp.where(pos < n_valid, dist, _far(_code_bits(planes)))
    b = queries.shape[0]
    return jnp.transpose(dist, (1, 2, 0)).reshape(b, -1), jnp.transpose(pos, (1, 2, 0)).reshape(b, -1)


def _smallest_keys(keys: np.ndarray, k: int) -> np.ndarray:
    """The k smallest keys of each row, in no particular order. Every key here is unique and carries
    its own position (super-group, group, database position), so values are enough: NumPy's
    partition is 2.5-4x faster than argpartition (measured on AVX2 and AVX-512 alike)."""
    if k >= keys.shape[1]:
        return keys
    return np.partition(keys, k - 1, axis=1)[:, :k]


def _knn_block_numpy(queries, planes, n_valid, k, rows=None):
    """One query block (in the unit of ``planes``), selection on the host with NumPy (CPU)."""
    q = jnp.asarray(queries)
    n_groups = planes.shape[2]
    group_keys = _group_keys(q.T, planes, n_valid)
    super_keys = np.ascontiguousarray(np.asarray(_super_keys_columns(group_keys)).T)
    best_super = _smallest_keys(super_keys, min(k, super_keys.shape[1])) % (n_groups // SUPER_GROUP_SIZE)
    member_keys = np.asarray(_member_keys(group_keys, jnp.asarray(best_super)))
    chosen_groups = _smallest_keys(member_keys, min(k, member_keys.shape[1]))
    best_groups = chosen_groups % n_groups
    dist, pos = (np.asarray(a) for a in _rescan(q, planes, n_valid, jnp.asarray(best_groups), rows))
    keys = (dist.astype(np.int64) << 32) | pos.astype(np.int64)
    chosen = _smallest_keys(keys, min(k, keys.shape[1]))
    chosen.sort(axis=1)
    dist_out = (chosen >> 32).astype(np.int32)
    pos_out = (chosen & 0xFFFFFFFF).astype(np.int32)
    missing = dist_out >= _code_bits(planes) + 1
    dist_out[missing] = MISSING_DISTANCE
    pos_out[missing] = -1
    if _saturates(planes):
        # Groups left out come after a chosen one whose minimum reads 255, so they hold nothing closer
        # than 255: only a k-th distance of 255 or more (or missing) may be wrong.
        unsure = np.flatnonzero((chosen_groups.max(axis=1) // n_groups >= _SATURATED) & (dist_out[:, -1] >= _SATURATED))
        if unsure.size:
            codes = np.asarray(rows)[: int(n_valid)]
            dist_out[unsure], pos_out[unsure] = knn_search_host(np.asarray(queries)[unsure].view("<u4"), codes, k)
    return dist_out, pos_out


# A process that has not loaded JAX searches this many queries or fewer with NumPy on the host (one
# query against 1M 64-bit codes: about 30 ms), where loading JAX and compiling would take a second.
HOST_SEARCH_MAX_QUERIES = 8


def knn_search_host(query_codes, database_codes, k: int, *, n_bits: int | None = None):
    """:func:`knn_search` in NumPy, one query at a time: the same results, meant for a few queries.

    Args:
      query_codes: ``(q, n_words)`` uint32 packed codes.
      database_codes: ``(n, n_words)`` uint32 packed codes.
      k: number of neighbours (> 0), clamped to ``n``.
    Returns:
      ``(distances, positions)``: two ``(q, min(k, n))`` int32 arrays, rows sorted by (distance, position).
    """
    k = check_k(k)
    database = check_codes(database_codes, name="database codes")
    queries = check_codes(query_codes, n_bits=n_bits, name="query codes")
    check_same_width(queries.shape[1], database.shape[1])
    n = database.shape[0]
    k = min(k, n)
    dist_out = np.full((queries.shape[0], k), MISSING_DISTANCE, np.int32)
    pos_out = np.full((queries.shape[0], k), -1, np.int32)
    if k == 0:
        return dist_out, pos_out
    positions = np.arange(n, dtype=np.int64)
    for row, query in enumerate(queries):
        keys = (hamming_rows_host(database, query) << 32) | positions  # (distance, position) in one int64
        if k < n:
            keys = keys[np.argpartition(keys, k - 1)[:k]]
        keys.sort()
        dist_out[row] = keys >> 32
        pos_out[row] = keys & 0xFFFFFFFF
    return dist_out, pos_out


def _default_selection() -> str:
    return "numpy" if jax.default_backend() == "cpu" else "topk"


def _default_block(database: PackedDatabase, k: int) -> int:
    """Queries per block: 2 bytes per group key (block * n_groups) and rescanned candidates (block * k *
    group_size codes) each stay near 32 MiB per block, two blocks in flight. Keys are stored in a byte
    up to 254 bits, but the super-group reduction widens them on the way; at 4 bytes per key a block
    at 1M codes held 128 queries, at 2 it holds 256, which searched 1,000 queries up to 10% faster
    (2-core EPYC); at 1 byte, 10M codes took a third more peak memory (1.0 GiB) for no clear gain."""
    _, group_size, n_groups = database.planes.shape
    per_query = max(2 * n_groups, 4 * k * group_size * (_code_bits(database.planes) // WORD_BITS + 2))
    block = (32 << 20) // per_query
    # Whole vectors of query lanes (32 bytes with AVX2): at 10M codes held to AVX2, blocks of 48 took
    # 1.5 s where 32, 64 or 96 took 0.8 s.
    return int(max(1, min(256, block // 32 * 32 if block >= 32 else block)))


def knn_search(query_codes, database_codes, k: int, *, n_bits: int | None = None, block_size: int | None = None,
               selection: str | None = None):
    """Exact k-nearest neighbours by Hamming distance.

    Args:
      query_codes: ``(q, n_words)`` uint32 packed codes.
      database_codes: ``(n, n_words)`` uint32 packed codes, or a :class:`PackedDatabase` from
        :func:`prepare_database` (reuse it across calls to skip the layout copy).
      k: number of neighbours (> 0); more than the database holds is clamped to its size, so
        memory follows the work, not the request.
      n_bits: optional code length, to validate the queries against.
      block_size: queries per jit call; default keeps memory near 64 MiB per block.
      selection: ``"numpy"`` (host-side partition, fastest on CPU; always for bytes of 8-word codes,
        see :func:`_saturates`) or ``"topk"`` (``lax.top_k``
        on the device, for accelerators); both give identical results. Default by backend.
    Returns:
      ``(distances, positions)``: two ``(q, min(k, n))`` int32 NumPy arrays, rows sorted by
      (distance, position).
    """
    k = check_k(k)
    database = database_codes if isinstance(database_codes, PackedDatabase) else prepare_database(database_codes)
    queries = check_codes(query_codes, n_bits=n_bits, name="query codes")
    check_same_width(queries.shape[1], _code_bits(database.planes) // WORD_BITS)
    n_q = queries.shape[0]
    k = min(k, database.n_valid)
    if n_q == 0 or k == 0:
        return np.full((n_q, k), MISSING_DISTANCE, np.int32), np.full((n_q, k), -1, np.int32)
    block = block_size or _default_block(database, k)
    n_valid = jnp.int32(database.n_valid)
    selection = selection or _default_selection()
    if selection not in ("numpy", "topk"):
        raise ValueError(f"selection must be 'numpy' or 'topk', got {selection!r}")
    if _saturates(database.planes):
        selection = "numpy"  # saturated minima need the exact check of _knn_block_numpy
    run = _knn_block_numpy if selection == "numpy" else _knn_block_topk
    # top_k and the gathers run on one core each; two blocks in flight keep both cores busy.
    units = _as_units(queries, database.planes.dtype)
    return _in_blocks(units, k, block, lambda chunk: run(chunk, database.planes, n_valid, k, database.rows), _SEARCH_THREADS)


MIN_PADDED_BLOCK = 4


def _in_blocks(queries: np.ndarray, k: int, block: int, search_block, threads: int = 1):
    """``(distances, positions)`` ``(q, k)`` of ``search_block(chunk) -> (d, p)`` run over blocks of
    ``block`` queries; the last block is padded to full size, so one compiled shape serves them all.
    Fewer queries than a block are padded to a power of two, at least 4, so that callers whose query
    counts vary (a multi-index's far queries, a service) meet a handful of compiled shapes, not one
    per count; XLA:CPU also runs a block of one or two queries several times slower than one of four
    (1M 64-bit codes: 19 ms for one query, 4.4 ms for four)."""
    n_q, n_units = queries.shape
    if n_q < block:
        block = min(block, max(MIN_PADDED_BLOCK, 1 << (n_q - 1).bit_length()))
    dist_out = np.full((n_q, k), MISSING_DISTANCE, np.int32)
    pos_out = np.full((n_q, k), -1, np.int32)

    def run_block(start):
        chunk = queries[start : start + block]
        rows = chunk.shape[0]
        if rows < block:
            chunk = np.concatenate([chunk, np.zeros((block - rows, n_units), queries.dtype)])
        d, p = search_block(chunk)
        width = d.shape[1]
        dist_out[start : start + rows, :width] = d[:rows]
        pos_out[start : start + rows, :width] = p[:rows]

    starts = range(0, n_q, block)
    if len(starts) == 1 or threads <= 1:
        for start in starts:
            run_block(start)
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(run_block, starts))
    return dist_out, pos_out


# -- search sharded over the devices of a mesh --------------------------------------------------

class ShardedDatabase(NamedTuple):
    """Database codes split into contiguous, nearly equal parts, one per device along ``axis`` of ``mesh``.

    planes: ``(n_shards, n_words, group_size, n_groups)`` uint32, sharded over ``axis`` (each part laid
      out as :class:`PackedDatabase`). n_valid, offsets: ``(n_shards,)`` int32 codes in each part and
      the position of its first code, sharded alike. n_total: codes in all (python int).
    """

    planes: jax.Array
    n_valid: jax.Array
    offsets: jax.Array
    n_total: int
    mesh: jax.sharding.Mesh
    axis: str


def default_mesh(axis: str = "codes") -> jax.sharding.Mesh:
    """A one-axis mesh over every device of every process (after ``jax.distributed.initialize``, all hosts)."""
    return jax.sharding.Mesh(np.array(jax.devices()), (axis,))


def check_mesh(mesh, axis: str) -> int:
    """The number of devices along ``axis`` of ``mesh``; a clear error if it has no such axis."""
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
    if axis not in mesh.axis_names:
        raise ValueError(f"the mesh has axes {mesh.axis_names}, not {axis!r}: pass axis= one of them, or build the mesh "
                         f"with that name, e.g. jax.sharding.Mesh(jax.devices(), ({axis!r},))")
    return int(mesh.shape[axis])


def shard_database(codes, mesh: jax.sharding.Mesh | None = None, axis: str = "codes", group_size: int | None = None) -> ShardedDatabase:
    """Split ``(n, n_words)`` uint32 codes over the devices along ``axis`` of ``mesh`` (default: all devices).

    Other mesh axes hold copies. Every process passes the same codes; each places only the parts of
    its own devices, so this works unchanged on several hosts.
    """
    codes = check_codes(codes, name="database codes")
    mesh = default_mesh(axis) if mesh is None else mesh
    n_shards = check_mesh(mesh, axis)
    n, n_words = codes.shape
    if n < n_shards:
        raise ValueError(f"{n} codes cannot be split over the {n_shards} devices of mesh axis {axis!r}: every device needs "
                         "at least one code; use a mesh with fewer devices, or search on one device (knn_search)")
    bounds = np.arange(n_shards + 1) * n // n_shards
    largest = int(np.diff(bounds).max())
    group_size = group_size or _default_group_size(largest, n_words)
    n_groups = _n_groups(largest, group_size)
    if n_groups > _max_groups(n_words):
        raise ValueError(f"group_size={group_size} makes {n_groups} groups; use at least {_default_group_size(largest, n_words)}")

    def part(s: int) -> np.ndarray:
        local = codes[bounds[s] : bounds[s + 1]]
        padded = np.empty((n_groups * group_size, n_words), np.uint32)
        padded[: len(local)] = local
        padded[len(local) :] = local[-1]
        return padded.reshape(n_groups, group_size, n_words).transpose(2, 1, 0)

    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))

    def placed(shape, fill):
        return jax.make_array_from_callback(shape, sharding, lambda index: fill(range(n_shards)[index[0]]))

    planes = placed((n_shards, n_words, group_size, n_groups), lambda shards: np.stack([part(s) for s in shards]))
    n_valid = placed((n_shards,), lambda shards: np.diff(bounds).astype(np.int32)[list(shards)])
    offsets = placed((n_shards,), lambda shards: bounds[:-1].astype(np.int32)[list(shards)])
    return ShardedDatabase(planes, n_valid, offsets, n, mesh, axis)


@deferred_jit(static_argnames=("k", "mesh", "axis"))
def _sharded_block(queries, planes, n_valid, offsets, *, k, mesh, axis):
    """Each device: exact top-k of its part; then all parts' lists gathered and merged on every device.

    A part's list is ordered by (distance, position) and parts are gathered in position order, so
    ``top_k``'s lower-index rule among equal distances keeps the global (distance, position) order.
    """
    spec = jax.sharding.PartitionSpec(axis)

    def local(q, planes, n_valid, offsets):
        planes, n_valid, offset = planes[0], n_valid[0], offsets[0]
        dist, pos = _select_topk(q, planes, n_valid, _group_keys(q.T, planes, n_valid), k)
        pos = jnp.where(pos >= 0, pos + offset, -1)
        dist = jax.lax.all_gather(dist, axis, axis=1, tiled=True)
        pos = jax.lax.all_gather(pos, axis, axis=1, tiled=True)
        best = _smallest(dist, min(k, dist.shape[1]))
        return jnp.take_along_axis(dist, best, axis=1), jnp.take_along_axis(pos, best, axis=1)

    return jax.shard_map(local, mesh=mesh, in_specs=(jax.sharding.PartitionSpec(), spec, spec, spec),
                         out_specs=jax.sharding.PartitionSpec(), check_vma=False)(queries, planes, n_valid, offsets)


def _local_copy(array) -> np.ndarray:
    """A replicated result as NumPy (on several hosts, this process's copy)."""
    return np.asarray(array.addressable_shards[0].data)


def sharded_knn_search(query_codes, database: ShardedDatabase, k: int, *, n_bits: int | None = None,
                       block_size: int | None = None):
    """:func:`knn_search` over a :class:`ShardedDatabase`: each device searches its part, the
    per-device top-k lists are merged exactly. Same results as :func:`knn_search` on one device,
    ties included. Returns ``(distances, positions)``, two ``(q, min(k, n))`` int32 NumPy arrays."""
    if not isinstance(database, ShardedDatabase):
        raise TypeError(f"database must be a ShardedDatabase from shard_database(codes, mesh), got {type(database).__name__}")
    k = check_k(k)
    _, n_words, group_size, n_groups = database.planes.shape
    queries = check_codes(query_codes, n_bits=n_bits, name="query codes")
    check_same_width(queries.shape[1], n_words)
    n_q = queries.shape[0]
    k = min(k, database.n_total)
    if n_q == 0:
        return np.full((n_q, k), MISSING_DISTANCE, np.int32), np.full((n_q, k), -1, np.int32)
    part = PackedDatabase(jax.ShapeDtypeStruct((n_words, group_size, n_groups), jnp.uint32), 0)  # its shape sizes blocks
    replicated = jax.sharding.NamedSharding(database.mesh, jax.sharding.PartitionSpec())

    def search_block(chunk):
        chunk = jax.make_array_from_callback(chunk.shape, replicated, lambda index: chunk[index])
        d, p = _sharded_block(chunk, database.planes, database.n_valid, database.offsets, k=k, mesh=database.mesh,
                              axis=database.axis)
        return _local_copy(d), _local_copy(p)

    return _in_blocks(queries, k, block_size or _default_block(part, k), search_block)


def radius_search(query_codes, database_codes, radius: int, *, block_size: int = 64):
    """All database codes within Hamming distance ``radius`` (inclusive) of each query.

    Args:
      query_codes: ``(q, n_words)`` uint32; database_codes: ``(n, n_words)`` uint32; radius: int >= 0.
    Returns:
      ``(lims, distances, positions)`` in FAISS's layout: the results of query ``i`` are
      ``distances[lims[i]:lims[i+1]]`` and ``positions[lims[i]:lims[i+1]]``, sorted by
      (distance, position). ``lims`` is ``(q + 1,)`` int64; the others int32.
    """
    radius = check_radius(radius)
    database = check_codes(database_codes, name="database codes")
    queries = check_codes(query_codes, name="query codes")
    check_same_width(queries.shape[1], database.shape[1])
    lims = [0]
    all_d, all_p = [], []
    db = jnp.asarray(database)
    for start in range(0, queries.shape[0], block_size):
        dist = np.asarray(pairwise_hamming(jnp.asarray(queries[start : start + block_size]), db))
        for row in dist:
            pos = np.flatnonzero(row <= radius).astype(np.int32)
            d = row[pos]
            order = np.argsort(d, kind="stable")
            all_d.append(d[order].astype(np.int32))
            all_p.append(pos[order])
            lims.append(lims[-1] + pos.size)
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int32)  # noqa: E731
    return np.asarray(lims, np.int64), cat(all_d), cat(all_p)


@deferred_jit
def _rerank_block(query_feats, cand_feats, candidates):
    """Squared distances of ``(b, c, dim)`` candidate features to ``(b, dim)`` queries, sorted (stable)."""
    d2 = jnp.sum(jnp.square(cand_feats - query_feats[:, None, :]), axis=-1)
    d2 = jnp.where(candidates >= 0, d2, jnp.inf)
    order = jnp.argsort(d2, axis=1, stable=True)
    return jnp.take_along_axis(d2, order, axis=1), jnp.take_along_axis(candidates, order, axis=1)


def rerank_euclidean(query_features, database_features, candidates, k: int | None = None):
    """Re-rank a short-list by Euclidean distance on real-valued features (two-stage search).

    Args:
      query_features: ``(q, dim)`` float; database_features: ``(n, dim)`` float.
      candidates: ``(q, c)`` int positions into the database (-1 = no candidate), e.g. the
        positions from :func:`knn_search`.
      k: keep the best ``k`` (default: all ``c``).
    Returns:
      ``(distances, positions)``: ``(q, k)`` float32 Euclidean distances (inf where missing) and
      int32 positions (-1 where missing), sorted ascending; ties keep the short-list order.

    Only the candidates' rows of ``database_features`` are read (and checked), a block of queries
    at a time, so the cost follows the short-list, not the database.
    """
    qf = check_features(query_features, "query features")
    dbf = np.asarray(database_features)
    cand = np.asarray(candidates)
    if dbf.ndim != 2 or qf.shape[1] != dbf.shape[1]:
        raise ValueError(f"database features must be (n, {qf.shape[1]}) like the queries, got shape {dbf.shape}")
    if cand.ndim != 2 or cand.shape[0] != qf.shape[0]:
        raise ValueError(f"candidates must be (q, c) with q={qf.shape[0]}, got shape {cand.shape}")
    if cand.size and cand.max() >= dbf.shape[0]:
        raise ValueError(f"candidate position {cand.max()} is outside the {dbf.shape[0]} database features")
    k = cand.shape[1] if k is None else min(check_k(k), cand.shape[1])
    cand = cand.astype(np.int32)
    block = max(1, (64 << 20) // max(1, 4 * cand.shape[1] * qf.shape[1]))  # ~64 MiB of candidate features per block
    dist_out = np.empty((qf.shape[0], k), np.float32)
    pos_out = np.empty((qf.shape[0], k), np.int32)
    for start in range(0, qf.shape[0], block):
        rows = cand[start : start + block]
        feats = check_features(dbf[np.maximum(rows, 0)].reshape(-1, dbf.shape[1]), "database features")
        d2, pos = _rerank_block(jnp.asarray(qf[start : start + block]), jnp.asarray(feats.reshape(rows.shape + (-1,))),
                                jnp.asarray(rows))
        dist_out[start : start + len(rows)] = np.sqrt(np.asarray(d2)[:, :k])
        pos_out[start : start + len(rows)] = np.asarray(pos)[:, :k]
    return dist_out, pos_out


def search_and_rerank(query_codes, database_codes, query_features, database_features, k: int, shortlist: int = 100):
    """Two-stage search: a Hamming short-list of ``shortlist`` codes, re-ranked by Euclidean distance.

    Returns ``(distances, positions)`` as :func:`rerank_euclidean`, ``(q, k)``.
    """
    _, cand = knn_search(query_codes, database_codes, max(check_k(k), check_k(shortlist, "shortlist")))
    return rerank_euclidean(query_features, database_features, cand, k)


def squared_distances(a, b):
    """``(n, m)`` squared Euclidean distances between the rows of ``a`` ``(n, dim)`` and ``b`` ``(m, dim)``
    (expanded form, clipped at 0; jit-able)."""
    return jnp.maximum(jnp.sum(a * a, axis=1, keepdims=True) - 2.0 * a @ b.T + jnp.sum(b * b, axis=1)[None], 0.0)


@deferred_jit(static_argnames=("m",))
def _euclidean_block(queries, database, offset, m: int):
    """The ``m`` nearest of one database block to ``(b, dim)`` queries: squared distances and positions."""
    d2 = squared_distances(queries, database)
    neg, pos = jax.lax.top_k(-d2, m)  # the lower position first among equal distances
    return -neg, pos.astype(jnp.int32) + offset


def euclidean_knn(query_features, database_features, m: int, *, block_size: int = 256, database_block: int = 65536):
    """The ``m`` most similar database rows to each query by Euclidean distance: exact, in blocks.

    Args:
      query_features: ``(q, dim)`` float; database_features: ``(n, dim)`` float (e.g. latent means).
      m: neighbours per query (at most ``n``).
    Returns:
      ``(distances, positions)``: ``(q, m)`` float32 Euclidean distances, ascending, and int32
      database positions; among equal distances the smaller position comes first.

    Memory is bounded by ``block_size x database_block`` distances at a time; each database block's
    best ``m`` are merged with a stable sort (earlier blocks hold smaller positions).
    """
    qf = check_features(query_features, "query features")
    db = check_features(database_features, "database features")
    if qf.shape[1] != db.shape[1]:
        raise ValueError(f"queries have {qf.shape[1]} dimensions but the database has {db.shape[1]}: encode both with "
                         "the same model")
    n = db.shape[0]
    m = check_k(m, "m")
    if m > n:
        raise ValueError(f"m={m} is more than the {n} database rows: use m <= {n}")
    blocks = [(start, jnp.asarray(db[start : start + database_block])) for start in range(0, n, database_block)]
    dist_out = np.empty((len(qf), m), np.float32)
    pos_out = np.empty((len(qf), m), np.int32)
    for start in range(0, len(qf), block_size):
        queries = jnp.asarray(qf[start : start + block_size])
        parts = [_euclidean_block(queries, block, offset, min(m, block.shape[0])) for offset, block in blocks]
        d2 = np.concatenate([np.asarray(p[0]) for p in parts], axis=1)
        pos = np.concatenate([np.asarray(p[1]) for p in parts], axis=1)
        order = np.argsort(d2, axis=1, kind="stable")[:, :m]
        dist_out[start : start + len(queries)] = np.sqrt(np.take_along_axis(d2, order, axis=1))
        pos_out[start : start + len(queries)] = np.take_along_axis(pos, order, axis=1)
    return dist_out, pos_out
