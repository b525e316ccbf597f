"""The default install, end to end: a wheel built as ``pip install .`` builds it is compiled.

Minutes of mypyc and C compilation, so marked ``long`` (out of ``make test``, whose compiled
build, ``make compiled``, is itself a plain ``pip install .`` checked by tests/test_build.py):
``.venv/bin/python -m pytest -m long tests/test_install.py``.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.test_build import ROOT, load_setup

EXTENSION = sysconfig.get_config_var("EXT_SUFFIX")


@pytest.mark.long
def test_a_wheel_built_from_a_clean_copy_holds_every_compiled_module(tmp_path: Path) -> None:
    """``pip wheel`` of the tree's files (as a clean clone has them), with build isolation: every
    listed module is an extension module in the wheel, next to mypyc's shared library."""
    copy = tmp_path / "tree"
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in listed:
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    environment = {key: value for key, value in os.environ.items() if key != "SIPHA_PURE_PYTHON"}
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path / "dist"), str(copy)],
        capture_output=True,
        text=True,
        timeout=1800,
        env=environment,
        check=False,
    )
    assert built.returncode == 0, (built.stdout + built.stderr)[-5000:]
    assert "building the INTERPRETED package" not in built.stderr + built.stdout
    (wheel,) = (tmp_path / "dist").glob("sipha-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert any(name.endswith("__mypyc" + EXTENSION) for name in names), sorted(names)[:20]
    for path in load_setup().compiled_modules():
        stem = Path(path).relative_to("src").with_suffix("").as_posix()
        assert f"{stem}{EXTENSION}" in names, stem
