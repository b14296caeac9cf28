"""The shared training loop: epochs from keys, both ways of feeding data, hooks, exact resume,
the divergence guard."""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxhash import train
from jaxhash.checkpoint import CheckpointMismatchError, TrainingCheckpointer

OPT = optax.sgd(0.05, momentum=0.9)


class State(NamedTuple):
    w: jax.Array
    opt_state: optax.OptState


def step(state, batch, key):
    """Least squares with a little gradient noise, so the keys matter."""
    x, y = batch

    def loss_fn(w):
        return jnp.mean(jnp.square(x @ w - y))

    loss, grad = jax.value_and_grad(loss_fn)(state.w)
    grad = grad + 0.01 * jax.random.normal(key, grad.shape)
    updates, opt_state = OPT.update(grad, state.opt_state, state.w)
    return State(optax.apply_updates(state.w, updates), opt_state), {"loss": loss, "w_norm": jnp.linalg.norm(state.w)}


@pytest.fixture
def problem(rng):
    x = rng.normal(size=(203, 5)).astype(np.float32)
    y = x @ np.arange(1, 6, dtype=np.float32) + 0.1 * rng.normal(size=203).astype(np.float32)
    w = jnp.zeros(5)
    return (x, y), State(w, OPT.init(w))


scan_epoch = jax.jit(lambda state, data, key: train.epoch_scan(step, state, data, key, 16))


def test_host_fed_epoch_equals_scanned_epoch(problem, key):
    data, state = problem
    a, ma = scan_epoch(state, data, key)
    b, mb = train.epoch_from_host(jax.jit(step), state, data, key, 16)
    np.testing.assert_allclose(a.w, b.w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ma["loss"], mb["loss"], rtol=1e-5)


def test_batches_cover_the_data_once_and_differ_per_key(key):
    order, keys = train.batch_order(key, 50, 16)
    assert order.shape == (3, 16) and keys.shape[0] == 3 and len(set(np.asarray(order).ravel())) == 48
    assert not np.array_equal(order, train.batch_order(jax.random.fold_in(key, 1), 50, 16)[0])
    with pytest.raises(ValueError, match="larger than the 10 training examples"):
        train.batch_order(key, 10, 16)


def test_fit_learns_and_a_split_run_equals_one_run(problem, key):
    data, state = problem
    epoch = lambda s, k: scan_epoch(s, data, k)  # noqa: E731
    log = []
    whole = train.fit(state, epoch, key=key, epochs=6, on_epoch=[train.History(log)])
    assert [r["epoch"] for r in log] == [1, 2, 3, 4, 5, 6] and log[-1]["loss"] < 0.1 * log[0]["loss"]
    half = train.fit(state, epoch, key=key, epochs=3)
    rest = train.fit(half, epoch, key=key, epochs=6, start_epoch=3)
    np.testing.assert_array_equal(rest.w, whole.w)


def test_run_stage_resumes_exactly_after_a_crash(problem, key, tmp_path):
    data, state = problem
    epoch = lambda s, k: scan_epoch(s, data, k)  # noqa: E731
    run = {"model": "least-squares", "lr": 0.05}
    reference = train.run_stage(state, epoch, key=key, epochs=5, stage="ls", progress=False)

    def crash(end):
        if end.epoch == 2:
            raise KeyboardInterrupt("power cut")

    with pytest.raises(KeyboardInterrupt):
        train.run_stage(state, epoch, key=key, epochs=5, stage="ls", checkpoint_dir=tmp_path / "ck", run=run,
                        progress=False, on_epoch=[crash])
    with pytest.raises(FileExistsError, match="resume"):
        train.run_stage(state, epoch, key=key, epochs=5, stage="ls", checkpoint_dir=tmp_path / "ck", run=run, progress=False)
    with pytest.raises(CheckpointMismatchError, match="another architecture"):
        train.run_stage(state, epoch, key=key, epochs=5, stage="ls", checkpoint_dir=tmp_path / "ck", run={**run, "lr": 1.0},
                        resume=True, progress=False)
    log = []
    resumed = train.run_stage(state, epoch, key=key, epochs=5, stage="ls", checkpoint_dir=tmp_path / "ck", run=run,
                              resume=True, progress=False, history=log)
    # the crash came in a hook of epoch 3, before its checkpoint (hooks first, checkpoint last): epochs 1-2 came from
    # the checkpoint of epoch 2, and epoch 3 ran again, so a hook's record of every epoch is complete
    assert [r["epoch"] for r in log] == [3, 4, 5]
    np.testing.assert_array_equal(resumed.w, reference.w)
    again = train.run_stage(state, epoch, key=key, epochs=5, stage="ls", checkpoint_dir=tmp_path / "ck", run=run,
                            resume=True, progress=False)  # finished: nothing left to run
    np.testing.assert_array_equal(again.w, reference.w)


def test_a_hook_stops_training_after_the_epoch_is_saved_and_a_resume_goes_on(problem, key, tmp_path):
    data, state = problem
    epoch = lambda s, k: scan_epoch(s, data, k)  # noqa: E731
    run = {"model": "least-squares", "lr": 0.05}
    reference = train.run_stage(state, epoch, key=key, epochs=4, stage="ls", progress=False)

    def pause(end):
        if end.epoch == 1:
            raise train.StopTraining("asked to stop")

    with pytest.raises(train.StopTraining, match="asked to stop"):
        train.run_stage(state, epoch, key=key, epochs=4, stage="ls", checkpoint_dir=tmp_path / "ck", run=run,
                        progress=False, on_epoch=[pause])
    log = []
    resumed = train.run_stage(state, epoch, key=key, epochs=4, stage="ls", checkpoint_dir=tmp_path / "ck", run=run,
                              resume=True, progress=False, history=log)
    assert [r["epoch"] for r in log] == [3, 4]  # epoch 2, which the hook stopped at, was saved: nothing runs twice
    np.testing.assert_array_equal(resumed.w, reference.w)


def test_divergence_stops_before_the_bad_epoch_is_saved(problem, key, tmp_path):
    data, state = problem
    calls = {"n": 0}

    def epoch(s, k):
        calls["n"] += 1
        s, metrics = scan_epoch(s, data, k)
        if calls["n"] == 3:
            metrics = dict(metrics, loss=jnp.nan)
        return s, metrics

    with pytest.raises(train.TrainingDiverged, match=r"ls diverged at epoch 3 \(loss=nan\); it stopped before keeping that epoch, the last good epoch is 2"):
        train.run_stage(state, epoch, key=key, epochs=5, stage="ls", checkpoint_dir=tmp_path / "ck", run={}, progress=False)
    ckpt = TrainingCheckpointer(tmp_path / "ck")
    assert ckpt.latest_meta()["epoch"] == 1  # 0-based: the second epoch
    ckpt.close()
    with pytest.raises(FloatingPointError, match="no epoch finished: lower the learning rate"):
        train.fit(state, lambda s, k: (s, {"loss": jnp.inf}), key=key, epochs=2)


def test_hooks_are_closed_on_errors(problem, key):
    data, state = problem
    closed = []

    class Hook:
        def __call__(self, end):
            raise RuntimeError("hook failed")

        def close(self):
            closed.append(True)

    with pytest.raises(RuntimeError, match="hook failed"):
        train.fit(state, lambda s, k: scan_epoch(s, data, k), key=key, epochs=2, on_epoch=[Hook(), None])
    assert closed == [True]
    assert train.fit(state, lambda s, k: scan_epoch(s, data, k), key=key, epochs=0) is state  # 0 epochs: nothing to do
    with pytest.raises(ValueError, match="epochs must be a non-negative integer"):
        train.fit(state, lambda s, k: scan_epoch(s, data, k), key=key, epochs=-1, on_epoch=[Hook()])
    assert closed == [True, True]  # closed even when the arguments are wrong


def test_a_state_that_blew_up_is_not_kept(problem, key):
    data, state = problem
    poisoned = lambda s, k: (s._replace(w=s.w * jnp.nan), {"loss": jnp.float32(1.0)})  # noqa: E731 - metric still finite
    with pytest.raises(train.TrainingDiverged, match="parameters are no longer finite"):
        train.fit(state, poisoned, key=key, epochs=2)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        train.batch_order(key, 10, 0)


DATA_PARALLEL_PROGRAM = """
import sys
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxhash import cnn, dbn, nets, rbm, train
from jaxhash.supervised import Classifier
from test_cnn import small_setup
from test_train import OPT, State, step

n_devices = int(sys.argv[1])
assert len(jax.devices()) == n_devices
par = train.data_parallel()
assert par.devices == n_devices
rng = np.random.default_rng(0)
key = jax.random.key(0)

def close(a, b, tol=2e-5):
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=tol, atol=tol)

# the shared loop, both ways of feeding data
x = rng.normal(size=(203, 5)).astype(np.float32)
y = x @ np.arange(1, 6, dtype=np.float32)
state = State(jnp.zeros(5), OPT.init(jnp.zeros(5)))
scan = jax.jit(lambda s, k, p: train.epoch_scan(step, s, (jnp.asarray(x), jnp.asarray(y)), k, 16, p), static_argnums=2)
one, m_one = scan(state, key, None)
many, m_many = scan(par.replicate(state), key, par)
close(one, many)
close(m_one, m_many)
if n_devices > 1:  # the batches really were split: the compiled epoch reduces the gradient over devices
    assert "all-reduce" in scan.lower(par.replicate(state), key, par).compile().as_text()
hosted, _ = train.epoch_from_host(jax.jit(step), par.replicate(state), (x, y), key, 16, parallel=par)
close(one, hosted)

# every trainer: RBM (CD-1), DBN fine-tuning, the CNN with BatchNorm and augmentation
v = rng.random((256, 20)).astype(np.float32)
opt = rbm.rbm_optimizer(0.1, 0.5, 1e-4)
s0 = rbm.init_train_state(key, rbm.init_rbm(key, 20, 8), opt)
close(rbm.train_epoch(key, s0, v, opt, batch_size=32), rbm.train_epoch(key, par.replicate(s0), v, opt, batch_size=32, parallel=par))
schedule = dbn.DBNSchedule(finetune_epochs=2, batch_size=32, finetune_lr=1e-3)
stack = [rbm.init_rbm(jax.random.key(1), 20, 12), rbm.init_rbm(jax.random.key(2), 12, 4)]
close(dbn.finetune(key, v, (20, 12, 4), schedule, stack, progress=False),
      dbn.finetune(key, v, (20, 12, 4), schedule, stack, progress=False, parallel=par))
from jaxhash.semantic import SemanticHasher  # a hasher's data_parallel=True takes the same path
hashers = [SemanticHasher(n_bits=4, layer_sizes=(20, 12, 4), rbm_epochs=1, finetune_epochs=1, batch_size=32, progress=False,
                          data_parallel=flag).fit(v) for flag in (False, True)]
close(hashers[0].variables_, hashers[1].variables_)
images, labels, model, config, mean, std = small_setup(rng)
config = config._replace(epochs=1, batch_size=24)
fit = lambda p: cnn.fit_network(model, images, labels, config, key=key, loss_fn=cnn.classification_loss(0.1), mean=mean,
                                std=std, validation=(images[:30], labels[:30]), progress=False, parallel=p)
close(fit(None), fit(par), tol=1e-4)

if n_devices == 4:
    with pytest.raises(ValueError, match="batch_size=30 cannot be split evenly over the 4 devices"):
        rbm.train_epoch(key, s0, v, opt, batch_size=30, parallel=par)
    with pytest.raises(ValueError, match="not 'data'"):
        train.data_parallel(jax.sharding.Mesh(np.array(jax.devices()), ("codes",)))
    grid = train.data_parallel(jax.sharding.Mesh(np.array(jax.devices()).reshape(2, 2), ("replica", "data")))
    close(one, scan(grid.replicate(state), key, grid)[0])  # batches over one axis, copies over the other
print("ok")
"""


def test_data_parallel_training_equals_one_device_training():
    """Every trainer with each batch split over 4 forced CPU devices gives the one-device result
    (up to float rounding); the device count is fixed when JAX starts, so it runs in a child process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4")
    result = subprocess.run([sys.executable, "-c", DATA_PARALLEL_PROGRAM, "4"], capture_output=True, text=True,
                            env=env, cwd=Path(__file__).parent)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def test_a_resumed_progress_bar_starts_at_the_epochs_done_without_timing_them(monkeypatch):
    import io
    import sys

    from jaxhash.train import EpochEnd, ProgressBar

    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    monkeypatch.delenv("JAXHASH_PROGRESS", raising=False)
    bar = ProgressBar(200, "vae", start_epoch=40)
    assert bar._bar.n == 40 and bar._bar.initial == 40  # tqdm's rate counts from `initial`: 40 epochs in 0 s was 46 epoch/s
    bar(EpochEnd("vae", 40, 200, {"loss": 1.0}, None, 0.0))
    assert bar._bar.n == 41
    bar.close()
    assert log.getvalue() == ""  # a second's work leaves no bar in a log: its metrics wait for a throttled update
