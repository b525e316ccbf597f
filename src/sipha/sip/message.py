"""SIP messages: header fields, splice-on-write edits, output, responses (RFC 3261 §7, §8.2.6, §16.6).

A message is its start line, a list of header *fields* and a body.  Each field
keeps the exact text it arrived with, so that forwarding re-sends untouched
headers byte for byte (folding, compact names and odd spacing included); only
the fields a proxy changes (Via, Record-Route, Route, Max-Forwards, the
Request-URI) are rendered anew.  Typed values (``top_via``, ``cseq``, ...) are
parsed on first access and kept until the header is changed
(:class:`sipha.sip.fields.HeaderFields`).

Bytes become messages in :mod:`sipha.sip.parser`, which builds on this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, cast

from sipha.sip.errors import SipParseError
from sipha.sip.fields import Field, HeaderFields
from sipha.sip.grammar import TOKEN_RE, WS, split_commas
from sipha.sip.headers import (
    COMPACT_FORMS,
    KNOWN_METHODS,
    NameAddr,
    Via,
    display_name,
    parse_name_addr,
    parse_via,
)
from sipha.sip.uri import SipUri, Uri, parse_uri

SIP_VERSION: Final = "SIP/2.0"
# A cache of raw header names (as they appear before the colon) to canonical names.
_NAME_CACHE: dict[str, str] = {}
_NAME_CACHE_MAX: Final = 4096
_NAME_LENGTH_CACHED: Final = 64


def canonical_name(raw_name: str) -> str:
    """The lower-case full name of a header, compact forms expanded (RFC 3261 §7.3.3)."""
    cached = _NAME_CACHE.get(raw_name)
    if cached is not None:
        return cached
    stripped = raw_name.rstrip(WS)  # HCOLON = *( SP / HTAB ) ":" SWS
    if not TOKEN_RE.fullmatch(stripped):
        raise SipParseError(f"bad header name {raw_name[:40]!r}")
    lower = stripped.lower()
    name = COMPACT_FORMS.get(lower, lower)
    if len(raw_name) <= _NAME_LENGTH_CACHED and len(_NAME_CACHE) < _NAME_CACHE_MAX:
        _NAME_CACHE[raw_name] = name
    return name


def known_names() -> dict[str, str]:
    """The raw header names :func:`canonical_name` has seen, to their names (read-only use).

    The parser's fast path looks header names up here directly, one probe a line.
    """
    return _NAME_CACHE


def make_field(name: str, value: str) -> Field:
    """A new header field, spelled conventionally."""
    lower = canonical_name(name)
    return (lower, f"{display_name(lower)}: {value}", value)


class Message(HeaderFields):
    """What requests and responses share: fields and typed values (:class:`HeaderFields`), edits, output."""

    __slots__ = ("_raw", "body", "start_line")

    # Set by the subclasses' constructors (one call less for every message).
    start_line: str
    body: bytes
    _raw: bytes | None
    """The exact bytes received, valid while nothing has been changed."""

    # ------------------------------------------------------------------ generic access

    def get(self, name: str) -> str | None:
        """The value of the first ``name`` header (any spelling or compact form), or None."""
        return self._first(canonical_name(name))

    def get_all(self, name: str) -> list[str]:
        """The values of every ``name`` header line, in order."""
        name = canonical_name(name)
        return [field[2] for field in self._fields if field[0] == name]

    def get_elements(self, name: str) -> list[str]:
        """The comma-separated elements of every ``name`` header line (list headers, §7.3.1)."""
        elements: list[str] = []
        for value in self.get_all(name):
            elements.extend(split_commas(value))
        return elements

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            return self.get(name) is not None
        except SipParseError:  # not a header name at all
            return False

    def validate(self) -> None:
        """Parse every header a proxy relies on; raise :class:`SipParseError` if one is bad.

        Checks presence of the mandatory headers (RFC 3261 §8.1.1), that single-valued
        headers appear once, the grammar of Via, From, To, Call-ID, CSeq, Max-Forwards,
        Contact, Route, Record-Route, Require and Proxy-Require, and every URI in them.
        """
        try:
            self._validate()
        except SipParseError as error:
            # Every message is a Request or a Response (Message is their common part only).
            raise error.with_message(cast("Request | Response", self)) from None

    # ------------------------------------------------------------------ edits

    def _changed(self, name: str) -> None:
        self._raw = None
        index = self._index
        if index is not None:
            # Only the first value of ``name`` can have changed: the rest of the index holds.
            for field in self._fields:
                if field[0] == name:
                    index[name] = field[2]
                    break
            else:
                index.pop(name, None)
        self._forget(name)

    def add_header(self, name: str, value: str, *, first: bool = False) -> None:
        """Add a header field, at the top of the header section or at its end."""
        field = make_field(name, value)
        if first:
            self._fields.insert(0, field)
        else:
            self._fields.append(field)
        self._changed(field[0])

    def remove_header(self, name: str) -> int:
        """Remove every ``name`` field; return how many there were."""
        name = canonical_name(name)
        kept = [field for field in self._fields if field[0] != name]
        removed = len(self._fields) - len(kept)
        if removed:
            self._fields = kept
            self._changed(name)
        return removed

    def set_header(self, name: str, value: str) -> None:
        """Replace every ``name`` field by one (in the place of the first, if any)."""
        field = make_field(name, value)
        for index, existing in enumerate(self._fields):
            if existing[0] == field[0]:
                self._fields[index] = field
                self._fields[index + 1 :] = [f for f in self._fields[index + 1 :] if f[0] != field[0]]
                break
        else:
            self._fields.append(field)
        self._changed(field[0])

    def _pop_first_element(self, name: str) -> str | None:
        """Remove the first element of a list header, keeping the others' text."""
        for index, field in enumerate(self._fields):
            if field[0] == name:
                value = field[2]
                if "," not in value:
                    del self._fields[index]
                    self._changed(name)
                    return value
                elements = split_commas(value)
                if len(elements) == 1:
                    del self._fields[index]
                else:
                    self._fields[index] = make_field(name, ", ".join(elements[1:]))
                self._changed(name)
                return elements[0]
        return None

    def push_via(self, value: str, parsed: Via | None = None) -> None:
        """Add a via-parm on top (§16.6 step 8); ``parsed``: its value, if known (:func:`branch_via`)."""
        self._fields.insert(0, ("via", "Via: " + value, value))
        self._raw = None
        self._vias = None
        self._top_via = parsed  # None: read anew on next use
        if self._index is not None:
            self._index["via"] = value  # the new first Via; the rest of the index holds

    def replace_top_via(self, value: str) -> None:
        """Replace the first via-parm (§18.2.1 ``received``/``rport``), keeping the others' text."""
        for index, field in enumerate(self._fields):
            if field[0] == "via":
                rest = split_commas(field[2])[1:] if "," in field[2] else []
                self._fields[index] = make_field("via", ", ".join([value, *rest]))
                self._changed("via")
                return
        raise SipParseError("missing Via header")

    def pop_via(self) -> Via | None:
        """Remove the top via-parm (§16.7 step 3), returning it parsed."""
        element = self._pop_first_element("via")
        return None if element is None else parse_via(element)

    def pop_route(self) -> NameAddr | None:
        """Remove the first Route element (§16.4, §16.12), returning it parsed."""
        element = self._pop_first_element("route")
        return None if element is None else parse_name_addr(element, what="Route")

    def push_record_route(self, value: str) -> None:
        """Add a Record-Route element on top (§16.6 step 4)."""
        field = ("record-route", "Record-Route: " + value, value)
        after_vias = 0
        for index, existing in enumerate(self._fields):
            if existing[0] == "record-route":
                self._fields.insert(index, field)
                break
            if existing[0] == "via":
                after_vias = index + 1
        else:
            # No Record-Route yet: below the Vias, which stay together.
            self._fields.insert(after_vias, field)
        self._changed("record-route")

    def push_route(self, value: str) -> None:
        """Add a Route element on top (§16.6 step 7, pre-loaded routes)."""
        field = ("route", "Route: " + value, value)
        for index, existing in enumerate(self._fields):
            if existing[0] == "route":
                self._fields.insert(index, field)
                break
        else:
            self._fields.append(field)
        self._changed("route")

    def set_max_forwards(self, value: int) -> None:
        """Set Max-Forwards, keeping its place (§16.6 step 3)."""
        text = str(value)
        for index, field in enumerate(self._fields):
            if field[0] == "max-forwards":
                self._fields[index] = ("max-forwards", "Max-Forwards: " + text, text)
                break
        else:
            self._fields.append(("max-forwards", "Max-Forwards: " + text, text))
        self._max_forwards = value
        self._raw = None
        if self._index is not None:
            self._index["max-forwards"] = text

    def set_body(self, body: bytes, content_type: str | None = None) -> None:
        """Replace the body and its Content-Length (and Content-Type if given)."""
        self.body = body
        self.set_header("content-length", str(len(body)))
        if content_type is not None:
            self.set_header("content-type", content_type)

    # ------------------------------------------------------------------ output

    def to_bytes(self) -> bytes:
        """The message on the wire.  Unchanged messages are their received bytes.

        A Content-Length is added when absent, as stream transports need one
        (RFC 3261 §18.3, §20.14).
        """
        if self._raw is not None:
            return self._raw
        lines = [self.start_line]
        lines += [field[1] for field in self._fields]
        if self._first("content-length") is None:
            lines.append(f"Content-Length: {len(self.body)}")
        lines.append("\r\n")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + self.body

    def __bytes__(self) -> bytes:
        return self.to_bytes()

    def wire(self) -> bytes:
        """:meth:`to_bytes`, kept: later calls return the same bytes at no cost, until an edit.

        A transaction that sent a final response keeps only these (it re-sends them, RFC 3261
        §17.2.1, §17.2.2); the driver's serialisation of the same message then costs nothing.
        """
        data = self.to_bytes()
        self._raw = data
        return data

    def copy(self) -> Message:
        """An independent copy (the proxy copies a request before changing it, §16.6 step 1)."""
        raise NotImplementedError  # pragma: no cover - each subclass implements it


class Request(Message):
    """A SIP request (RFC 3261 §7.1)."""

    __slots__ = ("_uri", "method", "uri")

    def __init__(
        self,
        method: str,
        uri: str,
        fields: list[Field],
        body: bytes = b"",
        *,
        raw: bytes | None = None,
        start_line: str | None = None,
    ) -> None:
        # The fields of HeaderFields and Message, set here: this runs for every request received.
        HeaderFields.__init__(self, fields)
        self.start_line = start_line or f"{method} {uri} {SIP_VERSION}"
        self.body = body
        self._raw = raw
        self.method = method
        self.uri = uri
        self._uri: Uri | None = None

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"

    @classmethod
    def build(cls, method: str, uri: str, headers: Iterable[tuple[str, str]], body: bytes = b"") -> Request:
        """A new request from (name, value) pairs; Content-Length is added when rendered."""
        return cls(method, uri, [make_field(name, value) for name, value in headers], body)

    @property
    def parsed_uri(self) -> Uri:
        """The Request-URI, parsed on first access."""
        uri = self._uri
        if uri is None:
            uri = self._uri = parse_uri(self.uri)
        return uri

    def set_uri(self, uri: str) -> None:
        """Rewrite the Request-URI (§16.5, §16.6 step 2)."""
        self.uri = uri
        self._uri = None
        self.start_line = f"{self.method} {uri} {SIP_VERSION}"
        self._raw = None

    def _validate(self) -> None:
        uri = self.parsed_uri
        if isinstance(uri, SipUri) and uri.headers:
            # RFC 3261 §19.1.1 Table 1: headers are not allowed in a Request-URI.
            raise SipParseError("headers in the Request-URI")
        super()._validate()
        _ = self.record_routes, self.contacts
        if self.cseq.method != self.method:
            # RFC 3261 §8.1.1.5: the CSeq method MUST match the request's.  For a method the
            # proxy does not know, RFC 4475 §3.1.2.18 prefers 501 at proxies.
            raise SipParseError(
                f"CSeq method {self.cseq.method!r} does not match {self.method!r}",
                status=400 if self.method in KNOWN_METHODS else 501,
            )

    def copy(self) -> Request:
        """An independent copy with the same fields (§16.6 step 1)."""
        clone = Request(
            self.method, self.uri, list(self._fields), self.body, raw=self._raw, start_line=self.start_line
        )
        clone._uri = self._uri
        if self._index is not None:
            clone._index = self._index.copy()
        return clone


class Response(Message):
    """A SIP response (RFC 3261 §7.2)."""

    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: str,
        fields: list[Field],
        body: bytes = b"",
        *,
        raw: bytes | None = None,
        start_line: str | None = None,
    ) -> None:
        # The fields of HeaderFields and Message, set here: this runs for every response received and relayed.
        HeaderFields.__init__(self, fields)
        self.start_line = start_line or f"{SIP_VERSION} {status} {reason}"
        self.body = body
        self._raw = raw
        self.status = status
        self.reason = reason

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"

    @classmethod
    def build(
        cls, status: int, reason: str, headers: Iterable[tuple[str, str]], body: bytes = b""
    ) -> Response:
        """A new response from (name, value) pairs."""
        return cls(status, reason, [make_field(name, value) for name, value in headers], body)

    def copy(self) -> Response:
        """An independent copy with the same fields."""
        clone = Response(
            self.status, self.reason, list(self._fields), self.body, raw=self._raw, start_line=self.start_line
        )
        if self._index is not None:
            clone._index = self._index.copy()
        return clone


# RFC 3261 §8.2.6.2: a response copies these from the request.
_RESPONSE_COPIED: Final = frozenset(("via", "from", "to", "call-id", "cseq"))


def _has_tag(to_value: str) -> bool:
    """Whether a To value carries a tag header parameter (not one inside <URI> or quotes)."""
    try:
        return parse_name_addr(to_value, what="To").tag is not None
    except SipParseError:
        # A To the grammar refuses (a partial message being answered with 400): look for
        # a tag parameter after the URI, as far as the text allows.
        tail = to_value.rpartition(">")[2] if ">" in to_value else to_value
        return "tag=" in tail.replace(" ", "").replace("\t", "").lower()


def make_response(
    request: Message,
    status: int,
    reason: str,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
) -> Response:
    """A response to ``request`` built per RFC 3261 §8.2.6.

    Via, From, To, Call-ID and CSeq are copied with their wire text (in
    order, so the Via stack is intact); a To tag is added when given and the
    request's To has none.  ``request`` may be the partial message carried by a
    :class:`SipParseError`, missing some of them.
    """
    fields: list[Field] = []
    for field in request.fields:
        name = field[0]
        if name not in _RESPONSE_COPIED:
            continue
        if name == "to" and to_tag is not None and not _has_tag(field[2]):
            value = f"{field[2]};tag={to_tag}"
            field = ("to", f"To: {value}", value)  # noqa: PLW2901 - the copy with a tag
        fields.append(field)
    fields.extend(make_field(name, value) for name, value in headers)
    return Response(status, reason, fields)
