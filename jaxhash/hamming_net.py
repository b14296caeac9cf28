"""The Hamming network with Maxnet, and its two-stage variant (Chervyakov & Balan, 2008).

Classic network. Inputs are m-dimensional bipolar vectors s in {-1, +1}^m (binary images with
1 -> +1, 0 -> -1). The lower (Hamming) layer holds the n stored prototypes v_k without training:
weights ``v_k / 2`` and bias ``m / 2``, so its input signal is

    U_k = m/2 + sum_i v_ki s_i / 2 = m - HammingDistance(s, v_k)          (seed, formulas 1-5)

i.e. the number of matching components. The activation (formula 6) is piecewise linear:
0 for U <= 0, k1 * U for 0 < U <= Un, Un above; with ``k1 = 1/m`` and ``Un = 1/k1`` (condition 7)
the output is the fraction of matching pixels, reported as a percentage. The upper layer, Maxnet,
iterates lateral inhibition a_j <- max(0, a_j - eps * sum_{i != j} a_i) with eps < 1/n until a
single neuron stays positive. When the largest similarity is shared, the tied neurons stay equal
and die together: Maxnet reports the tie -- the classic network's known weakness.

Two-stage network (Chervyakov & Balan's proposal). Prototypes whose similarity passes a recognition
threshold (80-85% in the paper) are kept; none -> "not recognised" (the paper's unrelated pattern
scored 61.7% against its nearest letter). Several -> input and prototypes are cut into a1 x b1
parts, each part is scored by its own Hamming sub-network, and Maxnet picks the prototype with
the largest sum of part scores. A linear part score would sum back to the whole-image score and
could never break a tie, so each part's output passes the same threshold (a part that matches
less than ``part_threshold`` contributes 0): a prototype that differs from the input in one
concentrated place (a missing breve) loses a whole part, while scattered noise does not.

All functions are pure and written for one example; ``jax.vmap`` them for batches (the
``*_batch`` helpers do). Results: winner >= 0, :data:`NOT_RECOGNISED` (-1) or :data:`TIE` (-2).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .checks import check_codes
from .codes import pack_bits, pairwise_hamming, unpack_bits

__all__ = [
    "NOT_RECOGNISED",
    "TIE",
    "HammingNet",
    "make_hamming_net",
    "to_bipolar",
    "hamming_layer",
    "activation",
    "similarity",
    "MaxnetResult",
    "maxnet",
    "Recognition",
    "classify",
    "two_stage_classify",
    "classify_batch",
    "two_stage_classify_batch",
    "majority_prototypes",
    "classify_codes",
]

NOT_RECOGNISED = -1
TIE = -2


class HammingNet(NamedTuple):
    """Lower layer of a Hamming network built from prototypes (no training).

    weights: ``(n, m)`` float32, ``v_k / 2`` for bipolar prototypes v_k.
    bias: float32 scalar, ``m / 2``.
    prototypes: ``(n, m)`` uint8 binary prototypes (kept for the part sub-networks).
    """

    weights: jax.Array
    bias: jax.Array
    prototypes: jax.Array


def _check_binary(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name} must be binary (0/1 or bool), got dtype {arr.dtype}")
    if arr.size and not np.isin(arr, (0, 1)).all():
        bad = arr[~np.isin(arr, (0, 1))].ravel()[:3].tolist()
        raise ValueError(f"{name} must be binary images with values 0 and 1 only, found {bad}: threshold them first")
    return arr.astype(np.uint8)


def make_hamming_net(prototypes) -> HammingNet:
    """Build the lower layer from ``(n, m)`` binary prototypes (or ``(n, a, b)`` images, flattened)."""
    if isinstance(prototypes, (list, tuple)) and len({np.shape(p) for p in prototypes}) > 1:
        raise ValueError(f"prototypes have different sizes: {sorted({np.shape(p) for p in prototypes})}")
    protos = _check_binary(prototypes, "prototypes")
    if protos.ndim < 2 or protos.shape[0] == 0:
        raise ValueError(f"need a non-empty set of prototypes shaped (n, m) or (n, a, b), got shape {protos.shape}")
    protos = protos.reshape(protos.shape[0], -1)
    m = protos.shape[1]
    bipolar = to_bipolar(protos)
    return HammingNet(bipolar / 2.0, jnp.float32(m / 2.0), jnp.asarray(protos))


def to_bipolar(bits):
    """{0, 1} -> {-1, +1} as float32."""
    return jnp.asarray(bits, jnp.float32) * 2.0 - 1.0


def hamming_layer(net: HammingNet, x_bipolar):
    """Input signals ``U (n,)`` of the Z-neurons for one bipolar input ``(m,)``: m - Hamming distance."""
    return net.bias + net.weights @ x_bipolar


def activation(u, k1, u_n):
    """Formula (6): 0 for U <= 0, k1 * U for 0 < U <= Un, Un for U > Un."""
    return jnp.where(u <= 0, 0.0, jnp.where(u <= u_n, k1 * u, u_n))


def similarity(net: HammingNet, x_bipolar):
    """Similarity of one input to every prototype as a fraction in [0, 1] (k1 = 1/m, Un = 1/k1)."""
    m = net.weights.shape[1]
    return activation(hamming_layer(net, x_bipolar), 1.0 / m, float(m))


class MaxnetResult(NamedTuple):
    winner: jax.Array  # int32: index of the single survivor, or TIE
    steps: jax.Array  # int32: iterations run
    activations: jax.Array  # (n,) float32 at the end


@functools.partial(jax.jit, static_argnames=("max_steps",))
def maxnet(a, eps=None, max_steps: int = 10_000) -> MaxnetResult:
    """Iterate lateral inhibition until one neuron stays positive (or none, or ``max_steps``).

    Args:
      a: ``(n,)`` non-negative initial activations.
      eps: inhibition weight, must be < 1/n (default 1 / (2n)).
    Returns:
      :class:`MaxnetResult`; ``winner`` is :data:`TIE` when no single neuron survives (tied maxima
      die together) or all inputs are zero.
    """
    a = jnp.maximum(jnp.asarray(a, jnp.float32), 0.0)
    n = a.shape[0]
    eps = jnp.float32(0.5 / n) if eps is None else jnp.float32(eps)

    def alive(act):
        return jnp.sum(act > 0)

    def cond(state):
        act, step = state
        return (alive(act) > 1) & (step < max_steps)

    def body(state):
        act, step = state
        return jnp.maximum(act - eps * (jnp.sum(act) - act), 0.0), step + 1

    act, steps = jax.lax.while_loop(cond, body, (a, jnp.int32(0)))
    winner = jnp.where(alive(act) == 1, jnp.argmax(act).astype(jnp.int32), jnp.int32(TIE))
    return MaxnetResult(winner, steps, act)


class Recognition(NamedTuple):
    """Outcome for one input.

    winner: int32 prototype index, NOT_RECOGNISED (-1) or TIE (-2).
    similarity: ``(n,)`` float32 whole-image similarity to each prototype, in [0, 1].
    candidates: ``(n,)`` bool, prototypes above the recognition threshold (classic: the maxima).
    part_scores: ``(n,)`` float32 summed part scores (zeros where stage 2 did not run).
    stage: int32, 1 or 2 -- where the decision was made.
    """

    winner: jax.Array
    similarity: jax.Array
    candidates: jax.Array
    part_scores: jax.Array
    stage: jax.Array


def classify(net: HammingNet, x_bits) -> Recognition:
    """Classic Hamming network on one binary input ``(m,)``: Hamming layer, then Maxnet."""
    sim = similarity(net, to_bipolar(x_bits))
    result = maxnet(sim)
    zeros = jnp.zeros_like(sim)
    return Recognition(result.winner, sim, sim == jnp.max(sim), zeros, jnp.int32(1))


def _part_matches(net: HammingNet, x_bits, image_shape, part_shape):
    """Matching pixels per (prototype, part) and the part size: ``(n, n_parts)``, ``a1 * b1``."""
    (a, b), (a1, b1) = image_shape, part_shape
    n = net.prototypes.shape[0]

    def parts(img):  # (..., a*b) -> (..., n_parts, a1*b1)
        lead = img.shape[:-1]
        img = img.reshape(lead + (a // a1, a1, b // b1, b1))
        img = jnp.moveaxis(img, -3, -2)
        return img.reshape(lead + ((a // a1) * (b // b1), a1 * b1))

    # Each part has its own Hamming sub-network: U = m_p/2 + sum v s / 2 = matches in the part.
    proto_parts = to_bipolar(parts(net.prototypes.reshape(n, a * b)))  # (n, P, m_p)
    x_parts = to_bipolar(parts(jnp.asarray(x_bits).reshape(a * b)))  # (P, m_p)
    m_p = a1 * b1
    u = m_p / 2.0 + jnp.einsum("npm,pm->np", proto_parts / 2.0, x_parts)
    return u, m_p


def check_part_shape(image_shape, part_shape, m: int) -> None:
    """Raise a clear error when a part size does not tile the image or the image size is wrong."""
    (a, b), (a1, b1) = image_shape, part_shape
    if a * b != m:
        raise ValueError(f"image_shape {image_shape} has {a * b} pixels but the prototypes have {m}")
    if a1 <= 0 or b1 <= 0 or a % a1 or b % b1:
        raise ValueError(f"part size {part_shape} must divide the image size {image_shape} (a1 | a and b1 | b)")


def two_stage_classify(net: HammingNet, x_bits, image_shape, part_shape, threshold: float = 0.8,
                       part_threshold: float | None = None, tie_only: bool = False) -> Recognition:
    """Two-stage Hamming network on one binary input ``(a*b,)``.

    Stage 1 keeps the prototypes with similarity >= ``threshold``; none -> NOT_RECOGNISED, one ->
    that prototype. Several -> stage 2 scores each kept prototype by the sum over a1 x b1 parts of
    the part similarity (0 where it is below ``part_threshold``, default ``threshold``), equal sums
    ordered by the whole-image similarity, and lets Maxnet choose; a tie on both gives TIE.

    ``tie_only=True`` sends to stage 2 only the prototypes tied at the top similarity (a variant:
    under independent pixel flips the nearest prototype is the maximum-likelihood answer, so the
    parts are best used to break exact ties; the paper sends every prototype above the threshold).
    """
    check_part_shape(image_shape, part_shape, net.weights.shape[1])
    part_threshold = threshold if part_threshold is None else part_threshold
    sim = similarity(net, to_bipolar(x_bits))
    candidates = sim >= threshold
    if tie_only:
        candidates = candidates & (sim == jnp.max(sim))
    n_candidates = jnp.sum(candidates)

    u, m_p = _part_matches(net, x_bits, image_shape, part_shape)
    part_sim = activation(u, 1.0 / m_p, float(m_p))
    part_scores = jnp.sum(jnp.where(part_sim >= part_threshold, part_sim, 0.0), axis=1)
    # Part scores move in steps of 1/m_p; the whole-image similarity, scaled below half a step,
    # only orders candidates whose part scores are equal (an extension of the paper: without it a
    # tie of part sums would discard the stage-1 evidence). Exact ties on both remain ties.
    part_scores = jnp.where(candidates, part_scores + sim / (2.0 * m_p), 0.0)
    stage2 = maxnet(part_scores).winner

    winner = jnp.where(
        n_candidates == 0, jnp.int32(NOT_RECOGNISED), jnp.where(n_candidates == 1, jnp.argmax(candidates).astype(jnp.int32), stage2)
    )
    stage = jnp.where(n_candidates > 1, jnp.int32(2), jnp.int32(1))
    return Recognition(winner, sim, candidates, jnp.where(n_candidates > 1, part_scores, 0.0), stage)


def _check_inputs(net: HammingNet, x_bits) -> np.ndarray:
    x = _check_binary(x_bits, "inputs")
    m = net.weights.shape[1]
    x = x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(1, -1)
    if x.shape[1] != m:
        raise ValueError(f"inputs have {x.shape[1]} pixels but the prototypes have {m}: use images of the prototypes' size")
    return x


@jax.jit
def _classify_batch(net, x):
    return jax.vmap(classify, in_axes=(None, 0))(net, x)


@functools.partial(jax.jit, static_argnames=("image_shape", "part_shape", "threshold", "part_threshold", "tie_only"))
def _two_stage_batch(net, x, image_shape, part_shape, threshold, part_threshold, tie_only):
    fn = functools.partial(two_stage_classify, image_shape=image_shape, part_shape=part_shape,
                           threshold=threshold, part_threshold=part_threshold, tie_only=tie_only)
    return jax.vmap(fn, in_axes=(None, 0))(net, x)


def classify_batch(net: HammingNet, x_bits) -> Recognition:
    """:func:`classify` over ``(batch, m)`` or ``(batch, a, b)`` binary inputs (validated)."""
    return _classify_batch(net, jnp.asarray(_check_inputs(net, x_bits)))


def two_stage_classify_batch(net: HammingNet, x_bits, image_shape, part_shape, threshold: float = 0.8,
                             part_threshold: float | None = None, tie_only: bool = False) -> Recognition:
    """:func:`two_stage_classify` over a batch of binary inputs (validated)."""
    image_shape, part_shape = tuple(int(v) for v in image_shape), tuple(int(v) for v in part_shape)
    check_part_shape(image_shape, part_shape, net.weights.shape[1])
    return _two_stage_batch(net, jnp.asarray(_check_inputs(net, x_bits)), image_shape, part_shape,
                            float(threshold), None if part_threshold is None else float(part_threshold), bool(tie_only))


# -- joined to the library: a Hamming network over packed codes ------------------------------------

def majority_prototypes(codes, labels, n_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Class prototypes as the bitwise majority code of each class.

    Args:
      codes: ``(n, n_words)`` uint32 packed codes; labels: ``(n,)`` ints.
    Returns:
      ``(classes (c,), prototypes (c, n_words) uint32)``; a bit with a 50/50 split is set to 0.
    """
    codes = check_codes(codes, n_bits=n_bits)
    labels = np.asarray(labels)
    if labels.shape != (codes.shape[0],):
        raise ValueError(f"labels must be ({codes.shape[0]},), got {labels.shape}")
    bits = np.asarray(unpack_bits(codes, n_bits))
    classes = np.unique(labels)
    if classes.size == 0:
        raise ValueError("no codes given: cannot build an empty prototype set")
    majority = np.stack([bits[labels == c].mean(axis=0) > 0.5 for c in classes])
    return classes, np.asarray(pack_bits(majority))


@functools.partial(jax.jit, static_argnames=("n_bits",))
def _codes_maxnet(prototypes, codes, n_bits):
    matches = (n_bits - pairwise_hamming(codes, prototypes)).astype(jnp.float32)  # U = m - d
    return jax.vmap(maxnet)(matches)


def classify_codes(prototypes, codes, n_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Hamming network over packed codes: ``(c, n_words)`` prototypes, ``(q, n_words)`` codes.

    The Hamming layer is ``n_bits - popcount(code xor prototype)`` on the packed words; Maxnet
    picks the class. Returns ``(prototype index (q,) int, tie (q,) bool)``; for a tie the index is
    the lowest of the tied prototypes (so a prediction always exists) and ``tie`` is True.
    """
    prototypes = check_codes(prototypes, n_bits=n_bits, name="prototypes")
    codes = check_codes(codes, n_bits=n_bits)
    result = _codes_maxnet(jnp.asarray(prototypes), jnp.asarray(codes), int(n_bits))
    winner = np.asarray(result.winner)
    tie = winner == TIE
    if tie.any():
        dist = np.asarray(pairwise_hamming(jnp.asarray(codes[tie]), jnp.asarray(prototypes)))
        winner = winner.copy()
        winner[tie] = np.argmin(dist, axis=1)
    return winner, tie
