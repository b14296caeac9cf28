"""Multi-index hashing: exact k-NN and radius search equal to the linear scan, ties and order included."""
import numpy as np
import pytest

from conftest import oracle_knn, random_codes
from jaxhash import pack_bits
from jaxhash.mih import build_tables, default_substrings, mih_knn_search, mih_radius_search, substring_bounds
from jaxhash.search import radius_search


@pytest.mark.parametrize(
    "n, n_bits, k, distinct, m",
    [
        (1000, 64, 10, None, None),
        (1000, 64, 10, 30, 4),  # heavy ties
        (3000, 50, 7, None, 3),  # substrings of 16/17 bits across word boundaries
        (500, 128, 20, 100, 5),
        (5, 32, 10, None, 2),  # fewer codes than k
        (2000, 8, 50, None, 8),  # one bit per substring
        (777, 33, 5, None, 2),
        (400, 96, 9, 40, 4),  # three words: 32-bit lanes, codes read through the positions
        (2000, 64, 10, 100, 2),  # 32-bit substrings: buckets found by binary search
    ],
)
@pytest.mark.parametrize("probe_all", [False, True])
def test_knn_and_radius_search_equal_the_linear_scan(rng, monkeypatch, n, n_bits, k, distinct, m, probe_all):
    if probe_all:  # no query leaves for the scan, however far: the probing itself is checked
        monkeypatch.setattr("jaxhash.mih.PROBE_COST", 0)
        monkeypatch.setattr("jaxhash.mih.CANDIDATE_COST", 0)
    wide = n_bits / (m or default_substrings(n_bits, n)) > 16
    if probe_all and wide:  # a few codes, many copies each: every query's k-th neighbour is close
        distinct = 10
    db, db_bits = random_codes(rng, n, n_bits, distinct)
    q, q_bits = random_codes(rng, 23, n_bits)
    q[:5], q_bits[:5] = db[:5], db_bits[:5]
    if probe_all and wide:
        # A random query would probe every radius of these wide substrings (millions of buckets):
        # queries a few bits from the codes stop early and still cross substring radii.
        q_bits[5:] = db_bits[rng.integers(0, n, 18)] ^ (rng.random((18, n_bits)) < 3 / n_bits)
        q = np.array(pack_bits(q_bits))
    tables = build_tables(db, n_bits, m)
    dist, pos = mih_knn_search(q, tables, k)
    want_d, want_p = oracle_knn(q_bits, db_bits, min(k, n))
    np.testing.assert_array_equal(dist, want_d)
    np.testing.assert_array_equal(pos, want_p)
    for radius in (0, 3, min(n_bits // 4, 12)):
        for got, want in zip(mih_radius_search(q, tables, radius), radius_search(q, db, radius)):
            np.testing.assert_array_equal(got, want)


def test_clustered_codes_are_found_by_reading_few_of_them(rng, monkeypatch):
    """Near-duplicates (real images' codes) stop the search at a small substring radius, exactly."""
    import jaxhash.mih as mih
    from jaxhash.search import knn_search

    centres, _ = random_codes(rng, 50, 64)
    flips = lambda n: np.packbits(rng.random((n, 64)) < 0.03, axis=1, bitorder="little").view(np.uint32)  # noqa: E731
    db = np.repeat(centres, 400, axis=0) ^ flips(20_000)
    queries = centres[:20] ^ flips(20)
    tables = build_tables(db, 64, 4)
    # codes, positions, codes in bucket order, bucket offsets
    assert tables.bytes_per_code == 8 + 4 * 4 + 4 * 8 + 4 * (2**16 + 1) * 4 / 20_000
    # small limits: queries are read in several groups per table step and chunks per radius
    monkeypatch.setattr(mih, "MAX_CANDIDATES_PER_STEP", 1000)
    monkeypatch.setattr(mih, "MAX_PROBES_PER_CHUNK", 200)
    probed = []
    original = mih._bucket_ranges
    monkeypatch.setattr(mih, "_bucket_ranges", lambda *args: probed.append(args[-1]) or original(*args))
    for k in (1, 10, 100):
        for got, want in zip(mih_knn_search(queries, tables, k), knn_search(queries, db, k)):
            np.testing.assert_array_equal(got, want)
    assert max(probed) <= 2  # close codes are found at substring radius 0, 1 or 2


def test_an_empty_database_and_wide_codes(rng, monkeypatch):
    tables = build_tables(np.zeros((0, 2), np.uint32), 64, 4)
    dist, pos = mih_knn_search(np.zeros((3, 2), np.uint32), tables, 5)
    assert dist.shape == pos.shape == (3, 0)
    # 1024-bit codes, 64 substrings, probed without the scan: one query stays quick
    monkeypatch.setattr("jaxhash.mih.PROBE_COST", 0)
    monkeypatch.setattr("jaxhash.mih.CANDIDATE_COST", 0)
    db, db_bits = random_codes(rng, 2000, 1024, 50)
    q_bits = db_bits[:1] ^ (rng.random((1, 1024)) < 0.03)
    got = mih_knn_search(np.array(pack_bits(q_bits)), build_tables(db, 1024, 64), 5)
    for a, b in zip(got, oracle_knn(q_bits, db_bits, 5)):
        np.testing.assert_array_equal(a, b)


def test_substring_choices_are_explained():
    assert substring_bounds(64, 4) == (0, 16, 32, 48, 64)
    assert substring_bounds(10, 3) == (0, 3, 6, 10)
    assert default_substrings(64, 10_000_000) == 3 and default_substrings(64, 2**16) == 4
    assert default_substrings(256, 1000) == 26 and default_substrings(8, 10**9) == 1
    with pytest.raises(ValueError, match="use at most 16"):
        substring_bounds(16, 17)
    with pytest.raises(ValueError, match="use at least 4"):
        substring_bounds(128, 3)
    with pytest.raises(ValueError, match="positive integer"):
        substring_bounds(64, 0)
    with pytest.raises(TypeError, match="build_tables"):
        mih_knn_search(np.zeros((1, 2), np.uint32), np.zeros((5, 2), np.uint32), 3)


def test_costs_follow_the_scan_the_processor_runs(monkeypatch):
    from jaxhash import mih, search

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setattr(search, "_cpu_flags", lambda: frozenset({"avx2"}))
    assert mih._costs() == (mih.PROBE_COST, mih.CANDIDATE_COST)
    monkeypatch.setattr(search, "_cpu_flags", lambda: frozenset({"avx2", "avx512_vpopcntdq"}))
    scale = mih.VECTOR_POPCOUNT_SCAN_SPEEDUP
    assert mih._costs() == (mih.PROBE_COST * scale, mih.CANDIDATE_COST * scale)
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=AVX2")  # XLA held to AVX2 scans as slowly as an AVX2 CPU
    assert mih._costs() == (mih.PROBE_COST, mih.CANDIDATE_COST)
