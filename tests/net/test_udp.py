"""UDP: round trips, bursts, ICMP errors from the socket error queue, the bounded send queue."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
from collections.abc import AsyncIterator

import pytest

from sipha.net import Resolver, TransportManager
from sipha.net.stats import TransportStats
from sipha.net.udp import UdpEndpoint, extended_error
from sipha.sip.address import Address
from tests.net.support import TIMEOUT, Sink, free_port, ipv6_available


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Sink, TransportManager, Sink, TransportManager]]:
    sink_a, sink_b = Sink(), Sink()
    a, b = sink_a.manager(), sink_b.manager()
    await a.start([("udp", "127.0.0.1", 0)])
    await b.start([("udp", "127.0.0.1", 0)])
    yield sink_a, a, sink_b, b
    await a.stop()
    await b.stop()


async def test_round_trip(pair: tuple[Sink, TransportManager, Sink, TransportManager]) -> None:
    sink_a, a, sink_b, b = pair
    a_address, b_address = a.listen_addresses[0], b.listen_addresses[0]
    assert b_address.port != 0
    a.send(b"hello", b_address)
    data, source, local = await sink_b.message()
    assert (data, source, local) == (b"hello", a_address, b_address)
    b.send(b"back", source)
    assert await sink_a.message() == (b"back", b_address, a_address)
    assert a.stats.datagrams_out == 1
    assert a.stats.datagrams_in == 1
    assert b.stats.udp_bytes_in == 5
    assert a.local_address("UDP", socket.AF_INET) == a_address


async def test_burst_of_1000_is_not_lost() -> None:
    count = 1000
    received: list[bytes] = []
    done = asyncio.Event()

    def on_message(data: bytes, source: Address, local: Address) -> None:
        received.append(data)
        if len(received) == count:
            done.set()

    a = Sink().manager()
    b = TransportManager(on_message, Sink().on_transport_error)
    await a.start([("udp", "127.0.0.1", 0)])
    await b.start([("udp", "127.0.0.1", 0)])
    try:
        destination = b.listen_addresses[0]
        payload = b"x" * 500
        started = time.perf_counter()
        for _ in range(count):
            a.send(payload, destination)
        await asyncio.wait_for(done.wait(), TIMEOUT)
        elapsed = time.perf_counter() - started
    finally:
        await a.stop()
        await b.stop()
    assert len(received) == count
    assert b.stats.datagrams_in == count
    assert a.stats.udp_send_drops == 0
    print(f"burst: {count} datagrams in {elapsed * 1000:.1f} ms ({count / elapsed:,.0f}/s)")


async def test_socket_buffers_are_raised() -> None:
    manager = Sink().manager(udp_buffer_size=4 * 1024 * 1024)
    await manager.start([("udp", "127.0.0.1", 0)])
    try:
        ((rcvbuf, sndbuf),) = manager.udp_buffer_sizes.values()
        print(f"SO_RCVBUF granted {rcvbuf}, SO_SNDBUF granted {sndbuf}")
        default = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with default:
            assert rcvbuf >= default.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    finally:
        await manager.stop()


async def test_icmp_port_unreachable_is_reported(
    pair: tuple[Sink, TransportManager, Sink, TransportManager],
) -> None:
    sink_a, a, _sink_b, _b = pair
    if not a.icmp_errors_reported:
        pytest.skip("IP_RECVERR is Linux-only")
    closed = Address("UDP", "127.0.0.1", free_port())
    a.send(b"anyone?", closed)
    destination, error = await sink_a.error()
    assert destination == closed
    assert isinstance(error, ConnectionRefusedError)
    assert a.stats.icmp_errors == 1
    # The socket still works afterwards, for other destinations.
    a.send(b"still here", _b.listen_addresses[0])
    assert (await _sink_b.message())[0] == b"still here"


async def test_icmp_errors_for_several_destinations(
    pair: tuple[Sink, TransportManager, Sink, TransportManager],
) -> None:
    sink_a, a, _sink_b, _b = pair
    if not a.icmp_errors_reported:
        pytest.skip("IP_RECVERR is Linux-only")
    closed = {Address("UDP", "127.0.0.1", free_port()) for _ in range(3)}
    for destination in closed:
        a.send(b"anyone?", destination)
    reported = set()
    for _ in closed:
        destination, _error = await sink_a.error()
        reported.add(destination)
    assert reported == closed


async def test_send_to_missing_family_is_reported(
    pair: tuple[Sink, TransportManager, Sink, TransportManager],
) -> None:
    sink_a, a, _sink_b, _b = pair
    destination = Address("UDP", "::1", 5060)
    a.send(b"x", destination)
    assert await sink_a.error() == (destination, "no UDP socket of this address family")


async def test_send_to_a_host_name_resolves_it(
    pair: tuple[Sink, TransportManager, Sink, TransportManager],
) -> None:
    _sink_a, a, sink_b, b = pair
    a.send(b"by name", Address("UDP", "localhost", b.listen_addresses[0].port))
    assert (await sink_b.message())[0] == b"by name"


async def test_lower_case_transport_is_accepted(
    pair: tuple[Sink, TransportManager, Sink, TransportManager],
) -> None:
    _sink_a, a, sink_b, b = pair
    a.send(b"lower", Address("udp", "127.0.0.1", b.listen_addresses[0].port))
    assert (await sink_b.message())[0] == b"lower"


async def test_unknown_transport_is_reported(
    pair: tuple[Sink, TransportManager, Sink, TransportManager],
) -> None:
    sink_a, a, _sink_b, _b = pair
    destination = Address("SCTP", "127.0.0.1", 5060)
    a.send(b"x", destination)
    assert await sink_a.error() == (destination, "unsupported transport 'SCTP'")


@pytest.mark.skipif(not ipv6_available(), reason="::1 is not usable here")
async def test_ipv6_round_trip_and_icmp() -> None:
    sink_a, sink_b = Sink(), Sink()
    a, b = sink_a.manager(), sink_b.manager()
    await a.start([("udp", "::1", 0), ("udp", "127.0.0.1", 0)])
    await b.start([("udp", "[::1]", 0)])
    try:
        b_address = b.listen_addresses[0]
        assert b_address.host == "::1"
        a.send(b"six", Address("UDP", "[::1]", b_address.port))
        data, source, _local = await sink_b.message()
        assert (data, source) == (b"six", a.local_address("UDP", socket.AF_INET6))
        b.send(b"back", source)
        assert (await sink_a.message())[0] == b"back"
        if a.icmp_errors_reported:
            closed = Address("UDP", "::1", free_port(host="::1"))
            a.send(b"anyone?", closed)
            destination, error = await sink_a.error()
            assert destination == closed
            assert isinstance(error, ConnectionRefusedError)
    finally:
        await a.stop()
        await b.stop()


async def test_start_is_all_or_nothing() -> None:
    sink = Sink()
    taken = sink.manager()
    await taken.start([("tcp", "127.0.0.1", 0)])
    port = taken.listen_addresses[0].port
    manager = sink.manager()
    try:
        with pytest.raises(OSError, match=r"."):
            await manager.start([("udp", "127.0.0.1", 0), ("tcp", "127.0.0.1", port)])
        assert manager.listen_addresses == []
        with pytest.raises(ValueError, match="unsupported transport"):
            await sink.manager().start([("sctp", "127.0.0.1", 0)])
    finally:
        await taken.stop()


async def test_local_address_lookup_fails_for_missing_family(
    pair: tuple[Sink, TransportManager, Sink, TransportManager],
) -> None:
    _sink_a, a, _sink_b, _b = pair
    with pytest.raises(LookupError):
        a.local_address("UDP", socket.AF_INET6)


# ---------------------------------------------------------------------- send queue


class FlakySocket:
    """A socket whose sendto raises EAGAIN on demand; fileno() is a real writable socket."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real
        self.full = True
        self.sent: list[bytes] = []
        self.fail_with: OSError | None = None

    def fileno(self) -> int:
        return self.real.fileno()

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 5060)

    def sendto(self, data: bytes, peer: tuple[str, int]) -> int:
        if self.fail_with is not None:
            error, self.fail_with = self.fail_with, None
            raise error
        if self.full:
            raise BlockingIOError(errno.EAGAIN, "full")
        self.sent.append(data)
        return len(data)

    def close(self) -> None:
        self.real.close()


async def test_send_queue_is_bounded_and_drained_in_order() -> None:
    loop = asyncio.get_running_loop()
    left, right = socket.socketpair()
    fake = FlakySocket(left)
    stats = TransportStats()
    errors: list[tuple[Address, OSError | str]] = []
    endpoint = UdpEndpoint(
        loop,
        fake,  # type: ignore[arg-type]
        recverr=False,
        on_message=lambda *_: None,
        on_error=lambda destination, error: errors.append((destination, error)),
        stats=stats,
        batch=8,
        queue_limit=3,
    )
    try:
        for number in range(5):
            endpoint.send(b"%d" % number, ("127.0.0.1", 9))
        assert stats.udp_send_drops == 2  # the two oldest
        assert stats.udp_send_queued == 5
        fake.full = False
        fake.fail_with = OSError(errno.EMSGSIZE, "too long")  # the first queued one fails
        for _ in range(20):
            await asyncio.sleep(0)  # the writer callback runs on the next iterations
            if not endpoint._queue:
                break
        assert fake.sent == [b"3", b"4"]
        assert errors == [(Address("UDP", "127.0.0.1", 9), fake_error(errors))]
        assert stats.datagrams_out == 2
        assert not endpoint._writing
        # Once drained, sends go straight out again.
        endpoint.send(b"5", ("127.0.0.1", 9))
        assert fake.sent[-1] == b"5"
    finally:
        endpoint.close()
        right.close()


def fake_error(errors: list[tuple[Address, OSError | str]]) -> OSError | str:
    error = errors[0][1]
    assert isinstance(error, OSError)
    assert error.errno == errno.EMSGSIZE
    return error


def test_extended_error_without_details() -> None:
    assert str(extended_error([])) == "ICMP error without details"


class FailingResolver(Resolver):
    async def _lookup(self, loop: asyncio.AbstractEventLoop, host: str) -> tuple[str, ...]:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} does not resolve")


async def test_unresolvable_destination_is_reported() -> None:
    sink = Sink()
    manager = sink.manager(resolver=FailingResolver())
    await manager.start([("udp", "127.0.0.1", 0)])
    try:
        destination = Address("UDP", "nowhere.invalid", 5060)
        manager.send(b"x", destination)
        reported, error = await sink.error()
        assert reported == destination
        assert isinstance(error, socket.gaierror)
    finally:
        await manager.stop()


async def test_stop_during_connect_leaves_nothing_behind() -> None:
    sink, server_sink = Sink(), Sink()
    server = server_sink.manager()
    manager = sink.manager()
    await server.start([("tcp", "127.0.0.1", 0)])
    await manager.start([("tcp", "127.0.0.1", 0)])
    manager.send(b"x", server.listen_addresses[0])
    await asyncio.sleep(0)  # the connect task has started
    await manager.stop()
    await server.stop()
    assert manager.stats.connections_open == 0
    assert sink.errors.empty()


async def test_read_pending_hands_over_the_backlog_at_once() -> None:
    """read_pending() reads what the kernel holds beyond one batch (before timers are judged)."""
    received: list[bytes] = []
    manager = TransportManager(
        lambda data, source, local: received.append(data), lambda d, e: None, udp_batch=4
    )
    await manager.start([("udp", "127.0.0.1", 0)])
    try:
        target = manager.listen_addresses[0]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for index in range(50):
                sender.sendto(b"x%d" % index, (target.host, target.port))
        await asyncio.sleep(0)  # no loop iteration with the reader yet, or only one batch
        manager.read_pending()
        assert len(received) == 50
    finally:
        await manager.stop()


@pytest.mark.parametrize(
    ("reuse_address", "reuse_port"),
    [(False, False), (True, False), (False, True), (True, True)],
    ids=["plain", "SO_REUSEADDR", "SO_REUSEPORT", "both"],
)
async def test_a_second_socket_cannot_take_a_listen_address(reuse_address: bool, reuse_port: bool) -> None:
    """Whatever options the intruder sets: on Linux two UDP sockets that both set SO_REUSEADDR
    share a port (and the datagrams), so a listen socket sets neither option."""
    manager = Sink().manager()
    await manager.start([("udp", "127.0.0.1", 0)])
    try:
        taken = manager.listen_addresses[0]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as intruder:
            if reuse_address:
                intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            with pytest.raises(OSError, match="in use") as caught:
                intruder.bind((taken.host, taken.port))
            assert caught.value.errno == errno.EADDRINUSE
    finally:
        await manager.stop()


async def test_a_second_manager_on_a_udp_address_is_refused_naming_it() -> None:
    first, second = Sink().manager(), Sink().manager()
    await first.start([("udp", "127.0.0.1", 0)])
    try:
        port = first.listen_addresses[0].port
        with pytest.raises(OSError, match="address in use by another process") as caught:
            await second.start([("udp", "127.0.0.1", port)])
        assert str(caught.value) == (
            f"proxy.listen 'udp:127.0.0.1:{port}': address in use by another process (another sipha?)"
        )
        assert caught.value.errno == errno.EADDRINUSE
        assert second.listen_addresses == []
    finally:
        await first.stop()


async def test_a_workers_group_on_the_port_refuses_a_single_process_too() -> None:
    """A ``[proxy] workers`` sipha holds the port with SO_REUSEPORT: a plain bind still fails."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as group:
        group.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        group.bind(("127.0.0.1", 0))
        port = group.getsockname()[1]
        manager = Sink().manager()
        with pytest.raises(OSError, match=f"'udp:127.0.0.1:{port}': address in use"):
            await manager.start([("udp", "127.0.0.1", port)])


@contextlib.asynccontextmanager
async def backlog_watched() -> AsyncIterator[tuple[TransportManager, UdpEndpoint, list[int], Sink]]:
    """One UDP listen socket whose backlog levels are recorded (the manager, its endpoint, the
    levels reported, the sink of the datagrams handed over)."""
    reports: list[int] = []
    sink = Sink()
    manager = TransportManager(
        sink.on_message, sink.on_transport_error, on_backlog=lambda _socket, behind: reports.append(behind)
    )
    await manager.start([("udp", "127.0.0.1", 0)])
    try:
        [endpoint] = manager._udp
        yield manager, endpoint, reports, sink
    finally:
        await manager.stop()


async def test_a_socket_left_with_a_quarter_of_its_buffer_queued_is_behind() -> None:
    """SO_MEMINFO after a full batch: behind (level 1) while the queue is filling, caught up once read."""
    async with backlog_watched() as (manager, endpoint, reports, _sink):
        endpoint.behind_delays = ()  # the share alone: how long sending takes does not count
        queued, buffer, _ = endpoint.queued()
        assert (queued, buffer > 0) == (0, True)
        target = manager.listen_addresses[0]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            # Enough datagrams to queue 3/8 of the buffer (each costs its truesize, more than
            # its payload), sent before the loop gets a chance to read them.
            sender.sendto(b"x" * 1000, (target.host, target.port))
            truesize = endpoint.queued()[0]
            for _ in range(buffer * 3 // 8 // truesize + 64):
                sender.sendto(b"x" * 1000, (target.host, target.port))
        assert buffer // 4 < endpoint.queued()[0] < buffer // 2
        endpoint.read(64)
        assert reports == [1]
        assert endpoint.behind == 1
        manager.read_pending(1_000_000)
        assert reports == [1, 0]
        assert endpoint.behind == 0


async def test_a_socket_whose_oldest_datagram_waited_too_long_is_behind() -> None:
    """SO_TIMESTAMPNS after a full batch: a short queue that has waited is behind too (a slow
    or throttled CPU takes seconds over a share of the buffer; BYEs and answers wait that long)."""
    async with backlog_watched() as (manager, endpoint, reports, sink):
        endpoint.behind_delays = (0.05, 0.1, 3600.0)
        target = manager.listen_addresses[0]
        assert endpoint.queue_delay() == 0.0  # nothing queued
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for _ in range(100):
                sender.sendto(b"x" * 200, (target.host, target.port))
        time.sleep(0.15)  # the loop does not run: the datagrams wait in the kernel
        queued, buffer, _ = endpoint.queued()
        assert queued < buffer // 4  # not behind by its share of the buffer
        assert 0.1 < endpoint.queue_delay() < 60.0
        assert endpoint.read(10) == 10
        assert reports == [2]  # waited more than 0.1 s, less than an hour
        assert endpoint.behind == 2
        assert sink.messages.qsize() == 10  # peeking took nothing: every datagram is handed over
        manager.read_pending(1_000_000)
        assert reports == [2, 0]
        assert sink.messages.qsize() == 100
