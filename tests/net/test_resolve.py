"""Resolver: IP literals at once, names through getaddrinfo with a bounded TTL cache."""

from __future__ import annotations

import asyncio
import socket

import pytest

from sipha.net import Resolver


class CountingResolver(Resolver):
    """A Resolver whose lookups are counted and answered from a table, no DNS involved."""

    __slots__ = ("answers", "calls", "delay")

    def __init__(self, answers: dict[str, tuple[str, ...]], **options: float) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.answers = answers
        self.calls: list[str] = []
        self.delay = 0.0

    async def _lookup(self, loop: asyncio.AbstractEventLoop, host: str) -> tuple[str, ...]:
        self.calls.append(host)
        if self.delay:
            await asyncio.sleep(self.delay)
        try:
            return self.answers[host]
        except KeyError:
            raise socket.gaierror(socket.EAI_NONAME, host) from None


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("192.0.2.1", ["192.0.2.1"]),
        ("::1", ["::1"]),
        ("[::1]", ["::1"]),
        ("[2001:DB8:0:0::1]", ["2001:db8::1"]),
    ],
)
async def test_ip_literals_are_returned_without_lookup(host: str, expected: list[str]) -> None:
    resolver = CountingResolver({})
    assert await resolver.resolve(host) == expected
    assert resolver.calls == []


async def test_localhost_resolves_through_the_system() -> None:
    addresses = await asyncio.wait_for(Resolver().resolve("localhost"), 5)
    assert addresses
    assert set(addresses) <= {"127.0.0.1", "::1"}
    assert len(addresses) == len(set(addresses))  # one entry per address, not per socket type


async def test_answers_are_cached_until_the_ttl() -> None:
    resolver = CountingResolver({"sip.example.com": ("192.0.2.1", "2001:db8::1")}, ttl=30.0)
    assert await resolver.resolve("sip.example.com") == ["192.0.2.1", "2001:db8::1"]
    assert await resolver.resolve("SIP.example.com.") == ["192.0.2.1", "2001:db8::1"]
    assert resolver.calls == ["sip.example.com"]
    expired = CountingResolver({"sip.example.com": ("192.0.2.1",)}, ttl=0.0)
    await expired.resolve("sip.example.com")
    await expired.resolve("sip.example.com")
    assert expired.calls == ["sip.example.com", "sip.example.com"]
    resolver.clear()
    await resolver.resolve("sip.example.com")
    assert len(resolver.calls) == 2


async def test_cache_is_bounded() -> None:
    answers: dict[str, tuple[str, ...]] = {f"h{n}.example.com": (f"192.0.2.{n}",) for n in range(5)}
    resolver = CountingResolver(answers, max_entries=3)
    for name in answers:
        await resolver.resolve(name)
    assert len(resolver._cache) == 3
    await resolver.resolve("h0.example.com")  # the oldest was evicted
    assert resolver.calls.count("h0.example.com") == 2


async def test_concurrent_lookups_share_one_query() -> None:
    resolver = CountingResolver({"sip.example.com": ("192.0.2.1",)})
    resolver.delay = 0.01
    results = await asyncio.gather(*(resolver.resolve("sip.example.com") for _ in range(5)))
    assert results == [["192.0.2.1"]] * 5
    assert resolver.calls == ["sip.example.com"]


async def test_failures_raise_and_are_not_cached() -> None:
    resolver = CountingResolver({})
    for _ in range(2):
        with pytest.raises(OSError, match=r"nowhere"):
            await resolver.resolve("nowhere.invalid")
    assert resolver.calls == ["nowhere.invalid", "nowhere.invalid"]


async def test_a_cancelled_caller_does_not_cancel_the_shared_lookup() -> None:
    resolver = CountingResolver({"sip.example.com": ("192.0.2.1",)})
    resolver.delay = 0.02
    impatient = asyncio.ensure_future(resolver.resolve("sip.example.com"))
    patient = asyncio.ensure_future(resolver.resolve("sip.example.com"))
    await asyncio.sleep(0.005)
    impatient.cancel()
    assert await asyncio.wait_for(patient, 2) == ["192.0.2.1"]
    assert resolver.calls == ["sip.example.com"]
