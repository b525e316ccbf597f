"""The layering of docs/design.md §6, checked on the sources.

The protocol core (sip, txn, proxy, ha) is sans-IO: it imports no I/O module and
no clock.  The dependency arrows go one way: ``sip ← txn ← proxy``, ``sip ← ha``,
``proxy → ha``; ``net`` (the asyncio transports) imports none of txn, proxy, ha or
the wiring; ``admin`` is a leaf of the wiring (it never imports the application
that serves it).  Every import counts, those under ``TYPE_CHECKING`` and inside
functions included: a cycle a type checker sees is a cycle a reader sees.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import sipha

PACKAGE = Path(sipha.__file__).parent
IO_MODULES = {"asyncio", "socket", "time", "selectors", "ssl", "uvloop", "aiohttp"}
CORE = ("sip", "txn", "proxy", "ha")

# What each layer may import of sipha (its own modules always).  "config" is the validated
# configuration model; "" is the package root (its version).
ALLOWED: dict[str, set[str]] = {
    "sip": set(),
    "txn": {"sip"},
    "ha": {"sip"},
    "proxy": {"sip", "txn", "ha"},
    "net": {"sip", ""},
    "trace": {"sip", "net", "config"},
    "admin": {"sip", "txn", "ha", "proxy", "net", "config", "trace", ""},
}


def unit_of(module: str) -> str:
    """The layer a ``sipha.…`` module belongs to: its subpackage, or its top-level module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def sources() -> Iterator[tuple[str, Path]]:
    """(module name, path) of every module of the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def imports_of(path: Path) -> list[str]:
    """Every module ``path`` imports, wherever the import statement is."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            found.append(node.module or "")
    return found


def sipha_imports(package: str) -> list[tuple[str, str]]:
    """(module, imported sipha module) for every import in ``sipha.<package>``."""
    return [
        (name, imported)
        for name, path in sources()
        if unit_of(name) == package and name != "sipha"
        for imported in imports_of(path)
        if imported == "sipha" or imported.startswith("sipha.")
    ]


@pytest.mark.parametrize("package", CORE)
def test_the_protocol_core_is_sans_io(package: str) -> None:
    for name, path in sources():
        if unit_of(name) == package:
            for module in imports_of(path):
                assert module.partition(".")[0] not in IO_MODULES, f"{name} imports {module}"


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_layer_imports_only_the_layers_below_it(package: str) -> None:
    allowed = ALLOWED[package] | {package}
    found = sipha_imports(package)
    assert found or package == "sip", f"no imports seen in sipha.{package}"
    for name, imported in found:
        assert unit_of(imported) in allowed, (
            f"{name} imports {imported}: sipha.{package} may import {allowed}"
        )


def test_no_cycle_between_layers() -> None:
    """Between subpackages and top-level modules: a directed acyclic graph, type-only imports included."""
    graph: dict[str, set[str]] = {}
    for name, path in sources():
        edges = graph.setdefault(unit_of(name), set())
        edges |= {unit_of(m) for m in imports_of(path) if m.startswith("sipha.")} - {unit_of(name)}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for successor in sorted(graph.get(node, ())):
            assert state.get(successor) != 1, f"import cycle: {' -> '.join([*path, node, successor])}"
            if successor not in state:
                visit(successor, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_modules_stay_readable() -> None:
    """No module over ~600 lines."""
    long_allowed: dict[str, int] = {}
    for name, path in sources():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= long_allowed.get(name, 620), f"{name}: {lines} lines"


def test_no_reference_outside_the_repository() -> None:
    """Comments point into docs/design.md (or say the thing): nothing a clone cannot follow."""
    root = PACKAGE.parent.parent
    for directory in ("src", "tests", "bench"):
        for path in (root / directory).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            # Spelled in pieces, so that this file does not match its own search.
            for needle in ("DESIGN" + ".md", "REFERENCES" + ".md", "the " + "seed", "the " + "task"):
                assert needle not in text.replace("docs/design.md", ""), f"{path}: {needle}"
