"""Deep belief network pretraining and the unrolled deep autoencoder of semantic hashing.

Semantic hashing (Salakhutdinov & Hinton, 2009) with the deep autoencoder of Hinton &
Salakhutdinov (Science, 2006):

1. Greedy layer-wise pretraining: a Gaussian-Bernoulli RBM on the standardised data, then
   Bernoulli RBMs, each trained on the previous layer's hidden probabilities.
2. Unrolling: a Flax autoencoder whose encoder layers start from the RBMs' weights and hidden
   biases and whose decoder starts from the transposed weights and the RBMs' visible biases.
   Freshly unrolled, its reconstruction equals the stack's mean-field up-down pass.
3. Fine-tuning by backprop (optax SGD with momentum) of half the summed squared error over a
   mini-batch (the scale at which the published learning rate of 1e-6 makes sense), optionally with
   Gaussian noise added before the sigmoid code layer so that codes become near-binary.

The code layer is sigmoid; ``code > 0.5`` is the binary code.
"""
from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from . import rbm, train
from .checks import check_positive_int
from .checkpoint import CheckpointMismatchError

__all__ = [
    "DBNSchedule",
    "DeepAutoencoder",
    "AutoencoderState",
    "unroll",
    "up_down_mean_field",
    "finetune_step",
    "finetune_epoch",
    "encoder_sizes_check",
    "hidden_features",
    "pretrain",
    "finetune",
    "train_dbn",
]


class DBNSchedule(NamedTuple):
    """Hyper-parameters of pretraining and fine-tuning.

    The defaults are the CIFAR-10 setting of the deep-autoencoder semantic hashing this module
    reproduces: 100 epochs per RBM, mini-batches of 100, learning rates 0.001 (Gaussian visible
    units) and 0.01 (binary), momentum 0.9, weight decay 0.0002, CD-1; fine-tuning 150 epochs at
    1e-6 with momentum 0.9.
    """

    rbm_epochs: int = 100
    batch_size: int = 100
    gaussian_lr: float = 0.001
    binary_lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0002
    cd_k: int = 1
    finetune_epochs: int = 150
    finetune_lr: float = 1e-6
    finetune_momentum: float = 0.9
    code_noise: float = 0.0
    code_threshold: str = "round"  # "round": code > 0.5 (the paper); "median": per-bit training medians
    min_images: int = 0  # on a small training set, each stage runs epochs until it has seen this many images


def fit_schedule_to_data(schedule: DBNSchedule, n: int, rbm_epochs_given: bool = False,
                         finetune_epochs_given: bool = False) -> DBNSchedule:
    """``schedule`` for ``n`` training images: with ``min_images`` > 0, the epochs of each RBM and of
    fine-tuning (those not given) rise until the stage sees ``min_images`` images. A preset tuned on
    60,000 images gives 797 images 56 RBM steps, and every image one code; large data sets keep it."""
    if schedule.min_images <= 0 or n <= 0:
        return schedule
    epochs = -(-schedule.min_images // n)
    raised = {name: epochs for name, given in (("rbm_epochs", rbm_epochs_given), ("finetune_epochs", finetune_epochs_given))
              if not given and getattr(schedule, name) < epochs}
    return schedule._replace(**raised)


def encoder_sizes_check(layer_sizes: Sequence[int], n_features: int) -> tuple[int, ...]:
    sizes = tuple(check_positive_int(s, "every layer size") for s in layer_sizes)
    if len(sizes) < 2:
        raise ValueError(f"layer sizes must list at least the input and the code size, all positive; got {sizes}")
    if sizes[0] != n_features:
        raise ValueError(f"layer sizes start at {sizes[0]} but the data have {n_features} features: "
                         f"the first size must be the data's dimension (e.g. {(n_features,) + sizes[1:]})")
    return sizes


class DeepAutoencoder(nn.Module):
    """Encoder of sigmoid layers down to the code; decoder back up, linear at the (Gaussian) output."""

    layer_sizes: tuple[int, ...]  # (n_features, hidden..., code)

    def setup(self):
        n = len(self.layer_sizes) - 1
        self.encoder = [nn.Dense(self.layer_sizes[i + 1], name=f"encoder_{i}") for i in range(n)]
        self.decoder = [nn.Dense(self.layer_sizes[i], name=f"decoder_{i}") for i in reversed(range(n))]

    def encode(self, x, code_noise=None):
        """``(batch, n_features)`` -> sigmoid code ``(batch, code)``; ``code_noise`` is added before the sigmoid."""
        h = x
        for i, layer in enumerate(self.encoder):
            a = layer(h)
            if i == len(self.encoder) - 1 and code_noise is not None:
                a = a + code_noise
            h = nn.sigmoid(a)
        return h

    def decode(self, code):
        h = code
        for i, layer in enumerate(self.decoder):
            h = layer(h)
            if i < len(self.decoder) - 1:
                h = nn.sigmoid(h)
        return h

    def __call__(self, x, code_noise=None):
        return self.decode(self.encode(x, code_noise))


def unroll(rbms: Sequence[rbm.RBMParams]) -> dict:
    """Autoencoder variables from a pretrained stack (encoder: W, c; decoder: W^T, b)."""
    params = {}
    for i, p in enumerate(rbms):
        # encoder_i maps layer i up to layer i + 1; decoder_i maps layer i + 1 back down to layer i.
        params[f"encoder_{i}"] = {"kernel": p.weights, "bias": p.hidden_bias}
        params[f"decoder_{i}"] = {"kernel": p.weights.T, "bias": p.visible_bias}
    return {"params": params}


def up_down_mean_field(rbms: Sequence[rbm.RBMParams], x, gaussian_first: bool = True):
    """The stack's deterministic up pass (hidden probabilities) then down pass (visible means)."""
    h = x
    for p in rbms:
        h = rbm.hidden_probs(p, h)
    for i, p in reversed(list(enumerate(rbms))):
        h = rbm.visible_mean(p, h, "gaussian" if (i == 0 and gaussian_first) else "bernoulli")
    return h


class AutoencoderState(NamedTuple):
    """The fine-tuning train state: autoencoder parameters and optimiser state."""

    params: dict
    opt_state: optax.OptState


def finetune_step(state: AutoencoderState, batch, key, model: DeepAutoencoder, optimizer, code_noise: float):
    """One backprop update on ``(batch, n_features)``; returns ``(state, mean squared error)``.

    The loss is half the summed squared error over the mini-batch; ``code_noise`` > 0 adds
    Gaussian noise of that standard deviation before the sigmoid code layer.
    """
    code_size = model.layer_sizes[-1]

    def loss_fn(params, noise):
        recon = model.apply({"params": params}, batch, noise)
        return 0.5 * jnp.sum(jnp.square(recon - batch)), recon

    noise = code_noise * jax.random.normal(key, (batch.shape[0], code_size), jnp.float32) if code_noise else None
    (_, recon), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, noise)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return AutoencoderState(optax.apply_updates(state.params, updates), opt_state), jnp.mean(jnp.square(recon - batch))


@functools.partial(jax.jit, static_argnames=("model", "optimizer", "batch_size", "code_noise", "parallel"))
def finetune_epoch(key, variables, opt_state, data, model: DeepAutoencoder, optimizer, batch_size: int, code_noise: float,
                   parallel: train.DataParallel | None = None):
    """One shuffled epoch of :func:`finetune_step` as a ``lax.scan`` (``parallel``: each batch split over a mesh).
    Returns (variables, opt_state, mean squared error)."""
    step = functools.partial(finetune_step, model=model, optimizer=optimizer, code_noise=code_noise)
    state, error = train.epoch_scan(step, AutoencoderState(variables["params"], opt_state), data, key, batch_size, parallel)
    return {"params": state.params}, state.opt_state, error


def hidden_features(p: rbm.RBMParams, x, batch: int = 8192) -> jnp.ndarray:
    """Hidden probabilities of a whole data set, computed in batches (bounded memory)."""
    return jnp.concatenate([rbm.hidden_probs(p, x[i : i + batch]) for i in range(0, x.shape[0], batch)])


# -- training: greedy pretraining, then fine-tuning, each stage on the shared training loop -------------

def _rbm_optimizer(schedule: DBNSchedule, visible: str):
    lr = schedule.gaussian_lr if visible == "gaussian" else schedule.binary_lr
    return rbm.rbm_optimizer(lr, schedule.momentum, schedule.weight_decay)


def _stage_options(checkpoint_dir, stage: str, run: dict | None, resume: bool, progress: bool, history, **identity) -> dict:
    """Options of :func:`jaxhash.train.run_stage` for one stage. A stage's checkpoints are resumable
    when its architecture, batch size and everything it was started with (``run``: e.g. seed and
    data) agree; learning rates and epoch counts may change between runs (e.g. a lower learning
    rate after a divergence, or more epochs), then the resumed run is no longer bit-identical."""
    return {"checkpoint_dir": None if checkpoint_dir is None else Path(checkpoint_dir) / stage,
            "run": {"stage": stage, **identity, **(run or {})}, "resume": resume, "progress": progress, "history": history}


def pretrain(key, data, sizes: Sequence[int], schedule: DBNSchedule, *, checkpoint_dir=None, resume: bool = False,
             progress: bool = True, history: list | None = None, stage_seconds: dict | None = None,
             run: dict | None = None, parallel: train.DataParallel | None = None) -> list[rbm.RBMParams]:
    """Greedy layer-wise RBM training on standardised ``data`` ``(n, sizes[0])``: one training stage per layer.

    Layer ``i`` (stage ``rbm{i+1}``) is a Gaussian-Bernoulli RBM for ``i = 0`` and a Bernoulli RBM
    on the previous layer's hidden probabilities otherwise. With ``checkpoint_dir``, each stage
    keeps its checkpoints in ``checkpoint_dir/rbm{i+1}``; ``resume`` continues where a run stopped.
    ``parallel`` (:func:`jaxhash.train.data_parallel`) splits every mini-batch over a device mesh.
    Returns the stack of RBM parameters, input side first.
    """
    n_layers = len(sizes) - 1
    stack, layer_input = [], data
    for layer in range(n_layers):
        visible = "gaussian" if layer == 0 else "bernoulli"
        opt = _rbm_optimizer(schedule, visible)
        layer_key = jax.random.fold_in(key, layer + 1)
        init_key = jax.random.fold_in(layer_key, 10**6)
        state = rbm.init_train_state(init_key, rbm.init_rbm(init_key, sizes[layer], sizes[layer + 1]), opt)

        def epoch_fn(state, epoch_key, inputs=layer_input, opt=opt, visible=visible):
            state, error = rbm.train_epoch(epoch_key, state, inputs, opt, batch_size=schedule.batch_size,
                                           k=schedule.cd_k, visible=visible, parallel=parallel)
            return state, {"reconstruction_error": error}

        stage = f"rbm{layer + 1}"
        t0 = time.perf_counter()
        state = train.run_stage(state, epoch_fn, key=layer_key, epochs=schedule.rbm_epochs, stage=stage,
                                desc=f"RBM {layer + 1}/{n_layers} {sizes[layer]}-{sizes[layer + 1]} ({visible})",
                                divergence_hint=f"lower the {'gaussian' if layer == 0 else 'binary'}_lr of the RBMs and resume",
                                parallel=parallel,
                                **_stage_options(checkpoint_dir, stage, run, resume, progress, history,
                                                 sizes=[int(v) for v in sizes[: layer + 2]], visible=visible,
                                                 batch_size=schedule.batch_size, cd_k=schedule.cd_k))
        if stage_seconds is not None:
            stage_seconds[stage] = round(time.perf_counter() - t0, 2)
        stack.append(state.params)
        layer_input = hidden_features(state.params, layer_input)
    return stack


def finetune(key, data, sizes: Sequence[int], schedule: DBNSchedule, stack: Sequence[rbm.RBMParams], *, checkpoint_dir=None,
             resume: bool = False, progress: bool = True, history: list | None = None, stage_seconds: dict | None = None,
             run: dict | None = None, parallel: train.DataParallel | None = None) -> dict:
    """Unroll ``stack`` into a :class:`DeepAutoencoder` and fine-tune it by backprop (stage ``finetune``;
    ``parallel``: every mini-batch split over a device mesh).

    Returns the autoencoder's variables ``{"params": ...}``.
    """
    model = DeepAutoencoder(tuple(sizes))
    opt = optax.sgd(schedule.finetune_lr, momentum=schedule.finetune_momentum)
    variables = unroll(stack)
    state = AutoencoderState(variables["params"], opt.init(variables["params"]))

    def epoch_fn(state, epoch_key):
        variables, opt_state, error = finetune_epoch(epoch_key, {"params": state.params}, state.opt_state, data, model, opt,
                                                     schedule.batch_size, float(schedule.code_noise), parallel)
        return AutoencoderState(variables["params"], opt_state), {"reconstruction_error": error}

    t0 = time.perf_counter()
    state = train.run_stage(state, epoch_fn, key=jax.random.fold_in(key, 1000), epochs=schedule.finetune_epochs,
                            stage="finetune", desc=f"fine-tuning {'-'.join(map(str, sizes))}",
                            divergence_hint="lower finetune_lr and resume", parallel=parallel,
                            **_stage_options(checkpoint_dir, "finetune", run, resume, progress, history,
                                             sizes=[int(v) for v in sizes], batch_size=schedule.batch_size,
                                             code_noise=float(schedule.code_noise)))
    if stage_seconds is not None:
        stage_seconds["finetune"] = round(time.perf_counter() - t0, 2)
    return {"params": state.params}


def train_dbn(key, data, sizes: Sequence[int], schedule: DBNSchedule, **options) -> dict:
    """Pretrain the RBM stack, then fine-tune the unrolled autoencoder; returns its variables.

    ``data``: ``(n, sizes[0])`` float32 standardised features on the device. ``options`` are those
    of :func:`pretrain` (checkpoint_dir, resume, progress, history, stage_seconds, run, parallel).
    """
    folder = options.get("checkpoint_dir")
    if folder is not None and Path(folder).is_dir() and any(p.name.isdigit() for p in Path(folder).iterdir()):
        raise CheckpointMismatchError(f"{folder} holds checkpoints of jaxhash 0.1 (one folder for all stages), which this "
                                      "version cannot resume: use a new checkpoint folder")
    stack = pretrain(key, data, sizes, schedule, **options)
    return finetune(key, data, sizes, schedule, stack, **options)
