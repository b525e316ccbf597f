"""Property tests of the message layer (hypothesis).

* messages built from generated parts survive serialise -> parse unchanged;
* arbitrary bytes, and valid messages with random damage, only ever raise
  SipParseError, within a time bound, whatever typed field is then read;
* the stream framer cuts the same messages whatever the packet boundaries.
"""

import contextlib
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from sipha.sip import (
    Frame,
    Request,
    Response,
    SipParseError,
    SipUri,
    StreamFramer,
    parse_message,
)

LOWER = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"
ALNUM = LOWER + LOWER.upper() + DIGITS


def _escaped_text(alphabet: str, min_size: int, max_size: int) -> st.SearchStrategy[str]:
    """Characters of ``alphabet`` or %HH escapes (RFC 3261 §25.1 ``escaped``)."""
    escapes = st.integers(0, 255).map(lambda byte: f"%{byte:02X}")
    return st.lists(st.one_of(st.sampled_from(alphabet), escapes), min_size=min_size, max_size=max_size).map(
        "".join
    )


# Run without coverage tracing, in their own pytest session (see the Makefile): with
# 10,000 examples each, tracing would triple their time.
pytestmark = pytest.mark.property

TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"  # noqa: S105 - not a secret
tokens = st.text(TOKEN_ALPHABET, min_size=1, max_size=12)
hosts = st.one_of(
    st.lists(
        st.tuples(st.sampled_from(LOWER), st.text(LOWER + DIGITS, max_size=10)).map("".join),
        min_size=1,
        max_size=4,
    ).map(".".join),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
)
# pname = 1*paramchar; paramchar = param-unreserved / unreserved / escaped (RFC 3261 §25.1)
uri_params = _escaped_text(ALNUM + "-_.!~*'()[]/:&+$", 1, 10)
ports = st.one_of(st.none(), st.integers(1, 65535))
users = _escaped_text(ALNUM + "-_.!~*'()&=+$,;?/", 1, 16)
methods = st.one_of(st.sampled_from(["INVITE", "OPTIONS", "BYE", "REGISTER", "MESSAGE"]), tokens)
# Quoted display names: qdtext plus quoted-pairs (RFC 3261 §25.1), no CR/LF.
qdtext = st.text(
    st.characters(
        blacklist_characters='"\\\r\n\x7f',
        blacklist_categories=["Cs"],
        min_codepoint=0x20,
        max_codepoint=0x2FF,
    ),
    max_size=12,
)
display_names = st.one_of(
    st.none(),
    qdtext.map(lambda text: f'"{text}"'),
    st.lists(tokens, min_size=1, max_size=3).map(" ".join),
)
header_text = st.text(
    st.characters(blacklist_categories=["Cs", "Cc"], min_codepoint=0x20, max_codepoint=0x7FF), max_size=40
).map(str.strip)


@st.composite
def sip_uris(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["sip", "sips"]))
    user = draw(st.one_of(st.none(), users))
    host = draw(hosts)
    port = draw(ports)
    params = draw(st.lists(uri_params, max_size=3, unique_by=str.lower))
    text = f"{scheme}:" + (f"{user}@" if user else "") + host + (f":{port}" if port else "")
    return text + "".join(f";{p}" for p in params)


@st.composite
def name_addrs(draw: st.DrawFn) -> tuple[str | None, str, str | None]:
    display = draw(display_names)
    uri = draw(sip_uris())
    tag = draw(st.one_of(st.none(), tokens))
    return display, uri, tag


def _render_name_addr(display: str | None, uri: str, tag: str | None) -> str:
    text = (f"{display} " if display else "") + f"<{uri}>"
    return text + (f";tag={tag}" if tag else "")


@st.composite
def requests(draw: st.DrawFn) -> tuple[Request, dict[str, object]]:
    method = draw(methods)
    uri = draw(sip_uris())
    vias = draw(
        st.lists(
            st.tuples(st.sampled_from(["UDP", "TCP", "TLS"]), hosts, ports, tokens), min_size=1, max_size=3
        )
    )
    from_ = draw(name_addrs())
    to = draw(name_addrs())
    routes = draw(st.lists(sip_uris(), max_size=3))
    call_id = draw(
        st.tuples(
            st.text(ALNUM + "-.!%*_+`'~()<>:\\\"/[]?{}", min_size=1, max_size=20),
            st.one_of(st.just(""), st.text(LOWER + DIGITS + ".", min_size=1, max_size=10).map("@".__add__)),
        ).map("".join)
    )
    seq = draw(st.integers(0, 2**31 - 1))
    max_forwards = draw(st.integers(0, 255))
    extensions = draw(st.lists(st.tuples(tokens.map(lambda t: "X-" + t), header_text), max_size=4))
    body = draw(st.binary(max_size=200))
    headers = [
        (
            "Via",
            ", ".join(
                f"SIP/2.0/{t} {h}" + (f":{p}" if p else "") + f";branch=z9hG4bK{b}" for t, h, p, b in vias
            ),
        ),
        ("Max-Forwards", str(max_forwards)),
        ("From", _render_name_addr(*from_)),
        ("To", _render_name_addr(*to)),
        ("Call-ID", call_id),
        ("CSeq", f"{seq} {method}"),
        *[("Route", f"<{route}>") for route in routes],
        *extensions,
    ]
    expected: dict[str, object] = {
        "method": method,
        "uri": uri,
        "branches": [f"z9hG4bK{b}" for *_, b in vias],
        "from_tag": from_[2],
        "to_tag": to[2],
        "call_id": call_id,
        "seq": seq,
        "max_forwards": max_forwards,
        "routes": routes,
        "body": body,
    }
    return Request.build(method, uri, headers, body), expected


@given(requests())
def test_serialise_then_parse_is_identity(generated: tuple[Request, dict[str, object]]) -> None:
    request, expected = generated
    parsed = parse_message(request.to_bytes())
    assert isinstance(parsed, Request)
    parsed.validate()
    assert parsed.headers[: len(request.headers)] == request.headers
    assert parsed.method == expected["method"]
    assert parsed.uri == expected["uri"]
    assert [via.branch for via in parsed.vias] == expected["branches"]
    assert parsed.from_.tag == expected["from_tag"]
    assert parsed.to.tag == expected["to_tag"]
    assert parsed.call_id == expected["call_id"]
    assert parsed.cseq.seq == expected["seq"]
    assert parsed.max_forwards == expected["max_forwards"]
    assert [str(route.uri) for route in parsed.routes] == expected["routes"]
    assert parsed.body == expected["body"]
    assert isinstance(parsed.parsed_uri, SipUri)
    # A second trip changes nothing at all: unchanged messages are their own bytes.
    assert parse_message(parsed.to_bytes()).to_bytes() == parsed.to_bytes()


def _read_everything(message: Request | Response) -> None:
    """Touch every typed accessor, as a proxy might."""
    message.validate()
    _ = (message.top_via, message.vias, message.routes, message.record_routes, message.contacts)
    _ = (message.max_forwards, message.content_length, message.require, message.proxy_require)
    if isinstance(message, Request):
        _ = message.parsed_uri
    message.push_via("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKfuzz")
    message.pop_route()
    parse_message(message.to_bytes())


@hypothesis_settings(deadline=timedelta(milliseconds=500))
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_raise_only_parse_errors(data: bytes) -> None:
    with contextlib.suppress(SipParseError):
        _read_everything(parse_message(data))


VALID_INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Bob" <sip:bob@biloxi.example.com>\r\n'
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    b"Content-Length: 4\r\n\r\nv=0\n"
)


@hypothesis_settings(deadline=timedelta(milliseconds=500))
@given(
    st.lists(
        st.tuples(st.integers(0, len(VALID_INVITE) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=8,
    )
)
def test_damaged_messages_raise_only_parse_errors(damage: list[tuple[int, int]]) -> None:
    data = bytearray(VALID_INVITE)
    for position, byte in damage:
        data[position] = byte
    with contextlib.suppress(SipParseError):
        _read_everything(parse_message(bytes(data)))


@given(st.lists(st.integers(1, 400), min_size=1, max_size=6), st.integers(1, 4))
def test_framer_output_does_not_depend_on_packet_boundaries(cuts: list[int], copies: int) -> None:
    stream = (b"\r\n\r\n" + VALID_INVITE) * copies
    framer = StreamFramer()
    frames: list[bytes] = []
    pings = 0
    position = 0
    for cut in [*cuts, len(stream)]:
        for event in framer.feed(stream[position : position + cut]):
            if isinstance(event, Frame):
                frames.append(event.data)
            else:
                pings += 1
        position += cut
    for event in framer.feed(stream[position:]):
        assert isinstance(event, Frame)
        frames.append(event.data)
    assert frames == [VALID_INVITE] * copies
    assert pings == copies
