"""The compiled build (setup.py) covers the sans-IO core whatever moves inside it, and is the default."""

import ast
import importlib
import importlib.util
import re
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from sipha import build

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


def test_no_interpreted_class_subclasses_a_compiled_one() -> None:
    """An interpreted class cannot subclass a class compiled by mypyc: the import fails at start.

    So a module whose classes are subclassed elsewhere is compiled with every module that does
    (tls.py's connection and context subclass tcp.py's: both are listed, or neither).
    """
    setup = load_setup()
    compiled = {module_name(path).removesuffix(".__init__") for path in setup.compiled_modules()}
    for path in SOURCE.rglob("*.py"):
        name = module_name(str(path.relative_to(ROOT))).removesuffix(".__init__")
        if name in compiled:
            continue
        tree = ast.parse(path.read_text(), str(path))
        origin = {
            alias.asname or alias.name: f"{node.module}.{alias.name}"
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
            for alias in node.names
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for base in node.bases:
                    if isinstance(base, ast.Name) and base.id in origin:
                        module, _, _ = origin[base.id].rpartition(".")
                        assert module not in compiled, f"{name}.{node.name} subclasses {origin[base.id]}"


# ---------------------------------------------------------------------------- the default install


def test_the_compiled_build_is_what_pip_install_builds() -> None:
    """mypyc and what it type-checks the compiled modules through are build requirements."""
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    names = {re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0].lower() for requirement in requires}
    assert {"mypy", "setuptools", "dnspython", "python-json-logger"} <= names, names


@pytest.mark.parametrize(
    "command", ["egg_info", "dist_info", "sdist", "editable_wheel", "develop", "--version"]
)
def test_metadata_and_editable_builds_compile_nothing(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """pip asks for metadata before it builds (no type check then); an editable install stays
    interpreted (a module compiled next to its source would shadow every edit of it)."""
    monkeypatch.delenv("SIPHA_PURE_PYTHON", raising=False)
    assert load_setup().extension_modules(["setup.py", command, "--dist-dir", "x"]) == []


def test_the_opt_out_builds_the_interpreted_package_silently(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SIPHA_PURE_PYTHON", "1")
    assert load_setup().extension_modules(["setup.py", "bdist_wheel"]) == []
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("cc", ["/nonexistent/cc", "no-such-compiler-sipha -O2"])
def test_without_a_c_compiler_the_build_falls_back_and_says_so(
    cc: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SIPHA_PURE_PYTHON", raising=False)
    monkeypatch.setenv("CC", cc)
    assert load_setup().extension_modules(["setup.py", "bdist_wheel"]) == []
    said = capsys.readouterr().err
    assert "WARNING: sipha: building the INTERPRETED package" in said
    assert f"no C compiler ({cc.split(maxsplit=1)[0]!r} not found" in said
    assert "SIPHA_PURE_PYTHON=1" in said


def test_the_toolchain_of_this_machine_is_found() -> None:
    """Where the tests run, the compiled build must be possible (CI builds it)."""
    setup = load_setup()
    assert setup.missing_toolchain({}) is None
    assert "no C compiler" in setup.missing_toolchain({"CC": "/nonexistent/cc"})


def test_the_start_says_which_build_runs() -> None:
    compiled = Path(importlib.import_module("sipha.proxy.core").__file__ or "").suffix == ".so"
    assert build.compiled() is compiled
    assert build.describe().startswith("the compiled build" if compiled else "the interpreted build")
