"""The proxy core's RFC 3263 lookups, run on the event loop (docs/design.md §3 rule 3).

The sans-IO core does not look names up: for a next hop named by a host name
it puts out a lookup (``sipha.proxy.targets.Lookup``) and waits for its targets.
:class:`Locator` runs each one on :class:`~sipha.net.dns.SipResolver` (NAPTR,
SRV, A/AAAA; TTL cache, shared queries, per-query timeout) as a task of its
own, so that no lookup ever blocks the loop, and hands the targets back through
``on_located(key, addresses)``; a lookup that fails gives no address (the core
answers 408), and is logged at most once a minute per host.  The targets the
core found failed (RFC 3263 §4.3) are marked failed in the resolver, for
:data:`FAILED_TARGET_AVOID` seconds: tried last, by transport, IP and port.

A TLS target carries the SIP domain it was located from (:func:`target_address`):
the transports send it as SNI and check it in the certificate (RFC 5922 §4).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final, Protocol

from sipha.net.dns import SipResolveError, SipResolver, Target
from sipha.net.srv import ip_literal
from sipha.sip.address import Address

log = logging.getLogger("sipha")

FAILED_TARGET_AVOID: Final = 60.0
"""s a target that failed is tried after the others of its name (RFC 3263 §4.3)."""
LOOKUP_QUERIES: Final = 4
"""A lookup takes at most this many query timeouts ([dns] timeout): NAPTR, SRV, A/AAAA and a
fallback; past it, the request gets no target rather than wait for the core's own limit."""
MAX_LOOKUPS: Final = 10_000
"""Lookups running at once, at most: over it a request gets no target at once (408)."""
LOG_EVERY: Final = 60.0
"""s between two log lines about the same host that does not resolve."""
_LOGGED_KEPT: Final = 1024


class Wanted(Protocol):
    """A next hop to locate (``sipha.proxy.targets.Lookup``)."""

    @property
    def key(self) -> int:
        """What the answer is given back with."""

    @property
    def host(self) -> str:
        """The host name (or the maddr) of the next hop's URI."""

    @property
    def port(self) -> int | None:
        """The URI's port, None when it has none."""

    @property
    def transport(self) -> str | None:
        """The URI's ``transport`` parameter, None when it has none."""

    @property
    def secure(self) -> bool:
        """A SIPS URI, or a SIPS Request-URI (TLS targets only)."""

    @property
    def supported(self) -> frozenset[str]:
        """The transports the request can go on (UDP, TCP, TLS)."""


OnLocated = Callable[[int, list[Address]], None]


def target_address(target: Target) -> Address:
    """Where to send for ``target``; over TLS, with the SIP domain the peer must prove.

    RFC 5922 §4: the identity is "the SIP domain" of the URI that was resolved: not
    the SRV target's host name, nor the IP.  A URI naming an IP has no domain.
    """
    if target.transport != "TLS" or ip_literal(target.domain) is not None:
        return target.address
    return Address(target.transport, target.host, target.port, target.domain)


class Locator:
    """Run the core's lookups on the loop; answer each with its targets (none when nothing resolves)."""

    def __init__(
        self, resolver: SipResolver, on_located: OnLocated, *, avoid: float = FAILED_TARGET_AVOID
    ) -> None:
        self.resolver = resolver
        self._on_located = on_located
        self.avoid = avoid
        self._tasks: set[asyncio.Task[None]] = set()
        self._logged: dict[str, float] = {}
        self.failures = 0
        """Lookups that gave no target (every cause), since the start."""

    def locate(self, wanted: Wanted) -> None:
        """Start looking ``wanted`` up; ``on_located`` gets the answer later, never from this call."""
        loop = asyncio.get_running_loop()
        if len(self._tasks) >= MAX_LOOKUPS:
            self.failures += 1
            loop.call_soon(self._on_located, wanted.key, [])
            return
        task = loop.create_task(self._look_up(wanted))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def failed(self, target: Address) -> None:
        """``target`` failed (RFC 3263 §4.3): tried after the other targets for a while."""
        self.resolver.mark_failed(target, self.avoid)

    def close(self) -> None:
        """Stop every lookup under way (their requests are answered by the core's own limit)."""
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()

    async def _look_up(self, wanted: Wanted) -> None:
        resolver = self.resolver
        limit = LOOKUP_QUERIES * resolver.timeout
        why = ""
        try:
            found = await asyncio.wait_for(
                resolver.targets(
                    wanted.host,
                    port=wanted.port,
                    transport=wanted.transport,
                    secure=wanted.secure,
                    supported=wanted.supported,
                ),
                limit,
            )
        except SipResolveError as error:
            found, why = [], str(error)
        except TimeoutError:
            found, why = [], f"cannot resolve SIP host {wanted.host}: no targets within {limit:g} s"
        except ValueError as error:  # a sips: URI asking for UDP
            found, why = [], f"cannot resolve SIP host {wanted.host}: {error}"
        except Exception:
            # A bug, not an answer: said loudly, and the request is answered now rather than
            # at the core's own limit.
            log.exception("lookup of SIP host %s failed", wanted.host)
            found = []
        if why:
            self.failures += 1
            self._log(wanted.host, why)
        self._on_located(wanted.key, [target_address(target) for target in found])

    def _log(self, host: str, why: str) -> None:
        now = asyncio.get_running_loop().time()
        logged = self._logged
        if host in logged and logged[host] > now - LOG_EVERY:
            return
        if len(logged) >= _LOGGED_KEPT:
            logged.clear()
        logged[host] = now
        log.warning("%s (requests to it get 408 Request Timeout)", why)
