"""JAX imported on first use: the stand-in module and jit."""
import copy
import subprocess
import sys

import numpy as np

from conftest import REPO
from jaxhash._deferred import DeferredModule, deferred_jit


def test_importing_search_and_codes_loads_no_jax():
    probe = "import sys, jaxhash.search, jaxhash.codes, jaxhash.index; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "False", out.stderr


def test_a_deferred_module_imports_on_first_attribute_and_copies():
    json_module = DeferredModule("json")
    assert "(imported)" not in repr(json_module)
    assert json_module.dumps([1]) == "[1]" and "(imported)" in repr(json_module)
    assert copy.copy(json_module).dumps({}) == "{}"


def test_deferred_jit_compiles_once_and_keeps_static_arguments():
    traced = []

    @deferred_jit(static_argnames=("power",))
    def raise_to(x, power):
        traced.append(power)
        return x**power

    assert raise_to.__name__ == "raise_to"
    np.testing.assert_array_equal(raise_to(np.arange(3.0), power=2), [0.0, 1.0, 4.0])
    np.testing.assert_array_equal(raise_to(np.arange(3.0) + 1, power=2), [1.0, 4.0, 9.0])
    np.testing.assert_array_equal(raise_to(np.arange(3.0), power=3), [0.0, 1.0, 8.0])
    assert traced == [2, 3]  # traced once per static value, not per call
