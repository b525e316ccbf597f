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
    """Incremental framer: ``feed(bytes)`` returns the events the bytes complete."""

    __slots__ = ("_buffer", "_failed", "_scanned", "limits")

    def __init__(self, limits: ParserLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._buffer = bytearray()
        self._scanned = 0  # how far the header terminator search has looked already
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
        buffer += data
        events: list[FramerEvent] = []
        while buffer:
            if buffer[:2] == _CRLF:
                if buffer[:4] == _PING:
                    events.append(Ping())
                    del buffer[:4]
                elif len(buffer) < len(_PING) and _PING.startswith(buffer):
                    break  # maybe the first part of a ping: wait for more
                else:
                    del buffer[:2]  # a lone CRLF: a pong, or noise before a start line (§7.5)
                self._scanned = 0
                continue
            end = buffer.find(_PING, max(self._scanned - 3, 0))
            if end < 0:
                self._scanned = len(buffer)
                if len(buffer) > self.limits.max_message_size:
                    return self._fail(
                        events, MessageTooLarge("header section exceeds the message size limit")
                    )
                break
            head = bytes(buffer[: end + 4])
            lengths = {match.group(1).strip(b" \t\r\n") for match in _LENGTH_RE.finditer(head)}
            if len(lengths) != 1:
                detail = (
                    "Content-Length is required on stream transports"
                    if not lengths
                    else ("conflicting Content-Length headers")
                )
                return self._fail(events, SipParseError(detail), head)
            length_text = lengths.pop()
            if not length_text.isdigit() or len(length_text) > 10:  # noqa: PLR2004 - digits of 2**32
                return self._fail(events, SipParseError(f"bad Content-Length {length_text[:20]!r}"), head)
            total = end + 4 + int(length_text)
            if total > self.limits.max_message_size:
                return self._fail(
                    events, MessageTooLarge(f"message of {total} bytes exceeds the size limit"), head
                )
            if len(buffer) < total:
                self._scanned = end  # the terminator is known; only the body is awaited
                break
            events.append(Frame(bytes(buffer[:total])))
            del buffer[:total]
            self._scanned = 0
        return events

    def _fail(self, events: list[FramerEvent], error: SipParseError, head: bytes = b"") -> list[FramerEvent]:
        self._failed = True
        self._buffer.clear()
        if head and error.message is None:
            error.message = _partial(head)
        events.append(FramingError(error))
        return events


def _partial(head: bytes) -> Request | Response | None:
    """Whatever can be read of a header section whose framing failed."""
    try:
        return parse_message(_strip_length(head))
    except SipParseError as error:
        return error.message


def _strip_length(head: bytes) -> bytes:
    # Drop Content-Length lines so that the partial parse does not fail on the missing body.
    return _LENGTH_RE.sub(b"", head)
