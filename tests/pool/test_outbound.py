"""sipha.sim.outbound: a simulated server's outbound proxy given by name, RFC 3263 §4.3 failover.

The name is resolved from a fake zone (:class:`tests.net.test_dns.FakeDns`) whose
targets are UDP sockets on 127.0.0.1 played by the test (:class:`tests.test_simulator.UdpPeer`):
one answers, one stays silent, one returns 503; a port where nothing listens gives
ICMP port unreachable, which the simulated server's transport reports as a transport
error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sipha.sim.outbound import OutboundProxy
from sipha.sim.server import SimulatedServer
from sipha.sip import Request, make_response
from sipha.sip.address import Address
from sipha.txn import TimerConfig
from tests.integration.support import free_port
from tests.net.test_dns import FakeDns
from tests.test_simulator import HOST, UdpPeer

FAST = TimerConfig(t1=0.05, t2=0.2, t4=0.5)  # Timer F: 3.2 s
SILENT = 0.3  # failover_timeout: s a target may stay silent


def zone(*ports: int) -> str:
    """``_sip._udp.pool.example.com``: one SRV target per port, priorities 10, 20, ... (all 127.0.0.1)."""
    lines = []
    for index, port in enumerate(ports):
        lines += [
            f"_sip._udp.pool.example.com 60 SRV {10 * (index + 1)} 0 {port} s{index}.pool.example.com.",
            f"s{index}.pool.example.com 60 A {HOST}",
        ]
    return "\n".join(lines)


@pytest.fixture
async def server() -> AsyncIterator[SimulatedServer]:
    async with SimulatedServer([("udp", HOST, 0)], timers=FAST) as simulated:
        yield simulated


async def answer(peer: UdpPeer, server: SimulatedServer, status: int) -> Request:
    """Read one request at ``peer`` and answer it ``status``; the request."""
    request = await peer.recv(2.0)
    assert isinstance(request, Request), request
    peer.send(make_response(request, status, "Whatever", to_tag="peer"), server.address("UDP").port)
    return request


async def test_the_request_goes_to_the_first_target_with_the_proxy_as_route(server: SimulatedServer) -> None:
    first, second = await UdpPeer.open(), await UdpPeer.open()
    try:
        outbound = OutboundProxy("sip:pool.example.com;transport=udp", FakeDns(zone(first.port, second.port)))
        sending = asyncio.create_task(outbound.send(server, "OPTIONS", "sip:alice@192.0.2.7:5062"))
        request = await answer(first, server, 200)
        delivery = await asyncio.wait_for(sending, 2.0)
    finally:
        first.close()
        second.close()
    assert request.uri == "sip:alice@192.0.2.7:5062"
    # RFC 3261 §8.1.2: the outbound proxy's URI, loose routing, as the Route.
    assert request.get_all("route") == ["<sip:pool.example.com;transport=udp;lr>"]
    # docs/design.md §2: sent from the listening port, so the proxy sees the member.
    assert first.last_source == (HOST, server.address("UDP").port)
    assert delivery.status == 200
    assert delivery.carrier == Address("UDP", HOST, first.port)
    assert [attempt.status for attempt in delivery.attempts] == [200]
    assert f"200 from udp:{HOST}:{first.port}" in delivery.describe()
    assert "failed" not in delivery.describe()


async def test_dead_silent_and_503_targets_fail_over_to_the_next_one(server: SimulatedServer) -> None:
    """RFC 3263 §4.3: a transport error, no answer, a 503: the next target, on a new branch."""
    dead = free_port()  # nothing listens: ICMP port unreachable
    silent, busy, answering = await UdpPeer.open(), await UdpPeer.open(), await UdpPeer.open()
    resolver = FakeDns(zone(dead, silent.port, busy.port, answering.port))
    outbound = OutboundProxy("sip:pool.example.com;transport=udp", resolver, failover_timeout=SILENT)
    try:
        sending = asyncio.create_task(outbound.send(server, "MESSAGE", "sip:alice@192.0.2.7"))
        ignored = await silent.recv(2.0)
        refused = await answer(busy, server, 503)
        answered = await answer(answering, server, 200)
        delivery = await asyncio.wait_for(sending, 2.0)
        # The failed targets are tried last for a while: the next request goes straight through.
        again = asyncio.create_task(outbound.send(server, "MESSAGE", "sip:alice@192.0.2.7"))
        await answer(answering, server, 200)
        second = await asyncio.wait_for(again, 2.0)
    finally:
        for peer in (silent, busy, answering):
            peer.close()
    assert isinstance(ignored, Request)
    branches = {message.top_via.branch for message in (ignored, refused, answered)}
    assert len(branches) == 3  # "a different value of the Via branch ID than the previous"
    assert [(attempt.target.port, attempt.status) for attempt in delivery.attempts] == [
        (dead, None),
        (silent.port, None),
        (busy.port, 503),
        (answering.port, 200),
    ]
    dead_attempt, silent_attempt = delivery.attempts[0], delivery.attempts[1]
    assert dead_attempt.seconds < SILENT  # the transport error, not the timeout
    assert SILENT <= silent_attempt.seconds < 2 * SILENT
    assert delivery.status == 200
    assert delivery.carrier == Address("UDP", HOST, answering.port)
    line = delivery.describe()
    assert f"failed: udp:{HOST}:{dead} (no answer after" in line
    assert f"udp:{HOST}:{busy.port} (503 after" in line
    assert [attempt.target.port for attempt in second.attempts] == [answering.port]


async def test_every_target_failing_ends_with_the_last_outcome(server: SimulatedServer) -> None:
    busy = await UdpPeer.open()
    try:
        outbound = OutboundProxy("sip:pool.example.com;transport=udp", FakeDns(zone(free_port(), busy.port)))
        sending = asyncio.create_task(outbound.send(server, "OPTIONS", "sip:pool.example.com"))
        await answer(busy, server, 503)
        delivery = await asyncio.wait_for(sending, 2.0)
    finally:
        busy.close()
    assert [attempt.status for attempt in delivery.attempts] == [None, 503]
    assert delivery.status == 503


async def test_a_name_that_does_not_resolve_is_said(server: SimulatedServer) -> None:
    outbound = OutboundProxy("sip:nowhere.example.com", FakeDns("x.example.com 60 A 192.0.2.1"))
    delivery = await outbound.send(server, "OPTIONS", "sip:nowhere.example.com")
    assert delivery.status is None
    assert delivery.attempts == ()
    assert "cannot resolve SIP host nowhere.example.com" in delivery.describe()


async def test_targets_on_a_transport_the_server_does_not_listen_on_are_skipped(
    server: SimulatedServer,
) -> None:
    records = (
        f"_sip._tcp.pool.example.com 60 SRV 10 0 5060 s.pool.example.com.\ns.pool.example.com 60 A {HOST}"
    )
    outbound = OutboundProxy("sip:pool.example.com;transport=tcp", FakeDns(records))
    delivery = await outbound.send(server, "OPTIONS", "sip:pool.example.com")
    assert delivery.status is None
    assert delivery.attempts == ()
    assert "no target on a transport this server listens on (UDP)" in delivery.describe()


def test_bad_settings_are_refused() -> None:
    resolver = FakeDns()
    with pytest.raises(ValueError, match="a sip: or sips: URI is needed"):
        OutboundProxy("tel:+15551234", resolver)
    with pytest.raises(ValueError, match="not a URI"):
        OutboundProxy("sip:pool example", resolver)
    with pytest.raises(ValueError, match="failover_timeout"):
        OutboundProxy("sip:pool.example.com", resolver, failover_timeout=0)
    proxy = OutboundProxy("sip:pool.example.com:5070;lr", resolver)
    assert proxy.route == "sip:pool.example.com:5070;lr"
    assert proxy.request_uri == "sip:pool.example.com:5070"  # the probe's default: the pool itself
