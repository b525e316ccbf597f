"""The process's run time: the event loop it runs on, and its garbage-collection policy."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Final

log = logging.getLogger("sipha")

IDLE_COLLECTION_EVERY: Final = 60.0
"""At most this often (s), a full garbage collection while no transaction is under way."""


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on the standard library's event loop (epoll on Linux).

    Not uvloop: libuv stops watching a socket for good when poll reports an error
    condition (POLLERR), and that is exactly how the kernel signals the ICMP errors
    sipha asks for with IP_RECVERR (a dead UDP peer's "port unreachable", RFC 3261
    §18.4).  One gone phone would leave the proxy deaf on UDP.  The UDP path reads
    raw sockets in batches, so the standard loop costs little there.
    """
    tune_gc()
    asyncio.run(main)


def tune_gc() -> None:
    """No automatic cyclic garbage collection: reference counting frees what sipha allocates.

    A proxy at a few thousand calls/s holds tens of thousands of transactions (kept up
    to 32 s, some 140 tracked objects per call): one full collection then scans millions
    of objects and stops the event loop for seconds, and the young ones cost ~20 % of the
    CPU (0.52 -> 0.42 ms per call measured at 1,500 calls/s).  The proxy core makes no
    reference cycles (tests/proxy/test_no_cycles.py); what the event loop or the admin
    HTTP may leave in cycles is collected when the proxy is idle (:func:`collect_when_idle`).
    Everything imported so far is frozen out of collection.
    """
    gc.collect()
    gc.freeze()
    gc.disable()


def collect_when_idle(transactions_alive: int, now: float, last: float) -> bool:
    """Whether to collect now: nothing alive to scan, and not collected for a while."""
    return transactions_alive == 0 and now - last >= IDLE_COLLECTION_EVERY


async def collect_garbage_when_idle(alive: Callable[[], int], clock: Callable[[], float]) -> None:
    """The cyclic garbage collection :func:`tune_gc` left out, when it costs nothing.

    ``alive``: how many transactions are alive now (what a collection would scan).
    Runs until cancelled.
    """
    last = clock()
    while True:
        await asyncio.sleep(IDLE_COLLECTION_EVERY / 4)
        if collect_when_idle(alive(), clock(), last):
            found = gc.collect()
            last = clock()
            if found:
                log.debug("idle garbage collection: %d unreachable objects freed", found)
