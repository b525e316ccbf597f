"""TLS transport (RFC 3261 §26.2): real handshakes on loopback with trustme certificates.

Two transport managers talk to each other over TLS; raw sockets play the
hostile peers (plaintext on a TLS port, a handshake that never starts).  Each
failure must be counted by outcome, named in words, and reported as a
transport error on connections we opened (a probe or branch fails at once).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import pytest
import trustme

from sipha.net import TransportManager
from sipha.net.tls import TlsSettings, describe_failure
from sipha.sip.address import Address
from tests.net.support import TIMEOUT, Sink, sip_request, sip_response

HOST = "127.0.0.1"


def server_context(ca: trustme.CA, *names: str, require: trustme.CA | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(*names).configure_cert(context)
    if require is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        require.configure_trust(context)
    return context


def client_context(ca: trustme.CA | None, *, client: trustme.LeafCert | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        ca.configure_trust(context)
    if client is not None:
        client.configure_cert(context)
    return context


def settings(
    *,
    server: ssl.SSLContext | None = None,
    members: ssl.SSLContext | None = None,
    names: dict[tuple[str, int], str] | None = None,
    timeout: float = 2.0,
) -> TlsSettings:
    return TlsSettings(
        server=server,
        members=members or client_context(None),
        others=client_context(None),
        member_names=names or {},
        handshake_timeout=timeout,
    )


class Tls:
    """A listening TLS manager (the proxy) and the events it reported."""

    def __init__(self, sink: Sink, manager: TransportManager, events: list[tuple[str, str]]) -> None:
        self.sink = sink
        self.manager = manager
        self.events = events

    @property
    def port(self) -> int:
        return self.manager.listen_addresses[0].port

    async def outcome(self) -> tuple[str, str]:
        for _ in range(int(TIMEOUT / 0.01)):
            if self.events:
                return self.events[-1]
            await asyncio.sleep(0.01)
        raise AssertionError("no TLS event")


async def start(tls: TlsSettings, *, listen: bool = True) -> Tls:
    sink = Sink()
    events: list[tuple[str, str]] = []
    manager = sink.manager(tls=tls, on_tls=lambda _peer, _out, outcome, text: events.append((outcome, text)))
    await manager.start([("tls", HOST, 0)] if listen else [])
    return Tls(sink, manager, events)


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def proxy(ca: trustme.CA) -> AsyncIterator[Tls]:
    server = await start(settings(server=server_context(ca, "sipha.test", HOST)))
    yield server
    await server.manager.stop()


async def client(tls: TlsSettings) -> Tls:
    return await start(tls, listen=False)


async def test_a_request_and_its_response_cross_a_verified_tls_connection(proxy: Tls, ca: trustme.CA) -> None:
    peer = await client(settings(members=client_context(ca), names={(HOST, proxy.port): "sipha.test"}))
    try:
        peer.manager.send(sip_request(1), Address("TLS", HOST, proxy.port))
        data, source, local = await proxy.sink.message()
        assert data == sip_request(1)
        assert source.transport == "TLS"
        assert local == Address("TLS", HOST, proxy.port)
        assert proxy.manager.has_connection(source)
        # RFC 3261 §18.2.2: the response goes back on the connection the request came on.
        proxy.manager.send(sip_response(1), source)
        answer, answered_by, _ = await peer.sink.message()
        assert answer == sip_response(1)
        assert answered_by == Address("TLS", HOST, proxy.port)
        assert peer.manager.tls_outcomes["ok"] == 1
        assert proxy.manager.tls_outcomes["ok"] == 1
        assert proxy.manager.stats.tls_connections_open == 1
        assert proxy.manager.stats.connections_open == 0  # TCP's gauge is its own
        assert peer.events[-1][1].startswith("TLSv1.")
    finally:
        await peer.manager.stop()


async def test_a_member_is_verified_by_its_configured_name(proxy: Tls, ca: trustme.CA) -> None:
    peer = await client(settings(members=client_context(ca), names={(HOST, proxy.port): "sip1.other.test"}))
    try:
        destination = Address("TLS", HOST, proxy.port)
        peer.manager.send(sip_request(1), destination)
        failed, error = await peer.sink.error()
        assert failed == destination
        assert "certificate verify failed" in str(error)
        assert "sip1.other.test" in str(error)
        assert peer.manager.tls_outcomes["verify_failed"] == 1
        assert "sip1.other.test" in peer.manager.tls_failures[HOST, proxy.port]
        # The proxy saw our alert: the peer refused its certificate.
        outcome, text = await proxy.outcome()
        assert outcome == "peer_refused", text
        assert proxy.sink.messages.empty()
    finally:
        await peer.manager.stop()


async def test_a_certificate_from_an_unknown_ca_is_refused_and_named(proxy: Tls) -> None:
    stranger = trustme.CA()
    peer = await client(settings(members=client_context(stranger), names={(HOST, proxy.port): "sipha.test"}))
    try:
        peer.manager.send(sip_request(1), Address("TLS", HOST, proxy.port))
        _, error = await peer.sink.error()
        assert "unable to get local issuer certificate" in str(error)
    finally:
        await peer.manager.stop()


async def test_a_success_clears_the_destinations_failure(proxy: Tls, ca: trustme.CA) -> None:
    names = {(HOST, proxy.port): "wrong.test"}
    peer = await client(settings(members=client_context(ca), names=names))
    try:
        peer.manager.send(sip_request(1), Address("TLS", HOST, proxy.port))
        await peer.sink.error()
        assert (HOST, proxy.port) in peer.manager.tls_failures
        peer.manager.set_tls(settings(members=client_context(ca), names={(HOST, proxy.port): "sipha.test"}))
        peer.manager.send(sip_request(2), Address("TLS", HOST, proxy.port))
        data, _, _ = await proxy.sink.message()
        assert data == sip_request(2)
        assert (HOST, proxy.port) not in peer.manager.tls_failures
    finally:
        await peer.manager.stop()


async def test_destinations_outside_the_pairs_are_encrypted_without_verification(proxy: Tls) -> None:
    peer = await client(settings())  # no member names: the "others" context
    try:
        peer.manager.send(sip_request(1), Address("TLS", HOST, proxy.port))
        data, _, _ = await proxy.sink.message()
        assert data == sip_request(1)
    finally:
        await peer.manager.stop()


async def test_plaintext_sent_to_a_tls_port_is_counted_and_dropped(proxy: Tls) -> None:
    reader, writer = await asyncio.open_connection(HOST, proxy.port)
    writer.write(sip_request(1))
    await writer.drain()
    outcome, text = await proxy.outcome()
    assert outcome == "not_tls", text
    assert await asyncio.wait_for(reader.read(), TIMEOUT) is not None  # closed by the proxy
    writer.close()
    assert proxy.sink.messages.empty()
    assert proxy.manager.stats.tls_handshake_failures == 1


async def test_a_handshake_that_never_comes_is_dropped_after_the_timeout(ca: trustme.CA) -> None:
    proxy = await start(settings(server=server_context(ca, HOST), timeout=0.2))
    try:
        reader, writer = await asyncio.open_connection(HOST, proxy.port)
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # closed on us
        writer.close()
        outcome, text = await proxy.outcome()
        assert outcome == "timeout"
        assert "0.2 s" in text
        assert proxy.manager.stats.tls_connections_open == 0
    finally:
        await proxy.manager.stop()


async def test_mutual_tls_refuses_a_client_certificate_from_an_unknown_ca(ca: trustme.CA) -> None:
    proxy = await start(settings(server=server_context(ca, HOST, require=ca)))
    names = {(HOST, proxy.port): HOST}
    stranger = trustme.CA()
    peer = await client(
        settings(members=client_context(ca, client=stranger.issue_cert("ua.test")), names=names)
    )
    good = await client(settings(members=client_context(ca, client=ca.issue_cert("ua.test")), names=names))
    try:
        peer.manager.send(sip_request(1), Address("TLS", HOST, proxy.port))
        outcome, text = await proxy.outcome()
        assert outcome == "verify_failed", text
        # Everyone else is still served.
        good.manager.send(sip_request(2), Address("TLS", HOST, proxy.port))
        data, _, _ = await proxy.sink.message()
        assert data == sip_request(2)
    finally:
        await peer.manager.stop()
        await good.manager.stop()
        await proxy.manager.stop()


async def test_a_tls_listen_without_a_certificate_is_refused() -> None:
    manager = Sink().manager(tls=settings())
    with pytest.raises(ValueError, match="certificate"):
        await manager.start([("tls", HOST, 0)])


async def test_a_tls_destination_without_tls_settings_is_a_transport_error() -> None:
    sink = Sink()
    manager = sink.manager()
    await manager.start([])
    try:
        manager.send(sip_request(1), Address("TLS", HOST, 5061))
        _, error = await sink.error()
        assert "no TLS configured" in str(error)
    finally:
        await manager.stop()


def test_failures_are_described_in_plain_words() -> None:
    plaintext = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    plaintext.reason = "WRONG_VERSION_NUMBER"
    assert describe_failure(plaintext)[0] == "not_tls"
    alert = ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca")
    alert.reason = "TLSV1_ALERT_UNKNOWN_CA"
    assert describe_failure(alert) == (
        "peer_refused",
        "the peer refused the handshake (TLS alert: unknown ca)",
    )
    assert describe_failure(RuntimeError("x"))[0] == "error"


async def test_a_reload_that_renames_a_member_stops_reusing_its_connection(
    proxy: Tls, ca: trustme.CA
) -> None:
    """One connection per peer and identity: the old one is not used for the new name."""
    peer = await client(settings(members=client_context(ca), names={(HOST, proxy.port): "sipha.test"}))
    try:
        destination = Address("TLS", HOST, proxy.port)
        peer.manager.send(sip_request(1), destination)
        await proxy.sink.message()
        peer.manager.set_tls(settings(members=client_context(ca), names={(HOST, proxy.port): "renamed.test"}))
        peer.manager.send(sip_request(2), destination)
        _, error = await peer.sink.error()  # a new connection, verified against the new name
        assert "renamed.test" in str(error)
    finally:
        await peer.manager.stop()


async def test_rfc5923_alias_reuses_a_verified_peers_connection(ca: trustme.CA) -> None:
    """A peer (certificate for 127.0.0.1) asks, by ``alias``, that requests to its sent-by
    reuse its connection: granted, requests to 127.0.0.1:5999 go over it (nothing listens there)."""
    proxy = await start(settings(server=server_context(ca, HOST, require=ca)))
    names = {(HOST, proxy.port): HOST}
    peer = await client(settings(members=client_context(ca, client=ca.issue_cert(HOST)), names=names))
    try:
        peer.manager.send(sip_request(1), Address("TLS", HOST, proxy.port))
        _, source, _ = await proxy.sink.message()
        assert proxy.manager.alias(source, HOST, 5999)
        proxy.manager.send(sip_request(2), Address("TLS", HOST, 5999))
        data, _, _ = await peer.sink.message()
        assert data == sip_request(2)
        assert proxy.manager.alias(source, HOST, 5999)  # asked again: already granted
    finally:
        await peer.manager.stop()
        await proxy.manager.stop()


async def test_rfc5923_alias_is_refused_when_the_certificate_does_not_name_the_sent_by(
    ca: trustme.CA,
) -> None:
    proxy = await start(settings(server=server_context(ca, HOST, require=ca)))
    names = {(HOST, proxy.port): HOST}
    peer = await client(settings(members=client_context(ca, client=ca.issue_cert("ua.test")), names=names))
    unverified = await client(settings(members=client_context(ca), names=names))
    try:
        peer.manager.send(sip_request(1), Address("TLS", HOST, proxy.port))
        _, source, _ = await proxy.sink.message()
        assert not proxy.manager.alias(source, "127.0.0.9", 5999)  # an IP the certificate lacks
        assert not proxy.manager.alias(source, "other.test", 5999)
        assert proxy.manager.alias(source, "ua.test", 5999)
        assert proxy.manager.stats.tls_aliases_refused == 2
    finally:
        await peer.manager.stop()
        await unverified.manager.stop()
        await proxy.manager.stop()


async def test_rfc5923_alias_needs_a_verified_client_certificate(proxy: Tls, ca: trustme.CA) -> None:
    """verify-clients = "none": no certificate was verified, so no identity to alias."""
    peer = await client(settings(members=client_context(ca), names={(HOST, proxy.port): "sipha.test"}))
    try:
        peer.manager.send(sip_request(1), Address("TLS", HOST, proxy.port))
        _, source, _ = await proxy.sink.message()
        assert not proxy.manager.alias(source, HOST, 5999)
        assert not proxy.manager.alias(Address("TLS", HOST, 1), HOST, 5999)  # no such connection
    finally:
        await peer.manager.stop()
