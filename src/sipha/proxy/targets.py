"""The RFC 3263 targets of a next hop named by a host name, and failover across them.

docs/design.md §3 rule 3 forwards a request from a pair member to its Route or
Request-URI.  When that next hop is a host name, RFC 3261 §16.6 step 7 wants
the ordered set of (address, port, transport) tuples RFC 3263 gives for it,
tried in order.  The core is sans-IO, so it does not look names up:
:class:`TargetPolicy` puts out a :class:`Lookup`, holds the request meanwhile
(state Locating, bounded by 64*T1), and the driver answers with
``ProxyCore.located(key, targets, now)`` (the lookups run on
:class:`sipha.net.dns.SipResolver` in :mod:`sipha.net.locate`).  The request
then goes to the first target; the others are kept on the response context.

A target fails (RFC 3263 §4.3) on a 503, a transport error, or Timer B/F
without any response; and, as a pair member does (docs/design.md §2), when it
answers nothing within failover-timeout.  The request then goes to the next
target on a new branch; the one that failed is reported to the driver
(:attr:`TargetPolicy.failed`), whose resolver tries it last for a while, keyed
by transport, IP and port: the other servers behind the same name are not
demoted.  When no target is left, the caller gets 408 (§16.6 step 7).

The ACK of a 2xx to a host name is located the same way and sent to the first
target (an ACK is never retried).

A TLS target carries the SIP domain it was located from (``Address.domain``,
set by :func:`sipha.net.locate.target_address`): the core passes it on untouched,
and the transports send it as SNI and check it in the certificate (RFC 5922 §4).
Part of the address, it keeps a target that failed its verification apart from
the same IP and port reached for another domain.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from sipha.proxy.context import Input, ResponseContext, State, Timer
from sipha.proxy.routing import Forward, Locate
from sipha.proxy.settings import Counters, ProxySettings
from sipha.sip import Request, Response
from sipha.sip.address import Address
from sipha.txn import TransactionLayer

PRUNE_EVERY: Final = 1.0
"""s between two prunings of the lookups nobody answered."""
HEARD_KEPT: Final = 4096
"""At most this many targets' last answer times are remembered (the table is cleared when full)."""


@dataclass(frozen=True, slots=True)
class Lookup:
    """A next hop to locate (RFC 3263 §4); the driver answers ``ProxyCore.located(key, ...)``.

    ``host``, ``port``, ``transport`` and ``secure`` are the :class:`~sipha.proxy.routing.Locate`
    of the next hop; ``supported``: the transports the request can be sent on (those we
    have a Via for), to which NAPTR and SRV are restricted (§4.1).
    """

    key: int
    host: str
    port: int | None
    transport: str | None
    secure: bool
    supported: frozenset[str]


@dataclass(frozen=True, slots=True)
class _Ack:
    """An ACK for a 2xx waiting for the targets of its next hop."""

    request: Request
    source: Address


class Host(Protocol):
    """What the policy needs of the response contexts (:class:`~sipha.proxy.responses.ResponseContexts`)."""

    txn: TransactionLayer

    def step(
        self, context: ResponseContext, event: Input, now: float, message: Response | None = None
    ) -> bool:
        """Feed ``event`` to ``context`` (its table row); False when its state ignores it."""
        ...

    def forward(self, context: ResponseContext, decision: Forward, now: float) -> None:
        """Send the request of ``context`` on a new branch (§16.6)."""
        ...

    def arm(self, context: ResponseContext, timer: Timer, deadline: float) -> None:
        """Arm one of the context's timers."""
        ...

    def prepare(self, request: Request, source: Address, destination: Address, *, fork: int) -> Request:
        """§16.6 steps 1 to 8: the copy of ``request`` to send to ``destination``."""
        ...


class TargetPolicy:
    """Requests to next hops named by host names: their lookups, their targets, failover across them."""

    def __init__(self, host: Host, settings: ProxySettings, counters: Counters) -> None:
        self.host = host
        self.counters = counters
        self.lookups: list[Lookup] = []
        """Lookups not drained yet (:meth:`drain`)."""
        self.failed: list[Address] = []
        """Targets that failed since the last :meth:`drain`: the resolver tries them last for a while."""
        self._pending: dict[int, tuple[float, ResponseContext | _Ack]] = {}
        # key -> (when asked, what waits for the answer)
        self._keys: Callable[[], int] = itertools.count(1).__next__
        self._heard: dict[Address, float] = {}
        """When each target last answered any request (a silent branch is judged by it)."""
        self._pruned = 0.0
        self.settings = settings
        self._supported = frozenset(settings.via)

    def reconfigure(self, settings: ProxySettings) -> None:
        """SIGHUP: new settings (failover-timeout, our transports); lookups under way go on."""
        self.settings = settings
        self._supported = frozenset(settings.via)

    @property
    def limit(self) -> float:
        """How long a request waits for its lookup: 64*T1, the span of Timer F."""
        return 64 * self.settings.timers.t1

    def drain(self) -> tuple[list[Lookup], list[Address]]:
        """The lookups to run and the targets that failed, since the last call."""
        lookups, self.lookups = self.lookups, []
        failed, self.failed = self.failed, []
        return lookups, failed

    # ------------------------------------------------------------------ lookups

    def locate(self, context: ResponseContext, locate: Locate, now: float) -> None:
        """§16.6 step 7: hold ``context`` while the targets of its next hop are looked up."""
        context.locate = locate
        self.host.step(context, Input.LOCATE, now)
        self._ask(locate, context, now)
        self.host.arm(context, Timer.HOLD, now + self.limit)

    def locate_ack(self, ack: Request, source: Address, locate: Locate, now: float) -> None:
        """An ACK for a 2xx to a host name: sent to the first target, once known (§13.2.2.4)."""
        self._ask(locate, _Ack(ack, source), now)

    def _ask(self, locate: Locate, waiting: ResponseContext | _Ack, now: float) -> None:
        if self._pending and now >= self._pruned + PRUNE_EVERY:
            # Answers that never came (a driver that stopped): their requests were answered
            # by the lookup limit already; the entries go too.
            oldest = now - self.limit
            self._pending = {key: entry for key, entry in self._pending.items() if entry[0] > oldest}
            self._pruned = now
        key = self._keys()
        self._pending[key] = (now, waiting)
        self.lookups.append(
            Lookup(key, locate.host, locate.port, locate.transport, locate.secure, self._supported)
        )

    def located(self, key: int, targets: Sequence[Address], now: float) -> None:
        """The driver's answer to lookup ``key``: the targets in order (none: the name gave none)."""
        entry = self._pending.pop(key, None)
        if entry is None:
            return
        waiting = entry[1]
        if not targets:
            self.counters.targets_unresolved += 1
        if isinstance(waiting, _Ack):
            if targets:
                target = targets[0]
                self.host.txn.send_stateless(
                    self.host.prepare(waiting.request, waiting.source, target, fork=0), target
                )
            return
        context = waiting
        if context.state is not State.LOCATING:
            return  # answered meanwhile: a CANCEL, the lookup limit
        if not targets:
            self.host.step(context, Input.EXHAUSTED, now)
            return
        context.targets = tuple(targets[1:])
        self._send(context, targets[0], now)

    # ------------------------------------------------------------------ failover across the targets

    def answered(self, context: ResponseContext, now: float) -> None:
        """A response on ``context``'s branch: its target is alive."""
        destination = context.destination
        if destination is not None:  # pragma: no branch - a branch has a destination
            heard = self._heard
            if len(heard) >= HEARD_KEPT and destination not in heard:
                heard.clear()
            heard[destination] = now

    def failed_branch(self, context: ResponseContext, now: float, *, response: bool = False) -> bool:
        """A failure of ``context``'s branch per RFC 3263 §4.3; False when it is not one here.

        ``response``: the failure is a 503 (else a transport error, or Timer B/F).  Before
        any response (Calling) every failure counts; after a provisional one (Proceeding)
        only a 503 does: a timeout counts only "without ever having received any response".
        """
        state = context.state
        if state is not State.CALLING and (state is not State.PROCEEDING or not response):
            return False
        self._report(context)
        if not context.targets:
            self.host.step(context, Input.EXHAUSTED, now)
            return True
        self.host.step(context, Input.NEXT_TARGET, now)
        self._next(context, now)
        return True

    def silent(self, context: ResponseContext, now: float) -> None:
        """failover-timeout fired on a branch that never answered (docs/design.md §3)."""
        if context.state is not State.CALLING or not context.targets:
            return
        timeout = self.settings.failover_timeout
        destination = context.destination
        if destination is not None and self._heard.get(destination, -math.inf) > now - timeout:
            # The target answered other requests meanwhile: this answer is late or lost, and the
            # branch (retransmitting) stays; judged again one failover-timeout later.
            self.host.arm(context, Timer.FAILOVER, now + timeout)
            return
        self._report(context)
        self.host.step(context, Input.TARGET_SILENT, now)
        self._next(context, now)

    def _report(self, context: ResponseContext) -> None:
        if context.destination is not None:  # pragma: no branch - a branch has a destination
            self.failed.append(context.destination)

    def _next(self, context: ResponseContext, now: float) -> None:
        """The request goes to the next target, on a new branch (RFC 3263 §4.3)."""
        target, context.targets = context.targets[0], context.targets[1:]
        self.counters.target_failovers += 1
        self._send(context, target, now)

    def _send(self, context: ResponseContext, target: Address, now: float) -> None:
        self.host.forward(context, Forward(target), now)
        timeout = self.settings.failover_timeout
        if context.targets and timeout > 0 and context.state is State.CALLING:
            # Another target is left to go to: silence is judged at failover-timeout (the
            # last target has the whole of Timer B/F).
            self.host.arm(context, Timer.FAILOVER, now + timeout)
