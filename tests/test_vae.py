"""Variational, sparse and plain autoencoders: shapes for every input size and both architectures,
training on the shared loop (resume, NaN guard), the vae / sparse-ae / ae / ae-umap hashers (codes,
features, save/load, bad input)."""
import warnings

import jax
import numpy as np
import pytest

import jaxhash
from jaxhash import train, vae
from jaxhash.checkpoint import CheckpointMismatchError
from jaxhash.hashers import load_hasher, make_hasher

TINY = vae.PRESETS["tiny"]


def grey_shapes(rng, n=96, size=12):
    """Grey images of two kinds: a bright square in the top half or a bright bar in the bottom half."""
    images = rng.integers(0, 40, (n, size, size, 1)).astype(np.uint8)
    labels = np.arange(n) % 2
    for img, label in zip(images, labels):
        r = rng.integers(0, size // 2 - 3)
        c = rng.integers(0, size - 4)
        if label:
            img[size // 2 + r : size // 2 + r + 2, 1:-1] = 230
        else:
            img[r : r + 4, c : c + 4] = 230
    return images, labels


def test_stage_sizes_halve_down_to_four_pixels():
    assert vae.stage_sizes(28) == (28, 14, 7, 4)
    assert vae.stage_sizes(32) == (32, 16, 8, 4)
    assert vae.stage_sizes(256) == (256, 128, 64, 32, 16, 8, 4)
    assert vae.stage_sizes(3) == (3,)


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (64, 48, 3), (8, 8, 1)])
@pytest.mark.parametrize("kind", ["vae", "sparse-ae", "ae", "dense ae"])
def test_the_decoder_gives_back_the_input_shape(kind, shape, key):
    config = TINY._replace(architecture="dense", dense_units=[24, 12]) if kind.startswith("dense") else TINY
    model = vae.make_model(kind.split()[-1], config, shape)
    params = vae.init_params(model, key)
    out = model.apply({"params": params}, np.zeros((3,) + shape, np.float32), key)
    assert out["out"].shape == (3,) + shape and out["mean"].shape == (3, TINY.latent_dim)
    if kind == "sparse-ae":
        assert float(out["mean"].min()) >= 0.0  # a non-negative code, as the L1 penalty expects


def test_training_lowers_the_loss_and_resumes_exactly(rng, key, tmp_path, monkeypatch):
    images, _ = grey_shapes(rng)
    model = vae.make_model("vae", TINY, images.shape[1:])
    config = TINY._replace(epochs=3, batch_size=16, learning_rate=3e-3)
    log = []
    params = vae.fit_autoencoder(model, images, config, key=key, progress=False, history=log)
    assert log[-1]["loss"] < log[0]["loss"] and {"reconstruction", "kl", "images_per_s"} <= set(log[0])
    assert vae.reconstruct(model, params, images[:5]).shape == images[:5].shape
    dense_config = config._replace(architecture="dense", dense_units=(32, 16))
    dense = vae.make_model("ae", dense_config, images.shape[1:])
    on_device = vae.fit_autoencoder(dense, images, dense_config, key=key, progress=False)  # one scan per epoch
    with monkeypatch.context() as mp:  # the same batches fed one at a time from the host (large data sets)
        mp.setattr(vae, "DEVICE_RESIDENT_BYTES", 0)
        from_host = vae.fit_autoencoder(dense, images, dense_config, key=key, progress=False)
    for a, b in zip(jax.tree_util.tree_leaves(from_host), jax.tree_util.tree_leaves(on_device)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    class Crash:
        def __call__(self, end):
            if end.epoch == 1:
                raise KeyboardInterrupt

    real = train.run_stage
    with monkeypatch.context() as mp:
        mp.setattr(train, "run_stage", lambda *a, **kw: real(*a, **{**kw, "on_epoch": [Crash()]}))
        with pytest.raises(KeyboardInterrupt):
            vae.fit_autoencoder(model, images, config, key=key, progress=False, checkpoint_dir=tmp_path / "ck", run={"t": 1})
    resumed = vae.fit_autoencoder(model, images, config, key=key, progress=False, checkpoint_dir=tmp_path / "ck",
                                  run={"t": 1}, resume=True)
    for a, b in zip(jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(CheckpointMismatchError):
        other = vae.make_model("vae", TINY._replace(hidden=16), images.shape[1:])
        vae.fit_autoencoder(other, images, config, key=key, progress=False, checkpoint_dir=tmp_path / "ck",
                            run={"t": 2}, resume=True)


def test_a_convolutional_run_is_described_as_before_the_dense_layout_existed():
    # the settings checkpoints of convolutional models were written with (and must keep matching on --resume)
    before = {"latent_dim", "width", "max_width", "hidden", "epochs", "batch_size", "learning_rate", "beta", "sparsity",
              "sigma", "image_size"}
    assert set(vae.run_config(TINY)) == before
    dense = vae.run_config(TINY._replace(architecture="dense", dense_units=(32, 16)))
    assert set(dense) == before | {"architecture", "dense_units"} and dense["dense_units"] == (32, 16)


def test_a_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(rng, key, tmp_path):
    images, _ = grey_shapes(rng)
    model = vae.make_model("sparse-ae", TINY, images.shape[1:])
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        vae.fit_autoencoder(model, images, TINY._replace(learning_rate=1e30, epochs=3, batch_size=16), key=key,
                            progress=False, checkpoint_dir=tmp_path / "ck", run={})


@pytest.mark.parametrize("method", ["vae", "sparse-ae", "ae", "ae-umap"])
def test_hasher_codes_features_and_save_load(method, rng, tmp_path):
    if method == "ae-umap":
        pytest.importorskip("umap", reason="ae-umap needs umap-learn (pip install 'jaxhash[cluster]')")
    images, labels = grey_shapes(rng)
    options = {"umap_dims": 3, "umap_neighbors": 8} if method == "ae-umap" else {}
    hasher = make_hasher(method, n_bits=8, preset="tiny", epochs=4, batch_size=16, progress=False, **options).fit(images)
    details = hasher.encode_details(images)
    assert details["codes"].shape == (len(images), 1)
    if method == "ae-umap":  # features: the embedding, averaged over each image's nearest training latents
        assert details["features"].shape == (len(images), 3)
        assert hasher.encode_neighbours_ == 10
        _, nearest = jaxhash.euclidean_knn(hasher.latents(images), hasher.anchor_latents_, 10)
        np.testing.assert_allclose(details["features"], hasher.anchor_embedding_[np.asarray(nearest)].mean(1), rtol=1e-5)
    else:
        assert details["features"].shape == (len(images), 8)
        np.testing.assert_allclose(details["features"], hasher.latents(images), rtol=1e-5, atol=1e-6)
    hasher.save(tmp_path / "m")
    loaded = load_hasher(tmp_path / "m")
    np.testing.assert_array_equal(loaded.encode(images), details["codes"])
    assert loaded.fingerprint() == hasher.fingerprint()
    bigger = np.repeat(np.repeat(images[:4], 2, axis=1), 2, axis=2)  # 24x24: resized to the model's 12x12, with a note
    with pytest.warns(UserWarning, match="12x12"):
        assert loaded.encode(bigger).shape == (4, 1)


def test_bad_input_is_refused_with_the_fix(rng):
    images, _ = grey_shapes(rng, n=40)
    with pytest.raises(ValueError, match="latent_dim >= 16"):
        make_hasher("vae", n_bits=16, preset="tiny", latent_dim=8, progress=False).fit(images)
    with pytest.raises(ValueError, match="latent_dim must be a positive integer"):
        make_hasher("vae", n_bits=8, preset="tiny", latent_dim=0, progress=False).fit(images)
    with pytest.raises(ValueError, match="fewer than one batch of 64"):
        make_hasher("vae", n_bits=8, preset="tiny", batch_size=64, progress=False).fit(images)
    with pytest.raises(ValueError, match="unknown preset"):
        make_hasher("sparse-ae", n_bits=8, preset="huge", progress=False).fit(images)
    with pytest.raises(ValueError, match="need at least 5x5, got 4x4: read the images larger"):  # was an IndexError
        vae.make_model("vae", TINY, (4, 4, 1))
    with pytest.raises(ValueError, match="learns from images"):
        make_hasher("vae", n_bits=8, preset="tiny", progress=False).fit(images.reshape(40, -1).astype(np.float32))
    with pytest.raises(ValueError, match="unknown architecture 'mlp'; choose one of conv, dense"):
        make_hasher("ae", n_bits=8, preset="tiny", architecture="mlp", progress=False).fit(images)
    with pytest.raises(ValueError, match="dense_units must be positive layer sizes"):
        vae.make_model("ae", TINY._replace(architecture="dense", dense_units=(32, 0)), (12, 12, 1))
    with pytest.raises(ValueError, match="lower umap_dims"):
        make_hasher("ae-umap", n_bits=8, preset="tiny", batch_size=16, umap_dims=40, progress=False).fit(images)
    with pytest.raises(ValueError, match="umap_neighbors must be at least 2"):
        make_hasher("ae-umap", n_bits=8, preset="tiny", batch_size=16, umap_neighbors=1, progress=False).fit(images)
    mixed = list(images[:30]) + [np.repeat(np.repeat(img, 2, 0), 2, 1) for img in images[30:]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hasher = make_hasher("vae", n_bits=8, preset="tiny", batch_size=16, progress=False).fit(mixed)
    assert hasher.input_shape_ == (12, 12, 1)
    assert any("most common, 12x12" in str(w.message) for w in caught)
