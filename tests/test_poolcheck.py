"""Event 40000 (docs/design.md §4): this instance among what DNS publishes for the pool.

The pool is the host of ``[proxy] record-route``: the targets of its SRV records
for every transport sipha listens on (``_sip._udp``, ``_sip._tcp``, ``_sips._tcp``)
and its A/AAAA records, at the record-route port or the transport's default port.
The resolver answers from a fake zone (:class:`tests.net.test_dns.FakeDns`); the
last test asks a real dnsmasq.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sipha.config import load_config_text
from sipha.net.dns import SipResolver
from sipha.poolcheck import check_pool_address
from sipha.sip.address import Address
from tests.net.dns_support import Dnsmasq, dnsmasq_unusable
from tests.net.test_dns import FakeDns

UDP = Address("UDP", "192.0.2.11", 5060)
TCP = Address("TCP", "192.0.2.11", 5060)
TLS = Address("TLS", "192.0.2.11", 5061)
POOL_SRV = """
_sip._udp.pool.example.com 300 SRV 0 0 5060 a.pool.example.com.
_sip._udp.pool.example.com 300 SRV 0 0 5060 b.pool.example.com.
_sip._tcp.pool.example.com 300 SRV 0 0 5060 b.pool.example.com.
a.pool.example.com 300 A 192.0.2.11
b.pool.example.com 300 A 192.0.2.12
"""


def config(record_route: str = "sip:pool.example.com;lr", sip_address: str = "") -> str:
    return f'[proxy]\nrecord-route = "{record_route}"\nsip-address = "{sip_address}"\n'


async def check(
    zone: str, bound: list[Address], caplog: pytest.LogCaptureFixture, **options: str
) -> tuple[bool, list[str], FakeDns]:
    """Run the check; (event 40000 raised, the warning lines, the resolver)."""
    resolver = FakeDns(zone)
    with caplog.at_level(logging.WARNING, logger="sipha"):
        event = await check_pool_address(load_config_text(config(**options)), bound, resolver)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("event 40000")]
    return event is not None, lines, resolver


async def test_an_instance_among_the_srv_targets_raises_nothing(caplog: pytest.LogCaptureFixture) -> None:
    raised, lines, resolver = await check(POOL_SRV, [UDP], caplog)
    assert (raised, lines) == (False, [])
    asked = [name for kind, name in resolver.asked if kind == "SRV"]
    assert asked == ["_sip._udp.pool.example.com"]  # the transports we listen on only


async def test_an_instance_missing_from_the_srv_targets_raises_40000(
    caplog: pytest.LogCaptureFixture,
) -> None:
    other = Address("UDP", "192.0.2.99", 5060)
    raised, lines, _ = await check(POOL_SRV, [other], caplog)
    assert raised
    (line,) = lines
    assert line.startswith("event 40000: own proxy address not found in the configured list")
    assert "192.0.2.11" in line  # the pool as DNS publishes it
    assert "192.0.2.12" in line


async def test_the_srv_port_counts(caplog: pytest.LogCaptureFixture) -> None:
    raised, _, _ = await check(POOL_SRV, [Address("UDP", "192.0.2.11", 5070)], caplog)
    assert raised


async def test_every_transport_we_listen_on_is_looked_up(caplog: pytest.LogCaptureFixture) -> None:
    # Listed for TCP only (b), listening on UDP and TCP there: found through _sip._tcp.
    b_udp, b_tcp = Address("UDP", "192.0.2.12", 5060), Address("TCP", "192.0.2.12", 5060)
    zone = POOL_SRV.replace("_sip._udp.pool.example.com 300 SRV 0 0 5060 b.pool.example.com.\n", "")
    raised, _, resolver = await check(zone, [b_udp, b_tcp], caplog)
    assert not raised
    assert {name for kind, name in resolver.asked if kind == "SRV"} == {
        "_sip._udp.pool.example.com",
        "_sip._tcp.pool.example.com",
    }


async def test_tls_is_looked_up_under_sips(caplog: pytest.LogCaptureFixture) -> None:
    zone = """
_sips._tcp.pool.example.com 300 SRV 0 0 5061 a.pool.example.com.
a.pool.example.com 300 A 192.0.2.11
"""
    raised, _, resolver = await check(zone, [TLS], caplog)
    assert not raised
    assert [name for kind, name in resolver.asked if kind == "SRV"] == ["_sips._tcp.pool.example.com"]


async def test_the_a_records_count_besides_the_srv_records(caplog: pytest.LogCaptureFixture) -> None:
    """User agents that do no SRV lookup "resolve the SIP Proxy FQDN into multiple A-records"."""
    zone = POOL_SRV + "pool.example.com 300 A 192.0.2.13\n"
    raised, _, _ = await check(zone, [Address("UDP", "192.0.2.13", 5060)], caplog)
    assert not raised


async def test_a_pool_of_a_records_only(caplog: pytest.LogCaptureFixture) -> None:
    zone = "pool.example.com 300 A 192.0.2.11\npool.example.com 300 A 192.0.2.12"
    raised, _, _ = await check(zone, [UDP, TCP], caplog)
    assert not raised


async def test_a_record_route_port_means_addresses_only(caplog: pytest.LogCaptureFixture) -> None:
    zone = POOL_SRV + "pool.example.com 300 A 192.0.2.11\n"
    raised, _, resolver = await check(
        zone, [Address("UDP", "192.0.2.11", 5080)], caplog, record_route="sip:pool.example.com:5080;lr"
    )
    assert not raised
    assert [kind for kind, _ in resolver.asked if kind in ("SRV", "NAPTR")] == []  # RFC 3263 §4.2


async def test_sip_address_is_ours_too(caplog: pytest.LogCaptureFixture) -> None:
    raised, _, _ = await check(POOL_SRV, [Address("UDP", "0.0.0.0", 5060)], caplog, sip_address="192.0.2.11")
    assert not raised


async def test_an_ip_record_route_needs_no_dns(caplog: pytest.LogCaptureFixture) -> None:
    raised, _, resolver = await check("", [UDP], caplog, record_route="sip:192.0.2.11;lr")
    assert not raised
    assert resolver.asked == []


async def test_a_pool_name_that_does_not_resolve_is_logged_under_40000(
    caplog: pytest.LogCaptureFixture,
) -> None:
    raised, lines, _ = await check("", [UDP], caplog)
    assert not raised
    (line,) = lines
    assert line.startswith(
        "event 40000: cannot resolve the pool address pool.example.com: cannot resolve SIP host"
    )
    assert "NXDOMAIN" in line


@pytest.mark.integration
async def test_the_pool_published_by_a_real_dns_server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    reason = dnsmasq_unusable()
    if reason is not None:
        pytest.skip(reason)
    server = Dnsmasq()
    request.addfinalizer(server.stop)
    server.start(
        [
            "--srv-host=_sip._udp.pool.test,a.pool.test,5070,0,0",
            "--srv-host=_sip._udp.pool.test,b.pool.test,5070,0,0",
            "--host-record=a.pool.test,192.0.2.11",
            "--host-record=b.pool.test,192.0.2.12",
        ]
    )
    resolver = SipResolver(nameservers=[server.nameserver], timeout=1.0)
    pool = load_config_text(config(record_route="sip:pool.test;lr"))
    assert await check_pool_address(pool, [Address("UDP", "192.0.2.12", 5070)], resolver) is None
    assert await check_pool_address(pool, [Address("UDP", "192.0.2.12", 5060)], resolver) is not None
