"""Classic (non-neural) hashing baselines: LSH, PCAH, ITQ, SH, SpH, KMH.

These are the comparison rows of the deep-hashing tables (e.g. Zelensky, Pismenskova & Voronin's
CNN + autoencoder hashing). All are unsupervised and share the protocol
of :class:`jaxhash.hashers.Hasher`: ``fit(x)``, ``encode(x) -> packed uint32 codes``, save/load.
Features are ``(n, dim)`` floats (e.g. flattened pixels in [0, 1]).

References: LSH -- Charikar (2002), sign of random projections; PCAH -- sign of the top
principal components; ITQ -- Gong & Lazebnik (CVPR 2011); SH -- Weiss, Torralba & Fergus
(NIPS 2008); SpH -- Heo et al. (CVPR 2012); KMH -- He, Wen & Sun (CVPR 2013).
"""
from __future__ import annotations

import warnings

import numpy as np

from .hashers import Hasher, register

__all__ = ["LSH", "PCAH", "ITQ", "SH", "SpH", "KMH", "RoundingNoiseBits"]


class RoundingNoiseBits(UserWarning):
    """The note that more bits were asked of principal directions than the samples give variance to: the
    rest are rounding noise. Callers that use the directions but not the bits filter it by this class."""


# Up to this many dimensions the principal directions come from the covariance matrix, as in the
# published tables; wider features (photos: 64x64x3 = 12,288) use the Gram matrix when there are
# fewer samples than dimensions, else a randomised decomposition.
_COVARIANCE_MAX_DIM = 4096
# A principal direction whose variance is below this fraction of the largest one's has none: float32 sums leave
# about 1e-7 on directions the samples do not span.
_NO_VARIANCE = 1e-6


def _pca(x: np.ndarray, n_components: int, seed: int = 0, *, bits: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(dim,)`` and the top principal directions ``(dim, n_components)``, largest first.

    ``bits``: the directions become bits, so directions without variance are worth a note.

    Cost grows with the data, not with the square of the dimension: for ``dim`` > 4096, the
    ``(n, n)`` Gram matrix when ``n <= dim`` (exact: the same directions up to sign), else a
    randomised SVD (Halko, Martinsson & Tropp 2011; four power iterations) in float32.
    """
    n, dim = x.shape
    if n_components > dim:
        raise ValueError(f"cannot take {n_components} principal components of {dim}-dim features: use n_bits <= {dim}")
    mean = x.mean(axis=0)
    centred = x - mean
    if dim <= _COVARIANCE_MAX_DIM:
        values, vectors = np.linalg.eigh((centred.T @ centred).astype(np.float64) / max(1, n - 1))
        order = np.argsort(values)[::-1][:n_components]
        spanned = int(np.sum(values[order] > max(values[order[0]], 0.0) * _NO_VARIANCE))
        if bits and spanned < n_components:
            noise = "the other bit is" if n_components - spanned == 1 else f"the other {n_components - spanned} bits are"
            # n samples span at most n - 1 directions: there more samples add some; below that, the samples vary
            # in no more (constant pixels, unused latent units, repeated samples)
            fix = ("or more (and more varied) samples" if spanned >= n - 1 else
                   f"as the {n} samples vary in no more directions (constant values, or samples much alike)")
            warnings.warn(f"only {spanned} of the {n_components} principal directions of the {n} training samples have "
                          f"variance: {noise} rounding noise; use at most {spanned} bit{'s' if spanned != 1 else ''}, {fix}",
                          RoundingNoiseBits, stacklevel=3)
        return mean.astype(np.float32), vectors[:, order].astype(np.float32)
    mean = mean.astype(np.float32)
    centred = centred.astype(np.float32, copy=False)
    if n <= dim:
        values, vectors = np.linalg.eigh((centred @ centred.T).astype(np.float64))
        order = np.argsort(values)[::-1][:n_components]
        if values[order[-1]] <= values[order[0]] * 1e-12:
            raise ValueError(f"{n} samples span fewer than {n_components} directions: use n_bits below {n} or more samples")
        directions = centred.T @ (vectors[:, order] / np.sqrt(values[order])).astype(np.float32)
    else:
        directions = _randomised_range(centred, n_components, np.random.default_rng(seed))
    return mean, directions.astype(np.float32)


def _randomised_range(centred: np.ndarray, n_components: int, rng, oversample: int = 10, power_iterations: int = 4):
    """Top right singular vectors ``(dim, n_components)`` of ``centred`` by a randomised range finder."""
    width = min(n_components + oversample, min(centred.shape))
    basis, _ = np.linalg.qr(centred @ rng.standard_normal((centred.shape[1], width)).astype(np.float32))
    for _ in range(power_iterations):
        basis, _ = np.linalg.qr(centred.T @ basis)
        basis, _ = np.linalg.qr(centred @ basis)
    _, _, right = np.linalg.svd(basis.T @ centred, full_matrices=False)
    return right[:n_components].T


@register("lsh")
class LSH(Hasher):
    """Sign of random Gaussian projections of (by default centred) features.

    ``centre=False`` projects raw features, as the LSH rows of the CNNH-era tables appear to
    (see ``scripts/lsh_variants.py``); centring gives markedly better codes on pixels.
    """

    def __init__(self, n_bits: int = 32, seed: int = 0, centre: bool = True):
        super().__init__(n_bits, seed)
        self.centre = centre

    def _fit(self, x, y, rng):
        self.mean_ = x.mean(axis=0) if self.centre else np.zeros(x.shape[1], np.float32)
        self.projection_ = rng.standard_normal((x.shape[1], self.n_bits)).astype(np.float32)

    def _project(self, x):
        return (x - self.mean_) @ self.projection_


@register("pcah")
class PCAH(Hasher):
    """Sign of the top ``n_bits`` principal components."""

    def _fit(self, x, y, rng):
        self.mean_, self.projection_ = _pca(x, self.n_bits)

    def _project(self, x):
        return (x - self.mean_) @ self.projection_


@register("itq")
class ITQ(Hasher):
    """Iterative quantisation: PCA, then the rotation that minimises quantisation error."""

    def __init__(self, n_bits: int = 32, seed: int = 0, n_iter: int = 50):
        super().__init__(n_bits, seed)
        self.n_iter = n_iter

    def _fit(self, x, y, rng):
        self.mean_, pca = _pca(x, self.n_bits)
        v = ((x - self.mean_) @ pca).astype(np.float64)
        rotation, _ = np.linalg.qr(rng.standard_normal((self.n_bits, self.n_bits)))
        from .progress import progress  # noqa: PLC0415

        # shown only when slow (an SVD of n_bits x n_bits per iteration: minutes at 1,024 bits)
        for _ in progress(range(self.n_iter), desc=f"ITQ rotation ({self.n_bits} bits)", unit=" iterations", leave=False,
                          delay=3.0):
            b = np.where(v @ rotation >= 0, 1.0, -1.0)
            u_b, _, u_a_t = np.linalg.svd(b.T @ v)
            rotation = u_a_t.T @ u_b.T
        self.projection_ = (pca.astype(np.float64) @ rotation).astype(np.float32)

    def _project(self, x):
        return (x - self.mean_) @ self.projection_


@register("sh")
class SH(Hasher):
    """Spectral hashing: thresholded 1-D Laplacian eigenfunctions along principal directions.

    Follows Weiss's ``trainSH.m``: PCA to ``min(n_bits, dim)`` dimensions, a uniform box fitted
    to the data, and the ``n_bits`` analytical eigenfunctions with the smallest eigenvalues
    (skipping the constant one). Bit i is ``cos(m_i * pi * (x_j - min_j) / range_j) > 0``.
    """

    def _fit(self, x, y, rng):
        n_pca = min(self.n_bits, x.shape[1])
        self.mean_, self.projection_ = _pca(x, n_pca)
        z = (x - self.mean_) @ self.projection_
        eps = np.finfo(np.float32).eps
        self.low_ = z.min(axis=0) - eps
        span = z.max(axis=0) + eps - self.low_
        max_mode = np.ceil((self.n_bits + 1) * span / span.max()).astype(int)
        # Modes (dimension j, multiplier 1..max_mode_j - 1) as in trainSH.m; eigenvalue grows with
        # (multiplier / range)^2, so the smallest come first.
        dims = np.concatenate([np.full(m - 1, j) for j, m in enumerate(max_mode)])
        mults = np.concatenate([np.arange(1, m) for m in max_mode])
        order = np.argsort((mults / span[dims]) ** 2, kind="stable")[: self.n_bits]
        if order.size < self.n_bits:
            raise ValueError(f"spectral hashing found only {order.size} modes for {self.n_bits} bits")
        self.mode_dim_ = dims[order]
        self.omega_ = (mults[order] * np.pi / span[dims[order]]).astype(np.float32)
        self.span_ = span.astype(np.float32)

    def _project(self, x):
        z = (x - self.mean_) @ self.projection_
        return np.cos((z[:, self.mode_dim_] - self.low_[self.mode_dim_]) * self.omega_)


@register("sph")
class SpH(Hasher):
    """Spherical hashing: bit k is 1 when x lies inside hypersphere k (pivot p_k, radius t_k).

    Pivots are refined until each sphere holds half of the training sample and each pair of
    spheres shares about a quarter (mean and spread of the overlaps within ``eps_mean`` and
    ``eps_std`` of n/4), as in Heo et al. Codes are compared with the ordinary Hamming distance.
    """

    def __init__(self, n_bits: int = 32, seed: int = 0, n_train: int = 5000, max_iter: int = 100,
                 eps_mean: float = 0.1, eps_std: float = 0.15):
        super().__init__(n_bits, seed)
        self.n_train, self.max_iter, self.eps_mean, self.eps_std = n_train, max_iter, eps_mean, eps_std

    def _fit(self, x, y, rng):
        sample = x[rng.choice(x.shape[0], size=min(self.n_train, x.shape[0]), replace=False)].astype(np.float64)
        m = sample.shape[0]
        pivots = sample[rng.choice(m, size=self.n_bits, replace=self.n_bits > m)].copy()
        pivots += 1e-3 * sample.std() * rng.standard_normal(pivots.shape)
        quarter = m / 4.0
        off_diag = ~np.eye(self.n_bits, dtype=bool)
        self.n_iter_ = 0
        for it in range(self.max_iter):
            dist = _sq_distances(sample, pivots)
            radii = np.median(dist, axis=0)
            inside = (dist <= radii).astype(np.float64)
            overlap = inside.T @ inside
            self.n_iter_ = it + 1
            o = overlap[off_diag]
            if np.abs(o - quarter).mean() <= self.eps_mean * quarter and o.std() <= self.eps_std * quarter:
                break
            force = 0.5 * (overlap - quarter) / quarter
            np.fill_diagonal(force, 0.0)
            pivots += (force.sum(axis=1)[:, None] * pivots - force @ pivots) / self.n_bits
        dist = _sq_distances(sample, pivots)
        self.pivots_ = pivots.astype(np.float32)
        self.sq_radii_ = np.median(dist, axis=0).astype(np.float32)

    def _project(self, x):
        # Positive inside the sphere; ties (on the sphere) count as inside via the tiny margin.
        margin = 1e-6 * np.maximum(self.sq_radii_, 1e-12)
        return self.sq_radii_ + margin - _sq_distances(x, self.pivots_)


def _sq_distances(x, pivots):
    """Squared Euclidean distances ``(n, k)`` between rows of ``x`` and ``pivots``."""
    d = (x * x).sum(axis=1)[:, None] - 2.0 * x @ pivots.T + (pivots * pivots).sum(axis=1)[None, :]
    return np.maximum(d, 0.0)


@register("kmh")
class KMH(Hasher):
    """K-means hashing (He, Wen & Sun, CVPR 2013): affinity-preserving k-means in product subspaces.

    The data are PCA-projected to ``n_bits`` dimensions and split into subspaces of ``bits_per_subspace``
    (b) dimensions, components dealt so that subspaces carry balanced variance. In each subspace 2^b
    codewords are learned by alternating nearest-codeword assignment with an update that minimises
    quantisation error + ``affinity_weight`` * sum_ij w_ij (|c_i - c_j| - s * sqrt(h(i, j)))^2, where
    h is the Hamming distance between the codewords' b-bit indices and w_ij = n_i n_j / n^2. A point's
    code is the concatenated indices of its nearest codewords, compared by Hamming distance.
    """

    def __init__(self, n_bits: int = 32, seed: int = 0, bits_per_subspace: int = 4, n_iter: int = 30,
                 affinity_weight: float = 10.0, n_train: int = 20000):
        super().__init__(n_bits, seed)
        self.bits_per_subspace, self.n_iter, self.affinity_weight, self.n_train = bits_per_subspace, n_iter, affinity_weight, n_train

    def _fit(self, x, y, rng):
        import jax  # noqa: PLC0415
        import jax.numpy as jnp  # noqa: PLC0415

        b = int(self.bits_per_subspace)
        if b < 1 or b > 8 or self.n_bits % b:
            raise ValueError(f"KMH needs n_bits ({self.n_bits}) to be a multiple of bits_per_subspace ({b}, 1..8)")
        self.mean_, pca = _pca(x, self.n_bits)
        n_sub = self.n_bits // b
        # Deal components (largest variance first) in a snake order so subspaces balance variance.
        order = np.concatenate([np.arange(n_sub) if r % 2 == 0 else np.arange(n_sub)[::-1] for r in range(b)])
        subspace_of = order  # component k goes to subspace subspace_of[k]
        self.projection_ = np.concatenate([pca[:, subspace_of == s] for s in range(n_sub)], axis=1).astype(np.float32)
        sample = x[rng.choice(x.shape[0], size=min(self.n_train, x.shape[0]), replace=False)]
        z = ((sample - self.mean_) @ self.projection_).reshape(len(sample), n_sub, b).astype(np.float32)
        k = 2**b
        index_bits = ((np.arange(k)[:, None] >> np.arange(b)) & 1).astype(np.float32)
        sqrt_hamming = np.sqrt((index_bits[:, None, :] != index_bits[None, :, :]).sum(-1)).astype(np.float32)

        def energy(centres, z_sub, assign_onehot, scale):
            counts = assign_onehot.sum(0)
            quant = jnp.sum(assign_onehot * jnp.sum((z_sub[:, None, :] - centres[None]) ** 2, -1)) / z_sub.shape[0]
            diff = centres[:, None, :] - centres[None, :, :]
            dist = jnp.sqrt(jnp.sum(diff**2, -1) + 1e-12)
            weights = counts[:, None] * counts[None, :] / z_sub.shape[0] ** 2
            return quant + self.affinity_weight * jnp.sum(weights * (dist - scale * sqrt_hamming) ** 2)

        grad = jax.jit(jax.grad(energy))
        codebooks, scales = [], []
        for s in range(n_sub):
            z_sub = z[:, s, :]
            spread = z_sub.std(axis=0) + 1e-6
            centres = ((index_bits * 2 - 1) * spread).astype(np.float32)  # PCAH-like start: hypercube vertices
            scale = 1.0
            for _ in range(self.n_iter):
                d2 = ((z_sub[:, None, :] - centres[None]) ** 2).sum(-1)
                onehot = np.eye(k, dtype=np.float32)[d2.argmin(1)]
                lr = 0.5 / max(1.0, self.affinity_weight)
                for _ in range(10):
                    centres = centres - lr * np.asarray(grad(jnp.asarray(centres), jnp.asarray(z_sub), jnp.asarray(onehot), scale))
                dist = np.sqrt(((centres[:, None] - centres[None]) ** 2).sum(-1))
                counts = onehot.sum(0)
                w = counts[:, None] * counts[None, :]
                scale = float((w * dist * sqrt_hamming).sum() / max((w * sqrt_hamming**2).sum(), 1e-12))
            codebooks.append(centres)
            scales.append(scale)
        self.codebooks_ = np.stack(codebooks).astype(np.float32)  # (n_sub, 2^b, b)
        self.scales_ = np.asarray(scales, np.float32)

    def _project(self, x):
        n_sub, k, b = self.codebooks_.shape
        z = ((x - self.mean_) @ self.projection_).reshape(len(x), n_sub, b)
        d2 = ((z[:, :, None, :] - self.codebooks_[None]) ** 2).sum(-1)  # (n, n_sub, k)
        index = d2.argmin(-1)
        bits = (index[..., None] >> np.arange(b)) & 1  # (n, n_sub, b)
        return bits.reshape(len(x), n_sub * b).astype(np.float32) - 0.5
