"""Which build of sipha runs: compiled (mypyc, what ``pip install .`` builds) or interpreted.

setup.py compiles the sans-IO core and the datagram path by default; the interpreted build
(``SIPHA_PURE_PYTHON=1``, an editable install, or a machine without a C compiler) runs the same
source at about twice the CPU per call.  ``sipha run`` logs which one it is at start, so that
a slow build is never a surprise.
"""

from __future__ import annotations

import importlib.machinery

import sipha.proxy.core


def compiled() -> bool:
    """Whether the proxy core runs as a C extension module (mypyc)."""
    location = sipha.proxy.core.__file__ or ""
    return location.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def describe() -> str:
    """``the compiled build (mypyc)``, or the interpreted one with its cost and the way out."""
    if compiled():
        return "the compiled build (mypyc)"
    return (
        "the interpreted build (pure Python: about twice the CPU per call of the compiled build,"
        " which `pip install .` makes where a C compiler exists)"
    )
