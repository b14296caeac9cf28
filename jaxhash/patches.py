"""Single-layer k-means patch features, and the ``patches`` hasher (ITQ codes of them).

Coates, Lee & Ng, "An analysis of single-layer networks in unsupervised feature learning"
(AISTATS 2011): small patches, brightness- and contrast-normalised and ZCA-whitened, are
clustered by k-means; an image is described by the "triangle" activation of every centre at
every patch position, ``max(0, mean_j(z_j) - z_k)`` with ``z_k`` the distance to centre ``k``,
pooled over a ``pool`` x ``pool`` grid of regions. Nothing is learned but the centres, so the
features take seconds on a CPU and, unlike pixels, they say what edges and textures a picture
holds and roughly where. They are the library's fastest route to unsupervised codes and clusters
of photos (README: CIFAR-10 and Fashion-MNIST figures).
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .checks import check_positive_int
from .hashers import Hasher, register
from .images import common_shape

__all__ = ["PatchDictionary", "learn_patch_dictionary", "patch_features", "feature_scaling", "PatchHasher"]

# Added to a patch's variance (pixels in [0, 1]): flat patches stay finite, and patches of less contrast than about
# 25 grey levels (JPEG noise, smooth sky) are damped rather than stretched to unit variance. Coates et al. add 10 on
# the 0..255 scale (0.00015 here); this larger floor is the one every figure in the README was measured with.
_CONTRAST_FLOOR = 0.01
_WHITENING_FLOOR = 0.1  # added to the patch covariance's eigenvalues before ZCA whitening (Coates et al.'s value)
N_CENTRES, PATCH_SIZE, POOL = 256, 6, 2  # the defaults: 1,024 features, as in the README's figures
_BATCH_BYTES = 1 << 27  # per batch of patch_features: its patches, whitened patches and activations, float32


class PatchDictionary(NamedTuple):
    """What :func:`learn_patch_dictionary` learns; ``d = patch_size**2 * channels``."""

    patch_mean: np.ndarray  # (d,) float32, mean of the normalised patches
    whitening: np.ndarray  # (d, d) float32, ZCA whitening matrix
    centres: np.ndarray  # (n_centres, d) float32, k-means centres of the whitened patches
    patch_size: int
    stride: int  # between patch positions: min(H, W) // 64 of the images it was learned on, at least 1
    pool: int  # regions per side the activations are averaged over


def _stride_for(height: int, width: int) -> int:
    """Patch positions one pixel apart where the shorter side is under 128 pixels, then every
    ``min(H, W) // 64`` pixels, so a 256 x 256 photo costs about what a 64 x 64 one does."""
    return max(1, min(height, width) // 64)


def _check_geometry(shape, patch_size: int, pool: int, stride: int | None = None) -> int:
    """The stride between patch positions in images of ``shape`` (H, W, C) (``stride``, or the rule's for
    that size), or a ValueError that says what to change when the patches or the pooling regions do not fit."""
    height, width = int(shape[0]), int(shape[1])
    if patch_size > min(height, width):
        raise ValueError(f"patches of {patch_size} x {patch_size} pixels do not fit in {height} x {width} images: use "
                         f"images of at least {patch_size} x {patch_size} pixels or patch_size <= {min(height, width)}")
    stride = _stride_for(height, width) if stride is None else stride
    positions = (min(height, width) - patch_size) // stride + 1
    if pool > positions:
        raise ValueError(f"{height} x {width} images hold {positions} patch positions per side (stride {stride}), "
                         f"too few for pool={pool} regions: use larger images, pool <= {positions} or a smaller patch_size")
    return stride


def _image_batch(images, who: str) -> np.ndarray:
    """``images`` as an ``(n, H, W, C)`` uint8 array, or a ValueError naming ``who`` takes them."""
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"{who} takes (n, H, W, C) uint8 images, got {images.dtype} of shape {images.shape}")
    return images


def _normalise(patches):
    """Each patch (last axis) to zero mean and unit variance: brightness and contrast removed."""
    patches = patches - patches.mean(-1, keepdims=True)
    return patches / jnp.sqrt(patches.var(-1, keepdims=True) + _CONTRAST_FLOOR)


def learn_patch_dictionary(key, images, n_centres: int = N_CENTRES, patch_size: int = PATCH_SIZE, pool: int = POOL,
                           n_patches: int = 200_000, kmeans_iterations: int = 50) -> PatchDictionary:
    """Learn the centres from ``n_patches`` random patches of ``images``.

    Args:
      key: PRNG key (patch positions and the k-means start).
      images: ``(n, H, W, C)`` uint8, one size.
      n_centres: k-means centres, i.e. features per pooling region.
      patch_size: patch side in pixels (6 in Coates et al.).
      pool: the activations are averaged over ``pool`` x ``pool`` regions of the image.
      n_patches: patches drawn at random (with replacement); where the images hold no more, every one of them.
      kmeans_iterations: Lloyd iterations of the (single-start) k-means.
    Returns:
      a :class:`PatchDictionary`; features are ``n_centres * pool**2`` wide.
    """
    from .cluster import kmeans  # noqa: PLC0415

    images = _image_batch(images, "learn_patch_dictionary")
    n_centres, patch_size, pool = (check_positive_int(v, name) for v, name in
                                   ((n_centres, "n_centres"), (patch_size, "patch_size"), (pool, "pool")))
    n_patches = check_positive_int(n_patches, "n_patches")
    kmeans_iterations = check_positive_int(kmeans_iterations, "kmeans_iterations")
    if not len(images):
        raise ValueError("learn_patch_dictionary needs images to learn from, got none")
    stride = _check_geometry(images.shape[1:], patch_size, pool)
    n, height, width, channels = images.shape
    grid = (n, height - patch_size + 1, width - patch_size + 1)
    key_where, key_kmeans = jax.random.split(key)
    if n_patches >= math.prod(grid):  # every patch the images hold, once
        which, top, left = (v.ravel() for v in np.indices(grid))
        n_patches = len(which)
    else:
        which, top, left = (np.asarray(v) for v in jax.random.randint(key_where, (3, n_patches), 0,
                                                                       jnp.array(grid)[:, None]))
    if n_centres > n_patches:
        raise ValueError(f"n_centres={n_centres} is more than the {n_patches} patches sampled: lower n_centres")
    rows = top[:, None] + np.arange(patch_size)
    cols = left[:, None] + np.arange(patch_size)
    patches = images[which[:, None, None], rows[:, :, None], cols[:, None, :]]  # (n_patches, P, P, C)
    patches = np.asarray(_normalise(jnp.asarray(patches.reshape(n_patches, -1), jnp.float32) / 255))
    mean = patches.mean(0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(patches - mean, rowvar=False).astype(np.float64))
    whitening = (eigenvectors / np.sqrt(np.maximum(eigenvalues, 0) + _WHITENING_FLOOR)) @ eigenvectors.T
    whitened = (patches - mean) @ whitening.astype(np.float32)
    centres = kmeans(key_kmeans, whitened, n_centres, n_init=1, max_iter=kmeans_iterations).centres
    return PatchDictionary(mean.astype(np.float32), whitening.astype(np.float32), np.asarray(centres, np.float32),
                           patch_size, stride, pool)


def _pooling_matrix(positions: int, pool: int) -> np.ndarray:
    """``(positions, pool)`` float32: position i belongs to region ``i * pool // positions``, averaged."""
    region = np.arange(positions) * pool // positions
    matrix = (region[:, None] == np.arange(pool)[None]).astype(np.float32)
    return matrix / matrix.sum(0, keepdims=True)


def _features(dictionary: PatchDictionary, images):
    """Pooled triangle activations ``(b, pool * pool * n_centres)`` of ``(b, H, W, C)`` uint8 images (jitted per shape)."""
    return _features_jit(jnp.asarray(dictionary.patch_mean), jnp.asarray(dictionary.whitening),
                         jnp.asarray(dictionary.centres), images, dictionary.patch_size, dictionary.stride, dictionary.pool)


@functools.partial(jax.jit, static_argnames=("patch_size", "stride", "pool"))
def _features_jit(mean, whitening, centres, images, patch_size: int, stride: int, pool: int):
    b, height, width, channels = images.shape
    x = images.astype(jnp.float32).transpose(0, 3, 1, 2) / 255
    patches = jax.lax.conv_general_dilated_patches(x, (patch_size, patch_size), (stride, stride), "VALID")
    rows, cols = patches.shape[2], patches.shape[3]  # patches: (b, C * P * P, rows, cols), channel-major
    patches = patches.reshape(b, channels, patch_size, patch_size, rows, cols).transpose(0, 4, 5, 2, 3, 1)
    whitened = (_normalise(patches.reshape(b, rows, cols, -1)) - mean) @ whitening
    squared = (whitened ** 2).sum(-1, keepdims=True) - 2 * whitened @ centres.T + (centres ** 2).sum(-1)
    distance = jnp.sqrt(jnp.maximum(squared, 0))
    activation = jnp.maximum(distance.mean(-1, keepdims=True) - distance, 0)  # (b, rows, cols, n_centres)
    pooled = jnp.einsum("bijk,ip,jq->bpqk", activation, _pooling_matrix(rows, pool), _pooling_matrix(cols, pool))
    return jnp.sqrt(pooled.reshape(b, -1))  # the square root tames the few strong activations


def patch_features(dictionary: PatchDictionary, images, batch_size: int | None = None,
                   progress: bool = False) -> np.ndarray:
    """Features ``(n, n_centres * pool**2)`` float32 of ``(n, H, W, C)`` uint8 images, in batches of
    about 128 MB of work; ``progress`` shows a bar (images per second).

    Patches are taken every ``dictionary.stride`` pixels, the stride chosen for the size the dictionary
    was learned at: images of another size are accepted where the patches and regions fit, but are
    best resized to that size first (larger ones cost more, smaller ones hold fewer positions).
    """
    images = _image_batch(images, "patch_features")
    d = dictionary.centres.shape[1]
    if images.shape[3] * dictionary.patch_size ** 2 != d:
        raise ValueError(f"this dictionary was learned on {d // dictionary.patch_size ** 2}-channel images, got "
                         f"{images.shape[3]} channels: convert them first")
    _check_geometry(images.shape[1:], dictionary.patch_size, dictionary.pool, dictionary.stride)
    positions = math.prod((side - dictionary.patch_size) // dictionary.stride + 1 for side in images.shape[1:3])
    if batch_size is None:  # the image as floats, then per position its patch twice (raw, whitened) and its activations
        per_image = 4 * (math.prod(images.shape[1:]) + positions * (2 * d + 2 * len(dictionary.centres)))
        if per_image > 16 * _BATCH_BYTES:
            raise ValueError(f"one {images.shape[1]}x{images.shape[2]} image holds {positions} patch positions at this "
                             f"dictionary's stride of {dictionary.stride}, about {per_image / 2 ** 30:.0f} GB of work: resize "
                             "the images first, e.g. to the size the dictionary was learned at (the patches hasher does)")
        batch_size = max(1, _BATCH_BYTES // per_image)
    from .progress import progress as progress_bar  # noqa: PLC0415

    parts = []
    with progress_bar(total=len(images), desc="patch features", unit=" images", leave=False, disable=not progress) as bar:
        for start in range(0, len(images), batch_size):
            parts.append(np.asarray(_features(dictionary, images[start:start + batch_size])))
            bar.update(len(parts[-1]))
    width = len(dictionary.centres) * dictionary.pool ** 2
    return np.concatenate(parts) if parts else np.zeros((0, width), np.float32)


def feature_scaling(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature ``(mean, scale)`` of ``(n, width)`` features, each ``(width,)`` float32: ``(features - mean) /
    scale`` standardises them (a feature constant over the images keeps a scale of 1e-6, not 0)."""
    return features.mean(0), features.std(0) + 1e-6


@register("patches")
class PatchHasher(Hasher):
    """ITQ codes of single-layer k-means patch features (Coates, Lee & Ng 2011), standardised.

    Unsupervised and quick to fit (no gradient training); ``encode_details`` also returns the
    ``(n, n_bits)`` real-valued ITQ projection as ``"features"`` for two-stage search.
    """

    consumes = "images"

    def __init__(self, n_bits: int = 32, seed: int = 0, n_centres: int = N_CENTRES, patch_size: int = PATCH_SIZE, pool: int = POOL,
                 n_patches: int = 200_000, progress: bool = True):
        super().__init__(n_bits, seed)
        self.n_centres, self.patch_size, self.pool, self.n_patches = n_centres, patch_size, pool, n_patches
        self.progress = progress

    def _fit_shape(self, images):
        return common_shape(images, f"{self.method}: the training images", mixed_sizes="most common")

    def _fit(self, x, y, rng):
        from .baselines import ITQ  # noqa: PLC0415

        n_centres, pool = check_positive_int(self.n_centres, "n_centres"), check_positive_int(self.pool, "pool")
        width = n_centres * pool ** 2
        if int(self.n_bits) > width:
            raise ValueError(f"patches: {self.n_bits} bits need as many features, and n_centres={n_centres} x pool={pool}**2 "
                             f"gives {width}: use at most {width} bits, or n_centres={math.ceil(self.n_bits / pool ** 2)}")
        dictionary = learn_patch_dictionary(jax.random.key(int(self.seed)), x, n_centres, self.patch_size, pool,
                                            self.n_patches)
        self.patch_mean_, self.whitening_, self.centres_ = dictionary.patch_mean, dictionary.whitening, dictionary.centres
        self.stride_ = dictionary.stride
        features = patch_features(dictionary, x, progress=bool(self.progress))
        self.feature_mean_, self.feature_scale_ = feature_scaling(features)
        itq = ITQ(int(self.n_bits), int(self.seed)).fit(self._standardised(features))
        self.itq_mean_, self.projection_ = itq.mean_, itq.projection_

    def dictionary(self) -> PatchDictionary:
        """The learned :class:`PatchDictionary`."""
        self._check_fitted()
        return PatchDictionary(self.patch_mean_, self.whitening_, self.centres_, int(self.patch_size), int(self.stride_),
                               int(self.pool))

    def _standardised(self, features):
        return (features - self.feature_mean_) / self.feature_scale_

    def latents(self, x) -> np.ndarray:
        """This model's feature space: standardised patch features ``(n, n_centres * pool**2)`` float32 of
        images of any size (converted to the fitted shape, with one note), e.g. for clustering
        (``jaxhash cluster --features MODEL_FOLDER``)."""
        parts = [self._standardised(patch_features(self.dictionary(), b)) for b in self._batches(x, 1024)]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.centres_) * int(self.pool) ** 2), np.float32)

    def _project(self, x):
        return (self._standardised(patch_features(self.dictionary(), x)) - self.itq_mean_) @ self.projection_

    def _encode_batch(self, batch) -> dict:
        from .codes import pack_bits_host  # noqa: PLC0415

        projected = np.asarray(self._project(batch), np.float32)
        return {"codes": pack_bits_host(projected > 0), "features": projected}
