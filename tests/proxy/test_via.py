"""RFC 3261 §18.2 / RFC 3581 §4: response destinations and received/rport stamping."""

from __future__ import annotations

import pytest

from sipha.proxy.via import response_destination, response_fallback_destination, stamp_received
from sipha.sip import Request, parse_message, parse_via
from sipha.sip.address import Address
from sipha.sip.grammar import split_commas

UDP_SOURCE = Address("UDP", "192.0.2.1", 9988)
TCP_SOURCE = Address("TCP", "192.0.2.1", 40123)


def request(*vias: str) -> Request:
    # Request.replace_top_via is what via.ViaStampable asks for; mypy checks the match here.
    text = (
        "OPTIONS sip:b@example.com SIP/2.0\r\n"
        + "".join(f"{via}\r\n" for via in vias)
        + "Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\n"
        "Call-ID: c@example.com\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    parsed = parse_message(text.encode())
    assert isinstance(parsed, Request)
    return parsed


# ---------------------------------------------------------------------- response_destination


@pytest.mark.parametrize(
    ("via", "expected"),
    [
        # §18.2.2 maddr: the maddr host, the sent-by port or 5060
        ("SIP/2.0/UDP pc.example.com:5070;maddr=239.1.1.1;received=192.0.2.1", ("239.1.1.1", 5070)),
        ("SIP/2.0/UDP pc.example.com;maddr=[2001:db8::1]", ("2001:db8::1", 5060)),
        # RFC 3581 §4: received + rport with a value
        ("SIP/2.0/UDP 10.1.1.1:4540;received=192.0.2.1;rport=9988", ("192.0.2.1", 9988)),
        # rport without a value (not stamped) or not a port: the sent-by port
        ("SIP/2.0/UDP 10.1.1.1:4540;received=192.0.2.1;rport", ("192.0.2.1", 4540)),
        ("SIP/2.0/UDP 10.1.1.1:4540;received=192.0.2.1;rport=99999", ("192.0.2.1", 4540)),
        # §18.2.2 received without rport: the sent-by port, or 5060
        ("SIP/2.0/UDP pc.example.com:5080;received=192.0.2.1", ("192.0.2.1", 5080)),
        ("SIP/2.0/UDP pc.example.com;received=192.0.2.1", ("192.0.2.1", 5060)),
        # RFC 3581 asks for both received and rport; rport alone does not change the port
        ("SIP/2.0/UDP 192.0.2.1:5062;rport=9988", ("192.0.2.1", 5062)),
        # sent-by alone
        ("SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bK1", ("192.0.2.1", 5062)),
        ("SIP/2.0/UDP pc.example.com", ("pc.example.com", 5060)),
        ("SIP/2.0/UDP [2001:db8::9]:5090", ("2001:db8::9", 5090)),
    ],
)
def test_response_destination_unreliable(via: str, expected: tuple[str, int]) -> None:
    assert response_destination(parse_via(via), UDP_SOURCE) == Address("UDP", *expected)


def test_response_destination_unreliable_named_by_the_via_is_the_source() -> None:
    via = parse_via("SIP/2.0/UDP 192.0.2.1:9988;branch=z9hG4bK1")
    assert response_destination(via, UDP_SOURCE) is UDP_SOURCE


def test_response_destination_reliable_is_the_connection() -> None:
    # §18.2.2: "MUST be sent using the existing connection": whatever the Via says.
    via = parse_via("SIP/2.0/TCP pc.example.com:5060;received=198.51.100.1;maddr=10.0.0.1;rport=1")
    assert response_destination(via, TCP_SOURCE) is TCP_SOURCE


@pytest.mark.parametrize(
    ("via", "source", "expected"),
    [
        ("SIP/2.0/TCP pc.example.com:5070;received=192.0.2.9", TCP_SOURCE, Address("TCP", "192.0.2.9", 5070)),
        (
            "SIP/2.0/TCP pc.example.com;received=[2001:db8::9]",
            TCP_SOURCE,
            Address("TCP", "2001:db8::9", 5060),
        ),
        ("SIP/2.0/TCP 192.0.2.1", TCP_SOURCE, Address("TCP", "192.0.2.1", 5060)),
        ("SIP/2.0/TLS 192.0.2.1", Address("TLS", "192.0.2.1", 40000), Address("TLS", "192.0.2.1", 5061)),
    ],
)
def test_response_fallback_destination(via: str, source: Address, expected: Address) -> None:
    assert response_fallback_destination(parse_via(via), source) == expected


# ---------------------------------------------------------------------- stamp_received


def top_via_text(message: Request) -> str:
    value = message.get("via")
    assert value is not None
    return split_commas(value)[0]


@pytest.mark.parametrize(
    "via",
    [
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1",  # sent-by is the source IP
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport=9988",  # rport has a value already
    ],
)
def test_stamp_received_leaves_matching_via_untouched(via: str) -> None:
    message = request(via)
    raw = message.to_bytes()
    stamp_received(message, UDP_SOURCE)
    assert message.to_bytes() is raw  # the received bytes are still forwarded as they are


@pytest.mark.parametrize(
    ("source", "via"),
    [
        (Address("UDP", "2001:db8::1", 5060), "Via: SIP/2.0/UDP [2001:db8::1];branch=z9hG4bK1"),
        (Address("UDP", "2001:db8::1", 5060), "Via: SIP/2.0/UDP [2001:db8:0:0::1]:5060;branch=z9hG4bK1"),
    ],
)
def test_stamp_received_compares_ipv6_canonically(source: Address, via: str) -> None:
    message = request(via)
    raw = message.to_bytes()
    stamp_received(message, source)
    assert message.to_bytes() is raw


@pytest.mark.parametrize(
    ("via", "source", "expected"),
    [
        # §18.2.1: a domain name in sent-by
        (
            "Via: SIP/2.0/UDP pc.example.com;branch=z9hG4bK1",
            UDP_SOURCE,
            "SIP/2.0/UDP pc.example.com;branch=z9hG4bK1;received=192.0.2.1",
        ),
        # §18.2.1: an IP address that differs from the source
        (
            "Via: SIP/2.0/UDP 10.1.1.1:4540;branch=z9hG4bK1",
            UDP_SOURCE,
            "SIP/2.0/UDP 10.1.1.1:4540;branch=z9hG4bK1;received=192.0.2.1",
        ),
        # RFC 3581 §4: empty rport filled, received added even though sent-by equals the source
        (
            "Via: SIP/2.0/UDP 192.0.2.1:4540;rport;branch=z9hG4bK1",
            UDP_SOURCE,
            "SIP/2.0/UDP 192.0.2.1:4540;rport=9988;branch=z9hG4bK1;received=192.0.2.1",
        ),
        # a stale received is replaced in place
        (
            "Via: SIP/2.0/UDP 10.1.1.1;received=203.0.113.5;branch=z9hG4bK1",
            UDP_SOURCE,
            "SIP/2.0/UDP 10.1.1.1;received=192.0.2.1;branch=z9hG4bK1",
        ),
        # IPv6 source: received carries the bare address, without a zone (RFC 3261 §25.1)
        (
            "Via: SIP/2.0/UDP [fe80::2];rport;branch=z9hG4bK1",
            Address("UDP", "fe80::1%eth0", 5062),
            "SIP/2.0/UDP [fe80::2];rport=5062;branch=z9hG4bK1;received=fe80::1",
        ),
        # TCP: the same rules (§18.2.1 applies to every transport)
        (
            "Via: SIP/2.0/TCP pc.example.com;rport;branch=z9hG4bK1",
            TCP_SOURCE,
            "SIP/2.0/TCP pc.example.com;rport=40123;branch=z9hG4bK1;received=192.0.2.1",
        ),
        # a quoted parameter value with a semicolon in it is kept whole
        (
            'Via: SIP/2.0/UDP pc.example.com;x="a;b\\"c";branch=z9hG4bK1',
            UDP_SOURCE,
            'SIP/2.0/UDP pc.example.com;x="a;b\\"c";branch=z9hG4bK1;received=192.0.2.1',
        ),
    ],
)
def test_stamp_received_edits_the_top_via(via: str, source: Address, expected: str) -> None:
    message = request(via, "Via: SIP/2.0/UDP proxy.example.net;branch=z9hG4bK0")
    stamp_received(message, source)
    assert top_via_text(message) == expected
    assert message.top_via.received == expected.rpartition("received=")[2].split(";")[0]
    assert message.vias[1].host == "proxy.example.net"  # the rest of the stack is untouched
    assert expected.encode() in message.to_bytes()


def test_stamp_received_with_several_vias_on_one_line() -> None:
    message = request("v: SIP/2.0/UDP pc.example.com;rport;branch=z9hG4bK2, SIP/2.0/UDP other.example.org")
    stamp_received(message, UDP_SOURCE)
    assert [via.sent_by for via in message.vias] == ["pc.example.com", "other.example.org"]
    assert message.top_via.rport == "9988"
    assert message.top_via.received == "192.0.2.1"
    assert message.vias[1].received is None
    # The response to it goes where RFC 3581 says.
    assert response_destination(message.top_via, UDP_SOURCE) == UDP_SOURCE
