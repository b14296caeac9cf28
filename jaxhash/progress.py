"""Progress bars for long work: tqdm, throttled when stderr is not a terminal (logs, CI), and there shown
only for work that lasts over 5 seconds, ending on its own line.

Set ``JAXHASH_PROGRESS=0`` to switch them off.
"""
from __future__ import annotations

import functools
import os
import sys


@functools.cache
def _has_widgets() -> bool:
    from importlib.util import find_spec  # noqa: PLC0415

    return find_spec("ipywidgets") is not None


def progress(iterable=None, **kwargs):
    if _has_widgets():
        from tqdm.auto import tqdm  # noqa: PLC0415
    else:  # text bars everywhere, instead of tqdm's warning in a notebook that IProgress is missing
        from tqdm.std import tqdm  # noqa: PLC0415

    if os.environ.get("JAXHASH_PROGRESS", "1") == "0":
        kwargs["disable"] = True
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", 15.0)
        kwargs.setdefault("delay", 5.0)  # work done sooner leaves no bar in a log (its first state, then a clear)
        # A bar that was shown ends on its last state and a newline: cleared, it left a carriage return that glued the
        # next printed line (a result row) to it in a log of stdout and stderr together.
        if all(cls.__module__ != "tqdm.notebook" for cls in tqdm.__mro__):  # a notebook's widget bar is cleared as asked
            kwargs["leave"] = True
    return tqdm(iterable, **kwargs)
