"""The HEP exporter never blocks nor fails the proxy; the tracer's addresses; the log trace's text."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest

from sipha.sip.address import Address
from sipha.trace.tracer import HepCounters, HepExporter, MessageTracer
from tests.net.support import Sink, free_port, sip_request, sip_response
from tests.tracing.hepdecode import decode
from tests.tracing.support import HOST, WAIT

PHONE = Address("UDP", "192.0.2.1", 5060)
SIPHA = Address("UDP", "192.0.2.2", 5060)


def exporter(sock: socket.socket, counters: HepCounters | None = None) -> HepExporter:
    return HepExporter(
        sock, target="udp:test", capture_id=9, auth_key=b"", counters=counters or HepCounters()
    )


def test_packets_reach_the_collector_and_are_counted() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as collector:
        collector.bind((HOST, 0))
        collector.settimeout(WAIT)
        hep = HepExporter.open(
            HOST, collector.getsockname()[1], target="t", capture_id=9, auth_key=b"k", counters=HepCounters()
        )
        try:
            for number in range(3):
                hep.export(sip_request(number), PHONE, SIPHA, time.time_ns())
            packets = [decode(collector.recv(65535)) for _ in range(3)]
        finally:
            hep.close()
    assert [packet.payload for packet in packets] == [sip_request(number) for number in range(3)]
    assert {packet.chunks[0x000E] for packet in packets} == {b"k"}
    assert hep.counters.sent == 3
    assert hep.counters.dropped == {"buffer_full": 0, "send_error": 0, "unencodable": 0}


def test_a_full_socket_buffer_drops_and_counts_without_raising(caplog: pytest.LogCaptureFixture) -> None:
    # A Unix datagram socket nobody reads: the kernel refuses more once its queue is full
    # (EAGAIN), as a UDP socket does when the interface cannot drain it fast enough.
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, theirs:
        ours.setblocking(False)
        hep = exporter(ours)
        started = time.monotonic()
        for _ in range(100_000):
            hep.export(sip_request(), PHONE, SIPHA, time.time_ns())
            if hep.counters.dropped["buffer_full"] >= 10:
                break
        assert time.monotonic() - started < WAIT  # never blocked
        queued = 0
        theirs.setblocking(False)
        while True:
            try:
                theirs.recv(65535)
            except BlockingIOError:
                break
            queued += 1
    assert hep.counters.dropped["buffer_full"] == 10
    assert hep.counters.sent == queued > 0
    warnings = [r.getMessage() for r in caplog.records if "not exported" in r.getMessage()]
    expected = (
        "trace: HEP to udp:test: a message not exported (buffer_full: Resource temporarily unavailable); "
    )
    assert warnings == [expected + "further ones are only counted"]


def test_a_collector_that_is_down_is_a_count_not_an_error() -> None:
    # Nobody on the port: the kernel answers ICMP port unreachable, which the connected
    # socket reports on the next send (ECONNREFUSED).
    hep = HepExporter.open(HOST, free_port(), target="t", capture_id=9, auth_key=b"", counters=HepCounters())
    try:
        for _ in range(20):
            hep.export(sip_request(), PHONE, SIPHA, time.time_ns())
    finally:
        hep.close()
    assert hep.counters.dropped["send_error"] >= 1
    assert hep.counters.sent + hep.counters.dropped["send_error"] == 20


def test_a_message_without_ip_addresses_is_counted_unencodable() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, theirs:
        hep = exporter(ours)
        hep.export(sip_request(), SIPHA, Address("UDP", "gw.example.com", 5060), 0)
    assert hep.counters.dropped["unencodable"] == 1
    assert hep.counters.sent == 0


async def test_the_address_a_message_leaves_from() -> None:
    """UDP: the listen socket; TCP: the connection's local address, once the peer sent on it."""
    sink = Sink()
    manager = sink.manager()
    udp_port, tcp_port = free_port(), free_port(socket.SOCK_STREAM)
    await manager.start([("udp", HOST, udp_port), ("tcp", HOST, tcp_port)])
    try:
        tracer = MessageTracer(manager, None, log=False)
        assert tracer.local_for(Address("UDP", "192.0.2.9", 5060)) == Address("UDP", HOST, udp_port)
        peer = Address("TCP", HOST, free_port(socket.SOCK_STREAM))
        assert tracer.local_for(peer) == Address("TCP", HOST, tcp_port)  # not connected yet
        reader, writer = await asyncio.open_connection(HOST, tcp_port)
        try:
            writer.write(sip_request())
            data, source, local = await sink.message()
            tracer.received(data, source, local)
            assert local == Address("TCP", HOST, tcp_port)
            assert tracer.local_for(Address("TCP", source.host, source.port)) == local
            manager.send(sip_response(), source)
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)).startswith(b"SIP/2.0 200")
        finally:
            writer.close()
    finally:
        await manager.stop()


def test_the_log_trace_shows_both_addresses_and_the_whole_message(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sipha.trace")
    tracer = MessageTracer(_NoTransports(), None, log=True)
    tracer.received(sip_request(7), Address("TCP", "2001:db8::7", 40000), Address("TCP", "2001:db8::1", 5060))
    (record,) = caplog.records
    assert record.name == "sipha.trace"
    assert record.levelname == "INFO"
    text = sip_request(7).decode().replace("\r\n", "\n").rstrip("\n")
    size = len(sip_request(7))
    assert record.getMessage() == (
        f"SIP received from tcp:[2001:db8::7]:40000 on tcp:[2001:db8::1]:5060 ({size} bytes):\n" + text
    )


def test_the_log_trace_costs_nothing_above_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sipha.trace")
    MessageTracer(_NoTransports(), None, log=True).received(sip_request(), PHONE, SIPHA)
    assert not caplog.records


class _NoTransports:
    """A tracer that only receives never asks the transports."""

    def local_address(self, transport: str, family: int = socket.AF_INET) -> Address:
        raise AssertionError("not asked")

    def open_probe_socket(self, family: int = socket.AF_INET) -> Address:
        raise AssertionError("not asked")
