from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxhash.checkpoint import CheckpointMismatchError, Checkpoints, TrainingCheckpointer
from jaxhash.train import EpochEnd


class State(NamedTuple):
    params: dict
    opt_state: optax.OptState


def make_state(key, width=4):
    params = {"w": jax.random.normal(key, (3, width)), "b": jnp.zeros(width)}
    opt = optax.adam(1e-3)
    return State(params, opt.init(params))


def test_restore_gives_back_types_and_values(key, tmp_path):
    state = make_state(key)
    ck = Checkpoints(tmp_path / "ck", run={"width": 4, "sizes": (3, 4)})
    assert ck.restore(state, resume=False) == (state, 0)  # nothing saved yet
    moved = state._replace(params={"w": state.params["w"] + 1, "b": state.params["b"] - 2})
    ck(EpochEnd("train", 0, 3, {}, state, 0.0))
    ck(EpochEnd("train", 1, 3, {}, moved, 0.0))
    ck.close()
    again = Checkpoints(tmp_path / "ck", run={"width": 4, "sizes": [3, 4]})  # tuples come back as lists: still equal
    restored, start = again.restore(make_state(jax.random.fold_in(key, 1)), resume=True)
    again.close()
    assert start == 2 and isinstance(restored, State) and type(restored.opt_state) is type(state.opt_state)
    for a, b in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(moved)):
        np.testing.assert_array_equal(a, b)


def test_refuses_to_overwrite_or_to_load_another_run(key, tmp_path):
    state = make_state(key)
    ck = Checkpoints(tmp_path / "ck", run={"width": 4})
    ck(EpochEnd("train", 0, 3, {}, state, 0.0))
    ck.close()
    with pytest.raises(FileExistsError, match="resume"):
        Checkpoints(tmp_path / "ck", run={"width": 4}).restore(state, resume=False)
    with pytest.raises(CheckpointMismatchError, match="another architecture or data \\(width: 4 there, 8 here\\)"):
        Checkpoints(tmp_path / "ck", run={"width": 8}).restore(make_state(key, 8), resume=True)


def test_a_refused_resume_names_the_innermost_fields_that_differ(key, tmp_path):
    state = make_state(key)
    run = {"config": {"epochs": 200, "batch_size": 64, "width": 4}, "seed": 0}
    ck = Checkpoints(tmp_path / "ck", run=run)
    ck(EpochEnd("train", 0, 3, {}, state, 0.0))
    ck.close()
    other = {"config": {"epochs": 70, "batch_size": 64, "width": 4}, "seed": 0, "data": "digits"}
    with pytest.raises(CheckpointMismatchError, match=r"\(config\.epochs: 200 there, 70 here; data: absent there, 'digits' here\)"):
        Checkpoints(tmp_path / "ck", run=other).restore(state, resume=True)
    with pytest.raises(CheckpointMismatchError, match=r"\(seed: 0 there, None here\)"):  # None is a value, not an absence
        Checkpoints(tmp_path / "ck", run={**run, "seed": None}).restore(state, resume=True)


def test_a_template_of_other_shapes_is_refused(key, tmp_path):
    ck = TrainingCheckpointer(tmp_path / "raw")
    ck.save(0, make_state(key), {"epoch": 0})
    with pytest.raises(CheckpointMismatchError, match="another architecture"):
        ck.restore(0, make_state(key, width=5))
    ck.close()
