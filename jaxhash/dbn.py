"""Deep belief network pretraining and the unrolled deep autoencoder (seed 000: semantic hashing).

1. Greedy layer-wise pretraining: a Gaussian-Bernoulli RBM on the standardised data, then
   Bernoulli RBMs, each trained on the previous layer's hidden probabilities.
2. Unrolling: a Flax autoencoder whose encoder layers start from the RBMs' weights and hidden
   biases and whose decoder starts from the transposed weights and the RBMs' visible biases.
   Freshly unrolled, its reconstruction equals the stack's mean-field up-down pass.
3. Fine-tuning by backprop (optax SGD with momentum) of half the summed squared error over a
   mini-batch (the scale at which the seed's learning rate of 1e-6 makes sense), optionally with
   Gaussian noise added before the sigmoid code layer so that codes become near-binary.

The code layer is sigmoid; ``code > 0.5`` is the binary code.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from . import rbm

__all__ = ["DeepAutoencoder", "unroll", "up_down_mean_field", "finetune_epoch", "encoder_sizes_check", "DBNSchedule"]


class DBNSchedule(NamedTuple):
    """Hyper-parameters of pretraining and fine-tuning (seed 000's values are the defaults)."""

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
    code_threshold: str = "round"  # "round": code > 0.5 (the seed); "median": per-bit training medians


def encoder_sizes_check(layer_sizes: Sequence[int], n_features: int) -> tuple[int, ...]:
    sizes = tuple(int(s) for s in layer_sizes)
    if len(sizes) < 2 or any(s <= 0 for s in sizes):
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


@functools.partial(jax.jit, static_argnames=("model", "optimizer", "batch_size", "code_noise"))
def finetune_epoch(key, variables, opt_state, data, model: DeepAutoencoder, optimizer, batch_size: int, code_noise: float):
    """One shuffled epoch of backprop as a ``lax.scan``. Returns (variables, opt_state, mean squared error)."""
    n_batches = data.shape[0] // batch_size
    key_perm, key_noise = jax.random.split(key)
    order = jax.random.permutation(key_perm, data.shape[0])[: n_batches * batch_size]
    batches = data[order].reshape(n_batches, batch_size, data.shape[1])
    code_size = model.layer_sizes[-1]

    def loss_fn(params, batch, noise):
        recon = model.apply({"params": params}, batch, noise)
        return 0.5 * jnp.sum(jnp.square(recon - batch)), recon

    def step(carry, inputs):
        params, opt_state = carry
        batch, noise_key = inputs
        noise = code_noise * jax.random.normal(noise_key, (batch.shape[0], code_size), jnp.float32) if code_noise else None
        (_, recon), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, noise)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), jnp.mean(jnp.square(recon - batch))

    keys = jax.random.split(key_noise, n_batches)
    (params, opt_state), errors = jax.lax.scan(step, (variables["params"], opt_state), (batches, keys))
    return {"params": params}, opt_state, jnp.mean(errors)


def hidden_features(p: rbm.RBMParams, x, batch: int = 8192) -> jnp.ndarray:
    """Hidden probabilities of a whole data set, computed in batches (bounded memory)."""
    return jnp.concatenate([rbm.hidden_probs(p, x[i : i + batch]) for i in range(0, x.shape[0], batch)])

