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
from pathlib import Path

from setuptools import setup

SOURCE = Path("src/sipha")
# The sans-IO core, compiled whole: every module of these packages, so that a module added
# or moved there is compiled without anyone remembering to list it (tests/test_build.py).
CORE_PACKAGES = ("sip", "txn", "proxy")
# ... but for these: their exceptions override class attributes per subclass.
NOT_COMPILED = frozenset({"sip/errors.py"})
# The I/O side that carries every datagram: the UDP path, the worker hand-over, the driver
# and the proxy's layer on it.  The rest of the I/O side (app, tcp, admin, ha) stays interpreted.
IO_COMPILED = (
    "net/addr.py",
    "net/udp.py",
    "net/workers.py",
    "net/manager.py",
    "net/driver.py",
    "dispatch.py",
)


def compiled_modules() -> list[str]:
    """The source files mypyc compiles, relative to the project root."""
    core = [
        path.relative_to(SOURCE).as_posix()
        for package in CORE_PACKAGES
        for path in sorted((SOURCE / package).glob("*.py"))
    ]
    return [str(SOURCE / name) for name in [*core, *IO_COMPILED] if name not in NOT_COMPILED]


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import compiled_modules
    ext_modules = []
    if os.environ.get("SIPHA_USE_MYPYC") == "1":
        from mypyc.build import mypycify

        ext_modules = mypycify(compiled_modules(), opt_level="3")

    setup(ext_modules=ext_modules)
