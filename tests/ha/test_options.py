"""The probe OPTIONS (RFC 3261 §11) parses and validates; alive codes; the own-address check (40000)."""

from __future__ import annotations

import pytest

from sipha.ha import (
    EVENT_OWN_ADDRESS_NOT_FOUND,
    AliveCodes,
    ProxyAddressNotFound,
    build_options,
    check_own_address,
    member_uri,
)
from sipha.sip import Request, parse_message
from sipha.sip.address import Address

MEMBER = Address("UDP", "10.0.1.10", 5060)


def options(member: Address = MEMBER, transport: str = "udp", via_host: str = "192.0.2.5") -> Request:
    return build_options(
        member,
        "sip:proxy.example.com",
        via_host,
        5060,
        transport,
        call_id="a84b4c76e66710@192.0.2.5",
        branch="z9hG4bKnashds8",
        from_tag="1928301774",
        cseq=7,
    )


def test_the_options_parses_and_validates() -> None:
    request = options()
    data = request.to_bytes()
    parsed = parse_message(data)
    assert isinstance(parsed, Request)
    parsed.validate()
    assert parsed.method == "OPTIONS"
    assert parsed.uri == "sip:10.0.1.10:5060"
    assert parsed.max_forwards == 70
    assert parsed.call_id == "a84b4c76e66710@192.0.2.5"
    assert (parsed.cseq.seq, parsed.cseq.method) == (7, "OPTIONS")
    assert parsed.top_via.branch == "z9hG4bKnashds8"
    assert parsed.top_via.sent_by == "192.0.2.5:5060"
    assert parsed.top_via.transport == "UDP"
    assert parsed.from_.tag == "1928301774"
    assert parsed.from_.uri_text == "sip:proxy.example.com"
    assert parsed.to.tag is None
    assert parsed.to.uri_text == "sip:10.0.1.10:5060"
    assert [c.uri_text for c in parsed.contacts] == ["sip:192.0.2.5:5060"]
    assert parsed.content_length == 0
    assert parsed.body == b""
    assert data.count(b"Content-Length") == 1
    assert data.endswith(b"\r\n\r\n")


def test_tcp_tls_and_ipv6() -> None:
    tcp = options(Address("TCP", "10.0.1.10", 5070), "tcp")
    assert tcp.uri == "sip:10.0.1.10:5070;transport=tcp"
    assert tcp.top_via.transport == "TCP"
    assert tcp.contacts[0].uri_text == "sip:192.0.2.5:5060;transport=tcp"
    tls = options(Address("TLS", "sip1.example.com", 5061), "TLS")
    assert tls.uri == "sips:sip1.example.com:5061"
    v6 = options(Address("UDP", "2001:db8::10", 5060), via_host="2001:db8::5")
    assert v6.uri == "sip:[2001:db8::10]:5060"
    assert v6.top_via.sent_by == "[2001:db8::5]:5060"
    for request in (tcp, tls, v6):
        parsed = parse_message(request.to_bytes())
        parsed.validate()
    assert member_uri(Address("UDP", "[2001:db8::10]", 5062)) == "sip:[2001:db8::10]:5062"


def test_a_branch_without_the_magic_cookie_is_refused() -> None:
    with pytest.raises(ValueError, match="z9hG4bK"):
        build_options(
            MEMBER, "sip:proxy.example.com", "192.0.2.5", 5060, "UDP", call_id="x", branch="abc", from_tag="t"
        )


@pytest.mark.parametrize(
    ("codes", "status", "alive"),
    [
        (["2xx"], 200, True),
        (["2xx"], 299, True),
        (["2xx"], 300, False),
        (["2xx"], 503, False),
        (["200"], 200, True),
        (["200"], 202, False),
        (["2xx", "486"], 486, True),
        (["2xx", "486"], 480, False),
        (["4xx"], 404, True),
        (["4XX"], 499, True),
        (["4xx"], 200, False),
        (["1xx"], 180, False),  # provisional: never an answer
        (["180"], 180, False),
        (["6xx", "503"], 603, True),
        (["6xx", "503"], 503, True),
    ],
)
def test_alive_codes(codes: list[str], status: int, alive: bool) -> None:
    assert AliveCodes.parse(codes).matches(status) is alive


@pytest.mark.parametrize("bad", ["2x", "20", "700", "2xxx", "abc", "0xx", ""])
def test_bad_alive_codes(bad: str) -> None:
    with pytest.raises(ValueError, match="alive-codes"):
        AliveCodes.parse([bad])


def test_no_alive_codes() -> None:
    with pytest.raises(ValueError, match="empty"):
        AliveCodes.parse([])


POOL = [Address("UDP", "192.0.2.5", 5060), Address("UDP", "192.0.2.6", 5060)]


def test_own_address_in_the_pool() -> None:
    assert check_own_address(POOL, [Address("TCP", "192.0.2.6", 5060)]) is None
    assert (
        check_own_address([Address("UDP", "2001:DB8::5", 5060)], [Address("UDP", "[2001:db8::5]", 5060)])
        is None
    )


@pytest.mark.parametrize(
    ("configured", "listening"),
    [
        (POOL, [Address("UDP", "192.0.2.7", 5060)]),
        (POOL, [Address("UDP", "192.0.2.5", 5070)]),  # same IP, other port
        (POOL, [Address("UDP", "0.0.0.0", 5060)]),  # a wildcard names no host
        ([], [Address("UDP", "192.0.2.5", 5060)]),  # the pool FQDN resolved to nothing
        (POOL, []),
    ],
)
def test_own_address_not_found(configured: list[Address], listening: list[Address]) -> None:
    event = check_own_address(configured, listening)
    assert isinstance(event, ProxyAddressNotFound)
    assert event.event_id == EVENT_OWN_ADDRESS_NOT_FOUND == 40000
    assert event.message.startswith("own proxy address not found in the configured list")
    assert event.configured == tuple(configured)
    assert event.listening == tuple(listening)
