"""A long read looks at the receive queue as it goes (sipha.net.udp, docs/design.md §3 "Overload").

The backlog read before timers fire (thousands of datagrams) used to judge the queue only at
its end: a level found low before it stayed low throughout, and a flood was read at full cost
while the queue overflowed.
"""

from __future__ import annotations

import socket

from sipha.net import TransportManager
from sipha.net.udp import BACKLOG_CHECK_EVERY
from sipha.sip.address import Address
from tests.net.support import Sink


async def test_a_long_read_reports_a_rising_backlog_before_its_end() -> None:
    sink = Sink()
    reports: list[tuple[int, int]] = []  # (level, datagrams handed over when it was reported)
    delivered: list[bytes] = []

    def on_message(data: bytes, source: Address, local: Address) -> None:
        delivered.append(data)
        sink.on_message(data, source, local)

    manager = TransportManager(
        on_message,
        sink.on_transport_error,
        on_backlog=lambda _socket, level: reports.append((level, len(delivered))),
    )
    await manager.start([("udp", "127.0.0.1", 0)])
    try:
        [endpoint] = manager._udp
        endpoint.behind_delays = ()  # the share alone: how long sending takes does not count
        _, buffer, _ = endpoint.queued()
        target = manager.listen_addresses[0]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"x" * 1000, (target.host, target.port))
            truesize = endpoint.queued()[0]
            for _ in range(buffer * 11 // 16 // truesize):  # more than half the buffer queued
                sender.sendto(b"x" * 1000, (target.host, target.port))
        queued = endpoint.queued()[0]
        assert queued > buffer // 2
        total = queued // truesize
        assert total > 2 * BACKLOG_CHECK_EVERY
        assert endpoint.read(1_000_000) == total
        # Judged after the first BACKLOG_CHECK_EVERY datagrams, with the queue still deep; not
        # lowered while the read drains it (shedding goes on); caught up once it is read.
        assert reports == [(2, BACKLOG_CHECK_EVERY), (0, total)]
    finally:
        await manager.stop()
