"""Clustering: k-means and Gaussian mixtures against scikit-learn where installed, the scores
against closed-form cases and scikit-learn, and the clear errors."""
import sys

import jax
import numpy as np
import pytest

from jaxhash import cluster


def blobs(rng, n_per=60, dim=5, k=4, spread=0.3):
    centres = rng.normal(size=(k, dim)) * 6
    x = np.concatenate([c + spread * rng.normal(size=(n_per, dim)) for c in centres]).astype(np.float32)
    return x, np.repeat(np.arange(k), n_per)


def test_kmeans_finds_separated_clusters_and_matches_scikit_learn(rng, key):
    x, y = blobs(rng)
    result = cluster.kmeans(key, x, 4, n_init=3)
    assert cluster.clustering_accuracy(y, result.labels) == 1.0
    assert result.centres.shape == (4, 5) and result.labels.dtype == np.int32
    np.testing.assert_allclose(result.inertia, ((x - result.centres[result.labels]) ** 2).sum(), rtol=1e-4)
    sklearn = pytest.importorskip("sklearn.cluster")
    digits = pytest.importorskip("sklearn.datasets").load_digits().data.astype(np.float32) / 16
    ours = cluster.kmeans(key, digits, 10).inertia
    theirs = sklearn.KMeans(10, n_init=10, random_state=0).fit(digits).inertia_
    assert ours <= theirs * 1.01  # the same objective, as well minimised


def test_gaussian_mixture_separates_elongated_clusters(rng, key):
    a = rng.normal(size=(300, 2)) * [4.0, 0.2]
    b = rng.normal(size=(300, 2)) * [4.0, 0.2] + [0.0, 3.0]  # k-means cuts these across; a full-covariance mixture does not
    x, y = np.concatenate([a, b]).astype(np.float32), np.repeat([0, 1], 300)
    full = cluster.gaussian_mixture(key, x, 2)
    assert cluster.clustering_accuracy(y, full.labels) > 0.97
    assert cluster.clustering_accuracy(y, cluster.kmeans(key, x, 2).labels) < 0.8
    assert full.covariances.shape == (2, 2, 2) and np.isclose(full.weights.sum(), 1.0)
    diag = cluster.gaussian_mixture(key, x, 2, covariance="diag")
    assert np.allclose(diag.covariances[:, 0, 1], 0) and np.isfinite(diag.log_likelihood)
    mixture = pytest.importorskip("sklearn.mixture")
    theirs = mixture.GaussianMixture(2, random_state=0).fit(x).score(x)
    assert full.log_likelihood >= theirs - 0.02  # at least as likely as scikit-learn's fit


def test_balanced_kmeans_splits_the_merged_classes_that_kmeans_and_a_mixture_leave_together(rng, key):
    # Fashion-MNIST's failure in small: three overlapping classes side by side, and a class of two far-apart
    # groups. k-means and a mixture give the three one cluster and split the fourth class; held to equal sizes,
    # the clusters follow the classes.
    n = 150
    close = [rng.normal(size=(n, 2)) * 0.5 + [offset, 0.0] for offset in (0.0, 1.5, 3.0)]
    two_groups = np.concatenate([rng.normal(size=(n // 2, 2)) * 0.3 + [1.5, 10.0],
                                 rng.normal(size=(n // 2, 2)) * 0.3 + [1.5, 14.0]])
    apart = rng.normal(size=(n, 2)) * 0.5 + [12.0, 5.0]
    x = np.concatenate([*close, two_groups, apart]).astype(np.float32)
    y = np.repeat(np.arange(5), n)
    assert cluster.clustering_accuracy(y, cluster.kmeans(key, x, 5).labels) < 0.75
    assert cluster.clustering_accuracy(y, cluster.gaussian_mixture(key, x, 5).labels) < 0.75
    result = cluster.balanced_kmeans(key, x, 5)
    assert cluster.clustering_accuracy(y, result.labels) > 0.93  # about .96: the three overlap
    assert result.centres.shape == (5, 2) and result.labels.dtype == np.int32 and result.labels.shape == (5 * n,)
    assert np.all(np.abs(np.bincount(result.labels, minlength=5) - n) <= 0.05 * n)
    assert result.inertia > 0 and result.iterations >= 1


def test_balanced_kmeans_holds_clusters_to_the_sizes_asked(rng, key):
    x = rng.random((2000, 2)).astype(np.float32)
    counts = np.bincount(cluster.balanced_kmeans(key, x, 4, sizes=[1, 1, 1, 5]).labels, minlength=4)
    np.testing.assert_allclose(counts, [250, 250, 250, 1250], rtol=0.05)  # in the order asked
    # a far group of 20 and a near one of 180: the labels follow the sizes, not only the soft plan
    apart = np.concatenate([rng.normal(size=(180, 2)), rng.normal(size=(20, 2)) + 100]).astype(np.float32)
    np.testing.assert_allclose(np.bincount(cluster.balanced_kmeans(key, apart, 2).labels, minlength=2), 100, rtol=0.05)
    digits = pytest.importorskip("sklearn.datasets").load_digits()
    far = digits.data + 1e6  # float64, far from the origin: float32 distances in the expanded form lost the clusters
    assert cluster.clustering_accuracy(digits.target, cluster.kmeans(key, far, 10, n_init=2).labels) > 0.6  # before: .13
    assert cluster.clustering_accuracy(digits.target, cluster.balanced_kmeans(key, far, 10, n_init=1).labels) > 0.6
    offset = cluster.balanced_kmeans(key, x + 1e4, 4, sizes=[1, 1, 1, 5])  # far from the origin: float32 distances
    np.testing.assert_allclose(np.bincount(offset.labels, minlength=4), [250, 250, 250, 1250], rtol=0.05)
    np.testing.assert_allclose(offset.inertia, ((x + 1e4 - offset.centres[offset.labels]) ** 2).sum(), rtol=1e-3)
    with pytest.warns(UserWarning, match="Sinkhorn stopped after 1 iterations with cluster masses up to"):
        cluster.balanced_kmeans(key, x, 4, sizes=[1, 1, 1, 5], sinkhorn_iterations=1, max_iter=1, n_init=1)


def test_balanced_kmeans_refuses_bad_settings_with_the_fix(key):
    x = np.random.default_rng(0).random((30, 3)).astype(np.float32)
    for epsilon in (0, -1.0, float("nan"), "1", True):
        with pytest.raises(ValueError, match="epsilon must be a positive number"):
            cluster.balanced_kmeans(key, x, 3, epsilon=epsilon)
    assert cluster.balanced_kmeans(key, x, 3, epsilon=np.float32(0.1)).labels.shape == (30,)
    for sizes in ([1, 2], [1, 0, 1], [1, float("inf"), 1], "abc", [[1, 2], [3]]):
        with pytest.raises(ValueError, match="sizes must be 3 positive numbers"):
            cluster.balanced_kmeans(key, x, 3, sizes=sizes)
    with pytest.raises(ValueError, match="k=40 clusters cannot be made from 30 points"):
        cluster.balanced_kmeans(key, x, 40)
    with pytest.warns(UserWarning, match="sizes are up to 200% off the sizes asked"):  # one distinct point: said
        constant = cluster.balanced_kmeans(key, np.ones((20, 3), np.float32), 3)  # no crash, no NaN
    with pytest.raises(ValueError, match=r"no points to cluster \(0 rows\)"):
        cluster.balanced_kmeans(key, x[:0], 3)
    assert constant.labels.shape == (20,) and np.isfinite(constant.inertia) and np.all(np.isfinite(constant.centres))


def test_scores_agree_with_closed_forms_and_scikit_learn(rng):
    y = rng.integers(0, 5, 400)
    relabelled = (y + 2) % 5
    assert cluster.clustering_accuracy(y, relabelled) == 1.0
    assert cluster.normalized_mutual_info(y, relabelled) == pytest.approx(1.0)
    assert cluster.adjusted_rand_index(y, relabelled) == pytest.approx(1.0)
    assert cluster.clustering_accuracy([0, 0, 1, 1], [0, 1, 2, 3]) == 0.5  # 4 clusters, 2 classes: two stay unmatched
    noisy = np.where(rng.random(400) < 0.3, rng.integers(0, 7, 400), y)
    metrics = pytest.importorskip("sklearn.metrics")
    assert cluster.normalized_mutual_info(y, noisy) == pytest.approx(metrics.normalized_mutual_info_score(y, noisy))
    assert cluster.adjusted_rand_index(y, noisy) == pytest.approx(metrics.adjusted_rand_score(y, noisy))
    assert abs(cluster.adjusted_rand_index(y, rng.integers(0, 5, 400))) < 0.05  # chance level


def test_bad_input_is_refused_with_the_fix(key, monkeypatch):
    x = np.ones((20, 3), np.float32)
    with pytest.raises(ValueError, match="k=30 clusters cannot be made from 20 points"):
        cluster.kmeans(key, x, 30)
    assert cluster.kmeans(key, x, 3).inertia == 0.0  # constant data: no crash
    assert cluster.gaussian_mixture(key, x, 2).labels.shape == (20,)
    with pytest.raises(ValueError, match="NaN"):
        cluster.kmeans(key, np.full((5, 2), np.nan), 2)
    with pytest.raises(ValueError, match="reduce the points first"):
        cluster.gaussian_mixture(key, np.zeros((20, 784), np.float32), 2)
    with pytest.raises(ValueError, match="covariance must be"):
        cluster.gaussian_mixture(key, x, 2, covariance="tied")
    with pytest.raises(ValueError, match="unknown embedding"):
        cluster.embed(x, "isomap")
    with pytest.raises(ValueError, match="umap of 20 points of 3 values cannot have 20 dimensions: use n_components at most 18"):
        cluster.embed(x, "umap", len(x))  # before: scipy's "Cannot use scipy.linalg.eigh for sparse A with k >= N"
    with pytest.raises(ValueError, match="tsne of 20 points of 3 values cannot have 4 dimensions: use n_components at most 3"):
        cluster.embed(x, "tsne", 4)  # t-SNE starts from PCA; before: scikit-learn's own error
    with pytest.raises(ValueError, match="umap of 2 points of 3 values cannot have 1 dimensions: it needs more points"):
        cluster.embed(x[:2], "umap", 1)
    monkeypatch.setitem(sys.modules, "umap", None)
    with pytest.raises(ImportError, match=r"pip install 'jaxhash\[cluster\]'"):
        cluster.embed(x, "umap")
    with pytest.raises(ValueError, match="same length"):
        cluster.clustering_accuracy([0, 1], [0])


def test_embeddings_have_the_asked_shape(rng):
    x, _ = blobs(rng, n_per=30)
    assert cluster.embed(x, "pca", 2).shape == (120, 2)
    pytest.importorskip("sklearn")
    tsne = cluster.embed(x, "tsne", 2)
    assert tsne.shape == (120, 2) and tsne.dtype == np.float32
