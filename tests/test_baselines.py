import warnings

import numpy as np
import pytest

from jaxhash.baselines import KMH
from jaxhash import ITQ, PCAH, SH, SpH, available_methods, load_hasher, make_hasher, mean_average_precision
from jaxhash.hashers import NotFittedError

METHODS = ["lsh", "pcah", "itq", "sh", "sph", "kmh"]


def clustered(rng, n=600, dim=20, k=6):
    centres = rng.normal(scale=4.0, size=(k, dim))
    labels = rng.integers(0, k, n)
    return (centres[labels] + rng.normal(size=(n, dim))).astype(np.float32), labels


def test_all_baselines_are_registered():
    assert set(METHODS) <= set(available_methods())


@pytest.mark.parametrize("method", METHODS)
def test_protocol_shapes_determinism_and_save_load(method, rng, tmp_path):
    x, y = clustered(rng)
    hasher = make_hasher(method, n_bits=16, seed=1)
    assert hasher.fit(x) is hasher
    codes = hasher.encode(x)
    assert codes.dtype == np.uint32 and codes.shape == (600, 1)
    assert (codes >> 16 == 0).all()  # no bits beyond n_bits
    np.testing.assert_array_equal(make_hasher(method, n_bits=16, seed=1).fit(x).encode(x), codes)
    hasher.save(tmp_path / "h")
    again = load_hasher(tmp_path / "h")
    assert type(again) is type(hasher) and again.get_params() == hasher.get_params()
    np.testing.assert_array_equal(again.encode(x), codes)
    hasher.save(tmp_path / "h")  # replacing an existing save works
    # Well-separated clusters: every method must rank far above chance (6 classes: ~0.17).
    assert mean_average_precision(codes, y, codes, y) > 0.4


@pytest.mark.parametrize("method", METHODS)
def test_bad_input(method, rng):
    x, _ = clustered(rng, n=50)
    hasher = make_hasher(method, n_bits=8)
    with pytest.raises(NotFittedError):
        hasher.encode(x)
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        hasher.fit(bad)
    with pytest.raises(ValueError, match="2-D"):
        hasher.fit(x[0])
    hasher.fit(x)
    with pytest.raises(ValueError, match="fitted on 20 features"):
        hasher.encode(x[:, :5])


def test_pca_methods_need_enough_dimensions(rng):
    x, _ = clustered(rng, dim=10)
    with pytest.raises(ValueError, match="n_bits <= 10"):
        PCAH(n_bits=16).fit(x)


def test_itq_reduces_quantisation_error_over_pca(rng):
    x, _ = clustered(rng, dim=32)
    pcah, itq = PCAH(n_bits=16).fit(x), ITQ(n_bits=16, seed=0).fit(x)

    def quantisation_error(h):
        v = h.project(x)
        return float(np.sum((np.where(v >= 0, 1.0, -1.0) - v) ** 2))

    assert quantisation_error(itq) < quantisation_error(pcah)
    r = itq.projection_.T @ pcah.projection_  # PCA basis times an orthogonal rotation
    np.testing.assert_allclose(r @ r.T, np.eye(16), atol=1e-3)


def test_spherical_hashing_balances_bits(rng):
    x, _ = clustered(rng, n=2000, dim=16)
    h = SpH(n_bits=16, seed=0).fit(x)
    bits = h.project(x) > 0
    assert np.all(np.abs(bits.mean(axis=0) - 0.5) < 0.1)


def test_spectral_hashing_picks_low_frequency_modes_first(rng):
    x, _ = clustered(rng, dim=8)
    h = SH(n_bits=12).fit(x)
    assert np.all(np.diff(h.omega_ / np.pi) >= -1e-6) or h.omega_.size == 12
    assert h.encode(x).shape == (600, 1)


def test_kmh_codewords_preserve_affinity(rng):
    """Codeword distances follow sqrt(Hamming distance of their indices) -- thanks to the affinity term."""
    x = (rng.normal(size=(3000, 16)) * np.linspace(3, 1, 16)).astype(np.float32)
    bits = ((np.arange(16)[:, None] >> np.arange(4)) & 1)
    sqrt_hamming = np.sqrt((bits[:, None] != bits[None]).sum(-1))
    upper = np.triu_indices(16, 1)

    def correlations(h):
        dists = [np.linalg.norm(c[:, None] - c[None], axis=-1)[upper] for c in h.codebooks_]
        return [np.corrcoef(d, sqrt_hamming[upper])[0, 1] for d in dists]

    with_affinity = correlations(KMH(n_bits=8, seed=0).fit(x))
    plain_kmeans = correlations(KMH(n_bits=8, seed=0, affinity_weight=0.0).fit(x))
    assert min(with_affinity) > 0.95 and min(with_affinity) > max(plain_kmeans)
    x_small, _ = clustered(rng)
    with pytest.raises(ValueError, match="multiple of bits_per_subspace"):
        KMH(n_bits=10).fit(x_small)


def test_itq_beats_lsh_on_digits():
    pytest.importorskip("sklearn")
    from jaxhash.data import load_dataset, retrieval_split, to_features

    split = retrieval_split(load_dataset("digits"), "500", seed=0)
    xq, xd = to_features(split.query_x), to_features(split.db_x)
    scores = {}
    for method in ("lsh", "itq"):
        h = make_hasher(method, n_bits=32, seed=0).fit(xd)
        scores[method] = mean_average_precision(h.encode(xq), split.query_y, h.encode(xd), split.db_y)
    assert scores["itq"] > scores["lsh"] + 0.05, scores


def test_wide_features_take_the_gram_matrix_or_a_randomised_decomposition(rng, monkeypatch):
    """Photos have more values than samples (64x64x3 = 12,288): PCA must not build a dim x dim covariance."""
    from jaxhash import baselines

    factors = rng.standard_normal((600, 12)) * np.linspace(4, 1, 12)
    x = (factors @ rng.standard_normal((12, 300)) + 0.1 * rng.standard_normal((600, 300))).astype(np.float32)
    _, exact = baselines._pca(x, 8)  # the covariance route (300 <= 4096 dimensions)
    codes = PCAH(n_bits=8).fit(x[:200]).encode(x)
    monkeypatch.setattr(baselines, "_COVARIANCE_MAX_DIM", 100)
    _, gram = baselines._pca(x[:200], 8)  # 200 samples < 300 dimensions
    monkeypatch.undo()
    _, covariance_200 = baselines._pca(x[:200], 8)
    cosines = np.abs(np.sum(gram * covariance_200, axis=0)) / np.linalg.norm(gram, axis=0)
    np.testing.assert_allclose(cosines, 1, atol=1e-4)  # the same directions up to sign
    monkeypatch.setattr(baselines, "_COVARIANCE_MAX_DIM", 100)
    flips = PCAH(n_bits=8).fit(x[:200]).encode(x) ^ codes  # codes equal up to a flip of whole bits
    assert np.all(flips == flips[0])
    _, randomised = baselines._pca(x, 8)  # 600 samples > 300 dimensions
    overlap = np.linalg.svd(exact.T @ randomised, compute_uv=False)  # cosines of the principal angles
    np.testing.assert_allclose(overlap, 1, atol=1e-3)
    with pytest.raises(ValueError, match="span fewer than 8 directions"):
        baselines._pca(np.repeat(x[:3], 4, axis=0), 8)  # the Gram route cannot divide by no variance
    monkeypatch.undo()
    with pytest.warns(UserWarning, match="only 2 of the 8 principal directions of the 12 training samples have variance: "
                                         "the other 6 bits are rounding noise; use at most 2 bits, as the 12 samples vary"):
        ITQ(n_bits=8).fit(np.repeat(x[:3], 4, axis=0))  # the covariance route: fitted, and said
    with pytest.warns(UserWarning, match="use at most 4 bits, or more"):
        ITQ(n_bits=8).fit(x[:5])  # 5 samples span 4 directions: more samples would add some
    flat = np.concatenate([x[:, :6], np.zeros((len(x), 4), np.float32)], axis=1)  # 600 samples, 4 of 10 values constant
    with pytest.warns(UserWarning, match=r"use at most 6 bits, as the 600 samples vary in no more directions \(constant"):
        ITQ(n_bits=8).fit(flat)  # more samples would not help: the note does not ask for them
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ITQ(n_bits=12).fit(x)  # 12 factors and noise: every direction has variance, no note
