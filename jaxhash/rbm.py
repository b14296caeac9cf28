"""Restricted Boltzmann machines: pure, jit-able functions over a parameter NamedTuple.

Two visible-unit types, as in Hinton & Salakhutdinov's deep autoencoders (Science, 2006):
``"bernoulli"`` (binary units, data in [0, 1]) and ``"gaussian"`` (linear units with unit
variance, for standardised real data -- the "linear-binary RBM" of semantic hashing); hidden
units are always Bernoulli.

Energy: E(v, h) = -v.b - h.c - v W h (Bernoulli visible) or |v - b|^2 / 2 - h.c - v W h (Gaussian).

Every function that samples takes a PRNG key first; training moves on through explicit states.
Gradients are returned for the *negative* log-likelihood, so optax optimisers minimise as usual.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import train
from .checks import check_features

__all__ = [
    "RBMParams",
    "init_rbm",
    "hidden_probs",
    "visible_mean",
    "sample_hidden",
    "sample_visible",
    "gibbs_step",
    "gibbs_chain",
    "free_energy",
    "reconstruct",
    "reconstruction_error",
    "pseudo_log_likelihood",
    "cd_gradient",
    "RBMTrainState",
    "rbm_optimizer",
    "init_train_state",
    "cd_step",
    "train_epoch",
    "exact_log_partition",
    "ais_log_partition",
    "average_log_likelihood",
    "check_rbm_data",
]

VISIBLE_TYPES = ("bernoulli", "gaussian")


class RBMParams(NamedTuple):
    """weights ``(n_visible, n_hidden)``, visible_bias ``(n_visible,)``, hidden_bias ``(n_hidden,)``; float32."""

    weights: jax.Array
    visible_bias: jax.Array
    hidden_bias: jax.Array


def _check_visible(visible: str) -> None:
    if visible not in VISIBLE_TYPES:
        raise ValueError(f"visible must be one of {VISIBLE_TYPES}, got {visible!r}")


def init_rbm(key, n_visible: int, n_hidden: int, scale: float = 0.01, visible_bias=None) -> RBMParams:
    """Small random weights N(0, scale^2), zero hidden biases; visible biases zero or given."""
    w = scale * jax.random.normal(key, (n_visible, n_hidden), jnp.float32)
    b = jnp.zeros(n_visible, jnp.float32) if visible_bias is None else jnp.asarray(visible_bias, jnp.float32)
    return RBMParams(w, b, jnp.zeros(n_hidden, jnp.float32))


def hidden_probs(params: RBMParams, v):
    """p(h = 1 | v): ``(..., n_visible)`` -> ``(..., n_hidden)``."""
    return jax.nn.sigmoid(v @ params.weights + params.hidden_bias)


def visible_mean(params: RBMParams, h, visible: str = "bernoulli"):
    """E[v | h]: sigmoid for Bernoulli units, the linear mean for Gaussian units."""
    act = h @ params.weights.T + params.visible_bias
    return jax.nn.sigmoid(act) if visible == "bernoulli" else act


def sample_hidden(key, params: RBMParams, v):
    """``(h sample, p(h=1|v))``, both ``(..., n_hidden)`` float32."""
    p = hidden_probs(params, v)
    return jax.random.bernoulli(key, p).astype(jnp.float32), p


def sample_visible(key, params: RBMParams, h, visible: str = "bernoulli"):
    """``(v sample, E[v|h])``: Bernoulli draws, or mean + N(0, 1) noise for Gaussian units."""
    mean = visible_mean(params, h, visible)
    if visible == "bernoulli":
        return jax.random.bernoulli(key, mean).astype(jnp.float32), mean
    return mean + jax.random.normal(key, mean.shape, jnp.float32), mean


def gibbs_step(key, params: RBMParams, v, visible: str = "bernoulli"):
    """One full step v -> h -> v'. Returns ``(v', h, p(h|v))``."""
    kh, kv = jax.random.split(key)
    h, ph = sample_hidden(kh, params, v)
    v_new, _ = sample_visible(kv, params, h, visible)
    return v_new, h, ph


@functools.partial(jax.jit, static_argnames=("k", "visible", "with_mean"))
def gibbs_chain(key, params: RBMParams, v0, k: int, visible: str = "bernoulli", with_mean: bool = False):
    """k Gibbs steps from ``v0`` with ``lax.scan``. Returns the final visible sample, and with
    ``with_mean`` also E[v | h] of the last step (the reconstruction, for CD-1)."""

    def step(carry, step_key):
        v, _ = carry
        kh, kv = jax.random.split(step_key)
        h, _ = sample_hidden(kh, params, v)
        v_new, mean = sample_visible(kv, params, h, visible)
        return (v_new, mean), None

    (v_k, mean), _ = jax.lax.scan(step, (v0, jnp.zeros_like(v0)), jax.random.split(key, k))
    return (v_k, mean) if with_mean else v_k


def free_energy(params: RBMParams, v, visible: str = "bernoulli"):
    """F(v) = -log sum_h exp(-E(v, h)), ``(..., n_visible)`` -> ``(...)``."""
    hidden_term = jnp.sum(jax.nn.softplus(v @ params.weights + params.hidden_bias), axis=-1)
    if visible == "bernoulli":
        return -(v @ params.visible_bias) - hidden_term
    return 0.5 * jnp.sum(jnp.square(v - params.visible_bias), axis=-1) - hidden_term


def reconstruct(params: RBMParams, v, visible: str = "bernoulli"):
    """Mean-field up-down pass: E[v | p(h|v)]."""
    return visible_mean(params, hidden_probs(params, v), visible)


def reconstruction_error(params: RBMParams, v, visible: str = "bernoulli"):
    """Mean squared error per visible unit of the mean-field reconstruction (float32 scalar)."""
    return jnp.mean(jnp.square(v - reconstruct(params, v, visible)))


def pseudo_log_likelihood(key, params: RBMParams, v):
    """Stochastic pseudo-log-likelihood of binary data, per example (as scikit-learn's ``score_samples``).

    One random unit i per example is flipped: PLL ~= n_visible * log sigmoid(F(v~) - F(v)).
    """
    n_visible = v.shape[-1]
    idx = jax.random.randint(key, v.shape[:-1], 0, n_visible)
    flip = jax.nn.one_hot(idx, n_visible, dtype=v.dtype)
    v_flipped = v + flip - 2.0 * v * flip
    return n_visible * jax.nn.log_sigmoid(free_energy(params, v_flipped) - free_energy(params, v))


def cd_gradient(key, params: RBMParams, v0, k: int = 1, visible: str = "bernoulli", chain=None):
    """CD-k (``chain=None``) or persistent CD (``chain`` = fantasy particles) gradient of the NLL.

    Args:
      v0: ``(batch, n_visible)`` data; chain: ``(n_chains, n_visible)`` persistent particles or None.
    Returns:
      ``(grads: RBMParams, negative sample, E[v|h] of the last Gibbs step)``; pass the negative
      sample back as ``chain`` for PCD. Hidden statistics use probabilities (less variance).
    """
    start = v0 if chain is None else chain
    vk, vk_mean = gibbs_chain(key, params, start, k, visible, with_mean=True)
    ph0, phk = hidden_probs(params, v0), hidden_probs(params, vk)
    n0, nk = v0.shape[0], vk.shape[0]
    # One matmul over the stacked phases instead of two: same flops, better use of the cores.
    stacked_v = jnp.concatenate([v0, vk])
    stacked_h = jnp.concatenate([ph0 / n0, -phk / nk])
    grad_w = -(stacked_v.T @ stacked_h)
    grad_b = -(jnp.mean(v0, axis=0) - jnp.mean(vk, axis=0))
    grad_c = -(jnp.mean(ph0, axis=0) - jnp.mean(phk, axis=0))
    return RBMParams(grad_w, grad_b, grad_c), vk, vk_mean


class RBMTrainState(NamedTuple):
    """params, optax state, and persistent chains (``None`` for plain CD-k)."""

    params: RBMParams
    opt_state: optax.OptState
    chain: jax.Array | None


def rbm_optimizer(learning_rate: float, momentum: float = 0.9, weight_decay: float = 0.0) -> optax.GradientTransformation:
    """SGD with momentum; L2 weight decay on the weights only (not the biases)."""
    decay_mask = RBMParams(True, False, False)
    return optax.chain(optax.add_decayed_weights(weight_decay, mask=decay_mask), optax.sgd(learning_rate, momentum=momentum))


def init_train_state(key, params: RBMParams, optimizer: optax.GradientTransformation, persistent_chains: int = 0,
                     visible: str = "bernoulli") -> RBMTrainState:
    """Optimiser state, and for PCD ``persistent_chains`` fantasy particles started from noise."""
    chain = None
    if persistent_chains:
        shape = (persistent_chains, params.weights.shape[0])
        chain = (jax.random.bernoulli(key, 0.5, shape).astype(jnp.float32) if visible == "bernoulli"
                 else jax.random.normal(key, shape, jnp.float32))
    return RBMTrainState(params, optimizer.init(params), chain)


def cd_step(state: RBMTrainState, batch, key, optimizer, k: int = 1, visible: str = "bernoulli"):
    """One CD-k / PCD update on a mini-batch ``(batch, n_visible)``: the train step of :mod:`jaxhash.train`.

    Returns ``(new state, reconstruction error)``; for CD-1 the error is measured on E[v|h] with h
    *sampled* (free with the negative phase), otherwise on the mean-field up-down pass.
    """
    grads, vk, vk_mean = cd_gradient(key, state.params, batch, k, visible, state.chain)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if state.chain is None and k == 1:
        error = jnp.mean(jnp.square(batch - vk_mean))  # CD-1's negative phase is the reconstruction
    else:
        error = reconstruction_error(state.params, batch, visible)
    chain = None if state.chain is None else vk
    return RBMTrainState(params, opt_state, chain), error


@functools.partial(jax.jit, static_argnames=("optimizer", "batch_size", "k", "visible", "parallel"))
def train_epoch(key, state: RBMTrainState, data, optimizer, batch_size: int = 100, k: int = 1, visible: str = "bernoulli",
                parallel: train.DataParallel | None = None):
    """One epoch: shuffle with ``key``, then one ``lax.scan`` of :func:`cd_step` over mini-batches.

    ``data``: ``(n, n_visible)`` float32; a remainder smaller than ``batch_size`` is dropped this
    epoch (the shuffle differs every epoch). ``parallel`` (:func:`jaxhash.train.data_parallel`)
    splits every mini-batch over a mesh. Returns ``(new state, mean reconstruction error)``.
    """
    step = functools.partial(cd_step, optimizer=optimizer, k=k, visible=visible)
    return train.epoch_scan(step, state, data, key, batch_size, parallel)


def check_rbm_data(x, visible: str = "bernoulli") -> np.ndarray:
    """Validate training data: 2-D, finite, and within [0, 1] for Bernoulli units."""
    _check_visible(visible)
    x = check_features(x, "RBM data")
    if visible == "bernoulli" and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"a Bernoulli RBM needs data in [0, 1], got values in [{x.min():.3g}, {x.max():.3g}]: "
                         "scale the data, or use visible='gaussian' on standardised data")
    return x


# -- partition function -----------------------------------------------------------------------------

def exact_log_partition(params: RBMParams) -> jax.Array:
    """log Z of a Bernoulli RBM by enumerating all visible states (only for n_visible <= ~20)."""
    n_visible = params.weights.shape[0]
    if n_visible > 24:
        raise ValueError(f"exact enumeration over 2^{n_visible} states is infeasible; use ais_log_partition")
    states = ((jnp.arange(2**n_visible)[:, None] >> jnp.arange(n_visible)) & 1).astype(jnp.float32)
    return jax.scipy.special.logsumexp(-free_energy(params, states))


@functools.partial(jax.jit, static_argnames=("n_chains", "n_betas"))
def ais_log_partition(key, params: RBMParams, base_visible_bias=None, n_chains: int = 100, n_betas: int = 10_000):
    """Annealed importance sampling estimate of log Z for a Bernoulli RBM (Salakhutdinov & Murray, 2008).

    The base model has the given visible biases (e.g. the data's log-odds), no weights, and the
    same number of hidden units; intermediate models interpolate linearly in inverse temperature.

    Returns:
      ``(log_z, log_z_std)``: the estimate and the standard deviation of log-weights / sqrt(chains).
    """
    n_visible, n_hidden = params.weights.shape
    b_a = jnp.zeros(n_visible, jnp.float32) if base_visible_bias is None else jnp.asarray(base_visible_bias, jnp.float32)
    betas = jnp.linspace(0.0, 1.0, n_betas, dtype=jnp.float32)
    log_z_a = jnp.sum(jax.nn.softplus(b_a)) + n_hidden * jnp.log(2.0)

    def log_f(v, beta):  # unnormalised log p_beta(v), hidden units summed out
        return ((1 - beta) * (v @ b_a) + beta * (v @ params.visible_bias)
                + jnp.sum(jax.nn.softplus(beta * (v @ params.weights + params.hidden_bias)), axis=-1))

    key_init, key_run = jax.random.split(key)
    v = jax.random.bernoulli(key_init, jax.nn.sigmoid(b_a), (n_chains, n_visible)).astype(jnp.float32)

    def step(carry, inputs):
        v, log_w = carry
        beta_prev, beta, step_key = inputs
        log_w = log_w + log_f(v, beta) - log_f(v, beta_prev)
        kh, kv = jax.random.split(step_key)
        h = jax.random.bernoulli(kh, jax.nn.sigmoid(beta * (v @ params.weights + params.hidden_bias))).astype(jnp.float32)
        p_v = jax.nn.sigmoid((1 - beta) * b_a + beta * (h @ params.weights.T + params.visible_bias))
        v = jax.random.bernoulli(kv, p_v).astype(jnp.float32)
        return (v, log_w), None

    keys = jax.random.split(key_run, n_betas - 1)
    (v, log_w), _ = jax.lax.scan(step, (v, jnp.zeros(n_chains, jnp.float32)), (betas[:-1], betas[1:], keys))
    log_mean_w = jax.scipy.special.logsumexp(log_w) - jnp.log(jnp.float32(n_chains))
    return log_z_a + log_mean_w, jnp.std(log_w) / jnp.sqrt(jnp.float32(n_chains))


def average_log_likelihood(params: RBMParams, v, log_z) -> jax.Array:
    """Mean log p(v) = -F(v) - log Z over binary test vectors ``(n, n_visible)``."""
    return jnp.mean(-free_energy(params, v)) - log_z
