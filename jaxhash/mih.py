"""Multi-index hashing: exact Hamming k-NN and radius search that looks at a small part of the database.

Norouzi, Punjani & Fleet, "Fast exact search in Hamming space with multi-index hashing" (CVPR 2012,
TPAMI 2014). The bits of every code are cut into ``m`` disjoint substrings and each substring gets
a table: the positions of the database sorted by that substring's value. By the pigeonhole
principle, a code within Hamming distance ``r`` of a query agrees with it to within
``r // m`` bits on at least one substring. So the search probes, for ``s = 0, 1, 2, ...``, every
bucket at substring distance exactly ``s`` in every table, computes the full distance of the codes
it finds, and stops as soon as the k-th best distance is at most ``m * (s + 1) - 1``: every code
that close has then been seen. Results equal the linear scan's exactly, ordered by
(distance, position) like :func:`jaxhash.search.knn_search`.

Bit ``j`` of a packed code is bit ``j % 32`` of word ``j // 32`` (:func:`jaxhash.pack_bits`);
substring ``i`` holds a contiguous run of bits, the ``m`` runs as equal as possible (at most 32 bits).
Where a query would probe more buckets than the database holds codes (substrings too long for
the database, or a query far from everything), that query is answered by a plain scan instead.
The search runs on the host with NumPy: it is a sequence of small gathers whose sizes depend on
the query, which suits neither XLA's static shapes nor an accelerator.
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import NamedTuple

import numpy as np

from .checks import WORD_BITS, check_codes, check_k, check_radius, check_same_width
from .codes import hamming_rows_host

__all__ = ["MultiIndexTables", "build_tables", "default_substrings", "substring_bounds", "mih_knn_search",
           "mih_radius_search"]

MAX_SUBSTRING_BITS = 32
# What a bucket probe and a candidate (gather, distance, merge) cost in NumPy, in codes the linear
# scan reads in the same time; a query whose probing would cost more than a scan is scanned instead.
PROBE_COST = 400
CANDIDATE_COST = 1000
# Substrings up to this width find their buckets in a table of offsets (at most 16 MiB) instead of
# by binary search.
DENSE_BUCKET_BITS = 22


class MultiIndexTables(NamedTuple):
    """The ``m`` tables of a multi-index over ``codes``.

    codes: ``(n, n_words)`` uint32, the database (not copied). n_bits: code length.
    bounds: ``(m + 1,)`` first bit of every substring, then ``n_bits``.
    keys: per table, where its buckets start: for substrings of up to 22 bits ``(2**bits + 1,)``
      offsets into ``positions`` (bucket ``v`` is ``positions[keys[v]:keys[v + 1]]``), for wider ones
      the ``(n,)`` uint32 substring values in ascending order (found by binary search).
    positions: ``m`` arrays ``(n,)`` int32 or int64, the database positions in that order.
    """

    codes: np.ndarray
    n_bits: int
    bounds: tuple
    keys: tuple
    positions: tuple

    @property
    def bytes_per_code(self) -> float:
        """Memory of the tables and the codes, per code."""
        n = max(1, self.codes.shape[0])
        return (self.codes.nbytes + sum(k.nbytes + p.nbytes for k, p in zip(self.keys, self.positions))) / n


def default_substrings(n_bits: int, n: int) -> int:
    """The paper's choice: substrings of about ``log2(n)`` bits (at least 1 and at most 32 bits each)."""
    m = round(n_bits / max(1.0, math.log2(max(2, n))))
    return int(min(n_bits, max(m, -(-n_bits // MAX_SUBSTRING_BITS), 1)))


def substring_bounds(n_bits: int, m: int) -> tuple:
    """First bit of each of ``m`` contiguous substrings of ``n_bits`` bits (sizes differ by at most one), then ``n_bits``."""
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"the number of substrings must be a positive integer, got {m!r}")
    if m > n_bits:
        raise ValueError(f"{m} substrings of {n_bits}-bit codes would leave some empty: use at most {n_bits} "
                         f"(about n_bits / log2(database size) is best)")
    if -(-n_bits // m) > MAX_SUBSTRING_BITS:
        raise ValueError(f"{m} substrings of {n_bits}-bit codes are wider than {MAX_SUBSTRING_BITS} bits: use at least "
                         f"{-(-n_bits // MAX_SUBSTRING_BITS)} (about n_bits / log2(database size) is best)")
    return tuple(int(b) for b in np.arange(m + 1) * n_bits // m)


def _substring(codes: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Bits ``start..stop-1`` of each packed code as ``(n,)`` uint32 (at most 32 bits)."""
    word, shift = divmod(start, WORD_BITS)
    value = codes[:, word].astype(np.uint64) >> np.uint64(shift)
    if shift and word + 1 < codes.shape[1]:
        value |= codes[:, word + 1].astype(np.uint64) << np.uint64(WORD_BITS - shift)
    return (value & np.uint64((1 << (stop - start)) - 1)).astype(np.uint32)


def build_tables(codes, n_bits: int, m: int | None = None) -> MultiIndexTables:
    """Tables of ``(n, n_words)`` uint32 codes cut into ``m`` substrings (default :func:`default_substrings`)."""
    codes = check_codes(codes, n_bits=n_bits, name="database codes")
    m = default_substrings(n_bits, codes.shape[0]) if m is None else m
    bounds = substring_bounds(n_bits, m)
    position_type = np.int32 if codes.shape[0] < 2**31 else np.int64
    keys, positions = [], []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        values = _substring(codes, start, stop)
        order = np.argsort(values, kind="stable").astype(position_type)
        if stop - start <= DENSE_BUCKET_BITS:
            counts = np.bincount(values, minlength=1 << (stop - start))
            keys.append(np.concatenate([[0], np.cumsum(counts)]).astype(position_type))
        else:
            keys.append(values[order])
        positions.append(order)
    return MultiIndexTables(codes, int(n_bits), bounds, tuple(keys), tuple(positions))


@functools.lru_cache(maxsize=None)
def _masks(width: int, weight: int) -> np.ndarray:
    """Every ``width``-bit uint32 with exactly ``weight`` ones."""
    if weight == 0:
        return np.zeros(1, np.uint32)
    combos = np.array(list(itertools.combinations(range(width), weight)), np.uint64)
    return np.bitwise_or.reduce(np.uint64(1) << combos, axis=1).astype(np.uint32)


def _buckets(tables: MultiIndexTables, table: int, probes: np.ndarray):
    """``(start, stop)`` in ``tables.positions[table]`` of the buckets of the substring values ``probes``."""
    keys = tables.keys[table]
    if tables.bounds[table + 1] - tables.bounds[table] <= DENSE_BUCKET_BITS:
        return keys[probes], keys[probes + np.uint32(1)]
    return np.searchsorted(keys, probes, "left"), np.searchsorted(keys, probes, "right")


def _gather_ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """``concatenate([arange(a, b) for a, b in zip(starts, stops)])`` without the Python loop."""
    lengths = stops - starts
    keep = lengths > 0
    starts, lengths = starts[keep], lengths[keep]
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(total)


def _probe(tables: MultiIndexTables, query: np.ndarray, query_keys: list, radius: int) -> np.ndarray:
    """Positions of every code whose substring ``i`` is at distance exactly ``radius`` from the query's (any ``i``)."""
    found = []
    for i, (start, stop) in enumerate(zip(tables.bounds[:-1], tables.bounds[1:])):
        width = stop - start
        if radius > width:
            continue
        lo, hi = _buckets(tables, i, query_keys[i] ^ _masks(width, radius))
        found.append(tables.positions[i][_gather_ranges(lo, hi)])
    return np.concatenate(found) if found else np.zeros(0, np.int64)


def _probes(bounds: tuple, radius: int) -> int:
    """Buckets probed at substring distance ``radius`` over all tables."""
    return sum(math.comb(b - a, radius) for a, b in zip(bounds[:-1], bounds[1:]))


def _distances(codes: np.ndarray, positions: np.ndarray, query: np.ndarray) -> np.ndarray:
    return hamming_rows_host(codes[positions], query)


def _prepare(tables, query_codes):
    if not isinstance(tables, MultiIndexTables):
        raise TypeError(f"tables must come from build_tables(codes, n_bits, m), got {type(tables).__name__}")
    queries = check_codes(query_codes, n_bits=tables.n_bits, name="query codes")
    check_same_width(queries.shape[1], tables.codes.shape[1])
    bounds = tables.bounds
    keys = [_substring(queries, a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    return queries, keys


def mih_knn_search(query_codes, tables: MultiIndexTables, k: int, *, block_size: int = 1024, scan=None):
    """Exact k nearest neighbours through the multi-index; equal to :func:`jaxhash.search.knn_search`.

    Queries advance together, one substring radius at a time, in blocks of ``block_size``; a query
    leaves the block once its k-th distance is certain. Queries still open when the next radius
    would cost more than a scan are answered by ``scan(queries, k)`` (default: :func:`jaxhash.search.knn_search`
    over ``tables.codes``; pass one over a prepared database to skip its layout copy).
    Returns ``(distances, positions)``: two ``(q, min(k, n))`` int32 arrays, rows sorted by
    (distance, position).
    """
    k = check_k(k)
    queries, keys = _prepare(tables, query_codes)
    n = tables.codes.shape[0]
    k = min(k, n)
    dist_out = np.zeros((queries.shape[0], k), np.int32)
    pos_out = np.zeros((queries.shape[0], k), np.int32)
    for start in range(0, queries.shape[0], block_size):
        rows = slice(start, start + block_size)
        _knn_block(tables, queries[rows], [key[rows] for key in keys], k, dist_out[rows], pos_out[rows], scan)
    return dist_out, pos_out


def _knn_block(tables: MultiIndexTables, queries, query_keys, k, dist_out, pos_out, scan):
    """One block of queries; fills ``dist_out`` and ``pos_out`` ``(b, k)`` in place.

    The candidates of all open queries are kept as one sorted array of unique keys
    ``(query << shift_q) | (distance << shift_d) | position``: one ``np.unique`` merges, deduplicates
    and orders them, and each query keeps only its ``k`` best.
    """
    n = tables.codes.shape[0]
    m = len(tables.bounds) - 1
    shift_d = max(1, (n - 1).bit_length())
    shift_q = shift_d + tables.n_bits.bit_length()
    if shift_q + max(1, (len(queries) - 1).bit_length()) > 63:
        raise ValueError("too many queries per block for the key width: lower block_size")
    open_rows = np.arange(len(queries))
    best = np.zeros(0, np.int64)
    cost = np.zeros(len(queries))  # work spent on each query, in codes a scan would have read
    to_scan = []
    widest = max(b - a for a, b in zip(tables.bounds[:-1], tables.bounds[1:]))
    for radius in range(widest + 1):
        cost[open_rows] += _probes(tables.bounds, radius) * PROBE_COST
        if cost[open_rows].min() > n:  # known before probing: every open query goes to the scan
            to_scan.append(open_rows)
            break
        ranges = _bucket_ranges(tables, [key[open_rows] for key in query_keys], radius)
        cost[open_rows] += sum((hi - lo).sum(axis=1) * CANDIDATE_COST for _, lo, hi in ranges)
        expensive = cost[open_rows] > n
        if expensive.any():  # these queries are far from every code: a scan answers them for less
            to_scan.append(open_rows[expensive])
            best = best[~np.isin(best >> shift_q, open_rows[expensive])]
            ranges = [(i, lo[~expensive], hi[~expensive]) for i, lo, hi in ranges]
            open_rows = open_rows[~expensive]
            if open_rows.size == 0:
                break
        rows, positions = _gather(tables, ranges)
        rows = open_rows[rows]
        dist = hamming_rows_host(tables.codes[positions], queries[rows])
        found = (rows.astype(np.int64) << shift_q) | (dist << shift_d) | positions
        best = np.unique(np.concatenate([best, found]))
        owner = best >> shift_q
        first = np.searchsorted(owner, open_rows)
        count = np.searchsorted(owner, open_rows, "right") - first
        rank = np.arange(best.size) - np.repeat(first, count)
        best = best[rank < k]  # each open query keeps its k best
        first = np.searchsorted(best >> shift_q, open_rows)
        count = np.minimum(count, k)
        full = count >= k
        kth = np.full(open_rows.size, np.iinfo(np.int64).max)
        kth[full] = (best[first[full] + k - 1] >> shift_d) & ((1 << (shift_q - shift_d)) - 1)
        # Every code within m * (radius + 1) - 1 of a query has now been seen.
        done = kth <= m * (radius + 1) - 1
        if done.any():
            for row, at in zip(open_rows[done], first[done]):
                chosen = best[at : at + k]
                dist_out[row] = (chosen >> shift_d) & ((1 << (shift_q - shift_d)) - 1)
                pos_out[row] = chosen & ((1 << shift_d) - 1)
            keep = np.repeat(~done, count)
            best, open_rows = best[keep], open_rows[~done]
        if open_rows.size == 0:
            break
    if to_scan:
        if scan is None:
            from .search import knn_search  # noqa: PLC0415

            scan = lambda q, k: knn_search(q, tables.codes, k)  # noqa: E731
        rows = np.concatenate(to_scan)
        dist_out[rows], pos_out[rows] = scan(queries[rows], k)


def _bucket_ranges(tables: MultiIndexTables, query_keys: list, radius: int) -> list:
    """Per table ``i`` with substrings of at least ``radius`` bits: ``(i, start, stop)``, two
    ``(b, probes)`` arrays locating the buckets at substring distance exactly ``radius`` from each of
    ``b`` queries."""
    ranges = []
    for i, (start, stop) in enumerate(zip(tables.bounds[:-1], tables.bounds[1:])):
        if radius <= stop - start:
            masks = _masks(stop - start, radius)
            lo, hi = _buckets(tables, i, (query_keys[i][:, None] ^ masks[None, :]).ravel())
            ranges.append((i, lo.reshape(-1, masks.size), hi.reshape(-1, masks.size)))
    return ranges


def _gather(tables: MultiIndexTables, ranges: list):
    """``(rows, positions)`` of the codes in the buckets of :func:`_bucket_ranges`."""
    rows, found = [], []
    for i, lo, hi in ranges:
        rows.append(np.repeat(np.arange(lo.shape[0]), (hi - lo).sum(axis=1)))
        found.append(tables.positions[i][_gather_ranges(lo.ravel(), hi.ravel())].astype(np.int64))
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(rows), np.concatenate(found)


def mih_radius_search(query_codes, tables: MultiIndexTables, radius: int):
    """Every code within Hamming distance ``radius``, as :func:`jaxhash.search.radius_search`:
    ``(lims, distances, positions)``, each query's results sorted by (distance, position)."""
    radius = check_radius(radius)
    queries, keys = _prepare(tables, query_codes)
    m = len(tables.bounds) - 1
    lims, all_d, all_p = [0], [], []
    for row, query in enumerate(queries):
        query_keys = [key[row] for key in keys]
        if sum(_probes(tables.bounds, s) for s in range(radius // m + 1)) > tables.codes.shape[0]:
            positions = np.arange(tables.codes.shape[0])
        else:
            positions = np.unique(np.concatenate([_probe(tables, query, query_keys, s) for s in range(radius // m + 1)]))
        dist = _distances(tables.codes, positions, query)
        close = dist <= radius
        order = np.lexsort((positions[close], dist[close]))
        all_d.append(dist[close][order].astype(np.int32))
        all_p.append(positions[close][order].astype(np.int32))
        lims.append(lims[-1] + int(close.sum()))
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int32)  # noqa: E731
    return np.asarray(lims, np.int64), cat(all_d), cat(all_p)
