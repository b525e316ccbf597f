"""sipha.net: the asyncio transport layer (RFC 3261 §18), the only package besides app.py doing I/O.

:class:`TransportManager` owns the UDP sockets, TCP servers and connections
and the resolver; :mod:`sipha.net.via` holds the pure RFC 3261 §18.2 /
RFC 3581 rules for the top Via of requests received and responses sent.
"""

from sipha.net.manager import OnTransportError, TransportManager
from sipha.net.resolve import Resolver
from sipha.net.stats import TransportStats
from sipha.net.tcp import OnBadStream, OnMessage
from sipha.net.via import (
    ViaStampable,
    response_destination,
    response_fallback_destination,
    stamp_received,
)

__all__ = [
    "OnBadStream",
    "OnMessage",
    "OnTransportError",
    "Resolver",
    "TransportManager",
    "TransportStats",
    "ViaStampable",
    "response_destination",
    "response_fallback_destination",
    "stamp_received",
]
