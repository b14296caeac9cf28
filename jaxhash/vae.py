"""Variational and sparse autoencoders on images (Flax), after Kovalenko's "Clustering images by
visual similarity with variational autoencoders" (Southern Federal University, 2018).

* :class:`ConvVAE` -- a convolutional VAE (Kingma & Welling): Gaussian posterior
  N(mu(x), diag sigma^2(x)), a sample by reparameterisation with an explicit key, a Bernoulli
  likelihood for grey images and a Gaussian one (fixed ``sigma``) for colour, loss =
  reconstruction + beta * KL.
* :class:`SparseAutoencoder` -- the same encoder and decoder with a deterministic non-negative
  code and an L1 penalty ``sparsity * |h|_1`` on it.
* :class:`Autoencoder` -- a plain autoencoder (linear code, reconstruction only), as in DEC (Xie,
  Girshick & Farhadi) and N2D (McConville et al., "N2D: (Not Too) Deep Clustering via Clustering
  the Local Manifold of an Autoencoded Embedding"): with ``architecture="dense"`` (the ``n2d``
  preset: d-500-500-2000-10), then UMAP and a Gaussian mixture, it is the best route to clusters
  here.

With ``architecture="conv"`` (the default) the encoder halves the image with stride-2
convolutions until it is at most 4 pixels wide (28x28 and 32x32: 3 stages; 64: 4; 256: 6),
doubling the channels from ``width`` up to ``max_width``, then a dense layer; the decoder mirrors
it, cropping back to every odd size on the way (7 -> 14 -> 28); with ``architecture="dense"`` both are fully connected layers of ``dense_units`` (mirrored in
the decoder). Images are uint8 ``(n, H, W, C)``, seen as [0, 1].

:func:`fit_autoencoder` trains either on the shared loop (:mod:`jaxhash.train`: progress bar with
each loss term, an Orbax checkpoint every epoch with exact resume, a NaN guard that keeps the last
good checkpoint). :class:`VAEHasher` (``vae``) and :class:`SparseAEHasher` (``sparse-ae``) make
binary codes by ITQ on the latent means and keep those means as the features two-stage search
re-ranks by; :class:`AEHasher` (``ae``) does the same with the plain autoencoder.
"""
from __future__ import annotations

import functools
import json
import math
import time
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import train
from .cnn import in_padded_batches
from .checkpoint import fill_template, network_attributes, take_network_attributes
from .checks import check_positive_int
from .hashers import Hasher, register
from .images import common_shape

__all__ = ["AEConfig", "PRESETS", "ConvVAE", "SparseAutoencoder", "stage_sizes", "make_model", "init_params",
           "fit_autoencoder", "encode_latents", "reconstruct", "generate", "VAEHasher", "SparseAEHasher", "Autoencoder",
           "AEHasher", "AEUMAPHasher", "ARCHITECTURES"]


class AEConfig(NamedTuple):
    """Architecture and schedule of an autoencoder.

    latent_dim: size of the latent space; width / max_width: channels of the first stride-2
    convolution and the cap as they double; hidden: the dense layer between convolutions and
    latent; beta: weight of the KL term (VAE); sparsity: weight of the L1 term (sparse AE);
    sigma: standard deviation of the Gaussian likelihood of colour images; image_size: side the
    images are resized to (None: their own size); architecture: ``"conv"`` (stride-2
    convolutions; width, max_width and hidden apply) or ``"dense"`` (fully connected layers of
    ``dense_units``, mirrored in the decoder).
    """

    latent_dim: int = 16
    width: int = 32
    max_width: int = 128
    hidden: int = 256
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 1e-3
    beta: float = 1.0
    sparsity: float = 1e-3
    sigma: float = 0.1
    image_size: int | None = None
    architecture: str = "conv"
    dense_units: tuple[int, ...] = (500, 500, 2000)


ARCHITECTURES = ("conv", "dense")
# Training images up to this size are copied to the device once and each epoch of a dense network runs as
# one scan (a quarter faster on a CPU). Not convolutions: XLA:CPU runs them 5x slower inside a loop.
DEVICE_RESIDENT_BYTES = 256 * 2**20

# tiny: tests and notebooks; cpu: minutes on two CPU cores for MNIST; gpu: the seed's 256x256 scale.
PRESETS = {
    "tiny": AEConfig(latent_dim=8, width=8, max_width=16, hidden=32, epochs=2, batch_size=32),
    "cpu": AEConfig(latent_dim=16, width=16, max_width=64, hidden=256, epochs=10, batch_size=128),
    "gpu": AEConfig(latent_dim=64, width=32, max_width=512, hidden=1024, epochs=30, batch_size=256),
    # N2D's autoencoder (McConville et al.): d-500-500-2000-10 fully connected, batch 256; N2D trains 1000 epochs,
    # 30 (6 minutes on two CPU cores for MNIST) already cluster MNIST at .97 after UMAP
    "n2d": AEConfig(latent_dim=10, architecture="dense", epochs=30, batch_size=256),
}


def stage_sizes(size: int) -> tuple[int, ...]:
    """Spatial sides from the input down to at most 4, halving (rounding up): 28 -> (28, 14, 7, 4)."""
    sizes = [int(size)]
    while sizes[-1] > 4:
        sizes.append(math.ceil(sizes[-1] / 2))
    return tuple(sizes)


class _Encoder(nn.Module):
    config: AEConfig
    outputs: int  # 2 * latent (VAE: mean, log-variance) or latent (sparse AE)

    @nn.compact
    def __call__(self, x):
        for stage in range(len(stage_sizes(x.shape[1])) - 1):
            x = nn.relu(nn.Conv(min(self.config.width * 2**stage, self.config.max_width), (4, 4), strides=2, padding="SAME")(x))
        x = nn.relu(nn.Dense(self.config.hidden)(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.outputs)(x)


class _DenseEncoder(nn.Module):
    config: AEConfig
    outputs: int

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for units in self.config.dense_units:
            x = nn.relu(nn.Dense(units)(x))
        return nn.Dense(self.outputs)(x)


class _DenseDecoder(nn.Module):
    config: AEConfig
    shape: tuple[int, int, int]

    @nn.compact
    def __call__(self, z):
        x = z
        for units in reversed(self.config.dense_units):
            x = nn.relu(nn.Dense(units)(x))
        return nn.Dense(math.prod(self.shape))(x).reshape((z.shape[0],) + tuple(self.shape))


def _networks(config: AEConfig, outputs: int, shape) -> tuple[nn.Module, nn.Module]:
    """The encoder (to ``outputs`` values) and decoder (to ``shape``) of ``config.architecture``."""
    if config.architecture == "dense":
        return _DenseEncoder(config, outputs), _DenseDecoder(config, shape)
    return _Encoder(config, outputs), _Decoder(config, shape)


class _Decoder(nn.Module):
    config: AEConfig
    shape: tuple[int, int, int]  # (H, W, C) of the images

    @nn.compact
    def __call__(self, z):
        heights, widths = stage_sizes(self.shape[0]), stage_sizes(self.shape[1])
        n_stages = max(len(heights), len(widths)) - 1
        heights = heights + (heights[-1],) * (n_stages + 1 - len(heights))
        widths = widths + (widths[-1],) * (n_stages + 1 - len(widths))
        channels = [min(self.config.width * 2**s, self.config.max_width) for s in range(n_stages)]
        x = nn.relu(nn.Dense(self.config.hidden)(z))
        x = nn.relu(nn.Dense(heights[-1] * widths[-1] * channels[-1])(x)).reshape(z.shape[0], heights[-1], widths[-1], -1)
        for stage in reversed(range(n_stages)):
            out = self.shape[2] if stage == 0 else channels[stage - 1]
            x = nn.ConvTranspose(out, (4, 4), strides=(2, 2), padding="SAME")(x)[:, : heights[stage], : widths[stage]]
            if stage:
                x = nn.relu(x)
        return x  # logits (grey, Bernoulli) or pre-sigmoid means (colour)


def _likelihood(shape) -> str:
    return "bernoulli" if shape[-1] == 1 else "gaussian"


def _reconstruction_error(x, out, likelihood: str, sigma: float):
    """Negative log-likelihood per image, summed over pixels (constants dropped)."""
    if likelihood == "bernoulli":
        return jnp.sum(optax.sigmoid_binary_cross_entropy(out, x), axis=(1, 2, 3))
    return 0.5 * jnp.sum(jnp.square(x - jax.nn.sigmoid(out)), axis=(1, 2, 3)) / sigma**2


class ConvVAE(nn.Module):
    """``apply(variables, x, key)`` -> ``{"mean", "log_var", "out"}``; ``x`` float ``(b, H, W, C)`` in [0, 1].
    With ``key=None`` the decoder gets the mean (no sampling). Convolutional unless
    ``config.architecture`` is ``"dense"``."""

    config: AEConfig
    shape: tuple[int, int, int]

    def setup(self):
        self.encoder, self.decoder = _networks(self.config, 2 * self.config.latent_dim, self.shape)

    def encode(self, x):
        mean, log_var = jnp.split(self.encoder(x), 2, axis=-1)
        return mean, jnp.clip(log_var, -12.0, 8.0)

    def __call__(self, x, key=None):
        mean, log_var = self.encode(x)
        z = mean if key is None else mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape, mean.dtype)
        return {"mean": mean, "log_var": log_var, "out": self.decoder(z)}

    def generate(self, z):
        return self.decoder(z)

    def loss(self, x, outputs):
        """``(loss, {"reconstruction", "kl"})`` averaged over the batch (pure: call it on the unbound module)."""
        reconstruction = _reconstruction_error(x, outputs["out"], _likelihood(self.shape), self.config.sigma)
        kl = 0.5 * jnp.sum(jnp.exp(outputs["log_var"]) + jnp.square(outputs["mean"]) - 1.0 - outputs["log_var"], axis=-1)
        return jnp.mean(reconstruction + self.config.beta * kl), {"reconstruction": jnp.mean(reconstruction), "kl": jnp.mean(kl)}


class Autoencoder(nn.Module):
    """``apply(variables, x, key)`` -> ``{"mean" (the linear code), "out"}``: reconstruction only, no
    penalty on the code (DEC's and N2D's autoencoder); the key is unused."""

    config: AEConfig
    shape: tuple[int, int, int]

    def setup(self):
        self.encoder, self.decoder = _networks(self.config, self.config.latent_dim, self.shape)

    def encode(self, x):
        return self.encoder(x), None

    def __call__(self, x, key=None):
        code, _ = self.encode(x)
        return {"mean": code, "out": self.decoder(code)}

    def generate(self, z):
        return self.decoder(z)

    def loss(self, x, outputs):
        """``(loss, {"reconstruction"})`` averaged over the batch (pure: call it on the unbound module)."""
        reconstruction = jnp.mean(_reconstruction_error(x, outputs["out"], _likelihood(self.shape), self.config.sigma))
        return reconstruction, {"reconstruction": reconstruction}


class SparseAutoencoder(Autoencoder):
    """``apply(variables, x, key)`` -> ``{"mean" (the code h >= 0), "out"}``; the key is unused."""

    def encode(self, x):
        return nn.relu(self.encoder(x)), None

    def loss(self, x, outputs):
        """``(loss, {"reconstruction", "l1"})`` averaged over the batch (pure: call it on the unbound module)."""
        reconstruction = _reconstruction_error(x, outputs["out"], _likelihood(self.shape), self.config.sigma)
        l1 = jnp.sum(jnp.abs(outputs["mean"]), axis=-1)
        return jnp.mean(reconstruction + self.config.sparsity * l1), {"reconstruction": jnp.mean(reconstruction), "l1": jnp.mean(l1)}


MODELS = {"vae": ConvVAE, "sparse-ae": SparseAutoencoder, "ae": Autoencoder}


class AEState(NamedTuple):
    params: dict
    opt_state: optax.OptState


def _as_unit(images):
    return images.astype(jnp.float32) / 255.0


def make_train_step(model, optimizer) -> Callable:
    """A jitted ``step(state, images uint8, key) -> (state, {"loss", "reconstruction"[, "kl" or "l1"]})``."""

    @jax.jit
    def step(state: AEState, images, key):
        x = _as_unit(images)

        def objective(params):
            return model.loss(x, model.apply({"params": params}, x, key))

        (value, terms), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        with jax.numpy_dtype_promotion("standard"):  # Adam's bias correction mixes a float and an int step count
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return AEState(optax.apply_updates(state.params, updates), opt_state), dict(terms, loss=value)

    return step


def run_config(config: AEConfig) -> dict:
    """The settings a checkpoint must match to be resumed: a convolutional network leaves out the
    fully connected layout (it does not use it; checkpoints written before it existed resume)."""
    settings = config._asdict()
    if config.architecture == "conv":
        del settings["architecture"], settings["dense_units"]
    return settings


def make_model(kind: str, config: AEConfig, shape) -> nn.Module:
    if kind not in MODELS:
        raise ValueError(f"unknown autoencoder {kind!r}; choose one of {', '.join(MODELS)}")
    if config.latent_dim < 1:
        raise ValueError(f"latent_dim must be at least 1, got {config.latent_dim}: the latent space needs a dimension")
    if config.architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {config.architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    units = tuple(config.dense_units)
    if config.architecture == "dense" and (not units or any(isinstance(u, bool) or int(u) < 1 for u in units)):
        raise ValueError(f"dense_units must be positive layer sizes, e.g. (500, 500, 2000), got {config.dense_units!r}")
    if config.architecture == "conv" and min(int(s) for s in shape[:2]) < 5:
        raise ValueError(f"the convolutional autoencoders halve images down to 4 pixels, so they need at least 5x5, got "
                         f"{shape[0]}x{shape[1]}: read the images larger (--image-size 28, image_size=28) or use "
                         "architecture='dense' (--architecture dense)")
    config = config._replace(dense_units=tuple(int(u) for u in units))  # a hashable module (the saved JSON has a list)
    return MODELS[kind](config, tuple(int(s) for s in shape))


def init_params(model, key) -> dict:
    return model.init(key, jnp.zeros((2,) + model.shape, jnp.float32))["params"]


def fit_autoencoder(model, images: np.ndarray, config: AEConfig, *, key, params=None, stage: str = "autoencoder",
                    checkpoint_dir=None, run: dict | None = None, resume: bool = False, progress: bool = True,
                    history: list | None = None, parallel: train.DataParallel | None = None) -> dict:
    """Train ``model`` on uint8 ``images`` ``(n, H, W, C)`` with Adam (cosine decay) on the shared loop.

    For a dense network, images up to ``DEVICE_RESIDENT_BYTES`` (256 MiB) are copied to the device
    once and each epoch runs as one ``lax.scan``; otherwise (convolutions, larger sets, data-parallel
    training) they go one batch at a time from the host, through the same batches. Each epoch draws its batches and sampling noise from
    ``fold_in(key, epoch)``; its metrics are
    the loss, each of its terms and images per second. A NaN stops training with a message and
    keeps the last good checkpoint. Returns the trained parameters.
    """
    n = len(images)
    batch_size = check_positive_int(config.batch_size, "batch_size")
    steps_per_epoch = n // batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{n} training images are fewer than one batch of {batch_size}: lower the batch size "
                         "(--batch-size, batch_size=...) or use --preset tiny")
    if parallel is not None:
        parallel.check_batch_size(batch_size)
    schedule = optax.cosine_decay_schedule(config.learning_rate, max(1, steps_per_epoch * config.epochs), alpha=0.05)
    optimizer = optax.adam(schedule)
    params = init_params(model, jax.random.fold_in(key, 10**6)) if params is None else params
    state = AEState(params, optimizer.init(params))
    step = make_train_step(model, optimizer)

    if parallel is None and config.architecture == "dense" and images.nbytes <= DEVICE_RESIDENT_BYTES:
        run_epoch = train.resident_epochs(step, images, batch_size)  # the host's batches, a quarter faster here
    else:
        def run_epoch(state, epoch_key):
            return train.epoch_from_host(step, state, images, epoch_key, batch_size, parallel=parallel)

    def epoch_fn(state, epoch_key):
        t0 = time.perf_counter()
        state, metrics = run_epoch(state, epoch_key)
        metrics = {k: float(v) for k, v in metrics.items()}
        metrics["images_per_s"] = steps_per_epoch * batch_size / (time.perf_counter() - t0)
        return state, metrics

    state = train.run_stage(state, epoch_fn, key=key, epochs=config.epochs, stage=stage, checkpoint_dir=checkpoint_dir,
                            run=run, resume=resume, progress=progress, history=history, parallel=parallel,
                            divergence_hint="lower the learning rate (--learning-rate, learning_rate=...) and resume")
    return state.params


@functools.partial(jax.jit, static_argnames=("model",))
def _encode_batch(model, params, images):
    mean, _ = model.apply({"params": params}, _as_unit(images), method="encode")
    return mean


@functools.partial(jax.jit, static_argnames=("model",))
def _reconstruct_batch(model, params, images):
    """The decoder's mean in [0, 1] (the sigmoid of Bernoulli logits or of the Gaussian's pre-activation)."""
    return jax.nn.sigmoid(model.apply({"params": params}, _as_unit(images))["out"])


def encode_latents(model, params, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Latent means (VAE) or codes (sparse and plain AE) ``(n, latent_dim)`` float32 of uint8 images."""
    return in_padded_batches(lambda chunk: {"mean": _encode_batch(model, params, chunk)}, images, batch_size)["mean"]


def reconstruct(model, params, images: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Reconstructions ``(n, H, W, C)`` uint8 of uint8 images (the decoder's mean)."""
    out = in_padded_batches(lambda chunk: {"out": _reconstruct_batch(model, params, chunk)}, images, batch_size)["out"]
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


def generate(model, params, key, n: int) -> np.ndarray:
    """``n`` images ``(n, H, W, C)`` uint8 decoded from z ~ N(0, I) (samples of a VAE)."""
    z = jax.random.normal(key, (n, model.config.latent_dim), jnp.float32)
    out = jax.nn.sigmoid(model.apply({"params": params}, z, method="generate"))
    return np.clip(np.round(np.asarray(out) * 255.0), 0, 255).astype(np.uint8)


# -- hashers ------------------------------------------------------------------------------------------

_OVERRIDES = ("latent_dim", "width", "epochs", "batch_size", "learning_rate", "image_size", "architecture")


class _AutoencoderHasher(Hasher):
    """What ``vae``, ``sparse-ae`` and ``ae`` share: configuration, training, latent features, ITQ codes."""

    consumes = "images"
    presets = tuple(PRESETS)
    kind = "vae"
    codes_from_latents = True  # ITQ on the latents: one latent direction per bit

    def __init__(self, n_bits: int = 32, seed: int = 0, preset: str = "cpu", latent_dim=None, width=None, epochs=None,
                 batch_size=None, learning_rate=None, image_size=None, beta=None, sparsity=None, architecture=None,
                 checkpoint_dir=None, resume: bool = False, progress: bool = True, data_parallel: bool = False):
        super().__init__(n_bits, seed)
        self.preset, self.latent_dim, self.width, self.epochs = preset, latent_dim, width, epochs
        self.architecture = architecture
        self.batch_size, self.learning_rate, self.image_size = batch_size, learning_rate, image_size
        self.beta, self.sparsity = beta, sparsity
        self.checkpoint_dir, self.resume, self.progress, self.data_parallel = checkpoint_dir, resume, progress, data_parallel

    def config(self) -> AEConfig:
        """The preset with the given overrides; for codes by ITQ on the latents, the latent space is
        at least ``n_bits`` wide (ITQ takes ``n_bits`` directions from it) unless ``latent_dim`` is given."""
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        config = PRESETS[self.preset]
        changes = {name: getattr(self, name) for name in _OVERRIDES if getattr(self, name) is not None}
        for name in ("beta", "sparsity"):
            if getattr(self, name) is not None:
                changes[name] = float(getattr(self, name))
        if "latent_dim" not in changes and self.codes_from_latents:
            changes["latent_dim"] = max(config.latent_dim, int(self.n_bits))
        if "latent_dim" in changes and (isinstance(changes["latent_dim"], bool) or int(changes["latent_dim"]) < 1):
            raise ValueError(f"latent_dim must be a positive integer, got {changes['latent_dim']!r}")
        return config._replace(**changes)

    def input_size(self):
        return None if self.image_size is None else (int(self.image_size), int(self.image_size))

    def _fit_shape(self, images):
        shape = common_shape(images, f"{self.method}: the training images", mixed_sizes="most common")
        size = self.input_size()
        return shape if size is None else size + shape[2:]

    def _model(self):
        return make_model(self.kind, self._saved_config(), self.input_shape_)

    def _saved_config(self) -> AEConfig:
        return AEConfig(**json.loads(self.config_))

    def _fit(self, x, y, rng):
        config = self.config()
        self._check_code_space(config, len(x))
        shape = tuple(int(s) for s in x.shape[1:])
        model = make_model(self.kind, config, shape)
        self.config_ = json.dumps(config._asdict())
        self.history_ = []
        t0 = time.perf_counter()
        run = {"kind": self.kind, "config": run_config(config), "shape": list(shape), "seed": int(self.seed), "n": len(x)}
        self.params_ = fit_autoencoder(model, x, config, key=jax.random.key(int(self.seed)), stage=self.kind,
                                       checkpoint_dir=self.checkpoint_dir, run=run, resume=self.resume,
                                       progress=self.progress, history=self.history_,
                                       parallel=train.data_parallel() if self.data_parallel else None)
        self.train_seconds_ = round(time.perf_counter() - t0, 2)
        self._fit_codes(encode_latents(model, self.params_, x))

    def _check_code_space(self, config: AEConfig, n: int) -> None:
        """Refuse, before any training, settings the codes cannot be made with."""
        if config.latent_dim < int(self.n_bits):
            raise ValueError(f"{self.method}: a {config.latent_dim}-dim latent space cannot give {self.n_bits} bits (ITQ "
                             f"takes one direction per bit): use latent_dim >= {self.n_bits}")

    def _fit_codes(self, latents: np.ndarray) -> None:
        """Learn ``latent_mean_`` and ``projection_`` (ITQ) from the training latents ``(n, latent_dim)``."""
        from .baselines import ITQ  # noqa: PLC0415

        itq = ITQ(int(self.n_bits), int(self.seed)).fit(latents)
        self.latent_mean_, self.projection_ = itq.mean_, itq.projection_

    def _code_space(self, latents: np.ndarray) -> np.ndarray:
        """The points codes are cut from (and two-stage search re-ranks by): here the latents themselves."""
        return latents

    # -- inference -------------------------------------------------------------------------------
    def latents(self, x) -> np.ndarray:
        """Latent means ``(n, latent_dim)`` float32 of images of any size (converted, with one note)."""
        self._check_fitted()
        parts = [encode_latents(self._model(), self.params_, b) for b in self._batches(x, 4096)]
        return np.concatenate(parts) if parts else np.zeros((0, self._saved_config().latent_dim), np.float32)

    def _encode_batch(self, batch) -> dict:
        from .codes import pack_bits_host  # noqa: PLC0415

        points = self._code_space(encode_latents(self._model(), self.params_, batch))
        return {"codes": pack_bits_host(np.asarray(self._rotate(points)) > 0), "features": points}

    def _project(self, x):
        return self._rotate(self._code_space(encode_latents(self._model(), self.params_, x)))

    def _rotate(self, points: np.ndarray) -> np.ndarray:
        """The learned projection of code-space points: real values ``(n, n_bits)`` whose sign is the code."""
        return (points - self.latent_mean_) @ self.projection_

    # -- persistence ---------------------------------------------------------------------------------
    def _learned(self) -> dict:
        learned = super()._learned()
        for transient in ("params_", "history_", "train_seconds_"):
            learned.pop(transient, None)
        return {**learned, **network_attributes(self.params_)}

    def _loaded(self) -> None:
        model = self._model()
        template = jax.eval_shape(lambda: init_params(model, jax.random.key(0)))
        self.params_ = fill_template(take_network_attributes(self), template, "the saved autoencoder", "save the model again")


@register("vae")
class VAEHasher(_AutoencoderHasher):
    """VAE (Kingma & Welling; convolutional unless architecture="dense"), codes by ITQ on the latent
    means (Kovalenko's VAE route).

    Args: n_bits, seed; preset (tiny, cpu, gpu, n2d); latent_dim (default max(preset, n_bits)), width,
    epochs, batch_size, learning_rate, image_size (side; default the images' own size), beta (KL
    weight), architecture (conv or dense); checkpoint_dir / resume (an Orbax checkpoint every epoch); progress; data_parallel.
    """

    kind = "vae"


@register("sparse-ae")
class SparseAEHasher(_AutoencoderHasher):
    """Sparse autoencoder (L1 penalty ``sparsity`` on a non-negative code), codes by ITQ on the code;
    the other arguments as :class:`VAEHasher`."""

    kind = "sparse-ae"


@register("ae")
class AEHasher(_AutoencoderHasher):
    """Plain autoencoder (DEC's and N2D's: reconstruction only), codes by ITQ on the code. With
    ``preset="n2d"`` it is N2D's fully connected d-500-500-2000 network; the other arguments as
    :class:`VAEHasher`."""

    kind = "ae"


@register("ae-umap")
class AEUMAPHasher(_AutoencoderHasher):
    """N2D's embedding as codes (McConville et al.): a plain autoencoder (preset ``n2d``), UMAP of
    its codes (umap-learn, ``pip install 'jaxhash[cluster]'``; ``n_neighbors=umap_neighbors``,
    ``min_dist=0``) to ``umap_dims`` dimensions, and bits = signs of random projections of the
    centred embedding (LSH; a 10-dim embedding gives any number of bits).

    UMAP has no map for new images, so an image's embedding is the mean embedding of its
    ``encode_neighbours`` nearest training images in the autoencoder's latent space (exact search);
    the training latents and embedding are saved with the model, and encoding needs no umap-learn.
    Two-stage search re-ranks by distance in the embedding. The latent size is the preset's
    (``latent_dim`` overrides it; it need not reach ``n_bits``); there is no ``beta`` or
    ``sparsity``; the other arguments as :class:`VAEHasher`.
    """

    kind = "ae"
    codes_from_latents = False

    def __init__(self, n_bits: int = 32, seed: int = 0, preset: str = "n2d", umap_dims: int = 10, umap_neighbors: int = 20,
                 encode_neighbours: int = 10, latent_dim=None, width=None, epochs=None, batch_size=None, learning_rate=None,
                 image_size=None, architecture=None, checkpoint_dir=None, resume: bool = False, progress: bool = True,
                 data_parallel: bool = False):
        super().__init__(n_bits, seed, preset, latent_dim, width, epochs, batch_size, learning_rate, image_size,
                         architecture=architecture, checkpoint_dir=checkpoint_dir, resume=resume, progress=progress,
                         data_parallel=data_parallel)
        self.umap_dims, self.umap_neighbors, self.encode_neighbours = umap_dims, umap_neighbors, encode_neighbours

    def _check_code_space(self, config: AEConfig, n: int) -> None:
        umap_dims = check_positive_int(self.umap_dims, "umap_dims")
        if check_positive_int(self.umap_neighbors, "umap_neighbors") < 2:
            raise ValueError("umap_neighbors must be at least 2 (UMAP's neighbourhood graph needs a neighbour besides the "
                             "point itself); N2D uses 20")
        check_positive_int(self.encode_neighbours, "encode_neighbours")
        if umap_dims >= n - 1:
            raise ValueError(f"{self.method}: a {umap_dims}-dim UMAP embedding needs more than {umap_dims + 1} training "
                             f"images, got {n}: add images or lower umap_dims")
        from .cluster import require_umap  # noqa: PLC0415

        require_umap()  # before training, not after

    def _fit_codes(self, latents: np.ndarray) -> None:
        from .cluster import embed  # noqa: PLC0415

        embedding = embed(latents, "umap", int(self.umap_dims), int(self.seed), min_dist=0.0,
                          n_neighbors=min(int(self.umap_neighbors), len(latents) - 1))
        self.anchor_latents_, self.anchor_embedding_ = latents.astype(np.float32), embedding.astype(np.float32)
        self.encode_neighbours_ = min(int(self.encode_neighbours), len(latents))  # learned: it changes every code
        rng = np.random.default_rng(int(self.seed))
        self.latent_mean_ = self._code_space(latents).mean(axis=0)
        self.projection_ = rng.standard_normal((int(self.umap_dims), int(self.n_bits))).astype(np.float32)

    def _code_space(self, latents: np.ndarray) -> np.ndarray:
        """The mean UMAP embedding ``(n, umap_dims)`` of each latent's nearest training latents."""
        from .search import euclidean_knn  # noqa: PLC0415

        _, positions = euclidean_knn(latents, self.anchor_latents_, self.encode_neighbours_)
        return self.anchor_embedding_[np.asarray(positions)].mean(axis=1)
