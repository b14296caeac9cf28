"""Multi-index hashing: exact Hamming k-NN and radius search that looks at a small part of the database.

Norouzi, Punjani & Fleet, "Fast exact search in Hamming space with multi-index hashing" (CVPR 2012,
TPAMI 2014). The bits of every code are cut into ``m`` disjoint substrings and each substring gets
a table: the positions of the database sorted by that substring's value. By the pigeonhole
principle, a code within Hamming distance ``r`` of a query agrees with it to within
``r // m`` bits on at least one substring. So the search probes, for ``s = 0, 1, 2, ...``, the
buckets at substring distance exactly ``s`` in one table after another (for each query, the table
whose buckets hold the fewest codes first), computes the full distance of the codes it finds, and
stops as soon as the k-th best distance is at most ``m * s + j`` after ``j + 1`` tables: every
code that close has then been seen. Results equal the linear scan's exactly, ordered by
(distance, position) like :func:`jaxhash.search.knn_search`.

Bit ``j`` of a packed code is bit ``j % 32`` of word ``j // 32`` (:func:`jaxhash.pack_bits`);
substring ``i`` holds a contiguous run of bits, the ``m`` runs as equal as possible (at most 32 bits).
Codes of up to 64 bits are also copied into every table's order, so that a bucket's codes are read
from consecutive memory rather than one cache miss each (4 or 8 bytes per code and table).
Where probing a query would cost more than scanning the database for it (substrings too long for
the database, a query far from everything, random codes), that query is answered by a scan instead;
the costs are estimates, so this choice affects speed only, never results.
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
from .codes import hamming_rows_host, popcount_host

__all__ = ["MultiIndexTables", "build_tables", "default_substrings", "substring_bounds", "mih_knn_search",
           "mih_radius_search"]

MAX_SUBSTRING_BITS = 32
# What a bucket probe and a candidate (gather, distance, merge) cost, in codes the linear scan reads
# per query in the same time; a query whose probing would cost more than a scan is scanned instead.
# Chosen by measuring speed-ups over the scan on 1M and 10M 64-bit codes (random, and ITQ codes of
# MNIST with held-out queries) on a 2-core AVX2 CPU: larger values sent queries to the scan that
# probing would have answered sooner, and random codes keep to the scan's speed either way.
PROBE_COST = 30
CANDIDATE_COST = 60
# Where XLA:CPU counts 32-bit lanes in one instruction (AVX-512 VPOPCNTDQ) the scan reads codes about
# this much faster, so a probe and a candidate cost as many more codes: 10M 64-bit codes, 1,000
# queries, k = 100 took 0.39 s against 0.86 s held to AVX2 on one AVX-512 EPYC. There, on 10M codes,
# scales of 2 and 4 alike beat none: 1.58x / 1.52x instead of 1.24x at 10-NN on held-out ITQ codes of
# MNIST, 0.86x / 0.86x instead of 0.71x at 1-NN on random codes, the same with copies of the queries
# in the database; 8 halved the copies' speed-up.
VECTOR_POPCOUNT_SCAN_SPEEDUP = 2
# Substrings up to this width find their buckets in a table of offsets (at most 16 MiB) instead of
# by binary search.
DENSE_BUCKET_BITS = 22
# Codes of up to this many bits are copied into every table's order (4 or 8 bytes per code and table).
ORDERED_COPY_BITS = 64
# Bucket bounds looked up at once (queries x probes), about 64 MiB.
MAX_PROBES_PER_CHUNK = 1 << 22
# Candidates read in one table step (queries x bucket codes), about 300 MiB of temporaries.
MAX_CANDIDATES_PER_STEP = 1 << 22


class MultiIndexTables(NamedTuple):
    """The ``m`` tables of a multi-index over ``codes``.

    codes: ``(n, n_words)`` uint32, the database (not copied). n_bits: code length.
    bounds: ``(m + 1,)`` first bit of every substring, then ``n_bits``.
    keys: per table, where its buckets start: for substrings of up to 22 bits ``(2**bits + 1,)``
      offsets into ``positions`` (bucket ``v`` is ``positions[keys[v]:keys[v + 1]]``), for wider ones
      the ``(n,)`` uint32 substring values in ascending order (found by binary search).
    positions: ``m`` arrays ``(n,)`` int32 or int64, the database positions in that order.
    ordered: for codes of up to 64 bits, ``m`` copies of the codes in that order (see :func:`_lanes`),
      so that a bucket's codes are read from consecutive memory; empty for wider codes, which are
      read through ``positions`` (the copies would cost more memory than they save time).
    """

    codes: np.ndarray
    n_bits: int
    bounds: tuple
    keys: tuple
    positions: tuple
    ordered: tuple = ()

    @property
    def bytes_per_code(self) -> float:
        """Memory of the tables and the codes, per code."""
        n = max(1, self.codes.shape[0])
        arrays = [self.codes, *self.keys, *self.positions, *self.ordered]
        return sum(a.nbytes for a in arrays) / n


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
        raise ValueError(f"{m} substring{'s' if m > 1 else ''} of {n_bits}-bit codes {'are' if m > 1 else 'is'} wider than "
                         f"{MAX_SUBSTRING_BITS} bits: use at least "
                         f"{-(-n_bits // MAX_SUBSTRING_BITS)} (about n_bits / log2(database size) is best)")
    return tuple(int(b) for b in np.arange(m + 1) * n_bits // m)


def _substring(codes: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Bits ``start..stop-1`` of each packed code as ``(n,)`` uint32 (at most 32 bits)."""
    word, shift = divmod(start, WORD_BITS)
    value = codes[:, word].astype(np.uint64) >> np.uint64(shift)
    if shift and word + 1 < codes.shape[1]:
        value |= codes[:, word + 1].astype(np.uint64) << np.uint64(WORD_BITS - shift)
    return (value & np.uint64((1 << (stop - start)) - 1)).astype(np.uint32)


def _lanes(codes: np.ndarray) -> np.ndarray:
    """Packed codes as ``(n, lanes)`` of 64 bits (an even number of words, a view) or of 32 bits.

    Bit ``j`` of a code is bit ``j % lane_bits`` of lane ``j // lane_bits``, as for the words."""
    if codes.shape[1] % 2 == 0 and np.little_endian:
        return np.ascontiguousarray(codes).view(np.uint64)
    return codes


def _lane_masks(bounds: tuple, lane_bits: int) -> list:
    """Per substring, its ``(lane, mask)`` pairs (one or two: a substring has at most 32 bits)."""
    dtype = np.uint64 if lane_bits == 64 else np.uint32
    masks = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        pairs = []
        for lane in range(start // lane_bits, (stop - 1) // lane_bits + 1):
            lo, hi = max(start, lane * lane_bits) - lane * lane_bits, min(stop, (lane + 1) * lane_bits) - lane * lane_bits
            pairs.append((lane, dtype(((1 << (hi - lo)) - 1) << lo)))
        masks.append(pairs)
    return masks


def build_tables(codes, n_bits: int, m: int | None = None) -> MultiIndexTables:
    """Tables of ``(n, n_words)`` uint32 codes cut into ``m`` substrings (default :func:`default_substrings`)."""
    codes = check_codes(codes, n_bits=n_bits, name="database codes")
    m = default_substrings(n_bits, codes.shape[0]) if m is None else m
    bounds = substring_bounds(n_bits, m)
    position_type = np.int32 if codes.shape[0] < 2**31 else np.int64
    keys, positions, ordered = [], [], []
    lanes = _lanes(codes) if n_bits <= ORDERED_COPY_BITS else None
    for start, stop in zip(bounds[:-1], bounds[1:]):
        values = _substring(codes, start, stop)
        order = np.argsort(values, kind="stable").astype(position_type)
        if stop - start <= DENSE_BUCKET_BITS:
            counts = np.bincount(values, minlength=1 << (stop - start))
            keys.append(np.concatenate([[0], np.cumsum(counts)]).astype(position_type))
        else:
            keys.append(values[order])
        positions.append(order)
        if lanes is not None:
            ordered.append(lanes[order])
    return MultiIndexTables(codes, int(n_bits), bounds, tuple(keys), tuple(positions), tuple(ordered))


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


def _costs() -> tuple[float, float]:
    """``(probe, candidate)`` costs in codes of the linear scan this process runs (see PROBE_COST).

    Judged by the CPU's flags alone, so that a query answered by probing never loads JAX: where the
    scan runs on an accelerator it is faster still and these costs are too low (speed only, never results)."""
    from .search import _cpu_popcounts_32_bit_lanes  # noqa: PLC0415 (reads /proc/cpuinfo; never loads JAX)

    scale = VECTOR_POPCOUNT_SCAN_SPEEDUP if _cpu_popcounts_32_bit_lanes() else 1
    return PROBE_COST * scale, CANDIDATE_COST * scale


def _expected_codes(tables: MultiIndexTables, radius: int) -> float:
    """Codes in the buckets at substring distance ``radius``, over all tables, were the codes spread evenly."""
    n = tables.codes.shape[0]
    return sum(math.comb(b - a, radius) * n / 2 ** (b - a) for a, b in zip(tables.bounds[:-1], tables.bounds[1:]))


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
    leaves the block once its k-th distance is certain. Queries whose probing is estimated to cost
    more than a scan (before a radius, before a table, or from their k-th distance so far) are
    answered by ``scan(queries, k)`` (default: :func:`jaxhash.search.knn_search` over
    ``tables.codes``; pass one over a prepared database to skip its layout copy).
    Returns ``(distances, positions)``: two ``(q, min(k, n))`` int32 arrays, rows sorted by
    (distance, position).
    """
    k = check_k(k)
    queries, keys = _prepare(tables, query_codes)
    n = tables.codes.shape[0]
    k = min(k, n)
    dist_out = np.zeros((queries.shape[0], k), np.int32)
    pos_out = np.zeros((queries.shape[0], k), np.int32)
    if k == 0:  # an empty database
        return dist_out, pos_out
    for start in range(0, queries.shape[0], block_size):
        rows = slice(start, start + block_size)
        _knn_block(tables, queries[rows], [key[rows] for key in keys], k, dist_out[rows], pos_out[rows], scan)
    return dist_out, pos_out


def _knn_block(tables: MultiIndexTables, queries, query_keys, k, dist_out, pos_out, scan):
    """One block of queries; fills ``dist_out`` and ``pos_out`` ``(b, k)`` in place.

    Every open query probes one substring radius at a time, in chunks of queries small enough to
    keep the bucket bounds of one radius in memory. Queries whose probing would cost more than a
    scan leave for ``scan``.
    """
    n = tables.codes.shape[0]
    widths = np.diff(tables.bounds)
    best_d = np.full((len(queries), k), tables.n_bits + 1, np.int64)  # empty slots sort last
    best_p = np.full((len(queries), k), n, np.int64)
    cost = np.zeros(len(queries))  # work spent on each query, in codes a scan would have read
    open_rows, to_scan, finished = np.arange(len(queries)), [], []
    m = widths.size
    radii = range(int(widths.max()) + 1)
    probes_at = [_probes(tables.bounds, r) for r in radii]
    expected_at = np.array([_expected_codes(tables, r) for r in radii])
    probe_cost, candidate_cost = _costs()
    # remaining[r, s]: the cost of the radii s + 1 .. r, were the codes spread evenly
    ahead = np.cumsum(np.array(probes_at) * probe_cost + expected_at * candidate_cost)
    remaining = np.maximum(ahead[:, None] - ahead[None, :], 0)
    for radius in radii:
        probes = probes_at[radius]
        cost[open_rows] += probes * probe_cost
        # Known before looking: were the codes spread evenly, these queries' buckets would cost more
        # than a scan. They go to the scan (an estimate: it decides speed, not results).
        far = cost[open_rows] + expected_at[radius] * candidate_cost > n
        to_scan.append(open_rows[far])
        open_rows = open_rows[~far]
        chunk = max(1, MAX_PROBES_PER_CHUNK // probes)
        still_open = []
        for start in range(0, open_rows.size, chunk):
            rows = open_rows[start : start + chunk]
            done, far = _probe_radius(tables, queries, query_keys, rows, radius, best_d, best_p, cost, candidate_cost)
            finished.append(rows[done])
            to_scan.append(rows[far])
            still_open.append(rows[~done & ~far])
        open_rows = np.concatenate(still_open) if still_open else open_rows[:0]
        # A query with k codes found: its k-th distance so far bounds the radius it still needs; where
        # even the uniform spread's share of those buckets would cost more than a scan, scan it now,
        # before paying for the radii on the way (random codes end up here, real images' seldom).
        kth = best_d[open_rows, k - 1]
        needed = np.minimum(kth // m, len(remaining) - 1)
        far = (kth <= tables.n_bits) & (cost[open_rows] + remaining[needed, radius] > n)
        to_scan.append(open_rows[far])
        open_rows = open_rows[~far]
        if open_rows.size == 0:
            break
    rows = np.concatenate(finished) if finished else open_rows[:0]
    dist_out[rows], pos_out[rows] = best_d[rows], best_p[rows]
    rows = np.concatenate(to_scan)
    if rows.size:
        if scan is None:
            from .search import knn_search  # noqa: PLC0415

            scan = lambda q, k: knn_search(q, tables.codes, k)  # noqa: E731
        dist_out[rows], pos_out[rows] = scan(queries[rows], k)


def _probe_radius(tables: MultiIndexTables, queries, query_keys, rows, radius, best_d, best_p, cost, candidate_cost):
    """Probe substring distance ``radius`` for the queries ``rows``, one table at a time.

    Each query takes its tables in the order of how few codes their buckets hold. After ``j + 1``
    tables at this radius, every unseen code differs from the query in at least ``radius + 1`` bits
    on those substrings and ``radius`` on the others, so in at least ``m * radius + j + 1`` bits: the
    query is done once its k-th distance is no more than ``m * radius + j``. A code is counted only
    where it is first reached (its smallest substring distance, then the query's table order), so no
    code is counted twice and nothing needs deduplicating. Updates ``best_d``, ``best_p`` and
    ``cost`` in place; returns two boolean masks over ``rows``: done, and sent to the scan.
    """
    n, m = tables.codes.shape[0], len(tables.bounds) - 1
    k = best_d.shape[1]
    lanes = _lanes(tables.codes)
    lane_masks = _lane_masks(tables.bounds, 64 if lanes.dtype == np.uint64 else 32)
    query_lanes = _lanes(queries)[rows]
    ranges = {i: (lo, hi) for i, lo, hi in _bucket_ranges(tables, [key[rows] for key in query_keys], radius)}
    sizes = np.zeros((rows.size, m), np.int64)
    for i, (lo, hi) in ranges.items():
        sizes[:, i] = (hi - lo).sum(axis=1)
    order = np.argsort(sizes, axis=1, kind="stable")  # tables with no bucket this wide come first
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(m)[None, :], axis=1)
    rank = rank.astype(np.int32)
    done, far = np.zeros(rows.size, bool), np.zeros(rows.size, bool)
    for step in range(m):
        far |= ~done & (cost[rows] + sizes[np.arange(rows.size), order[:, step]] * candidate_cost > n)
        active = ~far & ~done
        if not active.any():
            break
        # the step's candidates, in groups of queries small enough to hold at once
        reading = np.flatnonzero(active)
        group = np.cumsum(sizes[reading, order[reading, step]]) // MAX_CANDIDATES_PER_STEP
        for part in np.split(reading, np.flatnonzero(np.diff(group)) + 1):
            found = _read_step(tables, lanes, lane_masks, query_lanes, ranges, order, rank, part, radius, step)
            if found:
                _merge(best_d, best_p, rows, *(np.concatenate(parts) for parts in zip(*found)), tables.n_bits, n)
        cost[rows[active]] += sizes[active, order[active, step]] * candidate_cost
        done |= active & (best_d[rows, k - 1] <= m * radius + step)
    return done, far


def _read_step(tables, lanes, lane_masks, query_lanes, ranges, order, rank, reading, radius, step):
    """The codes that the queries ``reading`` (indices into the chunk) first reach in their table
    number ``step`` at substring distance ``radius`` (``ranges``: table -> bucket bounds): a list of
    ``(local, distance, position)``, one per table read."""
    found = []
    tables_now = order[reading, step]
    for i in np.unique(tables_now):
        if int(i) not in ranges:  # a substring narrower than radius: nothing left in it
            continue
        chosen = reading[tables_now == i]
        lo, hi = ranges[int(i)]
        lo, hi = lo[chosen], hi[chosen]
        counts = (hi - lo).sum(axis=1)
        at = _gather_ranges(lo.ravel(), hi.ravel())  # places in table i's order
        if at.size == 0:
            continue
        codes = tables.ordered[i][at] if tables.ordered else lanes[tables.positions[i][at]]
        differ = codes ^ np.repeat(query_lanes[chosen], counts, axis=0)
        # Unused high bits are zero on both sides. Lane by lane: a row sum over two lanes was 5x slower.
        dist = popcount_host(differ[:, 0]).astype(np.int32)
        for lane in range(1, differ.shape[1]):
            dist += popcount_host(differ[:, lane])
        local, positions = np.repeat(chosen, counts), tables.positions[i][at]
        if radius or step:  # (at radius 0, every code in a query's first table is new)
            # A code is new here if no substring is closer than radius, and none at radius comes
            # earlier in this query's table order (at step 0 every other table comes later).
            new = np.ones(at.size, bool)
            for s, pairs in enumerate(lane_masks):
                if s == i:
                    continue
                part = sum(popcount_host(differ[:, lane] & mask).astype(np.int32) for lane, mask in pairs)
                if step == 0:
                    new &= part >= radius
                else:
                    new &= (part > radius) | ((part == radius) & (np.repeat(rank[chosen, s], counts) > step))
            keep = np.flatnonzero(new)
            local, dist, positions = local[keep], dist[keep], positions[keep]
        found.append((local, dist, positions))
    return found


def _merge(best_d, best_p, rows, local, dist, positions, n_bits, n):
    """Fold candidates ``(local, dist, positions)`` into the ``k`` best of ``best_d[rows]`` / ``best_p[rows]``
    (ordered by distance, then position; empty slots hold distance ``n_bits + 1`` and position
    ``n``, the database size). A histogram per query first drops candidates beyond its
    k-th distance, so only the few that can enter are sorted."""
    k = best_d.shape[1]
    if local.size == 0:
        return
    slots = n_bits + 2
    per_query = np.bincount(local, minlength=rows.size)
    receiving = np.flatnonzero(per_query)  # histograms only for queries with candidates
    slot = local if receiving.size == rows.size else (np.cumsum(per_query > 0) - 1)[local]
    counts = np.bincount(slot * slots + dist, minlength=receiving.size * slots).reshape(receiving.size, slots)
    reach = np.cumsum(counts, axis=1) >= k
    kth_new = np.where(reach[:, -1], np.argmax(reach, axis=1), slots)
    keep = np.flatnonzero(dist <= np.minimum(best_d[rows[receiving], k - 1], kth_new)[slot])
    if keep.size == 0:
        return
    local, dist, positions = (np.asarray(a[keep], np.int64) for a in (local, dist, positions))
    touched = np.flatnonzero(np.bincount(local, minlength=rows.size))
    shift_d = max(1, int(n).bit_length())  # empty slots hold position n, past every code
    shift_q = shift_d + (n_bits + 1).bit_length()
    keys = np.concatenate([(np.repeat(touched, k) << shift_q) | (best_d[rows[touched]].ravel() << shift_d)
                           | best_p[rows[touched]].ravel(),
                           (local << shift_q) | (dist << shift_d) | positions])
    keys.sort()
    first = np.searchsorted(keys >> shift_q, touched)
    chosen = keys[first[:, None] + np.arange(k)]
    best_d[rows[touched]] = (chosen >> shift_d) & ((1 << (shift_q - shift_d)) - 1)
    best_p[rows[touched]] = chosen & ((1 << shift_d) - 1)


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
