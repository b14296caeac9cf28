"""JAX, imported on first use.

Reading an index and searching it for a few queries needs only NumPy; importing JAX alone takes
about half a second. Modules on that path (:mod:`jaxhash.search`, :mod:`jaxhash.codes`) name
``jax`` and ``jnp`` through these stand-ins and jit through :func:`deferred_jit`, so a command that
never computes with JAX never loads it.
"""
from __future__ import annotations

import functools
import importlib

__all__ = ["DeferredModule", "deferred_jit", "jax", "jnp"]


class DeferredModule:
    """A module imported the first time one of its attributes is read."""

    def __init__(self, name: str):
        self._name = name
        self._module = None

    def __getattr__(self, attr: str):
        if attr.startswith("__") or attr in ("_name", "_module"):  # copy / pickle probing a half-built instance
            raise AttributeError(attr)
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

    def __repr__(self) -> str:
        return f"<deferred module {self._name!r}{' (imported)' if self._module is not None else ''}>"


jax = DeferredModule("jax")
jnp = DeferredModule("jax.numpy")


def deferred_jit(fn=None, **options):
    """``jax.jit(fn, **options)``, built on the first call (usable as ``@deferred_jit`` or
    ``@deferred_jit(static_argnames=...)``)."""
    if fn is None:
        return functools.partial(deferred_jit, **options)
    jitted = None

    @functools.wraps(fn)
    def call(*args, **kwargs):
        nonlocal jitted
        if jitted is None:
            jitted = jax.jit(fn, **options)
        return jitted(*args, **kwargs)

    return call
