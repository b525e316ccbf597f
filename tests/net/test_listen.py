"""Listen addresses added and removed while running (SIGHUP reload of ``[proxy] listen``)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from sipha.net.workers import listen_text
from sipha.sip.address import Address
from tests.net.support import TIMEOUT, Sink, sip_request


async def test_add_and_remove_udp_listen_keeps_the_others() -> None:
    sink = Sink()
    manager = sink.manager()
    await manager.start([("udp", "127.0.0.1", 0)])
    try:
        first = manager.listen_addresses[0]
        added = await manager.add_listen("udp", "127.0.0.1", 0)
        assert len(added) == 1
        assert manager.listen_addresses == [first, added[0]]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(("127.0.0.1", 0))
            peer.sendto(b"to-added", (added[0].host, added[0].port))
            assert (await sink.message())[0] == b"to-added"
            assert manager.remove_listen(first)
            assert manager.listen_addresses == [added[0]]
            assert not manager.remove_listen(first)
            # Sending still works: from the remaining socket of the family.
            peer_address = peer.getsockname()
            manager.send(b"back", Address("UDP", peer_address[0], peer_address[1]))
            peer.settimeout(TIMEOUT)
            data, source = peer.recvfrom(100)
            assert (data, source[1]) == (b"back", added[0].port)
            # The removed address no longer listens: the port can be bound again.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
                again.bind((first.host, first.port))
    finally:
        await manager.stop()


async def test_add_and_remove_tcp_listen() -> None:
    sink = Sink()
    manager = sink.manager()
    await manager.start([("udp", "127.0.0.1", 0)])
    try:
        (added,) = await manager.add_listen("tcp", "127.0.0.1", 0)
        assert added.transport == "TCP"
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(added.host, added.port), TIMEOUT)
        writer.write(sip_request(1))
        assert (await sink.message())[0] == sip_request(1)
        assert manager.remove_listen(added)
        assert [a.transport for a in manager.listen_addresses] == ["UDP"]
        # The connection accepted before stays open: a transaction under way on it finishes.
        writer.write(sip_request(2))
        assert (await sink.message())[0] == sip_request(2)
        writer.close()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(asyncio.open_connection(added.host, added.port), TIMEOUT)
    finally:
        await manager.stop()


async def test_add_listen_refuses_what_cannot_be_bound() -> None:
    manager = Sink().manager()
    await manager.start([("udp", "127.0.0.1", 0)])
    try:
        taken = manager.listen_addresses[0]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
            other.bind(("127.0.0.1", 0))
            other.listen()
            with pytest.raises(OSError, match="in use"):
                await manager.add_listen("tcp", "127.0.0.1", other.getsockname()[1])
        with pytest.raises(ValueError, match="unsupported transport"):
            await manager.add_listen("sctp", "127.0.0.1", 0)
        with pytest.raises(ValueError, match="needs a certificate"):
            await manager.add_listen("tls", "127.0.0.1", 0)  # no [tls] certificate
        assert manager.listen_addresses == [taken]
    finally:
        await manager.stop()


async def test_add_listen_names_the_address_another_process_holds() -> None:
    manager = Sink().manager()
    await manager.start([("udp", "127.0.0.1", 0)])
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # even a workers group
            other.bind(("127.0.0.1", 0))
            other.listen()
            port = other.getsockname()[1]
            expected = (
                f"proxy.listen 'tcp:127.0.0.1:{port}': address in use by another process (another sipha?)"
            )
            with pytest.raises(OSError, match="in use by another process") as caught:
                await manager.add_listen("tcp", "127.0.0.1", port)
            assert str(caught.value) == expected
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.bind(("127.0.0.1", 0))
            port = other.getsockname()[1]
            with pytest.raises(OSError, match=f"'udp:127.0.0.1:{port}': address in use by another process"):
                await manager.add_listen("udp", "127.0.0.1", port)
        assert len(manager.listen_addresses) == 1
    finally:
        await manager.stop()


def test_listen_text_brackets_ipv6_hosts() -> None:
    assert listen_text("UDP", "127.0.0.1", 5060) == "udp:127.0.0.1:5060"
    assert listen_text("tcp", "::1", 5060) == "tcp:[::1]:5060"
