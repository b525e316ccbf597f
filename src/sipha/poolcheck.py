"""The DNS side of an instance: ``[dns]`` for its resolver, and event 40000 (docs/design.md §3, §4).

Event 40000 is the classic product's initialization check, "own proxy address not found in
the configured list": the list, for sipha, is what DNS publishes for the pool,
the host of ``[proxy] record-route``.  SIP servers and user agents find the pool
the way RFC 3263 says: by the SRV records of each transport (``_sip._udp``,
``_sip._tcp``, ``_sips._tcp``), or by the A/AAAA records of the name (the classic
product: user agents "resolve the SIP Proxy FQDN into multiple A-records").  So the pool
is every target of the SRV records of every transport this instance listens on
and every address of the name, at the record-route port (or the transport's
default port); this instance is its listen addresses and ``sip-address``.  The
check runs once, at start, in the background: the instance serves meanwhile,
whatever it finds.
"""

from __future__ import annotations

import logging

from sipha.config import Config
from sipha.dnsconfig import DnsSection, parse_dns_server
from sipha.ha import check_own_address
from sipha.ha.events import ProxyAddressNotFound
from sipha.logs import event_fields
from sipha.net.dns import SipResolveError, SipResolver
from sipha.sip import SipUri, parse_uri
from sipha.sip.address import Address, default_port

log = logging.getLogger("sipha")


def new_resolver(dns: DnsSection) -> SipResolver:
    """A resolver configured by ``[dns]``."""
    resolver = SipResolver()
    configure_resolver(resolver, dns)
    return resolver


def configure_resolver(resolver: SipResolver, dns: DnsSection) -> None:
    """Apply ``[dns]`` (at start and on reload: the cached answers are dropped)."""
    servers = [parse_dns_server(server) for server in dns.servers]
    resolver.configure(
        nameservers=servers or None,  # none: the system's (/etc/resolv.conf)
        timeout=dns.timeout,
        min_ttl=float(dns.min_ttl),
        max_ttl=float(dns.max_ttl),
    )


async def pool_addresses(
    host: str, port: int | None, transports: list[str], resolver: SipResolver
) -> tuple[list[Address], list[str]]:
    """The pool as DNS publishes ``host`` for each of ``transports``, and the lookups that failed.

    ``port``: the record-route port, None when it has none (then the SRV records of each
    transport count, RFC 3263 §4.2, besides the A/AAAA records at its default port).
    """
    pool: dict[Address, None] = {}
    problems: list[str] = []
    for transport in transports:
        # RFC 3263 §4.2: an explicit port means addresses only; else the transport's SRV records
        # (_sips._tcp for TLS), falling back to the addresses at the default port.
        ports: list[int | None] = [port] if port is not None else [None, default_port(transport)]
        for asked in ports:
            try:
                found = await resolver.targets(
                    host, port=asked, transport=transport, secure=False, supported=frozenset({transport})
                )
            except SipResolveError as error:
                if asked == ports[0]:  # the other lookup is a part of this one: said already
                    problems.append(str(error))
                continue
            pool.update(dict.fromkeys(target.address for target in found))
    return list(pool), problems


async def check_pool_address(
    config: Config, bound: list[Address], resolver: SipResolver
) -> ProxyAddressNotFound | None:
    """Event 40000 when this instance is not among the pool's addresses (logged; also returned).

    "Cannot resolve the pool address" is logged under the same id when the name gives
    no address at all.  The instance serves either way.
    """
    record_route = parse_uri(config.proxy.record_route)
    if not isinstance(record_route, SipUri):  # pragma: no cover - the configuration checked it
        return None
    transports = sorted({address.transport for address in bound})
    pool, problems = await pool_addresses(record_route.host_key, record_route.port, transports, resolver)
    if not pool:
        why = "; ".join(dict.fromkeys(problems)) or "no address"
        log.warning(
            "event 40000: cannot resolve the pool address %s: %s",
            record_route.host,
            why,
            extra={"event_id": 40000, "kind": "proxy"},
        )
        return None
    ours = list(bound)
    if config.proxy.sip_address:
        ours += [Address(a.transport, config.proxy.sip_address, a.port) for a in bound]
    event = check_own_address(pool, ours)
    if event is not None:
        log.warning("event %d: %s", event.event_id, event.message, extra=event_fields(event))
    return event
