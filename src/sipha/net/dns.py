"""RFC 3263 ("Locating SIP Servers"): the ordered targets to try for a SIP host.

:class:`SipResolver` turns a URI's host, port, transport and scheme into the
list of ``(transport, IP, port)`` a client tries in order (RFC 3263 §4.3):
NAPTR (§4.1) → SRV (§4.2, ordered by RFC 2782) → A/AAAA.  It uses dnspython's
asyncio resolver rather than ``loop.getaddrinfo`` (:mod:`sipha.net.resolve`)
because getaddrinfo can answer neither NAPTR nor SRV, hides the record TTLs and
blocks a thread per lookup.

What an HA proxy needs on top of the RFC: every answer is cached for its own
TTL (clamped), negative answers too (RFC 2308); concurrent lookups of one name
share one query; every query has a timeout; and a target that failed recently
is tried last, keyed by ``(transport, IP, port)`` so that one dead server does
not demote the healthy servers that share its DNS name.

The proxy's next hops named by host names are located with it
(:mod:`sipha.net.locate`, docs/design.md §3 rule 3), and event 40000 looks the
pool up with it (:mod:`sipha.poolcheck`); ``[dns]`` configures it.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import groupby
from typing import ClassVar, Final

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.rdtypes.ANY.SOA
import dns.resolver

from sipha.net.srv import (
    Naptr,
    Record,
    Srv,
    explicit_transport,
    host_name,
    ip_literal,
    order_srv,
    parse_record,
    srv_name,
)
from sipha.sip.address import Address, default_port

__all__ = [  # order_srv: its home is sipha.net.srv
    "AAAA",
    "NAPTR",
    "SRV",
    "A",
    "HostAddresses",
    "SipResolveError",
    "SipResolver",
    "Target",
    "order_srv",
]

NAPTR: Final = dns.rdatatype.NAPTR
SRV: Final = dns.rdatatype.SRV
A: Final = dns.rdatatype.A
AAAA: Final = dns.rdatatype.AAAA

# RFC 3263 §4.1: the services that select a transport are "those with NAPTR service fields with
# values "SIP+D2X" and "SIPS+D2X", where X is a letter that corresponds to a transport protocol
# supported by the domain.  This specification defines D2U for UDP, D2T for TCP, and D2S for
# SCTP."  sipha speaks UDP, TCP and TLS over TCP; SIPS+D2U cannot exist ("it is not possible to
# use TLS over UDP").
NAPTR_SERVICES: Final = {"SIP+D2U": "UDP", "SIP+D2T": "TCP", "SIPS+D2T": "TLS"}


@dataclass(frozen=True, slots=True)
class Target:
    """One place to try: a transport, an IP address and a port, and where they came from.

    ``name`` is the DNS name whose A/AAAA records gave ``host`` (an SRV target,
    or the URI's host; the IP itself for an IP literal); ``domain`` is the host
    that was resolved.  Over TLS, ``domain`` is the identity the peer must prove
    (RFC 5922 §4, which settles what RFC 3263 §4.1 left to both names; see
    :func:`sipha.net.locate.target_address`).
    """

    transport: str
    host: str
    port: int
    name: str
    domain: str

    @property
    def address(self) -> Address:
        """The transport address to send to."""
        return Address(self.transport, self.host, self.port)


class SipResolveError(OSError):
    """A SIP host that gave no target: names it, and every query tried with its outcome."""

    def __init__(self, host: str, tried: Iterable[str]) -> None:
        self.host = host
        self.tried = tuple(tried)
        super().__init__(f"cannot resolve SIP host {host}: {'; '.join(self.tried) or 'nothing to try'}")


_Key = tuple[str, dns.rdatatype.RdataType]  # (name, record type)
_Tried = list[tuple[_Key, str]]  # each lookup and its outcome, for the error message


@dataclass(frozen=True, slots=True)
class _Entry:
    expiry: float
    records: tuple[Record, ...]
    outcome: str  # for the error message: "2 records", "NXDOMAIN", "no records"
    answered: bool = True  # False: no answer (timeout, SERVFAIL), nothing learnt about the TTL


@dataclass(frozen=True, slots=True)
class HostAddresses:
    """The A/AAAA addresses of a host name and when the answers they came from expire."""

    addresses: tuple[str, ...]
    """IPv4 first (as :meth:`SipResolver.targets` orders them), each once."""
    expires_in: float
    """s until the first of the answers expires (TTL, clamped; ``inf`` for an IP literal)."""


class _LookupFailed(Exception):
    """A query that got no answer (timeout, SERVFAIL, REFUSED): not an answer, not cached."""


class SipResolver:
    """RFC 3263 §4 client procedures: :meth:`targets` gives the ordered targets for a host.

    ``nameservers``: ``(ip, port)`` pairs to ask, else the system's
    (/etc/resolv.conf).  ``timeout``: seconds per query.  Positive answers are
    cached for their TTL clamped to ``[min_ttl, max_ttl]``; negative ones
    (NXDOMAIN, no record of the type) for the zone's negative TTL when the
    answer carries an SOA, at most ``negative_ttl`` (and ``negative_ttl`` when
    it carries none), never less than ``min_ttl``.  ``clock`` is monotonic
    seconds; ``rng`` draws the RFC 2782 weighted order (seeded in tests).
    """

    MAX_ENTRIES: ClassVar[int] = 10_000
    """Cached answers kept at most (one per name and record type), oldest evicted first."""
    MAX_FAILED: ClassVar[int] = 10_000
    """Failed targets remembered at most, oldest forgotten first."""

    def __init__(
        self,
        *,
        nameservers: list[tuple[str, int]] | None = None,
        timeout: float = 2.0,
        min_ttl: float = 0,
        max_ttl: float = 3600,
        negative_ttl: float = 30,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - load spreading, not secrets
        self._backend: dns.asyncresolver.Resolver | None = None
        # (name, type) -> answer; insertion ordered, so the first entry is the oldest to evict.
        self._cache: dict[_Key, _Entry] = {}
        # Concurrent lookups of one (name, type) share one query.
        self._inflight: dict[_Key, asyncio.Task[_Entry]] = {}
        # (transport, IP, port) -> until when it counts as failed.
        self._failed: dict[tuple[str, str, int], float] = {}
        self.nameservers: list[tuple[str, int]] | None = None
        self.timeout = self.min_ttl = self.max_ttl = self.negative_ttl = 0.0
        self.configure(
            nameservers=nameservers,
            timeout=timeout,
            min_ttl=min_ttl,
            max_ttl=max_ttl,
            negative_ttl=negative_ttl,
        )

    def configure(
        self,
        *,
        nameservers: list[tuple[str, int]] | None,
        timeout: float,
        min_ttl: float,
        max_ttl: float,
        negative_ttl: float = 30,
    ) -> None:
        """New settings (``[dns]`` on a reload); what was cached under the old ones is forgotten."""
        if timeout <= 0 or min_ttl < 0 or max_ttl < min_ttl or negative_ttl < 0:
            raise ValueError(
                f"need timeout > 0 and 0 <= min_ttl <= max_ttl, negative_ttl >= 0: timeout={timeout}, "
                f"min_ttl={min_ttl}, max_ttl={max_ttl}, negative_ttl={negative_ttl}"
            )
        self.nameservers = None if nameservers is None else list(nameservers)
        self.timeout = timeout
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.negative_ttl = negative_ttl
        self._backend = None  # made again on the next query, with the new servers
        self.clear()

    # -- RFC 3263 §4 ---------------------------------------------------------------------------

    async def targets(
        self, host: str, *, port: int | None, transport: str | None, secure: bool, supported: frozenset[str]
    ) -> list[Target]:
        """The targets to try for ``host``, in order; those that failed recently come last.

        ``port`` and ``transport`` are the URI's (None when absent), ``secure``
        is a ``sips:`` URI, ``supported`` the transports this proxy can send on
        (they restrict what NAPTR and SRV may choose, RFC 3263 §4.1).  Raises
        :class:`SipResolveError` when nothing resolves, :class:`ValueError` for
        a ``sips:`` URI asking for UDP.
        """
        chosen = explicit_transport(transport, secure=secure)
        supported = frozenset(t.upper() for t in supported)
        name = host_name(host)
        tried: _Tried = []
        literal = ip_literal(name)
        if literal is not None:
            # §4.1: "if no transport protocol is specified, but the TARGET is a numeric IP address,
            # the client SHOULD use UDP for a SIP URI, and TCP for a SIPS URI" (TCP with TLS);
            # §4.2: "If no port is specified, it uses the default port for the particular
            # transport protocol."
            chosen = chosen or ("TLS" if secure else "UDP")
            return [Target(chosen, literal, default_port(chosen) if port is None else port, literal, literal)]
        if port is not None:
            # §4.1: "if no transport protocol is specified, and the TARGET is not numeric, but an
            # explicit port is provided, the client SHOULD use UDP for a SIP URI, and TCP for a
            # SIPS URI"; §4.2: "the client performs an A or AAAA record lookup of the domain name".
            chosen = chosen or ("TLS" if secure else "UDP")
            found = await self._expand([(chosen, name, port)], name, tried)
        elif chosen is not None:
            # §4.2: "If it was not, because a transport was specified explicitly, the client
            # performs an SRV query for that specific transport, using the service identifier
            # "_sips" for SIPS URIs.  For a SIP URI, if the client wishes to use TLS, it also uses
            # the service identifier "_sips" for that specific transport, otherwise, it uses "_sip"."
            found = await self._srv_or_addresses([[(chosen, srv_name(chosen, name))]], name, chosen, tried)
        else:
            found = await self._discover(name, supported, tried, secure=secure)
        found = self._healthy_first(found)
        if not found:
            raise SipResolveError(
                name, (f"{rdtype.name} {queried}: {outcome}" for (queried, rdtype), outcome in tried)
            )
        return found

    async def _discover(
        self, name: str, supported: frozenset[str], tried: _Tried, *, secure: bool
    ) -> list[Target]:
        """§4.1 with neither port nor transport: NAPTR, else SRV per transport, else A/AAAA."""
        # §4.1: "Otherwise, if no transport protocol or port is specified, and the target is not a
        # numeric IP address, the client SHOULD perform a NAPTR query for the domain in the URI."
        (records,) = await self._lookups([(name, NAPTR)], tried)
        services: list[tuple[Naptr, str]] = []
        for record in records:
            # The SRV step follows terminal "S" records only (RFC 3403 flags are case-blind); a
            # replacement of "." leads nowhere.
            if not isinstance(record, Naptr) or record.flags != "s" or record.replacement == ".":
                continue
            transport = NAPTR_SERVICES.get(record.service)
            # "a client MUST discard any service fields that identify a resolution service whose
            # value is not "D2X", for values of X that indicate transport protocols supported by
            # the client."
            if transport is None or transport not in supported:
                continue
            # "a client resolving a SIPS URI MUST discard any services that do not contain "SIPS"
            # as the protocol in the service field.  The converse is not true, however.  A client
            # resolving a SIP URI SHOULD retain records with "SIPS" as the protocol, if the client
            # supports TLS."
            if secure and transport != "TLS":
                continue
            services.append((record, transport))
        services.sort(key=lambda service: (service[0].order, service[0].preference))
        if services:
            # RFC 2915 (cited by RFC 3263 §4.1), Order: "Low numbers are processed before high
            # numbers, and once a NAPTR is found whose rule "matches" the target, the client MUST
            # NOT consider any NAPTRs with a higher value for order".  A group of one order whose
            # SRV records give no target has not matched: the next order is tried.  Within an
            # order, records are taken by preference.
            groups = [
                [(transport, record.replacement) for record, transport in group]
                for _, group in groupby(services, key=lambda service: service[0].order)
            ]
            return await self._srv_or_addresses(groups, name, services[0][1], tried)
        # §4.1: "If no NAPTR records are found, the client constructs SRV queries for those
        # transport protocols it supports, and does a query for each.  Queries are done using the
        # service identifier "_sip" for SIP URIs and "_sips" for SIPS URIs.  A particular
        # transport is supported if the query is successful.  The client MAY use any transport
        # protocol it desires which is supported by the server."  Ours: TCP (no MTU limit) before
        # UDP; every transport the server has is kept, in that order, as further targets.
        wanted = ("TLS",) if secure else ("TCP", "UDP")
        candidates = [
            (transport, srv_name(transport, name)) for transport in wanted if transport in supported
        ]
        # "If no SRV records are found, the client SHOULD use TCP for a SIPS URI, and UDP for a SIP
        # URI.  However, another transport protocol, such as TCP, MAY be used if the guidelines of
        # SIP mandate it": TCP when this proxy cannot send UDP at all.
        fallback = "TLS" if secure else ("TCP" if "UDP" not in supported and "TCP" in supported else "UDP")
        return await self._srv_or_addresses([candidates], name, fallback, tried)

    async def _srv_or_addresses(
        self,
        groups: list[list[tuple[str, str]]],
        domain: str,
        fallback: str,
        tried: _Tried,
    ) -> list[Target]:
        """The targets of the first group of ``(transport, SRV name)`` that gives any; else A/AAAA.

        §4.2: "If no SRV records were found, the client performs an A or AAAA
        record lookup of the domain name.  The result will be a list of IP
        addresses, each of which can be contacted using the transport protocol
        determined previously, at the default port for that transport."  SRV
        records that lead nowhere are still SRV records: no fallback then.
        """
        seen_srv = False
        for group in groups:
            answers = await self._lookups([(srv_name, SRV) for _, srv_name in group], tried)
            hosts: list[tuple[str, str, int]] = []
            for (transport, _), records in zip(group, answers, strict=True):
                seen_srv = seen_srv or bool(records)
                # RFC 2782: 'A Target of "." means that the service is decidedly not available at
                # this domain.'
                hosts += [
                    (transport, srv.target, srv.port)
                    for srv in order_srv([r for r in records if isinstance(r, Srv)], self._rng)
                    if srv.target != "."
                ]
            found = await self._expand(hosts, domain, tried)
            if found:
                return found
        if seen_srv:
            return []
        return await self._expand([(fallback, domain, default_port(fallback))], domain, tried)

    async def _expand(self, hosts: list[tuple[str, str, int]], domain: str, tried: _Tried) -> list[Target]:
        """One target per address of each ``(transport, name, port)``, in order, duplicates dropped.

        The A and AAAA lookups of every name run at once.  IPv4 first: an
        IPv6 address the proxy cannot reach costs a failover, and most SIP
        cores are reached over IPv4 (the send path skips families it has no
        socket for).
        """
        names = [name for _, name, _ in hosts if ip_literal(name) is None]
        keys: list[_Key] = [(name, rdtype) for name in dict.fromkeys(names) for rdtype in (A, AAAA)]
        answers = dict(zip(keys, await self._lookups(keys, tried), strict=True))
        found: dict[tuple[str, str, int], Target] = {}
        for transport, name, port in hosts:
            literal = ip_literal(name)  # not allowed in SRV (RFC 2782), but seen in the wild
            addresses = (literal,) if literal is not None else (*answers[name, A], *answers[name, AAAA])
            for address in addresses:
                if isinstance(address, str):
                    found.setdefault(
                        (transport, address, port), Target(transport, address, port, name, domain)
                    )
        return list(found.values())

    async def host_addresses(self, host: str) -> HostAddresses:
        """The A and AAAA addresses of ``host`` (a pair member given by name), with their TTL.

        :class:`SipResolveError` when neither gives an address.  ``expires_in`` is the
        time left of the first answer to expire among those received (a lookup that
        got no answer says nothing of when to ask again): the caller asks again then.
        """
        name = host_name(host)
        literal = ip_literal(name)
        if literal is not None:
            return HostAddresses((literal,), math.inf)
        tried: _Tried = []
        entries = await self._entries([(name, A), (name, AAAA)], tried)
        addresses = tuple(dict.fromkeys(r for entry in entries for r in entry.records if isinstance(r, str)))
        if not addresses:
            raise SipResolveError(
                name, (f"{rdtype.name} {queried}: {outcome}" for (queried, rdtype), outcome in tried)
            )
        now = self._clock()
        answered = [entry.expiry for entry in entries if entry.answered and entry.records] or [now]
        return HostAddresses(addresses, max(0.0, min(answered) - now))

    # -- RFC 3263 §4.3: failed targets ---------------------------------------------------------

    def mark_failed(self, target: Target | Address, for_seconds: float) -> None:
        """Have :meth:`targets` put ``target`` last for ``for_seconds`` (<= 0: forget it failed).

        RFC 3263 §4.3: "For SIP requests, failure occurs if the transaction
        layer reports a 503 error response or a transport failure of some sort
        (generally, due to fatal ICMP errors in UDP or connection failures in
        TCP).  Failure also occurs if the transaction layer times out without
        ever having received any response, provisional or final (i.e., timer B
        or timer F in RFC 3261 fires)."  Keyed by (transport, IP, port), never
        by name: the other servers behind the same name stay first.
        """
        key = (target.transport, target.host, target.port)
        failed = self._failed
        failed.pop(key, None)
        if for_seconds <= 0:
            return
        now = self._clock()
        if len(failed) >= self.MAX_FAILED:
            for stale in [k for k, until in failed.items() if until <= now]:
                del failed[stale]
            while len(failed) >= self.MAX_FAILED:
                del failed[next(iter(failed))]
        failed[key] = now + for_seconds

    def _healthy_first(self, targets: list[Target]) -> list[Target]:
        """``targets`` with those marked failed (and not yet expired) moved last, order kept."""
        failed = self._failed
        if not failed:
            return targets
        now = self._clock()
        healthy: list[Target] = []
        demoted: list[Target] = []
        for target in targets:
            key = (target.transport, target.host, target.port)
            until = failed.get(key)
            if until is not None and until <= now:
                del failed[key]
                until = None
            (healthy if until is None else demoted).append(target)
        return healthy + demoted

    # -- the cache and the queries -------------------------------------------------------------

    async def _lookups(self, keys: list[_Key], tried: _Tried) -> list[tuple[Record, ...]]:
        """The records of each ``(name, type)``: from the cache, else queried all at once.

        No answer (timeout, server failure) and a negative answer both give
        no records; each outcome is noted in ``tried`` for the error message.
        """
        return [entry.records for entry in await self._entries(keys, tried)]

    async def _entries(self, keys: list[_Key], tried: _Tried) -> list[_Entry]:
        """The answer of each ``(name, type)`` (see :meth:`_lookups`), with its expiry."""
        now = self._clock()
        cache = self._cache
        entries: list[_Entry | None] = []
        for key in keys:
            entry = cache.get(key)
            if entry is not None and entry.expiry <= now:
                del cache[key]
                entry = None
            entries.append(entry)
        missing = [index for index, entry in enumerate(entries) if entry is None]
        if missing:
            outcomes = await asyncio.gather(*(self._shared(keys[i]) for i in missing), return_exceptions=True)
            for index, outcome in zip(missing, outcomes, strict=True):
                if isinstance(outcome, _LookupFailed):
                    entries[index] = _Entry(now, (), str(outcome), answered=False)
                elif isinstance(outcome, BaseException):
                    raise outcome
                else:
                    entries[index] = outcome
        results: list[_Entry] = []
        for key, entry in zip(keys, entries, strict=True):
            assert entry is not None  # noqa: S101 - every miss was filled above
            tried.append((key, entry.outcome))
            results.append(entry)
        return results

    def _shared(self, key: _Key) -> asyncio.Future[_Entry]:
        """The query in flight for ``key``, started if none is."""
        task = self._inflight.get(key)
        if task is None:
            task = self._inflight[key] = asyncio.get_running_loop().create_task(self._query(*key))
            task.add_done_callback(lambda done: self._done(key, done))
        # shield: a caller that gives up (its transaction ended) does not cancel the query the
        # other callers wait for.
        return asyncio.shield(task)

    def _done(self, key: _Key, task: asyncio.Task[_Entry]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: every caller may have given up (no "never retrieved" log)

    async def _query(self, name: str, rdtype: dns.rdatatype.RdataType) -> _Entry:
        """Ask the DNS, parse and cache the answer; :class:`_LookupFailed` when there is none."""
        try:
            answer = await asyncio.wait_for(self._ask(name, rdtype), self.timeout)
        except dns.resolver.NXDOMAIN as error:
            responses: dict[dns.name.Name, dns.message.Message] = error.kwargs.get("responses") or {}
            response = next(iter(responses.values()), None)
            return self._store(name, rdtype, (), self._negative_ttl(response), "NXDOMAIN")
        except (TimeoutError, dns.exception.Timeout):
            raise _LookupFailed(f"no answer within {self.timeout:g} s") from None
        except (dns.exception.DNSException, OSError) as error:
            raise _LookupFailed(f"failed ({error or type(error).__name__})") from None
        if answer.rrset is None:
            return self._store(name, rdtype, (), self._negative_ttl(answer.response), "no records")
        records = tuple(parse_record(rdata) for rdata in answer.rrset)
        ttl = min(max(answer.chaining_result.minimum_ttl, self.min_ttl), self.max_ttl)
        return self._store(name, rdtype, records, ttl, f"{len(records)} records")

    async def _ask(self, name: str, rdtype: dns.rdatatype.RdataType) -> dns.resolver.Answer:
        """One query (the seam the unit tests replace with a fake zone)."""
        backend = self._backend
        if backend is None:  # made on first use: reading /etc/resolv.conf may fail, as a lookup
            backend = dns.asyncresolver.Resolver(configure=self.nameservers is None)
            if self.nameservers is not None:
                backend.nameservers = [
                    dns.nameserver.Do53Nameserver(ip, port) for ip, port in self.nameservers
                ]
            self._backend = backend
        return await backend.resolve(
            dns.name.from_text(name), rdtype, raise_on_no_answer=False, lifetime=self.timeout, search=False
        )

    def _negative_ttl(self, response: dns.message.Message | None) -> float:
        """How long a negative answer is kept: its SOA's say, capped by ``negative_ttl``.

        RFC 2308 §3: "The TTL of this record is set from the minimum of the
        MINIMUM field of the SOA record and the TTL of the SOA itself, and
        indicates how long a resolver may cache the negative answer."
        """
        ttl = self.negative_ttl
        for rrset in () if response is None else response.authority:
            for rdata in rrset:
                if isinstance(rdata, dns.rdtypes.ANY.SOA.SOA):
                    ttl = min(ttl, rrset.ttl, rdata.minimum)
        return max(ttl, self.min_ttl)

    def _store(
        self,
        name: str,
        rdtype: dns.rdatatype.RdataType,
        records: tuple[Record, ...],
        ttl: float,
        outcome: str,
    ) -> _Entry:
        entry = _Entry(self._clock() + ttl, records, outcome)
        if ttl > 0:
            cache = self._cache
            cache.pop((name, rdtype), None)
            while len(cache) >= self.MAX_ENTRIES:
                del cache[next(iter(cache))]
            cache[name, rdtype] = entry
        return entry

    def clear(self) -> None:
        """Forget every cached answer and every failed target (e.g. on a configuration reload)."""
        self._cache.clear()
        self._failed.clear()
