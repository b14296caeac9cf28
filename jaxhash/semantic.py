"""``SemanticHasher``: semantic hashing with a pretrained deep belief network.

Semantic hashing (Salakhutdinov & Hinton, 2009): a deep autoencoder, pretrained as a stack of
RBMs and fine-tuned by backprop (Hinton & Salakhutdinov, 2006), whose sigmoid code layer gives
the bits; preset ``paper`` is the CIFAR-10 setting of the Russian-language paper on semantic
coding of images with deep autoassociative networks that jaxhash reproduces. Registered as method ``dbn-ae``; the training itself is :func:`jaxhash.dbn.train_dbn`.

``fit`` standardises the data (per-pixel mean removed, divided by the global standard
deviation), trains the DBN autoencoder and keeps the encoder. ``encode`` rounds the sigmoid
code layer (> 0.5) or, for presets with short schedules whose code units stay near 0.5, cuts
each bit at its median over the training data; then packs the bits.

Training shows a progress bar with the current reconstruction error. With ``checkpoint_dir`` it
saves an Orbax checkpoint (parameters and optimiser state) after every epoch of every stage;
``resume=True`` continues from the latest one and gives the same result as an uninterrupted run
with the same ``seed`` (each epoch's PRNG key is derived from it, the stage and the epoch).
"""
from __future__ import annotations

import hashlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from . import dbn, rbm, train
from .hashers import Hasher, register

__all__ = ["SemanticHasher", "PRESETS"]

# Hidden layers between the input and the code layer, and the training schedule.
PRESETS = {
    # The CIFAR-10 setting of the semantic-hashing-with-deep-autoassociative-networks paper this
    # reproduces: 3072-4096-2048-1024-512-256, 100 epochs per RBM, batch 100, learning rates 0.001
    # (Gaussian) and 0.01 (binary), momentum 0.9; fine-tuning 150 epochs at 1e-6, momentum 0.9.
    "paper": ((4096, 2048, 1024, 512), dbn.DBNSchedule()),
    # Minutes on a 2-core CPU (MNIST protocol 1k, 32 bits: well under 10 minutes).
    # Noise before the code layer pushes the codes to 0/1, so rounding works (measured on MNIST
    # 1k: mAP@5000 .617/.655 rounded vs .608/.644 with median thresholds at 32/64 bits).
    # A smaller set gets more epochs, up to 250,000 images seen per stage (dbn.fit_schedule_to_data): the 797
    # training digits (8x8) got one code for all at the preset's epochs, mAP@all .589 at 314 (16 bits; ITQ .63).
    "cpu-small": ((512, 256), dbn.DBNSchedule(rbm_epochs=8, gaussian_lr=0.001, binary_lr=0.01, finetune_epochs=12,
                                              finetune_lr=2e-5, code_noise=2.0, min_images=250_000)),
    # Seconds: for tests and notebooks. Two epochs leave code units near 0.5, so bits are cut at
    # their training medians.
    "tiny": ((64,), dbn.DBNSchedule(rbm_epochs=2, batch_size=50, finetune_epochs=2, finetune_lr=1e-4, code_threshold="median")),
}
# Older names that still work.
PRESET_ALIASES = {"seed": "paper"}


@register("dbn-ae")
class SemanticHasher(Hasher):
    """Deep-belief-network autoencoder hasher.

    Args:
      n_bits: code layer size. preset: a key of :data:`PRESETS` (hidden sizes and schedule).
      hidden: override the preset's hidden layer sizes (tuple). layer_sizes: the whole list, input
        to code, as the paper writes it (3072-4096-2048-1024-512-256); it must start at the data's
        dimension and end at ``n_bits``. rbm_epochs, finetune_epochs, finetune_lr, code_noise,
        batch_size: override the preset's schedule (0 epochs skips a stage). checkpoint_dir /
        resume: see the module docstring. progress: show progress bars. data_parallel: split every
        mini-batch over all devices (:func:`jaxhash.train.data_parallel`), parameters replicated.
    """

    presets = tuple(PRESETS)
    preset_aliases = tuple(PRESET_ALIASES)

    def __init__(self, n_bits: int = 32, seed: int = 0, preset: str = "cpu-small", hidden=None, rbm_epochs=None,
                 finetune_epochs=None, finetune_lr=None, code_noise=None, checkpoint_dir=None, resume: bool = False,
                 progress: bool = True, layer_sizes=None, batch_size=None, data_parallel: bool = False):
        super().__init__(n_bits, seed)
        self.data_parallel = data_parallel
        self.preset, self.hidden, self.layer_sizes = preset, hidden, layer_sizes
        self.rbm_epochs, self.finetune_epochs, self.finetune_lr, self.code_noise = rbm_epochs, finetune_epochs, finetune_lr, code_noise
        self.checkpoint_dir, self.resume, self.progress, self.batch_size = checkpoint_dir, resume, progress, batch_size

    # -- configuration --------------------------------------------------------------------------
    def _preset(self):
        name = PRESET_ALIASES.get(self.preset, self.preset)
        if name not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        return PRESETS[name]

    def schedule(self) -> dbn.DBNSchedule:
        names = ("rbm_epochs", "finetune_epochs", "finetune_lr", "code_noise", "batch_size")
        return self._preset()[1]._replace(**{k: getattr(self, k) for k in names if getattr(self, k) is not None})

    def _sizes_for(self, n_features: int) -> tuple[int, ...]:
        if self.layer_sizes is not None:
            sizes = dbn.encoder_sizes_check(self.layer_sizes, n_features)
            if sizes[-1] != int(self.n_bits):
                raise ValueError(f"layer sizes end at {sizes[-1]} but n_bits is {self.n_bits}: the last size is the code length")
            return sizes
        hidden = tuple(self.hidden) if self.hidden is not None else self._preset()[0]
        return dbn.encoder_sizes_check((n_features,) + tuple(hidden) + (int(self.n_bits),), n_features)

    # -- training -------------------------------------------------------------------------------
    def _fit(self, x, y, rng):
        preset = self.schedule()
        sched = dbn.fit_schedule_to_data(preset, len(x), self.rbm_epochs is not None, self.finetune_epochs is not None)
        if sched != preset:
            warnings.warn(f"dbn-ae: {len(x)} training images, so {sched.rbm_epochs} epochs per RBM and {sched.finetune_epochs} "
                          f"of fine-tuning (the preset's minimum of {sched.min_images:,} images seen per stage; rbm_epochs= and "
                          "finetune_epochs= choose others)", stacklevel=3)
        if sched.code_threshold not in ("round", "median"):
            raise ValueError(f"code_threshold must be 'round' or 'median', got {sched.code_threshold!r}")
        sizes = self._sizes_for(x.shape[1])
        if len(x) < sched.batch_size:
            raise ValueError(f"dbn-ae: {len(x)} training images are fewer than one mini-batch of {sched.batch_size} "
                             f"(preset {self.preset!r}): pass batch_size=..., a smaller preset, or more images")
        for name in [k for k in vars(self) if k.startswith("encoder_")]:  # a refit may have fewer layers
            del self.__dict__[name]
        self._device_encoder = None
        self.layer_sizes_ = sizes
        self.pixel_mean_ = x.mean(axis=0).astype(np.float32)
        self.global_std_ = np.float32(max(float((x - self.pixel_mean_).std()), 1e-8))
        data = jnp.asarray(rbm.check_rbm_data(self._standardise(x), "gaussian"))
        self.history_, self.stage_seconds_ = [], {}
        # Checkpoints are resumed only into a run on the same data (size and standardisation) and seed.
        data_id = hashlib.sha256(self.pixel_mean_.tobytes() + self.global_std_.tobytes() + str(len(x)).encode()).hexdigest()[:16]
        variables = dbn.train_dbn(jax.random.key(int(self.seed)), data, sizes, sched, checkpoint_dir=self.checkpoint_dir,
                                  resume=self.resume, progress=self.progress, history=self.history_,
                                  stage_seconds=self.stage_seconds_, run={"seed": int(self.seed), "data": data_id},
                                  parallel=train.data_parallel() if self.data_parallel else None)
        for i in range(len(sizes) - 1):
            self.__dict__[f"encoder_{i}_kernel_"] = np.asarray(variables["params"][f"encoder_{i}"]["kernel"])
            self.__dict__[f"encoder_{i}_bias_"] = np.asarray(variables["params"][f"encoder_{i}"]["bias"])
        self.variables_ = variables
        self.thresholds_ = np.full(int(self.n_bits), 0.5, np.float32)
        if sched.code_threshold == "median":
            self.thresholds_ = np.median(self._code_probabilities(x), axis=0).astype(np.float32)

    def _standardise(self, x):
        return (np.asarray(x, np.float32) - self.pixel_mean_) / self.global_std_

    # -- encoding -------------------------------------------------------------------------------
    _device_encoder = None  # the encoder's arrays on the device, sent once per fit or load

    def _encoder_params(self):
        if self._device_encoder is None:
            n = len(self.layer_sizes_) - 1
            self._device_encoder = [(jnp.asarray(getattr(self, f"encoder_{i}_kernel_")), jnp.asarray(getattr(self, f"encoder_{i}_bias_")))
                                    for i in range(n)]
        return self._device_encoder

    def code_probabilities(self, x) -> np.ndarray:
        """Sigmoid code-layer activations ``(n, n_bits)`` float32 of images or raw (unstandardised) features."""
        parts = [self._code_probabilities(batch) for batch in self._batches(x, 4096)]
        return np.concatenate(parts) if parts else np.zeros((0, int(self.n_bits)), np.float32)

    def _code_probabilities(self, x) -> np.ndarray:
        h = jnp.asarray(self._standardise(x))
        for kernel, bias in self._encoder_params():
            h = jax.nn.sigmoid(h @ kernel + bias)
        return np.asarray(h)

    def _project(self, x):
        # The base class's encode packs ``_project(x) > 0``, i.e. probabilities above the thresholds.
        return self._code_probabilities(x) - self.thresholds_

    def reconstruct(self, x) -> np.ndarray:
        """Autoencoder reconstructions ``(n, n_features)`` of images or raw features (needs the fitted
        model, not a loaded one: the decoder is not saved)."""
        if not hasattr(self, "variables_"):
            raise ValueError("reconstruction needs the decoder, which is not saved: use the hasher returned by fit")
        model = dbn.DeepAutoencoder(tuple(self.layer_sizes_))
        parts = [np.asarray(model.apply(self.variables_, jnp.asarray(self._standardise(batch)))) for batch in self._batches(x, 4096)]
        out = np.concatenate(parts) if parts else np.zeros((0, self.n_features_in_), np.float32)
        return out * self.global_std_ + self.pixel_mean_

    def _learned(self) -> dict:
        learned = super()._learned()
        for transient in ("variables_", "history_", "stage_seconds_"):
            learned.pop(transient, None)
        learned["layer_sizes_"] = tuple(int(s) for s in self.layer_sizes_)
        learned["global_std_"] = float(self.global_std_)
        return learned
