"""Per-epoch training checkpoints with Orbax, restorable into a template of the same structure.

A checkpoint holds a pytree (flattened to named arrays) and a small JSON record (stage, epoch,
architecture). Restoring rebuilds the tree from a freshly initialised template, so NamedTuple
optimiser states come back with their types; a checkpoint made for another architecture is
refused with a clear error rather than half-loaded.
"""
from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

__all__ = ["TrainingCheckpointer", "CheckpointMismatchError"]


class CheckpointMismatchError(ValueError):
    """The checkpoint was written by a run with another architecture or settings."""


def _flatten(tree) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


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
        self._manager.save(step, args=ocp.args.Composite(arrays=ocp.args.StandardSave(_flatten(tree)), meta=ocp.args.JsonSave(meta)))
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
        leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
        out = []
        for path, leaf in leaves:
            name = jax.tree_util.keystr(path)
            if name not in arrays or np.shape(arrays[name]) != np.shape(leaf):
                raise CheckpointMismatchError(
                    f"checkpoint {self.directory}/{step} does not fit this model ({name}: "
                    f"{np.shape(arrays.get(name)) if name in arrays else 'missing'} vs {np.shape(leaf)}): "
                    "it was written for another architecture; use another --checkpoint-dir or drop --resume")
            out.append(jax.numpy.asarray(arrays[name], dtype=leaf.dtype))
        return jax.tree_util.tree_unflatten(treedef, out)

    def close(self) -> None:
        self._manager.close()
