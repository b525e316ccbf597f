"""RFC 3261 §25 lexical rules shared by the header and URI parsers.

The helpers here take *unfolded* header values (RFC 3261 §7.3.1: folded lines
are replaced by a single SP before interpretation) and are liberal where §25
allows linear white space: around ``;``, ``=``, ``/``, ``:`` and ``,``
(SEMI, EQUAL, SLASH, COLON and COMMA all carry SWS on both sides).
"""

from __future__ import annotations

import re
from typing import Final

from sipha.sip.errors import SipParseError

# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_RE: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# word adds the separators allowed in Call-ID: "(" / ")" / "<" / ">" / ":" / "\" / DQUOTE /
# "/" / "[" / "]" / "?" / "{" / "}"
WORD_RE: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+")
# quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
# qdtext = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII  (no control but HTAB)
# quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)       (any ASCII but CR and LF)
QUOTED_RE: Final = re.compile(r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*"')
DIGITS_RE: Final = re.compile(r"[0-9]+")
# Linear white space after unfolding.
WS: Final = " \t"

# The largest value RFC 3261 allows for CSeq (§8.1.1.5: "MUST be less than 2**31")
# and for the generic delta-seconds scalars.
MAX_CSEQ: Final = 2**31 - 1


def is_token(text: str) -> bool:
    """True when ``text`` is a non-empty RFC 3261 token."""
    return TOKEN_RE.fullmatch(text) is not None


def split_commas(value: str) -> list[str]:
    """Split a header value at the commas that separate its elements.

    Commas inside quoted strings and inside ``<...>`` belong to the element
    (RFC 3261 §7.3.1: headers whose grammar is a comma-separated list may be
    combined into one line).  Elements are returned stripped of LWS.
    """
    if '"' not in value and "<" not in value:
        return [part.strip(WS) for part in value.split(",")]
    return [part.strip(WS) for part in _split_outside(value, ",", angle_brackets=True)]


def split_semis(text: str) -> list[str]:
    """Split at semicolons outside quoted strings (parameter lists)."""
    if '"' not in text:
        return text.split(";")
    return _split_outside(text, ";", angle_brackets=False)


def _split_outside(text: str, separator: str, *, angle_brackets: bool) -> list[str]:
    """Split ``text`` at ``separator`` where it is not inside a quoted string (or ``<...>``)."""
    parts: list[str] = []
    start = 0
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        if char == '"':
            match = QUOTED_RE.match(text, index)
            if match is None:
                raise SipParseError("unterminated quoted string")
            index = match.end()
            continue
        if char == "<" and angle_brackets:
            close = text.find(">", index)
            if close < 0:
                raise SipParseError("'<' without '>'")
            index = close + 1
            continue
        if char == separator:
            parts.append(text[start:index])
            start = index + 1
        index += 1
    parts.append(text[start:])
    return parts


def parse_params(text: str, *, what: str) -> dict[str, str | None]:
    """Parse ``;name[=value]`` generic-params (RFC 3261 §25.1 generic-param).

    ``text`` is everything after the element proper, starting with ``;`` or
    empty.  Names are case-insensitive and returned lower-cased; values keep
    their case (branch and tag compare case-sensitively, §17.2.3 / §19.3) and
    quoted values keep their quotes.  A flag parameter maps to None.
    """
    params: dict[str, str | None] = {}
    text = text.strip(WS)
    if not text:
        return params
    if text[0] != ";":
        raise SipParseError(f"unexpected text before parameters in {what}: {text[:40]!r}")
    for item in split_semis(text)[1:]:
        name, equals, raw_value = item.partition("=")
        name = name.strip(WS)
        if not TOKEN_RE.fullmatch(name):
            raise SipParseError(f"bad parameter name {name!r} in {what}")
        if not equals:
            params[name.lower()] = None
            continue
        param_value = raw_value.strip(WS)
        if not param_value:
            raise SipParseError(f"empty value of parameter {name!r} in {what}")
        if param_value[0] == '"':
            if QUOTED_RE.fullmatch(param_value) is None:
                raise SipParseError(f"bad quoted value of {name!r} in {what}")
        elif not _GEN_VALUE_RE.fullmatch(param_value):
            raise SipParseError(f"bad value {param_value!r} of parameter {name!r} in {what}")
        params[name.lower()] = param_value
    return params


# gen-value = token / host / quoted-string; host adds "[" ":" "]" for IPv6 references.
_GEN_VALUE_RE: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+")


def unquote(text: str) -> str:
    """The content of a quoted-string with quoted-pairs resolved; tokens pass through."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':  # noqa: PLR2004 - the two quotes
        inner = text[1:-1]
        if "\\" in inner:
            return re.sub(r"\\(.)", r"\1", inner)
        return inner
    return text


def parse_uint(text: str, *, what: str, maximum: int) -> int:
    """A 1*DIGIT scalar no larger than ``maximum``."""
    text = text.strip(WS)
    if not DIGITS_RE.fullmatch(text):
        raise SipParseError(f"{what} is not a number: {text[:40]!r}")
    # Bound the work before int(): a 10,000-digit "number" is still one line.
    if len(text.lstrip("0")) > len(str(maximum)) or int(text) > maximum:
        raise SipParseError(f"{what} out of range (max {maximum}): {text[:40]!r}")
    return int(text)
