import os
import zlib
from pathlib import Path

import jax
import numpy as np
import pytest

# Silent upcasts (uint32 -> int64, int32 -> float) are bugs in a bit-twiddling library.
jax.config.update("jax_numpy_dtype_promotion", "strict")
os.environ.setdefault("JAXHASH_PROGRESS", "0")
os.environ.setdefault("JAXHASH_CACHE_DIR", "off")  # tests that want the compilation cache name their own folder

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _seed_of(request) -> int:
    # crc32, not hash(): Python salts str hashes per process, which would make seeds change per run.
    return zlib.crc32(request.node.name.encode())


@pytest.fixture
def key(request):
    """A fresh PRNG key per test, derived from the test's name (stable across runs)."""
    return jax.random.key(_seed_of(request))


@pytest.fixture
def rng(request):
    return np.random.default_rng(_seed_of(request))


def random_codes(rng, n, n_bits, distinct=None):
    """``(n, n_words)`` uint32 packed codes; with ``distinct``, only that many different codes (many ties)."""
    from jaxhash import pack_bits

    if distinct is not None:
        pool = rng.integers(0, 2, size=(distinct, n_bits)).astype(bool)
        bits = pool[rng.integers(0, distinct, size=n)]
    else:
        bits = rng.integers(0, 2, size=(n, n_bits)).astype(bool)
    return np.array(pack_bits(bits)), bits


def oracle_knn(queries_bits, db_bits, k):
    """NumPy brute force: distances and positions sorted by (distance, position)."""
    dist = (queries_bits[:, None, :] != db_bits[None, :, :]).sum(-1)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, order, axis=1), order


def shared_data_or_skip(entry: str) -> Path:
    path = SHARED_DATA / entry
    if not path.exists():
        pytest.skip(f"{path} not available")
    return SHARED_DATA
