"""A FAISS-like index over packed binary codes, and its on-disk format.

``HashIndex`` keeps codes in memory as a ``(ntotal, n_words)`` uint32 array with an int64 id per
code, and answers exact Hamming queries with :mod:`jaxhash.search`.

File format (version 2, all integers little-endian; version 3 for a multi-index)::

    magic      8 bytes   b"JAXHASH\\0"
    version    uint32    2, or 3 with "substrings"
    header_len uint32    length of the JSON header in bytes
    header     JSON      {"format": "jaxhash-index", "n_bits", "n_words", "ntotal", "metadata",
                          "source": where the images are (see jaxhash.data.source) or null,
                          "model": {"method", "n_bits", "fingerprint", "path"} or null,
                          "partitioned": bool, "feature_dim": int or null,
                          "substrings": int (MultiIndexHashIndex only; its tables are rebuilt on reading)}
    codes      ntotal * n_words uint32
    ids        ntotal int64
    partitions ntotal int32                 (PartitionedIndex only)
    features   ntotal * feature_dim float32 (when feature_dim is set)
    checksum   32 bytes  SHA-256 of every byte above

Version 1 files (no ``source`` or ``model``; a folder's ``root``/``paths`` or a data set's
``data``/``protocol``/``seed`` in ``metadata``) are still read.

Files are written to a temporary file in the same folder, flushed to disk and then renamed over
the target, so a crash mid-write leaves the previous file intact and never a partial one.
"""
from __future__ import annotations

import hashlib
import json
import struct
import sys
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .atomic import atomic_write
from .checks import MAX_BITS, check_codes, check_features, check_ids, check_k, check_n_bits, check_positive_int, n_words_for
from .data.source import ImageSource, source_from_json, source_from_legacy_metadata, source_to_json
from .mih import MultiIndexTables, build_tables, mih_knn_search, mih_radius_search, substring_bounds
from .search import (HOST_SEARCH_MAX_QUERIES, MISSING_DISTANCE, PackedDatabase, ShardedDatabase, check_mesh, default_mesh, knn_search, knn_search_host, prepare_database,
                     radius_search, rerank_euclidean, shard_database, sharded_knn_search)

__all__ = ["HashIndex", "PartitionedIndex", "MultiIndexHashIndex", "ModelRef", "ModelMismatchError", "write_index", "read_index", "IndexFormatError", "FORMAT_VERSION"]

MAGIC = b"JAXHASH\0"
# The newest this version reads; flat and partitioned indexes are still written as 2. Every format, newer ones
# included, ends in the SHA-256 of all bytes before it: that is how a newer file is told from a damaged one.
FORMAT_VERSION = 3
_MULTI_INDEX_VERSION = 3
_PREFIX = struct.Struct("<8sII")
_CHECKSUM_BYTES = 32


class IndexFormatError(ValueError):
    """The file is not a jaxhash index, is from a newer version, or is damaged."""


class ModelMismatchError(ValueError):
    """Query codes come from another model than the one that built the index."""


class ModelRef(NamedTuple):
    """The model that built an index: its method, code length, fingerprint and (if saved) folder."""

    method: str
    n_bits: int
    fingerprint: str
    path: str | None = None

    @classmethod
    def of(cls, hasher, path=None) -> "ModelRef":
        """Reference to a fitted hasher (``path``: the folder it was loaded from or saved to)."""
        return cls(hasher.method, int(hasher.n_bits), hasher.fingerprint(), None if path is None else str(Path(path).resolve()))

    def describe(self) -> str:
        where = f" from {self.path}" if self.path else ""
        return f"{self.method} {self.n_bits}-bit model {self.fingerprint[:12]}{where}"


def _model_ref(model, n_bits: int) -> ModelRef | None:
    """``model`` as a :class:`ModelRef` (a fitted hasher is referred to by :meth:`ModelRef.of`), of ``n_bits`` bits."""
    if model is None:
        return None
    if not isinstance(model, ModelRef):
        if not (hasattr(model, "fingerprint") and hasattr(model, "method")):
            raise TypeError(f"model must be a fitted hasher or a ModelRef (ModelRef.of(hasher, path)), got {type(model).__name__}")
        model = ModelRef.of(model)
    if int(model.n_bits) != n_bits:
        raise ValueError(f"the {model.describe()} makes {model.n_bits}-bit codes, not the index's {n_bits}")
    return model


class HashIndex:
    """Exact Hamming-distance index over ``n_bits``-bit packed codes (FAISS ``IndexBinaryFlat``-like).

    Attributes:
      n_bits: code length in bits; n_words: uint32 words per code.
      ntotal: number of stored codes.
      source: where the images of the entries are (:class:`jaxhash.data.DatasetSource` or
        :class:`jaxhash.data.FolderSource`, entry id = position in the source), or None.
      model: :class:`ModelRef` of the model that made the codes, or None; queries from another
        model are refused by :meth:`check_model`.
      metadata: any other JSON-serialisable dict saved with the index.
      feature_dim: with it, every entry also keeps a real-valued feature vector (float32) that
        :meth:`search_rerank` re-ranks a Hamming short-list by (two-stage search).
    """

    def __init__(self, n_bits: int, metadata: dict | None = None, source: ImageSource | None = None,
                 model: ModelRef | None = None, feature_dim: int | None = None):
        self.n_bits = check_n_bits(n_bits)
        self.n_words = n_words_for(self.n_bits)
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
        self.metadata = dict(metadata or {})
        self.source = source
        self.model = _model_ref(model, self.n_bits)
        self.feature_dim = None if feature_dim is None else check_positive_int(feature_dim, "feature_dim")
        self._codes = np.zeros((0, self.n_words), np.uint32)
        self._ids = np.zeros(0, np.int64)
        self._features = None if self.feature_dim is None else np.zeros((0, self.feature_dim), np.float32)
        self._prepared: PackedDatabase | ShardedDatabase | None = None
        self._mesh = None  # (mesh, axis) once sharded

    # -- contents ---------------------------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return int(self._codes.shape[0])

    @property
    def codes(self) -> np.ndarray:
        """``(ntotal, n_words)`` uint32 codes, in insertion order (read-only view)."""
        view = self._codes.view()
        view.flags.writeable = False
        return view

    @property
    def ids(self) -> np.ndarray:
        """``(ntotal,)`` int64 ids, aligned with :attr:`codes` (read-only view)."""
        view = self._ids.view()
        view.flags.writeable = False
        return view

    def __len__(self) -> int:
        return self.ntotal

    @property
    def features(self) -> np.ndarray | None:
        """``(ntotal, feature_dim)`` float32 features aligned with :attr:`codes`, or None (read-only view)."""
        if self._features is None:
            return None
        view = self._features.view()
        view.flags.writeable = False
        return view

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_bits={self.n_bits}, ntotal={self.ntotal})"

    def check_model(self, hasher) -> None:
        """Refuse a hasher other than the one that built this index (same fingerprint required).

        Codes of two models are not comparable even at the same code length: searching with the
        wrong one returns wrong neighbours without any other sign.
        """
        if not (hasattr(hasher, "n_bits") and hasattr(hasher, "fingerprint")):
            raise TypeError(f"check_model takes the fitted hasher that encodes the queries (e.g. jaxhash.load_hasher(path)), "
                            f"got {type(hasher).__name__}")
        if int(hasher.n_bits) != self.n_bits:
            raise ModelMismatchError(f"the index holds {self.n_bits}-bit codes but the model makes {hasher.n_bits}-bit codes: "
                                     "use the model the index was built with")
        if self.model is not None and hasher.fingerprint() != self.model.fingerprint:
            raise ModelMismatchError(f"this index was built by the {self.model.describe()}, not by the given {hasher.method} "
                                     "model: search it with that model, or rebuild the index with  jaxhash index --model ...")

    def _check(self, codes, name: str) -> np.ndarray:
        try:
            return check_codes(codes, n_bits=self.n_bits, name=name)
        except ValueError as err:
            raise ValueError(f"{err} (this index holds {self.n_bits}-bit codes)") from None

    def _check_features(self, features, n: int):
        if self.feature_dim is None:
            if features is not None:
                raise ValueError("this index keeps no features: create it with HashIndex(n_bits, feature_dim=...)")
            return None
        if features is None:
            raise ValueError(f"this index keeps a {self.feature_dim}-dim feature vector per entry: pass features=...")
        features = check_features(features, "features")
        if features.shape != (n, self.feature_dim):
            raise ValueError(f"features must have shape ({n}, {self.feature_dim}), got {features.shape}")
        return features

    def add(self, codes, features=None) -> np.ndarray:
        """Append ``(n, n_words)`` uint32 codes (and, if the index keeps them, ``(n, feature_dim)`` features)
        with ids continuing after the largest id; returns the ids."""
        codes = self._check(codes, "codes")
        start = int(self._ids.max()) + 1 if self.ntotal else 0
        ids = np.arange(start, start + codes.shape[0], dtype=np.int64)
        self._append(codes, ids, self._check_features(features, codes.shape[0]))
        return ids

    def add_with_ids(self, codes, ids, features=None) -> None:
        """Append codes with caller-chosen int64 ids (unique, non-negative, not already present)."""
        codes = self._check(codes, "codes")
        if np.shape(ids) != (codes.shape[0],):
            raise ValueError(f"ids must have shape ({codes.shape[0]},) to match the codes, got {np.shape(ids)}")
        ids = check_ids(ids)
        if ids.size and ids.min() < 0:
            raise ValueError("ids must be non-negative (-1 marks a missing result)")
        if not _distinct(ids):
            raise ValueError("ids contain duplicates")
        clash = np.intersect1d(ids, self._ids)
        if clash.size:
            raise ValueError(f"{clash.size} ids are already in the index (e.g. {clash[:5].tolist()}); remove_ids them first")
        self._append(codes, ids, self._check_features(features, codes.shape[0]))

    def _append(self, codes: np.ndarray, ids: np.ndarray, features: np.ndarray | None = None) -> None:
        self._codes = np.concatenate([self._codes, codes])
        self._ids = np.concatenate([self._ids, ids])
        if self._features is not None:
            self._features = np.concatenate([self._features, features])
        self._invalidate()

    def _invalidate(self) -> None:
        self._prepared = None

    def _keep(self, keep: np.ndarray) -> None:
        self._codes = self._codes[keep]
        self._ids = self._ids[keep]
        if self._features is not None:
            self._features = self._features[keep]
        self._invalidate()

    def remove_ids(self, ids) -> int:
        """Remove the codes with these ids; returns how many were removed (absent ids are ignored)."""
        keep = ~np.isin(self._ids, check_ids(ids))
        removed = int(self.ntotal - keep.sum())
        if removed:
            self._keep(keep)
        return removed

    def reset(self) -> None:
        """Remove everything."""
        self.remove_ids(self._ids)

    # -- queries ----------------------------------------------------------------------------
    def shard(self, mesh=None, axis: str = "codes") -> "HashIndex":
        """Search from now on with the codes split over the devices along ``axis`` of ``mesh``
        (default: every device; on several hosts, after ``jax.distributed.initialize``, every host's).

        Each device searches its part and the per-device lists are merged exactly: results equal a
        search on one device, ties included. Returns ``self``. The split is a run-time choice and is
        not saved with the index; ``add`` and ``remove_ids`` keep it. While the index holds fewer
        codes than there are devices along ``axis``, it is searched on one device (same results).
        """
        mesh = default_mesh(axis) if mesh is None else mesh
        check_mesh(mesh, axis)
        self._mesh = (mesh, axis)
        self._prepared = shard_database(self._codes, mesh, axis) if self._searched_sharded() else None
        return self

    def _searched_sharded(self) -> bool:
        """Sharded and every device along the mesh axis has at least one code."""
        return self._mesh is not None and self.ntotal >= check_mesh(*self._mesh)

    def _warn_if_empty(self) -> bool:
        if self.ntotal == 0:
            warnings.warn("searching an empty HashIndex: add codes with index.add(...) first", stacklevel=3)
            return True
        return False

    def search(self, query_codes, k: int, **options):
        """Exact k nearest neighbours of each query (``options``: see :class:`PartitionedIndex`).

        Args:
          query_codes: ``(q, n_words)`` uint32 packed codes.
          k: neighbours per query (> 0).
        Returns:
          ``(D, I)``: ``(q, min(k, ntotal))`` int32 Hamming distances and int64 ids, sorted by
          (distance, insertion order). Unlike FAISS, which pads with -1, ``k`` beyond the number
          of codes is clamped, so an absurd ``k`` costs nothing.
        """
        queries = self._check(query_codes, "query codes")
        k = check_k(k)
        if self._warn_if_empty():
            return np.zeros((queries.shape[0], 0), np.int32), np.zeros((queries.shape[0], 0), np.int64)
        dist, pos = self._shortlist(queries, k, **options)
        return dist, np.where(pos >= 0, self._ids[np.maximum(pos, 0)], -1)

    def _shortlist(self, queries: np.ndarray, k: int, **options):
        """Hamming (distances, positions) of the ``k`` nearest codes (see :meth:`search`)."""
        if options:
            raise TypeError(f"a flat HashIndex takes no {', '.join(options)}: partitions belong to a PartitionedIndex")
        if self._searched_sharded():
            if not isinstance(self._prepared, ShardedDatabase):
                self._prepared = shard_database(self._codes, *self._mesh)
            return sharded_knn_search(queries, self._prepared, k)
        return self._scan(queries, k)

    def _scan(self, queries: np.ndarray, k: int):
        """The exact linear scan: compiled over the prepared codes, or, for a few queries in a process that has
        not loaded JAX (the command line with a classic hasher), a NumPy scan with nothing to load or compile."""
        if self._prepared is None and queries.shape[0] <= HOST_SEARCH_MAX_QUERIES and "jax" not in sys.modules:
            return knn_search_host(queries, self._codes, k)
        if not isinstance(self._prepared, PackedDatabase):
            self._prepared = prepare_database(self._codes)
        return knn_search(queries, self._prepared, k)

    def search_rerank(self, query_codes, query_features, k: int, shortlist: int = 100, **search_options):
        """Two-stage search: the ``shortlist`` nearest codes by Hamming distance, re-ranked by the
        Euclidean distance of the stored features to ``query_features`` ``(q, feature_dim)``.

        Returns ``(distances, ids)``: ``(q, min(k, ntotal))`` float32 Euclidean distances and
        int64 ids (-1 where a query has fewer candidates), nearest first. The short-list holds at
        least ``k`` codes.
        """
        if self._features is None:
            raise ValueError("this index keeps no features to re-rank by: build it with a model that has them "
                             "(cnn-hash, cnn-softmax) or with HashIndex(n_bits, feature_dim=...)")
        queries = self._check(query_codes, "query codes")
        query_features = check_features(query_features, "query features")
        if query_features.shape != (queries.shape[0], self.feature_dim):
            raise ValueError(f"query features must have shape ({queries.shape[0]}, {self.feature_dim}), got {query_features.shape}")
        k, shortlist = check_k(k), check_k(shortlist, "shortlist")
        if self._warn_if_empty():
            return np.zeros((queries.shape[0], 0), np.float32), np.zeros((queries.shape[0], 0), np.int64)
        _, pos = self._shortlist(queries, max(k, shortlist), **search_options)
        dist, pos = rerank_euclidean(query_features, self._features, pos, min(k, pos.shape[1]))
        return dist, np.where(pos >= 0, self._ids[np.maximum(pos, 0)], -1)

    def range_search(self, query_codes, radius: int):
        """All codes within Hamming distance ``radius`` (inclusive), FAISS layout.

        Returns ``(lims, D, I)``: results of query ``i`` are ``D[lims[i]:lims[i+1]]`` (int32) and
        ``I[lims[i]:lims[i+1]]`` (int64 ids), sorted by (distance, insertion order).
        """
        queries = self._check(query_codes, "query codes")
        if self._warn_if_empty():
            return np.zeros(queries.shape[0] + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64)
        lims, dist, pos = radius_search(queries, self._codes, radius)
        return lims, dist, self._ids[pos]

    # -- FAISS interoperability -------------------------------------------------------------
    def to_faiss(self):
        """A ``faiss.IndexBinaryIDMap`` over an ``IndexBinaryFlat`` with the same codes and ids."""
        faiss = _import_faiss()
        if self.n_bits % 8:
            raise ValueError(f"FAISS binary indexes need a multiple of 8 bits; this index has {self.n_bits}")
        index = faiss.IndexBinaryIDMap(faiss.IndexBinaryFlat(self.n_bits))
        if self.ntotal:
            index.add_with_ids(codes_to_bytes(self._codes, self.n_bits), self._ids)
        return index

    @classmethod
    def from_faiss(cls, faiss_index) -> "HashIndex":
        """Build from a ``faiss.IndexBinaryFlat`` or an ``IndexBinaryIDMap`` wrapping one."""
        faiss = _import_faiss()
        ids = None
        inner = faiss_index
        if isinstance(faiss_index, faiss.IndexBinaryIDMap):
            ids = faiss.vector_to_array(faiss_index.id_map).astype(np.int64)
            inner = faiss.downcast_IndexBinary(faiss_index.index)
        if not isinstance(inner, faiss.IndexBinaryFlat):
            raise TypeError(f"only IndexBinaryFlat (optionally in an IndexBinaryIDMap) converts, got {type(inner).__name__}")
        n_bits = inner.d
        raw = faiss.vector_to_array(inner.xb).reshape(inner.ntotal, n_bits // 8)
        index = cls(n_bits)
        codes = bytes_to_codes(raw, n_bits)
        if ids is None:
            index.add(codes)
        else:
            index.add_with_ids(codes, ids)
        return index


class PartitionedIndex(HashIndex):
    """An index that files every entry under a partition -- the class a classifier predicts for it
    (Hu & Feng's one table per predicted class) -- and searches only the partitions a query names.

    Within the searched partitions the search is exact; ``query_partitions`` is ``(q,)`` or
    ``(q, c)`` partition numbers per query (e.g. the top-c predicted classes), or None for all.
    Where a query's partitions hold fewer than ``k`` entries, its row ends in id -1 and distance
    :data:`jaxhash.search.MISSING_DISTANCE`.
    """

    def __init__(self, n_bits: int, metadata: dict | None = None, source: ImageSource | None = None,
                 model: ModelRef | None = None, feature_dim: int | None = None):
        super().__init__(n_bits, metadata, source, model, feature_dim)
        self._partitions = np.zeros(0, np.int32)
        self._parts: dict[int, tuple[np.ndarray, PackedDatabase]] = {}

    @property
    def partitions(self) -> np.ndarray:
        """``(ntotal,)`` int32 partition of every entry (read-only view)."""
        view = self._partitions.view()
        view.flags.writeable = False
        return view

    def _check_partitions(self, partitions, n: int) -> np.ndarray:
        if partitions is None:
            raise ValueError("a PartitionedIndex files every entry under a partition: pass partitions=... (e.g. predicted classes)")
        partitions = check_ids(partitions, "partitions")
        if partitions.shape != (n,) or (n and partitions.min() < 0) or (n and partitions.max() >= 2**31):
            raise ValueError(f"partitions must be ({n},) integers in [0, 2**31), got shape {partitions.shape}")
        return partitions.astype(np.int32)

    def add(self, codes, features=None, partitions=None) -> np.ndarray:
        codes = self._check(codes, "codes")
        partitions = self._check_partitions(partitions, codes.shape[0])
        ids = super().add(codes, features)
        self._partitions = np.concatenate([self._partitions, partitions])
        return ids

    def add_with_ids(self, codes, ids, features=None, partitions=None) -> None:
        codes = self._check(codes, "codes")
        partitions = self._check_partitions(partitions, codes.shape[0])
        super().add_with_ids(codes, ids, features)
        self._partitions = np.concatenate([self._partitions, partitions])

    def _invalidate(self) -> None:
        super()._invalidate()
        self._parts = {}

    def _keep(self, keep: np.ndarray) -> None:
        self._partitions = self._partitions[keep]
        super()._keep(keep)

    def shard(self, mesh=None, axis: str = "codes"):
        raise TypeError("a PartitionedIndex searches a few small partitions per query, on one device; shard a flat "
                        "HashIndex (jaxhash index without --partitioned) to split its codes over devices")

    def _partition(self, p: int):
        if p not in self._parts:
            positions = np.flatnonzero(self._partitions == p)
            self._parts[p] = (positions, prepare_database(self._codes[positions]) if positions.size else None)
        return self._parts[p]

    def search(self, query_codes, k: int, query_partitions=None):
        """Exact k nearest neighbours within each query's partitions; see the class docstring."""
        return super().search(query_codes, k, query_partitions=query_partitions)

    @classmethod
    def from_faiss(cls, faiss_index):
        raise TypeError("a FAISS index has no partitions: convert it with HashIndex.from_faiss")

    def _shortlist(self, queries: np.ndarray, k: int, query_partitions=None):
        if query_partitions is None:
            return super()._shortlist(queries, k)
        chosen = np.asarray(query_partitions)
        if chosen.ndim == 1:
            chosen = chosen[:, None]
        if chosen.ndim != 2 or chosen.shape[0] != queries.shape[0] or not np.issubdtype(chosen.dtype, np.integer):
            raise ValueError(f"query_partitions must be ({queries.shape[0]},) or ({queries.shape[0]}, c) integers, got {chosen.shape}")
        k = min(k, self.ntotal)
        n_q, c = chosen.shape
        cand_d = np.full((n_q, c * k), MISSING_DISTANCE, np.int64)
        cand_p = np.full((n_q, c * k), -1, np.int64)
        for p in np.unique(chosen):
            rows, slots = np.nonzero(chosen == p)
            rows, first = np.unique(rows, return_index=True)  # a partition named twice by a query counts once
            slots = slots[first]
            positions, prepared = self._partition(int(p))
            if prepared is None:
                continue
            d, local = knn_search(queries[rows], prepared, k)
            cols = slots[:, None] * k + np.arange(d.shape[1])[None, :]
            cand_d[rows[:, None], cols] = d
            cand_p[rows[:, None], cols] = np.where(local >= 0, positions[np.maximum(local, 0)], -1)
        # Merge a query's partitions: by (distance, position), the order of a flat search.
        keys = np.where(cand_p >= 0, cand_d * (self.ntotal + 1) + cand_p, np.iinfo(np.int64).max)
        order = np.argsort(keys, axis=1, kind="stable")[:, :k]
        dist = np.take_along_axis(cand_d, order, axis=1).astype(np.int32)
        pos = np.take_along_axis(cand_p, order, axis=1)
        dist[pos < 0] = MISSING_DISTANCE
        return dist, pos


class MultiIndexHashIndex(HashIndex):
    """A :class:`HashIndex` searched through multi-index hashing (Norouzi, Punjani & Fleet): the
    codes are cut into ``substrings`` parts with one table each, and a query looks only at codes
    that agree with it on some part (see :mod:`jaxhash.mih`). Results equal the flat index's
    exactly, ties and their order included; on clustered codes of real images it reads a small
    share of the database. ``substrings=None`` picks about ``n_bits / log2(ntotal)`` when the
    tables are built (at the first search after a change); the tables cost 4 bytes per code and
    substring (8 or 12 for codes of up to 64 bits, which each table also keeps in its own order)
    plus bucket offsets, and are rebuilt from the codes when the index is read.
    """

    def __init__(self, n_bits: int, metadata: dict | None = None, source: ImageSource | None = None,
                 model: ModelRef | None = None, feature_dim: int | None = None, substrings: int | None = None):
        super().__init__(n_bits, metadata, source, model, feature_dim)
        if substrings is not None:
            substring_bounds(self.n_bits, substrings)  # refuses an impossible split now, saying how to choose
        self.substrings = substrings
        self._tables: MultiIndexTables | None = None

    def _invalidate(self) -> None:
        super()._invalidate()
        self._tables = None

    def tables(self) -> MultiIndexTables:
        """The multi-index over the current codes (built on first use)."""
        if self._tables is None:
            self._tables = build_tables(self._codes, self.n_bits, self.substrings)
        return self._tables

    def shard(self, mesh=None, axis: str = "codes"):
        raise TypeError("a MultiIndexHashIndex searches its tables on the host; shard a flat HashIndex instead")

    def _shortlist(self, queries: np.ndarray, k: int, **options):
        if options:
            raise TypeError(f"a MultiIndexHashIndex takes no {', '.join(options)}")

        return mih_knn_search(queries, self.tables(), k, scan=self._scan)  # queries with no close neighbours: a scan

    def range_search(self, query_codes, radius: int):
        """As :meth:`HashIndex.range_search`, through the tables."""
        queries = self._check(query_codes, "query codes")
        if self._warn_if_empty():
            return np.zeros(queries.shape[0] + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64)
        lims, dist, pos = mih_radius_search(queries, self.tables(), radius)
        return lims, dist, self._ids[pos]

    @classmethod
    def from_faiss(cls, faiss_index):
        flat = HashIndex.from_faiss(faiss_index)
        index = cls(flat.n_bits)
        index._append(flat._codes, flat._ids)
        return index


def codes_to_bytes(codes, n_bits: int) -> np.ndarray:
    """Packed uint32 codes -> ``(n, ceil(n_bits / 8))`` uint8, FAISS's binary layout."""
    codes = check_codes(codes, n_bits=n_bits)
    raw = codes.astype("<u4").view(np.uint8).reshape(codes.shape[0], -1)
    return np.ascontiguousarray(raw[:, : (n_bits + 7) // 8])


def bytes_to_codes(raw, n_bits: int) -> np.ndarray:
    """Inverse of :func:`codes_to_bytes`."""
    raw = np.asarray(raw, np.uint8)
    n_words = n_words_for(n_bits)
    padded = np.zeros((raw.shape[0], n_words * 4), np.uint8)
    padded[:, : raw.shape[1]] = raw
    return padded.view("<u4").astype(np.uint32).reshape(raw.shape[0], n_words)


def _import_faiss():
    try:
        import faiss  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise ImportError("FAISS is optional: install it with  pip install 'jaxhash[faiss]'  (or faiss-cpu)") from None
    return faiss


def write_index(index: HashIndex, path) -> Path:
    """Write ``index`` to ``path`` atomically (see the module docstring for the format)."""
    if not isinstance(index, HashIndex):
        raise TypeError(f"write_index writes a HashIndex (or a partitioned or multi-index one), got {type(index).__name__}: "
                        "add codes to jaxhash.HashIndex(n_bits) first")
    header = json.dumps(
        {
            "format": "jaxhash-index",
            "n_bits": index.n_bits,
            "n_words": index.n_words,
            "ntotal": index.ntotal,
            "metadata": index.metadata,
            "source": source_to_json(index.source),
            "model": None if index.model is None else index.model._asdict(),
            "partitioned": isinstance(index, PartitionedIndex),
            "feature_dim": index.feature_dim,
            **({"substrings": index.substrings} if isinstance(index, MultiIndexHashIndex) else {}),
        }
    ).encode()
    version = _MULTI_INDEX_VERSION if isinstance(index, MultiIndexHashIndex) else 2
    parts = [np.ascontiguousarray(index.codes, "<u4"), np.ascontiguousarray(index.ids, "<i8")]
    if isinstance(index, PartitionedIndex):
        parts.append(np.ascontiguousarray(index.partitions, "<i4"))
    if index.feature_dim is not None:
        parts.append(np.ascontiguousarray(index.features, "<f4"))

    def chunks():
        digest = hashlib.sha256()
        for chunk in (_PREFIX.pack(MAGIC, version, len(header)), header, *(a.tobytes() for a in parts)):
            digest.update(chunk)
            yield chunk
        yield digest.digest()

    return atomic_write(path, chunks())


_CHUNK = 1 << 24


def _read_hashed(f, array: np.ndarray, digest, damaged: str) -> None:
    """Fill ``array`` from ``f`` in chunks, feeding the bytes to ``digest`` (no second copy)."""
    if array.size == 0:  # an empty index: memoryview cannot cast a (0, n) array
        return
    view = memoryview(array).cast("B")
    pos = 0
    while pos < len(view):
        n = f.readinto(view[pos : pos + _CHUNK])
        if not n:
            raise IndexFormatError(damaged + " (truncated)")
        digest.update(view[pos : pos + n])
        pos += n


def _checksum_of_rest(f, digest, size: int) -> bool:
    """Hash the file up to its checksum and compare (used to tell damage from a malformed header)."""
    remaining = size - f.tell() - _CHECKSUM_BYTES
    while remaining > 0:
        chunk = f.read(min(_CHUNK, remaining))
        if not chunk:
            return False
        digest.update(chunk)
        remaining -= len(chunk)
    return f.read(_CHECKSUM_BYTES) == digest.digest()


def _strict_int(value, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f" in [{low}, {high}]" if high is not None else f" >= {low}"
        raise ValueError(f"{name} must be an integer{bound}, got {value!r}")
    return value


def _parse_header(raw: bytes, version: int):
    """Validated ``(n_bits, n_words, ntotal, metadata, source, model, partitioned, feature_dim, (multi_index,
    substrings))`` of a header; ValueError if malformed."""
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError):
        raise ValueError("the header is not valid JSON") from None
    if not isinstance(header, dict) or header.get("format") != "jaxhash-index":
        raise ValueError("the header is not a jaxhash index header")
    n_bits = _strict_int(header.get("n_bits"), "n_bits", 1, MAX_BITS)
    n_words = _strict_int(header.get("n_words"), "n_words", n_words_for(n_bits), n_words_for(n_bits))
    ntotal = _strict_int(header.get("ntotal"), "ntotal", 0)
    metadata = header.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata must be a JSON object, got {type(metadata).__name__}")
    if version == 1:
        source, model = source_from_legacy_metadata(metadata), None
    else:
        source = source_from_json(header.get("source"))
        record = header.get("model")
        if record is not None:
            if not isinstance(record, dict) or not isinstance(record.get("fingerprint"), str):
                raise ValueError("malformed model record")
            model = ModelRef(str(record["method"]), _strict_int(record["n_bits"], "model n_bits", 1, MAX_BITS),
                             record["fingerprint"], record.get("path"))
            if model.n_bits != n_bits:
                raise ValueError(f"model record of {model.n_bits} bits in an index of {n_bits}-bit codes")
        else:
            model = None
    partitioned = header.get("partitioned", False)
    feature_dim = header.get("feature_dim")
    if not isinstance(partitioned, bool):
        raise ValueError(f"partitioned must be true or false, got {partitioned!r}")
    if feature_dim is not None:
        feature_dim = _strict_int(feature_dim, "feature_dim", 1, 1 << 20)
    multi_index = "substrings" in header
    if multi_index != (version >= _MULTI_INDEX_VERSION) or (multi_index and partitioned):
        raise ValueError("substrings belong to a multi-index, written as format 3 without partitions")
    substrings = header.get("substrings")
    if substrings is not None:
        substrings = _strict_int(substrings, "substrings", 1, n_bits)
        substring_bounds(n_bits, substrings)
    return n_bits, n_words, ntotal, metadata, source, model, partitioned, feature_dim, (multi_index, substrings)


def _distinct(ids: np.ndarray) -> bool:
    """Whether no id repeats: O(n) for ids in increasing order (an index's usual ids), else by sorting."""
    if ids.size < 2 or bool(np.all(ids[1:] > ids[:-1])):
        return True
    return np.unique(ids).size == ids.size


def read_index(path) -> HashIndex:
    """Read an index written by :func:`write_index`, verifying its version, checksum and content.

    The prefix (magic, version, header size) is checked before anything else is read, and the
    codes are read once into their final array while being hashed, so memory follows the index,
    not the file's claims. Every header field, the codes' unused high bits and the ids (unique,
    non-negative) are validated; anything wrong is an :class:`IndexFormatError` naming the file.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not an index file: pass the .jhx file written by  jaxhash index")
    if not path.is_file():
        raise FileNotFoundError(f"no index file at {path}: build one with  jaxhash index ... --out {path}")
    damaged = f"{path} is damaged (truncated or modified); rebuild it with  jaxhash index"
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(_PREFIX.size)
        if len(prefix) < _PREFIX.size or prefix[:8] != MAGIC:
            raise IndexFormatError(f"{path} is not a jaxhash index file (wrong magic bytes)")
        _, version, header_len = _PREFIX.unpack(prefix)
        if version > FORMAT_VERSION:
            # a newer jaxhash's file still ends in the SHA-256 of the rest; a damaged version field does not
            if not _checksum_of_rest(f, hashlib.sha256(prefix), size):
                raise IndexFormatError(damaged + f" (format number {version} and a checksum that does not match)")
            raise IndexFormatError(f"{path} uses index format {version}; this jaxhash reads up to {FORMAT_VERSION}: upgrade jaxhash")
        if version == 0 or _PREFIX.size + header_len + _CHECKSUM_BYTES > size:
            raise IndexFormatError(damaged + " (bad prefix)")
        digest = hashlib.sha256(prefix)
        raw = f.read(header_len)
        digest.update(raw)
        try:
            n_bits, n_words, ntotal, metadata, source, model, partitioned, feature_dim, multi = _parse_header(raw, version)
        except ValueError as err:
            if not _checksum_of_rest(f, digest, size):
                raise IndexFormatError(damaged + " (checksum mismatch)") from None
            raise IndexFormatError(f"{path} has an invalid header: {err}; rebuild it with  jaxhash index") from None
        per_entry = n_words * 4 + 8 + (4 if partitioned else 0) + 4 * (feature_dim or 0)
        if _PREFIX.size + header_len + ntotal * per_entry + _CHECKSUM_BYTES != size:
            raise IndexFormatError(damaged + " (its size does not match the header)")
        codes = np.empty((ntotal, n_words), "<u4")
        ids = np.empty(ntotal, "<i8")
        partitions = np.empty(ntotal, "<i4") if partitioned else None
        features = np.empty((ntotal, feature_dim), "<f4") if feature_dim else None
        for array in (codes, ids, partitions, features):
            if array is not None:
                _read_hashed(f, array, digest, damaged)
        if f.read(_CHECKSUM_BYTES) != digest.digest():
            raise IndexFormatError(damaged + " (checksum mismatch)")
    try:
        codes = check_codes(codes.astype(np.uint32, copy=False), n_bits=n_bits, name="stored codes")
    except ValueError as err:
        raise IndexFormatError(f"{path}: {err}") from None
    ids = ids.astype(np.int64, copy=False)
    if ntotal and (ids.min() < 0 or not _distinct(ids)):
        raise IndexFormatError(f"{path} has negative or duplicate ids; rebuild it with  jaxhash index")
    if partitions is not None and ntotal and partitions.min() < 0:
        raise IndexFormatError(f"{path} has negative partitions; rebuild it with  jaxhash index")
    if features is not None and not np.all(np.isfinite(features)):
        raise IndexFormatError(f"{path} has features that are not finite; rebuild it with  jaxhash index")
    if multi[0]:
        index = MultiIndexHashIndex(n_bits, metadata=metadata, source=source, model=model, feature_dim=feature_dim,
                                    substrings=multi[1])
    else:
        cls = PartitionedIndex if partitioned else HashIndex
        index = cls(n_bits, metadata=metadata, source=source, model=model, feature_dim=feature_dim)
    index._append(codes, ids, None if features is None else features.astype(np.float32, copy=False))
    if partitions is not None:
        index._partitions = partitions.astype(np.int32, copy=False)
    return index
