"""The layering of docs/design.md §6, checked on the sources.

The protocol core (sip, txn, proxy, ha) is sans-IO: it imports no I/O module
and no clock.  The transport layer (net) does not depend on the proxy core or
on the wiring.  One check for every package, in one place.
"""

import ast
from pathlib import Path

import pytest

import sipha

PACKAGE = Path(sipha.__file__).parent
IO_MODULES = {"asyncio", "socket", "time", "selectors", "ssl", "uvloop", "aiohttp"}


def imported_modules(package: str) -> list[tuple[str, str]]:
    """(file name, imported module) for every import in ``sipha.<package>``."""
    found: list[tuple[str, str]] = []
    paths = sorted((PACKAGE / package).glob("*.py"))
    assert paths, f"no sources in sipha.{package}"
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found += [(path.name, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                found.append((path.name, node.module or ""))
    return found


@pytest.mark.parametrize("package", ["sip", "txn", "proxy", "ha"])
def test_the_protocol_core_is_sans_io(package: str) -> None:
    for file_name, module in imported_modules(package):
        assert module.partition(".")[0] not in IO_MODULES, f"sipha.{package}/{file_name} imports {module}"


def test_net_does_not_import_the_proxy_core() -> None:
    for file_name, module in imported_modules("net"):
        assert not module.startswith(("sipha.proxy", "sipha.app")), f"net/{file_name} imports {module}"
