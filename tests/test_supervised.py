"""cnn-hash and cnn-softmax: supervised hashers with CNNs trained from scratch."""
import json

import jax
import numpy as np
import pytest

import jaxhash
from jaxhash import supervised
from jaxhash.checkpoint import CheckpointMismatchError
from test_cnn import colour_classes

TINY = dict(preset="tiny", image_size=12, epochs=4, batch_size=20, progress=False)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x, y = colour_classes(rng, n_per_class=50)
    return x[:120], y[:120], x[120:], y[120:]


@pytest.fixture(scope="module")
def joint(data):
    return jaxhash.CNNHasher(n_bits=16, **TINY).fit(data[0], data[1])


def test_cnn_hash_codes_group_the_classes(joint, data, tmp_path):
    x, y, xq, yq = data
    assert joint.input_shape_ == (12, 12, 3) and joint.validation_accuracy_ is not None
    assert {r["stage"] for r in joint.history_} == {"joint"} and {"nll", "reconstruction"} <= set(joint.history_[0])
    codes, codes_q = joint.encode(x), joint.encode(xq)
    assert codes.shape == (120, 1) and (codes >> 16 == 0).all()
    assert jaxhash.mean_average_precision(codes_q, yq, codes, y) > 0.6  # chance is 1/3
    assert (joint.predict(xq) == yq).mean() > 0.8
    again = jaxhash.load_hasher(joint.save(tmp_path / "m"))
    np.testing.assert_array_equal(again.encode(xq), codes_q)
    np.testing.assert_allclose(again.features(xq), joint.features(xq), rtol=1e-5, atol=1e-6)
    details = joint.encode_details(xq)
    np.testing.assert_array_equal(details["codes"], codes_q)
    assert details["features"].shape == (len(xq), 32) and np.allclose(details["probabilities"].sum(1), 1, atol=1e-5)


def test_frozen_mode_trains_the_hash_layer_on_a_fixed_classifier(data):
    x, y, xq, yq = data
    frozen = jaxhash.CNNHasher(n_bits=16, mode="frozen", head_epochs=20, **TINY).fit(x, y)
    stages = [r["stage"] for r in frozen.history_]
    assert stages == ["classifier"] * 4 + ["hash layer"] * 20
    softmax = jaxhash.CNNSoftmaxHasher(n_bits=12, **TINY).fit(x, y)  # the same classifier: trained once (memoised)
    assert [r["stage"] for r in softmax.history_] == ["classifier"] * 4
    np.testing.assert_allclose(softmax.predict_proba(xq), jaxhash.CNNSoftmaxHasher(n_bits=12, **TINY).fit(x, y).predict_proba(xq))
    assert jaxhash.mean_average_precision(frozen.encode(xq), yq, frozen.encode(x), y) > 0.6


def test_the_memo_of_trained_networks_keeps_the_most_recently_used(data, monkeypatch):
    x, y, _, _ = data
    monkeypatch.setattr(supervised, "_NETWORK_MEMO", {})
    monkeypatch.setattr(supervised, "NETWORK_MEMO_SIZE", 2)
    fit = lambda seed: jaxhash.CNNSoftmaxHasher(n_bits=12, seed=seed, **dict(TINY, epochs=1)).fit(x, y)  # noqa: E731
    fit(0), fit(1)
    assert fit(0).history_ and len(supervised._NETWORK_MEMO) == 2  # seed 0 reused: now the most recent
    fit(2)  # evicts seed 1, the least recently used
    assert sorted(json.loads(key)["seed"] for key in supervised._NETWORK_MEMO) == [0, 2]


def test_softmax_codes_measure_the_l1_distance_of_quantised_probabilities(data):
    x, y, xq, _ = data
    h = jaxhash.CNNSoftmaxHasher(n_bits=14, **TINY).fit(x, y)  # 3 classes: 4 levels each, 2 spare bits
    probs = h.predict_proba(xq)
    levels = np.floor(probs * 5).clip(0, 4)  # p > (l + 1) / 5 for l = 0..3
    levels = np.where(np.isclose(probs * 5, np.round(probs * 5)), levels - 1, levels).clip(0, 4)
    codes = h.encode(xq)
    d = np.asarray(jaxhash.pairwise_hamming(codes[:5], codes[:5]))
    np.testing.assert_array_equal(d, np.abs(levels[:5, None] - levels[None, :5]).sum(-1))
    with pytest.raises(ValueError, match="one bit per class"):
        jaxhash.CNNSoftmaxHasher(n_bits=2, **TINY).fit(x, y)


def test_user_weights_start_a_model(joint, data, tmp_path):
    x, y, xq, yq = data
    joint.save_weights(tmp_path / "w.npz")
    started = jaxhash.CNNHasher(n_bits=16, weights=str(tmp_path / "w.npz"), **dict(TINY, epochs=1, learning_rate=1e-6)).fit(x, y)
    assert (started.predict(xq) == joint.predict(xq)).mean() > 0.85  # an epoch at a tiny rate keeps the trained weights
    fresh = jaxhash.CNNHasher(n_bits=16, **dict(TINY, epochs=1, learning_rate=1e-6)).fit(x, y)
    assert (fresh.predict(xq) == yq).mean() < 0.7  # from random weights the same epoch learns next to nothing
    with pytest.warns(UserWarning, match=r"started from 14 of the network's 19 arrays .*5 start afresh \(in backbone/_Head_0/classifier, backbone/_Head_0/descriptor, head\)"):
        jaxhash.CNNHasher(n_bits=16, weights=str(tmp_path / "w.npz"), **dict(TINY, feature_dim=8, epochs=1)).fit(x, y)
    softmax = jaxhash.CNNSoftmaxHasher(n_bits=12, **TINY).fit(x, y)
    softmax.save_weights(tmp_path / "s.npz")  # a classifier's weights start a cnn-hash: only the hash layer is new
    with pytest.warns(UserWarning, match=r"afresh \(in head, head/classifier\)"):
        jaxhash.CNNHasher(n_bits=16, weights=str(tmp_path / "s.npz"), **dict(TINY, epochs=1)).fit(x, y)
    with pytest.raises(CheckpointMismatchError, match=r"weights file .* does not fit this model: none of its convolutions"):
        jaxhash.CNNHasher(n_bits=16, weights=str(tmp_path / "w.npz"), **dict(TINY, widths=(4, 8))).fit(x, y)
    with pytest.raises(FileNotFoundError, match="no weights file"):
        jaxhash.CNNHasher(n_bits=16, weights=str(tmp_path / "none.npz"), **TINY).fit(x, y)


def test_bad_input_is_refused_clearly(data, rng):
    x, y, _, _ = data
    with pytest.raises(ValueError, match="learns from labelled images"):
        jaxhash.CNNHasher(**TINY).fit(x)
    with pytest.raises(ValueError, match="at least two classes"):
        jaxhash.CNNHasher(**TINY).fit(x, np.zeros(len(x), int))
    few = y.copy()
    few[few == 2] = 1
    few[0] = 2  # class 2 has a single image
    with pytest.raises(ValueError, match="fewer than 2 images"):
        jaxhash.CNNHasher(**TINY).fit(x, few)
    with pytest.raises(ValueError, match="have no class .*class numbers >= 0"):
        jaxhash.CNNHasher(**TINY).fit(x, y - 1)
    with pytest.raises(ValueError, match=r"dtype <U\d+; for class names, pass their numbers: names, y = np.unique"):
        jaxhash.CNNHasher(**TINY).fit(x, np.array(["cat", "dog", "owl"])[y % 3])
    with pytest.raises(ValueError, match="unknown preset"):
        jaxhash.CNNHasher(preset="huge").fit(x, y)
    with pytest.raises(ValueError, match="mode must be"):
        jaxhash.CNNHasher(mode="both", **TINY).fit(x, y)
    with pytest.raises(ValueError, match=r"encodes images"):
        jaxhash.CNNHasher(**TINY).fit(x, y).encode(np.zeros((2, 10), np.float32))


def test_photos_of_other_sizes_and_grey_ones_are_converted_with_one_note(joint, rng):
    photos = [rng.integers(0, 256, (40, 30, 3)).astype(np.uint8), rng.integers(0, 256, (12, 12)).astype(np.uint8),
              rng.integers(0, 256, (20, 20, 4)).astype(np.uint8)]
    with pytest.warns(UserWarning, match="3 images: converted 2 to RGB and resized 2 to 12x12 for"):
        assert joint.encode(photos).shape == (3, 1)


def test_presets_build(data):
    for preset in supervised.PRESETS:
        hasher = jaxhash.CNNHasher(preset=preset)
        config = hasher.config()
        assert config.epochs > 0 and config.image_size > 0
        shapes = hasher._template(supervised.Classifier(hasher._backbone(config, 10)), config)  # nothing computed
        assert shapes["params"]["backbone"]["_Head_0"]["classifier"]["kernel"].shape == (config.feature_dim, 10)


def test_flip_averaging_is_part_of_the_saved_model(data, monkeypatch, tmp_path):
    """A preset with test_flip gives every image the mean outputs of it and its mirror image, and so
    does the loaded model; a model saved before test_flip existed loads without it."""
    from jaxhash import cnn

    x, y, xq, _ = data
    assert not jaxhash.CNNSoftmaxHasher(**TINY).config().test_flip
    monkeypatch.setitem(supervised.PRESETS, "tiny", supervised.PRESETS["tiny"]._replace(test_flip=True))
    flipping = jaxhash.CNNSoftmaxHasher(n_bits=12, **TINY).fit(x, y)
    config = flipping._saved_config()
    assert config.test_flip
    network = flipping._network_for(config)
    logits = [cnn.predict(network, flipping.variables_, images, flipping.mean_, flipping.std_)["logits"] for images in (xq, xq[:, :, ::-1])]
    assert np.abs(logits[0] - logits[1]).max() > 1e-3  # the mirror images give other outputs
    np.testing.assert_allclose(flipping.predict_proba(xq), supervised._softmax((logits[0] + logits[1]) / 2), rtol=1e-5, atol=1e-6)
    again = jaxhash.load_hasher(flipping.save(tmp_path / "m"))
    np.testing.assert_array_equal(again.encode(xq), flipping.encode(xq))
    np.testing.assert_allclose(again.predict_proba(xq), flipping.predict_proba(xq), rtol=1e-6)
    older = json.loads(flipping.config_)
    del older["test_flip"]
    flipping.config_ = json.dumps(older)
    old = jaxhash.load_hasher(flipping.save(tmp_path / "old"))
    np.testing.assert_allclose(old.predict_proba(xq), supervised._softmax(logits[0]), rtol=1e-5, atol=1e-6)


def test_the_memo_gives_a_network_only_the_history_of_its_own_flip_setting(data, monkeypatch):
    """Validation accuracies per epoch are measured with the run's flip averaging, so a network trained
    without it is not reused with its history for a run with it (checkpoints do resume: below)."""
    x, y, _, _ = data
    monkeypatch.setattr(supervised, "_NETWORK_MEMO", {})
    plain = jaxhash.CNNSoftmaxHasher(n_bits=12, **TINY).fit(x, y)
    monkeypatch.setitem(supervised.PRESETS, "tiny", supervised.PRESETS["tiny"]._replace(test_flip=True))
    flipping = jaxhash.CNNSoftmaxHasher(n_bits=12, **TINY).fit(x, y)
    assert len(supervised._NETWORK_MEMO) == 2
    flags = sorted(json.loads(key)["test_flip"] for key in supervised._NETWORK_MEMO)
    assert flags == [False, True]
    # a reused history would be a copy of plain's; a trained one differs (its measured images per second at least)
    assert len(flipping.history_) == len(plain.history_) and flipping.history_ != plain.history_
    again = jaxhash.CNNSoftmaxHasher(n_bits=12, **TINY).fit(x, y)  # the same flip setting: reused
    assert len(supervised._NETWORK_MEMO) == 2 and again.history_ == flipping.history_


def test_checkpoints_resume_whether_or_not_inference_flips(data, monkeypatch, tmp_path):
    """test_flip changes inference only: a run's checkpoints serve the same training with it switched on."""
    x, y, xq, _ = data
    settings = dict(TINY, epochs=2)
    plain = jaxhash.CNNSoftmaxHasher(n_bits=12, checkpoint_dir=tmp_path / "ck", **settings).fit(x, y)
    monkeypatch.setitem(supervised.PRESETS, "tiny", supervised.PRESETS["tiny"]._replace(test_flip=True))
    resumed = jaxhash.CNNSoftmaxHasher(n_bits=12, checkpoint_dir=tmp_path / "ck", resume=True, **settings).fit(x, y)
    assert resumed._saved_config().test_flip
    for a, b in zip(*(jax.tree_util.tree_leaves(h.variables_) for h in (plain, resumed))):
        np.testing.assert_array_equal(a, b)  # nothing trained again: the checkpoint's network


def test_a_preset_trains_a_small_folder_for_its_minimum_of_steps(data, monkeypatch):
    x, y, _, _ = data
    monkeypatch.setitem(supervised.PRESETS, "tiny", supervised.PRESETS["tiny"]._replace(min_images=1_000))
    with pytest.warns(UserWarning, match=r"images are few for preset 'tiny'.* 10 epochs at batch 32 \(30 steps: the "
                                         r"preset's minimum of 1,000 images seen\)"):
        h = jaxhash.CNNSoftmaxHasher(n_bits=12, preset="tiny", image_size=12, progress=False).fit(x, y)
    assert len(h.history_) == 10 and h._saved_config().epochs == 10  # 108 training images: 10 epochs to see 1,000
    given = jaxhash.CNNSoftmaxHasher(n_bits=12, preset="tiny", image_size=12, epochs=3, progress=False).fit(x, y)
    assert len(given.history_) == 3  # the user's --epochs is kept
    monkeypatch.setitem(supervised.PRESETS, "tiny", supervised.PRESETS["tiny"]._replace(min_images=1_000, batch_size=64))
    with pytest.warns(UserWarning) as notes:  # only the batch is changed, and the note says why
        jaxhash.CNNSoftmaxHasher(n_bits=12, preset="tiny", image_size=12, epochs=3, progress=False).fit(x, y)
    (note,) = [str(n.message) for n in notes if "are few" in str(n.message)]
    assert "3 epochs at batch 32 (9 steps: the batch at its floor of 32, short of 50 steps per epoch)" in note
    assert "minimum of" not in note  # 108 images: 3 steps per epoch even at the floor, and the note says so
    wide = supervised.PRESETS["tiny"]._replace(min_images=1_000, batch_size=256)
    with pytest.warns(UserWarning, match=r"2 epochs at batch 64 \(100 steps: at least 50 steps per epoch\)"):
        assert jaxhash.CNNSoftmaxHasher(n_bits=12, preset="tiny", epochs=2)._schedule(wide, 3_200).batch_size == 64


def test_the_bf16_path_of_accelerators_trains_under_strict_promotion(data, monkeypatch):
    """On a GPU or TPU training computes in bf16; here the CPU is made to take that path."""
    import jax.numpy as jnp

    from jaxhash import cnn

    x, y, xq, yq = data
    monkeypatch.setattr(cnn, "compute_dtype", lambda config: jnp.bfloat16)
    monkeypatch.setattr(supervised, "_NETWORK_MEMO", {})  # networks trained here are not reused elsewhere
    softmax = jaxhash.CNNSoftmaxHasher(n_bits=12, seed=5, **TINY).fit(x, y)
    assert (softmax.predict(xq) == yq).mean() > 0.8
    joint = jaxhash.CNNHasher(n_bits=16, seed=5, **dict(TINY, epochs=2)).fit(x, y)
    assert joint.encode(xq).shape == (len(xq), 1) and np.isfinite(joint.history_[-1]["loss"])
