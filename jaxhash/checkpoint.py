"""Per-epoch training checkpoints with Orbax, restorable into a template of the same structure.

:class:`Checkpoints` is the ``on_epoch`` hook of :func:`jaxhash.train.fit` that saves a stage
after every epoch and restores it exactly. A checkpoint holds a pytree (flattened to named
arrays) and a small JSON record (stage, epoch, the run's architecture and schedule). Restoring
rebuilds the tree from a freshly initialised template, so NamedTuple optimiser states come back
with their types; a checkpoint made for another architecture is refused with a clear error
rather than half-loaded. :func:`flatten_tree` / :func:`fill_template` do the same for weights
files.
"""
from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

__all__ = ["Checkpoints", "TrainingCheckpointer", "CheckpointMismatchError", "flatten_tree", "fill_template",
           "network_attributes", "take_network_attributes"]


class CheckpointMismatchError(ValueError):
    """The checkpoint was written by a run with another architecture or settings."""


def flatten_tree(tree) -> dict[str, np.ndarray]:
    """A pytree as ``{path name: array}`` (names like ``['params']['Conv_0']['kernel']``)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def fill_template(arrays: dict, template, where: str, fix: str):
    """``template``'s structure filled with ``arrays`` (from :func:`flatten_tree`); every leaf must be
    there with the template's shape, else :class:`CheckpointMismatchError` naming ``where`` and ``fix``."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    out = []
    for path, leaf in leaves:
        name = jax.tree_util.keystr(path)
        if name not in arrays or np.shape(arrays[name]) != np.shape(leaf):
            found = np.shape(arrays[name]) if name in arrays else "missing"
            raise CheckpointMismatchError(f"{where} does not fit this model ({name}: {found} there, {np.shape(leaf)} here): "
                                          f"it was written for another architecture; {fix}")
        out.append(jax.numpy.asarray(arrays[name], dtype=leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


def network_attributes(tree) -> dict[str, np.ndarray]:
    """A network's variables as a saved hasher's learned attributes, ``{"net[...]_": array}``."""
    return {f"net{name}_": array for name, array in flatten_tree(tree).items()}


def take_network_attributes(hasher) -> dict[str, np.ndarray]:
    """Remove the ``net[...]_`` attributes a load has set on ``hasher``; returns them by path name
    (what :func:`fill_template` takes)."""
    names = [k for k in vars(hasher) if k.startswith("net[")]
    return {k[3:-1]: hasher.__dict__.pop(k) for k in names}


class TrainingCheckpointer:
    """Save after every epoch into ``directory`` (keeps the last ``keep``); resume from the latest."""

    def __init__(self, directory, keep: int = 2):
        import orbax.checkpoint as ocp  # noqa: PLC0415 - heavy import, only when checkpointing

        self._ocp = ocp
        self.directory = Path(directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, tree, meta: dict) -> None:
        ocp = self._ocp
        self._manager.save(step, args=ocp.args.Composite(arrays=ocp.args.StandardSave(flatten_tree(tree)), meta=ocp.args.JsonSave(meta)))
        self._manager.wait_until_finished()

    def latest_meta(self) -> dict | None:
        step = self._manager.latest_step()
        if step is None:
            return None
        ocp = self._ocp
        meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        return dict(meta, step=step)

    def restore(self, step: int, template):
        """Arrays of checkpoint ``step`` poured into ``template``'s structure (shapes must agree)."""
        ocp = self._ocp
        arrays = self._manager.restore(step, args=ocp.args.Composite(arrays=ocp.args.StandardRestore()))["arrays"]
        return fill_template(arrays, template, f"checkpoint {self.directory}/{step}",
                             "use another --checkpoint-dir or drop --resume")

    def close(self) -> None:
        self._manager.close()


_ABSENT = object()


def _differences(there, here, path: str = "") -> str:
    """What differs between two runs, by the innermost fields (``config.epochs: 200 there, 70 here``)."""
    if not (isinstance(there, dict) and isinstance(here, dict)):
        said = ["absent" if value is _ABSENT else repr(value) for value in (there, here)]
        return f"{path + ': ' if path else ''}{said[0]} there, {said[1]} here"
    keys = [k for k in dict.fromkeys([*there, *here]) if there.get(k, _ABSENT) != here.get(k, _ABSENT)]
    return "; ".join(_differences(there.get(k, _ABSENT), here.get(k, _ABSENT), f"{path}.{k}" if path else str(k))
                     for k in keys)


class Checkpoints:
    """One training stage's checkpoints: an ``on_epoch`` hook that saves, and exact resume.

    ``run`` is a JSON-able description of everything that must match for a checkpoint to be
    resumed (architecture, schedule, seed); it is saved with every checkpoint and compared on
    :meth:`restore`. Checkpoint ``e`` holds the state after epoch ``e`` (0-based).
    """

    def __init__(self, directory, run: dict, keep: int = 2):
        self.directory = Path(directory).resolve()
        self.run = json.loads(json.dumps(run))  # what it will read back as
        self._checkpointer = TrainingCheckpointer(self.directory, keep=keep)

    def restore(self, template, resume: bool):
        """``(state, first epoch to run)``: ``(template, 0)`` when there is no checkpoint yet.

        Refuses existing checkpoints unless ``resume`` (nothing is overwritten by accident), and
        checkpoints written for another ``run``.
        """
        meta = self._checkpointer.latest_meta()
        if meta is None:
            return template, 0
        if not resume:
            raise FileExistsError(f"{self.directory} already holds checkpoints: pass resume=True (--resume) to continue, "
                                  "or choose an empty folder")
        if meta.get("run") != self.run:
            raise CheckpointMismatchError(f"checkpoints in {self.directory} were written for another architecture or data "
                                          f"({_differences(meta.get('run'), self.run)}): use another checkpoint folder, or drop "
                                          "--resume (resume=False) and an empty folder to start again")
        return self._checkpointer.restore(meta["step"], template), int(meta["epoch"]) + 1

    def __call__(self, end) -> None:
        self._checkpointer.save(end.epoch, end.state, {"run": self.run, "stage": end.stage, "epoch": end.epoch})

    def close(self) -> None:
        self._checkpointer.close()
