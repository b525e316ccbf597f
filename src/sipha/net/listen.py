"""Listen entries: which transports sipha serves, and the (family, IP) a listen host binds."""

from __future__ import annotations

import asyncio
import socket
from typing import Final

from sipha.net.addr import parse_ip

TRANSPORTS: Final = ("UDP", "TCP", "TLS")


def check_listen_transport(transport: str) -> None:
    """ValueError unless ``transport`` is one sipha listens on (udp, tcp or tls, any case)."""
    if transport.upper() not in TRANSPORTS:
        raise ValueError(f"unsupported transport {transport!r} (udp, tcp or tls)")


def resolve_listen(transport: str, host: str, port: int) -> tuple[socket.AddressFamily, str]:
    """(family, IP) to bind for a listen entry: an IP literal as is, a name by getaddrinfo.

    Blocking for a name: at start, or in an executor (:meth:`TransportManager.add_listen`).
    """
    parsed = parse_ip(host or "0.0.0.0")  # noqa: S104 - an empty host means every interface
    if parsed is not None:
        return parsed
    kind = socket.SOCK_DGRAM if transport.upper() == "UDP" else socket.SOCK_STREAM
    infos = socket.getaddrinfo(host, port, type=kind, flags=socket.AI_PASSIVE)
    if not infos:  # pragma: no cover - getaddrinfo raises rather than return nothing
        raise OSError(f"listen host {host!r} does not resolve")
    return infos[0][0], str(infos[0][4][0])


async def listen_ip(
    loop: asyncio.AbstractEventLoop, kind: str, host: str, port: int
) -> tuple[socket.AddressFamily, str]:
    """:func:`resolve_listen` without blocking the loop (a name resolves in an executor)."""
    parsed = parse_ip(host or "0.0.0.0")  # noqa: S104 - an empty host means every interface
    if parsed is not None:
        return parsed
    return await loop.run_in_executor(None, resolve_listen, kind, host, port)
