"""Host strings as the transport sees them: IP literals, their family and canonical text.

No I/O.  Everything here is cached because it runs on the send path of every
message: a destination host is classified once, then costs one dict probe.
"""

from __future__ import annotations

import ipaddress
import socket
from functools import lru_cache


def strip_brackets(host: str) -> str:
    """``[::1]`` -> ``::1`` (an IPv6 reference as written in SIP, RFC 3261 §25.1)."""
    if host[:1] == "[" and host[-1:] == "]":
        return host[1:-1]
    return host


@lru_cache(maxsize=8192)
def parse_ip(host: str) -> tuple[socket.AddressFamily, str] | None:
    """``(family, canonical text)`` of an IP literal, brackets allowed; None for a host name.

    The canonical text is what the kernel reports for a peer (``inet_ntop``:
    lower-case, compressed IPv6, scope id kept), so that a destination written
    ``[0:0::1]`` finds the connection whose peer is ``::1``.
    """
    try:
        ip = ipaddress.ip_address(strip_brackets(host))
    except ValueError:
        return None
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6  # noqa: PLR2004 - IP version
    return family, str(ip)


def without_scope(ip: str) -> str:
    """An IPv6 literal without its ``%zone`` suffix (not allowed in a Via received, RFC 3261 §25.1)."""
    return ip.partition("%")[0]
