"""Optional compiled build: ``SIPHA_USE_MYPYC=1`` compiles the sans-IO core with mypyc.

The hot path (parser, transaction layer, proxy core) compiled to C extension
modules needs about half the CPU per call of the same code interpreted
(bench/core.py).  The source stays the one Python package: without the variable
(``pip install -e .``, the tests' coverage runs) nothing is compiled.  Build it
with mypy in the build environment: ``make compiled`` (see the Makefile), or
``pip install mypy setuptools wheel && SIPHA_USE_MYPYC=1 pip install --no-build-isolation .``

Not compiled: ``sipha.sip.errors`` (its exceptions override class attributes per
subclass, which mypyc's native classes do not allow); the I/O side but for the UDP
path and the per-message glue (app, tcp, admin); the pair monitor (admin subclasses
it, and a compiled class cannot be subclassed by an interpreted one).
"""

import os

from setuptools import setup

COMPILED = [
    "src/sipha/sip/__init__.py",
    "src/sipha/sip/address.py",
    "src/sipha/sip/grammar.py",
    "src/sipha/sip/headers.py",
    "src/sipha/sip/uri.py",
    "src/sipha/sip/message.py",
    "src/sipha/sip/framer.py",
    "src/sipha/txn/timers.py",
    "src/sipha/txn/events.py",
    "src/sipha/txn/keys.py",
    "src/sipha/txn/machines.py",
    "src/sipha/txn/layer.py",
    "src/sipha/proxy/core.py",
    "src/sipha/proxy/routing.py",
    "src/sipha/proxy/via.py",
    "src/sipha/proxy/view.py",
    "src/sipha/proxy/affinity.py",
    "src/sipha/net/addr.py",
    "src/sipha/net/udp.py",
    "src/sipha/net/workers.py",
    "src/sipha/net/manager.py",
    "src/sipha/dispatch.py",
]

ext_modules = []
if os.environ.get("SIPHA_USE_MYPYC") == "1":
    from mypyc.build import mypycify

    ext_modules = mypycify(COMPILED, opt_level="3")

setup(ext_modules=ext_modules)
