"""The instance behind the admin HTTP: ``[proxy] workers`` reported as one sipha (docs/design.md §4).

Each worker process counts what it handles.  Worker 0's admin HTTP (``[admin] listen``) reports
the *instance*: on each /status or /metrics request it asks every other worker for its counters
over the hand-over channel (:class:`sipha.net.workers.Handoff`, packets ``C`` and ``K``), waits
at most :data:`GATHER_TIMEOUT` for the answers without blocking the loop (the request awaits a
future; a worker answers from its loop in microseconds), and sums them.  Nothing is sent per SIP
message.  A worker that does not answer in time (dead, restarting, its loop stuck) is reported
with the last counters it gave, marked ``answered: false``: a scrape never waits longer.

The counters stay monotonic when a worker other than 0 is restarted: once its successor answers
(another pid), the last counters of the old one join a base added to every sum, so Prometheus
never sees an instance counter go down (a decrease reads as a reset and inflates ``rate()``).  A
restart of worker 0 starts them all from 0, as a restart of the instance does.  Gauges (calls in
flight, open connections) are the sum of each worker's last value.  The pairs (state, active
member, OPTIONS and their round trips, switchovers) are worker 0's, the prober of the instance
(docs/design.md §2 "One prober per instance"), which the other workers follow; requests from the
backup that were not followed are summed (each worker counts those it received).

The admin HTTP of worker N > 0 (its own port, the admin port + N) reports that worker alone
(``scope``: ``worker N``), for debugging.  A single process (``workers = 1``) is its instance.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from sipha.admin.telemetry import Telemetry
from sipha.net.workers import MAX_CONTROL_PAYLOAD, Handoff
from sipha.proxy.core import ProxyCore
from sipha.trace.export import Tracing

GATHER_TIMEOUT: Final = 0.5
"""s: how long worker 0's admin HTTP waits for the other workers' counters on a request."""
GAUGES: Final = frozenset({"connections_open", "tls_connections_open"})
"""Transport counters that are gauges (:class:`sipha.net.stats.TransportStats`): not monotonic."""

Snapshot = dict[str, Any]
"""One worker's counters (:func:`local_snapshot`), as carried between workers (JSON)."""


class CounterSource(Protocol):
    """What a worker's counters are read from (:class:`sipha.app.ProxyApp`)."""

    core: ProxyCore | None
    telemetry: Telemetry
    trace: Tracing

    def monotonic(self) -> float:
        """The loop's clock."""
        ...

    @property
    def started_at(self) -> float | None:
        """:meth:`monotonic` time of the start, None before."""
        ...

    def transport_counters(self) -> dict[str, int]:
        """The transports' counters by name (and the hand-over's, with workers)."""
        ...

    def tls_status(self) -> dict[str, Any] | None:
        """The /status "tls" block, None without TLS."""
        ...


def local_snapshot(source: CounterSource, worker: int = 0) -> Snapshot:
    """The counters of this process: ``gauges`` (summed as they are), ``counters`` (monotonic)."""
    core = source.core
    core_counters: dict[str, int] = {}
    in_flight = 0
    claims: dict[str, int] = {}
    if core is not None:
        core_counters = {f.name: getattr(core.counters, f.name) for f in dataclasses.fields(core.counters)}
        core_counters["transactions_refused"] = core.admission.refused  # [limits] max-transactions
        in_flight = len(core.txn)
        if core.monitor is not None:
            pairs = core.monitor.pairs.items()
            claims = {name: pair.status().counters.claims_rejected for name, pair in pairs}
    core_counters.setdefault("overload_rejections", source.telemetry.overload_rejections)
    transport = source.transport_counters()
    gauges = {name: transport.pop(name) for name in sorted(GAUGES) if name in transport}
    gauges["transactions_in_flight"] = in_flight
    tls = source.tls_status()
    trace = source.trace.status()
    started = source.started_at
    return {
        "worker": worker,
        "pid": os.getpid(),
        "uptime": 0.0 if started is None else round(source.monotonic() - started, 3),
        "draining": core is not None and core.draining,
        "gauges": gauges,
        "counters": {
            "core": core_counters,
            "transactions": {
                f"{method} {klass}": count for (method, klass), count in source.telemetry.transactions.items()
            },
            "transport": transport,
            "tls_handshakes": {} if tls is None else dict(tls["handshakes"]),
            "hep_sent": trace["hep_sent"],
            "hep_dropped": dict(trace["hep_dropped"]),
            "takeover_requests_rejected": claims,
        },
    }


def add_into(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Add ``part``'s numbers into ``total``, key by key, nested dicts alike; returns ``total``."""
    for key, value in part.items():
        if isinstance(value, dict):
            add_into(total.setdefault(key, {}), value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value
    return total


def encode(snapshot: Snapshot) -> bytes:
    """A snapshot as a ``K`` payload (compressed JSON); without its per-method detail if too large."""
    payload = zlib.compress(json.dumps(snapshot, separators=(",", ":")).encode(), 1)
    if len(payload) > MAX_CONTROL_PAYLOAD:  # thousands of pairs or methods: keep the sums that matter
        counters = {**snapshot["counters"], "transactions": {}, "takeover_requests_rejected": {}}
        payload = zlib.compress(json.dumps({**snapshot, "counters": counters, "truncated": True}).encode(), 1)
    return payload


def decode(payload: bytes) -> Snapshot:
    """A ``K`` payload back to a snapshot; ValueError when it is not one."""
    try:
        document = json.loads(zlib.decompress(payload))
    except zlib.error as error:
        raise ValueError(str(error)) from error
    if not isinstance(document, dict) or not isinstance(document.get("counters"), dict):
        raise ValueError("not a counters snapshot")  # noqa: TRY004 - callers catch ValueError
    return document


@dataclass(slots=True)
class WorkerReport:
    """One worker's part of an :class:`Instance`: its snapshot, and whether it answered this time."""

    index: int
    snapshot: Snapshot | None
    """None: never heard from (since worker 0 started)."""
    answered: bool


@dataclass(slots=True)
class Instance:
    """What /status and /metrics report: the sums, and the workers they were summed over."""

    scope: str
    """``instance`` (a single process, or worker 0 of ``[proxy] workers``), or ``worker N``."""
    totals: Snapshot
    """``gauges`` and ``counters``, summed (a single snapshot's, for one process)."""
    workers: list[WorkerReport] = field(default_factory=list)
    """With ``[proxy] workers`` on worker 0: every worker, 0 first; else empty."""

    @property
    def draining(self) -> bool:
        """Whether any worker reported is draining (SIGTERM)."""
        return bool(self.totals.get("draining"))


class WorkerCounters:
    """One worker's end of the counters exchange (:class:`~sipha.net.workers.Handoff` ``C``/``K``).

    Every worker answers the questions of the others with ``snapshot()``; worker 0 asks
    (:meth:`gather`) and keeps, per worker, the last snapshot it got and the base of the
    replaced ones (see the module).
    """

    def __init__(self, handoff: Handoff, count: int, snapshot: Callable[[], Snapshot]) -> None:
        self.index = handoff.index
        self.count = count
        self._handoff = handoff
        self._snapshot = snapshot
        self._seq = 0
        self._asked: dict[int, tuple[asyncio.Future[None], dict[int, Snapshot]]] = {}
        self.last: dict[int, Snapshot] = {}
        """Per other worker, the last snapshot it answered with."""
        self.retired: dict[str, Any] = {}
        """The counters of workers since replaced (restarted), added to every sum."""
        handoff.on_counters_question = self._answer
        handoff.on_counters = self._received

    def _answer(self, asker: int, seq: int) -> None:
        self._handoff.send_counters(asker, seq, encode(self._snapshot()))

    def _received(self, sender: int, seq: int, payload: bytes) -> None:
        waiting = self._asked.get(seq)
        if waiting is None:
            return  # after its question's time: that request went on without it
        try:
            snapshot = decode(payload)
        except ValueError:  # pragma: no cover - written by a worker of this process group
            return
        future, answers = waiting
        answers[sender] = snapshot
        if len(answers) >= self.count - 1 and not future.done():
            future.set_result(None)

    async def gather(self, timeout: float = GATHER_TIMEOUT) -> dict[int, Snapshot]:
        """Ask every other worker; the snapshots that came within ``timeout`` s, by worker."""
        self._seq += 1
        seq = self._seq
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        answers: dict[int, Snapshot] = {}
        self._asked[seq] = (future, answers)
        try:
            asked = [index for index in range(self.count) if index != self.index]
            sent = sum(self._handoff.ask_counters(index, seq) for index in asked)
            if sent:
                await asyncio.wait({future}, timeout=timeout)
        finally:
            del self._asked[seq]
            future.cancel()
        return dict(answers)

    def instance(self, own: Snapshot, answers: dict[int, Snapshot]) -> Instance:
        """Worker 0's view: ``own`` and the ``answers`` summed, with the last known of the silent."""
        reports = [WorkerReport(self.index, own, answered=True)]
        for index in range(self.count):
            if index == self.index:
                continue
            snapshot = answers.get(index)
            previous = self.last.get(index)
            if snapshot is not None:
                if previous is not None and previous.get("pid") != snapshot.get("pid"):
                    add_into(self.retired, previous["counters"])  # restarted: keep what it had counted
                self.last[index] = snapshot
            reports.append(WorkerReport(index, self.last.get(index), answered=snapshot is not None))
        totals: Snapshot = {"counters": add_into({}, self.retired), "gauges": {}}
        for report in reports:
            if report.snapshot is not None:
                add_into(totals["counters"], report.snapshot["counters"])
                add_into(totals["gauges"], report.snapshot["gauges"])
                totals["draining"] = totals.get("draining", False) or bool(report.snapshot.get("draining"))
        return Instance("instance", totals, reports)


class InstanceSource(CounterSource, Protocol):
    """A :class:`CounterSource` that may be a worker of ``[proxy] workers``."""

    workers: WorkerCounters | None
    """Set in a worker process: its end of the counters exchange."""


def local_instance(source: InstanceSource) -> Instance:
    """No asking: the instance of a single process, or the own view of ``worker N``."""
    exchange = source.workers
    index = 0 if exchange is None else exchange.index
    snapshot = local_snapshot(source, index)
    scope = "instance" if exchange is None else f"worker {index}"
    reports = [] if exchange is None else [WorkerReport(index, snapshot, answered=True)]
    return Instance(scope, snapshot, reports)


async def gather_instance(source: InstanceSource, timeout: float = GATHER_TIMEOUT) -> Instance:
    """What /status and /metrics report now: see the module."""
    exchange = source.workers
    if exchange is None or exchange.index != 0:
        return local_instance(source)
    answers = await exchange.gather(timeout)
    return exchange.instance(local_snapshot(source, 0), answers)
