"""sipha.sip.framer on the path of every TCP/TLS segment: frames cut from the segment itself,
and the Content-Length search (by lowered name) agreeing with the header-line expression."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from sipha.sip import Frame, FramerEvent, FramingError, Ping, SipParseError, StreamFramer
from sipha.sip.framer import _LENGTH_RE, _content_length

START = b"INVITE sip:bob@biloxi.example.com SIP/2.0"
VIA = b"Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9"


def message(body: bytes = b"", *, name: bytes = b"Content-Length") -> bytes:
    return START + b"\r\n" + VIA + b"\r\n" + name + b": " + str(len(body)).encode() + b"\r\n\r\n" + body


def data_of(events: list[FramerEvent]) -> list[bytes]:
    return [event.data for event in events if isinstance(event, Frame)]


def test_a_segment_that_is_one_message_is_the_frame_itself() -> None:
    data = message(b"v=0\r\n")
    events = StreamFramer().feed(data)
    assert len(events) == 1
    assert isinstance(events[0], Frame)
    assert events[0].data is data  # not copied


def test_messages_after_a_buffered_one_complete_in_the_same_feed() -> None:
    first, second, third = message(b"one"), message(b"second"), message()
    framer = StreamFramer()
    assert framer.feed(first[:30]) == []
    assert framer.buffered == 30
    assert framer.feed(first[30:-2]) == []  # the header section is in, the body is not
    events = framer.feed(first[-2:] + b"\r\n\r\n" + second + third[:10])
    assert [type(event) for event in events] == [Frame, Ping, Frame]
    assert data_of(events) == [first, second]
    assert framer.buffered == 10
    assert data_of(framer.feed(third[10:])) == [third]
    assert framer.buffered == 0


def test_a_body_arriving_in_pieces_completes_once() -> None:
    data = message(b"x" * 3000)
    framer = StreamFramer()
    events: list[FramerEvent] = []
    for position in range(0, len(data), 100):
        assert events == []
        events = framer.feed(data[position : position + 100])
    assert data_of(events) == [data]
    assert framer.buffered == 0


def test_an_error_in_a_message_after_a_buffered_one() -> None:
    good = message(b"ok")
    bad = START + b"\r\n" + VIA + b"\r\n\r\n"
    framer = StreamFramer()
    assert framer.feed(good[:-1]) == []
    events = framer.feed(good[-1:] + bad)
    assert data_of(events) == [good]
    assert isinstance(events[-1], FramingError)
    assert "Content-Length is required" in events[-1].error.detail
    assert framer.failed


# ---------------------------------------------------------------- the Content-Length search

LENGTH_NAMES = [b"Content-Length", b"content-length", b"CONTENT-LENGTH", b"cOnTeNt-LeNgTh", b"l", b"L"]
OTHER_NAMES = [b"Location", b"lx", b"X-Content-Length", b"Content-Lengths", b"Subject", b"Content-Type"]
NAMES = st.sampled_from([*LENGTH_NAMES, *OTHER_NAMES])
WELL_FORMED = [b"0", b"4", b"12", b" 4 ", b"\t4", b"abc", b"", b"99999999999"]
FOLDED_OR_BROKEN = [b"4\r\n 2", b"\r\n 4", b"\r\n\t4 ", b"4\n", b"4\r5", b"4\n 5", b"4\r\n"]
VALUES = st.sampled_from([*WELL_FORMED, *FOLDED_OR_BROKEN])
SPACES = st.sampled_from([b"", b" ", b"\t", b"  "])


def reference(head: bytes) -> int | str:
    """What the framer did before: every match of the header-line expression over the section."""
    lengths = {match.group(1).strip(b" \t\r\n") for match in _LENGTH_RE.finditer(head)}
    if not lengths:
        return "Content-Length is required on stream transports"
    if len(lengths) > 1:
        return "conflicting Content-Length headers"
    value = lengths.pop()
    if not value.isdigit() or len(value) > 10:  # as the framer
        return f"bad Content-Length {value[:20]!r}"
    return int(value)


@given(st.lists(st.tuples(NAMES, SPACES, VALUES), max_size=5), st.binary(max_size=4))
def test_the_content_length_search_agrees_with_the_expression(
    headers: list[tuple[bytes, bytes, bytes]], prefix: bytes
) -> None:
    lines = [name + space + b":" + value for name, space, value in headers]
    head = START + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"
    stream = prefix + head + b"body"
    expected = reference(head)
    try:
        found: int | str = _content_length(stream, len(prefix), len(prefix) + len(head))
    except SipParseError as error:
        found = error.detail
    assert found == expected


def test_the_expression_is_case_insensitive_ascii_only() -> None:
    """The lowered search relies on it: bytes.lower() and re.IGNORECASE on bytes fold ASCII alike."""
    assert _LENGTH_RE.flags & re.IGNORECASE
    assert bytes(range(256)).lower() == bytes(c + 32 if 65 <= c <= 90 else c for c in range(256))
