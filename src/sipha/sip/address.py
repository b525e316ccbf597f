"""The value types every layer shares: transport addresses, default ports, host keys.

At the bottom of the package (it imports nothing of sipha): the parser, the
transaction layer, the proxy core, the pair monitor and the asyncio transports all
name a peer the same way.  See docs/design.md §6 (layers).
"""

from __future__ import annotations

import ipaddress
from typing import Final

# RFC 3261 §18: UDP is the one unreliable transport SIP defines; TCP, TLS, SCTP (RFC 4168)
# and WebSocket (RFC 7118) are reliable.
UNRELIABLE_TRANSPORTS: Final = frozenset({"UDP"})
# RFC 3261 §19.1.2: "the default port value is transport and scheme dependent.  The default
# is 5060 for sip: using UDP, TCP, or SCTP.  The default is 5061 for sip: using TLS over TCP
# and sips: over TCP."
SIP_PORT: Final = 5060
SIPS_PORT: Final = 5061


class Address:
    """Where a message goes or came from: a transport, a host and a port.

    The transport layer decides what ``host`` and ``port`` mean (for responses,
    RFC 3261 §18.2.2 and RFC 3581 choose the real destination from the Via);
    the protocol core only needs to know whether the transport is reliable.

    A value (equality, hash and repr by its fields, like a frozen dataclass) written as a
    plain class: mypyc compiles its ``__init__``, ``__eq__`` and ``__hash__``, where a
    dataclass's are generated at import and run interpreted (about 5,000 instructions per
    instance, several per message; the compiled build: docs/design.md §6).
    """

    __slots__ = ("domain", "host", "port", "transport")

    def __init__(self, transport: str, host: str, port: int, domain: str = "") -> None:
        self.transport: Final = transport
        """Transport name as in a Via: UDP, TCP, TLS, SCTP, WS, WSS."""
        self.host: Final = host
        self.port: Final = port
        self.domain: Final = domain
        """TLS only: the SIP domain a next hop located by DNS was resolved from (RFC 5922 §4), sent
        as SNI and proven by the certificate (docs/design.md §3 rule 3); "" for any other address."""

    def __eq__(self, other: object) -> bool:
        if type(other) is not Address:
            return NotImplemented
        return (
            self.port == other.port
            and self.host == other.host
            and self.transport == other.transport
            and self.domain == other.domain
        )

    def __ne__(self, other: object) -> bool:
        if type(other) is not Address:
            return NotImplemented
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash((self.transport, self.host, self.port, self.domain))

    def __repr__(self) -> str:
        return (
            f"Address(transport={self.transport!r}, host={self.host!r}, port={self.port!r},"
            f" domain={self.domain!r})"
        )

    @property
    def reliable(self) -> bool:
        """Whether the transport is reliable (RFC 3261 §17: no retransmissions needed)."""
        transport = self.transport
        return transport != "UDP" and transport.upper() not in UNRELIABLE_TRANSPORTS


def default_port(transport: str) -> int:
    """The port a hop on ``transport`` listens on when none is given (RFC 3261 §19.1.2, §18.2.2)."""
    return SIPS_PORT if transport.upper() == "TLS" else SIP_PORT


def host_key(host: str) -> str:
    """A host as compared with another: lower case, IPv6 without brackets (RFC 3261 §19.1.4)."""
    host = host.lower()
    return host[1:-1] if host.startswith("[") else host


def is_wildcard(host: str) -> bool:
    """Whether ``host`` is the unspecified address (0.0.0.0 or ::): "every interface"."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False
