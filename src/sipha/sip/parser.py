"""Bytes to messages: RFC 3261 §7 message format, framed as §18.3 says for datagrams.

The start line is checked strictly (§7.1, §7.2, §25.1); header lines are read as
liberally as §7.3.1 asks: folded continuation lines, compact names (§7.3.3), any
case, any LWS around the colon.  Each field keeps its exact text, for forwarding
byte for byte (:mod:`sipha.sip.message`).  A stream is cut into messages first by
:class:`sipha.sip.framer.StreamFramer`.  Bounds on what hostile input may cost:
:class:`ParserLimits`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from sipha.sip.errors import MessageTooLarge, SipParseError, VersionNotSupported
from sipha.sip.fields import Field
from sipha.sip.grammar import TOKEN_RE, WS, parse_uint
from sipha.sip.headers import KNOWN_METHODS
from sipha.sip.message import SIP_VERSION, Request, Response, canonical_name, known_names

_VERSION_RE: Final = re.compile(r"SIP/[0-9]+\.[0-9]+", re.IGNORECASE)
_FOLD_RE: Final = re.compile(r"[ \t]*\r\n[ \t]+")
_STATUS_RE: Final = re.compile(r"[1-6][0-9][0-9]")
_LENGTH_DIGITS: Final = 6  # up to 99,999: below any message size limit, parsed without checks


@dataclass(frozen=True, slots=True)
class ParserLimits:
    """Bounds on what one message may cost (hostile input gets bounded memory and time)."""

    max_message_size: int = 65535
    """Largest message, start line to end of body, in bytes (UDP's own ceiling by default)."""
    max_headers: int = 256
    """Most header fields in one message (after unfolding)."""
    max_header_line: int = 8192
    """Longest single header field, folded continuation lines included, in characters
    (after UTF-8 decoding: bytes for ASCII text)."""


DEFAULT_LIMITS: Final = ParserLimits()


def parse_message(
    data: bytes, limits: ParserLimits = DEFAULT_LIMITS, *, stream: bool = False
) -> Request | Response:
    """Parse one SIP message (a UDP datagram, or one frame cut by :class:`StreamFramer`).

    Datagram rules (RFC 3261 §18.3): bytes beyond Content-Length are discarded;
    a body shorter than Content-Length is an error; with no Content-Length the
    body is the rest of the datagram.  ``stream=True`` makes Content-Length
    mandatory, as stream transports need it to frame messages.

    Raises :class:`SipParseError`; its ``message`` holds what could be parsed
    when the start line or a header line was bad, so a 400 can still be sent.
    """
    if len(data) > limits.max_message_size:
        raise MessageTooLarge(f"message of {len(data)} bytes exceeds {limits.max_message_size}")
    start = 0
    if data[:2] == b"\r\n":
        # RFC 3261 §7.5: CRLFs before the start line are ignored (stream keepalives).
        start = len(data) - len(data.lstrip(b"\r\n"))
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        unterminated = SipParseError("no empty line ends the header section")
        if data.endswith(b"\r\n") and len(data) - start > 2:  # noqa: PLR2004 - more than the CRLF
            # Read the header lines anyway, so that a 400 can still be addressed.
            try:
                unterminated.message = parse_message(data[start:] + b"\r\n", limits)
            except SipParseError as inner:
                unterminated.message = inner.message
        raise unterminated
    text = data[start:end].decode("utf-8", "surrogateescape")
    lines = text.split("\r\n")
    start_line = lines[0]
    error: SipParseError | None = None
    fields: list[Field] | None = None
    crlfs = len(lines) - 1
    # No bare CR or LF (every CR and LF is in a CRLF: none is left inside a line, checked
    # line by line in _fast_fields, where a look for one character is a memchr; two counts
    # over the whole text cost twice as much); folded lines fall to the slow path by
    # themselves, as no cached header name starts with white space.
    if (
        crlfs
        and len(text) <= limits.max_header_line
        and "\x00" not in text  # a NUL: the slow path tells a quoted-pair from a bare one
    ):
        fields = _fast_fields(lines)
    if fields is None:
        fields, error = _slow_fields(text, limits)
    elif len(fields) > limits.max_headers:
        raise MessageTooLarge(f"more than {limits.max_headers} header fields")
    content_length: str | None = None
    for field in fields:
        if field[0] == "content-length":
            if content_length is not None and content_length != field[2]:
                error = error or SipParseError("conflicting Content-Length headers")
            content_length = field[2]

    started = _start_line(start_line, fields)
    if isinstance(started, SipParseError):
        error = error or started
        message = started.message
    else:
        message = started
    body = data[end + 4 :]
    if content_length is not None and error is None:
        try:
            if content_length.isascii() and content_length.isdigit() and len(content_length) < _LENGTH_DIGITS:
                length = int(content_length)
            else:
                length = parse_uint(content_length, what="Content-Length", maximum=limits.max_message_size)
        except SipParseError as bad_length:
            error = bad_length
        else:
            if length > len(body):
                error = SipParseError(f"Content-Length {length} exceeds the {len(body)} bytes of body")
            elif length < len(body):
                body = body[:length]  # §18.3: bytes beyond the body MUST be discarded
    elif content_length is None and stream and error is None:
        error = SipParseError("Content-Length is required on stream transports")
    if message is None:  # pragma: no cover - _start_line always builds a partial message
        raise error or SipParseError("bad start line")
    message.body = body
    if error is not None:
        raise error.with_message(message)
    if start == 0 and len(body) == len(data) - end - 4:
        message._raw = data  # noqa: SLF001 - the parser owns the message it builds
    return message


def _fast_fields(lines: list[str]) -> list[Field] | None:
    """Split well-formed, unfolded header lines whose names were seen before.

    Returns None when anything is unusual (a new header name, a line without a
    colon, a continuation line: no cached name starts with white space; a bare CR
    or LF in any line, the start line included): the slow path then parses the
    lines one by one and names the problem.
    """
    cache = known_names()
    fields: list[Field] = []
    if "\r" in lines[0] or "\n" in lines[0]:
        return None
    for index in range(1, len(lines)):
        line = lines[index]
        if "\r" in line or "\n" in line:
            return None  # a bare CR or LF: the slow path names it
        colon = line.find(":")
        if colon <= 0:
            return None
        name = cache.get(line[:colon])
        if name is None:
            return None
        fields.append((name, line, line[colon + 1 :].strip(WS)))
    return fields


def _slow_fields(text: str, limits: ParserLimits) -> tuple[list[Field], SipParseError | None]:
    """Header lines one by one: folding, limits, and the first bad line reported (not raised)."""
    lines = text.split("\r\n")
    if "\r\n " in text or "\r\n\t" in text:
        lines = _unfold(lines)
    if len(lines) > limits.max_headers + 1:
        raise MessageTooLarge(f"more than {limits.max_headers} header fields")
    error: SipParseError | None = None
    fields: list[Field] = []
    for line in lines[1:]:
        if len(line) > limits.max_header_line:
            raise MessageTooLarge(f"a header field is longer than {limits.max_header_line} bytes")
        if "\n" in line.replace("\r\n", "") or "\r" in line.replace("\r\n", ""):
            # A bare CR or LF: a next hop could read it as a line break (header injection).
            error = error or SipParseError(f"bare CR or LF in header line {line[:40]!r}")
            continue
        if "\x00" in line and _bare_nul(line):
            # §25.1: no character class of a header value admits %x00 (TEXT-UTF8char is
            # %x21-7E / UTF8-NONASCII); only a quoted-pair may carry it (RFC 4475 §3.1.1.2).
            # Forwarded, a NUL cuts the header short in a next hop written in C.
            error = error or SipParseError(f"bare NUL octet in header line {line[:40]!r}")
            continue
        colon = line.find(":")
        if colon <= 0:
            error = error or SipParseError(f"header line without a name and colon: {line[:40]!r}")
            continue
        try:
            name = canonical_name(line[:colon])
        except SipParseError as bad_line:
            error = error or bad_line
            continue
        if "\r\n" in line:
            value = _FOLD_RE.sub(" ", line[colon + 1 :]).strip(WS)
        else:
            value = line[colon + 1 :].strip(WS)
        fields.append((name, line, value))
    return fields, error


def _bare_nul(line: str) -> bool:
    """Whether ``line`` holds a NUL that is not the second octet of a quoted-pair (a backslash, NUL)."""
    index = line.find("\x00")
    while index >= 0:
        backslashes = 0
        while index - backslashes > 0 and line[index - backslashes - 1] == "\\":
            backslashes += 1
        if backslashes % 2 == 0:  # none, or escaped backslashes only: the NUL stands alone
            return True
        index = line.find("\x00", index + 1)
    return False


def _unfold(lines: list[str]) -> list[str]:
    """Join continuation lines (starting with SP or HTAB) to the field they continue (§7.3.1)."""
    merged: list[str] = [lines[0]]
    for index, line in enumerate(lines[1:]):
        if line[:1] in (" ", "\t"):
            if index == 0:
                # A start line cannot be continued; keep it as a (bad) header line.
                merged.append(line)
            else:
                merged[-1] += "\r\n" + line
        else:
            merged.append(line)
    return merged


def _start_line(line: str, fields: list[Field]) -> Request | Response | SipParseError:
    """Build the message of a start line, or an error carrying a partial message."""
    if line[:4].upper() == "SIP/":
        parts = line.split(" ", 2)
        version = parts[0]
        code = parts[1] if len(parts) > 1 else ""
        reason = parts[2] if len(parts) > 2 else ""  # noqa: PLR2004 - the optional reason phrase
        response = Response(0, reason, fields, start_line=line)
        if version.upper() != SIP_VERSION:
            return SipParseError(f"unsupported SIP version {version[:20]!r}", message=response)
        if not _STATUS_RE.fullmatch(code):
            return SipParseError(f"bad status code {code[:20]!r}", message=response)
        response.status = int(code)
        return response
    parts = line.split(" ")
    if len(parts) == 3 and parts[2] == SIP_VERSION and parts[0] in KNOWN_METHODS:  # noqa: PLR2004
        uri = parts[1]
        if uri and uri[0] != "<" and "\t" not in uri:
            return Request(parts[0], uri, fields, start_line=line)
    method = parts[0]
    request = Request(method, parts[1] if len(parts) > 1 else "", fields, start_line=line)
    if len(parts) != 3:  # noqa: PLR2004 - Method SP Request-URI SP SIP-Version
        return SipParseError(
            f"request line is not 'Method SP URI SP Version': {line[:80]!r}", message=request
        )
    if method not in KNOWN_METHODS and not TOKEN_RE.fullmatch(method):
        return SipParseError(f"bad method {method[:40]!r}", message=request)
    uri, version = parts[1], parts[2]
    if version != SIP_VERSION and version.upper() != SIP_VERSION:
        if _VERSION_RE.fullmatch(version):
            return VersionNotSupported(f"SIP version {version!r} is not supported", message=request)
        return SipParseError(f"bad SIP version {version[:20]!r}", message=request)
    if not uri or uri[0] == "<" or "\t" in uri:
        return SipParseError(f"bad Request-URI {uri[:60]!r}", message=request)
    return request
