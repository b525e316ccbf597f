"""The parsers' fast paths read what they accept exactly as the full grammar does; parsed values are shared.

``parse_uri`` and ``parse_name_addr`` first try one regular expression for the
forms user agents actually send, then fall back to the full RFC 3261 §25
grammar.  Whatever the fast path accepts must give the same result as the full
grammar; whatever it refuses must still be read (or refused) by the full one.
"""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from sipha.sip import (
    DEFAULT_LIMITS,
    NameAddr,
    SipParseError,
    canonical_name,
    headers,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
    uri,
)
from sipha.sip.headers import _parse_name_addr_full
from sipha.sip.parser import _slow_fields
from sipha.sip.uri import Uri, _parse_uri_full

URIS = [
    "sip:service@127.0.0.1:5060",
    "sip:127.0.0.1:5080;transport=UDP",
    "sip:127.0.0.1:5060;lr",
    "sips:alice@atlanta.com",
    "sip:[::1]:5060;maddr=[::1];Transport=tcp",
    "sip:[::1]",
    "sip:a.b-c_d.example.",
    "sip:+1-212-555-1212@gw.example.com;user=phone",
    "sip:alice@host:65535",
    "sip:alice@host:65536",  # out of range: refused by both
    "sip:alice@host:",  # empty port
    "sip:alice@host:0x5",
    "sip:host;a=",  # empty parameter value
    "sip:host;;a",
    "sip:host;a=b=c",
    "sip:host;x=a@b",  # "@" after the host: the full grammar reads a user part
    "sip:u:pw@host",  # password
    "sip:u%41@host;p%41=v",  # escapes
    "sip:host?subject=x",  # headers
    "SIP:Host",  # the scheme is case-insensitive
    "sip:-host",
    "sip:host-",
    "sip:[::1",
    "sip:[::1]x",
    "sip:",
    "sip:@host",
    "sip:a@b@c",
    "tel:+1-212-555-1212",
    "mailto:alice@example.com",
    "sip:alice@host name",
]

NAME_ADDRS = [
    "sip:sipp@127.0.0.1:5090",
    "sip:sipp@127.0.0.1:5090;tag=abc;expires=60",
    "sipp <sip:sipp@127.0.0.1:5090>;tag=4242",
    '"A B" <sip:a@b>;q=0.5',
    "<sip:a@b>",
    "sip:a@b;tag",
    "sip:a@b;tag=",
    'sip:a@b;tag="q"',
    " sip:a@b ; tag = x ",
    "sip:a@b?x=y",
    "sip:a,b@c",
    '"sip:a@b"',
    "sip:a@b>",
    "*",
    "",
    ";tag=x",
]


_URI_PARTS = ("scheme", "user", "password", "host", "port", "params", "headers", "number", "opaque")


def _uri_parts(uri: Uri) -> tuple[object, ...]:
    return (type(uri), str(uri), *(getattr(uri, part, None) for part in _URI_PARTS))


def _uri_or_error(parse: object, text: str) -> tuple[object, ...]:
    try:
        return _uri_parts(parse(text))  # type: ignore[operator]
    except SipParseError as error:
        return ("error", str(error))


def _name_addr_parts(name_addr: NameAddr) -> tuple[object, ...]:
    return (name_addr.display, name_addr.uri_text, name_addr.params)


def _name_addr_or_error(parse: object, text: str) -> tuple[object, ...]:
    try:
        return _name_addr_parts(parse(text, what="Contact"))  # type: ignore[operator]
    except SipParseError as error:
        return ("error", str(error))


@pytest.mark.parametrize("text", URIS)
def test_parse_uri_fast_path_agrees_with_the_full_grammar(text: str) -> None:
    assert _uri_or_error(parse_uri, text) == _uri_or_error(_parse_uri_full, text)


@pytest.mark.parametrize("text", NAME_ADDRS)
def test_parse_name_addr_fast_paths_agree_with_the_full_grammar(text: str) -> None:
    assert _name_addr_or_error(parse_name_addr, text) == _name_addr_or_error(_parse_name_addr_full, text)


# Characters that matter to the grammar, and a few that do not.
_URI_ALPHABET = "sipSIP:@;=?&%[]<>\"' \t,.-_!~*()+$/0123456789aAfF"


@pytest.mark.property
@given(st.text(_URI_ALPHABET, max_size=30).map(lambda tail: "sip:" + tail))
def test_parse_uri_fast_path_agrees_on_arbitrary_text(text: str) -> None:
    assert _uri_or_error(parse_uri, text) == _uri_or_error(_parse_uri_full, text)


@pytest.mark.property
@given(st.text(_URI_ALPHABET, max_size=30))
def test_parse_name_addr_fast_paths_agree_on_arbitrary_text(text: str) -> None:
    assert _name_addr_or_error(parse_name_addr, text) == _name_addr_or_error(_parse_name_addr_full, text)


def test_parsed_values_are_shared_by_text_and_kept_bounded() -> None:
    assert parse_via("SIP/2.0/UDP h1;branch=z9hG4bK1") is parse_via("SIP/2.0/UDP h1;branch=z9hG4bK1")
    assert parse_name_addr("<sip:a@b>;tag=1", what="From") is parse_name_addr("<sip:a@b>;tag=1", what="To")
    long_via = "SIP/2.0/UDP h;x=" + "a" * 300
    assert parse_via(long_via) is not parse_via(long_via)
    long_name_addr = "<sip:a@b>;x=" + "a" * 300
    assert parse_name_addr(long_name_addr, what="To") is not parse_name_addr(long_name_addr, what="To")
    # Not by patching the bound: the compiled build inlines Final constants.
    for number in range(uri.PARSED_CACHE_MAX + 1):
        parse_via(f"SIP/2.0/UDP h{number}")
        parse_name_addr(f"<sip:h{number}>", what="To")
    assert len(headers._VIAS) <= uri.PARSED_CACHE_MAX
    assert len(headers._NAME_ADDRS) <= uri.PARSED_CACHE_MAX


def test_parsed_uris_are_shared_by_text_and_kept_bounded() -> None:
    assert parse_uri("sip:bob@example.com") is parse_uri("sip:bob@example.com")
    long_uri = "sip:bob@example.com;x=" + "a" * 300
    assert parse_uri(long_uri) is not parse_uri(long_uri)
    for number in range(uri.PARSED_CACHE_MAX + 1):
        parse_uri(f"sip:h{number}")
    assert len(uri._URIS) <= uri.PARSED_CACHE_MAX


def test_typed_values_are_parsed_once_per_message() -> None:
    request = parse_message(
        b"OPTIONS sip:h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n"
    )
    assert request.content_length == 0
    assert request.content_length == 0  # from the message's cache
    assert request.max_forwards is None
    assert request.max_forwards is None


# Header lines made of cached names (Via, v, To, t), separators, white space, and bare or
# paired CR and LF: folding, bare line breaks and lines without a colon all come up.
_HEADER_ALPHABET = "Viatv:; \t\r\n=x"


@pytest.mark.property
@given(st.lists(st.text(_HEADER_ALPHABET, max_size=14), min_size=1, max_size=6))
def test_header_section_fast_split_agrees_with_the_line_by_line_one(lines: list[str]) -> None:
    """parse_message's fast split of the header lines gives what the line-by-line reader gives."""
    for name in ("Via", "v", "To", "t"):
        canonical_name(name)  # known names: the fast split is tried
    text = "OPTIONS sip:x SIP/2.0\r\n" + "\r\n".join(lines)
    data = (text + "\r\n\r\n").encode()
    assume(data.find(b"\r\n\r\n") == len(text))  # the header section is all of ``text``
    fields, error = _slow_fields(text, DEFAULT_LIMITS)
    expected = ("error", str(error), fields) if error is not None else ("ok", "", fields)
    assert _fields_or_error(data) == expected


def _fields_or_error(data: bytes) -> tuple[str, str, object]:
    try:
        return ("ok", "", parse_message(data).fields)
    except SipParseError as error:
        return ("error", str(error), None if error.message is None else error.message.fields)
