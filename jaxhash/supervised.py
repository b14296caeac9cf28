"""Supervised deep hashing with CNNs trained from scratch: ``cnn-hash`` and ``cnn-softmax``.

* ``cnn-hash`` -- Zelensky, Pismenskova & Voronin's CNN + autoencoder hash layer: on the CNN's
  descriptor f (sigmoid units) a hash layer h = sigmoid(Theta f + b) with n_bits units; a decoder
  tied to it reconstructs f from h (f' = sigmoid(Theta^T h + b')); a classifier on h gives the
  class negative log-likelihood. Loss = NLL + reconstruction error + lambda |W|^2 (the last as
  weight decay); bits = h > 0.5. ``mode="joint"`` trains the CNN and the hash layer together,
  ``mode="frozen"`` trains a CNN classifier first and then only the hash layer on its fixed
  features. The paper writes b' = -b, which is defined only when the descriptor has as many units
  as the code; here the decoder has its own bias and shares the weights. Two options the paper
  does not have: ``quantization`` > 0 penalises h(1 - h), pushing codes towards 0 and 1, and
  ``centre_weight`` > 0 pulls each image's code towards a target code of its class (Hadamard rows,
  as in central similarity quantisation), so that codes of a class cluster.
* ``cnn-softmax`` -- Hu & Feng's image retrieval system: the classifier's softmax vector is the
  feature. Its code is the softmax quantised to ``n_bits // n_classes`` levels per class in
  thermometer form, so the Hamming distance is the L1 distance of the quantised probabilities;
  the class with the highest probability files an image in a :class:`jaxhash.index.PartitionedIndex`.

Both take ``(n, H, W, 3)`` uint8 images of any size (resized to ``image_size``) and integer
labels, hold out a validation split (``validation_fraction`` of every class), train on
:func:`jaxhash.cnn.fit_network` (progress bar, Orbax checkpoint every epoch, ``resume``) and can
start from a weights file written by :meth:`save_weights` (``weights=PATH``). With
``data_parallel=True`` every training batch is split over all devices (parameters replicated;
:func:`jaxhash.train.data_parallel`), which gives the one-device result up to float rounding.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import cnn, nets, train
from .checks import check_positive_int, npz_damage
from .checkpoint import CheckpointMismatchError, fill_template, flatten_tree, network_attributes, take_network_attributes
from .hashers import Hasher, register

__all__ = ["CNNHasher", "FrozenCNNHasher", "CNNSoftmaxHasher", "PRESETS", "HashNet", "Classifier"]

# cpu: minutes on two CPU cores; gpu: the full recipe for one accelerator; tiny: tests and notebooks.
PRESETS = {
    "tiny": cnn.CNNConfig(architecture="vgg", widths=(8, 16), depth=1, feature_dim=32, image_size=16, epochs=2, batch_size=32,
                          learning_rate=0.05),
    # airbench's network at widths 32-64-128, 8 epochs: 467-472 s on a 2-core AMD EPYC with AVX-512 for CIFAR-10's
    # 45,000 training images (about 810 images/s). Flip averaging at inference raised mAP@all at 64 bits by .02.
    # A smaller training set gets smaller batches and more epochs, up to min_images (cnn.fit_schedule_to_data).
    "cpu": cnn.CNNConfig(architecture="airbench", widths=(32, 64, 128), depth=2, feature_dim=128, image_size=32, epochs=8,
                         batch_size=256, learning_rate=0.2, min_images=360_000, test_flip=True),
    # ResNet-18's stages: about 2 minutes on one H100 (64,000 images/s, bf16).
    "gpu": cnn.CNNConfig(architecture="resnet", widths=(64, 128, 256, 512), depth=2, feature_dim=512, image_size=32,
                         epochs=100, batch_size=512, learning_rate=0.2, min_images=2_000_000),
}
_OVERRIDES = ("architecture", "widths", "depth", "feature_dim", "image_size", "epochs", "batch_size", "learning_rate")
# Networks trained in this process, by everything that determines them (see _train_network): the most
# recently used few, so that a process that trains model after model (the web service) does not keep them all.
_NETWORK_MEMO: dict[str, dict] = {}
NETWORK_MEMO_SIZE = 4
_NETWORK_MEMO_LOCK = threading.Lock()


class Classifier(nn.Module):
    """A CNN's descriptor and logits: ``{"features", "logits"}``."""

    backbone: nn.Module

    def __call__(self, x, train: bool = False):
        features, logits = self.backbone(x, train)
        return {"features": features, "logits": logits}


class HashHead(nn.Module):
    """Hash layer h = sigmoid(Theta f + b), tied decoder f' = sigmoid(Theta^T h + b'), classifier on h.

    The autoencoder path (``reconstruction``) sees the descriptor through a stop-gradient: the
    reconstruction error trains the hash layer only. Trained jointly, it would otherwise pull the
    CNN towards a constant descriptor, which is trivially reconstructed and useless (measured on
    CIFAR-10: accuracy stuck at chance, reconstruction error 0.001).
    """

    n_bits: int
    n_classes: int

    @nn.compact
    def __call__(self, features):
        d = features.shape[-1]
        theta = self.param("theta", nn.initializers.lecun_normal(), (d, self.n_bits))
        b = self.param("bias", nn.initializers.zeros, (self.n_bits,))
        b_dec = self.param("decoder_bias", nn.initializers.zeros, (d,))
        f = features.astype(jnp.float32)
        h = nn.sigmoid(f @ theta + b)
        f_fixed = jax.lax.stop_gradient(f)
        h_fixed = nn.sigmoid(f_fixed @ theta + b)
        reconstruction = nn.sigmoid(h_fixed @ theta.T + b_dec)
        logits = nn.Dense(self.n_classes, name="classifier")(h)
        return {"codes": h, "reconstruction": reconstruction, "target": f_fixed, "logits": logits}


class HashNet(nn.Module):
    """A CNN (``backbone``) with a :class:`HashHead` on its descriptor."""

    backbone: nn.Module
    n_bits: int
    n_classes: int

    def setup(self):
        self.head = HashHead(self.n_bits, self.n_classes)

    def __call__(self, x, train: bool = False):
        features, _ = self.backbone(x, train)
        return dict(self.head(features), features=features)


def class_centres(n_classes: int, n_bits: int, seed: int) -> np.ndarray:
    """``(n_classes, n_bits)`` target codes in {0, 1} far apart from each other: rows of a Hadamard
    matrix (pairwise distance n_bits / 2) when n_bits is a power of two and large enough, else
    balanced random codes drawn with ``seed``."""
    if n_bits & (n_bits - 1) == 0 and n_classes <= n_bits:
        h = np.ones((1, 1))
        while h.shape[0] < n_bits:
            h = np.block([[h, h], [h, -h]])
        rows = np.random.default_rng(seed).permutation(n_bits)[:n_classes]
        return (h[rows] > 0).astype(np.float32)
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(np.arange(n_bits) < n_bits // 2) for _ in range(n_classes)]).astype(np.float32)


def hash_loss(label_smoothing: float, reconstruction_weight: float, quantization: float = 0.0, centres=None,
              centre_weight: float = 0.0):
    """The paper's objective (NLL on the code's classifier + reconstruction error), optionally with a
    quantisation penalty h(1 - h) and a class-centre term (binary cross-entropy of h to its class's
    target code); weight decay stands for lambda |W|^2."""
    classify = cnn.classification_loss(label_smoothing)

    def loss(outputs, labels):
        nll, _ = classify(outputs, labels)
        recon = jnp.mean(jnp.square(outputs["reconstruction"] - outputs["target"]))
        value = nll + reconstruction_weight * recon
        metrics = {"nll": nll, "reconstruction": recon}
        h = jnp.clip(outputs["codes"], 1e-6, 1 - 1e-6)
        if quantization:
            q = jnp.mean(h * (1.0 - h))
            value = value + quantization * q
            metrics["quantization"] = q
        if centre_weight:
            target = jnp.asarray(centres)[labels]
            c = -jnp.mean(target * jnp.log(h) + (1.0 - target) * jnp.log(1.0 - h))
            value = value + centre_weight * c
            metrics["centre"] = c
        return value, metrics

    return loss


def _softmax(logits) -> np.ndarray:
    """Row softmax of host logits in NumPy (float32): no device round trip for a single query."""
    logits = np.asarray(logits, np.float32)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _channel_statistics(images: np.ndarray, chunk: int = 4096):
    """Per-channel mean and standard deviation (in [0, 1] units) of uint8 images, in bounded memory."""
    total = np.zeros(3)
    squares = np.zeros(3)
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk].reshape(-1, 3).astype(np.float64) / 255.0
        total += block.sum(axis=0)
        squares += np.square(block).sum(axis=0)
    count = max(len(images) * images.shape[1] * images.shape[2], 1)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-3).astype(np.float32)


def _config_json(config: cnn.CNNConfig) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in config._asdict().items()}


class _CNNBase(Hasher):
    """What cnn-hash and cnn-softmax share: configuration, data checks, training, saving the network."""

    consumes = "images"
    presets = tuple(PRESETS)
    # Callables given a jaxhash.train.EpochEnd after every training epoch (a web page's live curve,
    # say): set on the instance, neither a hyper-parameter nor saved.
    on_epoch: tuple = ()

    def __init__(self, n_bits: int = 64, seed: int = 0, preset: str = "cpu", architecture=None, widths=None, depth=None,
                 feature_dim=None, image_size=None, epochs=None, batch_size=None, learning_rate=None, weights=None,
                 validation_fraction: float = 0.1, min_images_per_class: int = 2, checkpoint_dir=None, resume: bool = False,
                 progress: bool = True, data_parallel: bool = False):
        super().__init__(n_bits, seed)
        self.data_parallel = data_parallel
        self.preset, self.architecture, self.widths, self.depth = preset, architecture, widths, depth
        self.feature_dim, self.image_size, self.epochs, self.batch_size = feature_dim, image_size, epochs, batch_size
        self.learning_rate, self.validation_fraction = learning_rate, validation_fraction
        self.weights = None if weights is None else os.fspath(weights)
        self.checkpoint_dir = None if checkpoint_dir is None else os.fspath(checkpoint_dir)
        self.min_images_per_class, self.resume, self.progress = min_images_per_class, resume, progress

    # -- configuration ------------------------------------------------------------------------
    def config(self) -> cnn.CNNConfig:
        """The preset with this hasher's overrides."""
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        overrides = {k: getattr(self, k) for k in _OVERRIDES if getattr(self, k) is not None}
        if "widths" in overrides:
            overrides["widths"] = tuple(int(w) for w in overrides["widths"])
        config = PRESETS[self.preset]._replace(**overrides)
        for name in ("depth", "feature_dim", "image_size", "epochs", "batch_size"):
            check_positive_int(getattr(config, name), name)
        if not config.widths or any(int(w) <= 0 for w in config.widths):
            raise ValueError(f"widths must list positive channel counts, got {config.widths!r}")
        if config.image_size < 2 ** len(config.widths):
            raise ValueError(f"image_size {config.image_size} is too small for {len(config.widths)} stages that each halve "
                             f"the image: use at least {2 ** len(config.widths)}")
        return config

    def input_size(self) -> tuple[int, int]:
        size = self.config().image_size
        return (size, size)

    def _fit_shape(self, images):
        return self.input_size() + (3,)

    def _saved_config(self) -> cnn.CNNConfig:
        return cnn.CNNConfig(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in json.loads(self.config_).items()})

    def _backbone(self, config: cnn.CNNConfig, n_classes: int, training: bool = False) -> nn.Module:
        # Inference always computes in float32, so that a model makes the same codes on every machine.
        dtype = cnn.compute_dtype(config) if training else jnp.float32
        return nets.make_network(config.architecture, config.widths, n_classes, config.depth, config.feature_dim, "sigmoid", dtype)

    @staticmethod
    def _template(model, config):
        """The shapes of ``model``'s variables (nothing computed)."""
        return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((2, config.image_size, config.image_size, 3)),
                                                 train=False))

    # -- training ------------------------------------------------------------------------------
    def _prepare(self, x, y):
        """Labels as class indices, the validation split, normalisation; returns what training needs."""
        if y is None:
            raise ValueError(f"{self.method} learns from labelled images: fit(images, labels), or a folder with one "
                             "sub-folder per class on the command line")
        y = np.asarray(y)
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
            hint = ("; for class names, pass their numbers: names, y = np.unique(labels, return_inverse=True)"
                    if y.shape == (len(x),) and y.dtype.kind in "USO" else "")
            raise ValueError(f"labels must be ({len(x)},) integers, got shape {y.shape} and dtype {y.dtype}{hint}")
        if y.min() < 0:
            raise ValueError(f"{int(np.sum(y < 0))} images have no class (label -1: not inside a class folder): put every "
                             "image in a sub-folder named after its class, or pass class numbers >= 0")
        self.classes_, y = np.unique(y, return_inverse=True)
        fraction = float(self.validation_fraction)
        if not 0 <= fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got {fraction}")
        if fraction > 0:
            train_idx, val_idx = cnn.stratified_split(y, fraction, int(self.seed), max(2, int(self.min_images_per_class)),
                                                      names=self.classes_)
        else:
            cnn.check_classes(y, int(self.min_images_per_class), names=self.classes_)
            train_idx, val_idx = np.arange(len(y)), np.zeros(0, int)
        x_train, y_train = x[train_idx], y[train_idx]
        self.mean_, self.std_ = _channel_statistics(x_train)
        validation = (x[val_idx], y[val_idx]) if len(val_idx) else None
        return x_train, y_train.astype(np.int32), validation

    def _data_id(self, x_train, y_train) -> str:
        digest = hashlib.sha256(np.ascontiguousarray(x_train).tobytes())
        digest.update(np.ascontiguousarray(y_train).tobytes())
        return digest.hexdigest()[:16]

    def _initial_variables(self, model, config, key):
        """The network's variables, with every array of the ``weights`` file that fits (same name and
        shape) in place of the random one, or None without a weights file.

        A classifier's weights can so start a cnn-hash, and a network trained on other classes a new
        one: the layers that do not fit (the hash layer, a classifier of another size) start afresh,
        with one note. A file of which no convolution fits is refused.
        """
        if self.weights is None:
            return None
        from pathlib import Path  # noqa: PLC0415

        path = Path(self.weights)
        if not path.is_file():
            raise FileNotFoundError(f"no weights file at {path}: write one with  hasher.save_weights(path)")
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as err:  # noqa: BLE001 - any damage of a zip file
            raise ValueError(f"{path} is not a readable weights file ({npz_damage(err)})") from None
        fresh = flatten_tree(model.init(key, jnp.zeros((2, config.image_size, config.image_size, 3)), train=False))
        fits = {k for k, v in fresh.items() if k in arrays and np.shape(arrays[k]) == np.shape(v)}
        if not any("Conv3x3" in k for k in fits):
            raise CheckpointMismatchError(f"weights file {path} does not fit this model: none of its convolutions has the "
                                          "shape this architecture needs; it must come from a network of the same widths")
        if len(fits) < len(fresh):
            left = sorted({"/".join(k.strip("[]'").split("']['")[1:-1]) for k in set(fresh) - fits})  # the layers
            warnings.warn(f"started from {len(fits)} of the network's {len(fresh)} arrays in {path}; "
                          f"{len(fresh) - len(fits)} start afresh (in {', '.join(left)})", stacklevel=4)
        return fill_template({**fresh, **{k: arrays[k] for k in fits}}, self._template(model, config), f"weights file {path}",
                             "save the weights again")

    def _parallel(self):
        """Where training batches go: split over all devices with ``data_parallel=True``, else one device."""
        return train.data_parallel() if self.data_parallel else None

    def _train_network(self, model, x_train, y_train, validation, config, loss_fn, stage, identity: dict):
        """Train (or, without checkpoints, reuse a network this process already trained with the same
        configuration, data, seed and ``identity`` -- e.g. the classifier shared by cnn-softmax and
        frozen cnn-hash at several code lengths in one benchmark)."""
        training_config = {k: v for k, v in _config_json(config).items() if k != "test_flip"}  # inference only
        run = {"config": training_config, "stage": stage, "classes": len(self.classes_), "seed": int(self.seed),
               "data": self._data_id(x_train, y_train), "weights": self.weights, **identity}
        # The memo does tell test_flip apart: the network is the same, but its history's validation
        # accuracies were measured with or without flip averaging, and a reused history must say the same.
        memo_key = json.dumps({**run, "test_flip": bool(config.test_flip)}, sort_keys=True)
        if self.checkpoint_dir is None:
            with _NETWORK_MEMO_LOCK:
                remembered = _NETWORK_MEMO.pop(memo_key, None)
                if remembered is not None:
                    _NETWORK_MEMO[memo_key] = remembered  # now the most recently used
            if remembered is not None:
                self.history_.extend(remembered["history"])
                return remembered["variables"]
        start = self._initial_variables(model, config, jax.random.key(int(self.seed)))
        folder = None if self.checkpoint_dir is None else f"{self.checkpoint_dir}/{stage}"
        before = len(self.history_)
        variables = cnn.fit_network(model, x_train, y_train, config, key=jax.random.key(int(self.seed)), loss_fn=loss_fn,
                                    mean=self.mean_, std=self.std_, validation=validation, variables=start, stage=stage,
                                    checkpoint_dir=folder, run=run, resume=self.resume, progress=self.progress,
                                    history=self.history_, parallel=self._parallel(), on_epoch=tuple(self.on_epoch))
        if self.checkpoint_dir is None:  # runs with checkpoints never read the memo: keep nothing for them
            with _NETWORK_MEMO_LOCK:
                _NETWORK_MEMO[memo_key] = {"variables": variables, "history": self.history_[before:]}
                while len(_NETWORK_MEMO) > NETWORK_MEMO_SIZE:
                    del _NETWORK_MEMO[next(iter(_NETWORK_MEMO))]  # the least recently used
        return variables

    def _train_classifier(self, x_train, y_train, validation, config):
        """The plain CNN classifier."""
        model = Classifier(self._backbone(config, len(self.classes_), training=True))
        return self._train_network(model, x_train, y_train, validation, config, cnn.classification_loss(config.label_smoothing),
                                   "classifier", {})

    def _fit(self, x, y, rng):
        x_train, y_train, validation = self._prepare(x, y)
        config = self._schedule(self.config(), len(x_train))
        self.config_ = json.dumps(_config_json(config))
        self.train_steps_ = int(config.epochs * (len(x_train) // config.batch_size))  # the network's optimisation steps
        self.history_ = []
        t0 = time.perf_counter()
        self.variables_ = self._train(x_train, y_train, validation, config)
        self.train_seconds_ = round(time.perf_counter() - t0, 2)
        self.validation_accuracy_ = None
        if validation is not None:
            logits = self._outputs(validation[0])["logits"]
            self.validation_accuracy_ = float(np.mean(np.argmax(logits, -1) == validation[1]))

    def _schedule(self, config: cnn.CNNConfig, n: int) -> cnn.CNNConfig:
        """The preset's schedule fitted to ``n`` training images (see :func:`cnn.fit_schedule_to_data`), with a note."""
        fitted = cnn.fit_schedule_to_data(config, n, batch_given=self.batch_size is not None,
                                          epochs_given=self.epochs is not None)
        if fitted != config:
            steps = (n // config.batch_size) * config.epochs
            why = []
            if fitted.batch_size != config.batch_size:
                why.append(f"at least {cnn.MIN_STEPS_PER_EPOCH} steps per epoch" if n // fitted.batch_size >= cnn.MIN_STEPS_PER_EPOCH
                           else f"the batch at its floor of {cnn.MIN_BATCH_SIZE}, short of {cnn.MIN_STEPS_PER_EPOCH} steps per epoch")
            if fitted.epochs != config.epochs:
                why.append(f"the preset's minimum of {config.min_images:,} images seen")
            warnings.warn(f"{n} training images are few for preset {self.preset!r}: {config.epochs} epochs at batch "
                          f"{config.batch_size} would be only {steps} steps, so training takes {fitted.epochs} epochs at "
                          f"batch {fitted.batch_size} ({(n // fitted.batch_size) * fitted.epochs} steps: {' and '.join(why)}); "
                          "--epochs and --batch-size (epochs=..., batch_size=...) choose others", stacklevel=4)
        return fitted

    def _train(self, x_train, y_train, validation, config):
        raise NotImplementedError

    # -- inference ---------------------------------------------------------------------------
    def _outputs(self, images: np.ndarray) -> dict:
        config = self._saved_config()
        return cnn.predict(self._network_for(config), self.variables_, images, self.mean_, self.std_, flip=config.test_flip)

    def _images(self, x) -> np.ndarray:
        """Images brought to the input shape (one note if some were converted)."""
        parts = list(self._batches(x, 4096))
        return np.concatenate(parts) if parts else np.zeros((0,) + tuple(self.input_shape_), np.uint8)

    def _probabilities(self, images: np.ndarray) -> np.ndarray:
        return _softmax(self._outputs(images)["logits"])

    def predict_proba(self, x) -> np.ndarray:
        """Class probabilities ``(n, n_classes)`` float32 of images (class ``j`` is ``classes_[j]``)."""
        return self._probabilities(self._images(x))

    def predict(self, x) -> np.ndarray:
        """Predicted class labels ``(n,)``."""
        return self.classes_[np.argmax(self.predict_proba(x), axis=-1)]

    def features(self, x) -> np.ndarray:
        """The CNN descriptor ``(n, feature_dim)`` float32: what two-stage search re-ranks by (Euclidean)."""
        return self._outputs(self._images(x))["features"]

    def _encode_batch(self, batch) -> dict:
        """Codes, descriptors and class probabilities from one pass of the network."""
        from .codes import pack_bits_host  # noqa: PLC0415

        out = self._outputs(batch)
        return {"codes": pack_bits_host(self._code_values(out) > 0), "features": out["features"],
                "probabilities": _softmax(out["logits"])}

    def _project(self, x):
        return self._code_values(self._outputs(x))

    def _code_values(self, outputs: dict) -> np.ndarray:
        """Real values ``(b, n_bits)`` whose sign is the code."""
        raise NotImplementedError

    # -- persistence ------------------------------------------------------------------------------
    def _learned(self) -> dict:
        learned = super()._learned()
        for transient in ("variables_", "history_", "train_seconds_"):
            learned.pop(transient, None)
        return {**learned, **network_attributes(self.variables_)}

    def _loaded(self) -> None:
        """Gather the saved ``net[...]_`` arrays back into the network's variable tree."""
        config = self._saved_config()
        self.variables_ = fill_template(take_network_attributes(self), self._template(self._network_for(config), config),
                                        "the saved network", "save the model again")
        self.classes_ = np.asarray(self.classes_)

    def _network_for(self, config, training: bool = False) -> nn.Module:
        """The Flax module of this method (training: in the compute dtype of the accelerator)."""
        raise NotImplementedError

    def save_weights(self, path) -> None:
        """Write the network's weights to an ``.npz`` file that ``weights=path`` starts a model from."""
        from .atomic import atomic_write  # noqa: PLC0415

        self._check_fitted()
        arrays = flatten_tree(self.variables_)
        atomic_write(path, lambda f: np.savez(f, **arrays))


@register("cnn-softmax")
class CNNSoftmaxHasher(_CNNBase):
    """Hu & Feng's softmax feature: a CNN classifier; code = thermometer-quantised class probabilities.

    ``n_bits`` must allow one level per class at least (``n_bits >= n_classes``).
    """

    def _network_for(self, config, training: bool = False):
        return Classifier(self._backbone(config, len(self.classes_), training))

    def _train(self, x_train, y_train, validation, config):
        if int(self.n_bits) < len(self.classes_):
            raise ValueError(f"cnn-softmax needs at least one bit per class: n_bits={self.n_bits} < {len(self.classes_)} classes")
        return self._train_classifier(x_train, y_train, validation, config)

    def _code_values(self, outputs):
        probs = _softmax(outputs["logits"])
        levels = int(self.n_bits) // probs.shape[1]
        thresholds = (np.arange(levels, dtype=np.float32) + 1.0) / (levels + 1.0)  # bit (c, l): p_c > (l + 1) / (L + 1)
        values = (probs[:, :, None] - thresholds[None, None, :]).reshape(len(probs), -1)
        spare = int(self.n_bits) - values.shape[1]
        return np.concatenate([values, -np.ones((len(values), spare), np.float32)], axis=1) if spare else values


@register("cnn-hash")
class CNNHasher(_CNNBase):
    """Zelensky, Pismenskova & Voronin's hash layer on a CNN (see the module docstring).

    Args (beyond the shared ones): mode: ``"joint"`` (default) or ``"frozen"``; reconstruction_weight: the
    weight of the reconstruction error (1: the paper's sum); quantization: weight of the optional
    h(1 - h) penalty (0: the paper's loss); centre_weight: weight of an optional class-centre term
    pulling each image's h to a target code of its class (0: the paper's loss); head_epochs: epochs
    of hash-layer training in frozen mode.
    """

    default_mode = "joint"

    def __init__(self, n_bits: int = 64, seed: int = 0, preset: str = "cpu", mode: str | None = None,
                 reconstruction_weight: float = 1.0, quantization: float = 0.0, centre_weight: float = 0.0, head_epochs: int = 30,
                 architecture=None,
                 widths=None, depth=None, feature_dim=None, image_size=None, epochs=None, batch_size=None, learning_rate=None,
                 weights=None, validation_fraction: float = 0.1, min_images_per_class: int = 2, checkpoint_dir=None,
                 resume: bool = False, progress: bool = True, data_parallel: bool = False):
        super().__init__(n_bits, seed, preset, architecture, widths, depth, feature_dim, image_size, epochs, batch_size,
                         learning_rate, weights, validation_fraction, min_images_per_class, checkpoint_dir, resume, progress,
                         data_parallel)
        self.mode = mode or type(self).default_mode
        self.reconstruction_weight, self.quantization, self.head_epochs = reconstruction_weight, quantization, head_epochs
        self.centre_weight = centre_weight

    def _network_for(self, config, training: bool = False):
        return HashNet(self._backbone(config, len(self.classes_), training), int(self.n_bits), len(self.classes_))

    def _train(self, x_train, y_train, validation, config):
        if self.mode not in ("joint", "frozen"):
            raise ValueError(f"mode must be 'joint' or 'frozen', got {self.mode!r}")
        if self.mode != type(self).default_mode and type(self) is not CNNHasher:
            raise ValueError(f"{self.method} trains in {type(self).default_mode} mode: use cnn-hash for mode={self.mode!r}")
        centres = class_centres(len(self.classes_), int(self.n_bits), int(self.seed))
        loss = hash_loss(config.label_smoothing, float(self.reconstruction_weight), float(self.quantization), centres,
                         float(self.centre_weight))
        if self.mode == "joint":
            identity = {"n_bits": int(self.n_bits), "reconstruction_weight": float(self.reconstruction_weight),
                        "quantization": float(self.quantization), "centre_weight": float(self.centre_weight)}
            return self._train_network(self._network_for(config, training=True), x_train, y_train, validation, config, loss,
                                       "joint", identity)
        classifier = self._train_classifier(x_train, y_train, validation, config)
        return self._train_head(classifier, x_train, y_train, config, loss)

    def _train_head(self, classifier, x_train, y_train, config, loss_fn):
        """Frozen mode: the hash layer alone, on the classifier's fixed descriptors (one scan per epoch)."""
        backbone_model = Classifier(self._backbone(config, len(self.classes_)))  # float32 inference
        features = jnp.asarray(cnn.predict(backbone_model, classifier, x_train, self.mean_, self.std_)["features"])
        head = HashHead(int(self.n_bits), len(self.classes_))
        key = jax.random.fold_in(jax.random.key(int(self.seed)), 7)
        params = head.init(key, features[:2])["params"]
        parallel = self._parallel()
        batch = min(config.batch_size, len(features))
        if parallel is not None:  # every device gets an equal part of each batch
            batch = max(parallel.devices, batch - batch % parallel.devices)
        steps = (len(features) // batch) * int(self.head_epochs)
        optimizer = optax.chain(optax.add_decayed_weights(config.weight_decay, mask=cnn.decay_mask),
                                optax.sgd(cnn.cosine_schedule(max(steps, 1), 0.5), momentum=0.9, nesterov=True))

        def step(state, batch_data, _key):
            params, opt_state = state
            f, labels = batch_data

            def objective(p):
                return loss_fn(head.apply({"params": p}, f), labels)

            (value, metrics), grads = jax.value_and_grad(objective, has_aux=True)(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), dict(metrics, loss=value)

        epoch = train.resident_epochs(step, (features, y_train), batch, parallel)
        state = train.run_stage((params, optimizer.init(params)), epoch, key=key, epochs=int(self.head_epochs),
                                stage="hash layer", progress=self.progress, history=self.history_, parallel=parallel,
                                on_epoch=tuple(self.on_epoch))
        variables = {"params": {"backbone": classifier["params"]["backbone"], "head": state[0]},
                     "batch_stats": {"backbone": classifier["batch_stats"]["backbone"]}}
        return variables

    def _code_values(self, outputs):
        return outputs["codes"] - 0.5


@register("cnn-hash-frozen")
class FrozenCNNHasher(CNNHasher):
    """``cnn-hash`` with ``mode="frozen"`` by default: a name of its own so that one ``jaxhash
    benchmark`` run can compare both modes."""

    default_mode = "frozen"
