"""What the admin HTTP may ask of the running app: ``POST /reload`` (SIGHUP) and ``POST /drain`` (SIGTERM).

Both go through the very methods the signals use (:class:`sipha.admin.status.AdminSource`), so
the admin surface can do nothing that ``kill`` cannot, and logs the same lines.  With
``[proxy] workers`` each worker is a whole sipha with its own admin port; asking one of them
signals the parent instead (:attr:`sipha.admin.telemetry.Telemetry.worker_parent`), which passes
the signal on to every worker, this one included: a reload or a drain of one worker alone would
leave the workers with different configurations, or be undone by the parent restarting a worker
that exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass
from typing import Any, Final

from sipha.admin.status import AdminSource
from sipha.admin.telemetry import ReloadResult

log = logging.getLogger("sipha.admin")

RELOAD_WAIT: Final = 30.0
"""In a worker: the longest wait for its own reload after the SIGHUP to the parent."""
RELOAD_POLL: Final = 0.05


@dataclass(frozen=True, slots=True)
class DrainResult:
    """What ``POST /drain`` did: ``started`` is False when a drain was already under way."""

    started: bool
    transactions_under_way: int
    calls_up: int

    def document(self) -> dict[str, Any]:
        """The JSON body."""
        return {
            "draining": True,
            "started": self.started,
            "transactions_under_way": self.transactions_under_way,
            "calls_up": self.calls_up,
        }


def _parent(source: AdminSource) -> int | None:
    """The worker parent to signal, when this is a worker and its parent is still the same process."""
    parent = source.telemetry.worker_parent
    return parent if parent is not None and os.getppid() == parent else None


async def request_reload(source: AdminSource) -> ReloadResult:
    """SIGHUP's reload, and what it did (the changes applied, or the problems that refused it).

    In a worker the parent gets the SIGHUP and passes it on; the answer is this worker's own
    reload (the first one that ends after the signal: every worker reads the same file).
    """
    telemetry = source.telemetry
    parent = _parent(source)
    if parent is None:
        log.info("reload asked over the admin HTTP")
        await source.reload()
        result = telemetry.last_reload
        return (
            result
            if result is not None
            else ReloadResult(applied=False, source="<config>", problems=("not reloaded",))
        )
    log.info("reload asked over the admin HTTP: SIGHUP to the worker parent (pid %d)", parent)
    before = telemetry.reloads
    os.kill(parent, signal.SIGHUP)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RELOAD_WAIT
    while telemetry.reloads == before or telemetry.last_reload is None:
        if loop.time() >= deadline:
            problem = f"no reload within {RELOAD_WAIT:g} s of the SIGHUP to the worker parent (pid {parent})"
            return ReloadResult(applied=False, source="<config>", problems=(problem,))
        await asyncio.sleep(RELOAD_POLL)
    return telemetry.last_reload


class Drainer:
    """Starts SIGTERM's drain once; holds its asyncio task (the loop keeps only weak references)."""

    def __init__(self, source: AdminSource) -> None:
        self._source = source
        self._task: asyncio.Task[None] | None = None
        self._asked = False

    def request(self) -> DrainResult:
        """Start draining (new out-of-dialog requests get 503; sipha exits once what is under way is done).

        A drain under way is left alone: a second SIGTERM would stop at once, cutting what
        is under way, which a repeated ``sipha ctl drain`` must not do.
        """
        source = self._source
        core = source.core
        under_way, calls = (0, 0) if core is None else (core.under_way, core.calls)
        if self._asked or (core is not None and core.draining):
            return DrainResult(started=False, transactions_under_way=under_way, calls_up=calls)
        self._asked = True
        parent = _parent(source)
        if parent is not None:
            log.info("drain asked over the admin HTTP: SIGTERM to the worker parent (pid %d)", parent)
            os.kill(parent, signal.SIGTERM)
        else:
            log.info(
                "drain asked over the admin HTTP: draining: %d transactions under way, %d calls up",
                under_way,
                calls,
            )
            if core is not None:
                core.start_draining()  # at once: the next new request already gets 503
            self._task = asyncio.get_running_loop().create_task(source.drain_and_stop())
        return DrainResult(started=True, transactions_under_way=under_way, calls_up=calls)
