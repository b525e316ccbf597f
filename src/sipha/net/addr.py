"""Host strings as the transport sees them: IP literals, their family and canonical text.

No I/O.  Everything here is cached because it runs on the send path of every
message: a destination host is classified once, then costs one dict probe.
"""

from __future__ import annotations

import socket
from functools import lru_cache

from sipha.sip.uri import canonical_ip, strip_brackets, without_scope

__all__ = ["parse_ip", "strip_brackets", "without_scope"]


@lru_cache(maxsize=8192)
def parse_ip(host: str) -> tuple[socket.AddressFamily, str] | None:
    """``(family, canonical text)`` of an IP literal, brackets allowed; None for a host name.

    The canonical text is what the kernel reports for a peer (``inet_ntop``:
    lower-case, compressed IPv6, scope id kept), so that a destination written
    ``[0:0::1]`` finds the connection whose peer is ``::1``.
    """
    canonical = canonical_ip(host)
    if canonical is None:
        return None
    return (socket.AF_INET6 if ":" in canonical else socket.AF_INET), canonical
