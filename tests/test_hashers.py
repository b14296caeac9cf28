"""The hasher protocol: what a method consumes, input shapes recorded in fit, batched encoding,
fingerprints, save/load, and the lazy registry."""
import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

import jaxhash
from conftest import REPO
from jaxhash import hashers
from jaxhash.atomic import current_version
from jaxhash.images import to_features


@pytest.fixture
def images(rng):
    return rng.integers(0, 256, (60, 6, 5, 3)).astype(np.uint8)


def test_every_builtin_method_resolves_to_its_class():
    assert set(hashers._BUILTIN) <= set(jaxhash.available_methods())
    for name in hashers._BUILTIN:
        cls = hashers.hasher_class(name)
        assert cls.method == name and cls.consumes in hashers.CONSUMES
    with pytest.raises(ValueError, match="unknown hashing method 'nosuch'; available: .*itq"):
        hashers.make_hasher("nosuch")


def test_listing_methods_imports_no_model_code():
    code = ("import sys, jaxhash.hashers as h; names = h.available_methods(); "
            "print(len(names), any(m in sys.modules for m in ('jax', 'flax', 'optax', 'jaxhash.semantic')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout.split()
    assert out == [str(len(hashers._BUILTIN)), "False"]


def test_fit_on_images_records_the_input_shape(images, tmp_path):
    itq = jaxhash.ITQ(n_bits=8, seed=0).fit(images)
    assert itq.input_shape_ == (6, 5, 3) and itq.n_features_in_ == 90
    np.testing.assert_array_equal(itq.encode(images), jaxhash.ITQ(n_bits=8, seed=0).fit(to_features(images)).encode(to_features(images)))
    again = jaxhash.load_hasher(itq.save(tmp_path / "itq"))
    assert again.input_shape_ == (6, 5, 3)
    np.testing.assert_array_equal(again.encode(images), itq.encode(images))
    saved = current_version(tmp_path / "itq") / "hasher.json"
    assert json.loads(saved.read_text())["learned"]["input_shape_"] == [6, 5, 3]


def test_encode_converts_other_sizes_and_channels_with_one_note(images, rng):
    itq = jaxhash.ITQ(n_bits=8, seed=0).fit(images)
    grey_large = [rng.integers(0, 256, (12, 10)).astype(np.uint8) for _ in range(7)]
    with pytest.warns(UserWarning) as caught:
        codes = itq.encode(grey_large + [images[0]], batch_size=3)  # three batches, one note
    assert [str(w.message) for w in caught] == ["8 images: converted 7 to RGB and resized 7 to 6x5 for the model's input shape (6, 5, 3)"]
    assert codes.shape == (8, 1)
    np.testing.assert_array_equal(codes[-1], itq.encode(images[:1])[0])
    with warnings.catch_warnings(record=True) as again:  # the same conversion in a later call: said once per model
        warnings.simplefilter("always")
        itq.encode(grey_large)
    assert not again
    with pytest.warns(UserWarning, match="3 images: resized 3 to 6x5"):  # another kind is said
        itq.encode([rng.integers(0, 256, (12, 10, 3)).astype(np.uint8) for _ in range(3)])


def test_encode_in_batches_equals_one_batch(images):
    lsh = jaxhash.LSH(n_bits=40, seed=1).fit(images)
    np.testing.assert_array_equal(lsh.encode(images, batch_size=7, progress=True), lsh.encode(images))
    assert lsh.encode(images[:0]).shape == (0, 2)
    np.testing.assert_allclose(lsh.project(images, batch_size=11), lsh.project(images), atol=1e-5)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        lsh.encode(images, batch_size=0)


def test_a_hasher_fitted_on_features_encodes_features_only(images):
    features = to_features(images)
    pcah = jaxhash.PCAH(n_bits=4).fit(features)
    assert pcah.input_shape_ is None
    assert pcah.encode(features).shape == (60, 1)
    with pytest.raises(ValueError, match="fitted on feature vectors, not images"):
        pcah.encode(images)
    with pytest.raises(ValueError, match="fitted on 90 features but got 89"):
        pcah.encode(features[:, 1:])


def test_bad_training_input():
    with pytest.raises(hashers.NotFittedError, match="call fit"):
        jaxhash.ITQ(n_bits=4).encode(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="n_bits must be a positive integer"):
        jaxhash.ITQ(n_bits=0).fit(np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match="at least 2 training rows"):
        jaxhash.ITQ(n_bits=2).fit(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="different sizes: 4x4 .*conform_images"):
        jaxhash.ITQ(n_bits=2).fit([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)])
    with pytest.raises(TypeError, match="uint8"):
        jaxhash.ITQ(n_bits=2).fit(np.zeros((5, 4, 4, 3), np.float32))


def test_fingerprint_identifies_the_learned_model(images, tmp_path):
    a = jaxhash.ITQ(n_bits=8, seed=0).fit(images)
    b = jaxhash.ITQ(n_bits=8, seed=1).fit(images)
    assert a.fingerprint() == jaxhash.ITQ(n_bits=8, seed=0).fit(images).fingerprint()
    assert a.fingerprint() != b.fingerprint()
    assert jaxhash.load_hasher(a.save(tmp_path / "a")).fingerprint() == a.fingerprint()
    with pytest.raises(hashers.NotFittedError):
        jaxhash.ITQ(n_bits=8).fingerprint()


def test_load_errors_say_what_to_do(tmp_path, images):
    with pytest.raises(FileNotFoundError, match="jaxhash fit"):
        jaxhash.load_hasher(tmp_path / "missing")
    path = jaxhash.ITQ(n_bits=8).fit(images).save(tmp_path / "m")
    with pytest.raises(ValueError, match="is a file, not a saved hasher"):
        jaxhash.load_hasher(current_version(path) / "hasher.json")
    with pytest.raises(ValueError, match="holds a 'itq' hasher"):
        jaxhash.LSH.load(path)
    meta_file = current_version(path) / "hasher.json"
    meta = json.loads(meta_file.read_text())
    meta["params"]["rotation_schedule"] = "cosine"  # a setting only a newer jaxhash would write
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"settings this jaxhash does not know \(rotation_schedule\).*newer jaxhash"):
        jaxhash.load_hasher(path)
    meta_file.write_text("{")
    with pytest.raises(ValueError, match="damaged"):
        jaxhash.load_hasher(path)
    path = jaxhash.ITQ(n_bits=8).fit(images).save(tmp_path / "pickled")
    with open(current_version(path) / "arrays.npz", "wb") as f:
        np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)  # what a stranger's file may hold
    with pytest.raises(ValueError, match=r"arrays.npz is damaged \(it is not a NumPy archive of plain arrays\): re-run"):
        jaxhash.load_hasher(path)  # not NumPy's advice to unpickle it


def test_register_checks_what_a_method_consumes():
    with pytest.raises(ValueError, match="consumes must be one of"):
        @hashers.register("bad")
        class Bad(hashers.Hasher):  # noqa: F841
            consumes = "sounds"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "bad" not in jaxhash.available_methods()


class MeanColour(hashers.Hasher):
    """A toy image hasher: bit j = mean of colour channel j % 3 in row band j // 3 above its training median."""

    consumes = "images"

    def __init__(self, n_bits: int = 6, seed: int = 0, image_size: int = 4):
        super().__init__(n_bits, seed)
        self.image_size = image_size

    def _fit_shape(self, images):
        return (self.image_size, self.image_size, 3)

    def _bands(self, x):
        assert x.dtype == np.uint8 and x.shape[1:] == (self.image_size, self.image_size, 3)
        bands = np.array_split(x.astype(np.float32), self.n_bits // 3, axis=1)
        return np.concatenate([b.mean(axis=(1, 2)) for b in bands], axis=1)

    def _fit(self, x, y, rng):
        self.median_ = np.median(self._bands(x), axis=0)

    def _project(self, x):
        return self._bands(x) - self.median_


def test_an_image_hasher_gets_images_at_its_own_input_size(rng, tmp_path):
    hashers.register("mean-colour-test")(MeanColour)
    try:
        photos = [rng.integers(0, 256, (9, 7, 3)).astype(np.uint8) for _ in range(6)]
        with pytest.warns(UserWarning, match="resized 6 to 4x4"):
            h = MeanColour().fit(photos)
        assert h.input_shape_ == (4, 4, 3)
        grey = rng.integers(0, 256, (3, 20, 20)).astype(np.uint8)
        with pytest.warns(UserWarning, match="converted 3 to RGB and resized 3 to 4x4"):
            assert h.encode(grey).shape == (3, 1)
        with pytest.raises(ValueError, match="encodes images"):
            h.encode(np.zeros((3, 48), np.float32))
        again = jaxhash.load_hasher(h.save(tmp_path / "mc"))
        assert isinstance(again, MeanColour) and again.fingerprint() == h.fingerprint()
    finally:
        hashers._REGISTRY.pop("mean-colour-test")


def test_what_counts_as_images(rng):
    itq = jaxhash.ITQ(n_bits=4).fit(rng.integers(0, 256, (20, 6, 5, 3)).astype(np.uint8))
    with pytest.raises(ValueError, match=r"looks like one \(H, W, C\) image: pass a batch, e.g. image\[None\]"):
        itq.encode(np.zeros((6, 5, 3), np.uint8))
    assert itq.encode(np.zeros((6, 5, 3), np.uint8)[None]).shape == (1, 1)
    grey = jaxhash.PCAH(n_bits=2).fit(rng.integers(0, 256, (20, 6, 5)).astype(np.uint8))  # (n, H, W): grey images
    assert grey.input_shape_ == (6, 5, 1)
    rows = jaxhash.PCAH(n_bits=2).fit([[0.0, 1.0, 2.0], [1.0, 0.0, 3.0], [2.0, 2.0, 0.0]])  # a list of rows: features
    assert rows.input_shape_ is None and rows.encode([[1.0, 1.0, 1.0]]).shape == (1, 1)
    with pytest.warns(UserWarning, match=r"converted 1 grey image to RGB \(2 of 3 images are RGB\)"):
        mixed = jaxhash.PCAH(n_bits=2).fit([np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), np.uint8), np.full((4, 4, 4), 9, np.uint8)])
    assert mixed.input_shape_ == (4, 4, 3)
    with pytest.raises(ValueError, match="need at least 2 training images, got 0"):
        jaxhash.ITQ(n_bits=2).fit(np.zeros((0, 4, 4, 3), np.uint8))
    failed = jaxhash.KMH(n_bits=6, bits_per_subspace=4)
    with pytest.raises(ValueError, match="multiple of bits_per_subspace"):
        failed.fit(rng.integers(0, 256, (30, 4, 4, 1)).astype(np.uint8))
    assert not failed.is_fitted  # a failed fit leaves nothing half-fitted behind
