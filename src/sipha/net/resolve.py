"""Host name resolution by the system: A/AAAA through the event loop's getaddrinfo, a small cache.

RFC 3263 (NAPTR, SRV, A/AAAA with their TTLs) is :mod:`sipha.net.dns`, used
for the next hops of requests (docs/design.md §3 rule 3, :mod:`sipha.net.locate`)
and for event 40000.  This resolver is for the names the system knows best: the
instance's own ``sip-address`` (``resolve-host``: /etc/hosts, nsswitch), and the
host names the transports are handed directly: a Via sent-by name a response goes
to (§18.2.2).  A pair member configured by name is resolved through ``[dns]``
instead (:mod:`sipha.hostnames`), and the core is handed its IP; while the name
gives no address it is :attr:`Resolver.withheld` here, so that the system resolver
does not find the member another way than ``[dns]`` does.

``loop.getaddrinfo`` runs the system resolver in a thread pool and does not
expose record TTLs, so entries live for a fixed time.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Final

from sipha.net.addr import parse_ip

DEFAULT_TTL: Final = 30.0
DEFAULT_MAX_ENTRIES: Final = 1024


class Resolver:
    """``await resolve(host)`` -> IP address strings, IP literals answered at once."""

    __slots__ = ("_cache", "_inflight", "max_entries", "ttl", "withheld")

    def __init__(self, *, ttl: float = DEFAULT_TTL, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.withheld: frozenset[str] = frozenset()
        """Names (lower case) this resolver refuses: pair members' names that ``[dns]`` does not
        resolve (yet); a send to one fails as a name that does not resolve."""
        # host (lower-case) -> (expiry on the loop clock, addresses); insertion ordered, so the
        # first entry is the oldest to evict.
        self._cache: dict[str, tuple[float, tuple[str, ...]]] = {}
        # Concurrent lookups of one name share a single getaddrinfo call.
        self._inflight: dict[str, asyncio.Task[tuple[str, ...]]] = {}

    async def resolve(self, host: str) -> list[str]:
        """The IPv4 and IPv6 addresses of ``host``, in the system's preference order.

        ``host`` may be an IP literal (``[::1]`` brackets allowed), returned
        without a lookup.  Raises :class:`OSError` (``socket.gaierror``) when
        the name does not resolve.
        """
        literal = parse_ip(host)
        if literal is not None:
            return [literal[1]]
        key = host.lower().rstrip(".")
        if key in self.withheld:
            raise socket.gaierror(socket.EAI_NONAME, f"{host}: a pair member's name [dns] does not resolve")
        loop = asyncio.get_running_loop()
        entry = self._cache.get(key)
        if entry is not None:
            if entry[0] > loop.time():
                return list(entry[1])
            del self._cache[key]
        task = self._inflight.get(key)
        if task is None:
            task = self._inflight[key] = loop.create_task(self._lookup(loop, key))
            task.add_done_callback(lambda done: self._done(key, done))
        # shield: a caller that gives up (its transaction timed out) does not cancel the
        # lookup other callers wait for.
        return list(await asyncio.shield(task))

    def _done(self, key: str, task: asyncio.Task[tuple[str, ...]]) -> None:
        del self._inflight[key]
        if not task.cancelled() and task.exception() is None:
            self._store(key, task.get_loop().time() + self.ttl, task.result())

    async def _lookup(self, loop: asyncio.AbstractEventLoop, host: str) -> tuple[str, ...]:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
        # dict keeps the first occurrence of each address, in getaddrinfo's (RFC 6724) order.
        addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} has no A or AAAA record")
        return addresses

    def _store(self, key: str, expiry: float, addresses: tuple[str, ...]) -> None:
        cache = self._cache
        while len(cache) >= self.max_entries:
            del cache[next(iter(cache))]
        cache[key] = (expiry, addresses)

    def clear(self) -> None:
        """Forget every cached answer (e.g. on a configuration reload)."""
        self._cache.clear()
