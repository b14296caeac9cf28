"""k-means patch features (Coates, Lee & Ng) against a NumPy loop, and the ``patches`` hasher."""
import numpy as np
import pytest
from PIL import Image

from jaxhash import load_hasher, make_hasher
from jaxhash.patches import PatchDictionary, learn_patch_dictionary, patch_features


def _images(rng, n, height, width, channels):
    """Smooth random pictures (blobs on a gradient), so patches have structure to cluster."""
    rows, cols = np.mgrid[:height, :width]
    out = np.empty((n, height, width, channels), np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        blob = np.exp(-((rows - cy) ** 2 + (cols - cx) ** 2) / rng.uniform(4, 20))
        for c in range(channels):
            out[i, :, :, c] = np.clip(40 + 150 * blob * rng.uniform(0.5, 1) + rng.normal(0, 8, blob.shape) + 2 * c * cols,
                                      0, 255)
    return out


def _reference_features(d: PatchDictionary, image: np.ndarray) -> np.ndarray:
    """One ``(H, W, C)`` uint8 image, by loops: every patch (rows, columns, channels order) normalised,
    whitened, triangle-activated against the centres and averaged per region, then the square root."""
    p, s, pool = d.patch_size, d.stride, d.pool
    x = image.astype(np.float64) / 255
    tops = range(0, x.shape[0] - p + 1, s)
    lefts = range(0, x.shape[1] - p + 1, s)
    act = np.zeros((len(tops), len(lefts), len(d.centres)))
    for a, top in enumerate(tops):
        for b, left in enumerate(lefts):
            patch = x[top:top + p, left:left + p].ravel()
            patch = (patch - patch.mean()) / np.sqrt(patch.var() + 0.01)
            z = np.linalg.norm((patch - d.patch_mean) @ d.whitening - d.centres, axis=1)
            act[a, b] = np.maximum(z.mean() - z, 0)
    out = np.zeros((pool, pool, len(d.centres)))
    for i in range(pool):
        for j in range(pool):
            rows = [a for a in range(len(tops)) if a * pool // len(tops) == i]
            cols = [b for b in range(len(lefts)) if b * pool // len(lefts) == j]
            out[i, j] = act[np.ix_(rows, cols)].mean((0, 1))
    return np.sqrt(out.ravel())


@pytest.mark.parametrize("shape", [(13, 11, 3), (9, 9, 1)])
def test_features_equal_a_loop_over_patches_for_colour_grey_and_uneven_regions(key, rng, shape):
    images = _images(rng, 30, *shape)
    d = learn_patch_dictionary(key, images, n_centres=6, patch_size=4, pool=2, n_patches=3000)
    assert d.centres.shape == (6, 4 * 4 * shape[2]) and d.whitening.shape == (16 * shape[2],) * 2
    features = patch_features(d, images[:4])
    assert features.shape == (4, 6 * 4) and features.dtype == np.float32
    for image, row in zip(images[:4], features):
        np.testing.assert_allclose(row, _reference_features(d, image), rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(patch_features(d, images[:4], batch_size=1), features, rtol=1e-5, atol=1e-6)


def test_whitening_decorrelates_the_normalised_patches(key, rng):
    images = _images(rng, 30, 9, 9, 1)
    d = learn_patch_dictionary(key, images, n_centres=4, patch_size=3, n_patches=100_000)
    every = np.stack([image[a:a + 3, b:b + 3].ravel() for image in images for a in range(7) for b in range(7)]) / 255
    every = every - every.mean(1, keepdims=True)
    every = every / np.sqrt(every.var(1, keepdims=True) + 0.01)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(every, rowvar=False))
    whitened_cov = eigenvectors.T @ d.whitening @ np.cov(every, rowvar=False) @ d.whitening @ eigenvectors
    np.testing.assert_allclose(whitened_cov, np.diag(eigenvalues / (eigenvalues + 0.1)), atol=0.05)
    np.testing.assert_allclose(d.patch_mean, every.mean(0), atol=0.02)


def test_features_ignore_brightness_and_large_images_are_sampled_sparsely(key, rng):
    images = np.minimum(_images(rng, 20, 16, 16, 1), 225)
    d = learn_patch_dictionary(key, images, n_centres=5, patch_size=4, n_patches=2000)
    np.testing.assert_allclose(patch_features(d, images + 30), patch_features(d, images), rtol=1e-4,
                               atol=1e-5)  # each patch loses its own mean: brightness says nothing
    flat = np.full((2, 16, 16, 1), 128, np.uint8)
    assert np.isfinite(patch_features(d, flat)).all()
    big = np.repeat(np.repeat(_images(rng, 2, 40, 40, 3), 4, axis=1), 4, axis=2)  # 160 x 160
    big_d = learn_patch_dictionary(key, big, n_centres=4, patch_size=6, n_patches=2000)
    assert big_d.stride == 2  # 160 // 64: a large photo costs about what a 64-pixel one does
    np.testing.assert_allclose(patch_features(big_d, big[:1])[0], _reference_features(big_d, big[0]), rtol=2e-4, atol=2e-5)


def test_bad_settings_and_inputs_say_what_to_change(key, rng):
    images = _images(rng, 10, 8, 8, 3)
    with pytest.raises(ValueError, match="do not fit in 8 x 8 images: use images of at least 9 x 9 pixels or patch_size <= 8"):
        learn_patch_dictionary(key, images, patch_size=9)
    with pytest.raises(ValueError, match=r"hold 3 patch positions per side \(stride 1\), too few for pool=4 regions: use larger images, pool <= 3"):
        learn_patch_dictionary(key, images, patch_size=6, pool=4)
    with pytest.raises(ValueError, match="n_centres=50 is more than the 20 patches sampled"):
        learn_patch_dictionary(key, images, n_centres=50, n_patches=20)
    with pytest.raises(ValueError, match="n_centres=50 is more than the 40 patches sampled"):
        learn_patch_dictionary(key, images[:10], n_centres=50, patch_size=7)  # 10 images x 2 x 2 positions
    with pytest.raises(ValueError, match="uint8 images"):
        learn_patch_dictionary(key, images.astype(np.float32))
    d = learn_patch_dictionary(key, images, n_centres=4, patch_size=3, n_patches=500)
    with pytest.raises(ValueError, match="learned on 3-channel images, got 1 channels"):
        patch_features(d, images[..., :1])
    with pytest.raises(ValueError, match=r"one 6000x4000 image holds 23980004 patch positions at this dictionary's stride "
                                         r"of 1, about \d+ GB of work: resize the images first"):
        patch_features(d, np.zeros((1, 6000, 4000, 3), np.uint8))  # a phone photo at a thumbnail's stride
    with pytest.raises(ValueError, match="n_centres must be a positive integer"):
        learn_patch_dictionary(key, images, n_centres=0)
    with pytest.raises(ValueError, match="needs images to learn from, got none"):
        learn_patch_dictionary(key, images[:0])
    big = learn_patch_dictionary(key, np.repeat(np.repeat(images, 16, axis=1), 16, axis=2), n_centres=4, pool=3,
                                 n_patches=500)
    assert big.stride == 2  # learned on 128 x 128: smaller images keep its stride, and are refused where regions go empty
    with pytest.raises(ValueError, match=r"8 x 8 images hold 2 patch positions per side \(stride 2\), too few for "
                                         "pool=3 regions: use larger images"):
        patch_features(big, images)


def test_patches_hasher_codes_features_save_load_and_other_sizes(tmp_path, rng):
    images = _images(rng, 40, 12, 12, 3)
    hasher = make_hasher("patches", n_bits=16, n_centres=8, patch_size=4, n_patches=3000).fit(images)
    details = hasher.encode_details(images)
    assert details["codes"].shape == (40, 1) and details["codes"].dtype == np.uint32
    assert details["features"].shape == (40, 16)  # the ITQ projection, for two-stage search
    np.testing.assert_array_equal(details["codes"], hasher.encode(images))
    assert hasher.latents(images).shape == (40, 8 * 4)
    loaded = load_hasher(hasher.save(tmp_path / "m"))
    assert loaded.fingerprint() == hasher.fingerprint()
    np.testing.assert_array_equal(loaded.encode(images), details["codes"])
    grey_large = [np.asarray(_images(rng, 1, 24, 20, 1)[0]) for _ in range(3)]
    with pytest.warns(UserWarning, match="resized"):
        codes = loaded.encode(grey_large)
    as_colour = [np.repeat(np.asarray(Image.fromarray(g[..., 0]).resize((12, 12), Image.BILINEAR))[..., None], 3, axis=2)
                 for g in grey_large]
    np.testing.assert_array_equal(codes, loaded.encode(np.stack(as_colour)))  # resized, then grey to colour
    with pytest.raises(ValueError, match=r"64 bits need as many features, and n_centres=8 x pool=2\*\*2 gives 32: use at "
                                         "most 32 bits, or n_centres=16"):
        make_hasher("patches", n_bits=64, n_centres=8).fit(images)
    with pytest.raises(ValueError, match="pool must be a positive integer"):
        make_hasher("patches", n_bits=8, pool=0).fit(images)


def test_patch_features_cluster_the_digits_better_than_their_pixels(key):
    pytest.importorskip("sklearn")
    from jaxhash import cluster
    from jaxhash.data import load_dataset

    digits = load_dataset("digits")
    images = digits.x_train
    d = learn_patch_dictionary(key, images, n_centres=32, patch_size=4, pool=2, n_patches=20_000)
    features = patch_features(d, images)
    features = (features - features.mean(0)) / (features.std(0) + 1e-6)
    accuracy = cluster.clustering_accuracy(digits.y_train, cluster.kmeans(key, features, 10).labels)
    pixels = images.reshape(len(images), -1).astype(np.float32)
    pixel_accuracy = cluster.clustering_accuracy(digits.y_train, cluster.kmeans(key, pixels, 10).labels)
    assert accuracy > max(pixel_accuracy, 0.78), (accuracy, pixel_accuracy)  # .81-.85 against .77-.79 (three keys)
