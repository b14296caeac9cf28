"""Training convolutional networks from scratch: augmentation on the device, a jitted train step
over a :class:`CNNState`, label smoothing, a one-cycle or cosine schedule, bf16 compute on
accelerators, evaluation on a held-out split -- on the shared loop of :mod:`jaxhash.train`.

A model here is a Flax module whose ``__call__(x, train)`` returns a dict with at least
``"logits"``; a loss function ``loss(outputs, labels) -> (loss, metrics)`` turns its outputs into
the objective, so a classifier and a classifier with a hash head train with the same code.
Images stay uint8 on the host and travel to the device one batch at a time; there they are
cropped, flipped and normalised.
"""
from __future__ import annotations

import functools
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import train
from .checks import check_positive_int

__all__ = [
    "CNNConfig",
    "CNNState",
    "augment",
    "normalise",
    "make_optimizer",
    "init_state",
    "make_train_step",
    "predict",
    "in_padded_batches",
    "fit_network",
    "stratified_split",
    "classification_loss",
]


class CNNConfig(NamedTuple):
    """Architecture and training schedule of a CNN."""

    architecture: str = "vgg"  # "vgg", "resnet" or "airbench" (jaxhash.nets)
    widths: tuple = (32, 64, 128)  # channels per stage
    depth: int = 2  # convs (vgg, airbench) or residual blocks (resnet) per stage
    feature_dim: int = 128  # descriptor layer before the classifier
    image_size: int = 32  # input images are resized to image_size x image_size
    epochs: int = 10
    batch_size: int = 256
    learning_rate: float = 0.1  # peak of the one-cycle schedule (the cosine schedule's start)
    schedule: str = "onecycle"  # or "cosine"
    momentum: float = 0.9
    weight_decay: float = 5e-4  # the lambda |W|^2 term, as decoupled weight decay on kernels
    label_smoothing: float = 0.1
    crop_padding: int = 4  # random crops of the image padded by this many pixels (0: none)
    flip: bool = True  # random horizontal flips
    bf16: bool = True  # bf16 compute where the backend is an accelerator (never on the CPU)
    min_images: int = 0  # on a small training set: smaller batches, and epochs until this many images are seen
    test_flip: bool = False  # at inference, average the outputs of each image and its mirror image


class CNNState(NamedTuple):
    """params, BatchNorm statistics and optimiser state."""

    params: Any
    batch_stats: Any
    opt_state: Any


MIN_STEPS_PER_EPOCH = 50
MIN_BATCH_SIZE = 32


def fit_schedule_to_data(config: CNNConfig, n: int, *, batch_given: bool = False, epochs_given: bool = False) -> CNNConfig:
    """``config`` with its schedule fitted to ``n`` training images.

    A preset's epochs are sized for tens of thousands of images; on a folder of a few thousand the
    same epochs are a few dozen optimisation steps and the network learns nothing. Measured on 40
    classes of Tiny ImageNet (3,240 training photos, the VGG-style ``--preset cpu`` of the time): 4
    epochs at batch 256 gave validation accuracy .044; 55 epochs at batch 256 .225; 55 epochs at
    batch 64 .314. So, with ``config.min_images`` > 0: unless ``batch_given``, the batch is halved
    (not below 32) until an epoch has at least 50 steps; unless ``epochs_given``, the epochs are
    raised until training sees ``min_images`` images. Large data sets keep the preset.
    """
    if config.min_images <= 0 or n <= 0:
        return config
    batch = config.batch_size
    if not batch_given:
        while batch // 2 >= MIN_BATCH_SIZE and n // batch < MIN_STEPS_PER_EPOCH:
            batch //= 2
    epochs = config.epochs if epochs_given else max(config.epochs, -(-config.min_images // n))
    return config._replace(batch_size=batch, epochs=epochs)


def compute_dtype(config: CNNConfig):
    return jnp.bfloat16 if config.bf16 and jax.default_backend() != "cpu" else jnp.float32


def normalise(images, mean, std):
    """uint8 ``(b, H, W, C)`` -> float32 with per-channel mean 0 and std 1 (``mean``/``std`` in [0, 1] units)."""
    return (images.astype(jnp.float32) / 255.0 - mean) / std


def augment(key, images, padding: int, flip: bool):
    """Random crops of the images padded by ``padding`` pixels (reflected) and random horizontal flips.

    ``images``: ``(b, H, W, C)`` on the device; every image gets its own offsets and coin.
    """
    b, h, w, _ = images.shape
    k_crop, k_flip = jax.random.split(key)
    if padding:
        padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)), mode="reflect")
        offsets = jax.random.randint(k_crop, (b, 2), 0, 2 * padding + 1)
        crop = lambda img, off: jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))  # noqa: E731
        images = jax.vmap(crop)(padded, offsets)
    if flip:
        coin = jax.random.bernoulli(k_flip, 0.5, (b, 1, 1, 1))
        images = jnp.where(coin, images[:, :, ::-1, :], images)
    return images


def decay_mask(params):
    """True for the weight matrices that weight decay (the lambda |W|^2 term) applies to: every
    ``kernel`` and the hash layer's ``theta``, not biases or BatchNorm scales and offsets."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: jax.tree_util.keystr(path).endswith(("['kernel']", "['theta']")), params)


def onecycle_schedule(total_steps: int, peak: float, warmup: float = 0.25, start_div: float = 10.0, end_div: float = 1000.0):
    """Linear warm-up from ``peak / start_div`` to ``peak`` over ``warmup`` of the steps, then a cosine
    decay to ``peak / end_div`` (Smith's one-cycle policy)."""
    warm = max(1, int(total_steps * warmup))
    low, end = peak / start_div, peak / end_div

    def schedule(count):
        t = jnp.asarray(count, jnp.float32)
        rising = low + (peak - low) * t / warm
        done = jnp.clip((t - warm) / max(total_steps - warm, 1), 0.0, 1.0)
        falling = end + (peak - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * done))
        return jnp.where(t < warm, rising, falling)

    return schedule


def cosine_schedule(total_steps: int, start: float):
    """Cosine decay from ``start`` to 0 over ``total_steps`` (float arithmetic throughout)."""

    def schedule(count):
        done = jnp.minimum(jnp.asarray(count, jnp.float32) / total_steps, 1.0)
        return start * 0.5 * (1.0 + jnp.cos(jnp.pi * done))

    return schedule


def make_optimizer(config: CNNConfig, total_steps: int) -> optax.GradientTransformation:
    """SGD with Nesterov momentum, decoupled weight decay on kernels, one-cycle or cosine schedule."""
    if config.schedule == "onecycle":
        lr = onecycle_schedule(max(total_steps, 1), config.learning_rate)
    elif config.schedule == "cosine":
        lr = cosine_schedule(max(total_steps, 1), config.learning_rate)
    else:
        raise ValueError(f"schedule must be 'onecycle' or 'cosine', got {config.schedule!r}")
    return optax.chain(optax.add_decayed_weights(config.weight_decay, mask=decay_mask),
                       optax.sgd(lr, momentum=config.momentum, nesterov=True))


def init_state(model, key, image_shape, optimizer, variables=None) -> CNNState:
    """Fresh variables (or the given ones) and optimiser state."""
    if variables is None:
        variables = model.init(key, jnp.zeros((2,) + tuple(image_shape), jnp.float32), train=False)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    return CNNState(params, batch_stats, optimizer.init(params))


def classification_loss(label_smoothing: float):
    """Cross-entropy with label smoothing on ``outputs["logits"]``."""

    def loss(outputs, labels):
        logits = outputs["logits"].astype(jnp.float32)
        targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
        value = jnp.mean(optax.softmax_cross_entropy(logits, targets))
        return value, {"cross_entropy": value}

    return loss


def make_train_step(model, optimizer, loss_fn: Callable, mean, std, config: CNNConfig):
    """A jitted ``step(state, (images uint8, labels), key) -> (state, metrics)``.

    Augments on the device, runs the model in training mode (BatchNorm statistics update),
    applies ``loss_fn`` and one optimiser update.
    """
    mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)

    @jax.jit
    def step(state: CNNState, batch, key):
        images, labels = batch
        x = normalise(augment(key, images, config.crop_padding, config.flip), mean, std)

        def objective(params):
            outputs, updates = model.apply({"params": params, "batch_stats": state.batch_stats}, x, train=True,
                                           mutable=["batch_stats"])
            value, metrics = loss_fn(outputs, labels)
            correct = jnp.argmax(outputs["logits"], -1) == labels
            return value, (updates.get("batch_stats", state.batch_stats), dict(metrics, loss=value, accuracy=jnp.mean(correct)))

        (_, (batch_stats, metrics)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return CNNState(optax.apply_updates(state.params, updates), batch_stats, opt_state), metrics

    return step


@functools.partial(jax.jit, static_argnames=("model",))
def _predict_batch(model, variables, images, mean, std):
    return model.apply(variables, normalise(images, mean, std), train=False)


@functools.partial(jax.jit, static_argnames=("model",))
def _predict_batch_and_mirror(model, variables, images, mean, std):
    outputs = model.apply(variables, normalise(images, mean, std), train=False)
    mirrored = model.apply(variables, normalise(images[:, :, ::-1], mean, std), train=False)
    return jax.tree_util.tree_map(lambda a, b: (a + b) / 2, outputs, mirrored)


def predict(model, variables, images: np.ndarray, mean, std, batch_size: int = 512, flip: bool = False) -> dict:
    """The model's outputs (dict of arrays, float32 NumPy) for uint8 images, in evaluation mode.

    ``flip``: every output is the mean of the image's and its mirror image's (test-time
    augmentation; twice the work). Batches are padded to a power of two (at least 8), so any
    number of images compiles at most a handful of shapes.
    """
    mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
    batch_fn = _predict_batch_and_mirror if flip else _predict_batch
    return in_padded_batches(lambda chunk: batch_fn(model, variables, chunk, mean, std), images, batch_size)


def in_padded_batches(fn: Callable, images: np.ndarray, batch_size: int = 512) -> dict:
    """``fn(batch) -> dict of arrays`` over ``images`` ``batch_size`` at a time, as float32 NumPy.

    Each batch is padded to a power of two (at least 8) and the padding's outputs dropped, so any
    number of images (none included) compiles at most a handful of shapes.
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    parts: dict[str, list] = {}
    for start in range(0, max(len(images), 1), batch_size):
        chunk = np.asarray(images[start : start + batch_size])
        rows = len(chunk)
        padded = max(8, 1 << max(rows - 1, 0).bit_length())
        if padded != rows:
            chunk = np.concatenate([chunk, np.zeros((padded - rows,) + tuple(images.shape[1:]), images.dtype)])
        for name, value in fn(jnp.asarray(chunk)).items():
            parts.setdefault(name, []).append(np.asarray(value, np.float32)[:rows])
    return {name: np.concatenate(values) for name, values in parts.items()}


def check_classes(labels: np.ndarray, min_per_class: int = 2, names=None) -> None:
    """Refuse fewer than two classes, and classes with fewer than ``min_per_class`` images
    (``names[c]`` names class ``c`` in the message)."""
    classes, counts = np.unique(np.asarray(labels), return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"a classifier needs at least two classes, got {len(classes)}: put the images in one "
                         "sub-folder per class")
    small = classes[counts < min_per_class]
    if small.size:
        name = names[small[0]] if names is not None else small[0]
        raise ValueError(f"{small.size} classes have fewer than {min_per_class} images (e.g. class {name} has "
                         f"{counts[classes == small[0]][0]}): every class needs {min_per_class} (one held out for validation)")


def stratified_split(labels: np.ndarray, fraction: float, seed: int, min_per_class: int = 2, names=None):
    """Indices ``(train, validation)``: ``fraction`` of every class held out (at least one image, and
    at least one left for training). Refuses what :func:`check_classes` refuses."""
    labels = np.asarray(labels)
    check_classes(labels, min_per_class, names)
    classes, counts = np.unique(labels, return_counts=True)
    rng = np.random.default_rng(seed)
    held = []
    for c, n in zip(classes, counts):
        members = np.flatnonzero(labels == c)
        held.append(rng.choice(members, min(n - 1, max(1, int(round(fraction * n)))), replace=False))
    val = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(len(labels)), val), val


def fit_network(model, images: np.ndarray, labels: np.ndarray, config: CNNConfig, *, key, loss_fn: Callable,
                mean, std, validation=None, variables=None, stage: str = "cnn",
                checkpoint_dir=None, run: dict | None = None, resume: bool = False, progress: bool = True,
                history: list | None = None, device_put: Callable = jax.device_put,
                parallel: train.DataParallel | None = None, on_epoch=()) -> dict:
    """Train ``model`` on uint8 ``images`` ``(n, S, S, 3)`` and int labels with the shared loop.

    Each epoch draws its batches and augmentation from ``fold_in(key, epoch)``; its metrics are
    the training loss and accuracy, images per second and, with ``validation = (images,
    labels)``, the validation accuracy. ``parallel`` (:func:`jaxhash.train.data_parallel`) splits
    every batch over a device mesh with the state replicated. ``on_epoch``: more hooks, each called
    with a :class:`jaxhash.train.EpochEnd` after every epoch. Returns the trained variables.
    """
    n = len(images)
    steps_per_epoch = n // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{n} training images are fewer than one batch of {config.batch_size}: lower the batch size "
                         "(--batch-size, batch_size=...) or use a smaller preset (--preset tiny)")
    if parallel is not None:
        parallel.check_batch_size(config.batch_size)  # before anything is compiled
    optimizer = make_optimizer(config, steps_per_epoch * config.epochs)
    state = init_state(model, jax.random.fold_in(key, 10**6), images.shape[1:], optimizer, variables)
    step = make_train_step(model, optimizer, loss_fn, mean, std, config)
    labels = np.asarray(labels, np.int32)

    def epoch_fn(state, epoch_key):
        t0 = time.perf_counter()
        state, metrics = train.epoch_from_host(step, state, (images, labels), epoch_key, config.batch_size, device_put,
                                               parallel)
        metrics = {k: float(v) for k, v in metrics.items()}
        metrics["images_per_s"] = steps_per_epoch * config.batch_size / (time.perf_counter() - t0)
        if validation is not None:
            out = predict(model, {"params": state.params, "batch_stats": state.batch_stats}, validation[0], mean, std,
                          flip=config.test_flip)
            metrics["val_accuracy"] = float(np.mean(np.argmax(out["logits"], -1) == validation[1]))
        return state, metrics

    state = train.run_stage(state, epoch_fn, key=key, epochs=config.epochs, stage=stage, checkpoint_dir=checkpoint_dir,
                            run=run, resume=resume, progress=progress, history=history, on_epoch=on_epoch,
                            divergence_hint="lower the learning rate (--learning-rate, learning_rate=...) and resume",
                            parallel=parallel)
    return {"params": state.params, "batch_stats": state.batch_stats}
