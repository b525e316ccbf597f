"""Typed views of the header fields a proxy reads (RFC 3261 §20, grammar §25).

Each parser takes one *element* of a header value (already split at commas
where the header is a list) with folding already undone, and raises
:class:`SipParseError` (400) on anything the grammar does not allow.
"""

from __future__ import annotations

import re
from typing import Final

from sipha.sip.address import host_key
from sipha.sip.errors import SipParseError
from sipha.sip.grammar import (
    MAX_CSEQ,
    QUOTED_RE,
    TOKEN_RE,
    WS,
    parse_params,
    parse_uint,
    unquote,
)
from sipha.sip.uri import SipUri, Uri, cache_parsed, parse_uri, split_hostport

# RFC 3261 §7.3.3 compact forms, plus the ones later RFCs registered
# (RFC 3265 o/u, RFC 3515 r, RFC 3892 b, RFC 3841 a/j/d, RFC 4028 x, RFC 4474 y/n).
COMPACT_FORMS: Final[dict[str, str]] = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "b": "referred-by",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "x": "session-expires",
    "y": "identity",
    "n": "identity-info",
}

# How sipha spells the headers it adds (names compare case-insensitively, §7.3.1).
DISPLAY_NAMES: Final[dict[str, str]] = {
    "via": "Via",
    "max-forwards": "Max-Forwards",
    "record-route": "Record-Route",
    "route": "Route",
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "from": "From",
    "to": "To",
    "contact": "Contact",
    "content-length": "Content-Length",
    "content-type": "Content-Type",
    "retry-after": "Retry-After",
    "www-authenticate": "WWW-Authenticate",
    "proxy-authenticate": "Proxy-Authenticate",
    "unsupported": "Unsupported",
    "user-agent": "User-Agent",
    "server": "Server",
    "allow": "Allow",
    "supported": "Supported",
    "reason": "Reason",
    "warning": "Warning",
}


def display_name(name: str) -> str:
    """The conventional spelling of a lower-case header name."""
    spelled = DISPLAY_NAMES.get(name)
    if spelled is not None:
        return spelled
    return "-".join(part.capitalize() for part in name.split("-"))


class Via:
    """One via-parm (RFC 3261 §20.42, §25.1; RFC 3581 rport).

    Read-only: :func:`parse_via` hands the same object to every message with the same text.
    """

    __slots__ = ("host", "params", "port", "protocol", "transport")

    def __init__(
        self, protocol: str, transport: str, host: str, port: int | None, params: dict[str, str | None]
    ) -> None:
        self.protocol = protocol
        self.transport = transport
        self.host = host
        self.port = port
        self.params = params

    def __repr__(self) -> str:
        return f"Via({self.protocol}/{self.transport} {self.sent_by} {self.params!r})"

    @property
    def branch(self) -> str | None:
        """The branch parameter; RFC 3261 branches start with ``z9hG4bK`` (§8.1.1.7)."""
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        """The ``received`` parameter (§18.2.1)."""
        return self.params.get("received")

    @property
    def rport(self) -> str | None:
        """RFC 3581 ``rport``: None when absent, "" when present without a value."""
        if "rport" not in self.params:
            return None
        return self.params["rport"] or ""

    @property
    def maddr(self) -> str | None:
        """The ``maddr`` parameter."""
        return self.params.get("maddr")

    @property
    def ttl(self) -> int | None:
        """The ``ttl`` parameter (0-255)."""
        value = self.params.get("ttl")
        return None if value is None else parse_uint(value, what="Via ttl", maximum=255)

    @property
    def sent_by(self) -> str:
        """``host[:port]`` as sent."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def host_key(self) -> str:
        """The sent-by host lower-cased without IPv6 brackets."""
        return host_key(self.host)


# The via-parm every RFC 3261 implementation actually sends: no LWS, a token transport, a
# hostname / IPv4 / IPv6 reference, an optional port, token-valued parameters.
_TOKEN_CHARS: Final = r"A-Za-z0-9\-.!%*_+`'~"  # noqa: S105 - a character class, not a secret
_FAST_PARAMS: Final = rf"(?:;[{_TOKEN_CHARS}]+(?:=[{_TOKEN_CHARS}:\[\]]+)?)*"
_VIA_FAST_RE: Final = re.compile(
    rf"SIP/2\.0/([A-Za-z]+) ([A-Za-z0-9](?:[A-Za-z0-9\-_.]*[A-Za-z0-9.])?|\[[0-9A-Fa-f:.]+\])"
    rf"(?::([0-9]{{1,5}}))?({_FAST_PARAMS})"
)


def _fast_params(text: str) -> dict[str, str | None]:
    """Parameters already known to match ``_FAST_PARAMS`` (no quotes, no LWS)."""
    params: dict[str, str | None] = {}
    for item in text[1:].split(";"):
        name, equals, value = item.partition("=")
        params[name.lower()] = value if equals else None
    return params


# The values parsed last, by their exact text: one call's Via, From, To, Contact, Route and
# Record-Route values recur in every message of its transactions (and in the copies the
# proxy forwards), so most are parsed once.  Parsed values are shared between messages
# and never changed after parsing.  Bounded (sipha.sip.uri.cache_parsed).
_VIAS: dict[str, Via] = {}
_NAME_ADDRS: dict[str, NameAddr] = {}


def parse_via(element: str) -> Via:
    """Parse one via-parm: ``SIP / 2.0 / UDP host[:port] *(;param)``, LWS anywhere §25 allows."""
    via = _VIAS.get(element)
    if via is None:
        via = _parse_via(element)
        cache_parsed(_VIAS, element, via)
    return via


def branch_via(sent_by: str, branch: str) -> tuple[str, Via | None]:
    """The via-parm ``<sent_by>;branch=<branch>;rport`` a proxy adds (§16.6 step 8, RFC 3581).

    ``sent_by`` is ``SIP/2.0/UDP host:port``: parsed once (cached by its text), the
    value of every via-parm built on it is derived rather than parsed again, and
    remembered for :func:`parse_via` (responses bring the text back).  Returns the
    text and its value, exactly what ``parse_via(text)`` would give; None when
    ``sent_by`` does not parse or the branch is not a token (the text is then parsed
    as usual where it is read).
    """
    text = f"{sent_by};branch={branch};rport"
    try:
        base = parse_via(sent_by)
    except SipParseError:
        return text, None
    if base.params or not TOKEN_RE.fullmatch(branch):
        return text, None
    via = _VIAS.get(text)
    if via is None:
        via = Via(base.protocol, base.transport, base.host, base.port, {"branch": branch, "rport": None})
        cache_parsed(_VIAS, text, via)
    return text, via


def _parse_via(element: str) -> Via:
    fast = _VIA_FAST_RE.fullmatch(element)
    if fast is not None:
        transport, host, port_text, param_text = fast.groups()
        port = int(port_text) if port_text else None
        if port is None or port <= _PORT_MAX:
            return Via(
                "SIP/2.0", transport.upper(), host, port, _fast_params(param_text) if param_text else {}
            )
    head, semi, param_text = element.partition(";")
    parts = head.split("/")
    if len(parts) != 3:  # noqa: PLR2004 - protocol-name / version / transport
        raise SipParseError(f"bad Via sent-protocol: {element[:60]!r}")
    name = parts[0].strip(WS)
    version = parts[1].strip(WS)
    transport_and_host = parts[2].strip(WS).split(None, 1)
    if len(transport_and_host) != 2:  # noqa: PLR2004 - transport, then sent-by
        raise SipParseError(f"Via without sent-by: {element[:60]!r}")
    transport, sent_by = transport_and_host
    if not (TOKEN_RE.fullmatch(name) and TOKEN_RE.fullmatch(version) and TOKEN_RE.fullmatch(transport)):
        raise SipParseError(f"bad Via sent-protocol: {element[:60]!r}")
    # sent-by = host [ COLON port ]; COLON = SWS ":" SWS: white space only around the colon.
    sent_by = _SENT_BY_COLON_RE.sub(":", sent_by.strip(WS))
    if " " in sent_by or "\t" in sent_by:
        raise SipParseError(f"white space inside Via sent-by: {element[:60]!r}")
    host, port = split_hostport(sent_by, what=element)
    params = parse_params(semi + param_text, what="Via") if semi else {}
    return Via(f"{name.upper()}/{version}", transport.upper(), host, port, params)


class NameAddr:
    """A name-addr or addr-spec with its header parameters (From, To, Contact, Route, ...).

    Read-only: :func:`parse_name_addr` hands the same object to every message with the same text.
    """

    __slots__ = ("_uri", "display", "params", "uri_text")

    def __init__(self, display: str | None, uri_text: str, params: dict[str, str | None]) -> None:
        self.display = display
        self.uri_text = uri_text
        self.params = params
        self._uri: Uri | None = None

    def __repr__(self) -> str:
        return f"NameAddr({self.display!r}, {self.uri_text!r}, {self.params!r})"

    @property
    def uri(self) -> Uri:
        """The URI, parsed on first access."""
        if self._uri is None:
            self._uri = parse_uri(self.uri_text)
        return self._uri

    @property
    def sip_uri(self) -> SipUri | None:
        """The URI when it is a SIP or SIPS URI, else None."""
        uri = self.uri
        return uri if isinstance(uri, SipUri) else None

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (From/To, §19.3)."""
        return self.params.get("tag")

    @property
    def display_unquoted(self) -> str | None:
        """The display name without quotes and quoted-pairs."""
        return None if self.display is None else unquote(self.display)


_DISPLAY_TOKENS_RE: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+(?:[ \t]+[A-Za-z0-9\-.!%*_+`'~]+)*")


# name-addr as user agents send it: optional quoted or token display name, <URI>, token params.
_NAME_ADDR_FAST_RE: Final = re.compile(
    rf"(?:({QUOTED_RE.pattern})[ \t]*|([{_TOKEN_CHARS}]+(?:[ \t]+[{_TOKEN_CHARS}]+)*)[ \t]*)?"
    rf'<([^\s<>"]+)>({_FAST_PARAMS})'
)

# addr-spec as user agents send it (``Contact: sip:user@host``): no LWS, no delimiter the
# grammar refuses without <> (§20), token params; anything else takes the full grammar below.
_ADDR_SPEC_FAST_RE: Final = re.compile(rf'([^\s<>",;?]+)({_FAST_PARAMS})')


def parse_name_addr(element: str, *, what: str) -> NameAddr:
    """Parse ``( name-addr / addr-spec ) *( SEMI param )`` (RFC 3261 §25.1).

    In the addr-spec form the URI cannot contain ``,``, ``;`` or ``?`` (§20:
    "the URI ... MUST be enclosed in angle brackets"), so everything after the
    first ``;`` is header parameters.  ``what`` names the header in errors.
    """
    name_addr = _NAME_ADDRS.get(element)
    if name_addr is None:
        name_addr = _parse_name_addr(element, what)
        cache_parsed(_NAME_ADDRS, element, name_addr)
    return name_addr


def _parse_name_addr(element: str, what: str) -> NameAddr:
    fast = _NAME_ADDR_FAST_RE.fullmatch(element)
    if fast is not None:
        quoted, tokens, uri_text, param_text = fast.groups()
        return NameAddr(quoted or tokens, uri_text, _fast_params(param_text) if param_text else {})
    fast = _ADDR_SPEC_FAST_RE.fullmatch(element)
    if fast is not None:
        uri_text, param_text = fast.groups()
        return NameAddr(None, uri_text, _fast_params(param_text) if param_text else {})
    return _parse_name_addr_full(element, what=what)


def _parse_name_addr_full(element: str, *, what: str) -> NameAddr:
    """:func:`parse_name_addr` by the whole grammar (the fast paths' reference)."""
    text = element.strip(WS)
    display: str | None = None
    if text[:1] == '"':
        match = QUOTED_RE.match(text)
        if match is None:
            raise SipParseError(f"unterminated quoted display name in {what}")
        display = match.group(0)
        text = text[match.end() :].lstrip(WS)
        if text[:1] != "<":
            raise SipParseError(f"quoted display name without <URI> in {what}")
    lt = text.find("<")
    if lt >= 0:
        if lt > 0:
            # display-name = *(token LWS) / quoted-string; no LWS is needed before "<"
            # (RFC 4475 §3.1.1.6).
            tokens = text[:lt].strip(WS)
            if tokens and not _DISPLAY_TOKENS_RE.fullmatch(tokens):
                raise SipParseError(f"bad display name {tokens[:40]!r} in {what}")
            display = tokens or None
        gt = text.find(">", lt)
        if gt < 0:
            raise SipParseError(f"'<' without '>' in {what}")
        uri_text = text[lt + 1 : gt]
        if not uri_text or any(char in uri_text for char in " \t<"):
            raise SipParseError(f"white space or '<' inside <URI> in {what}")
        rest = text[gt + 1 :]
    else:
        uri_text, semi, rest = text.partition(";")
        rest = semi + rest
        uri_text = uri_text.rstrip(WS)
        if not uri_text or any(char in uri_text for char in ' \t,?"<>'):
            raise SipParseError(f"addr-spec needs <> around it in {what}: {uri_text[:60]!r}")
    params = parse_params(rest, what=what) if rest.strip(WS) else {}
    return NameAddr(display, uri_text, params)


_CSEQ_DIGITS: Final = 10
# The methods of RFC 3261 §7.1 and of the extensions that define PRACK (RFC 3262), SUBSCRIBE and
# NOTIFY (RFC 6665), PUBLISH (RFC 3903), INFO (RFC 6086), REFER (RFC 3515), MESSAGE (RFC 3428)
# and UPDATE (RFC 3311): the fast paths of the start line and of CSeq, and 400 or 501 for a
# CSeq method that does not match (RFC 4475 §3.1.2.18).
KNOWN_METHODS: Final = frozenset(
    ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY",
     "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE")
)  # fmt: skip
_PORT_MAX: Final = 65535
_SENT_BY_COLON_RE: Final = re.compile(r"[ \t]*:[ \t]*")


class CSeq:
    """CSeq (RFC 3261 §20.16): sequence number and method."""

    __slots__ = ("method", "seq")

    def __init__(self, seq: int, method: str) -> None:
        self.seq = seq
        self.method = method

    def __repr__(self) -> str:
        return f"CSeq({self.seq}, {self.method!r})"

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def parse_cseq(value: str) -> CSeq:
    """``1*DIGIT LWS Method``, the number below 2**31 (§8.1.1.5)."""
    number, space, method = value.partition(" ")
    if (
        space
        and number.isascii()
        and number.isdigit()
        and len(number) <= _CSEQ_DIGITS
        and method in KNOWN_METHODS
    ):
        seq = int(number)
        if seq <= MAX_CSEQ:
            return CSeq(seq, method)
    number, _, method = value.strip(WS).partition(" ")
    if not _:
        number, _, method = value.strip(WS).partition("\t")
    method = method.strip(WS)
    if not TOKEN_RE.fullmatch(method):
        raise SipParseError(f"bad CSeq method: {value[:60]!r}")
    return CSeq(parse_uint(number, what="CSeq number", maximum=MAX_CSEQ), method)


def parse_tokens(value: str, *, what: str) -> list[str]:
    """A comma-separated list of option tags (Require, Proxy-Require, Supported)."""
    tags = [tag.strip(WS) for tag in value.split(",")]
    for tag in tags:
        if not TOKEN_RE.fullmatch(tag):
            raise SipParseError(f"bad option tag {tag[:40]!r} in {what}")
    return tags
