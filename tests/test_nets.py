import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhash import nets


def test_im2col_convolution_equals_the_native_one(key):
    x = jax.random.normal(key, (2, 7, 9, 5))
    native, im2col = nets.Conv3x3(4, im2col=False), nets.Conv3x3(4, im2col=True)
    params = native.init(key, x)
    with jax.default_matmul_precision("highest"):  # GPUs multiply in TF32 by default
        np.testing.assert_allclose(im2col.apply(params, x), native.apply(params, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("architecture", ["vgg", "resnet", "airbench"])
def test_networks_give_features_and_logits(key, architecture):
    model = nets.make_network(architecture, (8, 16), 5, 1, feature_dim=12)
    x = jnp.zeros((3, 16, 16, 3))
    variables = model.init(key, x, train=False)
    features, logits = model.apply(variables, x, train=False)
    assert features.shape == (3, 12) and logits.shape == (3, 5)
    assert float(features.min()) >= 0 and float(features.max()) <= 1  # sigmoid descriptor
    (_, logits), updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert "batch_stats" in updates
    with pytest.raises(ValueError, match="unknown architecture"):
        nets.make_network("alexnet", (8,), 5, 1, None)


@pytest.mark.parametrize("architecture", ["vgg", "resnet", "airbench"])
def test_bf16_networks_keep_float32_statistics_under_strict_promotion(key, architecture):
    """Accelerators compute in bf16; BatchNorm statistics and the head stay float32 (the suite runs with strict promotion)."""
    x = jax.random.normal(key, (4, 16, 16, 3))
    wide, narrow = (nets.make_network(architecture, (8, 16), 5, 2, feature_dim=12, dtype=dtype) for dtype in (jnp.float32, jnp.bfloat16))
    variables = wide.init(key, x, train=False)
    (features, logits), updates = narrow.apply(variables, x, train=True, mutable=["batch_stats"])
    assert features.dtype == jnp.float32 and logits.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(logits)))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(updates))
    reference, _ = wide.apply(variables, x, train=False)
    np.testing.assert_allclose(narrow.apply(variables, x, train=False)[0], reference, atol=0.05)


def test_airbench_pools_after_the_first_convolution_of_each_stage(key):
    """Its later convolutions run at the pooled size: a stage of depth 2 holds two kernels, and the
    second sees the first's channels."""
    model = nets.make_network("airbench", (8, 16), 5, 2, feature_dim=None)
    x = jax.random.normal(key, (2, 16, 16, 3))
    variables = model.init(key, x, train=False)
    kernels = [leaf.shape for path, leaf in jax.tree_util.tree_leaves_with_path(variables["params"])
               if jax.tree_util.keystr(path).endswith("['kernel']") and leaf.ndim == 4]
    assert kernels == [(3, 3, 3, 8), (3, 3, 8, 8), (3, 3, 8, 16), (3, 3, 16, 16)]
    features, logits = model.apply(variables, x, train=False)
    assert features.shape == (2, 16) and logits.shape == (2, 5)
    conv_inputs = []
    capture = lambda next_fn, args, kwargs, context: (  # noqa: E731
        conv_inputs.append(args[0].shape) if isinstance(context.module, nets.Conv3x3) else None) or next_fn(*args, **kwargs)
    with nn.intercept_methods(capture):
        model.apply(variables, x, train=False)
    assert [shape[1] for shape in conv_inputs] == [16, 8, 8, 4]  # each stage's second convolution: half the size
