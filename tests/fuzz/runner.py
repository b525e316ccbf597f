"""Run one harness of tests/fuzz under atheris, libFuzzer's engine for Python.

Only sipha's own functions are instrumented for coverage: ``atheris.instrument_all``
instruments the standard library too, which takes 20 s on this machine before the
first execution; sipha alone takes a fraction of a second.  The harness modules are
imported normally (by pytest as well), and instrumented here, after the fact, by
patching the code of every sipha function already loaded: each harness imports
what it fuzzes at its top.

Arguments after the harness are libFuzzer's (``-runs=N``, ``-max_total_time=S``,
``-artifact_prefix=DIR/``, corpus directories; a file instead of a directory runs
that one input, to reproduce a crash).  A crash is an uncaught exception: atheris
prints its traceback, writes the input to ``<artifact_prefix>crash-<sha1>`` and exits
with status 1 (timeouts: status 70 and ``timeout-<sha1>``).
"""

from __future__ import annotations

import gc
import sys
import types
from collections.abc import Callable, Sequence
from pathlib import Path

import atheris  # type: ignore[import-untyped]

import sipha

SIPHA_SOURCES = str(Path(sipha.__file__).resolve().parent)


def instrument_sipha() -> int:
    """Add atheris' coverage instrumentation to every loaded sipha function; return how many."""
    count = 0
    for obj in gc.get_objects():
        if isinstance(obj, types.FunctionType) and obj.__code__.co_filename.startswith(SIPHA_SOURCES):
            atheris.instrument_func(obj)
            count += 1
    return count


def main(fuzz_one_input: Callable[[bytes], None], argv: Sequence[str] | None = None) -> None:
    """Instrument sipha and fuzz ``fuzz_one_input`` with libFuzzer's ``argv`` (``sys.argv`` by default)."""
    count = instrument_sipha()
    if count == 0:
        # The compiled build (mypyc) has no Python functions to instrument: coverage would be blind.
        raise SystemExit(f"no Python function of sipha under {SIPHA_SOURCES}: run in .venv, not compiled")
    print(f"INFO: instrumented {count} sipha functions", file=sys.stderr)
    atheris.Setup(list(sys.argv if argv is None else argv), fuzz_one_input)
    atheris.Fuzz()
