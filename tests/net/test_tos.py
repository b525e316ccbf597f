"""``[proxy] sip-ip-tos``: the TOS byte (IPv6 traffic class) on every SIP packet sipha sends.

Real packets on loopback: a receiving UDP socket with ``IP_RECVTOS`` /
``IPV6_RECVTCLASS`` reads the byte from the ancillary data of each datagram
(ip(7), ipv6(7)); for TCP and TLS the sockets' ``IP_TOS`` / ``IPV6_TCLASS`` are
read back, and a server with ``IP_RECVTOS`` reads the byte of the handshake's
last ACK from ``IP_PKTOPTIONS`` (Linux), which shows that an outbound
connection is marked before it connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trustme

from sipha.app import ProxyApp
from sipha.assembly import OWN_SOCKETS
from sipha.config import load_config
from sipha.net import TransportManager
from sipha.net.tcp import TcpConnection
from sipha.net.workers import bind_shared
from sipha.sip.address import Address
from sipha.supervisor import bind_worker_sockets
from tests.net.support import TIMEOUT, Sink, free_port, ipv6_available, sip_request, sip_response
from tests.net.test_tls import client_context, server_context, settings

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="IP_RECVTOS, IP_PKTOPTIONS: Linux"
)

AF31 = 0x68
CS3 = 0x60
IP_RECVTOS = getattr(socket, "IP_RECVTOS", 13)
IP_PKTOPTIONS = getattr(socket, "IP_PKTOPTIONS", 9)
IPV6_RECVTCLASS = getattr(socket, "IPV6_RECVTCLASS", 66)
_CMSGHDR = struct.Struct("@Nii")  # struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; }


# ---------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def tos_receiver(family: socket.AddressFamily = socket.AF_INET) -> Iterator[socket.socket]:
    """A UDP socket that reports the TOS byte (traffic class) of each datagram it receives."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVTCLASS, 1)
            sock.bind(("::1", 0))
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)
            sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        yield sock
    finally:
        sock.close()


async def received_tos(sock: socket.socket) -> tuple[bytes, int | None]:
    """The next datagram and its TOS byte (None: no ancillary data said)."""
    for _ in range(int(TIMEOUT / 0.005)):
        try:
            data, ancdata, _flags, _peer = sock.recvmsg(65535, socket.CMSG_SPACE(16))
        except BlockingIOError:
            await asyncio.sleep(0.005)
            continue
        tos = None
        for level, kind, value in ancdata:
            if level == socket.IPPROTO_IP and kind == socket.IP_TOS:
                tos = value[0]
            elif level == socket.IPPROTO_IPV6 and kind == socket.IPV6_TCLASS:
                tos = int.from_bytes(value[:4], sys.byteorder, signed=True)
        return data, tos
    raise AssertionError("no datagram received")


def socket_tos(sock: socket.socket | socket.SocketType | object) -> int:
    """The TOS byte a socket (or a transport's socket) marks its packets with."""
    assert hasattr(sock, "getsockopt")
    assert hasattr(sock, "family")
    if sock.family == socket.AF_INET6:
        value: int = sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS)
        return value
    value = sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS)
    return value  # noqa: RET504 - typed


def handshake_tos(sock: socket.socket) -> int | None:
    """The TOS byte of the packet that completed the handshake of an accepted IPv4 connection.

    Linux keeps it (``rcv_tos``) for ``IP_PKTOPTIONS`` when the listening socket had
    ``IP_RECVTOS`` on: it is the client's ACK, marked only if the client marked the
    socket before it connected.
    """
    raw = sock.getsockopt(socket.IPPROTO_IP, IP_PKTOPTIONS, 256)
    offset = 0
    while offset + _CMSGHDR.size <= len(raw):
        length, level, kind = _CMSGHDR.unpack_from(raw, offset)
        if length < _CMSGHDR.size:
            break
        if level == socket.IPPROTO_IP and kind == socket.IP_TOS:
            return raw[offset + _CMSGHDR.size]
        offset += socket.CMSG_SPACE(length - _CMSGHDR.size)
    return None


def connection_to(manager: TransportManager, transport: str, peer: tuple[str, int]) -> TcpConnection:
    contexts = {"TCP": manager._tcp, "TLS": manager._tls_context}
    context = contexts[transport]
    assert context is not None
    return context.connections[peer]


def connection_socket(connection: TcpConnection) -> object:
    sock = connection._socket
    assert sock is not None
    return sock


@pytest.fixture
async def marked() -> AsyncIterator[tuple[Sink, TransportManager]]:
    sink = Sink()
    manager = sink.manager(ip_tos=AF31)
    await manager.start([("udp", "127.0.0.1", 0), ("tcp", "127.0.0.1", 0)])
    yield sink, manager
    await manager.stop()


async def tcp_listener() -> tuple[socket.socket, int]:
    """A plain listening socket that records the TOS of each connection's handshake."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    return listener, listener.getsockname()[1]


# ---------------------------------------------------------------------------- UDP


@pytest.mark.parametrize(("configured", "expected"), [(AF31, AF31), (CS3, CS3), (0, 0)])
async def test_udp_datagrams_carry_the_configured_tos(configured: int, expected: int) -> None:
    manager = Sink().manager(ip_tos=configured)
    await manager.start([("udp", "127.0.0.1", 0)])
    try:
        with tos_receiver() as receiver:
            manager.send(b"OPTIONS", Address("UDP", "127.0.0.1", receiver.getsockname()[1]))
            assert await received_tos(receiver) == (b"OPTIONS", expected)
    finally:
        await manager.stop()


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 on loopback")
@pytest.mark.parametrize(("configured", "expected"), [(AF31, AF31), (0, 0)])
async def test_udp_ipv6_datagrams_carry_it_as_traffic_class(configured: int, expected: int) -> None:
    manager = Sink().manager(ip_tos=configured)
    await manager.start([("udp", "::1", 0)])
    try:
        with tos_receiver(socket.AF_INET6) as receiver:
            manager.send(b"OPTIONS", Address("UDP", "::1", receiver.getsockname()[1]))
            assert await received_tos(receiver) == (b"OPTIONS", expected)
    finally:
        await manager.stop()


# ---------------------------------------------------------------------------- TCP


async def test_an_accepted_tcp_connection_is_marked(marked: tuple[Sink, TransportManager]) -> None:
    loop = asyncio.get_running_loop()
    sink, manager = marked
    listen = manager.listen_addresses[1]
    assert listen.transport == "TCP"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
        client.setblocking(False)
        await loop.sock_connect(client, ("127.0.0.1", listen.port))
        await loop.sock_sendall(client, sip_request(1))
        _, source, _ = await sink.message()
        connection = connection_to(manager, "TCP", (source.host, source.port))
        assert socket_tos(connection_socket(connection)) == AF31
        manager.send(sip_response(1), source)
        answer = await asyncio.wait_for(loop.sock_recv(client, 4096), TIMEOUT)
        assert answer == sip_response(1)
    for server in manager._servers:
        for sock in server.sockets:
            assert socket_tos(sock) == AF31


@pytest.mark.parametrize(("configured", "expected"), [(AF31, AF31), (0, 0)])
async def test_an_outbound_tcp_connection_is_marked_before_it_connects(
    configured: int, expected: int
) -> None:
    loop = asyncio.get_running_loop()
    manager = Sink().manager(ip_tos=configured)
    await manager.start([])
    listener, port = await tcp_listener()
    try:
        manager.send(sip_request(1), Address("TCP", "127.0.0.1", port))
        accepted, _ = await asyncio.wait_for(loop.sock_accept(listener), TIMEOUT)
        with accepted:
            # The handshake's last ACK was marked: the socket had the TOS before connect().
            assert handshake_tos(accepted) == expected
            data = await asyncio.wait_for(loop.sock_recv(accepted, 4096), TIMEOUT)
            assert data == sip_request(1)
            connection = connection_to(manager, "TCP", ("127.0.0.1", port))
            assert socket_tos(connection_socket(connection)) == expected
    finally:
        listener.close()
        await manager.stop()


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 on loopback")
async def test_ipv6_tcp_connections_both_ways_carry_the_traffic_class() -> None:
    sink_a, sink_b = Sink(), Sink()
    a, b = sink_a.manager(ip_tos=AF31), sink_b.manager()
    await a.start([])
    await b.start([("tcp", "::1", 0)])
    try:
        port = b.listen_addresses[0].port
        a.send(sip_request(1), Address("TCP", "::1", port))
        _, source, _ = await sink_b.message()
        outbound = connection_to(a, "TCP", ("::1", port))
        assert socket_tos(connection_socket(outbound)) == AF31
        # b unmarked: its accepted socket keeps the system default.
        assert socket_tos(connection_socket(connection_to(b, "TCP", (source.host, source.port)))) == 0
    finally:
        await a.stop()
        await b.stop()
    sink_c = Sink()
    c, client = sink_c.manager(ip_tos=CS3), Sink().manager()
    await c.start([("tcp", "::1", 0)])
    await client.start([])
    try:
        client.send(sip_request(2), c.listen_addresses[0])
        _, source, _ = await sink_c.message()
        assert socket_tos(connection_socket(connection_to(c, "TCP", (source.host, source.port)))) == CS3
        for server in c._servers:
            for sock in server.sockets:
                assert socket_tos(sock) == CS3
    finally:
        await client.stop()
        await c.stop()


# ---------------------------------------------------------------------------- TLS


async def test_tls_connections_both_ways_are_marked() -> None:
    ca = trustme.CA()
    proxy_sink, peer_sink = Sink(), Sink()
    proxy = proxy_sink.manager(ip_tos=AF31, tls=settings(server=server_context(ca, "127.0.0.1")))
    peer = peer_sink.manager(ip_tos=CS3, tls=settings(members=client_context(ca)))
    await proxy.start([("tls", "127.0.0.1", 0)])
    await peer.start([])
    try:
        port = proxy.listen_addresses[0].port
        peer.send(sip_request(1), Address("TLS", "127.0.0.1", port))
        _, source, _ = await proxy_sink.message()
        accepted = connection_to(proxy, "TLS", (source.host, source.port))
        assert socket_tos(connection_socket(accepted)) == AF31
        opened = connection_to(peer, "TLS", ("127.0.0.1", port))
        assert socket_tos(connection_socket(opened)) == CS3
    finally:
        await peer.stop()
        await proxy.stop()


# ---------------------------------------------------------------------------- reload


async def test_a_new_tos_marks_every_socket_at_once(marked: tuple[Sink, TransportManager]) -> None:
    """TransportManager.set_ip_tos (a reload): UDP, listening and connected sockets alike."""
    loop = asyncio.get_running_loop()
    _, manager = marked
    listener, port = await tcp_listener()
    try:
        manager.send(sip_request(1), Address("TCP", "127.0.0.1", port))
        accepted, _ = await asyncio.wait_for(loop.sock_accept(listener), TIMEOUT)
        with accepted, tos_receiver() as receiver:
            await asyncio.wait_for(loop.sock_recv(accepted, 4096), TIMEOUT)
            connection = connection_to(manager, "TCP", ("127.0.0.1", port))
            udp_peer = Address("UDP", "127.0.0.1", receiver.getsockname()[1])
            for tos in (CS3, 0, AF31):
                manager.set_ip_tos(tos)
                manager.send(b"ping", udp_peer)
                assert await received_tos(receiver) == (b"ping", tos)
                assert socket_tos(connection_socket(connection)) == tos
                for server in manager._servers:
                    for sock in server.sockets:
                        assert socket_tos(sock) == tos
    finally:
        listener.close()


async def test_a_reload_applies_a_new_tos_to_the_running_proxy(tmp_path: Path) -> None:
    members = f'primary = "udp:127.0.0.1:{free_port()}"\nbackup = "udp:127.0.0.1:{free_port()}"\n'
    pair = f'[[pair]]\nname = "p"\n{members}serving = true\n'
    path = tmp_path / "sipha.toml"
    listen = f'listen = ["udp:127.0.0.1:{free_port()}"]'
    path.write_text(f"[proxy]\n{listen}\n[monitor]\noos-check = 0\n{pair}", encoding="utf-8")
    app = ProxyApp(load_config(path), admin=False, config_path=path)
    await app.start()
    try:
        with tos_receiver() as receiver:
            peer = Address("UDP", "127.0.0.1", receiver.getsockname()[1])
            app.transports.send(b"before", peer)
            assert await received_tos(receiver) == (b"before", 0)
            path.write_text(
                f"[proxy]\n{listen}\nsip-ip-tos = 0x68\n[monitor]\noos-check = 0\n{pair}", encoding="utf-8"
            )
            assert await app.reload()
            assert app.config.proxy.sip_ip_tos == AF31
            app.transports.send(b"after", peer)
            assert await received_tos(receiver) == (b"after", AF31)
    finally:
        await app.stop()


# ---------------------------------------------------------------------------- workers


def test_worker_sockets_are_bound_marked(tmp_path: Path) -> None:
    path = tmp_path / "sipha.toml"
    udp, tcp = free_port(), free_port(socket.SOCK_STREAM)
    path.write_text(
        f'[proxy]\nlisten = ["udp:127.0.0.1:{udp}", "tcp:127.0.0.1:{tcp}"]\nworkers = 2\nsip-ip-tos = 0x60\n',
        encoding="utf-8",
    )
    plans = bind_worker_sockets(load_config(path), 2)
    try:
        sockets = [sock for plan in plans for bound in plan.values() for sock, _ in bound]
        assert len(sockets) == 2 * 3  # per worker: shared UDP, shared TCP, its own UDP
        assert all(OWN_SOCKETS in plan for plan in plans)
        assert {socket_tos(sock) for sock in sockets} == {CS3}
    finally:
        for plan in plans:
            for bound in plan.values():
                for sock, _ in bound:
                    sock.close()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_bind_shared_leaves_the_default_at_zero(transport: str) -> None:
    sock, _ = bind_shared(transport, socket.AF_INET, "127.0.0.1", 0, udp_buffer=65536)
    with sock:
        assert socket_tos(sock) == 0
