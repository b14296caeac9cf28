import jax
import numpy as np
import pytest

from jaxhash import dbn, rbm


def random_stack(key, sizes):
    stack = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        k1, k2, k3 = jax.random.split(jax.random.fold_in(key, i), 3)
        p = rbm.init_rbm(k1, a, b, scale=0.3)
        stack.append(p._replace(visible_bias=0.2 * jax.random.normal(k2, (a,)), hidden_bias=0.2 * jax.random.normal(k3, (b,))))
    return stack


def test_fresh_unrolled_autoencoder_equals_mean_field_up_down_pass(key):
    sizes = (20, 16, 8, 4)
    stack = random_stack(key, sizes)
    x = jax.random.normal(key, (30, 20))
    model = dbn.DeepAutoencoder(sizes)
    np.testing.assert_allclose(model.apply(dbn.unroll(stack), x), dbn.up_down_mean_field(stack, x), rtol=1e-5, atol=1e-6)
    codes = model.apply(dbn.unroll(stack), x, method=dbn.DeepAutoencoder.encode)
    h = x
    for p in stack:
        h = rbm.hidden_probs(p, h)
    np.testing.assert_allclose(codes, h, rtol=1e-5, atol=1e-6)


def test_finetuning_lowers_reconstruction_error(key):
    sizes = (12, 8, 4)
    data = jax.random.normal(key, (400, 12))
    variables = dbn.unroll(random_stack(key, sizes))
    model = dbn.DeepAutoencoder(sizes)
    import optax

    opt = optax.sgd(1e-4, momentum=0.9)
    opt_state = opt.init(variables["params"])
    errors = []
    for epoch in range(5):
        variables, opt_state, err = dbn.finetune_epoch(jax.random.fold_in(key, epoch), variables, opt_state, data, model, opt, 50, 0.0)
        errors.append(float(err))
    assert errors[-1] < errors[0]


def test_layer_sizes_must_start_at_the_data_dimension():
    assert dbn.encoder_sizes_check([784, 256, 32], 784) == (784, 256, 32)
    with pytest.raises(ValueError, match="data have 784 features"):
        dbn.encoder_sizes_check([3072, 256, 32], 784)
    with pytest.raises(ValueError, match="at least"):
        dbn.encoder_sizes_check([784], 784)
