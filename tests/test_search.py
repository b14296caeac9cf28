import numpy as np
import pytest

from conftest import oracle_knn, random_codes
from jaxhash import pack_bits, search
from jaxhash.checks import MAX_BITS
from jaxhash.search import default_layout, knn_search, knn_search_host, prepare_database, radius_search, rerank_euclidean, search_and_rerank


def search_by(selection, q, db, k, **options):
    """knn_search with a selection and a layout ("numpy bytes", "topk words", ...), or the NumPy host scan ("host")."""
    if selection == "host":
        return knn_search_host(q, db, k)
    selection, layout = selection.split()
    return knn_search(q, prepare_database(db, layout=layout), k, selection=selection, **options)


SELECTIONS = ["numpy words", "numpy bytes", "topk words", "topk bytes", "host"]


@pytest.mark.parametrize(
    "n, n_bits, k, distinct",
    [
        (1, 32, 5, None),  # fewer codes than k
        (100, 64, 10, None),
        (100, 64, 10, 3),  # heavy ties: tie order must be by position
        (5000, 48, 7, None),
        (20000, 64, 100, None),  # grouped two-pass path
        (20000, 64, 100, 40),  # grouped path with many ties
        (20011, 128, 33, None),  # n not a multiple of the group layout
        (9000, 256, 50, 500),  # 16-bit group keys
    ],
)
@pytest.mark.parametrize("selection", SELECTIONS)
def test_knn_equals_numpy_oracle(rng, n, n_bits, k, distinct, selection):
    db, db_bits = random_codes(rng, n, n_bits, distinct)
    q, q_bits = random_codes(rng, 37, n_bits)
    if distinct:
        q[:5], q_bits[:5] = db[:5], db_bits[:5]  # exact matches with many equal copies
    dist, pos = search_by(selection, q, db, k, block_size=16)
    want_d, want_p = oracle_knn(q_bits, db_bits, k)
    assert dist.shape == pos.shape == (37, min(k, n))  # k beyond the database is clamped
    np.testing.assert_array_equal(dist, want_d)
    np.testing.assert_array_equal(pos, want_p)


@pytest.mark.parametrize(
    "n, n_bits",
    [
        (300, 224), (300, 225), (300, 255),  # last uint8 key width (7 words), first uint16 (8 words)
        (5000, 4096),  # 128 words: more groups than float32 keys allow at group size 1
        (8180, 2048), (3000, 8192),
        (40, 65504), (40, 65505), (20, 70_000),  # last uint16 key width, first int32
        (3, MAX_BITS),
    ],
)
@pytest.mark.parametrize("selection", SELECTIONS)
def test_wide_codes_equal_the_oracle(rng, n, n_bits, selection):
    db, db_bits = random_codes(rng, n, n_bits, distinct=max(2, n // 3))
    q, q_bits = random_codes(rng, 3, n_bits)
    q[:1], q_bits[:1] = db[:1], db_bits[:1]
    k = min(n, 7)
    dist, pos = search_by(selection, q, db, k)
    want_d, want_p = oracle_knn(q_bits, db_bits, k)
    np.testing.assert_array_equal(dist, want_d)
    np.testing.assert_array_equal(pos, want_p)


def test_host_scans_count_bits_without_numpy_2(rng, monkeypatch):
    db, db_bits = random_codes(rng, 500, 96, distinct=60)
    q, q_bits = random_codes(rng, 4, 96)
    monkeypatch.delattr(np, "bitwise_count", raising=False)  # NumPy 1.26: a byte table instead
    dist, pos = knn_search_host(q, db, 9)
    want_d, want_p = oracle_knn(q_bits, db_bits, 9)
    np.testing.assert_array_equal(dist, want_d)
    np.testing.assert_array_equal(pos, want_p)
    from jaxhash.mih import build_tables, mih_knn_search

    # database codes as queries: close neighbours, so the multi-index probes and verifies with the same count
    db, db_bits = random_codes(rng, 5000, 96)  # enough codes that probing costs less than a scan
    dist, pos = mih_knn_search(db[:4], build_tables(db, 96, 3), 9)
    want_d, want_p = oracle_knn(db_bits[:4], db_bits, 9)
    np.testing.assert_array_equal(dist, want_d)
    np.testing.assert_array_equal(pos, want_p)
    with pytest.raises(ValueError, match="query codes"):
        knn_search_host(q[:, :2], db, 3)


def test_the_layout_follows_the_processor_unless_chosen(monkeypatch, rng):
    import jax

    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    monkeypatch.setenv("JAXHASH_SEARCH_LAYOUT", "bytes")
    assert default_layout() == "bytes" and prepare_database(random_codes(rng, 40, 64)[0]).planes.dtype == np.uint8
    monkeypatch.setenv("JAXHASH_SEARCH_LAYOUT", "nibbles")
    with pytest.raises(ValueError, match="JAXHASH_SEARCH_LAYOUT must be one of words, bytes"):
        default_layout()
    monkeypatch.delenv("JAXHASH_SEARCH_LAYOUT")
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=AVX512 --xla_cpu_max_isa=avx2")  # the last flag counts: AVX2
    assert default_layout(128) == "bytes" and default_layout(256) == "bytes" and default_layout(257) == "words"
    with pytest.raises(ValueError, match="layout must be one of words, bytes"):
        prepare_database(random_codes(rng, 40, 64)[0], layout="nibbles")


@pytest.mark.parametrize("n_bits", [224, 248, 256])
@pytest.mark.parametrize("layout", ["words", "bytes"])
def test_the_farthest_codes_keep_their_distance(rng, n_bits, layout):
    db, db_bits = random_codes(rng, 300, n_bits)
    q_bits = ~db_bits[:4]  # complements: every bit differs from one database code
    q = np.array(pack_bits(q_bits))
    dist, pos = knn_search(q, prepare_database(db, layout=layout), 300)
    want_d, want_p = oracle_knn(q_bits, db_bits, 300)
    assert dist.max() == n_bits
    np.testing.assert_array_equal(dist, want_d)
    np.testing.assert_array_equal(pos, want_p)


def test_saturated_group_minima_send_their_queries_to_an_exact_scan(rng, monkeypatch):
    """256-bit codes in bytes count to 255 at most: a query that lies 255 bits or more from nearly every
    code is answered by the exact scan, the others in its block by the two passes."""
    base = rng.integers(0, 2, 256).astype(bool)
    db_bits = np.repeat(base[None], 20000, axis=0)
    db_bits[np.arange(0, 20000, 2), rng.integers(0, 256, 10000)] ^= True  # every other code one bit away
    db_bits[7777] = rng.integers(0, 2, 256)  # one code anywhere: the nearest to ~base, far closer than 255
    q_bits = np.stack([~base, base, rng.integers(0, 2, 256).astype(bool), ~db_bits[7777]])
    db, q = np.array(pack_bits(db_bits)), np.array(pack_bits(q_bits))
    scanned = []
    monkeypatch.setattr(search, "knn_search_host", lambda q, db, k: scanned.append(len(q)) or knn_search_host(q, db, k))
    for k in (1, 10):
        dist, pos = knn_search(q, prepare_database(db, layout="bytes"), k)
        want_d, want_p = oracle_knn(q_bits, db_bits, k)
        np.testing.assert_array_equal(dist, want_d)
        np.testing.assert_array_equal(pos, want_p)
    assert dist[0, 0] < 255 <= dist[0, 1] and dist[1, 0] == 0 and dist[3].max() < 255
    assert scanned == [1]  # only at k = 10, only the query with codes 255 bits or more away among its 10 nearest
    scanned.clear()
    small = prepare_database(db[:9000], layout="bytes")  # 563 groups of 16, padded to 576
    dist, pos = knn_search(q[1:4], small, 570)  # padding groups are chosen, but every k-th distance is below 255
    want_d, want_p = oracle_knn(q_bits[1:4], db_bits[:9000], 570)
    np.testing.assert_array_equal(dist, want_d)
    np.testing.assert_array_equal(pos, want_p)
    assert scanned == []


def test_few_queries_meet_few_compiled_shapes(rng, monkeypatch):
    """Query counts below a block are padded to powers of two (at least 4): a caller whose counts
    vary, like a multi-index's far queries, compiles a handful of shapes; results are unchanged."""
    import jaxhash.search as search

    db, db_bits = random_codes(rng, 3000, 64)
    database = prepare_database(db)
    shapes = []
    original = search._knn_block_numpy
    monkeypatch.setattr(search, "_knn_block_numpy", lambda chunk, *args: shapes.append(chunk.shape[0]) or original(chunk, *args))
    for count in range(1, 21):
        q, q_bits = random_codes(rng, count, 64)
        dist, pos = knn_search(q, database, 5, selection="numpy", block_size=256)
        want_d, want_p = oracle_knn(q_bits, db_bits, 5)
        np.testing.assert_array_equal(dist, want_d)
        np.testing.assert_array_equal(pos, want_p)
    assert sorted(set(shapes)) == [4, 8, 16, 32]


def test_wider_than_the_maximum_is_refused():
    from jaxhash import HashIndex

    with pytest.raises(ValueError, match=f"at most {MAX_BITS}"):
        HashIndex(MAX_BITS + 1)


def test_prepared_database_reused_across_calls(rng):
    db, db_bits = random_codes(rng, 12000, 64)
    prepared = prepare_database(db)
    for _ in range(2):
        q, q_bits = random_codes(rng, 5, 64)
        dist, pos = knn_search(q, prepared, 3)
        np.testing.assert_array_equal(pos, oracle_knn(q_bits, db_bits, 3)[1])


def test_equals_faiss_binary_flat(rng):
    faiss = pytest.importorskip("faiss")
    db, _ = random_codes(rng, 30000, 128, distinct=2000)
    q, _ = random_codes(rng, 50, 128)
    index = faiss.IndexBinaryFlat(128)
    index.add(db.view(np.uint8))
    fd, fi = index.search(q.view(np.uint8), 20)
    dist, pos = knn_search(q, db, 20)
    np.testing.assert_array_equal(dist, fd)
    # FAISS does not promise a tie order; the distances and the sets per distance must agree.
    for row in range(q.shape[0]):
        last = dist[row, -1]
        inner = dist[row] < last
        assert set(pos[row][inner]) == set(fi[row][inner])


def test_knn_rejects_bad_input(rng):
    db, _ = random_codes(rng, 10, 64)
    with pytest.raises(ValueError, match="k must be a positive"):
        knn_search(db[:1], db, 0)
    with pytest.raises(ValueError, match="same code length"):
        knn_search(np.zeros((1, 1), np.uint32), db, 1)
    with pytest.raises(TypeError, match="uint32"):
        knn_search(db.astype(np.int64), db, 1)
    with pytest.raises(ValueError, match="selection"):
        knn_search(db[:1], db, 1, selection="sort")


def test_radius_search_equals_oracle(rng):
    db, db_bits = random_codes(rng, 500, 16)
    q, q_bits = random_codes(rng, 9, 16)
    lims, dist, pos = radius_search(q, db, 5)
    full = (q_bits[:, None] != db_bits[None]).sum(-1)
    for i in range(q.shape[0]):
        want = np.flatnonzero(full[i] <= 5)
        want = want[np.argsort(full[i][want], kind="stable")]
        np.testing.assert_array_equal(pos[lims[i] : lims[i + 1]], want)
        np.testing.assert_array_equal(dist[lims[i] : lims[i + 1]], full[i][want])
    with pytest.raises(ValueError, match="radius"):
        radius_search(q, db, -1)


def test_rerank_by_euclidean_distance(rng):
    feats = rng.normal(size=(50, 8)).astype(np.float32)
    qf = rng.normal(size=(3, 8)).astype(np.float32)
    cand = np.array([[4, 9, 1, -1], [0, 1, 2, 3], [7, 7, 8, 10]])
    d, p = rerank_euclidean(qf, feats, cand, k=3)
    for i in range(3):
        valid = cand[i][cand[i] >= 0]
        e = np.linalg.norm(feats[valid] - qf[i], axis=1)
        order = np.argsort(e, kind="stable")[:3]
        np.testing.assert_array_equal(p[i], valid[order])
        np.testing.assert_allclose(d[i], e[order], rtol=1e-5)
    with pytest.raises(ValueError, match="NaN"):
        rerank_euclidean(np.full((3, 8), np.nan), feats, cand)


def test_two_stage_search_returns_true_euclidean_neighbours_within_shortlist(rng):
    from jaxhash import pack_bits

    feats = rng.normal(size=(400, 16)).astype(np.float32)
    codes = np.asarray(pack_bits(feats > 0))
    d, p = search_and_rerank(codes[:4], codes, feats[:4], feats, k=5, shortlist=400)
    exact = np.argsort(((feats[:4, None] - feats[None]) ** 2).sum(-1), axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(p, exact)  # a short-list of everything = exact Euclidean search
    assert (p[:, 0] == np.arange(4)).all() and np.allclose(d[:, 0], 0)


SHARDED_PROGRAM = """
import sys
import jax
import numpy as np
import pytest
from conftest import oracle_knn, random_codes
from jaxhash import HashIndex
from jaxhash.search import ShardedDatabase, shard_database, sharded_knn_search

devices = jax.devices()
assert len(devices) == int(sys.argv[1]), devices
rng = np.random.default_rng(0)
for n, n_bits, k, distinct in [(1003, 64, 10, None), (1003, 64, 10, 7), (20011, 128, 33, 300), (6, 32, 20, None)]:
    db, db_bits = random_codes(rng, n, n_bits, distinct)
    q, q_bits = random_codes(rng, 37, n_bits)
    q[:5], q_bits[:5] = db[:5], db_bits[:5]
    want_d, want_p = oracle_knn(q_bits, db_bits, min(k, n))
    dist, pos = sharded_knn_search(q, shard_database(db), k, block_size=16)
    np.testing.assert_array_equal(dist, want_d)
    np.testing.assert_array_equal(pos, want_p)

index = HashIndex(64)
db, _ = random_codes(rng, 5001, 64, 50)
index.add_with_ids(db, np.arange(5001) * 3)
flat = index.search(db[:20], 15)
index.shard()
for a, b in zip(index.search(db[:20], 15), flat):
    np.testing.assert_array_equal(a, b)
index.add(db[:7])  # still sharded, over the new contents
assert index.search(db[:1], 20)[1][0].tolist().count(0) == 1 and len(index.search(db[:1], 20)[1][0]) == 20

with pytest.raises(ValueError, match="not 'rows'"):
    shard_database(db, axis="rows", mesh=jax.sharding.Mesh(np.array(devices), ("codes",)))
if len(devices) == 4:
    grid = jax.sharding.Mesh(np.array(devices).reshape(2, 2), ("replica", "codes"))  # parts over one axis, copies over the other
    on_grid = HashIndex(64)
    on_grid.add_with_ids(db, np.arange(5001) * 3)
    for a, b in zip(on_grid.shard(grid).search(db[:20], 15), flat):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="3 codes cannot be split over the 4 devices"):
        shard_database(db[:3])
    growing, one = HashIndex(64).shard(), HashIndex(64)  # fewer codes than devices: one device until there are enough
    for add, remove in [(db[:3], None), (db[3:200], None), (None, np.arange(2, 200))]:
        for index_ in (growing, one):
            if add is not None:
                index_.add(add)
            else:
                index_.remove_ids(remove)
        for a, b in zip(growing.search(db[:5], 4), one.search(db[:5], 4)):
            np.testing.assert_array_equal(a, b)
        assert isinstance(growing._prepared, ShardedDatabase) == (growing.ntotal >= 4)  # sharded once every device has codes
print("ok")
"""


@pytest.mark.parametrize("devices", [1, 4])
def test_sharded_search_equals_one_device_search(devices):
    """Forced CPU devices: the device count is fixed when JAX starts, so each count runs in its own process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    result = subprocess.run([sys.executable, "-c", SHARDED_PROGRAM, str(devices)], capture_output=True, text=True, env=env,
                            cwd=Path(__file__).parent)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_euclidean_knn_equals_brute_force_across_database_blocks(rng):
    from jaxhash.search import euclidean_knn

    db = rng.integers(-3, 4, size=(1000, 6)).astype(np.float32)  # small integers: many exact ties
    queries = np.concatenate([db[:5], rng.normal(size=(40, 6)).astype(np.float32)])
    d2 = ((queries[:, None, :] - db[None]) ** 2).sum(-1)
    want = np.argsort(d2, axis=1, kind="stable")[:, :25]
    dist, pos = euclidean_knn(queries, db, 25, block_size=16, database_block=300)
    np.testing.assert_array_equal(pos, want)
    np.testing.assert_allclose(dist, np.sqrt(np.take_along_axis(d2, want, axis=1)), rtol=1e-5, atol=1e-5)
    assert (dist[:5, 0] == 0).all() and (pos[:5, 0] == np.arange(5)).all()
    with pytest.raises(ValueError, match="m=1001 is more than the 1000 database rows"):
        euclidean_knn(queries, db, 1001)
    with pytest.raises(ValueError, match="same model"):
        euclidean_knn(queries[:, :3], db, 3)
