"""Helpers for the sipha.net tests: a callback sink with bounded waits, SIP test messages."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from sipha.net import TransportManager
from sipha.sip import SipParseError
from sipha.sip.address import Address

TIMEOUT = 3.0  # an upper bound on every wait; loopback answers in microseconds


def sip_request(number: int = 1, body: bytes = b"") -> bytes:
    """A small OPTIONS request with a Content-Length (stream transports need it)."""
    return (
        f"OPTIONS sip:proxy.example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP client.example.com;branch=z9hG4bK-{number}\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:a@example.com>;tag=1\r\n"
        f"To: <sip:b@example.com>\r\n"
        f"Call-ID: call-{number}@example.com\r\n"
        f"CSeq: {number} OPTIONS\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def sip_response(number: int = 1) -> bytes:
    return (
        f"SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/TCP client.example.com;branch=z9hG4bK-{number}\r\n"
        f"From: <sip:a@example.com>;tag=1\r\n"
        f"To: <sip:b@example.com>;tag=2\r\n"
        f"Call-ID: call-{number}@example.com\r\n"
        f"CSeq: {number} OPTIONS\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


class Sink:
    """Records what a TransportManager reports, with bounded waits."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[tuple[bytes, Address, Address]] = asyncio.Queue()
        self.errors: asyncio.Queue[tuple[Address, OSError | str]] = asyncio.Queue()
        self.bad: asyncio.Queue[tuple[SipParseError, Address]] = asyncio.Queue()

    def on_message(self, data: bytes, source: Address, local: Address) -> None:
        self.messages.put_nowait((data, source, local))

    def on_transport_error(self, destination: Address, error: OSError | str) -> None:
        self.errors.put_nowait((destination, error))

    def on_bad_stream(self, error: SipParseError, source: Address) -> None:
        self.bad.put_nowait((error, source))

    def manager(self, **options: Any) -> TransportManager:
        return TransportManager(self.on_message, self.on_transport_error, self.on_bad_stream, **options)

    async def message(self) -> tuple[bytes, Address, Address]:
        return await asyncio.wait_for(self.messages.get(), TIMEOUT)

    async def error(self) -> tuple[Address, OSError | str]:
        return await asyncio.wait_for(self.errors.get(), TIMEOUT)


def free_port(kind: int = socket.SOCK_DGRAM, host: str = "127.0.0.1") -> int:
    """A port nothing listens on (bound then released)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def address_of(manager: TransportManager, transport: str, family: int = socket.AF_INET) -> Address:
    return manager.local_address(transport, family)
