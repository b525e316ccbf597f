"""The one asyncio driver of a sans-IO endpoint (docs/design.md §6), compiled with the core.

A sans-IO endpoint (the proxy core, a simulated SIP server) takes three inputs,
each with ``now``: a message received (a datagram, or a message framed on a
stream), a transport error towards a destination, and its timers falling due.
:class:`Driver` is the only code that gives it those: then it *flushes*, that
is drains what the endpoint produced, hands it to the transports, and arms the
endpoint's one timer at its next deadline.

A UDP socket is read in batches (one wakeup, up to ``[proxy] udp-batch``
datagrams), and the flush runs once per batch rather than once per datagram:
the messages leave in the order the endpoint produced them either way, a batch
is read within microseconds, and the next deadline is computed once.  A stream
message is flushed at once (a TCP read may carry a single message whose answer
must not wait for another read).  When the timer fires, what the sockets already
hold is read first: under load an answer can wait in a socket buffer behind a
backlog, and a timer judged first would take it for silence.

The endpoint and the transports are protocols: this module knows neither the
proxy nor the transaction layer.  What one endpoint needs on top (the proxy's
hand-over between worker processes, its §18.2.2 fallback) is a subclass that
overrides :meth:`Driver.on_message`, :meth:`Driver.send` or :meth:`Driver.flush`
(:class:`sipha.dispatch.Dispatcher`).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from sipha.net.manager import TransportManager
    from sipha.sip import Request, Response
    from sipha.sip.address import Address

BACKLOG_LIMIT: Final = 20_000
"""At most this many datagrams already received are read before the timers are judged."""


class Outgoing(Protocol):
    """A message the endpoint wants sent (:class:`sipha.txn.SendMessage`)."""

    @property
    def message(self) -> Request | Response:
        """The message, serialised by the driver."""

    @property
    def destination(self) -> Address:
        """Where it goes: transport, host, port."""


class Endpoint(Protocol):
    """A sans-IO endpoint: bytes and ``now`` in; messages to send and a next deadline out."""

    def receive(self, data: bytes, source: Address, now: float, *, stream: bool = False) -> None:
        """One message from ``source``: a datagram, or (``stream``) a message framed on a connection."""

    def transport_error(self, destination: Address, now: float) -> None:
        """The transport could not reach ``destination`` (ICMP, refused or reset connection)."""

    def handle_timers(self, now: float) -> None:
        """Fire every timer due at ``now``."""

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timers` must be called next, or None."""

    def drain(self) -> Sequence[Outgoing]:
        """The messages to send, in order, since the last call."""


class Transports(Protocol):
    """What the driver needs of :class:`sipha.net.manager.TransportManager`."""

    def send(self, data: bytes, destination: Address) -> None:
        """Send (or queue) ``data``; failures are reported through the transport's callback."""

    def send_probe(self, data: bytes, destination: Address) -> None:
        """Send a pair monitor's probe from the monitor's own socket (where there is one)."""
        ...

    def has_connection(self, destination: Address) -> bool:
        """Whether a stream connection to ``destination`` is open."""

    def alias(self, connection: Address, host: str, port: int) -> bool:
        """RFC 5923: use the TLS connection from ``connection`` for requests to ``host:port`` too."""


class Tracer(Protocol):
    """Sees every SIP message from and to the network ([trace], :class:`sipha.trace.tracer.MessageTracer`)."""

    def received(self, data: bytes, source: Address, local: Address) -> None:
        """A message the transports gave the driver, as received."""

    def sent(self, data: bytes, destination: Address, *, probe: bool = False) -> None:
        """A message handed to the transports (``probe``: from the pair monitor's socket)."""


def loop_clock(loop: asyncio.AbstractEventLoop) -> Callable[[], float]:
    """``loop``'s clock, as the endpoint's ``now`` and the timer's ``call_at`` must share it.

    The standard loop's ``time()`` is ``time.monotonic()`` called from an interpreted method:
    the function itself is the same clock at a tenth of the cost, and it is read for every
    message (some fourteen times per call).  A loop with its own clock keeps it.
    """
    if type(loop).time is asyncio.BaseEventLoop.time:
        return time.monotonic
    return loop.time


def _no_clock() -> float:
    raise RuntimeError("the driver has no clock yet")  # pragma: no cover - set at start


class Driver:
    """Feed one sans-IO endpoint, send what it produced, keep its one timer armed.

    ``grid``: the timer fires on this grid (s), never before the deadline, so that
    deadlines close together share one wakeup; 0 fires at each deadline exactly.
    :meth:`attach` runs it on an event loop; without it (the unit tests) ``clock``
    and ``arm_timer`` are whatever the caller sets.
    """

    def __init__(self, *, grid: float = 0.0) -> None:
        self.endpoint: Endpoint | None = None
        """Set once the endpoint is built; input before that is dropped."""
        self.transports: Transports | None = None
        self.clock: Callable[[], float] = _no_clock
        """The loop's monotonic clock (``now`` for the endpoint)."""
        self.arm_timer: Callable[[float], None] | None = None
        """Called with the next point the timer must fire at, when that is earlier than the armed one."""
        self.timer_at: float | None = None
        """When the armed timer fires, None when none is armed."""
        self.grid = grid
        self.tracer: Tracer | None = None
        """[trace] on: every message received and sent; None (the default) costs one check each."""
        self._pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._read_pending: Callable[[int], int] | None = None

    def attach(self, loop: asyncio.AbstractEventLoop, transports: TransportManager) -> None:
        """Run on ``loop`` (its clock, its timer) and send through ``transports``."""
        self._loop = loop
        self.clock = loop_clock(loop)
        self.arm_timer = self._call_at
        self.transports = transports
        self._read_pending = transports.read_pending

    def close(self) -> None:
        """Disarm the timer (the endpoint's deadlines no longer matter)."""
        timer = self._timer
        if timer is not None:
            timer.cancel()
        self._timer = None
        self.timer_at = None

    # ------------------------------------------------------------------ inputs

    def on_message(self, data: bytes, source: Address, local: Address) -> None:
        """A datagram (sent at the end of its batch) or a framed stream message (sent at once)."""
        if self.tracer is not None:
            self.tracer.received(data, source, local)
        if source.transport == "UDP":
            self.receive(data, source)
            return
        self.receive(data, source, stream=True)
        self.flush()

    def receive(self, data: bytes, source: Address, *, stream: bool = False) -> None:
        """Feed one message to the endpoint; what it produces leaves at the next flush."""
        endpoint = self.endpoint
        if endpoint is None:
            return
        if stream:
            endpoint.receive(data, source, self.clock(), stream=True)
        else:  # every datagram: no keyword argument to parse
            endpoint.receive(data, source, self.clock())
        self._pending = True

    def on_batch_end(self) -> None:
        """A socket's batch has been read: send what it produced."""
        if self._pending:
            self.flush()

    def on_transport_error(self, destination: Address, error: OSError | str) -> None:
        """An ICMP error, a refused connect, a reset connection (RFC 3261 §18.4)."""
        del error
        endpoint = self.endpoint
        if endpoint is None:
            return
        endpoint.transport_error(destination, self.clock())
        self.flush()

    def on_timer(self) -> None:
        """The armed timer fired: messages already received first, then the endpoint's timers."""
        self._timer = None
        self.timer_at = None
        endpoint = self.endpoint
        if endpoint is None:
            return
        self.read_backlog()
        endpoint.handle_timers(self.clock())
        self.flush()

    def read_backlog(self) -> None:
        """Read what the sockets already hold (bounded), before timers are judged."""
        read_pending = self._read_pending
        if read_pending is not None:
            read_pending(BACKLOG_LIMIT)

    # ------------------------------------------------------------------ output

    def flush(self) -> None:
        """Send what the endpoint produced and arm the timer for its next deadline."""
        self._pending = False
        endpoint = self.endpoint
        transports = self.transports
        if endpoint is None or transports is None:
            return
        for output in endpoint.drain():
            self.send(output, transports)
        deadline = endpoint.next_deadline()
        if deadline is None:
            return
        grid = self.grid
        fire_at = deadline
        if grid > 0.0:
            # The next point of the grid, never before the deadline (floating-point rounding).
            fire_at = max(math.ceil(deadline / grid) * grid, deadline)
        timer_at = self.timer_at
        if timer_at is not None and timer_at <= fire_at:
            return  # the armed timer fires first; it re-arms for what is left
        self.timer_at = fire_at
        arm_timer = self.arm_timer
        if arm_timer is not None:
            arm_timer(fire_at)

    def send(self, output: Outgoing, transports: Transports) -> None:
        """Hand one message to the transports."""
        data = output.message.to_bytes()
        transports.send(data, output.destination)
        if self.tracer is not None:
            self.tracer.sent(data, output.destination)

    def _call_at(self, fire_at: float) -> None:
        loop = self._loop
        if loop is None:  # pragma: no cover - set by attach()
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(fire_at, self.on_timer)
