"""jaxhash: neural binary hashing and content-based image retrieval in JAX.

Every method ends in the same place: ``(n, ceil(n_bits / 32))`` uint32 packed codes (see
:mod:`jaxhash.codes` for the bit order), searched exactly by :class:`HashIndex`.
"""
from . import baselines  # noqa: F401 - registers the classic hashers
from . import hamming_net  # noqa: F401
from . import semantic  # noqa: F401 - registers dbn-ae
from .baselines import ITQ, KMH, LSH, PCAH, SH, SpH
from .codes import binarize, hamming_distance, pack_bits, pairwise_hamming, unpack_bits
from .hashers import Hasher, available_methods, load_hasher, make_hasher
from .index import HashIndex, read_index, write_index
from .semantic import SemanticHasher
from .metrics import mean_average_precision, precision_at_k, precision_recall_curve, precision_within_radius
from .search import knn_search, radius_search, rerank_euclidean, search_and_rerank

__version__ = "0.1.0"

__all__ = [
    "pack_bits",
    "unpack_bits",
    "binarize",
    "hamming_distance",
    "pairwise_hamming",
    "knn_search",
    "radius_search",
    "rerank_euclidean",
    "search_and_rerank",
    "HashIndex",
    "write_index",
    "read_index",
    "mean_average_precision",
    "precision_at_k",
    "precision_within_radius",
    "precision_recall_curve",
    "Hasher",
    "make_hasher",
    "load_hasher",
    "available_methods",
    "LSH",
    "PCAH",
    "ITQ",
    "SH",
    "SpH",
    "KMH",
    "SemanticHasher",
]
