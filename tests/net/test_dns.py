"""SipResolver: RFC 3263 §4 (NAPTR → SRV → A/AAAA), RFC 2782 order, caching, failover order.

The unit tests answer from a fake zone through dnspython's own message and
answer types (so the parsing of real answers, NXDOMAIN and SOA included, is
exercised) on a fake clock; the integration tests at the end ask a real
dnsmasq on a loopback port.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterator

import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import pytest

from sipha.net.dns import SipResolveError, SipResolver, Target
from sipha.sip.address import Address
from tests.net.dns_support import Dnsmasq, dnsmasq_unusable

ALL = frozenset({"UDP", "TCP", "TLS"})
IN = dns.rdataclass.IN
Zone = dict[str, list[tuple[str, int, str]]]
Triple = tuple[str, str, int]


def zone(text: str) -> Zone:
    """``name ttl TYPE rdata`` lines as a zone."""
    records: Zone = {}
    for line in text.strip().splitlines():
        name, ttl, rdtype, rdata = line.split(maxsplit=3)
        records.setdefault(name, []).append((rdtype, int(ttl), rdata))
    return records


class Clock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeDns(SipResolver):
    """A SipResolver whose queries are answered from a zone, as dnspython answers them."""

    def __init__(
        self,
        records: str = "",
        *,
        timeout: float = 2.0,
        min_ttl: float = 0,
        max_ttl: float = 3600,
        negative_ttl: float = 30,
    ) -> None:
        self.clock = Clock()
        super().__init__(
            timeout=timeout,
            min_ttl=min_ttl,
            max_ttl=max_ttl,
            negative_ttl=negative_ttl,
            clock=self.clock,
            rng=random.Random(7),
        )
        self.zone = zone(records) if records else {}
        self.asked: list[tuple[str, str]] = []
        self.delays: dict[str, float] = {}  # name -> seconds before the answer
        self.servfail: set[str] = set()
        self.soa: tuple[int, int] | None = None  # (TTL, MINIMUM) of an SOA in negative answers

    def set_zone(self, records: str) -> None:
        self.zone = zone(records)

    async def _ask(self, name: str, rdtype: dns.rdatatype.RdataType) -> dns.resolver.Answer:
        self.asked.append((rdtype.name, name))
        delay = self.delays.get(name)
        if delay:
            await asyncio.sleep(delay)
        if name in self.servfail:
            raise dns.resolver.NoNameservers
        qname = dns.name.from_text(name)
        response = dns.message.make_response(dns.message.make_query(qname, rdtype))
        assert isinstance(response, dns.message.QueryMessage)
        records = self.zone.get(name)
        found = [(ttl, text) for kind, ttl, text in records or () if kind == rdtype.name]
        if found:
            rrset = response.find_rrset(response.answer, qname, IN, rdtype, create=True)
            for ttl, text in found:
                rrset.add(dns.rdata.from_text(IN, rdtype, text), ttl)
        elif self.soa is not None:
            ttl, minimum = self.soa
            soa = dns.rdata.from_text(
                IN, "SOA", f"ns.example.com. admin.example.com. 1 3600 600 86400 {minimum}"
            )
            owner = dns.name.from_text("example.com")
            response.find_rrset(response.authority, owner, IN, soa.rdtype, create=True).add(soa, ttl)
        if records is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            raise dns.resolver.NXDOMAIN(qnames=[qname], responses={qname: response})  # type: ignore[no-untyped-call]
        return dns.resolver.Answer(qname, rdtype, IN, response)

    async def triples(
        self,
        host: str,
        *,
        port: int | None = None,
        transport: str | None = None,
        secure: bool = False,
        supported: frozenset[str] = ALL,
    ) -> list[Triple]:
        found = await self.targets(host, port=port, transport=transport, secure=secure, supported=supported)
        return [(t.transport, t.host, t.port) for t in found]


# The example of RFC 3263 §4.1, with addresses.
RFC_EXAMPLE = """
example.com 300 NAPTR 50 50 "s" "SIPS+D2T" "" _sips._tcp.example.com.
example.com 300 NAPTR 90 50 "s" "SIP+D2T" "" _sip._tcp.example.com
example.com 300 NAPTR 100 50 "s" "SIP+D2U" "" _sip._udp.example.com.
_sips._tcp.example.com 300 SRV 0 1 5061 server1.example.com.
_sip._tcp.example.com 300 SRV 0 1 5060 server1.example.com.
_sip._tcp.example.com 300 SRV 0 2 5060 server2.example.com.
_sip._udp.example.com 300 SRV 0 0 5060 server1.example.com.
server1.example.com 300 A 192.0.2.1
server1.example.com 300 AAAA 2001:db8::1
server2.example.com 300 A 192.0.2.2
example.com 300 A 192.0.2.100
"""


# ---------------------------------------------------------------------------- §4.1, §4.2 without DNS


@pytest.mark.parametrize(
    ("host", "port", "transport", "secure", "expected"),
    [
        ("192.0.2.1", None, None, False, ("UDP", "192.0.2.1", 5060)),
        ("192.0.2.1", None, None, True, ("TLS", "192.0.2.1", 5061)),
        ("192.0.2.1", 5080, None, False, ("UDP", "192.0.2.1", 5080)),
        ("192.0.2.1", None, "tcp", False, ("TCP", "192.0.2.1", 5060)),
        ("192.0.2.1", None, "tls", False, ("TLS", "192.0.2.1", 5061)),
        ("192.0.2.1", None, "tcp", True, ("TLS", "192.0.2.1", 5061)),  # sips + transport=tcp: TLS
        ("[2001:DB8:0:0::1]", None, None, False, ("UDP", "2001:db8::1", 5060)),
        ("2001:db8::1", 5090, "udp", False, ("UDP", "2001:db8::1", 5090)),
    ],
)
async def test_ip_literals_need_no_query(
    host: str, port: int | None, transport: str | None, secure: bool, expected: Triple
) -> None:
    resolver = FakeDns(RFC_EXAMPLE)
    assert await resolver.triples(host, port=port, transport=transport, secure=secure) == [expected]
    assert resolver.asked == []


async def test_a_sips_uri_over_udp_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="sips"):
        await FakeDns().targets("example.com", port=None, transport="udp", secure=True, supported=ALL)


async def test_an_explicit_port_means_addresses_only() -> None:
    resolver = FakeDns(RFC_EXAMPLE)
    # §4.2: "the client performs an A or AAAA record lookup of the domain name"; UDP for sip:.
    assert await resolver.triples("server1.example.com", port=5070) == [
        ("UDP", "192.0.2.1", 5070),
        ("UDP", "2001:db8::1", 5070),
    ]
    assert sorted(resolver.asked) == [("A", "server1.example.com"), ("AAAA", "server1.example.com")]
    assert await resolver.triples("server2.example.com", port=5071, secure=True) == [
        ("TLS", "192.0.2.2", 5071)
    ]
    assert await resolver.triples("server2.example.com", port=5072, transport="TCP") == [
        ("TCP", "192.0.2.2", 5072)
    ]


@pytest.mark.parametrize(
    ("transport", "secure", "srv_name", "expected"),
    [
        ("tcp", False, "_sip._tcp.example.com", "TCP"),
        ("udp", False, "_sip._udp.example.com", "UDP"),
        ("tls", False, "_sips._tcp.example.com", "TLS"),  # "if the client wishes to use TLS ... _sips"
        ("tcp", True, "_sips._tcp.example.com", "TLS"),
    ],
)
async def test_an_explicit_transport_queries_its_own_srv(
    transport: str, secure: bool, srv_name: str, expected: str
) -> None:
    resolver = FakeDns(RFC_EXAMPLE)
    found = await resolver.triples("example.com", transport=transport, secure=secure)
    assert {t[0] for t in found} == {expected}
    assert ("NAPTR", "example.com") not in resolver.asked
    assert [name for kind, name in resolver.asked if kind == "SRV"] == [srv_name]


async def test_an_explicit_transport_without_srv_uses_its_default_port() -> None:
    resolver = FakeDns("pbx.example.com 300 A 192.0.2.5")
    assert await resolver.triples("pbx.example.com", transport="tcp") == [("TCP", "192.0.2.5", 5060)]
    assert await resolver.triples("pbx.example.com", transport="tls") == [("TLS", "192.0.2.5", 5061)]


# ---------------------------------------------------------------------------- §4.1 NAPTR


async def test_naptr_picks_the_most_preferred_supported_transport() -> None:
    # §4.1: "Since the client supports TCP and UDP, TCP will be used, targeted to a host
    # determined by an SRV lookup of _sip._tcp.example.com."
    resolver = FakeDns(RFC_EXAMPLE)
    found = await resolver.targets(
        "example.com", port=None, transport=None, secure=False, supported=ALL - {"TLS"}
    )
    assert {(t.transport, t.host, t.port) for t in found} == {
        ("TCP", "192.0.2.1", 5060),
        ("TCP", "2001:db8::1", 5060),
        ("TCP", "192.0.2.2", 5060),
    }
    srv_asked = {name for kind, name in resolver.asked if kind == "SRV"}
    assert srv_asked == {"_sip._tcp.example.com"}  # a lower order matched: higher ones are not considered


async def test_a_sip_uri_keeps_sips_services_when_tls_is_supported() -> None:
    resolver = FakeDns(RFC_EXAMPLE)
    found = await resolver.targets("example.com", port=None, transport=None, secure=False, supported=ALL)
    assert found == [
        Target("TLS", "192.0.2.1", 5061, "server1.example.com", "example.com"),
        Target("TLS", "2001:db8::1", 5061, "server1.example.com", "example.com"),
    ]
    assert found[0].address == Address("TLS", "192.0.2.1", 5061)


async def test_a_sips_uri_keeps_only_sips_services() -> None:
    resolver = FakeDns(
        """
example.com 300 NAPTR 10 50 "s" "SIP+D2U" "" _sip._udp.example.com.
example.com 300 NAPTR 20 50 "s" "SIPS+D2T" "" _sips._tcp.example.com.
_sip._udp.example.com 300 SRV 0 0 5060 server1.example.com.
_sips._tcp.example.com 300 SRV 0 0 5061 server2.example.com.
server1.example.com 300 A 192.0.2.1
server2.example.com 300 A 192.0.2.2
"""
    )
    assert await resolver.triples("example.com", secure=True) == [("TLS", "192.0.2.2", 5061)]
    assert await resolver.triples("example.com") == [("UDP", "192.0.2.1", 5060)]


async def test_naptr_records_that_do_not_apply_are_discarded() -> None:
    resolver = FakeDns(
        """
example.com 300 NAPTR 1 1 "u" "E2U+sip" "!^.*$!sip:info@example.com!" .
example.com 300 NAPTR 2 1 "s" "http+N2L" "" _http._tcp.example.com.
example.com 300 NAPTR 3 1 "a" "SIP+D2U" "" server2.example.com.
example.com 300 NAPTR 4 1 "" "SIP+D2U" "" other.example.com.
example.com 300 NAPTR 5 1 "s" "SIP+D2S" "" _sip._sctp.example.com.
example.com 300 NAPTR 6 1 "s" "SIPS+D2T" "" _sips._tcp.example.com.
example.com 300 NAPTR 7 1 "S" "sip+d2u" "" _sip._udp.example.com.
_sip._udp.example.com 300 SRV 0 0 5060 server1.example.com.
_sips._tcp.example.com 300 SRV 0 0 5061 server1.example.com.
_sip._sctp.example.com 300 SRV 0 0 5060 server1.example.com.
server1.example.com 300 A 192.0.2.1
"""
    )
    # Only the last one applies to a client of UDP and TCP (flags and services are case-blind).
    found = await resolver.triples("example.com", supported=frozenset({"UDP", "TCP"}))
    assert found == [("UDP", "192.0.2.1", 5060)]
    assert {name for kind, name in resolver.asked if kind == "SRV"} == {"_sip._udp.example.com"}


async def test_naptr_records_of_one_order_are_taken_by_preference() -> None:
    resolver = FakeDns(
        """
example.com 300 NAPTR 10 20 "s" "SIP+D2U" "" _sip._udp.example.com.
example.com 300 NAPTR 10 10 "s" "SIP+D2T" "" _sip._tcp.example.com.
example.com 300 NAPTR 20 10 "s" "SIPS+D2T" "" _sips._tcp.example.com.
_sip._udp.example.com 300 SRV 0 0 5060 server1.example.com.
_sip._tcp.example.com 300 SRV 0 0 5060 server2.example.com.
_sips._tcp.example.com 300 SRV 0 0 5061 server2.example.com.
server1.example.com 300 A 192.0.2.1
server2.example.com 300 A 192.0.2.2
"""
    )
    assert await resolver.triples("example.com") == [("TCP", "192.0.2.2", 5060), ("UDP", "192.0.2.1", 5060)]


async def test_a_naptr_order_that_leads_nowhere_gives_way_to_the_next() -> None:
    resolver = FakeDns(
        """
example.com 300 NAPTR 10 10 "s" "SIP+D2T" "" _sip._tcp.example.com.
example.com 300 NAPTR 20 10 "s" "SIP+D2U" "" _sip._udp.example.com.
_sip._udp.example.com 300 SRV 0 0 5060 server1.example.com.
server1.example.com 300 A 192.0.2.1
"""
    )
    assert await resolver.triples("example.com") == [("UDP", "192.0.2.1", 5060)]


async def test_naptr_without_any_srv_uses_the_addresses_of_the_domain() -> None:
    resolver = FakeDns(
        """
example.com 300 NAPTR 10 10 "s" "SIP+D2T" "" _sip._tcp.example.com.
example.com 300 A 192.0.2.100
"""
    )
    # §4.2: "using the transport protocol determined previously, at the default port".
    assert await resolver.triples("example.com") == [("TCP", "192.0.2.100", 5060)]


# ---------------------------------------------------------------------------- §4.1 without NAPTR


async def test_without_naptr_every_supported_transport_is_asked_for_srv() -> None:
    resolver = FakeDns(
        """
_sip._tcp.example.com 300 SRV 0 0 5070 server2.example.com.
_sip._udp.example.com 300 SRV 0 0 5080 server1.example.com.
server1.example.com 300 A 192.0.2.1
server2.example.com 300 A 192.0.2.2
"""
    )
    assert await resolver.triples("example.com") == [("TCP", "192.0.2.2", 5070), ("UDP", "192.0.2.1", 5080)]
    assert ("SRV", "_sips._tcp.example.com") not in resolver.asked  # "_sip" for SIP URIs
    assert await resolver.triples("example.com", supported=frozenset({"UDP"})) == [("UDP", "192.0.2.1", 5080)]


async def test_without_naptr_a_sips_uri_asks_for_sips_over_tcp() -> None:
    resolver = FakeDns(
        """
_sips._tcp.example.com 300 SRV 0 0 5062 server1.example.com.
_sip._udp.example.com 300 SRV 0 0 5060 server1.example.com.
server1.example.com 300 A 192.0.2.1
"""
    )
    found = await resolver.targets("example.com", port=None, transport=None, secure=True, supported=ALL)
    assert found == [Target("TLS", "192.0.2.1", 5062, "server1.example.com", "example.com")]
    assert [name for kind, name in resolver.asked if kind == "SRV"] == ["_sips._tcp.example.com"]


async def test_without_naptr_and_srv_the_addresses_on_the_default_port() -> None:
    resolver = FakeDns(
        """
pbx.example.com 300 A 192.0.2.5
pbx.example.com 300 AAAA 2001:db8::5
"""
    )
    assert await resolver.triples("pbx.example.com") == [
        ("UDP", "192.0.2.5", 5060),
        ("UDP", "2001:db8::5", 5060),
    ]
    assert await resolver.triples("pbx.example.com", secure=True) == [
        ("TLS", "192.0.2.5", 5061),
        ("TLS", "2001:db8::5", 5061),
    ]
    # A proxy that cannot send UDP uses TCP (§4.1: "another transport protocol ... MAY be used").
    assert await resolver.triples("PBX.example.com.", supported=frozenset({"TCP"})) == [
        ("TCP", "192.0.2.5", 5060),
        ("TCP", "2001:db8::5", 5060),
    ]


async def test_a_srv_target_of_dot_means_no_service_and_no_fallback() -> None:
    resolver = FakeDns(
        """
_sip._udp.example.com 300 SRV 0 0 0 .
_sip._tcp.example.com 300 SRV 0 0 0 .
example.com 300 A 192.0.2.100
"""
    )
    with pytest.raises(SipResolveError):
        await resolver.targets("example.com", port=None, transport=None, secure=False, supported=ALL)
    assert ("A", "example.com") not in resolver.asked


async def test_srv_targets_that_do_not_resolve_are_skipped_and_duplicates_dropped() -> None:
    resolver = FakeDns(
        """
_sip._udp.example.com 300 SRV 0 0 5060 gone.example.com.
_sip._udp.example.com 300 SRV 1 0 5060 server1.example.com.
_sip._udp.example.com 300 SRV 2 0 5060 alias.example.com.
server1.example.com 300 A 192.0.2.1
alias.example.com 300 A 192.0.2.1
"""
    )
    assert await resolver.triples("example.com", transport="udp") == [("UDP", "192.0.2.1", 5060)]


# ---------------------------------------------------------------------------- RFC 2782 order


SRV_ZONE = """
_sip._udp.example.com 300 SRV 10 0 5060 backup.example.com.
_sip._udp.example.com 300 SRV 0 10 5060 w10.example.com.
_sip._udp.example.com 300 SRV 0 20 5060 w20.example.com.
_sip._udp.example.com 300 SRV 0 70 5060 w70.example.com.
_sip._udp.example.com 300 SRV 0 0 5060 w0.example.com.
_sip._udp.example.com 300 SRV 5 0 5060 middle.example.com.
backup.example.com 300 A 192.0.2.99
middle.example.com 300 A 192.0.2.50
w0.example.com 300 A 192.0.2.0
w10.example.com 300 A 192.0.2.10
w20.example.com 300 A 192.0.2.20
w70.example.com 300 A 192.0.2.70
"""


async def test_srv_priorities_come_in_order_and_weights_draw_the_order_within_one() -> None:
    resolver = FakeDns(SRV_ZONE)
    firsts: Counter[str] = Counter()
    draws = 10_000
    for _ in range(draws):
        found = await resolver.targets("example.com", port=None, transport="udp", secure=False, supported=ALL)
        names = [t.name for t in found]
        # Priority ascending, always.
        assert sorted(names[:4]) == [
            "w0.example.com",
            "w10.example.com",
            "w20.example.com",
            "w70.example.com",
        ]
        assert names[4:] == ["middle.example.com", "backup.example.com"]
        firsts[names[0]] += 1
    # RFC 2782: a draw in [0, 100]; weight w is first with probability w/101, weight 0 with 1/101
    # ("a very small chance").  Bounds are more than 4 standard deviations wide.
    for name, weight in [("w0", 1), ("w10", 10), ("w20", 20), ("w70", 70)]:
        expected = draws * weight / 101
        assert abs(firsts[f"{name}.example.com"] - expected) < 4.5 * (expected**0.5) + 5, firsts
    assert ("SRV", "_sip._udp.example.com") in resolver.asked
    assert len(resolver.asked) == 1 + 2 * 6  # answered from the cache after the first call


async def test_srv_records_of_weight_zero_only_are_spread_evenly() -> None:
    resolver = FakeDns(
        """
_sip._udp.example.com 300 SRV 0 0 5060 a.example.com.
_sip._udp.example.com 300 SRV 0 0 5060 b.example.com.
a.example.com 300 A 192.0.2.1
b.example.com 300 A 192.0.2.2
"""
    )
    firsts = Counter([(await resolver.triples("example.com", transport="udp"))[0][1] for _ in range(2000)])
    assert 850 < firsts["192.0.2.1"] < 1150, firsts


# ---------------------------------------------------------------------------- TTLs and the cache


async def test_answers_live_for_their_ttl() -> None:
    resolver = FakeDns("pbx.example.com 60 A 192.0.2.5\npbx.example.com 60 AAAA 2001:db8::5")
    assert await resolver.triples("pbx.example.com", port=5060) == [
        ("UDP", "192.0.2.5", 5060),
        ("UDP", "2001:db8::5", 5060),
    ]
    asked = len(resolver.asked)
    resolver.set_zone("pbx.example.com 60 A 192.0.2.6")
    resolver.clock.now += 59
    assert [t[1] for t in await resolver.triples("pbx.example.com", port=5060)] == [
        "192.0.2.5",
        "2001:db8::5",
    ]
    assert len(resolver.asked) == asked
    resolver.clock.now += 2
    assert await resolver.triples("pbx.example.com", port=5060) == [("UDP", "192.0.2.6", 5060)]


async def test_each_record_set_keeps_its_own_ttl() -> None:
    resolver = FakeDns(
        """
_sip._udp.example.com 10 SRV 0 0 5060 server1.example.com.
server1.example.com 100 A 192.0.2.1
server1.example.com 100 AAAA 2001:db8::1
"""
    )
    await resolver.triples("example.com", transport="udp")
    resolver.asked.clear()
    resolver.clock.now += 50
    await resolver.triples("example.com", transport="udp")
    assert resolver.asked == [("SRV", "_sip._udp.example.com")]


@pytest.mark.parametrize(
    ("ttl", "options", "still_cached_at", "expired_at"),
    [
        (1, {"min_ttl": 10.0}, 9.0, 11.0),  # raised to min_ttl
        (86400, {"max_ttl": 100.0}, 99.0, 101.0),  # lowered to max_ttl
    ],
)
async def test_ttls_are_clamped(
    ttl: int, options: dict[str, float], still_cached_at: float, expired_at: float
) -> None:
    resolver = FakeDns(
        f"pbx.example.com {ttl} A 192.0.2.5\npbx.example.com {ttl} AAAA 2001:db8::5", **options
    )
    start = resolver.clock.now
    await resolver.triples("pbx.example.com", port=5060)
    resolver.asked.clear()
    resolver.clock.now = start + still_cached_at
    await resolver.triples("pbx.example.com", port=5060)
    assert resolver.asked == []
    resolver.clock.now = start + expired_at
    await resolver.triples("pbx.example.com", port=5060)
    assert resolver.asked == [("A", "pbx.example.com"), ("AAAA", "pbx.example.com")]


async def test_a_zero_ttl_is_not_cached() -> None:
    resolver = FakeDns("pbx.example.com 0 A 192.0.2.5")
    await resolver.triples("pbx.example.com", port=5060)
    await resolver.triples("pbx.example.com", port=5060)
    assert resolver.asked.count(("A", "pbx.example.com")) == 2


async def test_negative_answers_are_cached_for_negative_ttl() -> None:
    resolver = FakeDns("pbx.example.com 300 A 192.0.2.5", negative_ttl=30.0)
    await resolver.triples("pbx.example.com", port=5060)  # AAAA: no records
    with pytest.raises(SipResolveError):
        await resolver.triples("nx.example.com", port=5060)  # NXDOMAIN
    resolver.asked.clear()
    resolver.clock.now += 29
    await resolver.triples("pbx.example.com", port=5060)
    with pytest.raises(SipResolveError):
        await resolver.triples("nx.example.com", port=5060)
    assert resolver.asked == []
    resolver.set_zone("nx.example.com 300 A 192.0.2.7")
    resolver.clock.now += 2
    assert await resolver.triples("nx.example.com", port=5060) == [("UDP", "192.0.2.7", 5060)]
    await resolver.triples("pbx.example.com", port=5060)
    assert resolver.asked.count(("AAAA", "pbx.example.com")) == 1  # the A answer is still fresh


@pytest.mark.parametrize(("soa", "kept"), [((3600, 5), 5.0), ((8, 3600), 8.0), ((3600, 3600), 30.0)])
async def test_negative_answers_follow_the_soa_up_to_negative_ttl(soa: tuple[int, int], kept: float) -> None:
    # RFC 2308 §3: the smaller of the SOA's TTL and its MINIMUM; capped by negative_ttl (30).
    resolver = FakeDns(negative_ttl=30.0)
    resolver.soa = soa
    start = resolver.clock.now
    for _ in range(2):
        with pytest.raises(SipResolveError):
            await resolver.triples("nx.example.com", port=5060)
    assert resolver.asked.count(("A", "nx.example.com")) == 1
    resolver.clock.now = start + kept - 0.5
    with pytest.raises(SipResolveError):
        await resolver.triples("nx.example.com", port=5060)
    assert resolver.asked.count(("A", "nx.example.com")) == 1
    resolver.clock.now = start + kept + 0.5
    with pytest.raises(SipResolveError):
        await resolver.triples("nx.example.com", port=5060)
    assert resolver.asked.count(("A", "nx.example.com")) == 2


async def test_a_server_failure_is_not_an_answer() -> None:
    resolver = FakeDns(RFC_EXAMPLE)
    resolver.servfail.add("example.com")
    # The NAPTR query fails: on to SRV as if there were none (§4.1), never cached.
    found = await resolver.triples("example.com", supported=frozenset({"UDP"}))
    assert found == [("UDP", "192.0.2.1", 5060), ("UDP", "2001:db8::1", 5060)]
    await resolver.triples("example.com", supported=frozenset({"UDP"}))
    assert resolver.asked.count(("NAPTR", "example.com")) == 2


async def test_a_query_that_times_out_fails_that_step_only(monkeypatch: pytest.MonkeyPatch) -> None:
    resolver = FakeDns(RFC_EXAMPLE, timeout=0.05)
    resolver.delays["example.com"] = 10.0  # the NAPTR query hangs
    started = time.monotonic()
    found = await asyncio.wait_for(resolver.triples("example.com", supported=frozenset({"UDP"})), 2)
    assert time.monotonic() - started < 1.0
    assert found == [("UDP", "192.0.2.1", 5060), ("UDP", "2001:db8::1", 5060)]
    resolver.delays["pbx.example.com"] = 10.0
    with pytest.raises(SipResolveError, match=r"A pbx\.example\.com: no answer within 0\.05 s"):
        await asyncio.wait_for(
            resolver.targets("pbx.example.com", port=5060, transport=None, secure=False, supported=ALL), 2
        )


async def test_concurrent_lookups_share_one_query() -> None:
    resolver = FakeDns(RFC_EXAMPLE)
    for name in ("example.com", "_sip._tcp.example.com", "server1.example.com", "server2.example.com"):
        resolver.delays[name] = 0.01
    results = await asyncio.wait_for(
        asyncio.gather(*(resolver.triples("example.com", supported=frozenset({"TCP"})) for _ in range(20))), 2
    )
    assert all(set(result) == set(results[0]) for result in results)
    assert Counter(resolver.asked) == {
        ("NAPTR", "example.com"): 1,
        ("SRV", "_sip._tcp.example.com"): 1,
        ("A", "server1.example.com"): 1,
        ("AAAA", "server1.example.com"): 1,
        ("A", "server2.example.com"): 1,
        ("AAAA", "server2.example.com"): 1,
    }


async def test_a_caller_that_gives_up_does_not_cancel_the_shared_query() -> None:
    resolver = FakeDns("pbx.example.com 300 A 192.0.2.5")
    resolver.delays["pbx.example.com"] = 0.05
    impatient = asyncio.ensure_future(resolver.triples("pbx.example.com", port=5060))
    patient = asyncio.ensure_future(resolver.triples("pbx.example.com", port=5060))
    await asyncio.sleep(0.01)
    impatient.cancel()
    assert await asyncio.wait_for(patient, 2) == [("UDP", "192.0.2.5", 5060)]
    assert resolver.asked.count(("A", "pbx.example.com")) == 1


async def test_the_cache_is_bounded_and_forgets_the_oldest_first() -> None:
    class Small(FakeDns):
        MAX_ENTRIES = 4

    resolver = Small("\n".join(f"h{i}.example.com 300 A 192.0.2.{i}" for i in range(3)))
    for i in range(3):
        await resolver.triples(f"h{i}.example.com", port=5060)  # two entries each: A and AAAA
    assert len(resolver._cache) == 4
    resolver.asked.clear()
    await resolver.triples("h2.example.com", port=5060)
    await resolver.triples("h1.example.com", port=5060)
    assert resolver.asked == []
    await resolver.triples("h0.example.com", port=5060)
    assert resolver.asked == [("A", "h0.example.com"), ("AAAA", "h0.example.com")]


# ---------------------------------------------------------------------------- §4.3 failed targets


async def test_a_failed_target_goes_last_until_its_time_is_up() -> None:
    resolver = FakeDns(
        """
_sip._udp.example.com 300 SRV 0 0 5060 primary.example.com.
_sip._udp.example.com 300 SRV 1 0 5060 backup.example.com.
primary.example.com 300 A 192.0.2.1
primary.example.com 300 A 192.0.2.2
backup.example.com 300 A 192.0.2.9
"""
    )
    first = await resolver.targets("example.com", port=None, transport="udp", secure=False, supported=ALL)
    assert [t.host for t in first] == ["192.0.2.1", "192.0.2.2", "192.0.2.9"]
    resolver.mark_failed(first[0], 30)
    # One failed address of a name does not demote the other address of that name.
    assert [t[1] for t in await resolver.triples("example.com", transport="udp")] == [
        "192.0.2.2",
        "192.0.2.9",
        "192.0.2.1",
    ]
    # The same IP on another port or transport has not failed.
    assert await resolver.triples("192.0.2.1", port=5070) == [("UDP", "192.0.2.1", 5070)]
    assert await resolver.triples("primary.example.com", transport="tcp") == [
        ("TCP", "192.0.2.1", 5060),
        ("TCP", "192.0.2.2", 5060),
    ]
    resolver.clock.now += 31
    assert [t[1] for t in await resolver.triples("example.com", transport="udp")] == [
        "192.0.2.1",
        "192.0.2.2",
        "192.0.2.9",
    ]
    resolver.mark_failed(first[0], 30)
    resolver.mark_failed(first[0], 0)  # a success: forgotten at once
    assert (await resolver.triples("example.com", transport="udp"))[0][1] == "192.0.2.1"


async def test_failed_targets_are_remembered_within_bounds() -> None:
    class Small(FakeDns):
        MAX_FAILED = 3

    resolver = Small()
    for i in range(5):
        resolver.mark_failed(Target("UDP", f"192.0.2.{i}", 5060, "x", "x"), 30)
    assert list(resolver._failed) == [
        ("UDP", "192.0.2.2", 5060),
        ("UDP", "192.0.2.3", 5060),
        ("UDP", "192.0.2.4", 5060),
    ]
    resolver.clock.now += 31
    resolver.mark_failed(Target("UDP", "192.0.2.9", 5060, "x", "x"), 30)
    assert list(resolver._failed) == [("UDP", "192.0.2.9", 5060)]


# ---------------------------------------------------------------------------- errors


async def test_a_name_that_does_not_resolve_says_what_was_tried() -> None:
    resolver = FakeDns()
    with pytest.raises(SipResolveError) as caught:
        await resolver.targets("nowhere.example.com", port=None, transport=None, secure=False, supported=ALL)
    error = caught.value
    assert isinstance(error, OSError)
    assert error.host == "nowhere.example.com"
    message = str(error)
    assert message.startswith("cannot resolve SIP host nowhere.example.com: ")
    for step in (
        "NAPTR nowhere.example.com: NXDOMAIN",
        "SRV _sip._tcp.nowhere.example.com: NXDOMAIN",
        "SRV _sip._udp.nowhere.example.com: NXDOMAIN",
        "A nowhere.example.com: NXDOMAIN",
        "AAAA nowhere.example.com: NXDOMAIN",
    ):
        assert step in message


@pytest.mark.parametrize(
    "options",
    [{"timeout": 0.0}, {"min_ttl": -1.0}, {"min_ttl": 10.0, "max_ttl": 5.0}, {"negative_ttl": -1.0}],
)
def test_nonsense_settings_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="timeout"):
        SipResolver(**options)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- a real DNS server


@pytest.fixture
def dnsmasq() -> Iterator[Dnsmasq]:
    reason = dnsmasq_unusable()
    if reason is not None:
        pytest.skip(reason)
    server = Dnsmasq()
    try:
        yield server
    finally:
        server.stop()


DNSMASQ_ZONE = [
    "--naptr-record=example.test,10,10,s,SIPS+D2T,,_sips._tcp.example.test",
    "--naptr-record=example.test,20,10,S,SIP+D2T,,_sip._tcp.example.test",
    "--naptr-record=example.test,30,10,s,SIP+D2U,,_sip._udp.example.test",
    "--srv-host=_sips._tcp.example.test,edge.example.test,5071,0,10",
    "--srv-host=_sip._tcp.example.test,edge.example.test,5070,0,10",
    "--srv-host=_sip._udp.example.test,backup.example.test,5090,10,10",
    "--srv-host=_sip._udp.example.test,primary.example.test,5080,0,10",
    "--srv-host=_sips._tcp.plain.test,tls.plain.test,5063,0,0",
    "--srv-host=_sip._udp.plain.test,udp.plain.test,5062,0,0",
    "--host-record=edge.example.test,192.0.2.7",
    "--host-record=primary.example.test,192.0.2.1,2001:db8::1",
    "--host-record=backup.example.test,192.0.2.2",
    "--host-record=tls.plain.test,192.0.2.3",
    "--host-record=udp.plain.test,192.0.2.4",
]


@pytest.mark.integration
async def test_dnsmasq_naptr_srv_and_addresses_in_order(dnsmasq: Dnsmasq) -> None:
    dnsmasq.start(DNSMASQ_ZONE)
    resolver = SipResolver(nameservers=[dnsmasq.nameserver], timeout=2.0)
    udp_only = await asyncio.wait_for(
        resolver.targets(
            "example.test", port=None, transport=None, secure=False, supported=frozenset({"UDP"})
        ),
        10,
    )
    assert [(t.transport, t.host, t.port, t.name) for t in udp_only] == [
        ("UDP", "192.0.2.1", 5080, "primary.example.test"),
        ("UDP", "2001:db8::1", 5080, "primary.example.test"),
        ("UDP", "192.0.2.2", 5090, "backup.example.test"),
    ]
    # NAPTR order 10 (SIPS+D2T) wins when TLS is supported; order 20 (flag "S") when only TCP is.
    tls = await resolver.targets("example.test", port=None, transport=None, secure=False, supported=ALL)
    assert tls == [Target("TLS", "192.0.2.7", 5071, "edge.example.test", "example.test")]
    tcp = await resolver.targets(
        "example.test", port=None, transport=None, secure=False, supported=frozenset({"TCP"})
    )
    assert [(t.transport, t.port) for t in tcp] == [("TCP", 5070)]
    with pytest.raises(SipResolveError, match=r"NAPTR nowhere\.test: NXDOMAIN"):
        await resolver.targets("nowhere.test", port=None, transport=None, secure=False, supported=ALL)


@pytest.mark.integration
async def test_dnsmasq_sips_without_naptr_selects_tls(dnsmasq: Dnsmasq) -> None:
    dnsmasq.start(DNSMASQ_ZONE)
    resolver = SipResolver(nameservers=[dnsmasq.nameserver], timeout=2.0)
    secure = await resolver.targets("plain.test", port=None, transport=None, secure=True, supported=ALL)
    assert secure == [Target("TLS", "192.0.2.3", 5063, "tls.plain.test", "plain.test")]
    plain = await resolver.targets("plain.test", port=None, transport=None, secure=False, supported=ALL)
    assert plain == [Target("UDP", "192.0.2.4", 5062, "udp.plain.test", "plain.test")]


@pytest.mark.integration
async def test_dnsmasq_a_changed_record_is_seen_once_its_ttl_is_over(dnsmasq: Dnsmasq) -> None:
    clock = Clock()
    dnsmasq.start(["--host-record=pbx.example.test,192.0.2.5"], ttl=5)
    resolver = SipResolver(nameservers=[dnsmasq.nameserver], timeout=2.0, clock=clock)
    before = await resolver.targets(
        "pbx.example.test", port=5060, transport=None, secure=False, supported=ALL
    )
    assert [t.host for t in before] == ["192.0.2.5"]
    dnsmasq.restart(["--host-record=pbx.example.test,192.0.2.6"], ttl=5)
    clock.now += 4  # within the TTL dnsmasq gave: the cached answer
    cached = await resolver.targets(
        "pbx.example.test", port=5060, transport=None, secure=False, supported=ALL
    )
    assert [t.host for t in cached] == ["192.0.2.5"]
    clock.now += 2
    after = await resolver.targets("pbx.example.test", port=5060, transport=None, secure=False, supported=ALL)
    assert [t.host for t in after] == ["192.0.2.6"]


@pytest.mark.integration
async def test_dnsmasq_that_does_not_answer_times_out(dnsmasq: Dnsmasq) -> None:
    # The port of a stopped dnsmasq: nothing answers there (ICMP port unreachable, or silence).
    resolver = SipResolver(nameservers=[dnsmasq.nameserver], timeout=0.3)
    started = time.monotonic()
    with pytest.raises(SipResolveError, match=r"A pbx\.example\.test: "):
        await resolver.targets("pbx.example.test", port=5060, transport=None, secure=False, supported=ALL)
    assert time.monotonic() - started < 2.0
