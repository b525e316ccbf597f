"""The compiled build (setup.py) covers the sans-IO core whatever moves inside it."""

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src" / "sipha"


def load_setup() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sipha_setup", ROOT / "setup.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # not __main__: setup() is not called
    return module


def module_name(path: str) -> str:
    relative = Path(path).relative_to("src")
    return ".".join(relative.with_suffix("").parts)


def test_every_module_of_the_core_packages_is_compiled() -> None:
    setup = load_setup()
    compiled = set(setup.compiled_modules())
    for package in setup.CORE_PACKAGES:
        for path in (SOURCE / package).glob("*.py"):
            relative = path.relative_to(SOURCE).as_posix()
            if relative not in setup.NOT_COMPILED:
                assert f"src/sipha/{relative}" in compiled, relative


def test_every_listed_module_exists() -> None:
    """A module moved or renamed must not drop silently out of the compiled build."""
    setup = load_setup()
    for path in setup.compiled_modules():
        assert (ROOT / path).is_file(), path
    for relative in setup.NOT_COMPILED:
        assert (SOURCE / relative).is_file(), relative


def test_the_installed_build_compiled_every_listed_module() -> None:
    """Against the compiled build (make pytest-compiled): each listed module is an extension."""
    if Path(importlib.import_module("sipha.proxy.core").__file__ or "").suffix != ".so":
        pytest.skip("the interpreted build: nothing is compiled")
    setup = load_setup()
    for path in setup.compiled_modules():
        module = importlib.import_module(module_name(path))
        assert (module.__file__ or "").endswith(".so"), module.__file__
