"""What the app records for the admin surface, beyond what the core and the monitor count.

Nothing here touches the network or imports aiohttp/prometheus_client: the app
feeds it from the dispatcher's flush (:class:`sipha.dispatch.Dispatcher`) and from
the pair monitor, and the admin server reads it at request time.  Every record is O(1):

* the last :data:`EVENT_HISTORY` HA events with their wall-clock time (the
  dashboard's timeline, ``events`` in /status);
* final responses sent upstream by method and class (``sipha_transactions_total``);
* OPTIONS round trips per pair and member, in histogram buckets;
* overload rejections (0 until the overload control increments it);
* what the last reload did (``POST /reload`` answers with it), and, in a worker process of
  ``[proxy] workers``, the parent that passes signals on to every worker.

HA events are also handed to the listeners of :meth:`Telemetry.subscribe` (``GET /events?follow``).
"""

from __future__ import annotations

import bisect
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from sipha.ha import (
    HaEvent,
    MemberBecameActive,
    PairEvent,
    PairOutOfService,
    PairRestored,
    PairUnknown,
    SplitBrain,
    SpreadChanged,
)
from sipha.ha.events import describe

EVENT_HISTORY: Final = 100
"""HA events kept in memory for /status and the dashboard."""

RTT_BUCKETS: Final[tuple[float, ...]] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
"""Upper bounds (s) of the OPTIONS round-trip histogram; +Inf is implied."""

_CLASSES: Final = ("1xx", "2xx", "3xx", "4xx", "5xx", "6xx")


EventListener = Callable[[dict[str, Any]], None]
"""Called with each HA event entry as it is recorded (in the loop; it must not block nor raise)."""


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What one reload did (SIGHUP, ``POST /reload``): applied with its changes, or refused.

    ``problems`` are the lines the reload logged when it refused the file or could not
    apply it (the running configuration kept); ``source`` names the configuration.
    """

    applied: bool
    source: str
    changes: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    def document(self) -> dict[str, Any]:
        """The JSON body of ``POST /reload``; a problem about a secret is shown without its value."""
        return {
            "applied": self.applied,
            "configuration": self.source,
            "changes": list(self.changes),
            "problems": [without_secret(problem) for problem in self.problems],
        }


SECRET_KEYS: Final = ("admin.token",)
"""Options whose value a response never shows (the configuration's problem lines quote values)."""


def without_secret(line: str) -> str:
    """``admin.token = 12: Input should be...`` -> ``admin.token: not valid (value not shown)``."""
    for key in SECRET_KEYS:
        if line.startswith(key) and line[len(key) : len(key) + 1] in {"", " ", ":", "."}:
            return f"{key}: not valid (value not shown here; see the log of sipha)"
    return line


def iso(wall: float) -> str:
    """A Unix time as ISO 8601 UTC with milliseconds: ``2024-05-01T12:00:00.123Z``."""
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_kind(event: HaEvent) -> str:
    """A short kind for the timeline: active, unknown, out-of-service, restored, split-brain..."""
    if isinstance(event, MemberBecameActive):
        return "active"
    if isinstance(event, PairUnknown):
        return "unknown"
    if isinstance(event, PairOutOfService):
        return "out-of-service"
    if isinstance(event, PairRestored):
        return "restored"
    if isinstance(event, SplitBrain):
        return "split-brain" if event.started else "split-brain-over"
    if isinstance(event, SpreadChanged):
        return "spread"  # an active-active pair's members for new Call-IDs (docs/design.md §2.2)
    return "proxy"


@dataclass(slots=True)
class RttHistogram:
    """Cumulative-at-export histogram of one member's OPTIONS round trips."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(RTT_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        """Count one round trip."""
        self.counts[bisect.bisect_left(RTT_BUCKETS, seconds)] += 1
        self.total += seconds

    @property
    def count(self) -> int:
        """Round trips observed."""
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus buckets: (le, cumulative count), +Inf last."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*RTT_BUCKETS, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out


class Telemetry:
    """Event history, transaction counts by method and class, RTT histograms, overload rejections."""

    def __init__(self, history: int = EVENT_HISTORY, *, worker: bool = False) -> None:
        self.events: deque[dict[str, Any]] = deque(maxlen=history)
        self._listeners: list[EventListener] = []
        self.transactions: dict[tuple[str, str], int] = {}
        """(method, class) -> final responses sent upstream (see :meth:`count_final`)."""
        self.rtt: dict[tuple[str, str], RttHistogram] = {}
        """(pair, member role) -> OPTIONS round trips."""
        self.overload_rejections = 0
        """Requests refused by the overload control (incremented there; 0 until it exists)."""
        self.last_reload: ReloadResult | None = None
        """What the last reload did (see :meth:`reloaded`)."""
        self.reloads = 0
        """Reloads done, applied or refused."""
        self.worker_parent: int | None = None
        """``worker``: the pid of the parent of ``[proxy] workers``, which passes SIGHUP and SIGTERM on
        to every worker: ``POST /reload`` and ``POST /drain`` signal it, so that all of them act, as
        ``kill -HUP`` / ``kill -TERM`` of the parent would.  Only when this process leads its own
        process group, as the supervisor makes each worker do: an app given a worker plan in a test
        (in the group of pytest's parent) signals no one."""
        if worker and os.getpgrp() == os.getpid():
            self.worker_parent = os.getppid()

    def record_event(self, event: HaEvent, wall: float | None = None) -> dict[str, Any]:
        """Keep one HA event (wall clock: now unless given); returns the stored entry."""
        wall = time.time() if wall is None else wall
        entry: dict[str, Any] = {
            "time": iso(wall),
            "timestamp": wall,
            "kind": event_kind(event),
            "pair": event.pair if isinstance(event, PairEvent) else None,
            "member": None,
            "event_id": event.event_id,
            "message": event.message,
        }
        member = getattr(event, "member", None)
        if isinstance(event, SplitBrain):
            member = event.other
        if member is not None:
            entry["member"] = describe(member)
            entry["role"] = member.role
        if isinstance(event, MemberBecameActive | PairUnknown):
            entry["reason"] = event.reason
        self.events.append(entry)
        for listener in list(self._listeners):
            listener(entry)
        return entry

    def subscribe(self, listener: EventListener) -> Callable[[], None]:
        """Call ``listener`` with every HA event recorded from now on; returns the unsubscribe call."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def reloaded(self, source: str, lines: list[str], *, applied: bool) -> bool:
        """Keep what a reload did: ``lines`` are its changes when ``applied``, else its problems.

        Returns ``applied``: the reload can ``return telemetry.reloaded(...)`` where it returned a bool.
        """
        self.reloads += 1
        if applied:
            self.last_reload = ReloadResult(applied=True, source=source, changes=tuple(lines))
        else:
            self.last_reload = ReloadResult(applied=False, source=source, problems=tuple(lines))
        return applied

    def count_final(self, method: str, status: int) -> None:
        """One final response sent upstream for a ``method`` transaction.

        A final response that a server transaction retransmits (UDP: the request
        or, for INVITE, the response was lost) counts again; that is rare.
        """
        klass = _CLASSES[status // 100 - 1] if 100 <= status <= 699 else "other"  # noqa: PLR2004
        key = (method, klass)
        self.transactions[key] = self.transactions.get(key, 0) + 1

    def observe_rtt(self, pair: str, role: str, seconds: float) -> None:
        """One OPTIONS round trip of ``pair``'s member ``role``."""
        histogram = self.rtt.get((pair, role))
        if histogram is None:
            histogram = self.rtt[(pair, role)] = RttHistogram()
        histogram.observe(seconds)
