"""jaxhash: neural binary hashing and content-based image retrieval in JAX.

Every method ends in the same place: ``(n, ceil(n_bits / 32))`` uint32 packed codes (see
:mod:`jaxhash.codes` for the bit order), searched exactly by :class:`HashIndex`.

Public names are imported on first use (PEP 562), so ``import jaxhash`` and the ``jaxhash``
command start without loading JAX, Flax or Optax until something needs them.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "codes": ["pack_bits", "unpack_bits", "binarize", "hamming_distance", "pairwise_hamming"],
    "search": ["knn_search", "euclidean_knn", "radius_search", "rerank_euclidean", "search_and_rerank", "shard_database", "sharded_knn_search"],
    "index": ["HashIndex", "PartitionedIndex", "MultiIndexHashIndex", "write_index", "read_index"],
    "metrics": ["mean_average_precision", "precision_at_k", "precision_within_radius", "precision_recall_curve"],
    "hashers": ["Hasher", "make_hasher", "load_hasher", "available_methods"],
    "baselines": ["LSH", "PCAH", "ITQ", "SH", "SpH", "KMH"],
    "semantic": ["SemanticHasher"],
    "supervised": ["CNNHasher", "CNNSoftmaxHasher"],
    "vae": ["VAEHasher", "SparseAEHasher", "AEHasher", "AEUMAPHasher"],
    "patches": ["PatchHasher"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
_SUBMODULES = {"atomic", "baselines", "checkpoint", "checks", "cli", "codes", "data", "dbn", "hamming_net", "hashers", "images",
               "index", "metrics", "plots", "progress", "rbm", "search", "semantic", "train", "nets", "cnn", "supervised", "mih", "vae", "cluster",
               "patches"}

__all__ = [name for names in _EXPORTS.values() for name in names]


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if name in _SUBMODULES:  # jaxhash.metrics etc. without importing them first
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'jaxhash' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
