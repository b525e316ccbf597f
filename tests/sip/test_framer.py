"""Unit tests of sipha.sip.framer: cutting a stream into messages (RFC 3261 §18.3, RFC 5626 §3.5.1)."""

from __future__ import annotations

import pytest

from sipha.sip import (
    Frame,
    FramerEvent,
    FramingError,
    MessageTooLarge,
    ParserLimits,
    Ping,
    Request,
    SipParseError,
    StreamFramer,
    make_response,
    parse_message,
)

HEADERS = (
    b"Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"Call-ID: 3848276298220188511@atlanta.example.com\r\n"
    b"CSeq: 1 INVITE\r\n"
)


def message(body: bytes = b"", *, length: bytes | None = None, extra: bytes = b"") -> bytes:
    """An INVITE with ``body``; ``length`` overrides the Content-Length value."""
    value = str(len(body)).encode() if length is None else length
    return (
        b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
        + HEADERS
        + extra
        + b"Content-Length: "
        + value
        + b"\r\n\r\n"
        + body
    )


def headless(extra: bytes, body: bytes = b"") -> bytes:
    """An INVITE without a Content-Length line of its own (``extra`` may add some)."""
    return b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n" + HEADERS + extra + b"\r\n" + body


def frames(events: list[FramerEvent]) -> list[bytes]:
    return [event.data for event in events if isinstance(event, Frame)]


def only_error(events: list[FramerEvent]) -> SipParseError:
    errors = [event for event in events if isinstance(event, FramingError)]
    assert len(errors) == 1
    assert events[-1] is errors[0]
    return errors[0].error


SDP = b"v=0\r\no=alice 2890844526 2890844526 IN IP4 atlanta.example.com\r\ns=-\r\n"


# ============================================================================ good streams


def test_one_message_in_one_feed() -> None:
    data = message(SDP)
    framer = StreamFramer()
    events = framer.feed(data)
    assert len(events) == 1
    assert isinstance(events[0], Frame)
    assert events[0].data == data
    assert repr(events[0]) == f"Frame({len(data)} bytes)"
    assert framer.buffered == 0
    assert framer.failed is False
    parsed = parse_message(events[0].data, stream=True)
    assert isinstance(parsed, Request)
    assert parsed.body == SDP
    assert parsed.to_bytes() == data


@pytest.mark.parametrize("body", [b"", SDP, b"\r\n\r\n", b"Content-Length: 999\r\n\r\n"])
def test_split_at_every_byte_position(body: bytes) -> None:
    data = message(body)
    for split in range(len(data) + 1):
        framer = StreamFramer()
        events = framer.feed(data[:split])
        events += framer.feed(data[split:])
        assert frames(events) == [data], split
        assert len(events) == 1
        assert framer.buffered == 0


def test_split_twice_at_many_positions() -> None:
    data = message(SDP)
    step = 7
    for first in range(0, len(data), step):
        for second in range(first, len(data), step):
            framer = StreamFramer()
            events = framer.feed(data[:first]) + framer.feed(data[first:second]) + framer.feed(data[second:])
            assert frames(events) == [data]


def test_byte_by_byte() -> None:
    data = b"\r\n\r\n" + message(SDP) + b"\r\n" + message() + b"\r\n\r\n"
    framer = StreamFramer()
    events: list[FramerEvent] = []
    for index in range(len(data)):
        events += framer.feed(data[index : index + 1])
    assert [type(event) for event in events] == [Ping, Frame, Frame, Ping]
    assert frames(events) == [message(SDP), message()]
    assert framer.buffered == 0


def test_several_messages_in_one_feed() -> None:
    first = message(SDP)
    second = message(b"")
    third = message(b"xyz", extra=b"Subject: three\r\n")
    framer = StreamFramer()
    events = framer.feed(first + second + b"\r\n\r\n" + third + b"\r\n")
    assert [type(event) for event in events] == [Frame, Frame, Ping, Frame]
    assert frames(events) == [first, second, third]
    # the lone CRLF at the end may be the start of a ping: it waits
    assert framer.buffered == 2


def test_message_then_part_of_the_next() -> None:
    first = message(SDP)
    second = message(b"body")
    framer = StreamFramer()
    assert frames(framer.feed(first + second[:50])) == [first]
    assert framer.buffered == 50
    assert frames(framer.feed(second[50:])) == [second]
    assert framer.buffered == 0


def test_body_spanning_feeds() -> None:
    body = b"x" * 1000
    data = message(body)
    head_end = data.index(b"\r\n\r\n") + 4
    framer = StreamFramer()
    assert framer.feed(data[: head_end + 10]) == []
    assert framer.buffered == head_end + 10
    position = head_end + 10
    events: list[FramerEvent] = []
    while position < len(data):
        assert events == []
        events = framer.feed(data[position : position + 100])
        position += 100
    assert frames(events) == [data]
    assert framer.buffered == 0


@pytest.mark.parametrize(
    "header",
    [
        b"Content-Length: 4",
        b"content-length: 4",
        b"CONTENT-LENGTH: 4",
        b"Content-Length:4",
        b"Content-Length  :  4  ",
        b"Content-Length\t:\t4",
        b"l: 4",
        b"L:4",
        b"l : 4",
    ],
)
def test_content_length_spellings(header: bytes) -> None:
    data = headless(header + b"\r\n", b"body")
    framer = StreamFramer()
    assert frames(framer.feed(data + data)) == [data, data]


def test_same_content_length_twice_is_not_a_conflict() -> None:
    data = headless(b"Content-Length: 4\r\nl: 4\r\n", b"body")
    assert frames(StreamFramer().feed(data)) == [data]


def test_content_length_first_after_the_start_line() -> None:
    data = b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 2\r\nVia: SIP/2.0/TCP h\r\n\r\nab"
    assert frames(StreamFramer().feed(data)) == [data]


def test_response_frames() -> None:
    data = b"SIP/2.0 200 OK\r\n" + HEADERS + b"Content-Length: 0\r\n\r\n"
    assert frames(StreamFramer().feed(data * 3)) == [data] * 3


# ============================================================================ CRLF keepalives


def test_ping() -> None:
    framer = StreamFramer()
    events = framer.feed(b"\r\n\r\n")
    assert len(events) == 1
    assert isinstance(events[0], Ping)
    assert repr(events[0]) == "Ping()"
    assert framer.buffered == 0


def test_two_pings() -> None:
    assert [type(event) for event in StreamFramer().feed(b"\r\n\r\n\r\n\r\n")] == [Ping, Ping]


@pytest.mark.parametrize(
    "pieces", [[b"\r\n", b"\r\n"], [b"\r", b"\n\r\n"], [b"\r\n\r", b"\n"], [b"\r", b"\n", b"\r", b"\n"]]
)
def test_half_a_ping_waits(pieces: list[bytes]) -> None:
    framer = StreamFramer()
    for piece in pieces[:-1]:
        assert framer.feed(piece) == []
    assert framer.buffered == sum(len(piece) for piece in pieces[:-1])
    events = framer.feed(pieces[-1])
    assert [type(event) for event in events] == [Ping]
    assert framer.buffered == 0


def test_lone_crlf_is_dropped() -> None:
    data = message()
    framer = StreamFramer()
    assert frames(framer.feed(b"\r\n" + data)) == [data]
    assert framer.buffered == 0


def test_lone_crlf_then_message_in_another_feed() -> None:
    data = message()
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == []
    assert framer.buffered == 2
    events = framer.feed(data)
    assert [type(event) for event in events] == [Frame]
    assert frames(events) == [data]


def test_ping_then_lone_crlf_then_message() -> None:
    data = message()
    events = StreamFramer().feed(b"\r\n\r\n\r\n" + data)
    assert [type(event) for event in events] == [Ping, Frame]
    assert frames(events) == [data]


def test_pong_after_message() -> None:
    data = message()
    framer = StreamFramer()
    events = framer.feed(data + b"\r\n")
    assert frames(events) == [data]
    assert framer.buffered == 2
    assert frames(framer.feed(data)) == [data]
    assert framer.buffered == 0


def test_crlf_cr_garbage_is_not_buffered_forever() -> None:
    framer = StreamFramer(ParserLimits(max_message_size=100))
    events = framer.feed(b"\r\n\r" + b"x" * 300 + b"\r\n\r\n")
    assert events != [] or framer.buffered <= 100


# ============================================================================ framing errors


def test_missing_content_length_is_fatal() -> None:
    data = headless(b"", b"")
    framer = StreamFramer()
    events = framer.feed(data + message())
    error = only_error(events)
    assert error.status == 400
    assert "Content-Length is required" in error.detail
    assert framer.failed is True
    assert framer.buffered == 0
    assert framer.feed(message()) == []
    assert framer.feed(b"\r\n\r\n") == []
    assert framer.buffered == 0


def test_x_content_length_is_not_content_length() -> None:
    data = headless(b"X-Content-Length: 4\r\nXl: 4\r\n", b"body")
    error = only_error(StreamFramer().feed(data))
    assert "required" in error.detail


def test_frames_before_an_error_are_kept() -> None:
    good = message(SDP)
    events = StreamFramer().feed(good + b"\r\n\r\n" + headless(b""))
    assert [type(event) for event in events] == [Frame, Ping, FramingError]
    assert frames(events) == [good]


@pytest.mark.parametrize(
    "extra",
    [
        b"Content-Length: 4\r\nContent-Length: 5\r\n",
        b"Content-Length: 4\r\nl: 5\r\n",
        b"l: 4\r\nCONTENT-LENGTH: 04\r\n",
    ],
)
def test_conflicting_content_length(extra: bytes) -> None:
    framer = StreamFramer()
    error = only_error(framer.feed(headless(extra, b"body!")))
    assert error.status == 400
    assert "conflicting" in error.detail
    assert framer.failed


@pytest.mark.parametrize(
    "value",
    [b"-999", b"five", b"4 4", b"+4", b"0x10", b"", b"12345678901", b"4.0", "\u00b2".encode(), b"\xff"],
)
def test_bad_content_length(value: bytes) -> None:
    framer = StreamFramer()
    error = only_error(framer.feed(message(b"body", length=value)))
    assert error.status == 400
    assert "bad Content-Length" in error.detail
    assert framer.failed


def test_header_section_over_the_size_limit() -> None:
    framer = StreamFramer(ParserLimits(max_message_size=200))
    assert framer.feed(b"INVITE sip:x SIP/2.0\r\n" + b"X-Pad: " + b"p" * 150) == []
    events = framer.feed(b"p" * 100)
    error = only_error(events)
    assert isinstance(error, MessageTooLarge)
    assert error.status == 513
    assert error.message is None
    assert framer.failed
    assert framer.buffered == 0
    assert framer.feed(b"\r\n\r\n") == []


def test_header_section_at_the_size_limit_waits() -> None:
    framer = StreamFramer(ParserLimits(max_message_size=100))
    assert framer.feed(b"x" * 100) == []
    assert framer.failed is False
    assert framer.buffered == 100


def test_body_over_the_size_limit() -> None:
    data = message(b"x" * 500)
    limits = ParserLimits(max_message_size=len(data) - 1)
    framer = StreamFramer(limits)
    error = only_error(framer.feed(data[: data.index(b"\r\n\r\n") + 10]))
    assert isinstance(error, MessageTooLarge)
    assert "exceeds the size limit" in error.detail
    assert isinstance(error.message, Request)
    assert error.message.call_id == "3848276298220188511@atlanta.example.com"
    # exactly at the limit is fine
    assert frames(StreamFramer(ParserLimits(max_message_size=len(data))).feed(data)) == [data]


def test_huge_content_length() -> None:
    error = only_error(StreamFramer().feed(message(length=b"9999999999")))
    assert isinstance(error, MessageTooLarge)


def test_framing_error_carries_a_partial_message_usable_by_make_response() -> None:
    framer = StreamFramer()
    events = framer.feed(headless(b"Content-Length: 1\r\nl: 2\r\n"))
    error = only_error(events)
    assert repr(events[-1]) == f"FramingError(400, {error.detail!r})"
    request = error.message
    assert isinstance(request, Request)
    assert request.method == "INVITE"
    assert "content-length" not in request
    response = make_response(request, error.status, error.reason, to_tag="t1")
    assert response.status == 400
    assert response.reason == "Bad Request"
    assert response.to.tag == "t1"
    assert response.get("call-id") == "3848276298220188511@atlanta.example.com"
    assert response.top_via.host == "client.atlanta.example.com"
    assert response.cseq.method == "INVITE"


def test_framing_error_with_a_bad_start_line_still_has_headers() -> None:
    data = b"garbage\r\n" + HEADERS + b"\r\n"
    error = only_error(StreamFramer().feed(data))
    assert "required" in error.detail
    assert isinstance(error.message, Request)
    assert error.message.call_id == "3848276298220188511@atlanta.example.com"
    assert make_response(error.message, 400, "Bad Request").get("cseq") == "1 INVITE"


def test_failed_framer_ignores_everything() -> None:
    framer = StreamFramer()
    framer.feed(headless(b""))
    assert framer.failed
    for data in (b"", b"\r\n\r\n", message(), b"x" * 100_000):
        assert framer.feed(data) == []
        assert framer.buffered == 0


def test_buffered_and_failed_properties() -> None:
    framer = StreamFramer()
    assert (framer.buffered, framer.failed) == (0, False)
    framer.feed(b"INVITE")
    assert (framer.buffered, framer.failed) == (6, False)
    framer.feed(b" sip:x SIP/2.0\r\n\r\n")
    assert framer.failed
    assert framer.buffered == 0


def test_limits_attribute() -> None:
    limits = ParserLimits(max_message_size=10)
    assert StreamFramer(limits).limits is limits


def test_folded_content_length() -> None:
    data = headless(b"Content-Length:\r\n 4\r\n", b"body")
    assert frames(StreamFramer().feed(data)) == [data]
