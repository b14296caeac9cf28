import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhash import rbm


def tiny_rbm(key, n_visible=4, n_hidden=3, scale=1.0):
    kw, kb, kc = jax.random.split(key, 3)
    p = rbm.init_rbm(kw, n_visible, n_hidden, scale=scale)
    return p._replace(visible_bias=0.5 * jax.random.normal(kb, (n_visible,)), hidden_bias=0.5 * jax.random.normal(kc, (n_hidden,)))


def all_states(n):
    return jnp.asarray(list(itertools.product([0.0, 1.0], repeat=n)), jnp.float32)


def exact_distribution(params):
    states = all_states(params.weights.shape[0])
    logp = -rbm.free_energy(params, states)
    return states, np.asarray(jax.nn.softmax(logp))


def test_free_energy_matches_brute_force_sum_over_hidden(key):
    params = tiny_rbm(key)
    v = all_states(4)
    h = all_states(3)
    energy = -(v @ params.visible_bias)[:, None] - (h @ params.hidden_bias)[None, :] - v @ params.weights @ h.T
    brute = -jax.scipy.special.logsumexp(-energy, axis=1)
    np.testing.assert_allclose(rbm.free_energy(params, v), brute, rtol=1e-5)


def test_gibbs_chain_reaches_the_exact_distribution(key):
    params = tiny_rbm(key)
    states, exact = exact_distribution(params)
    k_init, k_run = jax.random.split(jax.random.fold_in(key, 1))
    v0 = jax.random.bernoulli(k_init, 0.5, (20000, 4)).astype(jnp.float32)
    vk = np.asarray(rbm.gibbs_chain(k_run, params, v0, 50))
    index = (vk @ (2 ** np.arange(3, -1, -1))).astype(int)  # same order as itertools.product
    empirical = np.bincount(index, minlength=16) / len(index)
    assert 0.5 * np.abs(empirical - exact).sum() < 0.02  # total variation distance


def exact_nll_gradient(params, data):
    states, p_model = exact_distribution(params)
    def mean_log_lik(p):
        return jnp.mean(-rbm.free_energy(p, data)) - rbm.exact_log_partition(p)
    grads = jax.grad(mean_log_lik)(params)
    return jax.tree_util.tree_map(lambda g: -g, grads)


def test_cd_k_gradient_approaches_exact_gradient_as_k_grows(key):
    params = tiny_rbm(key, scale=1.5)
    data = jnp.asarray(np.random.default_rng(0).integers(0, 2, (8, 4)), jnp.float32)
    exact = exact_nll_gradient(params, data)
    many = jnp.tile(data, (4000, 1))  # average CD over many chains: its expectation, not its noise
    errors = []
    for k in (1, 3, 30):
        grads, _, _ = rbm.cd_gradient(jax.random.fold_in(key, k), params, many, k=k)
        errors.append(float(jnp.linalg.norm(grads.weights - exact.weights)))
    # k = 3 may already sit at the sampling-noise floor, so only the robust statements are checked.
    assert errors[2] < 0.5 * errors[0]
    assert errors[2] < 0.05 * float(jnp.linalg.norm(exact.weights)) + 0.02


def test_ais_log_partition_agrees_with_enumeration(key):
    params = tiny_rbm(key, n_visible=12, n_hidden=8, scale=0.8)
    exact = float(rbm.exact_log_partition(params))
    estimate, std = rbm.ais_log_partition(jax.random.fold_in(key, 2), params, n_chains=200, n_betas=3000)
    assert abs(float(estimate) - exact) < max(0.05, 5 * float(std))
    data = all_states(12)[:50]
    np.testing.assert_allclose(rbm.average_log_likelihood(params, data, estimate),
                               rbm.average_log_likelihood(params, data, exact), atol=0.05)


def test_training_lowers_reconstruction_error(key):
    rng = np.random.default_rng(0)
    protos = rng.integers(0, 2, (4, 30))
    data = jnp.asarray(np.abs(protos[rng.integers(0, 4, 2000)] - (rng.random((2000, 30)) < 0.05)), jnp.float32)
    opt = rbm.rbm_optimizer(0.1, momentum=0.5, weight_decay=1e-4)
    for persistent in (0, 100):
        state = rbm.init_train_state(key, rbm.init_rbm(key, 30, 16), opt, persistent_chains=persistent)
        before = float(rbm.reconstruction_error(state.params, data))
        for epoch in range(5):
            state, err = rbm.train_epoch(jax.random.fold_in(key, epoch), state, data, opt, batch_size=50, k=1)
        after = float(rbm.reconstruction_error(state.params, data))
        assert after < 0.5 * before and np.isfinite(float(err))
        assert (state.chain is None) == (persistent == 0)


def test_gaussian_visible_units(key):
    params = tiny_rbm(key)
    v, mean = rbm.sample_visible(key, params, jnp.ones((5000, 3)), "gaussian")
    np.testing.assert_allclose(np.asarray(v).mean(0), np.asarray(mean[0]), atol=0.06)
    np.testing.assert_allclose(np.asarray(v).std(0), 1.0, atol=0.05)  # unit variance
    x = jnp.asarray(np.random.default_rng(1).normal(size=(500, 4)), jnp.float32)
    opt = rbm.rbm_optimizer(0.001)
    state = rbm.init_train_state(key, rbm.init_rbm(key, 4, 3), opt)
    state, err = rbm.train_epoch(key, state, x, opt, batch_size=100, k=1, visible="gaussian")
    assert np.isfinite(float(err))


def test_pseudo_log_likelihood_is_finite_and_prefers_data(key):
    rng = np.random.default_rng(0)
    data = jnp.asarray(np.repeat(rng.integers(0, 2, (1, 20)), 500, axis=0), jnp.float32)
    opt = rbm.rbm_optimizer(0.1)
    state = rbm.init_train_state(key, rbm.init_rbm(key, 20, 8), opt)
    for epoch in range(5):
        state, _ = rbm.train_epoch(jax.random.fold_in(key, epoch), state, data, opt, batch_size=50)
    pll_data = float(jnp.mean(rbm.pseudo_log_likelihood(key, state.params, data)))
    noise = jnp.asarray(rng.integers(0, 2, (500, 20)), jnp.float32)
    assert pll_data > float(jnp.mean(rbm.pseudo_log_likelihood(key, state.params, noise)))


def test_bad_data_is_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rbm.check_rbm_data(np.array([[0.0, 2.0]]))
    with pytest.raises(ValueError, match="NaN"):
        rbm.check_rbm_data(np.array([[0.0, np.nan]]), "gaussian")
    with pytest.raises(ValueError, match="2-D"):
        rbm.check_rbm_data(np.zeros(4))
    with pytest.raises(ValueError, match="visible must be"):
        rbm.check_rbm_data(np.zeros((2, 2)), "poisson")
    assert rbm.check_rbm_data(np.array([[-3.0, 5.0]]), "gaussian").dtype == np.float32
