"""A simulated server's outbound proxy named by a SIP URI, located per RFC 3263 (docs/design.md §1, §3).

SIP servers use the pool's FQDN as their outbound proxy (docs/design.md §1): a
server configured with ``sip:pool.test;transport=udp`` looks it up, sends to the
first target, and moves to the next one when that one fails.
:class:`OutboundProxy` does that for a :class:`~sipha.sim.server.SimulatedServer`:

* the URI is located by :class:`sipha.net.dns.SipResolver` (NAPTR, SRV in RFC 2782
  order, A/AAAA; RFC 3263 §4.1, §4.2), restricted to the transports the server
  listens on;
* each request carries the URI, with ``lr``, as its Route (RFC 3261 §8.1.2: "the
  UAC MUST ... put the outbound proxy URI in the Route header field");
* RFC 3263 §4.3: "failure occurs if the transaction layer reports a 503 error
  response or a transport failure of some sort ... [or] times out without ever
  having received any response": then the request goes to the next target as a
  new transaction (new branch).  ``failover_timeout`` shortens the wait for a
  silent target (a hung process) from Timer F to what sipha itself uses for its
  next hops (``failover-timeout``, docs/design.md §2, §3 rule 3); a target that
  failed is tried after the others for ``avoid`` seconds.

``sipha simulate-server`` sends its SIGHUP request through one
(:func:`sipha.sim.server.serve` takes an :class:`OutboundProxy` as its proxy).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from sipha.net.dns import SipResolveError, SipResolver
from sipha.sim.uas import host_text
from sipha.sip import SipParseError, SipUri, parse_uri
from sipha.sip.address import Address

if TYPE_CHECKING:
    from sipha.sim.server import SimulatedServer

SERVICE_UNAVAILABLE: Final = 503
FAILED_TARGET_AVOID: Final = 60.0
"""s a target that failed is tried after the others (as sipha's own next hops, docs/design.md §3)."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One target tried: its address, its final status (None: none came), how long it took."""

    target: Address
    status: int | None
    seconds: float


@dataclass(frozen=True, slots=True)
class Delivery:
    """What became of one request sent through the outbound proxy.

    ``status``: the final status that ended it (None: every target failed, or the
    lookup gave none: ``problem`` says why); ``attempts``: the targets tried, in order;
    ``seconds``: from the lookup to the end.
    """

    method: str
    request_uri: str
    proxy: str
    status: int | None
    attempts: tuple[Attempt, ...]
    seconds: float
    problem: str = ""

    @property
    def carrier(self) -> Address | None:
        """The target whose answer ended the request (None when none did)."""
        if self.status is None or not self.attempts:
            return None
        return self.attempts[-1].target

    def describe(self) -> str:
        """One log line: ``OPTIONS sip:... via sip:pool.test: 200 from udp:IP:PORT after 0.004 s; ...``."""
        outcome = "no answer" if self.status is None else str(self.status)
        line = f"{self.method} {self.request_uri} via {self.proxy}: {outcome}"
        carrier = self.carrier
        if carrier is not None:
            line += f" from {_text(carrier)}"
        line += f" after {self.seconds:.3f} s"
        failed = self.attempts if carrier is None else self.attempts[:-1]
        if failed:
            line += "; failed: " + ", ".join(
                f"{_text(attempt.target)} ({'no answer' if attempt.status is None else attempt.status}"
                f" after {attempt.seconds:.3f} s)"
                for attempt in failed
            )
        if self.problem:
            line += f"; {self.problem}"
        return line


class OutboundProxy:
    """Send a simulated server's requests through the proxy ``uri`` (a host name: RFC 3263).

    ``request_uri``: the Request-URI of :meth:`probe`'s OPTIONS (default: the proxy's
    own URI without parameters, a keepalive the proxy answers itself).
    ``failover_timeout``: seconds a target may stay silent before the next one is
    tried (None: Timer F, 64*T1).  ``clock``: monotonic seconds, for the durations.
    Raises ValueError for a ``uri`` that is not a SIP or SIPS URI.
    """

    def __init__(
        self,
        uri: str,
        resolver: SipResolver,
        *,
        request_uri: str | None = None,
        failover_timeout: float | None = None,
        avoid: float = FAILED_TARGET_AVOID,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        try:
            any_uri = parse_uri(uri)
        except SipParseError as error:
            raise ValueError(f"outbound proxy {uri!r}: not a URI ({error})") from None
        parsed = any_uri if isinstance(any_uri, SipUri) else None
        if parsed is None:  # a tel: or another scheme: nothing to locate
            raise ValueError(f"outbound proxy {uri!r}: a sip: or sips: URI is needed")
        if failover_timeout is not None and failover_timeout <= 0:
            raise ValueError(f"failover_timeout {failover_timeout}: more than 0 s, or None for Timer F")
        self.uri = parsed
        self.resolver = resolver
        self.route = str(parsed) if parsed.lr else f"{parsed};lr"
        port = "" if parsed.port is None else f":{parsed.port}"
        self.request_uri = request_uri or f"{parsed.scheme}:{parsed.host}{port}"
        self.failover_timeout = failover_timeout
        self.avoid = avoid
        self._clock = clock

    def __str__(self) -> str:
        return str(self.uri)

    async def send(self, server: SimulatedServer, method: str, request_uri: str) -> Delivery:
        """Send one non-INVITE request to ``request_uri`` through the proxy, target after target."""
        uri = self.uri
        start = self._clock()
        supported = frozenset(address.transport for address in server.listen_addresses)
        attempts: list[Attempt] = []

        def delivery(status: int | None, problem: str = "") -> Delivery:
            return Delivery(
                method, request_uri, str(uri), status, tuple(attempts), self._clock() - start, problem
            )

        try:
            targets = await self.resolver.targets(
                uri.maddr or uri.host,
                port=uri.port,
                transport=uri.transport,
                secure=uri.scheme == "sips",
                supported=supported,
            )
        except (SipResolveError, ValueError) as error:
            return delivery(None, str(error))
        for target in targets:
            if target.transport not in supported:
                continue  # an A/AAAA fallback on a transport this server does not listen on
            sent = self._clock()
            status = await server.send_request(
                target.address, method, request_uri, timeout=self.failover_timeout, route=self.route
            )
            attempts.append(Attempt(target.address, status, self._clock() - sent))
            if status is not None and status != SERVICE_UNAVAILABLE:
                return delivery(status)
            # RFC 3263 §4.3: a 503, a transport error or no answer: the next target, on a new
            # transaction; this one is tried last for a while (keyed by transport, IP and port).
            self.resolver.mark_failed(target, self.avoid)
        if not attempts:
            return delivery(None, f"no target on a transport this server listens on ({', '.join(supported)})")
        return delivery(attempts[-1].status)  # every target failed: the last one's outcome

    async def probe(self, server: SimulatedServer) -> str:
        """One OPTIONS to :attr:`request_uri` through the proxy (SIGHUP); the line to log."""
        return (await self.send(server, "OPTIONS", self.request_uri)).describe()


def _text(address: Address) -> str:
    return f"{address.transport.lower()}:{host_text(address.host)}:{address.port}"
