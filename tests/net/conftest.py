"""Run every sipha.net test on the stdlib event loop and, when installed, on uvloop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop  # noqa: PLC0415 - optional
    except ImportError:  # pragma: no cover - uvloop is optional
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories
