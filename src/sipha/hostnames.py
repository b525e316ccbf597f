"""Host names of the configuration, resolved by the driver: the core is handed IP addresses.

The sans-IO core never looks a name up (docs/design.md §6).  Two kinds of names in
the configuration are resolved here, on the loop, and the core given the result:

* ``resolve-host``: the IP of ``sip-address`` for Via (:func:`via_host`), at start and
  on each reload, by the system resolver;
* pair members given by host name (``primary = "udp:sip1.example.com:5060"``):
  :class:`MemberNames` resolves them through ``[dns]`` (A/AAAA, dnspython, the TTLs
  clamped by ``min-ttl``/``max-ttl``), and the view is built with their IPs
  (:func:`sipha.assembly.pair_specs`): a member is recognised by the source IP of
  its requests (docs/design.md §2, §3 rules 2 and 3), probed and reached at that IP,
  and its transport errors match it.  Each name is looked up again when its answer
  expires; an address that changes is applied as a reload of that member
  (:func:`sipha.assembly.reconfigure_members`: the pair is re-probed); a lookup
  that fails keeps the last address, logged and counted.  A name that gives no
  address at start does not stop sipha: the member is down (sends to it fail, its
  OPTIONS with them), the pair served by the other member, the name asked again
  every :data:`RETRY` s, and ``/status`` says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from sipha.config import Config, ConfigError, parse_address
from sipha.net.addr import parse_ip
from sipha.net.dns import SipResolveError, SipResolver
from sipha.net.resolve import Resolver
from sipha.net.tls import TlsSettings

log = logging.getLogger("sipha")

RETRY: Final = 5.0
"""s between two lookups of a member name that gives no address (or whose lookup failed)."""
SOONEST: Final = 1.0
"""s at least between two lookups of a name: an answer with a TTL of 0 is not asked for again at once."""
LOG_REPEAT: Final = 60.0
"""s between two log lines about the same name that keeps failing the same way."""


async def via_host(config: Config, resolve: Callable[[str], Awaitable[list[str]]], source: str) -> str:
    """``resolve-host``: the IP of ``sip-address`` for Via ("" when off: the name as written).

    RFC 3261 §18.2.2 sends responses to the Via sent-by, so a name there makes every
    SIP server resolve it for every response; an IP spares them (and their resolver).
    ConfigError (naming ``source``) when the name does not resolve.
    """
    name = config.proxy.sip_address
    if not config.proxy.resolve_host or not name:
        return ""
    try:
        addresses = await resolve(name)
    except OSError as error:
        problem = f"proxy.sip-address = {name!r}: does not resolve ({error}), and resolve-host = true"
        raise ConfigError(source, [problem]) from error
    ipv4 = [address for address in addresses if ":" not in address]
    chosen = (ipv4 or addresses)[0]
    return f"[{chosen}]" if ":" in chosen else chosen


def member_names(config: Config) -> dict[str, list[str]]:
    """The pair members given by host name: name (lower case) -> the keys naming it (``pair.0.primary``)."""
    names: dict[str, list[str]] = {}
    for index, pair in enumerate(config.pair):
        for role, text in (("primary", pair.primary), ("backup", pair.backup)):
            host = parse_address(text).host
            if parse_ip(host) is None:
                names.setdefault(host.lower().rstrip("."), []).append(f"pair.{index}.{role} = {text!r}")
    return names


@dataclass(slots=True)
class MemberName:
    """One member's host name: the IP in use, when to look it up again, the last failure."""

    name: str
    address: str | None = None
    """The IP the core knows the member by; None until the name has resolved once."""
    due: float = -math.inf
    """Clock time of the next lookup."""
    problem: str | None = None
    """Why the last lookup gave no address (None once one does)."""
    logged: tuple[str, float] | None = None
    """The last failure logged and when: the same one is logged again after :data:`LOG_REPEAT` s."""


class MemberNames:
    """The pair members given by host name, resolved through ``[dns]`` and kept up to date.

    ``resolver`` is the ``[dns]`` resolver (its cache keeps each answer for its clamped
    TTL); ``system`` the transports' getaddrinfo resolver, told which names to refuse
    (:attr:`sipha.net.resolve.Resolver.withheld`); ``current`` the configuration in
    force (names it no longer uses are forgotten); ``clock`` monotonic seconds.
    """

    def __init__(
        self,
        resolver: SipResolver,
        system: Resolver,
        current: Callable[[], Config],
        clock: Callable[[], float],
    ) -> None:
        self.resolver = resolver
        self.system = system
        self._current = current
        self._clock = clock
        self.names: dict[str, MemberName] = {}
        self.failures = 0
        """Lookups of a member name that gave no address, since the start (``/metrics``)."""
        self._latest: dict[str, list[str]] = {}
        """The member names of the last configuration resolved (a reload's, not in force yet)."""
        self._wake = asyncio.Event()
        self._tls_added: dict[tuple[str, int], str] = {}

    async def resolve(self, config: Config) -> dict[str, str]:
        """Look up the member names of ``config`` not known yet (start, reload); the addresses after.

        A name that gives no address is logged loudly, naming the key and the value;
        the member stays down until it resolves (asked again every :data:`RETRY` s).
        """
        self._latest = member_names(config)
        new = [name for name in self._latest if name not in self.names]
        for name in new:
            self.names[name] = MemberName(name)
        await self._look_up(new)
        self._wake.set()
        return self.addresses()

    def addresses(self) -> dict[str, str]:
        """Member name -> the IP in use, for the names that resolved."""
        return {name: entry.address for name, entry in self.names.items() if entry.address is not None}

    def problem(self, host: str) -> str | None:
        """Why the member at ``host`` cannot be reached: its name has never resolved (``/status``)."""
        entry = self.names.get(host.lower().rstrip("."))
        if entry is None or entry.address is not None:
            return None
        return f"{entry.name} does not resolve through [dns]: {entry.problem}"

    def tls(self, settings: TlsSettings | None) -> TlsSettings | None:
        """``settings`` with each ``tls:`` member given by name verified at its IP as by its name.

        A ``tls:`` member given by name is sent to at its IP: the name to send as SNI and
        verify (its ``*-server-name``, else its host name) is found by that IP and port.
        The entries added for an earlier address are dropped.
        """
        if settings is None:
            return None
        names = {key: name for key, name in settings.member_names.items() if self._tls_added.get(key) != name}
        added: dict[tuple[str, int], str] = {}
        for (host, port), server_name in list(names.items()):
            entry = self.names.get(host)
            if entry is not None and entry.address is not None and (entry.address, port) not in names:
                added[entry.address, port] = names[entry.address, port] = server_name
        self._tls_added = added
        return dataclasses.replace(settings, member_names=names)

    async def run(self, on_change: Callable[[], Awaitable[object]]) -> None:
        """Look each name up again when due; ``on_change()`` after an address changed.  Never returns."""
        while True:
            try:
                if await self.refresh():
                    await on_change()
            except Exception:  # a bug, not a DNS answer: said loudly, the names asked again later
                log.exception("pair member names: re-resolution failed")
                for entry in self.names.values():
                    entry.due = max(entry.due, self._clock() + RETRY)
            self._wake.clear()
            wait = self.next_due() - self._clock()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), None if math.isinf(wait) else wait)

    async def refresh(self) -> bool:
        """Look up again the names whose answers expired; whether an address in use changed.

        A name that resolves for the first time counts as a change (the view still has
        its name); one no longer in the configuration is forgotten.
        """
        self._forget_unused()
        now = self._clock()
        due = [name for name, entry in self.names.items() if entry.due <= now]
        return bool(due) and await self._look_up(due)

    def next_due(self) -> float:
        """Clock time of the next lookup (``inf``: no member is given by name)."""
        return min((entry.due for entry in self.names.values()), default=math.inf)

    def _keys(self) -> dict[str, list[str]]:
        """Member name -> the keys naming it, in the configuration in force and the last one resolved."""
        return {**self._latest, **member_names(self._current())}

    def _forget_unused(self) -> None:
        keys = self._keys()
        for name in [name for name in self.names if name not in keys]:
            del self.names[name]
        self._withhold()

    async def _look_up(self, names: list[str]) -> bool:
        """Look ``names`` up at once; whether an address changed (a first one included)."""
        outcomes = await asyncio.gather(
            *(self.resolver.host_addresses(name) for name in names), return_exceptions=True
        )
        changed = False
        now = self._clock()
        for name, outcome in zip(names, outcomes, strict=True):
            entry = self.names.get(name)
            if entry is None:
                continue
            if isinstance(outcome, SipResolveError):
                self._failed(entry, str(outcome), now)
                continue
            if isinstance(outcome, BaseException):
                raise outcome
            entry.due = now + max(outcome.expires_in, SOONEST)
            entry.problem = entry.logged = None
            if entry.address in outcome.addresses:
                continue  # the order of round-robin answers is not a move
            previous, entry.address = entry.address, outcome.addresses[0]
            changed = True
            if previous is None:
                log.info("pair member name %s resolves to %s ([dns])", name, entry.address)
            else:
                log.warning(
                    "pair member name %s moved from %s to %s ([dns]): %s re-probed at the new address",
                    name,
                    previous,
                    entry.address,
                    ", ".join(self._keys().get(name, [])),
                )
        self._withhold()
        return changed

    def _failed(self, entry: MemberName, why: str, now: float) -> None:
        self.failures += 1
        entry.problem = why
        entry.due = now + RETRY
        logged = entry.logged
        if logged is not None and logged[0] == why and now - logged[1] < LOG_REPEAT:
            return
        entry.logged = (why, now)
        keys = ", ".join(self._keys().get(entry.name, []))
        if entry.address is None:
            log.error(
                "%s: %s: the member is down until its name resolves; asked again every %g s",
                keys,
                why,
                RETRY,
            )
        else:
            log.warning(
                "%s: %s: keeping its last address %s; asked again every %g s", keys, why, entry.address, RETRY
            )

    def _withhold(self) -> None:
        self.system.withheld = frozenset(name for name, entry in self.names.items() if entry.address is None)
