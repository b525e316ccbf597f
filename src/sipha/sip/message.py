"""SIP messages: parsing from bytes, lazy typed access, splice-on-write forwarding.

A message is its start line, a list of header *fields* and a body.  Each field
keeps the exact text it arrived with, so that forwarding re-sends untouched
headers byte for byte (folding, compact names and odd spacing included); only
the fields a proxy changes (Via, Record-Route, Route, Max-Forwards, the
Request-URI) are rendered anew.  Typed values (``top_via``, ``cseq``, ...) are
parsed on first access and cached until the header is changed.

Framing follows RFC 3261 §7 and §18.3; the header grammar is §25, read
liberally as §7.3.1 asks (folding, compact forms, any case, any LWS).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from sipha.sip.errors import (
    MessageTooLarge,
    SipParseError,
    VersionNotSupported,
)
from sipha.sip.grammar import TOKEN_RE, WORD_RE, WS, parse_uint, split_commas
from sipha.sip.headers import (
    COMPACT_FORMS,
    CSeq,
    NameAddr,
    Via,
    display_name,
    parse_cseq,
    parse_name_addr,
    parse_tokens,
    parse_via,
)
from sipha.sip.uri import SipUri, Uri, cache_parsed, parse_uri

# One header field: (lower-case full name, the line exactly as received or rendered, unfolded value)
Field = tuple[str, str, str]

SIP_VERSION: Final = "SIP/2.0"
_VERSION_RE: Final = re.compile(r"SIP/[0-9]+\.[0-9]+", re.IGNORECASE)
_FOLD_RE: Final = re.compile(r"[ \t]*\r\n[ \t]+")
_STATUS_RE: Final = re.compile(r"[1-6][0-9][0-9]")
_KNOWN_METHODS: Final = frozenset(
    {
        "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE",
        "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
    }
)  # fmt: skip
# Headers that may appear only once (RFC 3261 §20; §7.3.1 allows repeats only for lists).
# Call-ID = word [ "@" word ] (RFC 3261 §25.1)
_CALL_ID_RE: Final = re.compile(rf"{WORD_RE.pattern}(?:@{WORD_RE.pattern})?")
# Call-IDs recently found well-formed (bounded, sipha.sip.uri.cache_parsed).
_CALL_IDS: dict[str, str] = {}
_SINGLE_HEADERS: Final = frozenset(("from", "to", "call-id", "cseq", "max-forwards", "content-length"))
# A cache of raw header names (as they appear before the colon) to canonical names.
_NAME_CACHE: dict[str, str] = {}
_NAME_CACHE_MAX: Final = 4096
_LENGTH_DIGITS: Final = 6  # up to 99,999: below any message size limit, parsed without checks
_NAME_LENGTH_CACHED: Final = 64


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
# Absent from a message's cache of parsed values (None is a value: no Max-Forwards).
_MISSING: Final = object()


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


def make_field(name: str, value: str) -> Field:
    """A new header field, spelled conventionally."""
    lower = canonical_name(name)
    return (lower, f"{display_name(lower)}: {value}", value)


class Message:
    """What requests and responses share: header fields, body, typed access, edits."""

    __slots__ = ("_cache", "_fields", "_index", "_raw", "body", "start_line")

    # Set by the subclasses' constructors (one call less for every message).
    start_line: str
    _fields: list[Field]
    body: bytes
    _raw: bytes | None
    """The exact bytes received, valid while nothing has been changed."""
    _cache: dict[str, object]
    """Parsed values by header name, dropped for a header when it is changed."""
    _index: dict[str, str] | None
    """The first value of each header name, built on first use, kept up to date by the edits and copies."""

    # ------------------------------------------------------------------ generic access

    @property
    def headers(self) -> list[tuple[str, str]]:
        """Every header field in order, as (lower-case full name, unfolded value)."""
        return [(field[0], field[2]) for field in self._fields]

    @property
    def fields(self) -> list[Field]:
        """The header fields with their wire text (read-only use)."""
        return self._fields

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

    # ------------------------------------------------------------------ typed access

    def _first(self, name: str) -> str | None:
        """The value of the first field called ``name`` (already canonical)."""
        index = self._index
        if index is None:
            # Built once, on the first typed access: later lookups cost one dict probe.
            index = self._index = {field[0]: field[2] for field in reversed(self._fields)}
        return index.get(name)

    def _required(self, name: str) -> str:
        value = self._first(name)
        if value is None:
            raise SipParseError(f"missing {display_name(name)} header")
        return value

    @property
    def top_via(self) -> Via:
        """The first via-parm: whom a response goes back to (§18.2.2)."""
        cached = self._cache.get("via:top", _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        value = self._required("via")
        via = parse_via(split_commas(value)[0] if "," in value else value)
        self._cache["via:top"] = via
        return via

    @property
    def vias(self) -> list[Via]:
        """Every via-parm, top first."""
        cache = self._cache
        cached = cache.get("via", _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        vias: list[Via] = []
        for field in self._fields:
            if field[0] == "via":
                value = field[2]
                if "," in value:
                    vias.extend([parse_via(element) for element in split_commas(value)])
                else:
                    vias.append(parse_via(value.strip(WS)))
        cache["via"] = vias
        if vias:
            cache["via:top"] = vias[0]  # the same via-parm: parsed once
        return vias

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards (0-255, §20.22), or None when absent."""
        cached = self._cache.get("max-forwards", _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        value = self._first("max-forwards")
        if value is None:
            hops = None
        elif value.isascii() and value.isdigit() and len(value) <= 3 and int(value) <= 255:  # noqa: PLR2004 - 1 to 3 digits
            hops = int(value)
        else:
            hops = parse_uint(value, what="Max-Forwards", maximum=255)
        self._cache["max-forwards"] = hops
        return hops

    @property
    def routes(self) -> list[NameAddr]:
        """The Route set, in order (§20.34)."""
        cached = self._cache.get("route", _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        routes = self._cache["route"] = self._name_addrs("route") if self._first("route") else []
        return routes

    @property
    def record_routes(self) -> list[NameAddr]:
        """The Record-Route set, in order (§20.30)."""
        cached = self._cache.get("record-route", _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        record_routes = self._name_addrs("record-route") if self._first("record-route") is not None else []
        self._cache["record-route"] = record_routes
        return record_routes

    @property
    def contacts(self) -> list[NameAddr]:
        """Contact elements (§20.10); empty for ``Contact: *``, see :attr:`contact_star`."""
        cached = self._cache.get("contact", _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        first = self._first("contact")
        contacts = [] if first is None or first == "*" else self._name_addrs("contact")
        self._cache["contact"] = contacts
        return contacts

    @property
    def contact_star(self) -> bool:
        """True for ``Contact: *`` (REGISTER removing all bindings, §10.2.2)."""
        value = self._first("contact")
        return value is not None and value == "*"

    @property
    def call_id(self) -> str:
        """Call-ID (§20.8): ``word [ "@" word ]``."""
        cached = self._cache.get("call-id", _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        value = self._required("call-id")
        if value not in _CALL_IDS:
            if not _CALL_ID_RE.fullmatch(value):
                raise SipParseError(f"bad Call-ID {value[:60]!r}")
            cache_parsed(_CALL_IDS, value, value)  # every message of the call carries it
        self._cache["call-id"] = value
        return value

    @property
    def cseq(self) -> CSeq:
        """CSeq (§20.16)."""
        cached = self._cache.get("cseq", _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        cseq = self._cache["cseq"] = parse_cseq(self._required("cseq"))
        return cseq

    @property
    def from_(self) -> NameAddr:
        """From (§20.20)."""
        cached = self._cache.get("from", _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        from_ = self._cache["from"] = parse_name_addr(self._required("from"), what="From")
        return from_

    @property
    def to(self) -> NameAddr:
        """To (§20.39)."""
        cached = self._cache.get("to", _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        to = self._cache["to"] = parse_name_addr(self._required("to"), what="To")
        return to

    @property
    def content_length(self) -> int | None:
        """Content-Length (§20.14), or None when absent."""
        cached = self._cache.get("content-length", _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        value = self._first("content-length")
        length = None if value is None else parse_uint(value, what="Content-Length", maximum=2**31)
        self._cache["content-length"] = length
        return length

    @property
    def proxy_require(self) -> list[str]:
        """Proxy-Require option tags (§20.29)."""
        return self._tokens("proxy-require")

    @property
    def require(self) -> list[str]:
        """Require option tags (§20.32)."""
        return self._tokens("require")

    def _name_addrs(self, name: str) -> list[NameAddr]:
        what = name  # only used in error messages
        parsed: list[NameAddr] = []
        for field in self._fields:
            if field[0] == name:
                value = field[2]
                if "," in value:
                    parsed.extend([parse_name_addr(element, what=what) for element in split_commas(value)])
                else:
                    parsed.append(parse_name_addr(value, what=what))
        return parsed

    def _tokens(self, name: str) -> list[str]:
        """The option tags of every ``name`` field (cached under ``name``)."""
        cache = self._cache
        cached = cache.get(name, _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        tags: list[str] = []
        if self._first(name) is not None:
            for field in self._fields:
                if field[0] == name:
                    tags.extend(parse_tokens(field[2], what=name))
        cache[name] = tags
        return tags

    def validate(self) -> None:
        """Parse every header a proxy relies on; raise :class:`SipParseError` if one is bad.

        Checks presence of the mandatory headers (RFC 3261 §8.1.1), that single-valued
        headers appear once, the grammar of Via, From, To, Call-ID, CSeq, Max-Forwards,
        Contact, Route, Record-Route, Require and Proxy-Require, and every URI in them.
        """
        try:
            self._validate()
        except SipParseError as error:
            raise error.with_message(self) from None  # type: ignore[arg-type]

    def _validate(self) -> None:
        # One pass (re)builds the index of first values and finds repeated single headers.
        index: dict[str, str] = {}
        for field in self._fields:
            name = field[0]
            if name not in index:
                index[name] = field[2]
            elif name in _SINGLE_HEADERS:
                self._repeated()
        self._index = index
        if not self.vias:
            raise SipParseError("missing Via header")
        _ = self.call_id, self.cseq, self.max_forwards
        # Headers most messages lack are read only when present (absent, they are empty).
        if "require" in index:
            _ = self.require
        if "proxy-require" in index:
            _ = self.proxy_require
        _ = self.from_, self.to
        # The Route set decides where the request goes: every URI in it must parse.  The
        # other name-addr headers are checked for their structure only; their URIs belong
        # to the user agents (a proxy forwards them untouched, §16.6).
        if "route" in index:
            for route in self.routes:
                _ = route.uri

    def _repeated(self) -> None:
        """Raise for the first single-valued header that appears more than once."""
        counts: dict[str, int] = {}
        for field in self._fields:
            if field[0] in _SINGLE_HEADERS:
                counts[field[0]] = counts.get(field[0], 0) + 1
        name = next(name for name, count in counts.items() if count > 1)
        raise SipParseError(f"{display_name(name)} appears {counts[name]} times")

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
        self._cache.pop(name, None)
        if name == "via":
            self._cache.pop("via:top", None)

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
        self._cache.pop("via", None)
        if parsed is None:
            self._cache.pop("via:top", None)
        else:
            self._cache["via:top"] = parsed
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
        self._cache["max-forwards"] = value
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
        # The fields of Message, set here: this runs for every request received.
        self.start_line = start_line or f"{method} {uri} {SIP_VERSION}"
        self._fields = fields
        self.body = body
        self._raw = raw
        self._cache = {}
        self._index = None
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
        if self._uri is None:
            self._uri = parse_uri(self.uri)
        return self._uri

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
                status=400 if self.method in _KNOWN_METHODS else 501,
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
        # The fields of Message, set here: this runs for every response received and relayed.
        self.start_line = start_line or f"{SIP_VERSION} {status} {reason}"
        self._fields = fields
        self.body = body
        self._raw = raw
        self._cache = {}
        self._index = None
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
    # No bare CR or LF (every CR and LF is in a CRLF); folded lines fall to the slow path
    # by themselves, as no cached header name starts with white space.
    if crlfs and len(text) <= limits.max_header_line and text.count("\n") == crlfs == text.count("\r"):
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
    colon, a continuation line: no cached name starts with white space): the slow
    path then parses the lines one by one and names the problem.
    """
    cache = _NAME_CACHE
    fields: list[Field] = []
    for index in range(1, len(lines)):
        line = lines[index]
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
            # (NUL may appear, as a quoted-pair, RFC 4475 §3.1.1.2.)
            error = error or SipParseError(f"bare CR or LF in header line {line[:40]!r}")
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
    if len(parts) == 3 and parts[2] == SIP_VERSION and parts[0] in _KNOWN_METHODS:  # noqa: PLR2004
        uri = parts[1]
        if uri and uri[0] != "<" and "\t" not in uri:
            return Request(parts[0], uri, fields, start_line=line)
    method = parts[0]
    request = Request(method, parts[1] if len(parts) > 1 else "", fields, start_line=line)
    if len(parts) != 3:  # noqa: PLR2004 - Method SP Request-URI SP SIP-Version
        return SipParseError(
            f"request line is not 'Method SP URI SP Version': {line[:80]!r}", message=request
        )
    if method not in _KNOWN_METHODS and not TOKEN_RE.fullmatch(method):
        return SipParseError(f"bad method {method[:40]!r}", message=request)
    uri, version = parts[1], parts[2]
    if version != SIP_VERSION and version.upper() != SIP_VERSION:
        if _VERSION_RE.fullmatch(version):
            return VersionNotSupported(f"SIP version {version!r} is not supported", message=request)
        return SipParseError(f"bad SIP version {version[:20]!r}", message=request)
    if not uri or uri[0] == "<" or "\t" in uri:
        return SipParseError(f"bad Request-URI {uri[:60]!r}", message=request)
    return request
