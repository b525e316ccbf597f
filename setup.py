"""The compiled build is the default: ``pip install .`` compiles the sans-IO core with mypyc.

The hot path (parser, transaction layer, proxy core) compiled to C extension
modules needs about half the CPU per call of the same code interpreted
(bench/core.py), so that is what ``pip install .`` builds: mypy (mypyc) and the
libraries mypyc type-checks through (dnspython, python-json-logger) are in
``[build-system] requires`` of pyproject.toml, installed in pip's isolated build
environment.  The source stays the one Python package.

* ``SIPHA_PURE_PYTHON=1``: the interpreted build, on purpose (nothing compiled).
  The editable install of the development loop (``pip install -e .``, ``make setup``)
  is interpreted too: the tests measure coverage on the source, and a change needs
  no recompilation.
* No C compiler (or no Python headers) on the machine: the interpreted build, with a
  warning here (``pip install -v`` shows it) and at every start (``sipha run`` logs
  which build runs: :mod:`sipha.build`).
* Any other failure (mypyc's type check, the C compiler's errors) fails the install:
  a silently slow proxy is worse than a failed ``pip install``.

Not compiled: ``sipha.sip.errors`` (its exceptions override class attributes per
subclass, which mypyc's native classes do not allow); the I/O side but for the UDP
and TCP/TLS paths and the per-message glue (app, admin); the pair monitor (admin
subclasses it, and a compiled class cannot be subclassed by an interpreted one: for
that reason tls.py, whose connection subclasses tcp.py's, is compiled with it).
"""

import os
import shlex
import shutil
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path

from setuptools import setup

SOURCE = Path("src/sipha")
# The sans-IO core, compiled whole: every module of these packages, so that a module added
# or moved there is compiled without anyone remembering to list it (tests/test_build.py).
CORE_PACKAGES = ("sip", "txn", "proxy", "ha")
# ... but for these: their exceptions override class attributes per subclass.
NOT_COMPILED = frozenset({"sip/errors.py"})
# The I/O side that carries every datagram and segment: the UDP path, the TCP/TLS connections
# (tls.py subclasses tcp.py's classes: compiled together), the worker hand-over, the driver
# and the proxy's layer on it.  The rest of the I/O side (app, admin, ...) stays interpreted.
IO_COMPILED = (
    "net/addr.py",
    "net/udp.py",
    "net/stats.py",
    "net/tcp.py",
    "net/tls.py",
    "net/workers.py",
    "net/manager.py",
    "net/driver.py",
    "dispatch.py",
)
PURE_PYTHON = "SIPHA_PURE_PYTHON"
"""The opt-out: ``SIPHA_PURE_PYTHON=1 pip install .`` builds the interpreted package."""


def compiled_modules() -> list[str]:
    """The source files mypyc compiles, relative to the project root."""
    core = [
        path.relative_to(SOURCE).as_posix()
        for package in CORE_PACKAGES
        for path in sorted((SOURCE / package).glob("*.py"))
    ]
    return [str(SOURCE / name) for name in [*core, *IO_COMPILED] if name not in NOT_COMPILED]


def missing_toolchain(environ: Mapping[str, str]) -> str | None:
    """Why C extensions cannot be built here (no C compiler, no Python.h), or None when they can.

    The compiler is the one setuptools would use: ``$CC``, else the one Python was built with.
    """
    command = environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    words = shlex.split(command)
    compiler = words[0] if words else "cc"
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler!r} not found; on Debian: apt-get install gcc)"
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.is_file():
        return f"no Python headers ({headers} missing; on Debian: apt-get install python3-dev)"
    return None


BUILDS = frozenset({"bdist_wheel", "build", "build_ext", "install", "bdist_egg"})
"""setup.py commands that build the modules (not metadata: ``egg_info``, ``dist_info``, ``sdist``)."""
EDITABLE = frozenset({"editable_wheel", "develop"})
"""``pip install -e .``: always interpreted (a compiled module next to its source would shadow every
edit of it, and the tests measure coverage on the source)."""


def extension_modules(argv: list[str]) -> list[object]:
    """What mypyc builds for setup.py ``argv``: every compiled module, or none (see the module)."""
    commands = set(argv[1:])
    if os.environ.get(PURE_PYTHON) == "1" or commands & EDITABLE or not commands & BUILDS:
        return []  # metadata only (pip asks for it first): no type check, no C
    missing = missing_toolchain(os.environ)
    if missing is not None:
        print(  # setuptools prints its output; pip shows it with -v
            f"WARNING: sipha: building the INTERPRETED package (about twice the CPU per call): {missing}."
            f" Install one and reinstall for the compiled build, or set {PURE_PYTHON}=1 to choose"
            " the interpreted build and silence this.",
            file=sys.stderr,
        )
        return []
    from mypyc.build import mypycify  # noqa: PLC0415 - a build requirement, not needed to import this file

    return list(mypycify(compiled_modules(), opt_level="3"))


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import compiled_modules
    # build_ext compiles the C files in parallel (mypyc writes one per module group).
    setup(ext_modules=extension_modules(sys.argv), options={"build_ext": {"parallel": os.cpu_count() or 1}})
