"""Clustering without labels, and the scores to check a clustering with.

The route of Kovalenko's "Clustering images by visual similarity with variational autoencoders":
encode images into a latent space, reduce it (PCA, t-SNE, UMAP), cluster it with k-means (or a
Gaussian mixture, as in McConville et al.'s N2D), then judge the clusters against the true classes.

* :func:`kmeans` -- k-means++ starts, jitted Lloyd iterations, several restarts, the best by inertia.
* :func:`balanced_kmeans` -- k-means held to equal (or given) cluster sizes by Sinkhorn assignment,
  for classes about equally common: on Fashion-MNIST it keeps pullovers, coats and shirts apart.
* :func:`gaussian_mixture` -- EM for a mixture of full- or diagonal-covariance Gaussians, started
  from k-means.
* :func:`pca` -- the top principal components (exact for narrow data, randomised for wide).
* :func:`embed` -- t-SNE (scikit-learn) or UMAP (umap-learn), optional extras, imported lazily.
* :func:`clustering_accuracy` (best one-to-one matching of clusters to classes, Hungarian
  algorithm), :func:`normalized_mutual_info`, :func:`adjusted_rand_index`.

All functions take ``(n, dim)`` float features and an explicit PRNG key or seed.
"""
from __future__ import annotations

import functools
import math
import numbers
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .checks import check_features, check_positive_int
from .search import squared_distances

__all__ = ["KMeansResult", "GaussianMixture", "kmeans", "balanced_kmeans", "gaussian_mixture", "pca", "embed",
           "clustering_accuracy", "normalized_mutual_info", "adjusted_rand_index", "EMBEDDINGS", "max_embed_dims"]

EMBEDDINGS = ("pca", "tsne", "umap")
# Above this many dimensions a full-covariance mixture is refused: its E and M steps hold
# (k, n, dim) arrays and k dim x dim covariances (MNIST pixels: 2.2 GB per step).
MAX_FULL_COVARIANCE_DIM = 128


class KMeansResult(NamedTuple):
    """centres ``(k, dim)`` float32, labels ``(n,)`` int32, inertia (sum of squared distances), iterations."""

    centres: np.ndarray
    labels: np.ndarray
    inertia: float
    iterations: int


class GaussianMixture(NamedTuple):
    """weights ``(k,)``, means ``(k, dim)``, covariances ``(k, dim, dim)`` (diagonal ones as matrices),
    labels ``(n,)`` int32 (most probable component), mean log-likelihood per point, iterations."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    labels: np.ndarray
    log_likelihood: float
    iterations: int


# On a UMAP embedding of MNIST, single k-means runs merged two digits in 4 of 6 seeds, and a mixture
# started there kept them merged; the best of 10 runs (0.25 s on 70,000 points) did not, in 3 of 3.
KMEANS_STARTS_PER_GMM_START = 10


def _check_k(k, n: int) -> int:
    k = check_positive_int(k, "k")
    if n == 0:
        raise ValueError("there are no points to cluster (0 rows): pass at least k points")
    if k > n:
        raise ValueError(f"k={k} clusters cannot be made from {n} points: use k <= {n}")
    return k


def _centred_points(x) -> tuple[np.ndarray, np.ndarray]:
    """Checked ``(n, dim)`` points as float32, less their mean (taken in float64 from the input as given),
    and that ``(dim,)`` float64 mean. Distances in the expanded float32 form lose the clusters of points
    far from the origin (the digits + 1e6: k-means put 1,492 of 1,797 in one cluster)."""
    check_features(x, "points")
    raw = np.asarray(x)
    mean = raw.mean(axis=0, dtype=np.float64)
    return (raw - mean).astype(np.float32), mean


def _relative_tol(tol: float, x: np.ndarray) -> float:
    """``tol`` on the centres' squared shift, relative to the data's mean variance per dimension (as
    scikit-learn's), for ``(n, dim)`` points."""
    return float(tol) * float(np.mean(np.var(x, axis=0))) * x.shape[1]


@functools.partial(jax.jit, static_argnames=("k",))
def _kmeans_plus_plus(key, x, k: int):
    """k-means++ (Arthur & Vassilvitskii): each next centre drawn with probability ~ squared distance."""
    n = x.shape[0]
    key, first = jax.random.split(key)
    centres = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[jax.random.randint(first, (), 0, n)])
    closest = jnp.sum(jnp.square(x - centres[0]), axis=1)

    def add(i, carry):
        centres, closest, key = carry
        key, draw = jax.random.split(key)
        total = jnp.sum(closest)
        # all points on existing centres (fewer distinct points than k): draw uniformly
        p = jnp.where(total > 0, closest / jnp.where(total > 0, total, 1.0), 1.0 / n)
        chosen = x[jax.random.choice(draw, n, p=p)]
        closest = jnp.minimum(closest, jnp.sum(jnp.square(x - chosen), axis=1))
        return centres.at[i].set(chosen), closest, key

    centres, _, _ = jax.lax.fori_loop(1, k, add, (centres, closest, key))
    return centres


@functools.partial(jax.jit, static_argnames=("max_iter",))
def _lloyd(x, centres, max_iter: int, tol):
    """Lloyd iterations until the centres move less than ``tol`` (squared, summed) or ``max_iter``.
    An emptied cluster keeps its centre."""

    def assign(centres):
        d2 = squared_distances(x, centres)
        return jnp.argmin(d2, axis=1), jnp.min(d2, axis=1)

    def body(carry):
        centres, _, it = carry
        labels, _ = assign(centres)
        one_hot = jax.nn.one_hot(labels, centres.shape[0], dtype=x.dtype)
        counts = one_hot.sum(axis=0)
        sums = one_hot.T @ x
        new = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centres)
        return new, jnp.sum(jnp.square(new - centres)), it + 1

    def cond(carry):
        _, shift, it = carry
        return (it < max_iter) & (shift > tol)

    centres, _, iterations = jax.lax.while_loop(cond, body, (centres, jnp.asarray(jnp.inf, x.dtype), 0))
    labels, d2 = assign(centres)
    return centres, labels.astype(jnp.int32), jnp.sum(d2), iterations


def kmeans(key, x, k: int, *, n_init: int = 10, max_iter: int = 300, tol: float = 1e-4) -> KMeansResult:
    """k-means of ``(n, dim)`` features into ``k`` clusters: ``n_init`` k-means++ starts, each
    refined by jitted Lloyd iterations, the one of lowest inertia kept.

    ``tol`` is relative to the data's mean variance per dimension (as scikit-learn's). Constant
    data gives one cluster's worth of identical centres, without error.
    """
    x, mean = _centred_points(x)
    k = _check_k(k, len(x))
    n_init = check_positive_int(n_init, "n_init")
    max_iter = check_positive_int(max_iter, "max_iter")
    xj = jnp.asarray(x)
    scaled_tol = _relative_tol(tol, x)
    best = None
    for key_init in jax.random.split(key, n_init):
        centres, labels, inertia, iterations = _lloyd(xj, _kmeans_plus_plus(key_init, xj, k), max_iter, scaled_tol)
        if best is None or float(inertia) < best.inertia:
            best = KMeansResult((np.asarray(centres) + mean).astype(np.float32), np.asarray(labels), float(inertia),
                                int(iterations))
    return best


# The final labels come from plans this many times colder, in turn: at the working temperature a group
# far from the others can be shared softly between clusters, and each point's most probable cluster then
# ignores the sizes (180 + 20 points, k = 2, equal sizes: [180, 20] at the working temperature).
BALANCED_ROUNDING_COOLING = (4.0, 16.0, 64.0)


@functools.partial(jax.jit, static_argnames=("max_iter", "sinkhorn_iterations"))
def _balanced_lloyd(x, centres, log_sizes, epsilon, max_iter: int, sinkhorn_iterations: int, tol):
    """Lloyd iterations whose assignment step is entropic optimal transport of the points (mass 1 each)
    onto clusters of masses ``n * exp(log_sizes)``, by log-domain Sinkhorn-Knopp iterations run until
    every cluster's mass is within 0.1% of its size (or ``sinkhorn_iterations``). The temperature is
    ``epsilon`` times the median gap between a point's squared distances to its nearest and second
    nearest start centre; the cluster potentials are carried from one step to the next. Returns the
    centres, the hard labels (each point's most probable cluster under the coldest plan of
    ``BALANCED_ROUNDING_COOLING``), the transport cost, the iterations and the last working plan's
    largest mass error (log ratio)."""
    n = x.shape[0]
    log_masses = jnp.log(n) + log_sizes
    nearest_two = -jax.lax.top_k(-squared_distances(x, centres), 2)[0]  # (n, 2), ascending
    # at least a millionth of the distances' own scale: half the points may sit at equal distances (a gap of 0)
    gap = jnp.maximum(jnp.median(nearest_two[:, 1] - nearest_two[:, 0]), 1e-6 * jnp.mean(nearest_two[:, 1]))
    temperature = jnp.maximum(epsilon * gap, jnp.finfo(x.dtype).tiny)  # constant points: distances 0, plan uniform

    def log_plan(centres, potentials, temperature):
        """Sinkhorn-balanced ``(n, k)`` log plan (rows normalised), its column potentials and mass error."""
        logits = -squared_distances(x, centres) / temperature

        def balance(carry):
            potentials, _, it = carry
            rows = -jax.scipy.special.logsumexp(logits + potentials[None], axis=1, keepdims=True)
            log_columns = jax.scipy.special.logsumexp(logits + rows + potentials[None], axis=0)  # the plan's masses
            return potentials + log_masses - log_columns, jnp.max(jnp.abs(log_columns - log_masses)), it + 1

        def unbalanced(carry):
            _, error, it = carry
            return (error > 1e-3) & (it < sinkhorn_iterations)

        potentials, error, _ = jax.lax.while_loop(unbalanced, balance,
                                                  (potentials, jnp.asarray(jnp.inf, x.dtype), 0))
        joint = logits + potentials[None]
        return joint - jax.scipy.special.logsumexp(joint, axis=1, keepdims=True), potentials, error

    def body(carry):
        centres, potentials, _, _, it = carry
        logs, potentials, error = log_plan(centres, potentials, temperature)
        weights = jnp.exp(logs)
        new = (weights.T @ x) / jnp.maximum(weights.sum(axis=0), 1e-12)[:, None]
        return new, potentials, jnp.sum(jnp.square(new - centres)), error, it + 1

    def cond(carry):
        _, _, shift, _, it = carry
        return (it < max_iter) & (shift > tol)

    inf = jnp.asarray(jnp.inf, x.dtype)
    centres, potentials, _, _, iterations = jax.lax.while_loop(cond, body, (centres, jnp.zeros_like(log_sizes), inf, inf, 0))
    logs, potentials, error = log_plan(centres, potentials, temperature)
    cost = jnp.sum(jnp.exp(logs) * squared_distances(x, centres))
    previous = 1.0
    for cooling in BALANCED_ROUNDING_COOLING:  # potentials are in units of 1/temperature: rescaled, they start close
        logs, potentials, _ = log_plan(centres, potentials * (cooling / previous), temperature / cooling)
        previous = cooling
    return centres, jnp.argmax(logs, axis=1).astype(jnp.int32), cost, iterations, error


def _balance_sizes(sizes, k: int) -> np.ndarray:
    """``(k,)`` float64 relative sizes, equal for None, or a ValueError that says what is expected."""
    if sizes is None:
        return np.ones(k)
    try:
        values = np.asarray(sizes, np.float64)
    except (TypeError, ValueError):
        values = None
    if values is None or values.shape != (k,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"sizes must be {k} positive numbers (relative cluster sizes, one per cluster), got {sizes!r}")
    return values


def balanced_kmeans(key, x, k: int, *, sizes=None, epsilon: float = 0.1, n_init: int = 4, max_iter: int = 100,
                    sinkhorn_iterations: int = 1000, tol: float = 1e-4) -> KMeansResult:
    """k-means held to cluster sizes known in advance (equal by default), for data whose classes are about
    equally common, as in most benchmarks.

    Plain k-means, and a mixture, may merge three similar classes into one cluster and spend the cluster
    saved on splitting another class in two. Here every Lloyd step assigns the ``(n, dim)`` points by
    entropic optimal transport onto clusters of the given sizes (Sinkhorn-Knopp, Cuturi 2013; the
    equipartition of Asano, Rupprecht & Vedaldi's self-labelling, ICLR 2020), and each centre is the mean
    of the points weighted by the transport plan. Each of ``n_init`` starts is a k-means++ start refined
    by plain Lloyd iterations; the start of lowest transport cost is kept.

    ``sizes``: ``(k,)`` relative cluster sizes (any positive scale), None for equal. ``epsilon``: the
    softness of the assignments, relative to the median gap between a point's squared distances to its
    nearest and second-nearest start centre. Small values approach hard balanced assignment and need
    more Sinkhorn iterations; values near 1 let soft plans pull the centres together (on the 8x8 digits'
    pixels, accuracy .80 at 0.03-0.1, about .56 at 1, with lopsided clusters). ``labels`` are each
    point's most probable cluster under a plan 64 times colder than the working one, so at the default
    they follow the sizes closely; a warning says when they are more than 20% off (large ``epsilon``,
    or fewer distinct points than clusters), or when Sinkhorn stopped at ``sinkhorn_iterations`` with
    masses more than 1% off.

    ``key``: a ``jax.random.key``. ``x``: ``(n, dim)`` numbers of any real dtype (centred in float64,
    then computed in float32). ``n_init``: starts; ``max_iter``: balanced Lloyd steps per start;
    ``tol``: stop when the centres move less (squared, summed; relative to the data's variance).
    Returns a :class:`KMeansResult`: ``centres`` ``(k, dim)`` float32, ``labels`` ``(n,)`` int32,
    ``inertia`` the sum of squared distances of the points to their labels' centres, ``iterations``
    the balanced Lloyd steps of the start kept.
    """
    x, mean = _centred_points(x)
    k = _check_k(k, len(x))
    n_init = check_positive_int(n_init, "n_init")
    max_iter = check_positive_int(max_iter, "max_iter")
    sinkhorn_iterations = check_positive_int(sinkhorn_iterations, "sinkhorn_iterations")
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be a positive number (the assignments' softness, about 0.1), got {epsilon!r}")
    sizes = _balance_sizes(sizes, k)
    if k == 1:  # one cluster holds every point: nothing to balance
        one = kmeans(key, x, 1, n_init=1, max_iter=max_iter, tol=tol)
        return one._replace(centres=(one.centres + mean).astype(np.float32))
    log_sizes = jnp.asarray(np.log(sizes / sizes.sum()), jnp.float32)
    xj = jnp.asarray(x)
    scaled_tol = _relative_tol(tol, x)
    best, best_cost = None, np.inf
    for key_init in jax.random.split(key, n_init):
        start, _, _, _ = _lloyd(xj, _kmeans_plus_plus(key_init, xj, k), 300, scaled_tol)  # kmeans' own max_iter
        centres, labels, cost, iterations, error = _balanced_lloyd(xj, start, log_sizes, float(epsilon), max_iter,
                                                                   sinkhorn_iterations, scaled_tol)
        if best is None or float(cost) < best_cost:
            inertia = float(jnp.sum(jnp.square(xj - centres[labels])))
            best, best_cost, best_error = KMeansResult((np.asarray(centres) + mean).astype(np.float32),
                                                       np.asarray(labels), inertia, int(iterations)), float(cost), float(error)
    if best_error > 0.01:  # masses within 1% of the sizes are as good as the data allows in practice
        warnings.warn(f"balanced k-means: Sinkhorn stopped after {sinkhorn_iterations} iterations with cluster masses "
                      f"up to {math.expm1(best_error):.1%} off their sizes: raise sinkhorn_iterations or epsilon",
                      stacklevel=2)
    counts, wanted = np.bincount(best.labels, minlength=k), len(x) * sizes / sizes.sum()
    off = float(np.max(np.abs(counts - wanted) / wanted))
    if off > 0.2:
        warnings.warn(f"balanced k-means: the clusters' sizes are up to {off:.0%} off the sizes asked ({counts.tolist()} "
                      f"against {np.round(wanted).astype(int).tolist()}): lower epsilon toward 0.1, or check that the "
                      f"points hold at least k={k} distinct values", stacklevel=2)
    return best


@functools.partial(jax.jit, static_argnames=("diagonal",))
def _log_responsibilities(x, weights, means, covariances, diagonal: bool):
    """``(n, k)`` log p(component j, x_i) under the mixture."""
    dim = x.shape[1]
    if diagonal:
        var = jnp.diagonal(covariances, axis1=1, axis2=2)  # (k, dim)
        maha = jnp.sum(jnp.square(x[:, None, :] - means[None]) / var[None], axis=-1)
        log_det = jnp.sum(jnp.log(var), axis=1)
    else:
        chol = jnp.linalg.cholesky(covariances)  # (k, dim, dim)
        diff = x[None, :, :] - means[:, None, :]  # (k, n, dim)
        solved = jax.scipy.linalg.solve_triangular(chol, jnp.swapaxes(diff, 1, 2), lower=True)  # (k, dim, n)
        maha = jnp.sum(jnp.square(solved), axis=1).T
        log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), axis=1)
    return jnp.log(weights)[None] - 0.5 * (maha + log_det[None] + dim * math.log(2 * math.pi))


@functools.partial(jax.jit, static_argnames=("diagonal", "max_iter"))
def _em(x, weights, means, covariances, reg, diagonal: bool, max_iter: int, tol):
    def e_step(params):
        log_joint = _log_responsibilities(x, *params, diagonal)
        log_norm = jax.scipy.special.logsumexp(log_joint, axis=1, keepdims=True)
        return jnp.exp(log_joint - log_norm), jnp.mean(log_norm)

    def m_step(resp):
        counts = resp.sum(axis=0) + 10 * jnp.finfo(x.dtype).eps
        means = (resp.T @ x) / counts[:, None]
        diff = x[None] - means[:, None]  # (k, n, dim)
        eye = jnp.eye(x.shape[1], dtype=x.dtype)
        if diagonal:
            var = jnp.einsum("nk,knd->kd", resp, jnp.square(diff)) / counts[:, None] + reg
            covariances = var[:, :, None] * eye[None]
        else:
            covariances = jnp.einsum("nk,kni,knj->kij", resp, diff, diff) / counts[:, None, None] + reg * eye[None]
        return counts / x.shape[0], means, covariances

    def body(carry):
        params, previous, _, it = carry
        resp, ll = e_step(params)
        return m_step(resp), ll, previous, it + 1

    def cond(carry):
        _, ll, previous, it = carry
        return (it < max_iter) & (jnp.abs(ll - previous) > tol)

    params = (weights, means, covariances)
    params, _, _, iterations = jax.lax.while_loop(cond, body, (params, jnp.asarray(-jnp.inf, x.dtype),
                                                                 jnp.asarray(jnp.inf, x.dtype), 0))
    resp, ll = e_step(params)
    return params, jnp.argmax(resp, axis=1).astype(jnp.int32), ll, iterations


def gaussian_mixture(key, x, k: int, *, covariance: str = "full", n_init: int = 4, max_iter: int = 200, tol: float = 1e-4,
                     reg: float = 1e-6) -> GaussianMixture:
    """EM for a ``k``-component Gaussian mixture on ``(n, dim)`` features from ``n_init`` starts
    (alternately the best of 10 k-means runs and k-means++ points with the data's covariance); the
    start of highest likelihood is kept. ``covariance``: ``"full"`` or
    ``"diag"``; ``reg`` is added to every variance (relative to the data's mean variance), so
    constant or collinear data stays finite.
    """
    if covariance not in ("full", "diag"):
        raise ValueError(f"covariance must be 'full' or 'diag', got {covariance!r}")
    x = check_features(x, "points")
    k = _check_k(k, len(x))
    n_init = check_positive_int(n_init, "n_init")
    if covariance == "full" and x.shape[1] > MAX_FULL_COVARIANCE_DIM:
        raise ValueError(f"a full-covariance mixture of {x.shape[1]}-dim points needs {k} {x.shape[1]}x{x.shape[1]} "
                         f"covariances, each from every point: reduce the points first (PCA, UMAP: --reduce) to at most "
                         f"{MAX_FULL_COVARIANCE_DIM} dimensions, or use covariance='diag' or k-means")
    xj = jnp.asarray(x)
    scale = float(np.mean(np.var(x, axis=0)))
    scale = scale if scale > 1e-12 else 1.0  # constant points: any positive variance keeps the likelihood finite
    best = None
    for start_index, key_init in enumerate(jax.random.split(key, n_init)):
        if start_index % 2 == 0:  # from a k-means partition, itself the best of several (cheap beside EM)
            centres, labels, _, _ = kmeans(key_init, x, k, n_init=KMEANS_STARTS_PER_GMM_START)
            counts = np.bincount(labels, minlength=k).astype(np.float32) + 1e-3
            covs = np.stack([np.cov(x[labels == j].T, bias=True).reshape(x.shape[1], x.shape[1]) if (labels == j).sum() > 1
                             else np.eye(x.shape[1]) * scale for j in range(k)]).astype(np.float32)
        else:  # k-means++ points with the whole data's covariance: EM may leave a partition k-means prefers
            centres = np.asarray(_kmeans_plus_plus(key_init, xj, k))
            counts = np.ones(k, np.float32)
            covs = np.repeat(np.cov(x.T, bias=True).reshape(1, x.shape[1], x.shape[1]), k, axis=0).astype(np.float32)
        covs += np.eye(x.shape[1], dtype=np.float32)[None] * reg * scale
        if covariance == "diag":
            covs = np.eye(x.shape[1], dtype=np.float32)[None] * np.diagonal(covs, axis1=1, axis2=2)[:, None, :]
        params, labels, ll, iterations = _em(xj, jnp.asarray(counts / counts.sum()), jnp.asarray(centres),
                                             jnp.asarray(covs), reg * scale, covariance == "diag",
                                             check_positive_int(max_iter, "max_iter"), tol)
        if not np.isfinite(float(ll)):
            continue
        if best is None or float(ll) > best.log_likelihood:
            best = GaussianMixture(*(np.asarray(p) for p in params), np.asarray(labels), float(ll), int(iterations))
    if best is None:
        raise FloatingPointError("every Gaussian mixture start lost its likelihood (NaN): standardise the points, or "
                                 "use covariance='diag' or k-means")
    return best


def pca(x, n_components: int, seed: int = 0) -> np.ndarray:
    """``(n, n_components)`` float32 projections on the top principal directions (largest first)."""
    from .baselines import _pca  # noqa: PLC0415

    x = check_features(x, "points")
    n_components = check_positive_int(n_components, "n_components")
    if n_components > min(x.shape):
        raise ValueError(f"cannot take {n_components} principal components of {x.shape[0]} points in {x.shape[1]} "
                         f"dimensions: use at most {min(x.shape)}")
    mean, directions = _pca(x, n_components, seed, bits=False)
    return ((x - mean) @ directions).astype(np.float32)


def require_umap():
    """The ``umap`` module of umap-learn, or an ImportError that says how to install it."""
    try:
        import umap  # noqa: PLC0415
    except ImportError:
        raise ImportError("UMAP needs umap-learn: pip install 'jaxhash[cluster]' (or pip install umap-learn)") from None
    return umap


def max_embed_dims(method: str, n: int, n_features: int | None = None) -> int:
    """The most dimensions ``method`` ("pca", "tsne", "umap") makes of ``n`` points of ``n_features`` values
    (None: not known yet): PCA and t-SNE (which starts from PCA) at most min(n, n_features); UMAP n - 2, as
    its spectral start needs one more eigenvector than dimensions, fewer than the points. Below 1: too few points."""
    if method == "umap":
        return n - 2
    return min(n, n_features) if n_features is not None else n


def embed(x, method: str = "tsne", n_components: int = 2, seed: int = 0, **options) -> np.ndarray:
    """A low-dimensional ``(n, n_components)`` float32 embedding by ``"pca"``, ``"tsne"``
    (scikit-learn's TSNE, Barnes-Hut up to 3 dimensions) or ``"umap"`` (umap-learn).

    ``options`` go to the library (e.g. ``perplexity=30``, ``n_neighbors=20, min_dist=0.0``).
    """
    x = check_features(x, "points")
    if method == "pca":
        return pca(x, n_components, seed)
    most = max_embed_dims(method, len(x), x.shape[1])
    if n_components > most:
        raise ValueError(f"{method} of {len(x)} points of {x.shape[1]} values cannot have {n_components} dimensions: "
                         + (f"use n_components at most {most}" if most >= 1 else "it needs more points"))
    if method == "tsne":
        try:
            from sklearn.manifold import TSNE  # noqa: PLC0415
        except ImportError:
            raise ImportError("t-SNE needs scikit-learn: pip install 'jaxhash[cluster]' (or pip install scikit-learn)") from None
        perplexity = min(options.pop("perplexity", 30.0), max(1.0, (len(x) - 1) / 3))
        tsne = TSNE(n_components=n_components, perplexity=perplexity, random_state=seed, init="pca",
                    method="barnes_hut" if n_components <= 3 else "exact", **options)
        return tsne.fit_transform(x).astype(np.float32)
    if method == "umap":
        umap = require_umap()
        options.setdefault("n_neighbors", min(15, len(x) - 1))
        options.setdefault("n_jobs", 1)  # a seeded UMAP runs on one thread anyway; saying so keeps it from warning
        reducer = umap.UMAP(n_components=n_components, random_state=seed, **options)
        return np.asarray(reducer.fit_transform(x), np.float32)
    raise ValueError(f"unknown embedding {method!r}; choose one of {', '.join(EMBEDDINGS)}")


# -- scores -----------------------------------------------------------------------------------------

def _contingency(labels_true, labels_pred) -> np.ndarray:
    labels_true, labels_pred = np.asarray(labels_true).ravel(), np.asarray(labels_pred).ravel()
    if labels_true.shape != labels_pred.shape:
        raise ValueError(f"labels_true and labels_pred must have the same length, got {len(labels_true)} and {len(labels_pred)}")
    if labels_true.size == 0:
        raise ValueError("cannot score an empty clustering")
    _, t = np.unique(labels_true, return_inverse=True)
    _, p = np.unique(labels_pred, return_inverse=True)
    table = np.zeros((t.max() + 1, p.max() + 1), np.int64)
    np.add.at(table, (t, p), 1)
    return table


def clustering_accuracy(labels_true, labels_pred) -> float:
    """Share of points whose cluster maps to their class under the best one-to-one matching of
    clusters to classes (Hungarian algorithm); unmatched clusters count as wrong."""
    from scipy.optimize import linear_sum_assignment  # noqa: PLC0415 - SciPy comes with JAX

    table = _contingency(labels_true, labels_pred)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / table.sum())


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-np.sum(p * np.log(p)))


def normalized_mutual_info(labels_true, labels_pred) -> float:
    """Mutual information divided by the arithmetic mean of the two entropies (scikit-learn's default);
    1.0 when both labellings are a single cluster."""
    table = _contingency(labels_true, labels_pred).astype(np.float64)
    n = table.sum()
    h_true, h_pred = _entropy(table.sum(axis=1)), _entropy(table.sum(axis=0))
    if h_true == 0 and h_pred == 0:
        return 1.0
    nz = table > 0
    outer = np.outer(table.sum(axis=1), table.sum(axis=0))
    mi = float(np.sum(table[nz] / n * np.log(table[nz] * n / outer[nz])))
    return max(0.0, mi / max((h_true + h_pred) / 2, 1e-300))


def adjusted_rand_index(labels_true, labels_pred) -> float:
    """Rand index corrected for chance (Hubert & Arabie): 1 for identical partitions, ~0 for random."""
    table = _contingency(labels_true, labels_pred)
    pairs = lambda m: m * (m - 1) / 2.0  # noqa: E731
    n = table.sum()
    index = pairs(table).sum()
    rows, cols = pairs(table.sum(axis=1)).sum(), pairs(table.sum(axis=0)).sum()
    expected = rows * cols / pairs(n) if n > 1 else 0.0
    maximum = (rows + cols) / 2
    if maximum == expected:
        return 1.0
    return float((index - expected) / (maximum - expected))
