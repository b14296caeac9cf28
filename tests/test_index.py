import hashlib
import os

import numpy as np
import pytest

from conftest import oracle_knn, random_codes
import jaxhash
from jaxhash import HashIndex, read_index, write_index
from jaxhash.data import DatasetSource, FolderSource
from jaxhash.index import IndexFormatError, ModelMismatchError, ModelRef, bytes_to_codes, codes_to_bytes


@pytest.fixture
def filled(rng):
    codes, bits = random_codes(rng, 300, 64, distinct=60)
    index = HashIndex(64)
    index.add(codes)
    return index, codes, bits


def test_add_and_search_equal_oracle(filled, rng):
    index, codes, bits = filled
    q, q_bits = random_codes(rng, 8, 64)
    dist, ids = index.search(q, 10)
    want_d, want_p = oracle_knn(q_bits, bits, 10)
    np.testing.assert_array_equal(dist, want_d)
    np.testing.assert_array_equal(ids, want_p)
    assert ids.dtype == np.int64 and index.ntotal == 300


def test_add_with_ids_and_remove_ids(rng):
    codes, bits = random_codes(rng, 50, 40)
    index = HashIndex(40)
    ids = np.arange(1000, 1050)
    index.add_with_ids(codes, ids)
    _, got = index.search(codes[:3], 1)
    assert got[:, 0].tolist() == [1000, 1001, 1002]
    assert index.remove_ids([1000, 1001, 999999]) == 2
    assert index.ntotal == 48
    _, got = index.search(codes[:1], 48)
    assert 1000 not in got and 1001 not in got
    assert index.add(codes[:2]).tolist() == [1050, 1051]  # ids continue after the largest
    with pytest.raises(ValueError, match="already in the index"):
        index.add_with_ids(codes[:1], [1002])
    with pytest.raises(ValueError, match="duplicates"):
        index.add_with_ids(codes[:2], [5, 5])


def test_k_beyond_the_index_is_clamped(rng):
    codes, _ = random_codes(rng, 3, 32)
    index = HashIndex(32)
    index.add(codes)
    dist, ids = index.search(codes[:1], 5)
    assert ids.shape == (1, 3) and sorted(ids[0].tolist()) == [0, 1, 2] and dist[0, 0] == 0
    dist, ids = index.search(codes[:2], 300_000_000)  # would be 7 GB if allocated
    assert ids.shape == (2, 3)


def test_empty_index_warns(rng):
    codes, _ = random_codes(rng, 2, 32)
    with pytest.warns(UserWarning, match="empty"):
        dist, ids = HashIndex(32).search(codes, 3)
    assert ids.shape == (2, 0) and dist.shape == (2, 0)


def test_empty_index_round_trips(tmp_path):
    """An index is written before anything is added to it (a new index of the web service)."""
    from jaxhash.index import PartitionedIndex

    for index in (HashIndex(64, feature_dim=5), PartitionedIndex(40, feature_dim=3)):
        write_index(index, tmp_path / "empty.jhx")
        back = read_index(tmp_path / "empty.jhx")
        assert type(back) is type(index) and back.ntotal == 0 and back.features.shape == (0, index.feature_dim)
        back.add_with_ids(np.zeros((2, index.n_words), np.uint32), np.array([7, 9]), features=np.ones((2, index.feature_dim), np.float32),
                          **({"partitions": np.array([0, 1])} if isinstance(index, PartitionedIndex) else {}))
        assert back.ntotal == 2


def test_wrong_code_length_is_refused(filled):
    index, _, _ = filled
    with pytest.raises(ValueError, match="64-bit codes"):
        index.search(np.zeros((1, 4), np.uint32), 1)
    with pytest.raises(ValueError, match="64-bit codes"):
        index.add(np.zeros((1, 1), np.uint32))
    with pytest.raises(ValueError, match="k must be"):
        index.search(np.zeros((1, 2), np.uint32), -3)


def test_range_search(filled, rng):
    index, codes, bits = filled
    lims, dist, ids = index.range_search(codes[:4], 3)
    full = (bits[:4, None] != bits[None]).sum(-1)
    for i in range(4):
        assert sorted(ids[lims[i] : lims[i + 1]].tolist()) == np.flatnonzero(full[i] <= 3).tolist()


def test_write_read_round_trip(filled, tmp_path, rng):
    index, codes, _ = filled
    index.remove_ids([3, 4])
    index.metadata["paths"] = ["a.jpg", "b.jpg"]
    path = write_index(index, tmp_path / "sub" / "codes.jhx")
    again = read_index(path)
    assert again.n_bits == 64 and again.ntotal == index.ntotal and again.metadata == index.metadata
    np.testing.assert_array_equal(again.ids, index.ids)
    q, _ = random_codes(rng, 5, 64)
    for a, b in zip(index.search(q, 7), again.search(q, 7)):
        np.testing.assert_array_equal(a, b)


def test_truncated_or_tampered_files_are_detected(filled, tmp_path):
    index, _, _ = filled
    path = write_index(index, tmp_path / "i.jhx")
    data = path.read_bytes()
    (tmp_path / "short.jhx").write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFormatError, match="damaged"):
        read_index(tmp_path / "short.jhx")
    tampered = bytearray(data)
    tampered[200] ^= 1
    (tmp_path / "bad.jhx").write_bytes(bytes(tampered))
    with pytest.raises(IndexFormatError, match="checksum"):
        read_index(tmp_path / "bad.jhx")
    (tmp_path / "other.jhx").write_bytes(b"not an index at all")
    with pytest.raises(IndexFormatError, match="not a jaxhash index"):
        read_index(tmp_path / "other.jhx")
    newer = bytearray(data)
    newer[8] = 99  # the version field (after the 8 magic bytes): damaged, unless the checksum says it was written so
    (tmp_path / "flipped.jhx").write_bytes(bytes(newer))
    with pytest.raises(IndexFormatError, match="damaged .*format number 99 and a checksum that does not match"):
        read_index(tmp_path / "flipped.jhx")
    newer[-32:] = hashlib.sha256(bytes(newer[:-32])).digest()
    (tmp_path / "newer.jhx").write_bytes(bytes(newer))
    with pytest.raises(IndexFormatError, match="uses index format 99; .*upgrade jaxhash"):
        read_index(tmp_path / "newer.jhx")
    with pytest.raises(FileNotFoundError, match="jaxhash index"):
        read_index(tmp_path / "missing.jhx")


def test_crash_during_write_keeps_previous_file(filled, tmp_path, monkeypatch):
    index, _, _ = filled
    path = write_index(index, tmp_path / "i.jhx")
    before = path.read_bytes()
    index.add(index.codes[:10])

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_index(index, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["i.jhx"]  # no temporary file left behind
    assert read_index(path).ntotal == 300


def test_bytes_conversion_round_trip(rng):
    codes, _ = random_codes(rng, 6, 72)
    raw = codes_to_bytes(codes, 72)
    assert raw.shape == (6, 9)
    np.testing.assert_array_equal(bytes_to_codes(raw, 72), codes)


def test_faiss_conversion_round_trip(filled, rng):
    faiss = pytest.importorskip("faiss")
    index, _, _ = filled
    index.remove_ids([0])
    fidx = index.to_faiss()
    assert isinstance(fidx, faiss.IndexBinaryIDMap) and fidx.ntotal == index.ntotal
    q, _ = random_codes(rng, 6, 64)
    fd, _ = fidx.search(codes_to_bytes(q, 64), 5)
    d, _ = index.search(q, 5)
    np.testing.assert_array_equal(fd, d)
    back = HashIndex.from_faiss(fidx)
    np.testing.assert_array_equal(back.codes, index.codes)
    np.testing.assert_array_equal(back.ids, index.ids)
    flat = faiss.IndexBinaryFlat(64)
    flat.add(codes_to_bytes(index.codes, 64))
    assert HashIndex.from_faiss(flat).ntotal == index.ntotal
    with pytest.raises(ValueError, match="multiple of 8"):
        HashIndex(12).to_faiss()


def test_source_and_model_are_stored_in_the_header(filled, tmp_path, rng):
    index, codes, _ = filled
    images = rng.integers(0, 256, (50, 4, 4, 1)).astype(np.uint8)
    hasher = jaxhash.LSH(n_bits=64, seed=0).fit(images)
    index.source = FolderSource("/photos", tuple(f"c{i % 3}/{i}.jpg" for i in range(index.ntotal)))
    index.model = ModelRef.of(hasher, tmp_path / "model")
    again = read_index(write_index(index, tmp_path / "i.jhx"))
    assert again.source == index.source and again.model == index.model
    again.check_model(hasher)
    other = jaxhash.LSH(n_bits=64, seed=1).fit(images)
    with pytest.raises(ModelMismatchError, match=r"built by the lsh 64-bit model .* from .*model, not by the given lsh model"):
        again.check_model(other)
    with pytest.raises(ModelMismatchError, match="64-bit codes but the model makes 32-bit"):
        again.check_model(jaxhash.LSH(n_bits=32).fit(images))


def write_v1(path, codes, metadata):
    """A version-1 file as jaxhash 0.1 wrote it (no source or model records)."""
    import hashlib
    import json
    import struct

    header = json.dumps({"format": "jaxhash-index", "n_bits": 64, "n_words": 2, "ntotal": len(codes), "metadata": metadata}).encode()
    body = struct.pack("<8sII", b"JAXHASH\0", 1, len(header)) + header + codes.astype("<u4").tobytes()
    body += np.arange(len(codes), dtype="<i8").tobytes()
    path.write_bytes(body + hashlib.sha256(body).digest())


def test_version_1_files_still_read(filled, tmp_path):
    _, codes, _ = filled
    write_v1(tmp_path / "old.jhx", codes, {"model": "/m", "root": "/photos", "paths": ["a/1.png"] * len(codes)})
    old = read_index(tmp_path / "old.jhx")
    assert old.ntotal == len(codes) and old.model is None and old.source == FolderSource("/photos", ("a/1.png",) * len(codes))
    np.testing.assert_array_equal(old.codes, codes)
    write_v1(tmp_path / "old2.jhx", codes, {"data": "mnist", "protocol": "1k", "seed": 0})
    assert read_index(tmp_path / "old2.jhx").source == DatasetSource("mnist", None, "database", "1k", 0, shuffle_official=False)


def test_partitioned_index_equals_a_flat_search_within_the_chosen_partitions(rng, tmp_path):
    from jaxhash.index import PartitionedIndex

    codes, bits = random_codes(rng, 600, 32, distinct=100)
    parts = rng.integers(0, 6, 600)
    feats = rng.normal(size=(600, 8)).astype(np.float32)
    index = PartitionedIndex(32, feature_dim=8)
    index.add(codes, features=feats, partitions=parts)
    q, q_bits = random_codes(rng, 9, 32)
    chosen = np.stack([rng.integers(0, 6, 9), rng.integers(0, 6, 9)], axis=1)
    dist, ids = index.search(q, 12, chosen)
    for r in range(9):
        members = np.flatnonzero(np.isin(parts, chosen[r]))
        d = (q_bits[r][None] != bits[members]).sum(-1)
        order = members[np.lexsort((members, d))][:12]
        np.testing.assert_array_equal(ids[r, : len(order)], order)
        np.testing.assert_array_equal(dist[r, : len(order)], np.sort(d)[:12])
    np.testing.assert_array_equal(index.search(q, 5)[1], HashIndex.search(index, q, 5)[1])  # no partitions: flat
    again = read_index(write_index(index, tmp_path / "p.jhx"))
    assert isinstance(again, PartitionedIndex) and again.feature_dim == 8
    np.testing.assert_array_equal(again.partitions, parts)
    np.testing.assert_array_equal(again.features, feats)
    np.testing.assert_array_equal(again.search(q, 12, chosen)[1], ids)
    rd, rids = again.search_rerank(q, feats[:9], 4, shortlist=40, query_partitions=chosen)
    assert rd.shape == (9, 4) and (np.diff(rd, axis=1) >= 0).all()
    index.remove_ids(ids[0, :3])
    assert index.partitions.shape == (597,) and index.features.shape == (597, 8)
    with pytest.raises(ValueError, match="pass partitions"):
        index.add(codes[:1], features=feats[:1])
    with pytest.raises(ValueError, match="pass features"):
        index.add(codes[:1], partitions=[0])


def test_two_stage_search_reranks_the_shortlist(rng):
    codes, _ = random_codes(rng, 300, 16)
    feats = rng.normal(size=(300, 5)).astype(np.float32)
    index = HashIndex(16, feature_dim=5)
    index.add(codes, features=feats)
    dist, ids = index.search_rerank(codes[:4], feats[:4], 3, shortlist=300)  # a short-list of everything: exact Euclidean
    exact = np.argsort(((feats[:4, None] - feats[None]) ** 2).sum(-1), axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(ids, exact)
    with pytest.raises(ValueError, match="keeps no features"):
        HashIndex(16).search_rerank(codes[:1], feats[:1], 3)


def test_multi_index_answers_as_the_flat_index_and_round_trips(filled, tmp_path, rng, monkeypatch):
    from jaxhash import MultiIndexHashIndex
    from jaxhash import index as index_module

    flat, codes, _ = filled
    multi = MultiIndexHashIndex(64, substrings=4, metadata={"note": "mih"})
    multi.add(codes)
    queries = np.concatenate([codes[:5], random_codes(rng, 10, 64)[0]])
    for got, want in zip(multi.search(queries, 12), flat.search(queries, 12)):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(multi.range_search(queries, 20), flat.range_search(queries, 20)):
        np.testing.assert_array_equal(got, want)
    multi.remove_ids(np.arange(0, 300, 3))  # the tables follow the contents
    flat.remove_ids(np.arange(0, 300, 3))
    np.testing.assert_array_equal(multi.search(queries, 7)[1], flat.search(queries, 7)[1])
    again = read_index(write_index(multi, tmp_path / "m.jhx"))
    assert isinstance(again, MultiIndexHashIndex) and again.substrings == 4 and again.metadata == {"note": "mih"}
    np.testing.assert_array_equal(again.search(queries, 7)[1], flat.search(queries, 7)[1])
    assert type(read_index(write_index(flat, tmp_path / "f.jhx"))) is HashIndex
    monkeypatch.setattr(index_module, "FORMAT_VERSION", 2)  # the jaxhash before multi-indexes
    with pytest.raises(IndexFormatError, match="uses index format 3; this jaxhash reads up to 2: upgrade jaxhash"):
        read_index(tmp_path / "m.jhx")
    read_index(tmp_path / "f.jhx")  # flat indexes are still version 2
    with pytest.raises(ValueError, match="use at most 64"):
        MultiIndexHashIndex(64, substrings=65)
    with pytest.raises(TypeError, match="shard a flat HashIndex"):
        multi.shard()


def test_an_index_takes_a_fitted_hasher_as_its_model_and_refuses_what_is_not_one(tmp_path, rng):
    features = rng.normal(size=(200, 20)).astype(np.float32)
    hasher = jaxhash.ITQ(16, seed=0).fit(features)
    index = HashIndex(16, model=hasher)
    index.add(hasher.encode(features))
    write_index(index, tmp_path / "m.jhx")
    assert read_index(tmp_path / "m.jhx").model == ModelRef.of(hasher)
    with pytest.raises(ValueError, match="makes 16-bit codes, not the index's 64"):
        HashIndex(64, model=hasher)
    with pytest.raises(TypeError, match="model must be a fitted hasher or a ModelRef"):
        HashIndex(16, model="itq")
    with pytest.raises(TypeError, match="check_model takes the fitted hasher"):
        index.check_model("itq")
    with pytest.raises(TypeError, match="write_index writes a HashIndex"):
        write_index(np.zeros(3), tmp_path / "x.jhx")
