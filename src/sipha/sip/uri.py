"""SIP, SIPS and tel URIs (RFC 3261 §19.1, §25.1; RFC 3966 for tel).

URIs are immutable.  ``str(uri)`` gives back the text it was parsed from;
the ``replace`` method renders a new URI when a part changes.
Comparison helpers follow RFC 3261 §19.1.4 only as far as a proxy needs:
hosts compare case-insensitively, users with escapes resolved.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import Final, TypeVar
from urllib.parse import unquote as percent_unquote

from sipha.sip.address import host_key
from sipha.sip.errors import SipParseError

_Parsed = TypeVar("_Parsed")

# scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
_SCHEME_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
# user = 1*( unreserved / escaped / user-unreserved ); unreserved = alphanum / mark;
# mark = "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")";
# user-unreserved = "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
_USER_RE: Final = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+")
# password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
_PASSWORD_RE: Final = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*")
# hostname = *( domainlabel "." ) toplabel [ "." ]; IPv4address; IPv6reference.
# Kept liberal on label shape (leading digits and hyphens are seen in the wild) but
# strict on the alphabet so that nothing but a host can hide here.
_HOSTNAME_RE: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-_.]*[A-Za-z0-9.])?")
_IPV6_RE: Final = re.compile(r"\[[0-9A-Fa-f:.]+\]")
# paramchar = param-unreserved / unreserved / escaped; param-unreserved = "[" "]" "/" ":" "&" "+" "$"
_PARAMCHARS_RE: Final = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+")
# hname / hvalue = *( hnv-unreserved / unreserved / escaped ); hnv-unreserved = "[" "]" "/" "?" ":" "+" "$"
_HNV: Final = r"(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$]|%[0-9A-Fa-f]{2})"
_HEADERS_RE: Final = re.compile(rf"{_HNV}+={_HNV}*(?:&{_HNV}+={_HNV}*)*")
_PORT_MAX: Final = 65535
_PORT_DIGITS: Final = 5


class SipUri:
    """A ``sip:`` or ``sips:`` URI (RFC 3261 §19.1.1)."""

    __slots__ = ("_raw", "headers", "host", "params", "password", "port", "scheme", "user")

    def __init__(
        self,
        scheme: str,
        host: str,
        *,
        user: str | None = None,
        password: str | None = None,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        headers: str = "",
        raw: str | None = None,
    ) -> None:
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params: dict[str, str | None] = params if params is not None else {}
        self.headers = headers
        self._raw = raw if raw is not None else self._render()

    def _render(self) -> str:
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self.user)
            if self.password is not None:
                parts += [":", self.password]
            parts.append("@")
        parts.append(self.host)
        if self.port is not None:
            parts += [":", str(self.port)]
        for name, value in self.params.items():
            parts += [";", name] if value is None else [";", name, "=", value]
        if self.headers:
            parts += ["?", self.headers]
        return "".join(parts)

    def __str__(self) -> str:
        return self._raw

    def __repr__(self) -> str:
        return f"SipUri({self._raw!r})"

    def __eq__(self, other: object) -> bool:
        """Equivalence as a proxy needs it (RFC 3261 §19.1.4, without header/param subtleties)."""
        if not isinstance(other, SipUri):
            return NotImplemented
        return (
            self.scheme == other.scheme
            and self.user_key == other.user_key
            and _escapes_normalised(self.password) == _escapes_normalised(other.password)
            and self.host.lower() == other.host.lower()
            and self.port == other.port
            and self.transport == other.transport
        )

    def __hash__(self) -> int:
        return hash((self.scheme, self.user_key, self.host.lower(), self.port))

    @property
    def user_key(self) -> str | None:
        """The user part as RFC 3261 §19.1.4 compares it.

        "Characters other than those in the reserved set are equivalent to their
        encoding": those escapes are resolved, escapes of reserved characters kept.
        """
        return _escapes_normalised(self.user)

    @property
    def user_unescaped(self) -> str | None:
        """The user part with %HH escapes resolved (RFC 3261 §19.1.4 compares this)."""
        if self.user is None or "%" not in self.user:
            return self.user
        return percent_unquote(self.user, errors="surrogateescape")

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter, lower-cased, or None."""
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def lr(self) -> bool:
        """True for a loose-routing URI (RFC 3261 §19.1.1 ``lr`` parameter)."""
        return "lr" in self.params

    @property
    def maddr(self) -> str | None:
        """The ``maddr`` parameter (RFC 3261 §19.1.1), or None."""
        return self.params.get("maddr")

    @property
    def host_key(self) -> str:
        """The host lower-cased, IPv6 brackets removed: what to compare and resolve."""
        return host_key(self.host)

    def with_hostport(self, host: str, port: int | None) -> SipUri:
        """A copy aimed at another host and port, everything else kept (rendered anew)."""
        return SipUri(
            self.scheme,
            host,
            user=self.user,
            password=self.password,
            port=port,
            params=dict(self.params),
            headers=self.headers,
        )


_ESCAPE_RE: Final = re.compile(r"%([0-9A-Fa-f]{2})")
# reserved = ";" / "/" / "?" / ":" / "@" / "&" / "=" / "+" / "$" / ","  (RFC 3261 §25.1)
_RESERVED: Final = frozenset(";/?:@&=+$,%")


def _resolve_escape(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return f"%{match.group(1).upper()}" if char in _RESERVED else char


def _escapes_normalised(text: str | None) -> str | None:
    """``text`` with the escapes of unreserved characters resolved (§19.1.4)."""
    if text is None or "%" not in text:
        return text
    return _ESCAPE_RE.sub(_resolve_escape, text)


class TelUri:
    """A ``tel:`` URI (RFC 3966): the number and its parameters."""

    __slots__ = ("_raw", "number", "params")

    scheme = "tel"

    def __init__(self, number: str, params: dict[str, str | None], raw: str) -> None:
        self.number = number
        self.params = params
        self._raw = raw

    def __str__(self) -> str:
        return self._raw

    def __repr__(self) -> str:
        return f"TelUri({self._raw!r})"


class AbsoluteUri:
    """Any other scheme (RFC 3261 §25.1 absoluteURI), kept as text."""

    __slots__ = ("_raw", "opaque", "scheme")

    def __init__(self, scheme: str, opaque: str, raw: str) -> None:
        self.scheme = scheme
        self.opaque = opaque
        self._raw = raw

    def __str__(self) -> str:
        return self._raw

    def __repr__(self) -> str:
        return f"AbsoluteUri({self._raw!r})"


Uri = SipUri | TelUri | AbsoluteUri

# The SIP URIs user agents send: lower-case scheme, a plain user part (no escapes, no
# password), a hostname / IPv4 / IPv6 reference, a port, plain parameters, no headers.  What
# this matches, the full parse below reads alike; anything else takes the full parse.
_PLAIN_PARAMCHARS: Final = r"[A-Za-z0-9\-_.!~*'()\[\]/:&+$]+"
_SIP_URI_FAST_RE: Final = re.compile(
    r"(sips?):(?:([A-Za-z0-9\-_.!~*'()&=+$,/]+)@)?"
    r"([A-Za-z0-9](?:[A-Za-z0-9\-_.]*[A-Za-z0-9.])?|\[[0-9A-Fa-f:.]+\])"
    rf"(?::([0-9]{{1,5}}))?((?:;{_PLAIN_PARAMCHARS}(?:={_PLAIN_PARAMCHARS})?)*)"
)
_TEL_NUMBER_RE: Final = re.compile(r"[0-9A-Fa-f*#+\-.()pw]+|[0-9A-Za-z\-.!~*'()%+]+")


PARSED_CACHE_MAX: Final = 4096
"""How many parsed values of one kind (URI, Via, name-addr) are kept by their text."""
PARSED_CACHE_TEXT_MAX: Final = 256
"""Longer texts are parsed each time: not kept."""


def cache_parsed(cache: dict[str, _Parsed], text: str, value: _Parsed) -> None:
    """Keep ``value``, parsed from ``text``, in ``cache``: bounded, emptied when full."""
    if len(text) <= PARSED_CACHE_TEXT_MAX:
        if len(cache) >= PARSED_CACHE_MAX:
            cache.clear()
        cache[text] = value


# The URIs parsed last, by their text (URIs are immutable): Request-URIs recur in every
# request of a dialog.
_URIS: dict[str, Uri] = {}


def parse_uri(text: str) -> Uri:
    """Parse any URI that may appear in a Request-URI or a name-addr.

    Raises :class:`SipParseError` (400) for text that is not a URI at all, such
    as white space inside (RFC 4475 §3.1.2.8) or angle brackets (§3.1.2.7).
    """
    uri = _URIS.get(text)
    if uri is None:
        uri = _parse_uri(text)
        cache_parsed(_URIS, text, uri)
    return uri


def _parse_uri(text: str) -> Uri:
    fast = _SIP_URI_FAST_RE.fullmatch(text)
    if fast is not None:
        scheme, user, host, port_text, param_text = fast.groups()
        port = None if port_text is None else int(port_text)
        if port is None or port <= _PORT_MAX:
            params: dict[str, str | None] = {}
            if param_text:
                for item in param_text[1:].split(";"):
                    name, equals, value = item.partition("=")
                    params[name.lower()] = value if equals else None
            return SipUri(scheme, host, user=user, port=port, params=params, raw=text)
    return _parse_uri_full(text)


def _parse_uri_full(text: str) -> Uri:
    """:func:`parse_uri` by the whole grammar (the fast path's reference)."""
    colon = text.find(":")
    if colon <= 0 or not _SCHEME_RE.fullmatch(text, 0, colon):
        raise SipParseError(f"not a URI: {text[:60]!r}")
    scheme = text[:colon].lower()
    rest = text[colon + 1 :]
    if scheme in ("sip", "sips"):
        return _parse_sip_uri(scheme, rest, text)
    if any(char in rest for char in ' \t<>"'):
        raise SipParseError(f"white space or delimiter inside URI: {text[:60]!r}")
    if scheme == "tel":
        number, semi, param_text = rest.partition(";")
        if not number or not _TEL_NUMBER_RE.fullmatch(number):
            raise SipParseError(f"bad tel URI: {text[:60]!r}")
        return TelUri(number, _uri_params(param_text, text) if semi else {}, text)
    if not rest:
        raise SipParseError(f"empty URI: {text!r}")
    return AbsoluteUri(scheme, rest, text)


def _parse_sip_uri(scheme: str, rest: str, raw: str) -> SipUri:
    at = rest.find("@")
    user: str | None = None
    password: str | None = None
    if at >= 0:
        userinfo = rest[:at]
        rest = rest[at + 1 :]
        user, sep, pw = userinfo.partition(":")
        if sep:
            if not _PASSWORD_RE.fullmatch(pw):
                raise SipParseError(f"bad password in URI: {raw[:60]!r}")
            password = pw
        if not _USER_RE.fullmatch(user):
            raise SipParseError(f"bad user part in URI: {raw[:60]!r}")
    headers = ""
    question = rest.find("?")
    if question >= 0:
        headers = rest[question + 1 :]
        rest = rest[:question]
        if not _HEADERS_RE.fullmatch(headers):  # also refuses "?" with nothing after it
            raise SipParseError(f"bad headers in URI: {raw[:60]!r}")
    hostport, semi, param_text = rest.partition(";")
    host, port = split_hostport(hostport, what=raw)
    params = _uri_params(param_text, raw) if semi else {}
    return SipUri(
        scheme, host, user=user, password=password, port=port, params=params, headers=headers, raw=raw
    )


def split_hostport(hostport: str, *, what: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` (RFC 3261 §25.1 hostport), IPv6 references included."""
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise SipParseError(f"unterminated IPv6 reference in {what[:60]!r}")
        host = hostport[: close + 1]
        if not _IPV6_RE.fullmatch(host):
            raise SipParseError(f"bad IPv6 reference in {what[:60]!r}")
        port_text = hostport[close + 1 :]
        if port_text and port_text[0] != ":":
            raise SipParseError(f"text after IPv6 reference in {what[:60]!r}")
        port_text = port_text[1:] if port_text else ""
        has_port = bool(hostport[close + 1 :])
    else:
        host, colon, port_text = hostport.partition(":")
        has_port = bool(colon)
        if not _HOSTNAME_RE.fullmatch(host):
            raise SipParseError(f"bad host {host[:60]!r} in {what[:60]!r}")
    if not has_port:
        return host, None
    if (
        not (port_text.isascii() and port_text.isdigit())
        or len(port_text) > _PORT_DIGITS
        or int(port_text) > _PORT_MAX
    ):
        raise SipParseError(f"bad port {port_text[:20]!r} in {what[:60]!r}")
    return host, int(port_text)


def _uri_params(text: str, raw: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for item in text.split(";"):
        name, equals, param_value = item.partition("=")
        if not name or not _PARAMCHARS_RE.fullmatch(name):
            raise SipParseError(f"bad URI parameter {item[:40]!r} in {raw[:60]!r}")
        if equals:
            if not _PARAMCHARS_RE.fullmatch(param_value):
                raise SipParseError(f"bad URI parameter value {item[:40]!r} in {raw[:60]!r}")
            params[name.lower()] = param_value
        else:
            params[name.lower()] = None
    return params


def strip_brackets(host: str) -> str:
    """``[::1]`` -> ``::1`` (an IPv6 reference as written in SIP, RFC 3261 §25.1)."""
    if host[:1] == "[" and host[-1:] == "]":
        return host[1:-1]
    return host


@lru_cache(maxsize=8192)
def canonical_ip(host: str) -> str | None:
    """The canonical text of an IP literal (brackets allowed), or None for a host name.

    Canonical as the kernel reports a peer (lower-case, compressed IPv6, scope id
    kept), so that ``[0:0::1]`` and ``::1`` compare equal.
    """
    try:
        return str(ipaddress.ip_address(strip_brackets(host)))
    except ValueError:
        return None


def without_scope(ip: str) -> str:
    """An IPv6 literal without its ``%zone`` suffix (not allowed in a Via received, RFC 3261 §25.1)."""
    return ip.partition("%")[0]
