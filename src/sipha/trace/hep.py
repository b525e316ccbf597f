"""HEPv3 packets: one SIP message, its addresses, transport and time, as a HEP collector reads them.

No I/O and no clock: :func:`encode` is a pure function of its arguments; the caller
(:mod:`sipha.trace.tracer`) gives the time and sends the bytes.  The format is the
"HEP3 Network Protocol Specification" (sipcapture.org, rev. 37; see docs/tracing.md):

    "Each packet starts with the HEP3 header ... a 4-octet protocol identifier with the
    fixed value 0x48455033 (ASCII „HEP3“) and a two-octet length value (network byte
    order).  The length value specifies the total packet length including the HEP3 or
    EEP3 ID, and the length field itself and the payload."

then chunks, each "a two-octet vendor ID and a two-octet type ID (both in network byte
order)" and a length that "specifies the total length of the chunk, including the vendor
ID, type ID, length and payload fields".  Every chunk here has the generic vendor ID 0.

The chunks go in the order of the spec's reference agents (captagent, hep-c): family,
protocol, ports, time, protocol type, capture id, then the addresses, the key and the
payload last.  The spec lets a receiver take them in any order, but receivers written
against those agents (sngrep up to 1.4.6) read that layout at fixed offsets.
"""

from __future__ import annotations

import ipaddress
import struct
from functools import lru_cache
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from sipha.sip.address import Address

MAGIC: Final = b"HEP3"
MAX_LENGTH: Final = 65535
"""The header's length field is two octets: "a possible range of values between 6 and 65535"."""

# Generic chunk types (vendor 0x0000), from the spec's table.
IP_FAMILY: Final = 0x0001
IP_PROTOCOL: Final = 0x0002
IPV4_SOURCE: Final = 0x0003
IPV4_DESTINATION: Final = 0x0004
IPV6_SOURCE: Final = 0x0005
IPV6_DESTINATION: Final = 0x0006
SOURCE_PORT: Final = 0x0007
DESTINATION_PORT: Final = 0x0008
TIME_SECONDS: Final = 0x0009
TIME_MICROSECONDS: Final = 0x000A
PROTOCOL_TYPE: Final = 0x000B
CAPTURE_ID: Final = 0x000C
AUTH_KEY: Final = 0x000E
PAYLOAD: Final = 0x000F

PROTOCOL_TYPE_SIP: Final = 0x01
"""Capture protocol type 0x01: SIP."""
FAMILY_IPV4: Final = 2
FAMILY_IPV6: Final = 10
"""The address family as the socket API numbers it on Linux (AF_INET, AF_INET6): what the
reference agents send and the receivers compare with."""
PROTOCOL_UDP: Final = 17
PROTOCOL_TCP: Final = 6
PROTOCOL_TLS: Final = 22
"""TLS has no IP protocol number of its own (it runs over TCP).  Kamailio's siptrace marks
tls: with IPPROTO_IDP (22), "fake proto type", and its sipcapture reads 22 back as TLS: the
convention Homer and Kamailio collectors share, so sipha follows it."""
IP_PROTOCOLS: Final = {"UDP": PROTOCOL_UDP, "TCP": PROTOCOL_TCP, "TLS": PROTOCOL_TLS}

# The fixed part: header, then family, protocol, ports, seconds, microseconds, protocol
# type, capture id.  Each chunk's head (vendor, type, length) is a constant: packed once
# here, so that a message costs one pack of its own values (it runs for every message).
_CHUNK: Final = struct.Struct("!HHH")
_HEAD: Final = _CHUNK.size
_FIXED: Final = struct.Struct("!4sH" + "6sB" * 2 + "6sH" * 2 + "6sI" * 2 + "7s" + "6sI")
_FAMILY_HEAD: Final = _CHUNK.pack(0, IP_FAMILY, _HEAD + 1)
_PROTOCOL_HEAD: Final = _CHUNK.pack(0, IP_PROTOCOL, _HEAD + 1)
_SOURCE_PORT_HEAD: Final = _CHUNK.pack(0, SOURCE_PORT, _HEAD + 2)
_DESTINATION_PORT_HEAD: Final = _CHUNK.pack(0, DESTINATION_PORT, _HEAD + 2)
_SECONDS_HEAD: Final = _CHUNK.pack(0, TIME_SECONDS, _HEAD + 4)
_MICROSECONDS_HEAD: Final = _CHUNK.pack(0, TIME_MICROSECONDS, _HEAD + 4)
_SIP_CHUNK: Final = _CHUNK.pack(0, PROTOCOL_TYPE, _HEAD + 1) + bytes([PROTOCOL_TYPE_SIP])
_CAPTURE_ID_HEAD: Final = _CHUNK.pack(0, CAPTURE_ID, _HEAD + 4)
_IPV4_HEADS: Final = (_CHUNK.pack(0, IPV4_SOURCE, _HEAD + 4), _CHUNK.pack(0, IPV4_DESTINATION, _HEAD + 4))
_IPV6_HEADS: Final = (_CHUNK.pack(0, IPV6_SOURCE, _HEAD + 16), _CHUNK.pack(0, IPV6_DESTINATION, _HEAD + 16))


@lru_cache(maxsize=4096)
def packed_ip(host: str) -> bytes:
    """The 4 or 16 octets of an IP literal (IPv6 with or without brackets, scope id ignored).

    ValueError for anything else (a host name: HEP carries addresses only).
    """
    address = ipaddress.ip_address(host.strip("[]").partition("%")[0])
    return address.packed


def encode(
    payload: bytes,
    source: Address,
    destination: Address,
    time_ns: int,
    *,
    capture_id: int,
    auth_key: bytes = b"",
) -> bytes:
    """The HEPv3 packet of one SIP message ``payload`` that went from ``source`` to ``destination``.

    ``time_ns``: when, in nanoseconds since the epoch; the transport is ``source``'s (UDP,
    TCP or TLS); ``capture_id``: the capture agent ID (chunk 0x000c, uint32);
    ``auth_key``: the collector's password (chunk 0x000e), none when empty.  ValueError
    when an address is not an IP literal, the transport is none of the three, or the
    packet would exceed 65535 octets.
    """
    protocol = IP_PROTOCOLS.get(source.transport.upper())
    if protocol is None:
        raise ValueError(f"no HEP IP protocol for transport {source.transport!r}")
    source_ip = packed_ip(source.host)
    destination_ip = packed_ip(destination.host)
    if len(source_ip) != len(destination_ip):
        # One IPv4 and one IPv6 address (a dual-stack socket): both as IPv6, the IPv4 one
        # mapped (RFC 4291 §2.5.5.2), as the kernel shows them on such a socket.
        source_ip, destination_ip = _as_ipv6(source_ip), _as_ipv6(destination_ip)
    if len(source_ip) == 4:  # noqa: PLR2004 - an IPv4 address
        family, (source_head, destination_head) = FAMILY_IPV4, _IPV4_HEADS
    else:
        family, (source_head, destination_head) = FAMILY_IPV6, _IPV6_HEADS
    key_chunk = _CHUNK.pack(0, AUTH_KEY, _HEAD + len(auth_key)) + auth_key if auth_key else b""
    total = _FIXED.size + 2 * (_HEAD + len(source_ip)) + len(key_chunk) + _HEAD + len(payload)
    if total > MAX_LENGTH:
        raise ValueError(f"a HEP packet holds at most {MAX_LENGTH} octets; this one would be {total}")
    seconds, nanoseconds = divmod(time_ns, 1_000_000_000)
    fixed = _FIXED.pack(
        MAGIC,
        total,
        _FAMILY_HEAD, family,
        _PROTOCOL_HEAD, protocol,
        _SOURCE_PORT_HEAD, source.port,
        _DESTINATION_PORT_HEAD, destination.port,
        _SECONDS_HEAD, seconds & 0xFFFFFFFF,  # uint32 seconds: wraps in 2106
        _MICROSECONDS_HEAD, nanoseconds // 1000,
        _SIP_CHUNK,
        _CAPTURE_ID_HEAD, capture_id,
    )  # fmt: skip
    return b"".join(
        (
            fixed,
            source_head,
            source_ip,
            destination_head,
            destination_ip,
            key_chunk,
            _CHUNK.pack(0, PAYLOAD, _HEAD + len(payload)),
            payload,
        )
    )


def _as_ipv6(packed: bytes) -> bytes:
    return packed if len(packed) == 16 else b"\x00" * 10 + b"\xff\xff" + packed  # noqa: PLR2004
