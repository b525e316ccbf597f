"""[limits] per source (sipha.proxy.ratelimit): a token bucket per IP, scanners' User-Agents, on a fake clock.

And through the dispatcher: what the guard drops never reaches the core (no 100 Trying,
nothing forwarded to a member), is counted, and is logged once per source per minute.
"""

from __future__ import annotations

import ipaddress
import logging

import pytest

from sipha.dispatch import Dispatcher
from sipha.proxy.ratelimit import (
    ADMIT,
    MAX_SOURCES,
    NOTICE_EVERY,
    RATE_LIMITED,
    SCANNER,
    GuardSettings,
    SourceGuard,
    canonical_ip,
    scanner_word,
    user_agent,
)
from sipha.sip.address import Address
from tests.proxy.support import PRIMARY, PROXY, harness, invite

SCANNERS = tuple(word.lower().encode() for word in ("friendly", "scanner", "sipvicious"))
SCANNER_IP = "192.0.2.66"
OPTIONS = (
    b"OPTIONS sip:100@192.0.2.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.66:5060;branch=z9hG4bK-1\r\n"
    b"From: <sip:100@192.0.2.1>;tag=1\r\nTo: <sip:100@192.0.2.1>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\n"
    b"User-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n"
)
RESPONSE = b"SIP/2.0 200 OK\r\nUser-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n"


def guard(**settings: object) -> SourceGuard:
    return SourceGuard(GuardSettings(**settings))  # type: ignore[arg-type]


def verdicts(
    g: SourceGuard, count: int, *, at: float, host: str = SCANNER_IP, data: bytes = b"x"
) -> list[int]:
    return [g.check(data, host, at) for _ in range(count)]


# ---------------------------------------------------------------------------- the bucket


def test_a_source_gets_its_burst_then_the_rate() -> None:
    g = guard(rate=10.0, burst=5.0)
    assert verdicts(g, 7, at=100.0) == [ADMIT] * 5 + [RATE_LIMITED] * 2
    assert g.rate_limited == 2
    # 0.35 s later: 3.5 tokens back, three messages pass, the fourth does not.
    assert verdicts(g, 4, at=100.35) == [ADMIT] * 3 + [RATE_LIMITED]
    # Long after: never more than the burst at once.
    assert verdicts(g, 6, at=1000.0) == [ADMIT] * 5 + [RATE_LIMITED]
    assert g.rate_limited == 4


def test_sources_are_counted_apart_by_ip() -> None:
    g = guard(rate=1.0, burst=2.0)
    assert verdicts(g, 3, at=5.0, host="192.0.2.1") == [ADMIT, ADMIT, RATE_LIMITED]
    assert verdicts(g, 3, at=5.0, host="192.0.2.2") == [ADMIT, ADMIT, RATE_LIMITED]
    assert len(g) == 2


def test_a_sustained_flood_gets_the_rate_through_and_no_more() -> None:
    """1,000 messages/s for 10 s against 50/s, burst 100: 100 + 50 x 10 pass (a fake clock)."""
    g = guard(rate=50.0, burst=100.0)
    admitted = sum(g.check(b"x", SCANNER_IP, 10.0 + i / 1000) == ADMIT for i in range(10_000))
    assert 100 + 50 * 10 - 1 <= admitted <= 100 + 50 * 10  # the last message comes at 9.999 s
    assert g.rate_limited == 10_000 - admitted


def test_no_rate_no_limit() -> None:
    g = guard(rate=0.0, scanner_agents=SCANNERS)
    assert verdicts(g, 1000, at=1.0) == [ADMIT] * 1000
    assert not guard().enabled
    assert guard(rate=1.0).enabled
    assert guard(scanner_agents=SCANNERS).enabled


def test_pair_members_and_trusted_networks_are_never_limited() -> None:
    g = guard(
        rate=1.0,
        burst=1.0,
        scanner_agents=SCANNERS,
        exempt=frozenset({"192.0.2.10"}),
        trusted=(ipaddress.ip_network("198.51.100.0/24"), ipaddress.ip_network("2001:db8::/32")),
    )
    for host in ("192.0.2.10", "198.51.100.7", "2001:db8::5"):
        assert verdicts(g, 50, at=1.0, host=host, data=OPTIONS) == [ADMIT] * 50, host
    assert verdicts(g, 2, at=1.0, host="198.51.101.7") == [ADMIT, RATE_LIMITED]
    assert g.check(OPTIONS, "192.0.2.11", 1.0) == SCANNER


def test_the_table_of_sources_is_bounded() -> None:
    """A flood of forged source addresses: the oldest entries go first, memory stays bounded."""
    g = guard(rate=1.0, burst=1.0)
    first = "10.0.0.0"
    assert g.check(b"x", first, 0.0) == ADMIT
    assert g.check(b"x", first, 0.0) == RATE_LIMITED
    for index in range(1, MAX_SOURCES + 10):
        g.check(b"x", str(ipaddress.ip_address(0x0A000000 + index)), 0.0)
    assert len(g) == MAX_SOURCES
    assert g.check(b"x", first, 0.0) == ADMIT  # forgotten: a new, full bucket


def test_a_reload_refills_every_bucket_and_keeps_the_counters() -> None:
    g = guard(rate=1.0, burst=1.0)
    assert verdicts(g, 2, at=1.0) == [ADMIT, RATE_LIMITED]
    g.reconfigure(GuardSettings(rate=2.0, burst=2.0))
    assert verdicts(g, 3, at=1.0) == [ADMIT, ADMIT, RATE_LIMITED]
    assert g.rate_limited == 2
    g.reconfigure(GuardSettings())
    assert not g.enabled
    assert len(g) == 0


def test_notices_are_one_per_source_per_minute_with_the_count() -> None:
    g = guard(rate=1.0, burst=1.0)
    verdicts(g, 5, at=0.0)
    assert g.notice(SCANNER_IP, 0.0) == 4  # the first drop is logged at once
    verdicts(g, 10, at=1.0)
    assert g.notice(SCANNER_IP, 1.0) == 0  # within the minute: no line
    assert g.notice(SCANNER_IP, NOTICE_EVERY - 0.1) == 0
    assert g.notice(SCANNER_IP, NOTICE_EVERY + 0.1) == 9  # the drops since the last line
    assert g.notice("198.51.100.1", 100.0) == 0  # a source never seen


# ---------------------------------------------------------------------------- User-Agent


@pytest.mark.parametrize(
    ("header", "agent"),
    [
        (b"User-Agent: friendly-scanner", b"friendly-scanner"),
        (b"user-agent:friendly-scanner ", b"friendly-scanner"),
        (b"USER-AGENT \t:  sipvicious 0.3", b"sipvicious 0.3"),
        (b"User-Agent: Linphone/5.0 (belle-sip)", b"Linphone/5.0 (belle-sip)"),
    ],
)
def test_the_user_agent_is_read_from_the_header_section(header: bytes, agent: bytes) -> None:
    data = OPTIONS.replace(b"User-Agent: friendly-scanner", header)
    assert user_agent(data) == agent


def test_no_user_agent_outside_its_header_field() -> None:
    body = b"User-Agent: friendly-scanner\r\n"
    no_header = OPTIONS.replace(b"User-Agent: friendly-scanner\r\n", b"")
    in_body = no_header.replace(b"Content-Length: 0\r\n\r\n", f"Content-Length: {len(body)}\r\n\r\n".encode())
    assert user_agent(in_body + body) is None  # a body line is not a header field (e.g. message/sipfrag)
    assert user_agent(no_header.replace(b"Call-ID: c1", b"X-User-Agent-Note: friendly-scanner")) is None
    assert user_agent(no_header.replace(b"Call-ID: c1", b"User-Agents: friendly-scanner")) is None
    assert user_agent(no_header) is None
    assert user_agent(b"") is None


def test_a_scanner_word_matches_in_any_case() -> None:
    assert scanner_word(OPTIONS, SCANNERS) == b"friendly"
    assert scanner_word(OPTIONS.replace(b"friendly-scanner", b"SIPVicious/0.3.3"), SCANNERS) == b"sipvicious"
    assert scanner_word(OPTIONS.replace(b"friendly-scanner", b"Zoiper rv2.10"), SCANNERS) is None


def test_a_scanners_request_is_dropped_its_responses_are_not_checked() -> None:
    g = guard(scanner_agents=SCANNERS)
    assert g.check(OPTIONS, SCANNER_IP, 1.0) == SCANNER
    assert g.check(RESPONSE, SCANNER_IP, 1.0) == ADMIT
    assert g.check(OPTIONS.replace(b"friendly-scanner", b"Zoiper rv2.10"), SCANNER_IP, 1.0) == ADMIT
    assert g.scanner_requests == 1
    assert g.rate_limited == 0


def test_a_decoy_header_does_not_hide_the_user_agent() -> None:
    decoy = OPTIONS.replace(
        b"User-Agent: friendly-scanner", b"User-Agents: none\r\nuser-agent: friendly-scanner"
    )
    assert user_agent(decoy) == b"friendly-scanner"
    assert scanner_word(decoy, SCANNERS) == b"friendly"


@pytest.mark.parametrize("method", ["ACK", "BYE", "CANCEL"])
def test_the_requests_of_a_call_under_way_are_not_looked_at(method: str) -> None:
    """A scanner asks with OPTIONS, REGISTER or INVITE; ACK, BYE and CANCEL cost no search."""
    g = guard(scanner_agents=SCANNERS)
    data = OPTIONS.replace(b"OPTIONS", method.encode())
    assert g.check(data, SCANNER_IP, 1.0) == ADMIT
    assert g.check(OPTIONS.replace(b"OPTIONS", b"REGISTER"), SCANNER_IP, 1.0) == SCANNER


def test_canonical_ip_is_what_the_transports_report() -> None:
    assert canonical_ip("[2001:DB8::1]") == "2001:db8::1"
    assert canonical_ip("192.0.2.1") == "192.0.2.1"
    assert canonical_ip("sip.example.com") == "sip.example.com"


# ---------------------------------------------------------------------------- through the dispatcher


class _Sent:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, Address]] = []

    def send(self, data: bytes, destination: Address) -> None:
        self.sent.append((data, destination))

    def send_probe(self, data: bytes, destination: Address) -> None:
        self.sent.append((data, destination))

    def has_connection(self, destination: Address) -> bool:
        del destination
        return False

    def alias(self, connection: Address, host: str, port: int) -> bool:
        del connection, host, port
        return False


def dispatcher(now: list[float], **settings: object) -> tuple[Dispatcher, _Sent]:
    h = harness()
    dispatch = Dispatcher(on_event=lambda event: None, count_final=lambda method, status: None)
    sent = _Sent()
    dispatch.core = h.core
    dispatch.transports = sent
    dispatch.clock = lambda: now[0]
    dispatch.arm_timer = lambda at: None
    dispatch.sources.reconfigure(GuardSettings(**settings))  # type: ignore[arg-type]
    return dispatch, sent


def test_what_the_guard_drops_never_reaches_the_core(caplog: pytest.LogCaptureFixture) -> None:
    now = [50.0]
    dispatch, sent = dispatcher(now, rate=2.0, burst=2.0, scanner_agents=SCANNERS)
    scanner = Address("UDP", SCANNER_IP, 5060)
    caller = Address("UDP", "198.51.100.9", 5061)
    with caplog.at_level(logging.WARNING, logger="sipha"):
        dispatch.on_message(invite(extra="User-Agent: friendly-scanner\r\n"), scanner, PROXY)
        for index in range(4):
            dispatch.on_message(invite(call_id=f"c{index}", branch=f"z9hG4bK-{index}"), caller, PROXY)
        dispatch.on_batch_end()
    core = dispatch.core
    assert core is not None
    assert core.counters.requests_in == 2  # the scanner's INVITE and two over the rate: never parsed
    assert [destination for _, destination in sent.sent] == [caller, PRIMARY, caller, PRIMARY]
    assert (dispatch.sources.scanner_requests, dispatch.sources.rate_limited) == (1, 2)
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        (
            f"source {SCANNER_IP}: its User-Agent 'friendly-scanner' names a scanner ([limits] "
            "scanner-user-agents): its messages are dropped unanswered (1 since the last line about it)"
        ),
        (
            "source 198.51.100.9: over [limits] source-rate = 2/s (burst 2): its messages are dropped "
            "unanswered (1 since the last line about it)"
        ),
    ]


def test_a_user_agent_is_logged_escaped(caplog: pytest.LogCaptureFixture) -> None:
    """The header is the sender's: what reaches the log is quoted and escaped, never raw bytes."""
    now = [1.0]
    dispatch, _ = dispatcher(now, scanner_agents=SCANNERS)
    data = invite(extra="User-Agent: friendly-scanner \x1b[31m\xe9\r\n")  # the é as UTF-8
    with caplog.at_level(logging.WARNING, logger="sipha"):
        dispatch.on_message(data, Address("UDP", SCANNER_IP, 5060), PROXY)
    (line,) = [record.getMessage() for record in caplog.records]
    assert "'friendly-scanner \\x1b[31mé'" in line  # repr: controls escaped, text kept
    assert "\x1b" not in line
