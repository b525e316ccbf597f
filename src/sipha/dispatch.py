"""The per-message glue between the transports and the proxy core, compiled with the core.

Every datagram and every framed stream message goes through here: to another
worker if that one holds its transaction (:func:`sipha.proxy.affinity.owner`),
else into the core; then a *flush* sends what the core produced and re-arms the
one timer the core needs.

A UDP socket is read in batches (one wakeup, up to ``[proxy] udp-batch``
datagrams), and the flush runs once per batch rather than once per datagram:
the messages leave in the order the core produced them either way, a batch
is read within microseconds, and the core's next deadline is computed once.
Stream messages are flushed one by one (a TCP read may carry a single message
whose answer must not wait for another read).

It does no I/O of its own and keeps no clock: the transports send, and the
application (:mod:`sipha.app`) gives ``clock`` and ``arm_timer``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from sipha.proxy.affinity import owner
from sipha.proxy.via import response_fallback_destination
from sipha.sip import Response, SipParseError

if TYPE_CHECKING:
    from sipha.ha import HaEvent
    from sipha.net.workers import Handoff
    from sipha.proxy.core import ProxyCore
    from sipha.sip.address import Address

FINAL: int = 200
_STREAM_HOLDERS_MAX: int = 65536
"""Bound of the table of stream peers held by other workers (like the other address caches)."""
TIMER_GRID: float = 0.01
"""The core's timer fires on this grid (s): however many transaction timers fall due, the
loop wakes up for them at most 100 times a second.  The shortest SIP timer is T1 (500 ms)
and a failover-timeout is a second or more: 10 ms late is network jitter.  With thousands
of calls a second every call's transactions end at their own instant (Timers K, J, L, M),
and waking for each one cost a loop iteration, a callback and a read of every socket."""


class Transports(Protocol):
    """What the dispatcher needs of :class:`sipha.net.manager.TransportManager`."""

    def send(self, data: bytes, destination: Address) -> None:
        """Send (or queue) ``data``; failures are reported through the transport's callback."""

    def has_connection(self, destination: Address) -> bool:
        """Whether a stream connection to ``destination`` is open."""


def _no_clock() -> float:
    raise RuntimeError("the dispatcher has no clock yet")  # pragma: no cover - set at start


class Dispatcher:
    """Feed the core, hand messages over between workers, send, and keep the timer armed."""

    def __init__(
        self,
        *,
        on_event: Callable[[HaEvent], None],
        count_final: Callable[[str, int], None],
    ) -> None:
        self.core: ProxyCore | None = None
        """Set once the core is built; messages before that are dropped."""
        self.transports: Transports | None = None
        self.clock: Callable[[], float] = _no_clock
        """The loop's monotonic clock (``now`` for the core)."""
        self.arm_timer: Callable[[float], None] | None = None
        """Called with the core's next deadline when it is earlier than the armed one."""
        self.timer_at: float | None = None
        """The deadline the armed timer fires at, None when none is armed."""
        self.handoff: Handoff | None = None
        self.worker_index = 0
        self.worker_count = 1
        self.own_addresses: frozenset[Address] = frozenset()
        """A worker's own UDP addresses: what arrives there answers its own requests."""
        self._on_event = on_event
        self._count_final = count_final
        self._pending = False
        self._stream_holders: dict[Address, int] = {}
        """Stream peers whose connection another worker holds: that worker's index."""

    # ------------------------------------------------------------------ inputs

    def on_message(self, data: bytes, source: Address, local: Address) -> None:
        """A datagram or a framed stream message from the transports."""
        core = self.core
        if core is None:
            return
        udp = source.transport == "UDP"
        handoff = self.handoff
        if handoff is not None and (not udp or local not in self.own_addresses):
            # Another worker may hold this message's transaction: pass it on unread.  (What
            # comes to this worker's own UDP port answers its own requests.)  A stream
            # connection stays here; the owner's answers on it come back to be written.
            target = owner(data, self.worker_count)
            if target is not None and target != self.worker_index:
                handoff.send(target, data, source, local)
                return
        if udp:
            core.receive(data, source, self.clock())
            self._pending = True  # flushed at the end of the batch (on_batch_end)
            return
        core.receive(data, source, self.clock(), stream=True)
        self.flush()

    def on_handed_over(self, data: bytes, source: Address, local: Address, sender: int) -> None:
        """A message another worker (``sender``) received for a transaction of this one."""
        del local
        core = self.core
        if core is None:
            return
        if source.transport == "UDP":
            core.receive(data, source, self.clock())
        else:
            # From a connection ``sender`` holds: what this worker sends to that peer is
            # written there (§18.2.2: responses go back on the request's connection).
            holders = self._stream_holders
            if len(holders) >= _STREAM_HOLDERS_MAX:
                holders.clear()
            holders[source] = sender
            core.receive(data, source, self.clock(), stream=True)
        self._pending = True

    def on_handed_send(self, data: bytes, destination: Address, fallback: Address) -> None:
        """Write what another worker sends to a peer of a connection this worker holds.

        The connection may have closed meanwhile: then ``fallback``, where the sender would
        have sent it without one (§18.2.2 for a response; the peer itself for a request).
        """
        transports = self.transports
        if transports is None:
            return
        transports.send(data, destination if transports.has_connection(destination) else fallback)

    def on_pair_news(self, pair: str, what: str, role: str, at: float, sender: int) -> None:
        """Another worker (``sender``) saw ``role`` of ``pair`` become ``active`` or be ``lost`` at ``at``."""
        del sender
        core = self.core
        if core is None:
            return
        core.pair_news(pair, what, role, at, self.clock())
        self._pending = True  # flushed at the end of the hand-over batch

    def on_batch_end(self) -> None:
        """A socket's batch of datagrams has been read: send what they produced."""
        if self._pending:
            self.flush()

    # ------------------------------------------------------------------ output

    def flush(self) -> None:
        """Send what the core produced and arm the timer for its next deadline."""
        self._pending = False
        core = self.core
        transports = self.transports
        if core is None or transports is None:
            return
        if core.events:
            for event in core.drain_events():
                self._on_event(event)
        for action in core.drain():
            destination = action.destination
            message = action.message
            response = message if isinstance(message, Response) else None
            if response is not None and action.key is not None and response.status >= FINAL:
                # A final response of a server transaction: one transaction answered.
                with contextlib.suppress(SipParseError):
                    self._count_final(response.cseq.method, response.status)
            if destination.reliable and not transports.has_connection(destination):
                fallback = destination
                if response is not None:
                    # §18.2.2: the request's connection is gone: "the server SHOULD open a
                    # connection to the IP address in the received parameter ... using the
                    # port in the sent-by value".
                    with contextlib.suppress(SipParseError):
                        fallback = response_fallback_destination(response.top_via, destination)
                holder = self._stream_holders.get(destination)
                if holder is not None and self.handoff is not None:
                    # The connection is another worker's (the request was handed over from it).
                    self.handoff.send_out(holder, message.to_bytes(), destination, fallback)
                    continue
                destination = fallback
            transports.send(message.to_bytes(), destination)
        deadline = core.next_deadline()
        if deadline is None:
            return
        # The next point of the grid, never before the deadline (floating-point rounding).
        fire_at = max(math.ceil(deadline / TIMER_GRID) * TIMER_GRID, deadline)
        timer_at = self.timer_at
        if timer_at is not None and timer_at <= fire_at:
            return  # the armed timer fires first; it re-arms for what is left
        self.timer_at = fire_at
        if self.arm_timer is not None:
            self.arm_timer(fire_at)
