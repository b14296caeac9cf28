"""The CNN trainer: augmentation, splits, the train step on the shared loop, resume, divergence."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhash import cnn, nets
from jaxhash.supervised import Classifier


def colour_classes(rng, n_per_class=40, size=12, classes=3):
    """Images whose class is their dominant colour, with noise and a random bright square."""
    colours = np.array([(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)])[:classes]
    labels = np.repeat(np.arange(classes), n_per_class)
    images = np.clip(colours[labels][:, None, None, :] + rng.integers(-60, 60, (len(labels), size, size, 3)), 0, 255)
    for img in images:
        r, c = rng.integers(0, size - 4, 2)
        img[r : r + 4, c : c + 4] = 255
    order = rng.permutation(len(labels))
    return images[order].astype(np.uint8), labels[order].astype(np.int32)


def test_augment_crops_and_flips_each_image(key):
    images = jnp.arange(2 * 6 * 6 * 1, dtype=jnp.uint8).reshape(2, 6, 6, 1)
    same = cnn.augment(key, images, 0, False)
    np.testing.assert_array_equal(same, images)
    flipped = cnn.augment(key, images, 0, True)
    for a, b in zip(np.asarray(flipped), np.asarray(images)):
        assert np.array_equal(a, b) or np.array_equal(a, b[:, ::-1])
    cropped = cnn.augment(key, images, 2, False)
    assert cropped.shape == images.shape
    assert not np.array_equal(cnn.augment(jax.random.fold_in(key, 1), images, 2, True), cropped)


def test_flip_averaging_predicts_the_mean_of_an_image_and_its_mirror(key, rng):
    model = Classifier(nets.make_network("vgg", (4,), 3, 1, feature_dim=6))
    images = rng.integers(0, 256, (5, 8, 8, 3)).astype(np.uint8)
    variables = model.init(key, jnp.zeros((2, 8, 8, 3)), train=False)
    mean, std = np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32)
    plain = cnn.predict(model, variables, images, mean, std)
    mirrored = cnn.predict(model, variables, images[:, :, ::-1], mean, std)
    averaged = cnn.predict(model, variables, images, mean, std, flip=True)
    for name in ("features", "logits"):
        np.testing.assert_allclose(averaged[name], (plain[name] + mirrored[name]) / 2, rtol=1e-5, atol=1e-6)
    assert not np.allclose(averaged["logits"], plain["logits"])
    symmetric = np.concatenate([images[:, :, :4], images[:, :, 3::-1]], axis=2)  # its own mirror image
    np.testing.assert_allclose(cnn.predict(model, variables, symmetric, mean, std, flip=True)["logits"],
                               cnn.predict(model, variables, symmetric, mean, std)["logits"], rtol=1e-5, atol=1e-6)


def test_stratified_split_holds_out_every_class(rng):
    labels = np.repeat([0, 1, 2], [10, 20, 3])
    train, val = cnn.stratified_split(labels, 0.2, seed=0)
    assert np.bincount(labels[val]).tolist() == [2, 4, 1] and len(np.intersect1d(train, val)) == 0
    assert len(train) + len(val) == len(labels)
    with pytest.raises(ValueError, match="at least two classes, got 1"):
        cnn.stratified_split(np.zeros(5, int), 0.2, 0)
    with pytest.raises(ValueError, match="fewer than 4 images .*class 2 has 3"):
        cnn.stratified_split(labels, 0.2, 0, min_per_class=4)


def small_setup(rng):
    x, y = colour_classes(rng)
    model = Classifier(nets.make_network("vgg", (8, 16), 3, 1, 16))
    config = cnn.CNNConfig(widths=(8, 16), depth=1, feature_dim=16, image_size=12, epochs=4, batch_size=20, learning_rate=0.05,
                           crop_padding=2)
    mean, std = np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32)
    return x, y, model, config, mean, std


def test_a_small_training_set_gets_smaller_batches_and_more_epochs():
    preset = cnn.CNNConfig(epochs=4, batch_size=256, min_images=160_000)
    assert cnn.fit_schedule_to_data(preset, 40_500) == preset  # CIFAR-10's training split: the preset as it is
    small = cnn.fit_schedule_to_data(preset, 3_240)
    assert small.batch_size == 64  # halved until an epoch has at least 50 steps
    assert small.epochs == 50  # 50 * 3,240 >= 160,000 > 49 * 3,240
    assert cnn.fit_schedule_to_data(preset, 3_240, batch_given=True) == preset._replace(epochs=50)
    assert cnn.fit_schedule_to_data(preset, 3_240, epochs_given=True) == preset._replace(batch_size=64)
    assert cnn.fit_schedule_to_data(preset, 100).batch_size == cnn.MIN_BATCH_SIZE
    assert cnn.fit_schedule_to_data(preset._replace(min_images=0), 3_240) == preset._replace(min_images=0)


def test_a_network_learns_and_resumes_exactly(rng, key, tmp_path):
    x, y, model, config, mean, std = small_setup(rng)
    loss = cnn.classification_loss(config.label_smoothing)
    log = []
    variables = cnn.fit_network(model, x, y, config, key=key, loss_fn=loss, mean=mean, std=std, validation=(x[:30], y[:30]),
                                progress=False, history=log)
    assert [r["epoch"] for r in log] == [1, 2, 3, 4] and {"loss", "accuracy", "images_per_s", "val_accuracy"} <= set(log[0])
    logits = cnn.predict(model, variables, x, mean, std, batch_size=32)["logits"]
    assert np.mean(logits.argmax(-1) == y) > 0.8  # three colours: chance is 1/3

    class Crash:
        def __call__(self, end):
            if end.epoch == 1:
                raise KeyboardInterrupt

    from jaxhash import train

    real = train.run_stage

    def crashing(*args, **kwargs):
        return real(*args, **dict(kwargs, on_epoch=[Crash()]))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "run_stage", crashing)
        with pytest.raises(KeyboardInterrupt):
            cnn.fit_network(model, x, y, config, key=key, loss_fn=loss, mean=mean, std=std, progress=False,
                            checkpoint_dir=tmp_path / "ck", run={"test": 1})
    resumed = cnn.fit_network(model, x, y, config, key=key, loss_fn=loss, mean=mean, std=std, progress=False,
                              checkpoint_dir=tmp_path / "ck", run={"test": 1}, resume=True)
    uninterrupted = cnn.fit_network(model, x, y, config, key=key, loss_fn=loss, mean=mean, std=std, progress=False)
    for a, b in zip(jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(uninterrupted)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_divergence_is_stopped_with_a_hint(rng, key):
    x, y, model, config, mean, std = small_setup(rng)
    with pytest.raises(FloatingPointError, match="lower the learning rate .* and resume"):
        cnn.fit_network(model, x, y, config._replace(learning_rate=1e12, epochs=2), key=key,
                        loss_fn=cnn.classification_loss(0.0), mean=mean, std=std, progress=False)
    with pytest.raises(ValueError, match="fewer than one batch of 256"):
        cnn.fit_network(model, x, y, config._replace(batch_size=256), key=key, loss_fn=cnn.classification_loss(0.0),
                        mean=mean, std=std, progress=False)
    with pytest.raises(ValueError, match="schedule must be"):
        cnn.make_optimizer(config._replace(schedule="step"), 10)
