"""RFC 4475 section 3.1 (parser / syntax) torture messages and their expected outcomes.

Fixture provenance
------------------
Every ``fixtures/rfc4475/<name>.dat`` file is byte-for-byte the file of the same
name in ``torture.tgz``.  That archive is the base64 block in RFC 4475 Appendix A.1
("Bit-Exact Archive of Each Test Message"), which the RFC gives as the
authoritative form of every message.  The base64 text was decoded, the gzip CRC
checked, and the tar unpacked.  The archive's sha256 is
4ce03214334379f350f0d1f7998ac03dbe1ce046676551adca2a5e8fb0f819dd.  The archive
also holds the section 3.2-3.4 messages and a stray ``test.dat`` that is not in
the RFC.  Those are not copied here.

As a cross-check, all 32 messages were also rebuilt from the RFC body text by
applying the section 2 markup rules (``<allOneLine>``, ``<hex>``, ``<repeat>``,
CRLF line ends).  29 match the archive byte for byte.  The 3 that differ are
shown below.  In each case the fixture keeps the archive bytes, because the RFC
says the archive is the bit-exact form:

* ``trws``: the archive's Via host is ``host1.examle.com`` (a typo).  The RFC
  text has ``host1.example.com``.  This does not change the outcome.
* ``baddn``: the archive ends with ``l: 0`` CRLF and has **no** empty line
  (CRLF) to end the header section.  The RFC text implies one, as it does for
  every bodyless message.  So a datagram parser sees an unterminated header
  section, and a stream parser waits for more bytes.  Either way, the message
  is rejected.
* ``dblreq``: the archive has one extra CRLF between the REGISTER and the
  INVITE, and one extra CRLF after the INVITE body (750 octets, against 746 from
  the RFC text).  All of these octets come after the REGISTER, so they are
  trailing noise in the datagram.

Transport-dependent cases (UDP datagram vs. stream transport)
-------------------------------------------------------------
* ``dblreq``: this is one UDP datagram.  The REGISTER (Content-Length: 0) is
  valid, and the octets after it, which look like an INVITE, must be discarded
  (RFC 3261 section 18.3).  A proxy that forwards the REGISTER must not include
  the INVITE octets.  If the same bytes came over a stream, they would be
  framed as a second message.  That INVITE is itself broken: it declares
  Content-Length 150, but 153 octets of SDP follow it, plus a CRLF.
* ``clerr``: Content-Length 9999 is larger than the datagram.  Over UDP the
  answer is 400.  Over TCP the receiver can only wait for more data, then close
  the connection if none arrives in a reasonable time.
* ``ncl``: with Content-Length -999 the framing fails.  Over UDP, reply with an
  error and discard the rest of the datagram.  Over TCP the error cannot be
  recovered from, so close the connection.  The RFC says the same applies to a
  non-numeric value such as ``Content-Length: five``.
* ``baddn``: see above.  There is no empty line at the end of the headers.

In this table ``status`` is the final response that a *proxy* sends back for
an invalid *request*.  Invalid *responses* are never answered: they are
silently dropped (``drop=True``).  Where the RFC lets an element either reject
the message or be liberal and repair it, the strict choice (reject) is
recorded.  The one exception is where the RFC says that a proxy should not
reject (``baddate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

FIXTURE_DIR: Final[Path] = Path(__file__).resolve().parent / "fixtures" / "rfc4475"


@dataclass(frozen=True, slots=True)
class TortureCase:
    """One RFC 4475 section 3.1 message and what a proxy should do with it."""

    name: str
    """Archive file stem, e.g. ``"wsinv"`` (fixture is ``<name>.dat``)."""
    section: str
    """RFC 4475 section number, e.g. ``"3.1.1.1"``."""
    title: str
    """Section title as printed in the RFC."""
    valid: bool
    """True if a proxy must accept this message (parse it and process or forward it)."""
    status: int | None
    """Response code for an invalid request.  None for accepted messages and invalid responses."""
    drop: bool
    """True for an invalid response that must be silently discarded."""
    rfc_says: str
    """The RFC's own sentence(s) stating the expected behaviour."""

    @property
    def path(self) -> Path:
        return FIXTURE_DIR / f"{self.name}.dat"

    def load(self) -> bytes:
        return self.path.read_bytes()


def _ok(name: str, section: str, title: str, rfc_says: str) -> TortureCase:
    return TortureCase(name, section, title, True, None, False, rfc_says)


def _reject(name: str, section: str, title: str, status: int, rfc_says: str) -> TortureCase:
    return TortureCase(name, section, title, False, status, False, rfc_says)


def _drop(name: str, section: str, title: str, rfc_says: str) -> TortureCase:
    return TortureCase(name, section, title, False, None, True, rfc_says)


CASES: Final[tuple[TortureCase, ...]] = (
    # ---------------------------------------------------------------- 3.1.1 Valid Messages
    _ok(
        "wsinv",
        "3.1.1.1",
        "A Short Tortuous INVITE",
        "All elements should treat this as a well-formed request. ... Proxies would "
        "forward this header field [UnknownHeaderWithUnusualValue] unchanged.",
    ),
    _ok(
        "intmeth",
        "3.1.1.2",
        "Wide Range of Valid Characters",
        "If this unusual URI has been defined at a proxy, the proxy will forward this "
        "request normally.  Otherwise, a proxy will generate a 404.  Endpoints will "
        "generate a 501 listing the methods they understand in an Allow header field.",
    ),
    _ok(
        "esc01",
        "3.1.1.3",
        "Valid Use of the % Escaping Mechanism",
        "A parser must accept this as a well-formed message.",
    ),
    _ok(
        "escnull",
        "3.1.1.4",
        "Escaped Nulls in URIs",
        "The message is well formed - parsers must accept this message.",
    ),
    _ok(
        "esc02",
        "3.1.1.5",
        "Use of % When It Is Not an Escape",
        "A parser should accept this message as well formed.  A proxy would forward or "
        "reject the message depending on what the Request-URI meant to it.  An endpoint "
        "would reject this message with a 501.",
    ),
    _ok(
        "lwsdisp",
        "3.1.1.6",
        "Message with No LWS between Display Name and <",
        "This OPTIONS request is not valid per the grammar in RFC 3261 ... This has been "
        "identified as a specification bug ... Elements should accept this request as "
        "well formed.",
    ),
    _ok(
        "longreq",
        "3.1.1.7",
        "Long Values in Header Fields",
        "This well-formed request contains header fields with many values and values that are very long.",
    ),
    # UDP-only case: the REGISTER is valid and the INVITE-like trailing octets in the
    # datagram are discarded (RFC 3261 section 18.3); see the module docstring.
    _ok(
        "dblreq",
        "3.1.1.8",
        "Extra Trailing Octets in a UDP Datagram",
        "A SIP element receiving this datagram would handle the REGISTER request "
        "normally and ignore the extra bits that look like an INVITE request.  If the "
        "element is a proxy choosing to forward the REGISTER, the INVITE octets would "
        "not appear in the forwarded request.",
    ),
    _ok(
        "semiuri",
        "3.1.1.9",
        "Semicolon-Separated Parameters in URI User Part",
        "Receiving elements will accept this as a well-formed message.  The Request-URI "
        'will parse so that the user part is "user;par=u@example.net".',
    ),
    _ok(
        "transports",
        "3.1.1.10",
        "Varied and Unknown Transport Types",
        "Parsers must accept this message as well formed.",
    ),
    _ok(
        "mpart01",
        "3.1.1.11",
        "Multipart MIME Message",
        "Parsers must accept this message as well formed, even if the application above "
        "the parser does not support multipart/signed.",
    ),
    _ok(
        "unreason",
        "3.1.1.12",
        "Unusual Reason Phrase",
        "This response is well formed.  A parser must accept this message.",
    ),
    _ok(
        "noreason",
        "3.1.1.13",
        "Empty Reason Phrase",
        "This well-formed response contains no reason phrase.  A parser must accept this message.",
    ),
    # -------------------------------------------------------------- 3.1.2 Invalid Messages
    _reject(
        "badinv01",
        "3.1.2.1",
        "Extraneous Header Field Separators",
        400,
        "This message is syntactically invalid.  An element receiving this request "
        "should respond with a 400 Bad Request error.",
    ),
    # Transport-dependent: 400 over UDP; over TCP wait for more data, then close.
    _reject(
        "clerr",
        "3.1.2.2",
        "Content Length Larger Than Message",
        400,
        "When sent over UDP (as this message ostensibly was), the receiving element "
        "should respond with a 400 Bad Request error.  If this message arrived over a "
        "stream-based transport, such as TCP, there's not much the receiving party "
        "could do but wait for more data on the stream and close the connection if "
        "none is forthcoming within a reasonable period of time.",
    ),
    # Transport-dependent: error + discard datagram remainder over UDP; close over TCP.
    _reject(
        "ncl",
        "3.1.2.3",
        "Negative Content-Length",
        400,
        "An element receiving this message should respond with an error.  This request "
        "appeared over UDP, so the remainder of the datagram can simply be discarded.  "
        "If a request like this arrives over TCP, the framing error is not recoverable, "
        "and the connection should be closed.",
    ),
    _reject(
        "scalar02",
        "3.1.2.4",
        "Request Scalar Fields with Overlarge Values",
        400,
        "An element receiving this request should respond with a 400 Bad Request due to the CSeq error.",
    ),
    _drop(
        "scalarlg",
        "3.1.2.5",
        "Response Scalar Fields with Overlarge Values",
        "An element receiving this response will simply discard it.",
    ),
    _reject(
        "quotbal",
        "3.1.2.6",
        "Unterminated Quoted String in Display Name",
        400,
        "An element receiving this request should return a 400 Bad Request error.  "
        "An element could attempt to infer a terminating quote and accept the message.",
    ),
    _reject(
        "ltgtruri",
        "3.1.2.7",
        "<> Enclosing Request-URI",
        400,
        "It is reasonable always to reject a request with this error with a 400 Bad "
        "Request.  Elements attempting to be liberal with what they accept may choose "
        "to ignore the brackets.",
    ),
    _reject(
        "lwsruri",
        "3.1.2.8",
        "Malformed SIP Request-URI (embedded LWS)",
        400,
        "An element receiving this request should respond with a 400 Bad Request.  An "
        "element could attempt to ignore the embedded LWS for those schemes (like SIP) "
        "where doing so would not introduce ambiguity.",
    ),
    _reject(
        "lwsstart",
        "3.1.2.9",
        "Multiple SP Separating Request-Line Elements",
        400,
        "It is acceptable to reject this request as malformed.  An element that is "
        "liberal in what it accepts may ignore these extra SP characters when "
        "processing the request.",
    ),
    # Archive bytes have Via host "host1.examle.com" (RFC text: host1.example.com).
    _reject(
        "trws",
        "3.1.2.10",
        "SP Characters at End of Request-Line",
        400,
        "It is acceptable to reject this request as malformed.  An element that is "
        "liberal in what it accepts may ignore these extra SP characters when "
        "processing the request.",
    ),
    _reject(
        "escruri",
        "3.1.2.11",
        "Escaped Headers in SIP Request-URI",
        400,
        "It is acceptable for an element to reject this request with a 400 Bad "
        "Request.  An element could choose to be liberal in what it accepts and ignore "
        "the escaped headers.",
    ),
    # Syntactically invalid (Date zone "EST", only "GMT" is legal), but the RFC says an
    # element should not reject it unless Date matters to its processing.  Date is
    # irrelevant to a proxy, so the proxy accepts it and forwards the Date unchanged.
    _ok(
        "baddate",
        "3.1.2.12",
        "Invalid Time Zone in Date Header Field",
        "This INVITE is invalid, as it contains a non-GMT time zone in the SIP Date "
        "header field.  It is acceptable to reject this request as malformed (though "
        "an element shouldn't do that unless the contents of the Date header field "
        "were actually important to its processing).  An element wishing to be "
        "liberal in what it accepts could ignore this value altogether if it wasn't "
        "going to use the Date header field anyway.",
    ),
    _reject(
        "regbadct",
        "3.1.2.13",
        "Failure to Enclose name-addr URI in <>",
        400,
        "It is reasonable for an element receiving this request to respond with a 400 "
        "Bad Request.  An element choosing to be liberal in what it accepts could "
        "infer the angle brackets since there is no ambiguity in this example.",
    ),
    _reject(
        "badaspec",
        "3.1.2.14",
        "Spaces within addr-spec",
        400,
        "Parsers receiving this request must not break.  It is reasonable to reject "
        "this request with a 400 Bad Request response.  Elements attempting to be "
        "liberal may ignore the spaces.",
    ),
    # The archive bytes have NO empty line ending the header section (see docstring).
    _reject(
        "baddn",
        "3.1.2.15",
        "Non-token Characters in Display Name",
        400,
        "It is reasonable always to reject this kind of error with a 400 Bad Request response.",
    ),
    _reject(
        "badvers",
        "3.1.2.16",
        "Unknown Protocol Version",
        505,
        "The element should respond to the request with a 505 Version Not Supported error.",
    ),
    _reject(
        "mismatch01",
        "3.1.2.17",
        "Start Line and CSeq Method Mismatch",
        400,
        "Any element receiving this request will respond with a 400 Bad Request.",
    ),
    # Not a "reject vs. be liberal" choice: the RFC prefers 501 (esp. at proxies) and
    # allows 400.  We use the preferred 501.
    _reject(
        "mismatch02",
        "3.1.2.18",
        "Unknown Method with CSeq Method Mismatch",
        501,
        "Any element receiving this response should respond with a 501 Not "
        "Implemented.  A 400 Bad Request is also acceptable, but choosing a 501 "
        "(particularly at proxies) has better future-proof characteristics.",
    ),
    _drop(
        "bigcode",
        "3.1.2.19",
        "Overlarge Response Code",
        "This response has a response code larger than 699.  An element receiving "
        "this response should simply drop it.",
    ),
)

CASES_BY_NAME: Final[dict[str, TortureCase]] = {case.name: case for case in CASES}


def load(name: str) -> bytes:
    """Return the exact bytes of fixture ``<name>.dat`` (e.g. ``load("wsinv")``)."""
    if name not in CASES_BY_NAME:
        raise KeyError(f"unknown RFC 4475 section 3.1 message: {name!r}")
    return CASES_BY_NAME[name].load()
