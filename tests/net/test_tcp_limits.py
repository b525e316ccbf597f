"""[limits] on stream connections: message-timeout (slowloris), max-connections with eviction, logs.

On loopback with real sockets: a TransportManager whose limits are set as
:func:`sipha.limits.apply_limits` sets them (through ``stream_contexts``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator

import pytest
import trustme

from sipha.net import TransportManager
from sipha.net.tls import TlsSettings
from sipha.sip.address import Address
from tests.net.support import TIMEOUT, Sink, sip_request

MESSAGE_TIMEOUT = 0.3

Server = tuple[Sink, TransportManager, Address]
Client = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def limit(manager: TransportManager, **values: float) -> None:
    for context in manager.stream_contexts:
        for name, value in values.items():
            setattr(context, name, value)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    sink = Sink()
    manager = sink.manager()
    await manager.start([("tcp", "127.0.0.1", 0)])
    limit(manager, message_timeout=MESSAGE_TIMEOUT)
    yield sink, manager, manager.listen_addresses[0]
    await manager.stop()


async def connect(address: Address) -> Client:
    return await asyncio.wait_for(asyncio.open_connection(address.host, address.port), TIMEOUT)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    """Read until sipha closes the connection; how long that took (fails after ``seconds``)."""
    start = time.monotonic()
    with contextlib.suppress(ConnectionResetError):
        while await asyncio.wait_for(reader.read(4096), seconds):
            pass
    return time.monotonic() - start


async def test_a_slowloris_is_closed_at_the_message_timeout_and_others_are_served(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """After a whole message, bytes trickled every 50 ms: closed at message-timeout, not idle."""
    sink, manager, address = server
    slow_reader, slow = await connect(address)
    slow.write(sip_request(0))
    assert (await sink.message())[0] == sip_request(0)
    _, busy = await connect(address)
    request = sip_request(1)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="sipha"):
        for index in range(len(request) - 1):  # each byte resets the idle timer: not idle
            if slow.is_closing() or slow_reader.at_eof():
                break
            slow.write(request[index : index + 1])
            busy.write(sip_request(100 + index))  # another client, served meanwhile
            await asyncio.sleep(0.05)
            if time.monotonic() - start > 3 * MESSAGE_TIMEOUT:
                break
        took = await closed_within(slow_reader, TIMEOUT)
    elapsed = time.monotonic() - start
    assert MESSAGE_TIMEOUT * 0.9 <= elapsed <= MESSAGE_TIMEOUT + 1.0, elapsed
    assert took < 1.0
    assert manager.stats.message_timeouts == 1
    assert manager.stats.idle_closes == 0
    served = sink.messages.qsize()
    assert served >= 5  # the other connection's messages all came through
    assert manager.stats.connections_open == 1
    (line,) = [r.getMessage() for r in caplog.records if "message-timeout" in r.getMessage()]
    assert line.startswith("TCP 127.0.0.1:")
    assert "did not complete a SIP message within 0.3 s (" in line
    assert "connection closed ([limits] message-timeout)" in line


async def test_a_connection_that_never_sends_a_message_is_closed(server: Server) -> None:
    """Accepted and silent (or only keepalive pings): its first message is awaited message-timeout."""
    _sink, manager, address = server
    silent_reader, _silent = await connect(address)
    pinging_reader, pinging = await connect(address)
    pinging.write(b"\r\n\r\n")
    assert await asyncio.wait_for(pinging_reader.readexactly(2), TIMEOUT) == b"\r\n"
    await closed_within(silent_reader, MESSAGE_TIMEOUT + 1.0)
    await closed_within(pinging_reader, 1.0)
    assert manager.stats.message_timeouts == 2
    assert manager.stats.connections_open == 0


async def test_messages_that_arrive_in_pieces_in_time_are_not_cut(server: Server) -> None:
    sink, manager, address = server
    reader, writer = await connect(address)
    for number in range(1, 3):  # each message in three pieces, within the timeout; idle between
        request = sip_request(number, b"v=0\r\n")
        for piece in (request[:7], request[7:60], request[60:]):
            writer.write(piece)
            await asyncio.sleep(MESSAGE_TIMEOUT / 5)
        assert (await sink.message())[0] == request
        await asyncio.sleep(MESSAGE_TIMEOUT * 1.5)  # idle after a whole message: allowed
    writer.write(b"\r\n")  # a lone CRLF (a pong) is not the start of a message
    await asyncio.sleep(MESSAGE_TIMEOUT * 1.5)
    assert not reader.at_eof()
    assert manager.stats.message_timeouts == 0
    assert manager.stats.connections_open == 1
    writer.close()


async def test_at_max_connections_silent_ones_make_room_then_new_ones_are_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Connections that never spoke go first, oldest first; when every one has spoken, refused."""
    sink = Sink()
    manager = sink.manager()
    await manager.start([("tcp", "127.0.0.1", 0)])
    limit(manager, max_connections=5)
    address = manager.listen_addresses[0]
    try:
        with caplog.at_level(logging.WARNING, logger="sipha"):
            silent = [await connect(address) for _ in range(5)]
            speaking: list[Client] = []
            for number in range(5):  # each new one evicts the oldest silent one, then speaks
                reader, writer = await connect(address)
                writer.write(sip_request(number))
                await sink.message()
                speaking.append((reader, writer))
                assert manager.stats.connections_open <= 5
            for reader, _ in silent:
                await closed_within(reader, TIMEOUT)
            assert manager.stats.connections_evicted == 5
            assert manager.stats.connections_open == 5
            refused_reader, _ = await connect(address)  # every connection has spoken: refused
            await closed_within(refused_reader, TIMEOUT)
            assert manager.stats.connections_refused == 1
            for reader, writer in speaking:  # the speaking ones are intact
                writer.write(sip_request(99))
                await sink.message()
                assert not reader.at_eof()
        lines = [record.getMessage() for record in caplog.records]
        evicted = [line for line in lines if "closed the oldest connection that sent no complete" in line]
        refused = [line for line in lines if "new connections are refused" in line]
        assert len(evicted) == 1  # one line a minute, whatever the count
        assert evicted[0].startswith("TCP: max-connections = 5 reached")
        assert refused == [
            (
                "TCP: max-connections = 5 reached, every connection has sent SIP: new connections are "
                "refused ([limits] max-connections)"
            )
        ]
    finally:
        await manager.stop()


async def test_notices_count_what_happened_since_the_last_line(caplog: pytest.LogCaptureFixture) -> None:
    sink = Sink()
    manager = sink.manager()
    await manager.start([("tcp", "127.0.0.1", 0)])
    try:
        (context,) = [c for c in manager.stream_contexts if c.transport == "TCP"]
        with caplog.at_level(logging.WARNING, logger="sipha"):
            context.notice("test", 1, "first")
            context.notice("test", 5, "second")  # within the minute: not logged
            context.noticed["test"] = (context.loop.time() - 61.0, 1)
            context.notice("test", 9, "third")
        assert [r.getMessage() for r in caplog.records] == ["first", "third (8 since the last line)"]
    finally:
        await manager.stop()


async def test_tls_connections_still_handshaking_make_room_too() -> None:
    """A TLS peer that connects and never says ClientHello is evicted like a silent TCP one."""
    ca = trustme.CA()
    sink = Sink()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client)
    tls = TlsSettings(server=context, members=client, others=client, member_names={}, handshake_timeout=10.0)
    manager = sink.manager(tls=tls)
    await manager.start([("tls", "127.0.0.1", 0)])
    limit(manager, max_connections=2)
    address = manager.listen_addresses[0]
    try:
        mute = [await connect(address) for _ in range(2)]  # TCP only: no ClientHello
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(address.host, address.port, ssl=client, server_hostname="127.0.0.1"),
            TIMEOUT,
        )
        writer.write(sip_request(1))
        assert (await sink.message())[0] == sip_request(1)
        await closed_within(mute[0][0], TIMEOUT)  # the oldest mute one made room, at once
        assert manager.stats.connections_evicted == 1
        assert manager.stats.tls_connections_open == 2
        writer.close()
    finally:
        await manager.stop()


async def test_an_outbound_connection_at_the_limit_makes_room_too() -> None:
    """Silent peers filling max-connections must not keep sipha from reaching a TCP pair member."""
    sink, member_sink = Sink(), Sink()
    manager, member = sink.manager(), member_sink.manager()
    await manager.start([("tcp", "127.0.0.1", 0)])
    await member.start([("tcp", "127.0.0.1", 0)])
    limit(manager, max_connections=2)
    try:
        silent = [await connect(manager.listen_addresses[0]) for _ in range(2)]
        for _ in range(100):  # both accepted
            if manager.stats.connections_accepted == 2:
                break
            await asyncio.sleep(0.01)
        manager.send(sip_request(7), member.listen_addresses[0])
        assert (await member_sink.message())[0] == sip_request(7)
        await closed_within(silent[0][0], TIMEOUT)
        assert manager.stats.connections_evicted == 1
        assert manager.stats.connections_refused == 0
    finally:
        await manager.stop()
        await member.stop()
