"""The fault bed's fixtures and the ``chaos`` marker (registered here: pyproject.toml is left alone).

Environment:

* ``SIPHA_CHAOS_LONG=1``: the long runs the issue asks for (flapping for 60 s,
  every scenario five times); CI runs the short ones.
* ``SIPHA_CHAOS_TAKEOVER``: the ``[monitor] takeover-timeout`` the scenarios
  configure (default 6.0); ``off`` leaves the option out of sipha's configuration,
  to run the scenarios against a sipha that does not know it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.faultbed import REPEATS, Namespace, unusable


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos: fault injection in a network namespace (root, ip netns, nftables, SIPp)"
    )


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[Namespace]:
    """A fault bed namespace for one test, deleted (with its processes and rules) at the end."""
    reason = unusable()
    if reason is not None:
        pytest.skip(reason)
    with Namespace(tmp_path) as namespace:
        yield namespace


@pytest.fixture(autouse=True)
def chaos_run() -> int:
    """Which run of a repeated scenario this is (1; 1-5 in long mode, see pytest_generate_tests)."""
    return 1


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """In long mode, every test of a module with ``REPEATED = True`` runs REPEATS times ([...-run3])."""
    if REPEATS > 1 and getattr(metafunc.module, "REPEATED", False) and "chaos_run" in metafunc.fixturenames:
        metafunc.parametrize("chaos_run", range(1, REPEATS + 1), ids=lambda run: f"run{run}")
