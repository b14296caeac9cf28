"""The one training loop every neural model in jaxhash runs on.

A model supplies a train step, ``step(state, batch, key) -> (state, metrics)``, pure and
jit-able over a state pytree (a NamedTuple of parameters and optimiser state). This module turns
steps into epochs and epochs into a training run:

* :func:`epoch_scan` -- one shuffled epoch as a single ``lax.scan`` on the device (data already
  on the device; fastest for small models, e.g. RBMs and the DBN autoencoder);
  :func:`resident_epochs` compiles it once over data kept on the device.
* :func:`epoch_from_host` -- the same epoch fed from NumPy in device-sized batches (large image
  sets: no whole-data copy per epoch). Both draw the same batches and keys from the same key, so
  they give the same result.
* :func:`fit` -- epochs ``start_epoch .. epochs - 1``, epoch ``e`` with key ``fold_in(key, e)``
  (so a resumed run equals an uninterrupted one), a guard that stops on NaN/inf metrics before
  anything of that epoch is saved, and ``on_epoch`` hooks: :class:`ProgressBar`,
  :class:`History` and :class:`jaxhash.checkpoint.Checkpoints`.
* :func:`run_stage` -- :func:`fit` with those three hooks set up, resume included.
* :class:`DataParallel` -- data-parallel training on JAX's own runtime: each batch is split over
  one axis of a ``jax.sharding.Mesh`` (all local devices by default; several hosts after
  ``jax.distributed.initialize``) with the state replicated. XLA inserts the gradient reduction,
  so a run equals the one-device run up to float rounding (random numbers do not depend on the
  sharding, and BatchNorm sees the statistics of the whole batch)::

    epoch = resident_epochs(step, data, 128)
    state = run_stage(init_state, epoch, key=key, epochs=10, stage="training",
                      checkpoint_dir="ck", run={"model": "mlp-256", "lr": 0.1}, resume=True, history=log)
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .checks import check_positive_int
from .search import check_mesh, default_mesh

__all__ = [
    "StopTraining",
    "DataParallel",
    "data_parallel",
    "EpochEnd",
    "TrainingDiverged",
    "batch_order",
    "epoch_scan",
    "resident_epochs",
    "epoch_from_host",
    "fit",
    "run_stage",
    "ProgressBar",
    "History",
]

Step = Callable[[Any, Any, jax.Array], tuple[Any, Any]]


class EpochEnd(NamedTuple):
    """What ``on_epoch`` hooks receive after each finished epoch."""

    stage: str
    epoch: int  # 0-based index of the epoch just finished
    epochs: int  # epochs in the whole run
    metrics: dict  # name -> Python float, the epoch's mean of each step metric
    state: Any
    seconds: float


class TrainingDiverged(FloatingPointError):
    """A metric became NaN or infinite; nothing of that epoch was kept or saved."""


class StopTraining(Exception):
    """Raised by an ``on_epoch`` hook to end training after this epoch: the hooks after it still see the
    epoch (its checkpoint is saved), then :func:`fit` raises it again."""


class DataParallel(NamedTuple):
    """Where a data-parallel run puts things: batches split along ``axis`` of ``mesh``, state replicated.

    Hashable, so it can be a static argument of a jitted epoch.
    """

    mesh: jax.sharding.Mesh
    axis: str

    @property
    def devices(self) -> int:
        return int(self.mesh.shape[self.axis])

    def batch_sharding(self, ndim: int = 1, batch_axis: int = 0) -> jax.sharding.NamedSharding:
        spec = [None] * ndim
        spec[batch_axis] = self.axis
        return jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(*spec))

    @property
    def replicated(self) -> jax.sharding.NamedSharding:
        return jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())

    def check_batch_size(self, batch_size: int) -> int:
        batch_size = check_positive_int(batch_size, "batch_size")
        if batch_size % self.devices:
            raise ValueError(f"batch_size={batch_size} cannot be split evenly over the {self.devices} devices of mesh axis "
                             f"{self.axis!r}: use a multiple of {self.devices} (e.g. {self.devices * max(1, round(batch_size / self.devices))})")
        return batch_size

    def replicate(self, tree):
        """Copy ``tree`` (e.g. a train state) to every device of the mesh."""
        return jax.device_put(tree, self.replicated)

    def put_batch(self, batch):
        """Place a host batch (a pytree of NumPy arrays) split along its first axis; each process
        supplies the same whole batch and places only its own devices' parts (several hosts work)."""
        def place(a):
            a = np.asarray(a)
            return jax.make_array_from_callback(a.shape, self.batch_sharding(a.ndim), lambda index: a[index])

        return jax.tree_util.tree_map(place, batch)

    def constrain_batches(self, batches):
        """Inside ``jit``: stacked batches ``(n_batches, batch, ...)`` split along the batch axis."""
        return jax.tree_util.tree_map(
            lambda a: jax.lax.with_sharding_constraint(a, self.batch_sharding(a.ndim, batch_axis=1)), batches)


def data_parallel(mesh: jax.sharding.Mesh | None = None, axis: str = "data") -> DataParallel:
    """A :class:`DataParallel` over ``axis`` of ``mesh`` (default: a one-axis mesh of every device).

    ``jax.devices()`` counts the devices of every process after ``jax.distributed.initialize``;
    other mesh axes hold copies of each batch part.
    """
    mesh = default_mesh(axis) if mesh is None else mesh
    check_mesh(mesh, axis)
    return DataParallel(mesh, axis)


def batch_order(key, n: int, batch_size: int):
    """Shuffled example indices ``(n // batch_size, batch_size)`` and one key per batch.

    The remainder smaller than ``batch_size`` is left out of this epoch (the shuffle differs
    every epoch, so every example is used over a run).
    """
    batch_size = check_positive_int(batch_size, "batch_size")
    n_batches = n // batch_size
    if n_batches == 0:
        raise ValueError(f"batch_size={batch_size} is larger than the {n} training examples: use a smaller batch")
    key_perm, key_steps = jax.random.split(key)
    order = jax.random.permutation(key_perm, n)[: n_batches * batch_size].reshape(n_batches, batch_size)
    return order, jax.random.split(key_steps, n_batches)


def _mean_metrics(metrics):
    return jax.tree_util.tree_map(lambda m: jnp.mean(m, axis=0), metrics)


def epoch_scan(step: Step, state, data, key, batch_size: int, parallel: DataParallel | None = None):
    """One epoch of ``step`` over shuffled mini-batches of ``data`` as one ``lax.scan``.

    Call it inside ``jax.jit`` (with ``step``, ``batch_size`` and ``parallel`` static). ``data`` is
    an array or a pytree of arrays with a common first axis (e.g. ``(images, labels)``). With
    ``parallel``, every batch is split over its devices (the state should be replicated with
    ``parallel.replicate``). Returns ``(state, metrics averaged over the epoch's steps)``.
    """
    n = jax.tree_util.tree_leaves(data)[0].shape[0]
    if parallel is not None:
        parallel.check_batch_size(batch_size)
    order, keys = batch_order(key, n, batch_size)
    batches = jax.tree_util.tree_map(lambda a: a[order.reshape(-1)].reshape(order.shape + a.shape[1:]), data)
    if parallel is not None:
        batches = parallel.constrain_batches(batches)
    state, metrics = jax.lax.scan(lambda s, inputs: step(s, *inputs), state, (batches, keys))
    return state, _mean_metrics(metrics)


def resident_epochs(step: Step, data, batch_size: int, parallel: DataParallel | None = None) -> Callable:
    """``epoch(state, key) -> (state, metrics)``: :func:`epoch_scan` over ``data`` (arrays or a pytree
    of them), copied to the device once and compiled once. The data is an argument of the compiled
    program: closed over, XLA would compile it in as a constant (0.60 s vs 0.08 s for 16 MB)."""
    scan = jax.jit(lambda state, data, key: epoch_scan(step, state, data, key, batch_size, parallel))
    data = jax.tree_util.tree_map(jnp.asarray, data)
    return lambda state, key: scan(state, data, key)


def epoch_from_host(step: Step, state, data, key, batch_size: int, device_put: Callable = jax.device_put,
                    parallel: DataParallel | None = None):
    """The epoch of :func:`epoch_scan`, with ``data`` (NumPy arrays) sent to the device one batch at a time.

    ``step`` should be jitted (``jax.jit(step)``); ``device_put`` may place each batch, and
    ``parallel`` splits it over a mesh instead (the state should be replicated with
    ``parallel.replicate``). Only one batch is gathered on the host at a time; the next is copied
    while a step runs.
    """
    if parallel is not None:
        parallel.check_batch_size(batch_size)
        device_put = parallel.put_batch
    data = jax.tree_util.tree_map(np.asarray, data)  # once: a device array would be copied back per batch
    order, keys = batch_order(key, jax.tree_util.tree_leaves(data)[0].shape[0], batch_size)
    order = np.asarray(order)
    gather = lambda idx: device_put(jax.tree_util.tree_map(lambda a: a[idx], data))  # noqa: E731
    all_metrics = []
    upcoming = gather(order[0])
    for i in range(order.shape[0]):
        batch = upcoming
        state, metrics = step(state, batch, keys[i])
        if i + 1 < order.shape[0]:
            upcoming = gather(order[i + 1])  # overlaps with the step dispatched above
        all_metrics.append(metrics)
    stacked = jax.tree_util.tree_map(lambda *m: jnp.stack(m), *all_metrics)
    return state, _mean_metrics(stacked)


def _as_floats(metrics) -> dict:
    if not isinstance(metrics, dict):
        metrics = {"loss": metrics}
    return {name: float(value) for name, value in metrics.items()}


def _check_epochs(epochs) -> int:
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer (0 skips the stage), got {epochs!r}")
    return int(epochs)


def _all_finite(state) -> bool:
    leaves = [leaf for leaf in jax.tree_util.tree_leaves(state)
              if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.inexact)]
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in leaves)


def fit(state, epoch_fn: Callable, *, key, epochs: int, start_epoch: int = 0, stage: str = "training",
        on_epoch: Iterable[Callable[[EpochEnd], None]] = (), divergence_hint: str = "lower the learning rate"):
    """Run epochs ``start_epoch .. epochs - 1`` of ``epoch_fn(state, key) -> (state, metrics)``.

    Epoch ``e`` gets ``jax.random.fold_in(key, e)``: its randomness depends on the key and the
    epoch number alone, so resuming from a checkpoint of epoch ``e - 1`` reproduces the same run.
    ``metrics`` is a dict of scalars (or one scalar, named ``loss``). After each epoch the metrics
    and the state are checked: a NaN or infinite value raises :class:`TrainingDiverged` before
    any hook sees the epoch, so checkpoints keep the last good epoch. A hook that raises
    :class:`StopTraining` ends the run once every hook has seen the epoch. Hooks with a ``close()``
    method are closed at the end, also on errors.

    Returns the state after the last epoch.
    """
    hooks = [h for h in on_epoch if h is not None]
    try:
        epochs = _check_epochs(epochs)
        for epoch in range(start_epoch, epochs):
            t0 = time.perf_counter()
            new_state, metrics = epoch_fn(state, jax.random.fold_in(key, epoch))
            metrics = _as_floats(metrics)
            bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
            if bad or not _all_finite(new_state):
                shown = ", ".join(f"{k}={v}" for k, v in bad.items()) or "the parameters are no longer finite"
                kept = f"the last good epoch is {epoch}" if epoch else "no epoch finished"
                raise TrainingDiverged(f"{stage} diverged at epoch {epoch + 1} ({shown}); it stopped before keeping that "
                                       f"epoch, {kept}: {divergence_hint}")
            state = new_state
            end = EpochEnd(stage, epoch, epochs, metrics, state, time.perf_counter() - t0)
            stop = None
            for hook in hooks:
                try:
                    hook(end)
                except StopTraining as err:
                    stop = err
            if stop is not None:
                raise stop
    finally:
        for hook in hooks:
            close = getattr(hook, "close", None)
            if close is not None:
                close()
    return state


class ProgressBar:
    """``on_epoch`` hook: a progress bar over epochs showing the latest metrics."""

    def __init__(self, epochs: int, desc: str, start_epoch: int = 0, disable: bool = False, fmt: str = ".4g"):
        from .progress import progress  # noqa: PLC0415

        # epochs done before a resume are where the bar starts, not work it timed: its rate and ETA stay true
        self._bar = progress(total=epochs, initial=start_epoch, desc=desc, unit="epoch", disable=disable, leave=False)
        self._fmt = fmt

    def __call__(self, end: EpochEnd) -> None:
        self._bar.set_postfix({k: format(v, self._fmt) for k, v in end.metrics.items()}, refresh=False)  # update draws it, throttled
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


class History:
    """``on_epoch`` hook: appends ``{"stage", "epoch" (1-based), **metrics}`` to a list."""

    def __init__(self, records: list):
        self.records = records

    def __call__(self, end: EpochEnd) -> None:
        self.records.append({"stage": end.stage, "epoch": end.epoch + 1, **end.metrics})


def run_stage(state, epoch_fn: Callable, *, key, epochs: int, stage: str, desc: str | None = None, checkpoint_dir=None,
              run: dict | None = None, resume: bool = False, progress: bool = True, history: list | None = None,
              on_epoch: Iterable[Callable[[EpochEnd], None]] = (), divergence_hint: str = "lower the learning rate",
              parallel: DataParallel | None = None):
    """:func:`fit` with the usual hooks: a progress bar, a history list, Orbax checkpoints with resume.

    ``state`` is the freshly initialised state; it is also the template that a checkpoint in
    ``checkpoint_dir`` is restored into (``resume=True``; without it, existing checkpoints are
    refused rather than overwritten). ``run`` describes the architecture and schedule: a
    checkpoint written for another ``run`` is refused. Returns the final state.
    """
    epochs = _check_epochs(epochs)
    start = 0
    checkpoints = None
    if checkpoint_dir is not None:
        from .checkpoint import Checkpoints  # noqa: PLC0415 - Orbax only when checkpointing

        checkpoints = Checkpoints(checkpoint_dir, run or {})
        try:
            state, start = checkpoints.restore(state, resume)
        except BaseException:
            checkpoints.close()
            raise
    if parallel is not None:
        state = parallel.replicate(state)
    hooks = [ProgressBar(epochs, desc or stage, start, disable=not progress)]
    if history is not None:
        hooks.append(History(history))
    hooks.extend(on_epoch)
    if checkpoints is not None:
        # Last: a crash between a hook and the checkpoint re-runs that epoch on resume, so what a
        # hook records of each epoch (a web page's training curve) is never missing one.
        hooks.append(checkpoints)
    return fit(state, epoch_fn, key=key, epochs=epochs, start_epoch=start, stage=stage, on_epoch=hooks,
               divergence_hint=divergence_hint)
