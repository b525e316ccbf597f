"""bench/proxies.py's command line: what it runs sipha with."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from proxies import interpreter_path


def test_a_relative_sipha_python_still_names_the_venv_from_the_work_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sipha runs with ``cwd`` set to its work directory: a relative path must be made absolute
    first, and not resolved (a venv's ``bin/python`` is a symbolic link to the base Python,
    which has none of the venv's packages)."""
    venv_python = tmp_path / "venv" / "bin" / "python"
    venv_python.parent.mkdir(parents=True)
    venv_python.symlink_to(sys.executable)
    monkeypatch.chdir(tmp_path)
    path = interpreter_path(Path("venv/bin/python"))
    assert path == str(venv_python)
    assert os.path.isabs(path)
    assert Path(path).is_symlink()
