"""Unit tests of sipha.sip.parser, .fields and .message: parsing, typed access, validation, edits, output.

RFC 3261 §7, §18.3.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sipha.sip import (
    DEFAULT_LIMITS,
    MessageTooLarge,
    ParserLimits,
    Request,
    Response,
    SipParseError,
    SipUri,
    TelUri,
    VersionNotSupported,
    canonical_name,
    make_response,
    parse_message,
)
from sipha.sip import message as message_module

# ============================================================================ helpers

VIA = "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds"
MANDATORY = [
    VIA,
    "Max-Forwards: 70",
    "To: Bob <sip:bob@biloxi.com>",
    "From: Alice <sip:alice@atlanta.com>;tag=1928301774",
    "Call-ID: a84b4c76e66710@pc33.atlanta.com",
    "CSeq: 314159 INVITE",
]
KNOWN_METHODS = ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY"]
KNOWN_METHODS += ["PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE"]
SDP = b"v=0\r\no=alice 2890844526 2890844526 IN IP4 pc33.atlanta.com\r\n"


def wire(start: str, *lines: str, body: bytes = b"", length: bool = True) -> bytes:
    """A message on the wire: start line, header lines, Content-Length (unless told not to), body."""
    headers = list(lines)
    if length:
        headers.append(f"Content-Length: {len(body)}")
    return ("\r\n".join([start, *headers]) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


def invite(*extra: str, body: bytes = b"", length: bool = True) -> bytes:
    return wire("INVITE sip:bob@biloxi.com SIP/2.0", *MANDATORY, *extra, body=body, length=length)


def parse_request(data: bytes, limits: ParserLimits = DEFAULT_LIMITS, *, stream: bool = False) -> Request:
    message = parse_message(data, limits, stream=stream)
    assert isinstance(message, Request)
    return message


def parse_response(data: bytes) -> Response:
    message = parse_message(data)
    assert isinstance(message, Response)
    return message


def parse_error(data: bytes, limits: ParserLimits = DEFAULT_LIMITS, *, stream: bool = False) -> SipParseError:
    with pytest.raises(SipParseError) as caught:
        parse_message(data, limits, stream=stream)
    return caught.value


def request_of(error: SipParseError) -> Request:
    assert isinstance(error.message, Request)
    return error.message


def header_lines(data: bytes) -> list[bytes]:
    """The header lines of serialised bytes (start line and body left out)."""
    head = data.split(b"\r\n\r\n", 1)[0]
    return head.split(b"\r\n")[1:]


# ============================================================================ basic parsing


def test_parse_request() -> None:
    data = invite("Contact: <sip:alice@pc33.atlanta.com>", "Content-Type: application/sdp", body=SDP)
    request = parse_request(data)
    assert request.method == "INVITE"
    assert request.uri == "sip:bob@biloxi.com"
    assert request.start_line == "INVITE sip:bob@biloxi.com SIP/2.0"
    assert request.body == SDP
    assert request.get("Content-Type") == "application/sdp"
    assert request.content_length == len(SDP)
    assert request.to_bytes() == data
    assert bytes(request) == data
    assert repr(request) == "<Request INVITE sip:bob@biloxi.com>"
    request.validate()


def test_parse_response() -> None:
    data = wire(
        "SIP/2.0 180 Ringing",
        "Via: SIP/2.0/UDP server10.biloxi.com;branch=z9hG4bK4b43c2ff8.1;received=192.0.2.3",
        "Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds;received=192.0.2.1",
        "To: Bob <sip:bob@biloxi.com>;tag=a6c85cf",
        "From: Alice <sip:alice@atlanta.com>;tag=1928301774",
        "Call-ID: a84b4c76e66710",
        "Contact: <sip:bob@192.0.2.4>",
        "CSeq: 314159 INVITE",
    )
    response = parse_response(data)
    assert response.status == 180
    assert response.reason == "Ringing"
    assert response.start_line == "SIP/2.0 180 Ringing"
    assert repr(response) == "<Response 180 Ringing>"
    assert [via.host for via in response.vias] == ["server10.biloxi.com", "pc33.atlanta.com"]
    assert response.top_via.received == "192.0.2.3"
    assert response.to.tag == "a6c85cf"
    assert response.to_bytes() == data
    response.validate()


@pytest.mark.parametrize(
    ("start", "reason"),
    [
        ("SIP/2.0 200 OK", "OK"),
        ("SIP/2.0 200", ""),
        ("SIP/2.0 200 ", ""),
        ("SIP/2.0 200 Very  Long   Reason", "Very  Long   Reason"),
        ("SIP/2.0 200 \u00e7a va \u2603", "\u00e7a va \u2603"),
        ("sip/2.0 200 lower-case version", "lower-case version"),
    ],
)
def test_response_reason_phrases(start: str, reason: str) -> None:
    data = wire(start, VIA, "To: <sip:b@x>;tag=1", "From: <sip:a@x>;tag=2", "Call-ID: c", "CSeq: 1 INVITE")
    response = parse_response(data)
    assert response.status == 200
    assert response.reason == reason
    assert response.start_line == start
    assert response.to_bytes() == data
    response.validate()


@pytest.mark.parametrize("code", [100, 199, 200, 302, 404, 486, 503, 606, 699])
def test_response_status_codes(code: int) -> None:
    response = parse_response(wire(f"SIP/2.0 {code} Reason", VIA))
    assert response.status == code


@pytest.mark.parametrize(
    "start",
    [
        "SIP/2.0 20 OK",
        "SIP/2.0 2000 OK",
        "SIP/2.0 099 Too Low",
        "SIP/2.0 700 Too High",
        "SIP/2.0 abc OK",
        "SIP/2.0 -200 OK",
        "SIP/2.0  200 OK",
        "SIP/2.0",
        "SIP/2.0 ",
        "SIP/2.0 \uff12\uff10\uff10 OK",
    ],
)
def test_bad_status_codes(start: str) -> None:
    error = parse_error(wire(start, VIA, "Call-ID: c"))
    assert error.status == 400
    assert isinstance(error.message, Response)
    assert error.message.start_line == start
    assert error.message.get("call-id") == "c"


@pytest.mark.parametrize(
    "start", ["SIP/3.0 200 OK", "SIP/1.0 200 OK", "SIP/2.1 200 OK", "SIP/2 200 OK", "SIP/ 200"]
)
def test_response_with_bad_version(start: str) -> None:
    error = parse_error(wire(start, VIA))
    assert isinstance(error.message, Response)
    assert error.message.status == 0


# ============================================================================ request line


@pytest.mark.parametrize("method", [*KNOWN_METHODS, "NEWMETHOD", "!interesting-Method0123456789_*+`.%'~"])
def test_request_methods(method: str) -> None:
    data = wire(f"{method} sip:bob@biloxi.com SIP/2.0", *MANDATORY[:5], f"CSeq: 1 {method}")
    request = parse_request(data)
    assert request.method == method
    request.validate()


@pytest.mark.parametrize(
    "start",
    [
        "INVITE sip:bob@biloxi.com",
        "INVITE",
        "INVITE  sip:bob@biloxi.com SIP/2.0",
        "INVITE sip:bob@biloxi.com  SIP/2.0",
        "INVITE sip:bob@biloxi.com SIP/2.0 ",
        " INVITE sip:bob@biloxi.com SIP/2.0",
        "INVITE sip:bob@biloxi.com\tSIP/2.0",
        "INVITE sip:bob @biloxi.com SIP/2.0",
        "INV@ITE sip:bob@biloxi.com SIP/2.0",
        "INV;ITE sip:bob@biloxi.com SIP/2.0",
        "INVITE <sip:bob@biloxi.com> SIP/2.0",
        "INVITE sip:bob@biloxi.com\t SIP/2.0",
        "INVITE  SIP/2.0",
        "INVITE sip:bob@biloxi.com SIP/2.0x",
        "INVITE sip:bob@biloxi.com HTTP/1.1",
        "INVITE sip:bob@biloxi.com SIP/2",
        "INVITE sip:bob@biloxi.com SIP/a.b",
        "INVITE sip:bob@biloxi.com SIP2.0",
        "garbage",
    ],
)
def test_bad_request_lines_carry_a_partial_request(start: str) -> None:
    error = parse_error(wire(start, *MANDATORY))
    assert error.status == 400
    request = request_of(error)
    assert request.start_line == start
    # everything needed to answer is there (RFC 3261 §8.2.6.2)
    assert request.top_via.branch == "z9hG4bK776asdhds"
    assert request.from_.tag == "1928301774"
    assert request.to.uri_text == "sip:bob@biloxi.com"
    assert request.call_id == "a84b4c76e66710@pc33.atlanta.com"
    assert request.cseq.seq == 314159
    response = make_response(request, error.status, error.reason)
    assert response.status == 400
    assert response.reason == "Bad Request"
    assert response.get("call-id") == request.call_id


@pytest.mark.parametrize("version", ["SIP/3.0", "SIP/1.0", "SIP/2.1", "sip/7.0", "SIP/10.20"])
def test_unsupported_version_is_505(version: str) -> None:
    error = parse_error(wire(f"OPTIONS sip:bob@biloxi.com {version}", *MANDATORY))
    assert isinstance(error, VersionNotSupported)
    assert error.status == 505
    assert error.reason == "Version Not Supported"
    assert request_of(error).method == "OPTIONS"


@pytest.mark.parametrize("version", ["SIP/2.0", "sip/2.0", "Sip/2.0"])
def test_version_is_case_insensitive(version: str) -> None:
    request = parse_request(wire(f"INVITE sip:bob@biloxi.com {version}", *MANDATORY))
    assert request.start_line.endswith(version)


# ============================================================================ header syntax


def test_folding_is_unfolded_and_re_sent_byte_for_byte() -> None:
    data = invite(
        "Subject: I know you're there,\r\n pick up the phone\r\n\t and talk to me!",
        "X-Folded:\r\n  value on the next line",
    )
    request = parse_request(data)
    assert request.get("subject") == "I know you're there, pick up the phone and talk to me!"
    assert request.get("x-folded") == "value on the next line"
    assert request.to_bytes() == data
    # after an edit elsewhere the folded lines are still sent as received
    request.push_via("SIP/2.0/UDP proxy.example.com;branch=z9hG4bKnew")
    out = request.to_bytes()
    assert b"Subject: I know you're there,\r\n pick up the phone\r\n\t and talk to me!\r\n" in out
    assert b"X-Folded:\r\n  value on the next line\r\n" in out
    assert parse_request(out).get("subject") == request.get("subject")


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("Via: SIP/2.0/UDP h;branch=z9hG4bK1,\r\n SIP/2.0/UDP g;branch=z9hG4bK2", None),
        ("Route: <sip:r1;lr>,\r\n\t<sip:r2;lr>", None),
        ("Max-Forwards:\r\n 70", "70"),
    ],
)
def test_folded_list_headers(line: str, value: str | None) -> None:
    request = parse_request(wire("OPTIONS sip:x SIP/2.0", line))
    name = line.split(":", 1)[0]
    elements = request.get_elements(name)
    assert all("\r\n" not in element for element in elements)
    if value is not None:
        assert request.get(name) == value


def test_folding_of_the_first_header_line_is_an_error() -> None:
    error = parse_error(b"OPTIONS sip:x SIP/2.0\r\n Via: SIP/2.0/UDP h\r\nCall-ID: c\r\n\r\n")
    assert error.status == 400
    assert request_of(error).get("call-id") == "c"


def test_compact_forms() -> None:
    data = wire(
        "INVITE sip:bob@biloxi.com SIP/2.0",
        "v: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds",
        "t: <sip:bob@biloxi.com>",
        "f: <sip:alice@atlanta.com>;tag=1",
        "i: abc@def",
        "m: <sip:alice@pc33.atlanta.com>",
        "CSeq: 1 INVITE",
        "c: application/sdp",
        "k: 100rel",
        "s: subject",
        "e: gzip",
        "o: presence",
        "u: dialog",
        "r: <sip:carol@x>",
        "b: <sip:alice@x>",
        "x: 1800",
        body=b"v=0\r\n",
        length=False,
    )
    data = data.replace(b"\r\n\r\n", b"\r\nl: 5\r\n\r\n", 1)
    request = parse_request(data)
    assert request.top_via.host == "pc33.atlanta.com"
    assert request.to.uri_text == "sip:bob@biloxi.com"
    assert request.from_.tag == "1"
    assert request.call_id == "abc@def"
    assert request.contacts[0].uri_text == "sip:alice@pc33.atlanta.com"
    assert request.get("Content-Type") == "application/sdp"
    assert request.get("supported") == "100rel"
    assert request.get("Subject") == "subject"
    assert request.get("content-encoding") == "gzip"
    assert request.get("event") == "presence"
    assert request.get("allow-events") == "dialog"
    assert request.get("refer-to") == "<sip:carol@x>"
    assert request.get("referred-by") == "<sip:alice@x>"
    assert request.get("session-expires") == "1800"
    assert request.content_length == 5
    assert request.body == b"v=0\r\n"
    # lookups by compact name work too
    assert request.get("i") == "abc@def"
    assert request.get("L") == "5"
    assert "m" in request
    assert request.to_bytes() == data
    request.validate()


@pytest.mark.parametrize(
    "line",
    [
        "call-id: x@y",
        "CALL-ID: x@y",
        "cAlL-iD: x@y",
        "Call-ID  :  x@y",
        "Call-ID\t:\tx@y",
        "Call-ID:x@y",
        "Call-ID : x@y   ",
        "i:x@y",
        "I : x@y",
    ],
)
def test_header_names_are_case_insensitive_and_spacing_is_free(line: str) -> None:
    data = wire("OPTIONS sip:x SIP/2.0", line)
    request = parse_request(data)
    assert request.get("Call-ID") == "x@y"
    assert request.get("call-id") == "x@y"
    assert request.headers[0] == ("call-id", "x@y")
    assert request.call_id == "x@y"
    assert request.to_bytes() == data


def test_empty_header_value() -> None:
    request = parse_request(wire("OPTIONS sip:x SIP/2.0", "Subject:", "X-Empty:   "))
    assert request.get("subject") == ""
    assert request.get("x-empty") == ""
    assert "subject" in request


@pytest.mark.parametrize(
    "line",
    [
        "Bad Name: x",
        "Via;x: y",
        ": value",
        "NoColonHere",
        "Ünicode: x",
        "Name\u00a0: x",
        "(paren): x",
        "Subject: a\nb",
        "Subject: a\rb",
        # §25.1: TEXT-UTF8char and every other header character class exclude %x00; only a
        # quoted-pair may carry it.  A bare NUL reaching a C next hop cuts the header short.
        "Subject: a\x00b",
        "X-Unknown: \x00",
        "Subject: a\\\\\x00b",  # an escaped backslash, then a bare NUL
        'To: "a\x00b" <sip:b@example.com>',
    ],
)
def test_bad_header_lines_keep_the_rest(line: str) -> None:
    error = parse_error(invite(line))
    assert error.status == 400
    request = request_of(error)
    assert request.call_id == "a84b4c76e66710@pc33.atlanta.com"
    assert request.top_via.branch == "z9hG4bK776asdhds"
    assert make_response(request, 400, "Bad Request").get("cseq") == "314159 INVITE"


@pytest.mark.parametrize(
    "line",
    ['To: "NUL:\\\x00 end" <sip:b@example.com>', 'Subject: "q\\\x00"', "Subject: a\\\\\\\x00"],
    ids=["quoted-pair-in-display-name", "quoted-pair", "after-an-escaped-backslash"],
)
def test_a_nul_in_a_quoted_pair_is_accepted(line: str) -> None:
    """RFC 4475 §3.1.1.2 (intmeth): quoted-pair = "\\" (%x00-09 / ...): an escaped NUL is valid."""
    message = parse_message(invite(line))
    assert isinstance(message, Request)
    assert message.method == "INVITE"


def test_first_error_is_reported() -> None:
    error = parse_error(wire("INVITE sip:x SIP/3.0", "Bad Name: x", *MANDATORY))
    assert "bad header name" in error.detail


# ============================================================================ generic access


def test_get_get_all_get_elements_contains_headers() -> None:
    data = wire(
        "OPTIONS sip:x SIP/2.0",
        "Via: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2",
        "Route: <sip:r1;lr>",
        "v: SIP/2.0/UDP c;branch=z9hG4bK3",
        'Contact: "Commas, inside" <sip:c1@x>;q=0.5, <sip:c2@x;a=1,2>',
        "Route: <sip:r2;lr>,<sip:r3;lr>",
        "Accept: application/sdp",
        "Accept: text/plain",
    )
    request = parse_request(data)
    assert request.get("via") == "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2"
    assert request.get_all("v") == [
        "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2",
        "SIP/2.0/UDP c;branch=z9hG4bK3",
    ]
    assert request.get_elements("Via") == [
        "SIP/2.0/UDP a;branch=z9hG4bK1",
        "SIP/2.0/UDP b;branch=z9hG4bK2",
        "SIP/2.0/UDP c;branch=z9hG4bK3",
    ]
    assert request.get_elements("route") == ["<sip:r1;lr>", "<sip:r2;lr>", "<sip:r3;lr>"]
    assert request.get_elements("m") == ['"Commas, inside" <sip:c1@x>;q=0.5', "<sip:c2@x;a=1,2>"]
    assert request.get_all("accept") == ["application/sdp", "text/plain"]
    assert request.get("absent") is None
    assert request.get_all("absent") == []
    assert request.get_elements("absent") == []
    assert "VIA" in request
    assert "accept" in request
    assert "absent" not in request
    assert 42 not in request
    assert None not in request
    assert [name for name, _ in request.headers] == [
        "via",
        "route",
        "via",
        "contact",
        "route",
        "accept",
        "accept",
        "content-length",
    ]
    assert request.fields[2] == ("via", "v: SIP/2.0/UDP c;branch=z9hG4bK3", "SIP/2.0/UDP c;branch=z9hG4bK3")


# ============================================================================ typed access


def test_typed_properties() -> None:
    data = wire(
        "REGISTER sips:registrar.biloxi.com;transport=tls SIP/2.0",
        "Via: SIP/2.0/TLS bobspc.biloxi.com:5061;branch=z9hG4bKnashds7;rport",
        "Via: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK2;received=192.0.2.9",
        "Max-Forwards: 6",
        "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
        "Record-Route: <sip:rr1.example.com;lr>",
        "Record-Route: <sip:rr2.example.com;lr>",
        "To: Bob <sips:bob@biloxi.com>",
        'From: "Bob \\"B\\" Smith" <sips:bob@biloxi.com>;tag=456248',
        "Call-ID: 843817637684230@998sdasdh09",
        "CSeq: 1826 REGISTER",
        "Contact: <sips:bob@192.0.2.4>;expires=7200, <tel:+1234>",
        "Proxy-Require: foo, bar",
        "Proxy-Require: baz",
        "Require: 100rel",
    )
    request = parse_request(data)
    assert request.top_via.transport == "TLS"
    assert request.top_via.port == 5061
    assert request.top_via.rport == ""
    assert [via.host for via in request.vias] == ["bobspc.biloxi.com", "[2001:db8::1]"]
    assert request.vias[1].received == "192.0.2.9"
    assert request.max_forwards == 6
    assert [route.uri_text for route in request.routes] == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
    assert all(route.sip_uri is not None and route.sip_uri.lr for route in request.routes)
    assert [rr.uri_text for rr in request.record_routes] == [
        "sip:rr1.example.com;lr",
        "sip:rr2.example.com;lr",
    ]
    assert request.to.display == "Bob"
    assert request.to.tag is None
    assert request.from_.display_unquoted == 'Bob "B" Smith'
    assert request.from_.tag == "456248"
    assert request.call_id == "843817637684230@998sdasdh09"
    assert (request.cseq.seq, request.cseq.method) == (1826, "REGISTER")
    assert [contact.uri_text for contact in request.contacts] == ["sips:bob@192.0.2.4", "tel:+1234"]
    assert request.contacts[0].params == {"expires": "7200"}
    assert isinstance(request.contacts[1].uri, TelUri)
    assert request.contact_star is False
    assert request.proxy_require == ["foo", "bar", "baz"]
    assert request.require == ["100rel"]
    assert request.content_length == 0
    uri = request.parsed_uri
    assert isinstance(uri, SipUri)
    assert uri.scheme == "sips"
    assert uri.transport == "tls"
    assert request.parsed_uri is uri
    request.validate()


def test_typed_properties_are_cached() -> None:
    request = parse_request(invite("Route: <sip:r;lr>", "Contact: <sip:c@x>", "Require: a"))
    assert request.top_via is request.top_via
    assert request.vias is request.vias
    assert request.routes is request.routes
    assert request.record_routes is request.record_routes
    assert request.contacts is request.contacts
    assert request.cseq is request.cseq
    assert request.from_ is request.from_
    assert request.to is request.to
    assert request.require is request.require
    assert request.proxy_require is request.proxy_require


# Each typed value, read, then its header changed: the value is read anew from the new text.
CHANGED_HEADERS = [
    (
        "Via",
        "SIP/2.0/TCP h2;branch=z9hG4bK2",
        lambda m: (m.top_via.host, [via.host for via in m.vias]),
        ("h2", ["h2"]),
    ),
    ("Route", "<sip:r2;lr>", lambda m: [route.uri_text for route in m.routes], ["sip:r2;lr"]),
    ("Record-Route", "<sip:rr2;lr>", lambda m: [rr.uri_text for rr in m.record_routes], ["sip:rr2;lr"]),
    ("Contact", "<sip:c2@y>", lambda m: [contact.uri_text for contact in m.contacts], ["sip:c2@y"]),
    ("To", "<sip:carol@x>;tag=9", lambda m: (m.to.uri_text, m.to.tag), ("sip:carol@x", "9")),
    ("From", "<sip:dave@x>;tag=8", lambda m: (m.from_.uri_text, m.from_.tag), ("sip:dave@x", "8")),
    ("Call-ID", "other@x", lambda m: m.call_id, "other@x"),
    ("CSeq", "7 INVITE", lambda m: m.cseq.seq, 7),
    ("Max-Forwards", "5", lambda m: m.max_forwards, 5),
    ("Content-Length", "3", lambda m: m.content_length, 3),
    ("Require", "b, c", lambda m: m.require, ["b", "c"]),
    ("Proxy-Require", "d", lambda m: m.proxy_require, ["d"]),
]


@pytest.mark.parametrize(("name", "value", "read", "expected"), CHANGED_HEADERS)
def test_a_changed_header_is_read_anew(
    name: str, value: str, read: Callable[[Request], object], expected: object
) -> None:
    request = parse_request(
        invite(
            "Route: <sip:r;lr>",
            "Record-Route: <sip:rr;lr>",
            "Contact: <sip:c@x>",
            "Require: a",
            "Proxy-Require: p",
        )
    )
    before = read(request)
    assert before != expected
    cseq = request.cseq
    request.set_header(name, value)
    assert read(request) == expected
    if name != "CSeq":
        assert request.cseq is cseq  # the other typed values are kept
    request.remove_header(name)
    if name in ("Max-Forwards", "Content-Length"):
        assert read(request) is None
    elif name in ("Route", "Record-Route", "Contact", "Require", "Proxy-Require"):
        assert read(request) == []
    else:
        with pytest.raises(SipParseError, match="missing"):
            read(request)


@pytest.mark.parametrize(
    ("line", "prop"),
    [
        ("Via: SIP/2.0/UDP h2;branch=z9hG4bK2, SIP/2.0/UDP bad host", "vias"),
        ("Route: <sip:r1;lr>, <sip:r2;lr", "routes"),
        ("Contact: <sip:c1@x>, <sip:c2@x", "contacts"),
        ("Require: a, b c", "require"),
    ],
)
def test_a_bad_header_raises_on_every_read(line: str, prop: str) -> None:
    """Nothing is kept of a header that does not parse, not even the elements before the bad one."""
    request = parse_request(invite(line))
    for _ in range(2):
        with pytest.raises(SipParseError):
            getattr(request, prop)


def test_what_is_not_a_header_name_is_not_in_a_message() -> None:
    request = parse_request(invite())
    assert "Bad Name" not in request
    assert "" not in request


def test_absent_optional_headers() -> None:
    request = parse_request(wire("OPTIONS sip:x SIP/2.0", VIA, length=False))
    assert request.max_forwards is None
    assert request.routes == []
    assert request.record_routes == []
    assert request.contacts == []
    assert request.contact_star is False
    assert request.content_length is None
    assert request.proxy_require == []
    assert request.require == []


@pytest.mark.parametrize("prop", ["call_id", "cseq", "from_", "to", "top_via"])
def test_absent_mandatory_headers_raise(prop: str) -> None:
    request = parse_request(wire("OPTIONS sip:x SIP/2.0", "Subject: nothing else"))
    with pytest.raises(SipParseError, match="missing"):
        getattr(request, prop)


def test_vias_absent_is_empty() -> None:
    request = parse_request(wire("OPTIONS sip:x SIP/2.0", "Subject: nothing else"))
    assert request.vias == []


@pytest.mark.parametrize(("value", "star"), [("*", True), (" * ", True), ("<sip:a@b>", False)])
def test_contact_star(value: str, star: bool) -> None:
    request = parse_request(wire("REGISTER sip:x SIP/2.0", f"Contact: {value}", "Expires: 0"))
    assert request.contact_star is star
    assert (request.contacts == []) is star


@pytest.mark.parametrize(("value", "hops"), [("0", 0), ("70", 70), ("255", 255), ("0070", 70), (" 7 ", 7)])
def test_max_forwards(value: str, hops: int) -> None:
    request = parse_request(wire("OPTIONS sip:x SIP/2.0", f"Max-Forwards: {value}"))
    assert request.max_forwards == hops


@pytest.mark.parametrize(
    "value", ["256", "1000", "-1", "seventy", "7 0", "", "1.5", "+70", "99999999999999999999"]
)
def test_bad_max_forwards(value: str) -> None:
    request = parse_request(wire("OPTIONS sip:x SIP/2.0", f"Max-Forwards: {value}"))
    with pytest.raises(SipParseError, match="Max-Forwards"):
        _ = request.max_forwards


def test_max_forwards_superscript_digit() -> None:
    request = parse_request(invite().replace(b"Max-Forwards: 70", "Max-Forwards: \u00b2".encode()))
    with pytest.raises(SipParseError):
        _ = request.max_forwards


def test_max_forwards_non_ascii_digits() -> None:
    request = parse_request(invite().replace(b"Max-Forwards: 70", "Max-Forwards: \u0667\u0660".encode()))
    with pytest.raises(SipParseError):
        _ = request.max_forwards


CALL_IDS = [
    "a84b4c76e66710",
    "a84b4c76e66710@pc33.atlanta.com",
    "f81d4fae-7dec-11d0-a765-00a0c91e6bf6@foo.bar.com",
]


@pytest.mark.parametrize("value", [*CALL_IDS, "-.!%*_+`'~()<>:\\\"/[]?{}@x", "[::1]"])
def test_call_id(value: str) -> None:
    for _ in range(2):  # the second time, from the cache of Call-IDs found well-formed
        assert parse_request(wire("OPTIONS sip:x SIP/2.0", f"Call-ID: {value}")).call_id == value


@pytest.mark.parametrize("value", ["", "a b", "@host", "local@", "a@b@c", "a;b", "a,b", "caf\u00e9"])
def test_bad_call_id(value: str) -> None:
    for _ in range(2):  # refused every time (never cached)
        request = parse_request(wire("OPTIONS sip:x SIP/2.0", f"Call-ID: {value}"))
        with pytest.raises(SipParseError, match="Call-ID"):
            _ = request.call_id


def test_content_length_property_range() -> None:
    request = parse_request(wire("OPTIONS sip:x SIP/2.0", length=False))
    request.set_header("Content-Length", "2147483648")
    assert request.content_length == 2**31
    request.set_header("Content-Length", "2147483649")
    with pytest.raises(SipParseError):
        _ = request.content_length


@pytest.mark.parametrize(
    ("prop", "line"),
    [
        ("vias", "Via: SIP/2.0/UDP"),
        ("top_via", "Via: bad"),
        ("routes", "Route: <sip:a"),
        ("record_routes", "Record-Route: sip:a?b"),
        ("contacts", "Contact: <sip:a>junk"),
        ("proxy_require", "Proxy-Require: a b"),
        ("require", "Require: ,"),
        ("cseq", "CSeq: x INVITE"),
        ("from_", "From: <sip:a"),
        ("to", 'To: "x'),
    ],
)
def test_bad_typed_values_raise(prop: str, line: str) -> None:
    request = parse_request(wire("OPTIONS sip:x SIP/2.0", line))
    with pytest.raises(SipParseError):
        getattr(request, prop)


# ============================================================================ validate()


def test_validate_accepts_a_minimal_request() -> None:
    parse_request(invite()).validate()


def test_validate_accepts_a_request_without_max_forwards() -> None:
    # RFC 3261 §16.6 step 3: a proxy adds Max-Forwards when absent, so the request is not refused
    lines = [line for line in MANDATORY if not line.startswith("Max-Forwards")]
    parse_request(wire("INVITE sip:x SIP/2.0", *lines)).validate()


@pytest.mark.parametrize("missing", ["Via", "To", "From", "Call-ID", "CSeq"])
def test_validate_missing_mandatory_header(missing: str) -> None:
    lines = [line for line in MANDATORY if not line.startswith(missing + ":")]
    request = parse_request(wire("INVITE sip:bob@biloxi.com SIP/2.0", *lines))
    with pytest.raises(SipParseError) as caught:
        request.validate()
    assert caught.value.status == 400
    assert "missing" in caught.value.detail
    assert caught.value.message is request


@pytest.mark.parametrize(
    "extra",
    [
        "From: <sip:other@x>;tag=2",
        "f: <sip:other@x>;tag=2",
        "To: <sip:other@x>",
        "t: <sip:bob@biloxi.com>",
        "Call-ID: other",
        "CSeq: 314159 INVITE",
        "Max-Forwards: 70",
        "Content-Length: 0",
    ],
)
def test_validate_duplicated_single_header(extra: str) -> None:
    request = parse_request(invite(extra))
    with pytest.raises(SipParseError, match="appears 2 times") as caught:
        request.validate()
    assert caught.value.message is request


@pytest.mark.parametrize(
    "extra",
    [
        "Contact: <sip:a@b>junk",
        "Contact: <bad uri>",
        "Route: <sip:r;lr",
        "Route: <notauri>",
        "Require: a b",
        "Proxy-Require: a;b",
    ],
)
def test_validate_bad_optional_header(extra: str) -> None:
    request = parse_request(invite(extra))
    with pytest.raises(SipParseError) as caught:
        request.validate()
    assert caught.value.status == 400
    assert caught.value.message is request


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("Max-Forwards: 70", "Max-Forwards: 300"),
        ("Call-ID: a84b4c76e66710@pc33.atlanta.com", "Call-ID: a b"),
        ("CSeq: 314159 INVITE", "CSeq: 2147483648 INVITE"),
        ("CSeq: 314159 INVITE", "CSeq: INVITE"),
        ("To: Bob <sip:bob@biloxi.com>", "To: Bob <sip:bob@biloxi.com"),
        ("To: Bob <sip:bob@biloxi.com>", "To: sip:bob@biloxi.com?x=y"),
        (VIA, "Via: SIP/2.0/UDP"),
    ],
)
def test_validate_bad_mandatory_header(old: str, new: str) -> None:
    request = parse_request(invite().replace(old.encode(), new.encode()))
    with pytest.raises(SipParseError) as caught:
        request.validate()
    assert caught.value.status == 400
    assert caught.value.message is request


@pytest.mark.parametrize(
    ("method", "cseq_method", "status"),
    [
        ("INVITE", "BYE", 400),
        ("INVITE", "invite", 400),
        ("OPTIONS", "NEWMETHOD", 400),
        ("NEWMETHOD", "INVITE", 501),
        ("NEWMETHOD", "OTHERMETHOD", 501),
        ("newmethod", "NEWMETHOD", 501),
    ],
)
def test_validate_cseq_method_mismatch(method: str, cseq_method: str, status: int) -> None:
    data = wire(f"{method} sip:bob@biloxi.com SIP/2.0", *MANDATORY[:5], f"CSeq: 1 {cseq_method}")
    request = parse_request(data)
    with pytest.raises(SipParseError, match="CSeq method") as caught:
        request.validate()
    assert caught.value.status == status
    assert caught.value.message is request


@pytest.mark.parametrize(
    "uri",
    [
        "sip:bob@biloxi.com?Subject=hi",
        "sips:bob@biloxi.com;lr?Route=%3Csip:x%3E",
        "sip:bob@biloxi.com?a=b&c=d",
    ],
)
def test_validate_headers_in_request_uri(uri: str) -> None:
    request = parse_request(wire(f"INVITE {uri} SIP/2.0", *MANDATORY))
    with pytest.raises(SipParseError, match="headers in the Request-URI") as caught:
        request.validate()
    assert caught.value.status == 400


@pytest.mark.parametrize("uri", ["tel:+1-201-555-0123", "urn:service:sos", "sip:bob@biloxi.com;lr;maddr=x"])
def test_validate_other_request_uris(uri: str) -> None:
    parse_request(wire(f"INVITE {uri} SIP/2.0", *MANDATORY)).validate()


@pytest.mark.parametrize("uri", ["sip:", "sip:bob@", "sip:bob@host:99999", "nocolon", "tel:", "sip:a@b>"])
def test_validate_bad_request_uri(uri: str) -> None:
    request = parse_request(wire(f"INVITE {uri} SIP/2.0", *MANDATORY))
    with pytest.raises(SipParseError) as caught:
        request.validate()
    assert caught.value.status == 400
    assert caught.value.message is request


def test_validate_request_uri_with_superscript_port() -> None:
    data = invite().replace(b"INVITE sip:bob@biloxi.com", "INVITE sip:bob@biloxi.com:\u00b2".encode())
    request = parse_request(data)
    with pytest.raises(SipParseError):
        request.validate()


def test_validate_response() -> None:
    response = parse_response(wire("SIP/2.0 200 OK", *[line for line in MANDATORY if "Max" not in line]))
    response.validate()
    missing_to = parse_response(wire("SIP/2.0 200 OK", VIA, "From: <sip:a@b>", "Call-ID: x", "CSeq: 1 BYE"))
    with pytest.raises(SipParseError, match="missing To") as caught:
        missing_to.validate()
    assert caught.value.message is missing_to


def test_with_message_keeps_the_first_message() -> None:
    request = parse_request(wire("INVITE sip:x SIP/2.0", "Subject: x"))
    other = parse_request(invite())
    error = SipParseError("first", message=other)
    assert error.with_message(request) is error
    assert error.message is other


# ============================================================================ edits


def forwarded_invite() -> Request:
    return parse_request(
        wire(
            "INVITE sip:bob@biloxi.com SIP/2.0",
            "Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bK1, SIP/2.0/UDP p2.example.com;branch=z9hG4bK2",
            "v:  SIP/2.0/UDP  pc33.atlanta.com ;branch=z9hG4bK3",
            "Max-Forwards:   70",
            "Route: <sip:r1.example.com;lr>, <sip:r2.example.com;lr>",
            "Route:\t<sip:r3.example.com;lr>",
            "Record-Route: <sip:rr.example.com;lr>",
            "To :  Bob <sip:bob@biloxi.com>",
            "f: Alice <sip:alice@atlanta.com>;tag=1928301774",
            "i: a84b4c76e66710@pc33.atlanta.com",
            "CSeq: 314159 INVITE",
            "Subject: folded\r\n  subject",
            "X-Odd  :  spacing  ",
            body=b"body",
        )
    )


def test_unchanged_message_is_its_received_bytes() -> None:
    data = wire(
        "INVITE sip:bob@biloxi.com SIP/2.0",
        "Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bK1, SIP/2.0/UDP p2.example.com;branch=z9hG4bK2",
        "X-Odd  :  spacing  ",
        body=b"xyz",
    )
    request = parse_request(data)
    # reading typed values changes nothing
    _ = request.vias, request.top_via, request.max_forwards, request.routes, request.headers
    assert request.to_bytes() == data


def test_push_via() -> None:
    request = forwarded_invite()
    before = request.to_bytes()
    assert request.top_via.host == "p1.example.com"
    request.push_via("SIP/2.0/TCP proxy.example.com:5061;branch=z9hG4bKnew")
    assert request.top_via.host == "proxy.example.com"
    assert [via.host for via in request.vias][:2] == ["proxy.example.com", "p1.example.com"]
    assert len(request.vias) == 4
    assert request.get("via") == "SIP/2.0/TCP proxy.example.com:5061;branch=z9hG4bKnew"
    after = request.to_bytes()
    assert header_lines(after)[0] == b"Via: SIP/2.0/TCP proxy.example.com:5061;branch=z9hG4bKnew"
    assert header_lines(after)[1:] == header_lines(before)
    assert after.endswith(b"\r\n\r\nbody")


def test_pop_via_from_a_line_with_several_values() -> None:
    request = forwarded_invite()
    before = header_lines(request.to_bytes())
    popped = request.pop_via()
    assert popped is not None
    assert popped.host == "p1.example.com"
    assert request.top_via.host == "p2.example.com"
    after = header_lines(request.to_bytes())
    assert after[0] == b"Via: SIP/2.0/UDP p2.example.com;branch=z9hG4bK2"
    assert after[1:] == before[1:]
    # the next pop removes the line
    popped = request.pop_via()
    assert popped is not None
    assert popped.host == "p2.example.com"
    assert header_lines(request.to_bytes())[0] == b"v:  SIP/2.0/UDP  pc33.atlanta.com ;branch=z9hG4bK3"
    popped = request.pop_via()
    assert popped is not None
    assert popped.host == "pc33.atlanta.com"
    assert request.vias == []
    assert request.pop_via() is None
    with pytest.raises(SipParseError, match="missing Via"):
        _ = request.top_via


def test_pop_via_with_one_value_per_line() -> None:
    request = parse_request(invite("Via: SIP/2.0/UDP second;branch=z9hG4bK2"))
    popped = request.pop_via()
    assert popped is not None
    assert popped.branch == "z9hG4bK776asdhds"
    assert request.top_via.host == "second"
    assert request.get_all("via") == ["SIP/2.0/UDP second;branch=z9hG4bK2"]


def test_pop_via_with_comma_inside_quotes_only() -> None:
    request = parse_request(wire("OPTIONS sip:x SIP/2.0", 'Via: SIP/2.0/UDP h;x="a,b"', "Via: SIP/2.0/UDP g"))
    popped = request.pop_via()
    assert popped is not None
    assert popped.params == {"x": '"a,b"'}
    assert request.get_all("via") == ["SIP/2.0/UDP g"]


def test_pop_route() -> None:
    request = forwarded_invite()
    before = header_lines(request.to_bytes())
    route = request.pop_route()
    assert route is not None
    assert route.uri_text == "sip:r1.example.com;lr"
    assert [r.uri_text for r in request.routes] == ["sip:r2.example.com;lr", "sip:r3.example.com;lr"]
    after = header_lines(request.to_bytes())
    index = before.index(b"Route: <sip:r1.example.com;lr>, <sip:r2.example.com;lr>")
    assert after[index] == b"Route: <sip:r2.example.com;lr>"
    assert after[:index] == before[:index]
    assert after[index + 1 :] == before[index + 1 :]
    assert request.pop_route() is not None
    last = request.pop_route()
    assert last is not None
    assert last.uri_text == "sip:r3.example.com;lr"
    assert request.routes == []
    assert "route" not in request
    assert request.pop_route() is None


def test_push_route() -> None:
    request = forwarded_invite()
    request.push_route("<sip:first.example.com;lr>")
    assert [r.uri_text for r in request.routes][:2] == ["sip:first.example.com;lr", "sip:r1.example.com;lr"]
    lines = header_lines(request.to_bytes())
    assert lines.index(b"Route: <sip:first.example.com;lr>") + 1 == lines.index(
        b"Route: <sip:r1.example.com;lr>, <sip:r2.example.com;lr>"
    )
    # without a Route, the new one goes at the end of the header section
    plain = parse_request(invite())
    plain.push_route("<sip:only.example.com;lr>")
    assert header_lines(plain.to_bytes())[-1] == b"Route: <sip:only.example.com;lr>"
    assert [r.uri_text for r in plain.routes] == ["sip:only.example.com;lr"]


def test_push_record_route() -> None:
    request = forwarded_invite()
    request.push_record_route("<sip:proxy.example.com;lr>")
    assert [r.uri_text for r in request.record_routes] == [
        "sip:proxy.example.com;lr",
        "sip:rr.example.com;lr",
    ]
    lines = header_lines(request.to_bytes())
    assert lines.index(b"Record-Route: <sip:proxy.example.com;lr>") + 1 == lines.index(
        b"Record-Route: <sip:rr.example.com;lr>"
    )
    # without a Record-Route, the new one goes just below the Vias, which stay together
    plain = parse_request(invite())
    plain.push_record_route("<sip:proxy.example.com;lr>")
    lines = header_lines(plain.to_bytes())
    first_other = next(i for i, line in enumerate(lines) if not line.lower().startswith((b"via", b"v:")))
    assert lines[first_other] == b"Record-Route: <sip:proxy.example.com;lr>"
    assert not any(line.lower().startswith(b"via") for line in lines[first_other:])
    assert plain.record_routes[0].uri_text == "sip:proxy.example.com;lr"


def test_set_max_forwards() -> None:
    request = forwarded_invite()
    before = header_lines(request.to_bytes())
    assert request.max_forwards == 70
    request.set_max_forwards(69)
    assert request.max_forwards == 69
    assert request.get("max-forwards") == "69"
    after = header_lines(request.to_bytes())
    index = before.index(b"Max-Forwards:   70")
    assert after[index] == b"Max-Forwards: 69"
    assert after[:index] == before[:index]
    assert after[index + 1 :] == before[index + 1 :]
    assert parse_request(request.to_bytes()).max_forwards == 69


def test_set_max_forwards_when_absent() -> None:
    request = parse_request(wire("OPTIONS sip:x SIP/2.0", VIA, length=False))
    assert "max-forwards" not in request
    request.set_max_forwards(70)
    assert request.max_forwards == 70
    assert request.get("Max-Forwards") == "70"
    assert header_lines(request.to_bytes())[-2:] == [b"Max-Forwards: 70", b"Content-Length: 0"]


def test_add_header_first_and_last() -> None:
    request = forwarded_invite()
    before = header_lines(request.to_bytes())
    request.add_header("x-last", "1")
    request.add_header("X-FIRST", "2", first=True)
    request.add_header("v", "SIP/2.0/UDP top;branch=z9hG4bKtop", first=True)
    after = header_lines(request.to_bytes())
    assert after[0] == b"Via: SIP/2.0/UDP top;branch=z9hG4bKtop"
    assert after[1] == b"X-First: 2"
    assert after[-1] == b"X-Last: 1"
    assert after[2:-1] == before
    assert request.top_via.host == "top"
    assert request.get("x-last") == "1"


def test_add_header_with_bad_name() -> None:
    request = parse_request(invite())
    with pytest.raises(SipParseError):
        request.add_header("Bad Name", "x")
    assert request.to_bytes() == invite()


def test_set_header() -> None:
    request = forwarded_invite()
    before = header_lines(request.to_bytes())
    request.set_header("route", "<sip:only;lr>")
    assert [r.uri_text for r in request.routes] == ["sip:only;lr"]
    after = header_lines(request.to_bytes())
    index = before.index(b"Route: <sip:r1.example.com;lr>, <sip:r2.example.com;lr>")
    assert after[index] == b"Route: <sip:only;lr>"
    assert b"Route:\t<sip:r3.example.com;lr>" not in after
    assert len(after) == len(before) - 1
    # a header that is not there is added at the end
    request.set_header("call-info", "<http://x>")
    assert header_lines(request.to_bytes())[-1] == b"Call-Info: <http://x>"
    # typed values follow the edit
    request.set_header("CSeq", "2 INVITE")
    assert request.cseq.seq == 2
    request.set_header("t", "<sip:carol@x>;tag=9")
    assert request.to.tag == "9"
    request.set_header("From", "<sip:dave@x>;tag=8")
    assert request.from_.tag == "8"
    request.set_header("Call-ID", "new-call-id")
    assert request.call_id == "new-call-id"
    request.set_header("Require", "timer")
    assert request.require == ["timer"]
    request.set_header("Proxy-Require", "sec-agree")
    assert request.proxy_require == ["sec-agree"]
    request.set_header("m", "*")
    assert request.contact_star is True
    assert request.contacts == []
    request.set_header("Record-Route", "<sip:rr2;lr>")
    assert [r.uri_text for r in request.record_routes] == ["sip:rr2;lr"]
    request.set_header("Via", "SIP/2.0/TCP only")
    assert [via.host for via in request.vias] == ["only"]
    assert request.top_via.transport == "TCP"
    request.set_header("Max-Forwards", "5")
    assert request.max_forwards == 5
    request.set_header("l", "4")
    assert request.content_length == 4
    parse_request(request.to_bytes()).validate()


def test_remove_header() -> None:
    request = forwarded_invite()
    routes = request.routes
    assert len(routes) == 3
    assert request.remove_header("Route") == 2
    assert request.routes == []
    assert request.get("route") is None
    assert request.remove_header("route") == 0
    assert request.remove_header("v") == 2
    assert request.vias == []
    assert request.remove_header("X-Absent") == 0
    lines = header_lines(request.to_bytes())
    assert not [line for line in lines if line.lower().startswith((b"route", b"via", b"v:"))]


def test_remove_header_without_change_keeps_raw() -> None:
    data = invite()
    request = parse_request(data)
    assert request.remove_header("Subject") == 0
    assert request.to_bytes() == data


def test_set_body() -> None:
    request = parse_request(invite())
    request.set_body(SDP, "application/sdp")
    assert request.body == SDP
    assert request.content_length == len(SDP)
    assert request.get("content-type") == "application/sdp"
    reparsed = parse_request(request.to_bytes())
    assert reparsed.body == SDP
    assert reparsed.get_all("content-length") == [str(len(SDP))]
    request.set_body(b"")
    assert request.content_length == 0
    assert request.get("content-type") == "application/sdp"
    assert parse_request(request.to_bytes()).body == b""


def test_set_uri() -> None:
    request = forwarded_invite()
    before = header_lines(request.to_bytes())
    old = request.parsed_uri
    request.set_uri("sip:bob@192.0.2.4:5060;transport=tcp")
    assert request.uri == "sip:bob@192.0.2.4:5060;transport=tcp"
    assert request.start_line == "INVITE sip:bob@192.0.2.4:5060;transport=tcp SIP/2.0"
    new = request.parsed_uri
    assert new is not old
    assert isinstance(new, SipUri)
    assert new.port == 5060
    out = request.to_bytes()
    assert out.startswith(b"INVITE sip:bob@192.0.2.4:5060;transport=tcp SIP/2.0\r\n")
    assert header_lines(out) == before


def test_start_line_rendered_anew_after_set_uri_on_lower_case_version() -> None:
    request = parse_request(wire("OPTIONS sip:x sip/2.0", VIA))
    request.set_uri("sip:y")
    assert request.start_line == "OPTIONS sip:y SIP/2.0"


def test_edits_show_in_get() -> None:
    request = parse_request(invite())
    assert request.get("subject") is None
    request.add_header("Subject", "one")
    assert request.get("subject") == "one"
    request.set_header("Subject", "two")
    assert request.get("subject") == "two"
    request.remove_header("Subject")
    assert request.get("subject") is None
    request.push_via("SIP/2.0/UDP new")
    assert request.get("via") == "SIP/2.0/UDP new"
    request.pop_via()
    assert request.get("via") == VIA.split(": ", 1)[1]
    request.push_route("<sip:r;lr>")
    assert request.get("route") == "<sip:r;lr>"
    request.pop_route()
    assert request.get("route") is None
    request.push_record_route("<sip:rr;lr>")
    assert request.get("record-route") == "<sip:rr;lr>"
    request.set_max_forwards(1)
    assert request.get("max-forwards") == "1"
    request.set_body(b"12")
    assert request.get("content-length") == "2"


# ============================================================================ output


def test_content_length_added_when_absent() -> None:
    data = invite(body=b"hello", length=False)
    request = parse_request(data)
    assert request.content_length is None
    assert request.body == b"hello"
    # unchanged: the received bytes
    assert request.to_bytes() == data
    request.set_max_forwards(69)
    out = request.to_bytes()
    assert header_lines(out)[-1] == b"Content-Length: 5"
    assert out.endswith(b"\r\n\r\nhello")
    assert parse_request(out, stream=True).body == b"hello"


@pytest.mark.parametrize("kind", ["request", "response"])
def test_build_renders_conventional_names_and_length(kind: str) -> None:
    headers = [("Via", "SIP/2.0/UDP h"), ("i", "c")]
    message: Request | Response = (
        Request.build("OPTIONS", "sip:x", headers, b"ab")
        if kind == "request"
        else Response.build(200, "OK", headers, b"ab")
    )
    lines = header_lines(message.to_bytes())
    assert lines == [b"Via: SIP/2.0/UDP h", b"Call-ID: c", b"Content-Length: 2"]
    assert message.to_bytes().endswith(b"\r\n\r\nab")


def test_build_start_lines() -> None:
    request = Request.build("OPTIONS", "sip:x", [])
    assert request.to_bytes() == b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n"
    response = Response.build(404, "Not Found", [])
    assert response.to_bytes() == b"SIP/2.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    assert response.status == 404
    assert response.reason == "Not Found"


def test_non_ascii_and_undecodable_bytes_survive() -> None:
    data = invite("Subject: caf\u00e9", body=b"\xff\xfe").replace(b"caf\xc3\xa9", b"caf\xc3\xa9 \xff\x80")
    request = parse_request(data)
    assert request.get("subject") == "caf\u00e9 \udcff\udc80"
    request.set_max_forwards(1)
    out = request.to_bytes()
    assert b"Subject: caf\xc3\xa9 \xff\x80\r\n" in out
    assert out.endswith(b"\xff\xfe")


# ============================================================================ body and framing rules


def test_trailing_bytes_beyond_content_length_are_discarded() -> None:
    data = invite(body=b"body") + b"trailing junk"
    request = parse_request(data)
    assert request.body == b"body"
    assert request.content_length == 4
    out = request.to_bytes()
    assert out == invite(body=b"body")
    assert b"trailing" not in out


def test_shorter_body_than_content_length_is_400() -> None:
    data = invite(body=b"body").replace(b"Content-Length: 4", b"Content-Length: 10")
    error = parse_error(data)
    assert error.status == 400
    assert "exceeds" in error.detail
    assert request_of(error).body == b"body"
    assert request_of(error).call_id == "a84b4c76e66710@pc33.atlanta.com"


def test_no_content_length_takes_the_rest_of_the_datagram() -> None:
    data = invite(body=b"all\r\n\r\nof it", length=False)
    request = parse_request(data)
    assert request.body == b"all\r\n\r\nof it"
    assert request.to_bytes() == data


def test_stream_requires_content_length() -> None:
    error = parse_error(invite(body=b"x", length=False), stream=True)
    assert error.status == 400
    assert "Content-Length" in error.detail
    assert request_of(error).call_id == "a84b4c76e66710@pc33.atlanta.com"
    assert parse_request(invite(body=b"x"), stream=True).body == b"x"


@pytest.mark.parametrize(
    "value",
    ["-1", "+4", "four", "4 4", "0x4", "", "4.0", "99999999999999999999", "65536"],
)
def test_bad_content_length(value: str) -> None:
    data = invite(body=b"body").replace(b"Content-Length: 4", f"Content-Length: {value}".encode())
    error = parse_error(data)
    assert error.status == 400
    assert request_of(error).cseq.method == "INVITE"


def test_content_length_superscript_digit() -> None:
    data = invite(body=b"body").replace(b"Content-Length: 4", "Content-Length: \u00b2".encode())
    parse_error(data)


@pytest.mark.parametrize("digit", ["\u0664", "\uff14"])
def test_content_length_non_ascii_digit(digit: str) -> None:
    data = invite(body=b"body").replace(b"Content-Length: 4", f"Content-Length: {digit}".encode())
    parse_error(data)


@pytest.mark.parametrize(
    ("first", "second"),
    [("4", "5"), ("4", "04"), ("4", "x")],
)
def test_conflicting_content_length(first: str, second: str) -> None:
    data = invite(f"l: {second}", body=b"body").replace(
        b"Content-Length: 4", f"Content-Length: {first}".encode()
    )
    error = parse_error(data)
    assert error.status == 400
    assert "conflicting" in error.detail
    assert request_of(error).call_id == "a84b4c76e66710@pc33.atlanta.com"


def test_repeated_equal_content_length_parses_but_does_not_validate() -> None:
    request = parse_request(invite("l: 4", body=b"body"))
    assert request.body == b"body"
    with pytest.raises(SipParseError, match="appears 2 times"):
        request.validate()


@pytest.mark.parametrize("prefix", [b"\r\n", b"\r\n\r\n", b"\r\n\r\n\r\n\r\n\r\n\r\n"])
def test_leading_crlfs_are_ignored(prefix: bytes) -> None:
    data = invite(body=b"body")
    request = parse_request(prefix + data)
    assert request.method == "INVITE"
    assert request.body == b"body"
    assert request.to_bytes() == data


def test_lone_lf_prefix_is_not_a_crlf() -> None:
    error = parse_error(b"\n" + invite())
    assert error.status == 400


@pytest.mark.parametrize(
    "data",
    [b"", b"\r\n", b"\r\n\r\n", b"INVITE sip:x SIP/2.0", b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h"],
)
def test_unterminated_without_readable_headers(data: bytes) -> None:
    error = parse_error(data)
    assert error.status == 400
    assert "empty line" in error.detail
    assert error.message is None


def test_no_blank_line_at_end_of_headers_keeps_the_headers() -> None:
    data = invite()[:-2]  # the last CRLF removed: "Content-Length: 0\r\n" ends the datagram
    error = parse_error(data)
    assert "empty line" in error.detail
    request = request_of(error)
    assert request.call_id == "a84b4c76e66710@pc33.atlanta.com"
    assert request.top_via.branch == "z9hG4bK776asdhds"
    response = make_response(request, 400, "Bad Request", to_tag="x")
    assert response.to.tag == "x"


def test_no_blank_line_and_bad_start_line() -> None:
    data = wire("INVITE sip:x SIP/9.9", *MANDATORY)[:-2]
    error = parse_error(data)
    assert "empty line" in error.detail
    assert request_of(error).call_id == "a84b4c76e66710@pc33.atlanta.com"


def test_no_blank_line_and_short_body() -> None:
    data = invite().replace(b"Content-Length: 0", b"Content-Length: 5")[:-2]
    error = parse_error(data)
    assert "empty line" in error.detail
    assert request_of(error).call_id == "a84b4c76e66710@pc33.atlanta.com"


# ============================================================================ limits


def test_default_limits() -> None:
    assert ParserLimits() == DEFAULT_LIMITS
    assert (DEFAULT_LIMITS.max_message_size, DEFAULT_LIMITS.max_headers) == (65535, 256)
    assert DEFAULT_LIMITS.max_header_line == 8192


def test_message_size_limit() -> None:
    data = invite(body=b"x" * 100)
    assert parse_request(data, ParserLimits(max_message_size=len(data))).body == b"x" * 100
    error = parse_error(data, ParserLimits(max_message_size=len(data) - 1))
    assert isinstance(error, MessageTooLarge)
    assert error.status == 513
    assert error.reason == "Message Too Large"


def test_default_message_size_limit() -> None:
    data = invite(body=b"x" * 70000)
    assert isinstance(parse_error(data), MessageTooLarge)


@pytest.mark.parametrize("folded", [False, True])
def test_header_count_limit(folded: bool) -> None:
    lines = [f"X-Count-{index}: {index}" for index in range(10)]
    if folded:
        lines[0] += "\r\n folded"
    data = wire("OPTIONS sip:x SIP/2.0", *lines, length=False)
    for _ in range(2):  # the second parse sees only known header names
        assert len(parse_request(data, ParserLimits(max_headers=10)).headers) == 10
        error = parse_error(data, ParserLimits(max_headers=9))
        assert isinstance(error, MessageTooLarge)
        assert error.status == 513


def test_header_line_length_limit() -> None:
    data = invite("Subject: " + "s" * 91)  # a 100-character line
    assert parse_request(data, ParserLimits(max_header_line=100)).get("subject") == "s" * 91
    error = parse_error(data, ParserLimits(max_header_line=99))
    assert isinstance(error, MessageTooLarge)
    assert error.status == 513


def test_header_line_length_limit_counts_continuation_lines() -> None:
    data = invite("Subject: " + "s" * 40 + "\r\n " + "t" * 40)
    assert parse_request(data, ParserLimits(max_header_line=100)).get("subject") == "s" * 40 + " " + "t" * 40
    assert isinstance(parse_error(data, ParserLimits(max_header_line=80)), MessageTooLarge)


def test_start_line_is_not_a_header_line() -> None:
    long_uri = "sip:" + "a" * 200 + "@example.com"
    request = parse_request(wire(f"OPTIONS {long_uri} SIP/2.0", VIA), ParserLimits(max_header_line=100))
    assert request.uri == long_uri


# ============================================================================ make_response


def test_make_response_copies_the_dialog_headers() -> None:
    request = parse_request(
        wire(
            "INVITE sip:bob@biloxi.com SIP/2.0",
            "Via: SIP/2.0/UDP p1;branch=z9hG4bK1, SIP/2.0/UDP p2;branch=z9hG4bK2",
            "Max-Forwards: 69",
            "v:  SIP/2.0/UDP  pc33.atlanta.com ;branch=z9hG4bK3",
            "Route: <sip:r;lr>",
            "Record-Route: <sip:rr;lr>",
            "To:  Bob <sip:bob@biloxi.com>",
            "f: Alice <sip:alice@atlanta.com>;tag=1928301774",
            "i: a84b4c76e66710@pc33.atlanta.com",
            "CSeq :  314159 INVITE",
            "Contact: <sip:alice@pc33.atlanta.com>",
            "Subject: hi",
            body=b"sdp",
        )
    )
    response = make_response(request, 486, "Busy Here")
    assert response.status == 486
    assert response.reason == "Busy Here"
    assert response.body == b""
    assert header_lines(response.to_bytes()) == [
        b"Via: SIP/2.0/UDP p1;branch=z9hG4bK1, SIP/2.0/UDP p2;branch=z9hG4bK2",
        b"v:  SIP/2.0/UDP  pc33.atlanta.com ;branch=z9hG4bK3",
        b"To:  Bob <sip:bob@biloxi.com>",
        b"f: Alice <sip:alice@atlanta.com>;tag=1928301774",
        b"i: a84b4c76e66710@pc33.atlanta.com",
        b"CSeq :  314159 INVITE",
        b"Content-Length: 0",
    ]
    assert response.to_bytes().startswith(b"SIP/2.0 486 Busy Here\r\n")
    assert [via.host for via in response.vias] == ["p1", "p2", "pc33.atlanta.com"]
    assert response.to.tag is None
    parse_response(response.to_bytes()).validate()


def test_make_response_adds_a_to_tag_only_when_absent() -> None:
    request = parse_request(invite())
    response = make_response(request, 200, "OK", to_tag="abc")
    assert response.to.tag == "abc"
    assert response.get("to") == "Bob <sip:bob@biloxi.com>;tag=abc"
    assert header_lines(response.to_bytes())[1] == b"To: Bob <sip:bob@biloxi.com>;tag=abc"
    # the request is untouched
    assert request.to.tag is None
    assert request.to_bytes() == invite()


@pytest.mark.parametrize(
    "to",
    [
        "To: <sip:b@x>;tag=orig",
        "To: <sip:b@x>;TAG=orig",
        "To: <sip:b@x> ; tag = orig",
        "t: <sip:b@x>;tag=orig",
    ],
)
def test_make_response_keeps_an_existing_to_tag(to: str) -> None:
    request = parse_request(wire("BYE sip:b@x SIP/2.0", VIA, to, "From: <sip:a@x>;tag=1", "Call-ID: c"))
    response = make_response(request, 200, "OK", to_tag="new")
    assert response.to.tag == "orig"
    assert header_lines(response.to_bytes())[1] == to.encode()


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        # a tag already: the To must be copied unchanged, today a second tag is appended
        ("To: <sip:b@x>;\ttag=orig", "<sip:b@x>;\ttag=orig"),
        # no tag: one must be added, today none is
        ('To: "Bob;tag=1" <sip:b@x>', '"Bob;tag=1" <sip:b@x>;tag=new'),
        ("To: <sip:b@x;tag=1>", "<sip:b@x;tag=1>;tag=new"),
    ],
)
def test_make_response_to_tag_detection(to: str, expected: str) -> None:
    request = parse_request(wire("INVITE sip:b@x SIP/2.0", VIA, to, "From: <sip:a@x>;tag=1", "Call-ID: c"))
    response = make_response(request, 200, "OK", to_tag="new")
    assert response.get("to") == expected


def test_make_response_extra_headers() -> None:
    request = parse_request(invite())
    response = make_response(
        request, 420, "Bad Extension", headers=[("unsupported", "foo"), ("Retry-After", "5"), ("x-a", "b")]
    )
    lines = header_lines(response.to_bytes())
    assert lines[-4:] == [b"Unsupported: foo", b"Retry-After: 5", b"X-A: b", b"Content-Length: 0"]
    assert response.get("unsupported") == "foo"


def test_make_response_on_a_partial_message() -> None:
    error = parse_error(
        wire("INVITE sip:x SIP/2.0 extra", "Via: SIP/2.0/UDP h;branch=z9hG4bK1", "CSeq: 1 INVITE")
    )
    request = request_of(error)
    response = make_response(request, error.status, error.reason, to_tag="t")
    assert response.status == 400
    assert header_lines(response.to_bytes()) == [
        b"Via: SIP/2.0/UDP h;branch=z9hG4bK1",
        b"CSeq: 1 INVITE",
        b"Content-Length: 0",
    ]


def test_make_response_from_a_response_message() -> None:
    response = parse_response(wire("SIP/2.0 200 OK", VIA, "Call-ID: c", "Contact: <sip:x>"))
    other = make_response(response, 500, "Server Error")
    assert other.get_all("via") == [VIA.split(": ", 1)[1]]
    assert "contact" not in other


# ============================================================================ copy()


def test_request_copy_is_independent() -> None:
    original = forwarded_invite()
    data = original.to_bytes()
    _ = original.parsed_uri, original.top_via, original.routes
    clone = original.copy()
    assert clone is not original
    assert isinstance(clone, Request)
    assert clone.to_bytes() == data
    assert clone.parsed_uri is original.parsed_uri
    assert clone.headers == original.headers
    clone.push_via("SIP/2.0/UDP clone;branch=z9hG4bKc")
    clone.pop_route()
    clone.set_max_forwards(1)
    clone.set_uri("sip:elsewhere")
    clone.set_body(b"new body")
    clone.add_header("X-Clone", "1")
    clone.remove_header("Subject")
    assert original.to_bytes() == data
    assert original.top_via.host == "p1.example.com"
    assert len(original.routes) == 3
    assert original.max_forwards == 70
    assert original.uri == "sip:bob@biloxi.com"
    assert original.body == b"body"
    assert "x-clone" not in original
    assert "subject" in original
    assert clone.top_via.host == "clone"
    assert clone.get("x-clone") == "1"


def test_response_copy_is_independent() -> None:
    data = wire("SIP/2.0 200 OK", VIA, "Call-ID: c", body=b"x")
    original = parse_response(data)
    clone = original.copy()
    assert isinstance(clone, Response)
    assert (clone.status, clone.reason, clone.start_line) == (200, "OK", "SIP/2.0 200 OK")
    assert clone.to_bytes() == data
    clone.pop_via()
    clone.status = 500
    assert original.to_bytes() == data
    assert original.top_via.host == "pc33.atlanta.com"
    assert clone.vias == []


def test_copy_of_an_edited_message() -> None:
    request = parse_request(invite())
    request.set_max_forwards(10)
    clone = request.copy()
    assert clone.to_bytes() == request.to_bytes()
    assert clone.max_forwards == 10


# ============================================================================ canonical_name cache


def test_canonical_name_caches_short_names(monkeypatch: pytest.MonkeyPatch) -> None:
    cache: dict[str, str] = {}
    monkeypatch.setattr(message_module, "_NAME_CACHE", cache)
    assert canonical_name("X-Cached ") == "x-cached"
    assert cache == {"X-Cached ": "x-cached"}
    assert canonical_name("i") == "call-id"
    assert cache["i"] == "call-id"
    # a cached entry is returned as is
    cache["Weird"] = "sentinel"
    assert canonical_name("Weird") == "sentinel"


def test_canonical_name_does_not_cache_long_or_bad_names(monkeypatch: pytest.MonkeyPatch) -> None:
    cache: dict[str, str] = {}
    monkeypatch.setattr(message_module, "_NAME_CACHE", cache)
    long_name = "X-" + "a" * 63
    assert canonical_name(long_name) == long_name.lower()
    assert canonical_name("X-" + "b" * 62) == "x-" + "b" * 62  # 64 characters: cached
    assert list(cache) == ["X-" + "b" * 62]
    with pytest.raises(SipParseError):
        canonical_name("Bad Name")
    assert "Bad Name" not in cache


def test_canonical_name_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    full = {f"x-{index}": f"x-{index}" for index in range(message_module._NAME_CACHE_MAX)}
    monkeypatch.setattr(message_module, "_NAME_CACHE", full)
    assert canonical_name("X-Not-Cached") == "x-not-cached"
    assert "X-Not-Cached" not in full
    assert len(full) == message_module._NAME_CACHE_MAX
    # parsing still works with a full cache
    assert parse_request(invite("X-Not-Cached: 1")).get("x-not-cached") == "1"


def test_parse_with_an_empty_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(message_module, "_NAME_CACHE", {})
    data = invite("X-New: 1")
    first = parse_request(data)
    second = parse_request(data)
    assert first.headers == second.headers
    assert first.to_bytes() == second.to_bytes() == data


def test_replace_top_via_keeps_the_other_vias() -> None:
    message = parse_message(
        b"OPTIONS sip:a@b SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP h1;branch=z9hG4bK1;rport, SIP/2.0/UDP h2;branch=z9hG4bK2\r\n"
        b"v: SIP/2.0/TCP h3;branch=z9hG4bK3\r\n"
        b"Call-ID: x\r\nCSeq: 1 OPTIONS\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\n\r\n"
    )
    message.replace_top_via("SIP/2.0/UDP h1;branch=z9hG4bK1;rport=5;received=192.0.2.9")
    assert [via.host for via in message.vias] == ["h1", "h2", "h3"]
    assert message.top_via.rport == "5"
    assert message.top_via.received == "192.0.2.9"
    assert b"v: SIP/2.0/TCP h3;branch=z9hG4bK3\r\n" in message.to_bytes()


def test_replace_top_via_without_via_is_refused() -> None:
    message = Request.build("OPTIONS", "sip:a@b", [("Call-ID", "x")])
    with pytest.raises(SipParseError):
        message.replace_top_via("SIP/2.0/UDP h;branch=z9hG4bK1")


@pytest.mark.parametrize(
    ("header", "accessor"),
    [
        ("Contact: <sip:a@b:99999>", "contacts"),
        ("Record-Route: <sip:-bad>", "record_routes"),
        ("X-Dummy: 1\r\nFrom: <sip:alice@atlanta.com:0x1>;tag=9", "from_"),
    ],
)
def test_user_agent_uris_are_checked_on_use_not_by_validate(header: str, accessor: str) -> None:
    # validate() checks the structure of every name-addr, but parses only the URIs the
    # proxy routes on (Request-URI, Route): the others belong to the user agents.
    data = invite().replace(b"Max-Forwards: 70\r\n", f"Max-Forwards: 70\r\n{header}\r\n".encode())
    if accessor == "from_":
        data = data.replace(b"From: Alice <sip:alice@atlanta.com>;tag=1928301774\r\n", b"")
    message = parse_message(data)
    message.validate()
    value = getattr(message, accessor)
    name_addr = value[0] if isinstance(value, list) else value
    with pytest.raises(SipParseError):
        _ = name_addr.uri


_EDITS = {
    "add_header": lambda m: m.add_header("Route", "<sip:new;lr>"),
    "add_header_first": lambda m: m.add_header("Via", "SIP/2.0/UDP n;branch=z9hG4bKn", first=True),
    "remove_header": lambda m: m.remove_header("via"),
    "remove_route": lambda m: m.remove_header("route"),
    "set_header": lambda m: m.set_header("Route", "<sip:only;lr>"),
    "pop_via": lambda m: m.pop_via(),
    "pop_route": lambda m: m.pop_route(),
    "push_via": lambda m: m.push_via("SIP/2.0/UDP p;branch=z9hG4bKp"),
    "replace_top_via": lambda m: m.replace_top_via("SIP/2.0/UDP r;branch=z9hG4bKr"),
    "push_record_route": lambda m: m.push_record_route("<sip:rr;lr>"),
    "push_route": lambda m: m.push_route("<sip:pr;lr>"),
    "set_max_forwards": lambda m: m.set_max_forwards(9),
    "set_body": lambda m: m.set_body(b"x", "text/plain"),
}


@pytest.mark.parametrize("edits", [[name] for name in _EDITS] + [list(_EDITS), list(reversed(_EDITS))])
def test_first_values_stay_right_through_edits_and_copies(edits: list[str]) -> None:
    """``get`` (the first value of each header) agrees with ``get_all`` after any edit, on copies too."""
    message = parse_request(
        wire(
            "OPTIONS sip:x SIP/2.0",
            "Via: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2",
            "v: SIP/2.0/UDP c;branch=z9hG4bK3",
            "Route: <sip:r1;lr>, <sip:r2;lr>",
            "Route: <sip:r3;lr>",
            "Max-Forwards: 70",
            "Call-ID: c",
        )
    )
    names = ["via", "route", "record-route", "max-forwards", "call-id", "content-length", "content-type"]
    messages: list[Request] = [message]
    for edit in edits:
        for current in messages:
            _ = current.get("via")  # the first values are looked up before the edit
        _EDITS[edit](messages[-1])
        messages.append(messages[-1].copy())
    for current in messages:
        for name in names:
            assert current.get(name) == next(iter(current.get_all(name)), None), (edits, name)
        assert parse_request(current.to_bytes()).headers == current.headers
