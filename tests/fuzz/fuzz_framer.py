"""Fuzz harness: the stream framer (sipha.sip.framer) cutting a TCP/TLS byte stream into messages.

The input is a byte stream; its first byte seeds how it is cut into the reads a
connection would deliver (1 to 64 bytes, or the rest).  What must hold:

* :meth:`StreamFramer.feed` raises nothing, whatever the bytes and however they are cut
  (with the default limits, and small ones that small inputs exceed);
  a framing error is reported once, as a :class:`FramingError` event, and the framer
  refuses further input;
* the events do not depend on how the stream was cut: the same frames and pings in
  the same order as when the whole stream arrives in one read, and a framing error in
  both or in neither (RFC 3261 §18.3: message boundaries come from the bytes alone);
* every frame is the next bytes of the stream after pings and lone CRLFs, and parses
  (``stream=True``) or raises :class:`SipParseError`, never anything else;
* a framing error's partial message can be answered (§8.2.6.2).

Run: ``python -m tests.fuzz.fuzz_framer [libFuzzer options] [corpus dirs]`` (tests/fuzz/README.md).
"""

from __future__ import annotations

import random

from sipha.sip import (
    DEFAULT_LIMITS,
    Frame,
    FramerEvent,
    FramingError,
    ParserLimits,
    Ping,
    SipParseError,
    StreamFramer,
    parse_message,
)
from tests.fuzz.fuzz_parser import SMALL_LIMITS, Finding, answer

READ_SIZES = 64
"""Reads are cut 1 to this many bytes long (a lower seed byte gives shorter reads)."""


def fuzz_one_input(data: bytes) -> None:
    """Frame ``data[1:]`` in reads cut as ``data[0]`` says, and in one read; compare."""
    if not data:
        return
    cut, stream = data[0], data[1:]
    for limits in (DEFAULT_LIMITS, SMALL_LIMITS):
        whole = frame(stream, [len(stream)], limits)
        pieces = frame(stream, read_sizes(cut, len(stream)), limits)
        if summary(whole) != summary(pieces):
            raise Finding(f"framing depends on the reads: {summary(whole)} != {summary(pieces)}")
        check_frames(stream, whole, limits)


def read_sizes(cut: int, total: int) -> list[int]:
    """Read sizes summing to ``total``, drawn from ``cut`` (0 and 255: a single read)."""
    if cut in (0, 255):
        return [total]
    rng = random.Random(cut)
    longest = 1 + cut % READ_SIZES
    sizes: list[int] = []
    while total > 0:
        size = min(rng.randint(1, longest), total)
        sizes.append(size)
        total -= size
    return sizes


def frame(stream: bytes, sizes: list[int], limits: ParserLimits) -> list[FramerEvent]:
    """The events of one framer fed ``stream`` in reads of ``sizes``."""
    framer = StreamFramer(limits)
    events: list[FramerEvent] = []
    offset = 0
    for size in sizes:
        got = framer.feed(stream[offset : offset + size])
        offset += size
        if events and isinstance(events[-1], FramingError) and got:
            raise Finding(f"events after a framing error: {got}")
        events += got
        failures = [event for event in got if isinstance(event, FramingError)]
        if failures and (len(failures) > 1 or got[-1] is not failures[0] or not framer.failed):
            raise Finding(f"a framing error must be the last event and fail the framer: {got}")
    return events


def summary(events: list[FramerEvent]) -> list[object]:
    """What must not depend on the reads: frames' bytes, pings, whether framing failed.

    The error's detail may: a header section longer than the size limit is refused
    before its end arrives when it comes in pieces, after when it comes whole.
    """
    return [event.data if isinstance(event, Frame) else type(event).__name__ for event in events]


def check_frames(stream: bytes, events: list[FramerEvent], limits: ParserLimits) -> None:
    """Frames are consecutive pieces of the stream, between pings and CRLFs; each parses or is refused."""
    offset = 0
    for event in events:
        if isinstance(event, Ping):
            continue
        if isinstance(event, FramingError):
            assert isinstance(event.error, SipParseError)
            answer(event.error)
            continue
        while stream.startswith(b"\r\n", offset) and not stream.startswith(event.data, offset):
            offset += 2  # CRLFs before a start line (pings or lone CRLFs, RFC 5626 §3.5.1, RFC 3261 §7.5)
        if not stream.startswith(event.data, offset):
            raise Finding(f"frame {event.data[:60]!r} is not the stream's next bytes at {offset}")
        offset += len(event.data)
        try:
            parse_message(event.data, limits, stream=True).validate()
        except SipParseError as error:
            answer(error)


if __name__ == "__main__":
    from tests.fuzz.runner import main

    main(fuzz_one_input)
