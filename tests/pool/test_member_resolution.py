"""Pair members given by host name (issue 14 item 1), without a network: a fake zone, a fake clock.

:class:`sipha.hostnames.MemberNames` resolves the names through the ``[dns]`` resolver
(here :class:`tests.net.test_dns.FakeDns`: dnspython's answer types from a zone, on a
clock that moves only when the test says so), looks each one up again when its
answer expires (its TTL, clamped), keeps the last address when a lookup fails, and
hands the core IP addresses: :func:`sipha.assembly.reconfigure_members` applies a
moved address as a reload of that member.  The same, end to end against dnsmasq and
a running sipha: tests/pool/test_member_names.py.
"""

from __future__ import annotations

import logging
import socket

import pytest

from sipha.assembly import build_monitor, build_settings, build_view, reconfigure_members
from sipha.config import Config, load_config_text
from sipha.hostnames import RETRY, SOONEST, MemberName, MemberNames, member_names
from sipha.net.resolve import Resolver
from sipha.net.tls import TlsSettings
from sipha.proxy.core import ProxyCore
from sipha.sip.address import Address
from tests.net.test_dns import FakeDns

PORT = 5070


def config(primary: str = "sip1.example.com", backup: str = "sip2.example.com") -> Config:
    return load_config_text(
        "\n".join(
            [
                "[proxy]",
                'listen = ["udp:127.0.0.1:5060"]',
                "[[pair]]",
                'name = "named"',
                f'primary = "udp:{primary}:{PORT}"',
                f'backup = "udp:{backup}:{PORT}"',
                "serving = true",
                "[[pair]]",
                'name = "literal"',
                'primary = "udp:192.0.2.51:5060"',
                'backup = "udp:192.0.2.52:5060"',
                "",
            ]
        )
    )


ZONE = """
sip1.example.com 10 A 192.0.2.1
sip2.example.com 30 A 192.0.2.2
sip2.example.com 30 AAAA 2001:db8::2
"""


class Bed:
    """MemberNames over a fake zone; ``now`` is the fake resolver's clock, shared."""

    def __init__(self, zone: str = ZONE, current: Config | None = None, **dns: float) -> None:
        self.dns = FakeDns(zone, **dns)
        self.system = Resolver()
        self.config = current if current is not None else config()
        self.names = MemberNames(self.dns, self.system, lambda: self.config, self.dns.clock)

    @property
    def now(self) -> float:
        return self.dns.clock.now

    def advance(self, seconds: float) -> None:
        self.dns.clock.now += seconds


def test_only_names_are_looked_up_and_each_is_named_by_its_keys() -> None:
    assert member_names(config()) == {
        "sip1.example.com": ["pair.0.primary = 'udp:sip1.example.com:5070'"],
        "sip2.example.com": ["pair.0.backup = 'udp:sip2.example.com:5070'"],
    }
    assert member_names(config("192.0.2.1", "[2001:db8::2]")) == {}
    assert list(member_names(config("SIP1.Example.COM."))) == ["sip1.example.com", "sip2.example.com"]


async def test_names_resolve_through_dns_ipv4_first_and_the_view_knows_the_members_by_ip() -> None:
    bed = Bed()
    assert await bed.names.resolve(bed.config) == {
        "sip1.example.com": "192.0.2.1",
        "sip2.example.com": "192.0.2.2",
    }
    assert ("A", "sip1.example.com") in bed.dns.asked
    view = build_view(bed.config, [Address("UDP", "127.0.0.1", 5060)], bed.names.addresses())
    primary, backup = view.members("named")
    assert (primary.address, backup.address) == (
        Address("UDP", "192.0.2.1", PORT),
        Address("UDP", "192.0.2.2", PORT),
    )
    # docs/design.md §2, §3: a request from the backup is recognised by its source IP and port.
    assert view.member_at("192.0.2.2", PORT) == backup
    assert view.member_at("sip2.example.com", PORT) is None
    assert bed.system.withheld == frozenset()
    # Each name is asked for again when its answer expires: the first to expire, A after 10 s.
    assert bed.names.names["sip1.example.com"].due == pytest.approx(bed.now + 10)
    assert bed.names.names["sip2.example.com"].due == pytest.approx(bed.now + 30)
    assert bed.names.next_due() == pytest.approx(bed.now + 10)


async def test_a_name_is_looked_up_again_when_its_ttl_expires_and_a_move_is_a_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bed = Bed()
    await bed.names.resolve(bed.config)
    bed.dns.set_zone(ZONE.replace("192.0.2.1", "192.0.2.9"))
    asked = len(bed.dns.asked)
    bed.advance(9.5)
    assert not await bed.names.refresh()  # before expiry: not asked, the old address kept
    assert len(bed.dns.asked) == asked
    assert bed.names.addresses()["sip1.example.com"] == "192.0.2.1"
    bed.advance(0.5)
    with caplog.at_level(logging.WARNING, logger="sipha"):
        assert await bed.names.refresh()
    assert bed.names.addresses() == {"sip1.example.com": "192.0.2.9", "sip2.example.com": "192.0.2.2"}
    # A only: the negative AAAA answer is still cached (RFC 2308), and says nothing of when to ask.
    assert bed.dns.asked[asked:] == [("A", "sip1.example.com")]
    assert "sip1.example.com moved from 192.0.2.1 to 192.0.2.9" in caplog.text
    assert "pair.0.primary = 'udp:sip1.example.com:5070'" in caplog.text
    assert bed.names.next_due() == pytest.approx(bed.now + 10)


async def test_the_ttl_is_clamped_and_a_ttl_of_zero_is_not_asked_for_again_at_once() -> None:
    bed = Bed(min_ttl=20, max_ttl=25)
    await bed.names.resolve(bed.config)
    assert bed.names.names["sip1.example.com"].due == pytest.approx(bed.now + 20)  # 10 raised to min-ttl
    assert bed.names.names["sip2.example.com"].due == pytest.approx(bed.now + 25)  # 30 capped at max-ttl
    zero = Bed(ZONE.replace("sip1.example.com 10", "sip1.example.com 0"))
    await zero.names.resolve(zero.config)
    assert zero.names.names["sip1.example.com"].due == pytest.approx(zero.now + SOONEST)


async def test_round_robin_answers_in_another_order_are_not_a_move() -> None:
    two = (
        "sip1.example.com 10 A 192.0.2.1\nsip1.example.com 10 A 192.0.2.3\nsip2.example.com 30 A 192.0.2.2\n"
    )
    bed = Bed(two)
    await bed.names.resolve(bed.config)
    bed.dns.set_zone(two.replace("A 192.0.2.1\n", "A 192.0.2.7\n", 1) + "sip1.example.com 10 A 192.0.2.1\n")
    bed.advance(10)
    assert not await bed.names.refresh()
    assert bed.names.addresses()["sip1.example.com"] == "192.0.2.1"


async def test_a_failed_re_resolution_keeps_the_last_address_is_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bed = Bed()
    await bed.names.resolve(bed.config)
    bed.dns.servfail.add("sip1.example.com")
    bed.advance(10)
    with caplog.at_level(logging.WARNING, logger="sipha"):
        assert not await bed.names.refresh()
        assert bed.names.addresses()["sip1.example.com"] == "192.0.2.1"
        assert bed.names.failures == 1
        assert "keeping its last address 192.0.2.1" in caplog.text
        assert "pair.0.primary = 'udp:sip1.example.com:5070'" in caplog.text
        assert bed.names.names["sip1.example.com"].due == pytest.approx(bed.now + RETRY)
        assert bed.names.problem("192.0.2.1") is None  # the member is reached at its last address
        # Asked again every RETRY s; the same failure is not logged again within a minute.
        caplog.clear()
        bed.advance(RETRY)
        assert not await bed.names.refresh()
        assert bed.names.failures == 2
        assert "keeping its last address" not in caplog.text
    bed.dns.servfail.clear()
    bed.advance(RETRY)
    assert not await bed.names.refresh()  # back, same address: nothing to rebuild
    assert bed.names.names["sip1.example.com"].problem is None


async def test_a_name_that_does_not_resolve_at_start_is_a_member_down_until_it_does(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bed = Bed("sip2.example.com 30 A 192.0.2.2\n", negative_ttl=8)
    with caplog.at_level(logging.ERROR, logger="sipha"):
        assert await bed.names.resolve(bed.config) == {"sip2.example.com": "192.0.2.2"}
    # Loud, naming the key and the value.
    assert "pair.0.primary = 'udp:sip1.example.com:5070'" in caplog.text
    assert "the member is down until its name resolves" in caplog.text
    problem = bed.names.problem("SIP1.example.com")
    assert problem is not None
    assert "sip1.example.com does not resolve through [dns]" in problem
    assert "NXDOMAIN" in problem
    assert bed.names.failures == 1
    # The view keeps the name; the transports refuse to resolve it another way (the system
    # resolver): sends to it fail as to a name that does not resolve, and its probes with them.
    view = build_view(bed.config, [Address("UDP", "127.0.0.1", 5060)], bed.names.addresses())
    assert view.members("named")[0].address == Address("UDP", "sip1.example.com", PORT)
    assert bed.system.withheld == frozenset({"sip1.example.com"})
    with pytest.raises(socket.gaierror, match="does not resolve"):
        await bed.system.resolve("sip1.example.com")
    # Published later: found once the negative answer expires (RFC 2308: at most 8 s here).
    bed.dns.set_zone(ZONE)
    bed.advance(RETRY)
    assert not await bed.names.refresh()  # the negative answer still holds
    bed.advance(RETRY)
    assert await bed.names.refresh()
    assert bed.names.addresses()["sip1.example.com"] == "192.0.2.1"
    assert bed.names.problem("sip1.example.com") is None
    assert bed.system.withheld == frozenset()


async def test_names_no_longer_configured_are_forgotten() -> None:
    bed = Bed()
    await bed.names.resolve(bed.config)
    # A reload resolves the new configuration's names before it is applied: while it is
    # not (or if it is refused), the names of the one in force are kept too.
    new = config(primary="sip3.example.com", backup="192.0.2.2")
    await bed.names.resolve(new)
    await bed.names.refresh()
    assert set(bed.names.names) == {"sip1.example.com", "sip2.example.com", "sip3.example.com"}
    bed.config = new
    await bed.names.refresh()
    assert set(bed.names.names) == {"sip3.example.com"}


def test_a_tls_member_given_by_name_is_verified_at_its_ip_as_by_its_name() -> None:
    bed = Bed()
    names = bed.names
    names.names["sip1.example.com"] = MemberName("sip1.example.com", "192.0.2.1")  # resolved
    base = TlsSettings(
        server=None,
        members=None,  # type: ignore[arg-type]  # not used: only the names are looked at
        others=None,  # type: ignore[arg-type]
        member_names={
            ("sip1.example.com", 5061): "sip1.example.com",
            ("192.0.2.50", 5061): "other.example.com",
        },
    )
    settings = names.tls(base)
    assert settings is not None
    assert settings.member_names[("192.0.2.1", 5061)] == "sip1.example.com"
    assert settings.member_names[("192.0.2.50", 5061)] == "other.example.com"
    # Moved: the entry of the old address goes, the new one comes.
    names.names["sip1.example.com"].address = "192.0.2.9"
    moved = names.tls(settings)
    assert moved is not None
    assert ("192.0.2.1", 5061) not in moved.member_names
    assert moved.member_names[("192.0.2.9", 5061)] == "sip1.example.com"
    assert names.tls(None) is None


def test_a_moved_member_is_applied_as_a_reload_of_its_pair_only() -> None:
    current = config()
    listen = [Address("UDP", "127.0.0.1", 5060)]
    view = build_view(current, listen, {"sip1.example.com": "192.0.2.1", "sip2.example.com": "192.0.2.2"})
    core = ProxyCore(build_settings(current, listen), view, monitor=build_monitor(current, view))
    core.start(0.0)
    assert core.monitor is not None
    literal = core.monitor.pairs["literal"]
    reprobed = reconfigure_members(
        core, current, {"sip1.example.com": "192.0.2.9", "sip2.example.com": "192.0.2.2"}, None, 1.0
    )
    assert reprobed == ["named"]
    assert core.monitor.pairs["literal"] is literal  # its state kept
    primary = core.view.member_at("192.0.2.9", PORT)
    assert primary is not None
    assert (primary.pair, primary.role) == ("named", "primary")
    assert core.view.member_at("192.0.2.1", PORT) is None
    assert {m.address.host for m in core.monitor.pairs["named"].members()} == {"192.0.2.9", "192.0.2.2"}
