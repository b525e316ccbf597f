"""The hand-over channel between worker processes: datagrams, their addresses, order, counts."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from sipha.net.workers import Handoff, OnPairNews, handoff_pairs
from sipha.sip.address import Address
from tests.net.support import TIMEOUT

LISTEN = Address("UDP", "127.0.0.1", 5060)
PHONE = Address("UDP", "192.0.2.7", 40000)
PHONE_V6 = Address("UDP", "2001:db8::7", 40001)
LISTEN_V6 = Address("UDP", "::1", 5060)
PHONE_TCP = Address("TCP", "192.0.2.8", 40002)
LISTEN_TCP = Address("TCP", "127.0.0.1", 5060)
SERVER_TCP = Address("TCP", "127.0.0.1", 5070)
Pairs = list[tuple[socket.socket, socket.socket]]


@pytest.fixture
def pairs() -> Iterator[Pairs]:
    """The channel's sockets of two workers, closed after the test."""
    made = handoff_pairs(2)
    yield made
    for receiving, sending in made:
        receiving.close()
        sending.close()


async def test_a_message_to_write_on_another_workers_connection(pairs: Pairs) -> None:
    loop = asyncio.get_running_loop()
    writes: list[tuple[bytes, Address, Address]] = []
    got = asyncio.Event()

    def on_send(data: bytes, destination: Address, fallback: Address) -> None:
        writes.append((data, destination, fallback))
        got.set()

    holder = Handoff(loop, 0, pairs, lambda *_: None, on_send=on_send)
    owner = Handoff(loop, 1, pairs, lambda *_: None)
    try:
        owner.send_out(0, b"SIP/2.0 200 OK\r\n\r\n", PHONE_TCP, SERVER_TCP)
        await asyncio.wait_for(got.wait(), TIMEOUT)
        assert writes == [(b"SIP/2.0 200 OK\r\n\r\n", PHONE_TCP, SERVER_TCP)]
    finally:
        holder.close()
        owner.close()


async def test_datagrams_reach_their_owner_in_order_with_their_addresses(pairs: Pairs) -> None:
    loop = asyncio.get_running_loop()
    received: list[tuple[bytes, Address, Address]] = []
    senders: set[int] = set()
    batches: list[int] = []
    got_all = asyncio.Event()

    def on_message(data: bytes, source: Address, local: Address, sender: int) -> None:
        received.append((data, source, local))
        senders.add(sender)

    def on_batch_end() -> None:
        batches.append(len(received))
        if len(received) == 5:  # the five sent below
            got_all.set()

    reader = Handoff(loop, 0, pairs, lambda *_: None)
    owner = Handoff(loop, 1, pairs, on_message, on_batch_end=on_batch_end)
    try:
        sent = [
            (b"INVITE sip:a SIP/2.0\r\n\r\n", PHONE, LISTEN),
            (b"ACK sip:a SIP/2.0\r\n\r\n", PHONE, LISTEN),  # the same header, from the cache
            (b"BYE sip:b SIP/2.0\r\n\r\nwith a body\nand newlines", PHONE_V6, LISTEN_V6),
            (b"", PHONE, LISTEN),
            (b"OPTIONS sip:b SIP/2.0\r\n\r\n", PHONE_TCP, LISTEN_TCP),
        ]
        for data, source, local in sent:
            reader.send(1, data, source, local)
        await asyncio.wait_for(got_all.wait(), TIMEOUT)
        assert received == sent
        assert senders == {0}
        assert batches[-1] == len(sent)
        assert (reader.handed_over, owner.received, reader.dropped) == (5, 5, 0)
    finally:
        reader.close()
        owner.close()


async def test_a_full_channel_counts_drops_instead_of_blocking(pairs: Pairs) -> None:
    loop = asyncio.get_running_loop()
    reader = Handoff(loop, 0, pairs, lambda *_: None)
    try:
        pairs[1][0].close()  # the owner is gone: sending fails at once
        reader.send(1, b"lost", PHONE, LISTEN)
        assert (reader.handed_over, reader.dropped) == (0, 1)
    finally:
        reader.close()


async def test_pair_news_reach_every_other_worker(pairs: Pairs) -> None:
    """``H`` packets: a switch seen by one worker is told to all the others, not to itself."""
    loop = asyncio.get_running_loop()
    news: list[tuple[int, str, str, str, float, int]] = []
    got = asyncio.Event()

    def on_pair(index: int) -> OnPairNews:
        def record(pair: str, what: str, role: str, at: float, sender: int) -> None:
            news.append((index, pair, what, role, at, sender))
            got.set()

        return record

    first = Handoff(loop, 0, pairs, lambda *_: None, on_pair=on_pair(0))
    second = Handoff(loop, 1, pairs, lambda *_: None, on_pair=on_pair(1))
    try:
        first.broadcast_pair("site-a", "active", "backup", 12345.678901234)
        await asyncio.wait_for(got.wait(), TIMEOUT)
        await asyncio.sleep(0.05)  # nothing comes back to the sender
        assert news == [(1, "site-a", "active", "backup", 12345.678901234, 0)]
        assert (first.handed_over, second.received) == (1, 1)
    finally:
        first.close()
        second.close()
