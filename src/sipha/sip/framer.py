"""Cut a TCP/TLS byte stream into SIP messages (RFC 3261 §18.3, RFC 5626 §3.5.1).

On a stream, the end of a message is the end of its header section plus
Content-Length bytes of body, so Content-Length is mandatory.  Between
messages a peer may send CRLFs: a double CRLF is a keepalive *ping* that
wants a single CRLF *pong* back (RFC 5626 §3.5.1), a lone CRLF is a pong or
noise and is dropped (RFC 3261 §7.5).

A framing error leaves the stream without a known message boundary, so it is
fatal: the framer reports it once and then refuses further input; the
transport answers what it can and closes the connection.
"""

from __future__ import annotations

import re
from typing import Final

from sipha.sip.errors import MessageTooLarge, SipParseError
from sipha.sip.message import Request, Response
from sipha.sip.parser import DEFAULT_LIMITS, ParserLimits, parse_message

# Content-Length or its compact form "l", at the start of a header line (§7.3.3).
# The value may be folded onto continuation lines (RFC 3261 §7.3.1).
_LENGTH_RE: Final = re.compile(rb"\r\n(?:content-length|l)[ \t]*:((?:[^\r\n]|\r\n[ \t])*)", re.IGNORECASE)
_CRLF: Final = b"\r\n"
_PING: Final = b"\r\n\r\n"
# Where _LENGTH_RE can match in the lowered header section: a line that starts with a name.
_LENGTH_NAMES: Final = (b"\r\ncontent-length", b"\r\nl")
_SPACE: Final = 0x20
_TAB: Final = 0x09
_CR: Final = 0x0D
_LF: Final = 0x0A
_COLON: Final = 0x3A


class Frame:
    """One complete message's bytes, ready for :func:`parse_message` with ``stream=True``."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"Frame({len(self.data)} bytes)"


class Ping:
    """A CRLF CRLF keepalive: answer with a single CRLF (RFC 5626 §3.5.1)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Ping()"


class FramingError:
    """The stream cannot be framed any more; ``error.message`` holds what was readable."""

    __slots__ = ("error",)

    def __init__(self, error: SipParseError) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"FramingError({self.error.status}, {self.error.detail!r})"


FramerEvent = Frame | Ping | FramingError


class StreamFramer:
    """Incremental framer: ``feed(bytes)`` returns the events the bytes complete.

    A segment usually holds whole messages (a peer writes one message at a time): then the
    frames are cut from the segment itself, without copying it through a buffer; the
    segment itself is the frame when it is exactly one message.  Bytes of an incomplete
    message wait in a buffer, and are copied out once, when they complete something.
    """

    __slots__ = ("_buffer", "_expected", "_failed", "_scanned", "limits")

    def __init__(self, limits: ParserLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._buffer = bytearray()
        self._scanned = 0  # how far the header terminator search has looked already
        self._expected = 0  # the size of the message in the buffer once its header section is in; 0: not yet
        self._failed = False

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete message."""
        return len(self._buffer)

    @property
    def failed(self) -> bool:
        """True once a framing error was reported; the connection should be closed."""
        return self._failed

    def feed(self, data: bytes) -> list[FramerEvent]:
        """Add received bytes; return the messages, pings and errors they complete."""
        if self._failed:
            return []
        buffer = self._buffer
        if not buffer:
            return self._frame(data)
        buffer += data
        if not buffer.startswith(_CRLF) and len(buffer) <= self.limits.max_message_size:
            # Part of a message waits: nothing completes until its body, or its header section, is in.
            if self._expected:
                if len(buffer) < self._expected:
                    return []
            elif buffer.find(_PING, max(self._scanned - 3, 0)) < 0:
                self._scanned = len(buffer)
                return []
        stream = bytes(buffer)
        buffer.clear()
        return self._frame(stream)

    def _frame(self, stream: bytes) -> list[FramerEvent]:
        """Cut ``stream`` (what was buffered, then what arrived); what remains goes to the buffer."""
        events: list[FramerEvent] = []
        size = len(stream)
        start = 0
        scanned = self._scanned  # from start
        self._expected = 0
        while start < size:
            if stream.startswith(_CRLF, start):
                if stream.startswith(_PING, start):
                    events.append(Ping())
                    start += 4
                elif size - start < len(_PING) and _PING.startswith(stream[start:]):
                    break  # maybe the first part of a ping: wait for more
                else:
                    start += 2  # a lone CRLF: a pong, or noise before a start line (§7.5)
                scanned = 0
                continue
            end = stream.find(_PING, start + max(scanned - 3, 0))
            if end < 0:
                scanned = size - start
                if scanned > self.limits.max_message_size:
                    return self._fail(
                        events, MessageTooLarge("header section exceeds the message size limit")
                    )
                break
            head_end = end + 4
            try:
                length = _content_length(stream, start, head_end)
            except SipParseError as error:
                return self._fail(events, error, stream[start:head_end])
            total = head_end + length
            if total - start > self.limits.max_message_size:
                return self._fail(
                    events,
                    MessageTooLarge(f"message of {total - start} bytes exceeds the size limit"),
                    stream[start:head_end],
                )
            if size < total:
                scanned = end - start  # the terminator is known; only the body is awaited
                self._expected = total - start
                break
            events.append(Frame(stream if start == 0 and total == size else stream[start:total]))
            start = total
            scanned = 0
        self._scanned = scanned
        if start < size:
            self._buffer += memoryview(stream)[start:]
        return events

    def _fail(self, events: list[FramerEvent], error: SipParseError, head: bytes = b"") -> list[FramerEvent]:
        self._failed = True
        self._buffer.clear()
        if head and error.message is None:
            error.message = _partial(head)
        events.append(FramingError(error))
        return events


def _content_length(stream: bytes, start: int, head_end: int) -> int:
    """The Content-Length of the header section ``stream[start:head_end]``; raises SipParseError.

    Header names are case-insensitive (RFC 3261 §7.3.1): the lowered section is searched for
    the two spellings (long and compact, §7.3.3), and each line found read where it stands,
    as :data:`_LENGTH_RE` reads it; a scan of the whole section by that case-insensitive
    expression costs several times as much.
    """
    head = stream[start:head_end]
    lowered = head.lower()
    value: bytes | None = None
    for name in _LENGTH_NAMES:
        at = lowered.find(name)
        while at >= 0:
            found = _length_at(head, at, len(name))
            if found is not None:
                if value is None:
                    value = found
                elif found != value:
                    raise SipParseError("conflicting Content-Length headers")
            at = lowered.find(name, at + 2)
    if value is None:
        raise SipParseError("Content-Length is required on stream transports")
    if not value.isdigit() or len(value) > 10:  # noqa: PLR2004 - digits of 2**32
        raise SipParseError(f"bad Content-Length {value[:20]!r}")
    return int(value)


def _length_at(head: bytes, at: int, name_length: int) -> bytes | None:
    """The value, stripped, of the header line at ``at``: CRLF, then a Content-Length name.

    None when no colon follows the name (another header whose name begins so: Location).
    """
    size = len(head)
    position = at + name_length
    while position < size and (head[position] == _SPACE or head[position] == _TAB):
        position += 1
    if position >= size or head[position] != _COLON:
        return None
    stop = position + 1
    while stop < size and head[stop] != _CR and head[stop] != _LF:
        stop += 1
    if stop + 2 < size and head[stop + 1] == _LF and (head[stop + 2] == _SPACE or head[stop + 2] == _TAB):
        # Folded onto continuation lines (RFC 3261 §7.3.1): rare, the expression reads it.
        match = _LENGTH_RE.match(head, at)
        return None if match is None else match.group(1).strip(b" \t\r\n")
    return head[position + 1 : stop].strip(b" \t\r\n")


def _partial(head: bytes) -> Request | Response | None:
    """Whatever can be read of a header section whose framing failed."""
    try:
        return parse_message(_strip_length(head))
    except SipParseError as error:
        return error.message


def _strip_length(head: bytes) -> bytes:
    # Drop Content-Length lines so that the partial parse does not fail on the missing body.
    return _LENGTH_RE.sub(b"", head)
