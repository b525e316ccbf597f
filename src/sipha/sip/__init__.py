"""sipha.sip: the sans-IO SIP message layer (RFC 3261 §7, §18.3, §19, §20, §25).

Bytes in, typed messages out, and back to bytes; no sockets, no clock.
"""

from sipha.sip.errors import (
    MessageTooLarge,
    SipParseError,
    VersionNotSupported,
)
from sipha.sip.fields import Field
from sipha.sip.framer import Frame, FramerEvent, FramingError, Ping, StreamFramer
from sipha.sip.headers import CSeq, NameAddr, Via, parse_name_addr, parse_via
from sipha.sip.message import Message, Request, Response, canonical_name, make_response
from sipha.sip.parser import DEFAULT_LIMITS, ParserLimits, parse_message
from sipha.sip.uri import AbsoluteUri, SipUri, TelUri, Uri, parse_uri

__all__ = [
    "DEFAULT_LIMITS",
    "AbsoluteUri",
    "CSeq",
    "Field",
    "Frame",
    "FramerEvent",
    "FramingError",
    "Message",
    "MessageTooLarge",
    "NameAddr",
    "ParserLimits",
    "Ping",
    "Request",
    "Response",
    "SipParseError",
    "SipUri",
    "StreamFramer",
    "TelUri",
    "Uri",
    "VersionNotSupported",
    "Via",
    "canonical_name",
    "make_response",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
]
