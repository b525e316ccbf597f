"""The header fields of a message and their typed values (RFC 3261 §7.3, §20), parsed on first use.

:class:`HeaderFields` is the part of :class:`sipha.sip.message.Message` that reads
headers: the fields in order, an index of first values, and the typed values a proxy
relies on (``top_via``, ``cseq``, ``routes``, ...).  Each typed value has a slot of its
own, None until the header is first read (``_UNREAD`` for Max-Forwards and
Content-Length, which may be absent), and reset by :meth:`HeaderFields._forget` when
the message changes that header.  Every property reads its slot the same way::

    value = self._slot
    if value is None:
        value = self._slot = parse(...)
    return value

Typed without casts, and a native attribute when compiled with mypyc: no dict probe.
"""

from __future__ import annotations

import enum
import re
from typing import Final

from sipha.sip.errors import SipParseError
from sipha.sip.grammar import WORD_RE, WS, parse_uint, split_commas
from sipha.sip.headers import (
    CSeq,
    NameAddr,
    Via,
    display_name,
    parse_cseq,
    parse_name_addr,
    parse_tokens,
    parse_via,
)
from sipha.sip.uri import cache_parsed

# One header field: (lower-case full name, the line exactly as received or rendered, unfolded value)
Field = tuple[str, str, str]

# Call-ID = word [ "@" word ] (RFC 3261 §25.1)
_CALL_ID_RE: Final = re.compile(rf"{WORD_RE.pattern}(?:@{WORD_RE.pattern})?")
# Call-IDs recently found well-formed (bounded, sipha.sip.uri.cache_parsed).
_CALL_IDS: dict[str, str] = {}
# Headers that may appear only once (RFC 3261 §20; §7.3.1 allows repeats only for lists).
_SINGLE_HEADERS: Final = frozenset(("from", "to", "call-id", "cseq", "max-forwards", "content-length"))


class _Unread(enum.Enum):
    """The slot of Max-Forwards or Content-Length before the header is read (None is a value: absent)."""

    UNREAD = enum.auto()


_UNREAD: Final = _Unread.UNREAD


class HeaderFields:
    """Header fields in order, with typed, lazily parsed values (see the module docstring)."""

    __slots__ = (
        "_call_id", "_contacts", "_content_length", "_cseq", "_fields", "_from", "_index", "_max_forwards",
        "_proxy_require", "_record_routes", "_require", "_routes", "_to", "_top_via", "_vias",
    )  # fmt: skip

    def __init__(self, fields: list[Field]) -> None:
        self._fields = fields
        # The first value of each header name, built on first use, kept up to date by the
        # edits and copies.
        self._index: dict[str, str] | None = None
        self._top_via: Via | None = None
        self._vias: list[Via] | None = None
        self._max_forwards: int | _Unread | None = _UNREAD
        self._routes: list[NameAddr] | None = None
        self._record_routes: list[NameAddr] | None = None
        self._contacts: list[NameAddr] | None = None
        self._call_id: str | None = None
        self._cseq: CSeq | None = None
        self._from: NameAddr | None = None
        self._to: NameAddr | None = None
        self._content_length: int | _Unread | None = _UNREAD
        self._require: list[str] | None = None
        self._proxy_require: list[str] | None = None

    @property
    def headers(self) -> list[tuple[str, str]]:
        """Every header field in order, as (lower-case full name, unfolded value)."""
        return [(field[0], field[2]) for field in self._fields]

    @property
    def fields(self) -> list[Field]:
        """The header fields with their wire text (read-only use)."""
        return self._fields

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
        via = self._top_via
        if via is None:
            value = self._required("via")
            via = self._top_via = parse_via(split_commas(value)[0] if "," in value else value)
        return via

    @property
    def vias(self) -> list[Via]:
        """Every via-parm, top first."""
        vias = self._vias
        if vias is None:
            vias = []
            for field in self._fields:
                if field[0] == "via":
                    value = field[2]
                    if "," in value:
                        vias.extend([parse_via(element) for element in split_commas(value)])
                    else:
                        vias.append(parse_via(value.strip(WS)))
            self._vias = vias  # kept once every via-parm parsed (a bad one raises each time)
            if vias:
                self._top_via = vias[0]  # the same via-parm: parsed once
        return vias

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards (0-255, §20.22), or None when absent."""
        hops = self._max_forwards
        if hops is _UNREAD:
            value = self._first("max-forwards")
            if value is None:
                hops = None
            elif value.isascii() and value.isdigit() and len(value) <= 3 and int(value) <= 255:  # noqa: PLR2004 - 1 to 3 digits
                hops = int(value)
            else:
                hops = parse_uint(value, what="Max-Forwards", maximum=255)
            self._max_forwards = hops
        return hops

    @property
    def routes(self) -> list[NameAddr]:
        """The Route set, in order (§20.34)."""
        routes = self._routes
        if routes is None:
            routes = self._routes = self._name_addrs("route") if self._first("route") else []
        return routes

    @property
    def record_routes(self) -> list[NameAddr]:
        """The Record-Route set, in order (§20.30)."""
        record_routes = self._record_routes
        if record_routes is None:
            present = self._first("record-route") is not None
            record_routes = self._record_routes = self._name_addrs("record-route") if present else []
        return record_routes

    @property
    def contacts(self) -> list[NameAddr]:
        """Contact elements (§20.10); empty for ``Contact: *``, see :attr:`contact_star`."""
        contacts = self._contacts
        if contacts is None:
            first = self._first("contact")
            contacts = self._contacts = [] if first is None or first == "*" else self._name_addrs("contact")
        return contacts

    @property
    def contact_star(self) -> bool:
        """True for ``Contact: *`` (REGISTER removing all bindings, §10.2.2)."""
        value = self._first("contact")
        return value is not None and value == "*"

    @property
    def call_id(self) -> str:
        """Call-ID (§20.8): ``word [ "@" word ]``."""
        call_id = self._call_id
        if call_id is None:
            call_id = self._required("call-id")
            if call_id not in _CALL_IDS:
                if not _CALL_ID_RE.fullmatch(call_id):
                    raise SipParseError(f"bad Call-ID {call_id[:60]!r}")
                cache_parsed(_CALL_IDS, call_id, call_id)  # every message of the call carries it
            self._call_id = call_id
        return call_id

    @property
    def cseq(self) -> CSeq:
        """CSeq (§20.16)."""
        cseq = self._cseq
        if cseq is None:
            cseq = self._cseq = parse_cseq(self._required("cseq"))
        return cseq

    @property
    def from_(self) -> NameAddr:
        """From (§20.20)."""
        from_ = self._from
        if from_ is None:
            from_ = self._from = parse_name_addr(self._required("from"), what="From")
        return from_

    @property
    def to(self) -> NameAddr:
        """To (§20.39)."""
        to = self._to
        if to is None:
            to = self._to = parse_name_addr(self._required("to"), what="To")
        return to

    @property
    def content_length(self) -> int | None:
        """Content-Length (§20.14), or None when absent."""
        length = self._content_length
        if length is _UNREAD:
            value = self._first("content-length")
            length = None if value is None else parse_uint(value, what="Content-Length", maximum=2**31)
            self._content_length = length
        return length

    @property
    def proxy_require(self) -> list[str]:
        """Proxy-Require option tags (§20.29)."""
        tags = self._proxy_require
        if tags is None:
            tags = self._proxy_require = self._tokens("proxy-require")
        return tags

    @property
    def require(self) -> list[str]:
        """Require option tags (§20.32)."""
        tags = self._require
        if tags is None:
            tags = self._require = self._tokens("require")
        return tags

    def _forget(self, name: str) -> None:
        """Drop the typed value of the ``name`` header, if one is kept: it is read anew on next use."""
        if name == "via":
            self._vias = None
            self._top_via = None
        elif name == "record-route":
            self._record_routes = None
        elif name == "route":
            self._routes = None
        elif name == "max-forwards":
            self._max_forwards = _UNREAD
        elif name == "content-length":
            self._content_length = _UNREAD
        elif name == "contact":
            self._contacts = None
        elif name == "to":
            self._to = None
        elif name == "from":
            self._from = None
        elif name == "call-id":
            self._call_id = None
        elif name == "cseq":
            self._cseq = None
        elif name == "require":
            self._require = None
        elif name == "proxy-require":
            self._proxy_require = None

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
        """The option tags of every ``name`` field."""
        tags: list[str] = []
        if self._first(name) is not None:
            for field in self._fields:
                if field[0] == name:
                    tags.extend(parse_tokens(field[2], what=name))
        return tags

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
