"""sipha.net: the asyncio transport layer (RFC 3261 §18) and the driver of sans-IO endpoints.

:class:`TransportManager` owns the UDP sockets, TCP servers and connections
and the resolver; :class:`sipha.net.driver.Driver` feeds an endpoint (the proxy
core, a simulated server) what they receive and its timers, and sends what it
produces.  The pure RFC 3261 §18.2 / RFC 3581 rules for the top Via of requests
received and responses sent are in :mod:`sipha.proxy.via`.
"""

from sipha.net.manager import OnTransportError, TransportManager
from sipha.net.resolve import Resolver
from sipha.net.stats import TransportStats
from sipha.net.tcp import OnBadStream, OnMessage

__all__ = [
    "OnBadStream",
    "OnMessage",
    "OnTransportError",
    "Resolver",
    "TransportManager",
    "TransportStats",
]
