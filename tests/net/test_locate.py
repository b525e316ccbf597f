"""Locator: the core's RFC 3263 lookups run on the loop, answered by key; failed targets go last.

The resolver answers from a fake zone (:class:`tests.net.test_dns.FakeDns`); the
last test asks a real dnsmasq.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import pytest

from sipha.net import locate as locate_module
from sipha.net.dns import SipResolver, Target
from sipha.net.locate import Locator
from sipha.sip.address import Address
from tests.net.dns_support import Dnsmasq, dnsmasq_unusable
from tests.net.test_dns import FakeDns

ALL = frozenset({"UDP", "TCP", "TLS"})
ZONE = """
_sip._udp.carrier.example.com 300 SRV 10 0 5060 a.carrier.example.com.
_sip._udp.carrier.example.com 300 SRV 20 0 5070 b.carrier.example.com.
a.carrier.example.com 300 A 192.0.2.1
b.carrier.example.com 300 A 192.0.2.2
"""
A = Address("UDP", "192.0.2.1", 5060)
B = Address("UDP", "192.0.2.2", 5070)


@dataclass(frozen=True)
class Wanted:
    """A lookup as the core puts it out (sipha.proxy.targets.Lookup)."""

    key: int
    host: str = "carrier.example.com"
    port: int | None = None
    transport: str | None = "udp"
    secure: bool = False
    supported: frozenset[str] = ALL


class Answers:
    """What the locator answered, by key; ``wait`` for a number of answers (bounded)."""

    def __init__(self) -> None:
        self.got: dict[int, list[Address]] = {}
        self.event = asyncio.Event()

    def __call__(self, key: int, targets: list[Address]) -> None:
        self.got[key] = targets
        self.event.set()

    async def wait(self, count: int) -> dict[int, list[Address]]:
        async with asyncio.timeout(5):
            while len(self.got) < count:
                self.event.clear()
                await self.event.wait()
        return self.got


async def test_a_lookup_is_answered_with_its_targets_in_order() -> None:
    answers = Answers()
    locator = Locator(FakeDns(ZONE), answers)
    locator.locate(Wanted(7))
    assert answers.got == {}  # never from the call itself
    assert await answers.wait(1) == {7: [A, B]}


async def test_concurrent_lookups_are_answered_each_by_its_key() -> None:
    answers = Answers()
    resolver = FakeDns(ZONE)
    resolver.delays["_sip._udp.carrier.example.com"] = 0.05
    locator = Locator(resolver, answers)
    for key in range(1, 6):
        locator.locate(Wanted(key))
    assert await answers.wait(5) == {key: [A, B] for key in range(1, 6)}
    assert resolver.asked.count(("SRV", "_sip._udp.carrier.example.com")) == 1  # one shared query


async def test_a_failed_target_is_tried_last_for_a_while() -> None:
    answers = Answers()
    resolver = FakeDns(ZONE)
    locator = Locator(resolver, answers, avoid=30)
    locator.failed(A)
    locator.locate(Wanted(1))
    assert (await answers.wait(1))[1] == [B, A]
    resolver.clock.now += 31
    locator.locate(Wanted(2))
    assert (await answers.wait(2))[2] == [A, B]


async def test_a_name_that_does_not_resolve_gets_no_target_and_one_log_line_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answers = Answers()
    locator = Locator(FakeDns(ZONE), answers)
    with caplog.at_level(logging.WARNING, logger="sipha"):
        for key in (1, 2):
            locator.locate(Wanted(key, host="nowhere.example.com"))
        assert await answers.wait(2) == {1: [], 2: []}
    lines = [r.getMessage() for r in caplog.records if "nowhere.example.com" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("cannot resolve SIP host nowhere.example.com: ")
    assert "408" in lines[0]
    assert locator.failures == 2


async def test_a_sips_uri_asking_for_udp_gets_no_target() -> None:
    answers = Answers()
    locator = Locator(FakeDns(ZONE), answers)
    locator.locate(Wanted(1, secure=True))
    assert await answers.wait(1) == {1: []}


class Stuck(FakeDns):
    """A resolver whose lookups never end (a DNS server that answers every query slowly)."""

    async def targets(self, host: str, **_: object) -> list[Target]:
        await asyncio.sleep(30)
        raise AssertionError(host)


async def test_a_lookup_is_bounded_in_time() -> None:
    answers = Answers()
    locator = Locator(Stuck(ZONE, timeout=0.05), answers)
    loop = asyncio.get_running_loop()
    started = loop.time()
    locator.locate(Wanted(1))
    assert await answers.wait(1) == {1: []}  # after 4 query timeouts: NAPTR, SRV, A/AAAA, a fallback
    assert 0.19 < loop.time() - started < 2.0


async def test_too_many_lookups_at_once_get_no_target_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locate_module, "MAX_LOOKUPS", 2)
    answers = Answers()
    resolver = FakeDns(ZONE)
    resolver.delays["_sip._udp.carrier.example.com"] = 0.2
    locator = Locator(resolver, answers)
    for key in (1, 2, 3):
        locator.locate(Wanted(key))
    got = await answers.wait(1)
    assert got == {3: []}  # the third, refused before the others are answered
    assert await answers.wait(3) == {1: [A, B], 2: [A, B], 3: []}


async def test_close_stops_the_lookups_under_way() -> None:
    answers = Answers()
    resolver = FakeDns(ZONE)
    resolver.delays["_sip._udp.carrier.example.com"] = 5.0
    locator = Locator(resolver, answers)
    locator.locate(Wanted(1))
    await asyncio.sleep(0)
    locator.close()
    await asyncio.sleep(0.05)
    assert answers.got == {}


@pytest.mark.integration
async def test_a_real_dns_server(request: pytest.FixtureRequest) -> None:
    reason = dnsmasq_unusable()
    if reason is not None:
        pytest.skip(reason)
    server = Dnsmasq()
    request.addfinalizer(server.stop)
    server.start(
        [
            "--srv-host=_sip._tcp.carrier.test,b.carrier.test,5071,20,0",
            "--srv-host=_sip._tcp.carrier.test,a.carrier.test,5070,10,0",
            "--host-record=a.carrier.test,192.0.2.1",
            "--host-record=b.carrier.test,192.0.2.2",
        ]
    )
    answers = Answers()
    locator = Locator(SipResolver(nameservers=[server.nameserver], timeout=1.0), answers)
    locator.locate(Wanted(1, host="carrier.test", transport=None))
    assert await answers.wait(1) == {
        1: [Address("TCP", "192.0.2.1", 5070), Address("TCP", "192.0.2.2", 5071)]
    }


class Broken(FakeDns):
    """A resolver with a bug."""

    async def targets(self, host: str, **_: object) -> list[Target]:
        raise RuntimeError(host)


async def test_a_resolver_bug_is_logged_and_the_request_answered(caplog: pytest.LogCaptureFixture) -> None:
    answers = Answers()
    with caplog.at_level(logging.ERROR, logger="sipha"):
        Locator(Broken(ZONE), answers).locate(Wanted(1))
        assert await answers.wait(1) == {1: []}
    assert [r.getMessage() for r in caplog.records] == ["lookup of SIP host carrier.example.com failed"]
