"""Fuzz harness: the SIP parser (sipha.sip.parser) and what a proxy reads of a message.

One input is one datagram, and also one stream frame (``stream=True``).  What must hold:

* :func:`parse_message` (with the default limits, and small ones), :meth:`Message.validate`
  and the typed header values raise nothing but :class:`SipParseError`;
* a refused message can still be answered: a response built from the partial message
  the error carries (RFC 3261 §8.2.6.2, what the core sends) renders to bytes;
* a valid message renders and parses back valid, as received and as a proxy forwards
  it (a Via pushed, Max-Forwards lowered, a Record-Route added, §16.6): sipha must not
  relay what it would itself refuse.

Run: ``python -m tests.fuzz.fuzz_parser [libFuzzer options] [corpus dirs]`` (tests/fuzz/README.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from sipha.sip import ParserLimits, Request, Response, SipParseError, make_response, parse_message

PROXY_VIA = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-fuzz.0;rport"
RECORD_ROUTE = "<sip:192.0.2.1;lr>"
SMALL_LIMITS = ParserLimits(max_message_size=1024, max_headers=12, max_header_line=160)
"""Limits small inputs can exceed: the paths of :class:`MessageTooLarge` at the fuzzer's input sizes."""


class Finding(AssertionError):
    """An invariant of the message layer does not hold for this input (a bug, like a crash)."""


def fuzz_one_input(data: bytes) -> None:
    """Parse ``data`` as a datagram and as a stream frame; check what a proxy does with it."""
    for stream in (False, True):
        try:
            message = parse_message(data, stream=stream)
            message.validate()
        except SipParseError as error:
            answer(error)
            continue
        read_everything(message)
        round_trip(message, stream=stream)
    try:
        parse_message(data, SMALL_LIMITS).validate()
    except SipParseError as error:
        answer(error)


def answer(error: SipParseError) -> None:
    """Build the answer a server gives to a refused request (§8.2.6.2): it must render."""
    assert isinstance(error.status, int)
    assert error.reason
    partial = error.message
    if partial is not None:
        make_response(partial, error.status, error.reason, to_tag="fuzz").to_bytes()


def read_everything(message: Request | Response) -> None:
    """Every typed value a proxy may read of a valid message: SipParseError at worst."""
    readers: list[Callable[[], object]] = [
        lambda: message.top_via.branch,
        lambda: [
            (via.host_key, via.port, via.received, via.rport, via.maddr, via.ttl) for via in message.vias
        ],
        lambda: [(route.uri, route.tag) for route in message.routes],
        lambda: [(route.uri, route.sip_uri) for route in message.record_routes],
        lambda: [(contact.uri, contact.display_unquoted) for contact in message.contacts],
        lambda: (message.contact_star, message.content_length, message.max_forwards),
        lambda: (message.from_.tag, message.to.tag, message.from_.uri, message.to.uri),
        lambda: (message.require, message.proxy_require),
    ]
    if isinstance(message, Request):
        readers.append(lambda: message.parsed_uri)
    for read in readers:
        with contextlib.suppress(SipParseError):
            read()


def round_trip(message: Request | Response, *, stream: bool) -> None:
    """A valid message, as received and as forwarded, parses back valid."""
    reparse(message.to_bytes(), stream=stream, what="the message as received")
    forwarded = message.copy()
    forwarded.push_via(PROXY_VIA)
    if isinstance(forwarded, Request):
        forwarded.set_max_forwards(max((forwarded.max_forwards or 70) - 1, 0))
        forwarded.push_record_route(RECORD_ROUTE)
    reparse(forwarded.to_bytes(), stream=True, what="the message as forwarded")


def reparse(data: bytes, *, stream: bool, what: str) -> None:
    try:
        parse_message(data, stream=stream).validate()
    except SipParseError as error:
        raise Finding(f"{what} does not parse back: {error.detail} ({data[:200]!r})") from error


if __name__ == "__main__":
    from tests.fuzz.runner import main

    main(fuzz_one_input)
