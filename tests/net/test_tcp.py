"""TCP: framing, pings, connection reuse both ways, failures, idle timeout, limits."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator

import pytest

from sipha.net import TransportManager
from sipha.sip import SipParseError
from sipha.sip.address import Address
from tests.net.support import TIMEOUT, Sink, free_port, ipv6_available, sip_request, sip_response

Server = tuple[Sink, TransportManager, Address]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    sink = Sink()
    manager = sink.manager()
    await manager.start([("tcp", "127.0.0.1", 0)])
    yield sink, manager, manager.listen_addresses[0]
    await manager.stop()


async def connect(address: Address) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Address]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(address.host, address.port), TIMEOUT)
    name = writer.get_extra_info("sockname")
    return reader, writer, Address("TCP", name[0], name[1])


async def read_eof(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), TIMEOUT)


async def test_messages_are_framed_across_and_within_writes(server: Server) -> None:
    sink, manager, address = server
    _reader, writer, client = await connect(address)
    first, second, third = sip_request(1, b"body-1"), sip_request(2), sip_request(3, b"v=0\r\n")
    for chunk in (first[:10], first[10:50], first[50:] + second[:5]):
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(0.001)  # separate segments
    writer.write(second[5:] + third)
    received = [await sink.message() for _ in range(3)]
    assert [data for data, _, _ in received] == [first, second, third]
    assert {source for _, source, _ in received} == {client}
    assert {local for _, _, local in received} == {address}
    assert manager.stats.stream_messages_in == 3
    assert manager.stats.connections_accepted == 1
    writer.close()


async def test_ping_is_answered_with_pong(server: Server) -> None:
    _sink, manager, address = server
    reader, writer, _client = await connect(address)
    writer.write(b"\r\n\r\n")
    assert await asyncio.wait_for(reader.readexactly(2), TIMEOUT) == b"\r\n"
    assert manager.stats.pings == 1
    writer.close()


async def test_response_goes_back_over_the_request_connection(server: Server) -> None:
    sink, manager, address = server
    reader, writer, client = await connect(address)
    writer.write(sip_request())
    _data, source, _local = await sink.message()
    assert source == client
    assert manager.has_connection(source)
    manager.send(sip_response(), source)
    assert await asyncio.wait_for(reader.readexactly(len(sip_response())), TIMEOUT) == sip_response()
    assert manager.stats.connections_opened == 0  # no new connection was needed
    assert manager.stats.connections_open == 1
    writer.close()


async def test_outbound_connection_is_opened_once_and_reused_both_ways() -> None:
    sink_a, sink_b = Sink(), Sink()
    a, b = sink_a.manager(), sink_b.manager()
    await a.start([("tcp", "127.0.0.1", 0)])
    await b.start([("tcp", "127.0.0.1", 0)])
    try:
        destination = b.listen_addresses[0]
        a.send(sip_request(1), destination)  # queued until connected
        a.send(sip_request(2), destination)
        first = await sink_b.message()
        second = await sink_b.message()
        assert (first[0], second[0]) == (sip_request(1), sip_request(2))
        assert first[1] == second[1]  # one connection
        b.send(sip_response(1), first[1])  # the response rides the same connection
        data, source, _local = await sink_a.message()
        assert (data, source) == (sip_response(1), destination)
        a.send(sip_request(3), destination)
        assert (await sink_b.message())[1] == first[1]
        assert a.stats.connections_opened == 1
        assert b.stats.connections_accepted == 1
        assert b.stats.connections_opened == 0
    finally:
        await a.stop()
        await b.stop()
    assert a.stats.connections_open == 0
    assert b.stats.connections_open == 0


async def test_connect_failure_is_reported() -> None:
    sink = Sink()
    manager = sink.manager()
    await manager.start([("tcp", "127.0.0.1", 0)])
    try:
        closed = Address("TCP", "127.0.0.1", free_port(socket.SOCK_STREAM))
        manager.send(sip_request(), closed)
        destination, error = await sink.error()
        assert destination == closed
        assert isinstance(error, ConnectionRefusedError)
        assert manager.stats.connect_failures == 1
        assert not manager.has_connection(closed)
    finally:
        await manager.stop()


async def test_connect_timeout_is_reported(server: Server) -> None:
    _sink, _manager, address = server
    sink = Sink()
    # A zero timeout expires before the connection attempt can complete, even on loopback.
    manager = sink.manager(connect_timeout=0.0)
    await manager.start([("tcp", "127.0.0.1", 0)])
    try:
        manager.send(sip_request(), address)
        assert await sink.error() == (address, "connect timed out after 0.0 s")
        assert manager.stats.connect_failures == 1
        assert not manager.has_connection(address)
        assert manager.stats.connections_open == 0
    finally:
        await manager.stop()


async def test_idle_connection_is_closed_and_traffic_keeps_it_open() -> None:
    sink = Sink()
    manager = sink.manager(idle_timeout=0.2)
    await manager.start([("tcp", "127.0.0.1", 0)])
    try:
        address = manager.listen_addresses[0]
        busy_reader, busy, _ = await connect(address)
        idle_reader, _idle, _ = await connect(address)
        for _ in range(5):  # 0.3 s of pings every 0.06 s: longer than the timeout
            busy.write(b"\r\n\r\n")
            await asyncio.sleep(0.06)
        assert await read_eof(idle_reader) == b""
        assert manager.stats.idle_closes == 1
        assert await asyncio.wait_for(busy_reader.readexactly(10), TIMEOUT) == b"\r\n" * 5
        assert await read_eof(busy_reader) == b""  # then it goes idle too
        assert manager.stats.idle_closes == 2
    finally:
        await manager.stop()


async def test_framing_error_calls_on_bad_stream_then_closes(server: Server) -> None:
    _sink, manager, address = server
    answer = b"SIP/2.0 400 Missing Content-Length\r\nContent-Length: 0\r\n\r\n"
    calls: list[tuple[SipParseError, Address]] = []

    def on_bad_stream(error: SipParseError, source: Address) -> None:
        calls.append((error, source))
        manager.send(answer, source)  # the connection is still usable here

    manager._on_bad_stream = on_bad_stream
    assert manager._tcp is not None
    manager._tcp.on_bad_stream = on_bad_stream
    reader, writer, client = await connect(address)
    request = sip_request().replace(b"Content-Length: 0\r\n", b"")
    writer.write(request)
    assert await read_eof(reader) == answer
    ((error, source),) = calls
    assert source == client
    assert "Content-Length" in error.detail
    assert error.message is not None  # enough was read to build the 400
    assert manager.stats.framing_errors == 1
    assert not manager.has_connection(client)


async def test_connections_beyond_the_limit_are_refused() -> None:
    sink = Sink()
    manager = sink.manager(max_connections=1)
    await manager.start([("tcp", "127.0.0.1", 0)])
    try:
        address = manager.listen_addresses[0]
        _first_reader, first, _ = await connect(address)
        first.write(sip_request())
        await sink.message()
        second_reader, _second, _ = await connect(address)
        with contextlib.suppress(ConnectionResetError):  # closed at once, by FIN or RST
            assert await read_eof(second_reader) == b""
        assert manager.stats.connections_refused == 1
        assert manager.stats.connections_open == 1
        # Outbound connections count too.
        elsewhere = Address("TCP", "127.0.0.1", free_port(socket.SOCK_STREAM))
        manager.send(b"x", elsewhere)
        assert await sink.error() == (elsewhere, "connection limit reached")
    finally:
        await manager.stop()


async def test_peer_that_does_not_read_is_dropped() -> None:
    sink = Sink()
    manager = sink.manager(write_buffer_high=16 * 1024, write_buffer_max=64 * 1024)
    await manager.start([("tcp", "127.0.0.1", 0)])
    loop = asyncio.get_running_loop()
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.setblocking(False)
    try:
        await asyncio.wait_for(
            loop.sock_connect(client, ("127.0.0.1", manager.listen_addresses[0].port)), TIMEOUT
        )
        client.send(sip_request())
        _data, source, _local = await sink.message()
        chunk = b"x" * 16384
        for _ in range(4096):  # at most 64 MiB; the kernel buffers fill far sooner
            if manager.stats.write_overflows:
                break
            manager.send(chunk, source)
            await asyncio.sleep(0)
        destination, error = await sink.error()
        assert destination == source
        assert error == "peer does not read: write buffer limit exceeded"
        assert not manager.has_connection(source)
    finally:
        client.close()
        await manager.stop()


async def test_reset_by_peer_is_reported(server: Server) -> None:
    sink, _manager, address = server
    _reader, writer, client = await connect(address)
    writer.write(sip_request())
    await sink.message()
    sock = writer.get_extra_info("socket")
    # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
    destination, error = await sink.error()
    assert destination == client
    assert isinstance(error, ConnectionResetError)


async def test_messages_sent_between_a_reset_and_its_report_are_dropped_quietly(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """Under load a reset connection gets more messages before connection_lost runs (which
    reports the error, see above): they are dropped without asyncio's "socket.send() raised
    exception" warning per message."""
    sink, manager, address = server
    _reader, writer, client = await connect(address)
    writer.write(sip_request())
    await sink.message()
    connection = manager._tcp.connections[client.host, client.port]  # type: ignore[union-attr]
    assert connection.transport is not None
    connection.transport.abort()  # as a reset does: closing now, connection_lost on a later turn
    for number in range(20):
        manager.send(sip_request(number), client)
    await asyncio.sleep(0.05)
    assert not manager.has_connection(client)
    assert "socket.send() raised exception" not in caplog.text
    writer.close()


async def test_peer_closing_cleanly_is_not_an_error(server: Server) -> None:
    sink, manager, address = server
    _reader, writer, client = await connect(address)
    writer.write(sip_request())
    await sink.message()
    writer.close()
    await writer.wait_closed()
    for _ in range(100):
        if not manager.has_connection(client):
            break
        await asyncio.sleep(0.005)
    assert not manager.has_connection(client)
    assert sink.errors.empty()


async def test_stop_closes_connections(server: Server) -> None:
    sink, manager, address = server
    reader, writer, _client = await connect(address)
    writer.write(sip_request())
    await sink.message()
    await manager.stop()
    assert await read_eof(reader) == b""
    assert manager.stats.connections_open == 0
    manager.send(b"late", Address("TCP", "127.0.0.1", address.port))  # dropped, no error
    manager.send(b"late", Address("UDP", "127.0.0.1", address.port))


@pytest.mark.skipif(not ipv6_available(), reason="::1 is not usable here")
async def test_ipv6_connection_reuse() -> None:
    sink_a, sink_b = Sink(), Sink()
    a, b = sink_a.manager(), sink_b.manager()
    await a.start([("tcp", "::1", 0)])
    await b.start([("tcp", "::1", 0)])
    try:
        port = b.listen_addresses[0].port
        a.send(sip_request(1), Address("TCP", "[::1]", port))
        data, source, local = await sink_b.message()
        assert data == sip_request(1)
        assert source.host == "::1"
        assert local == Address("TCP", "::1", port)
        a.send(sip_request(2), Address("TCP", "0:0::1", port))  # another spelling, same peer
        assert (await sink_b.message())[1] == source
        assert a.stats.connections_opened == 1
        assert a.local_address("TCP", socket.AF_INET6) == a.listen_addresses[0]
    finally:
        await a.stop()
        await b.stop()


async def test_send_by_host_name_resolves_it(server: Server) -> None:
    sink, _manager, address = server
    client = Sink().manager()
    await client.start([("tcp", "127.0.0.1", 0)])
    try:
        client.send(sip_request(), Address("TCP", "localhost", address.port))
        assert (await sink.message())[0] == sip_request()
    finally:
        await client.stop()
