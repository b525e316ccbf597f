"""Peers of the tracing tests on loopback: raw UDP sockets (a phone, a member, a HEP collector)."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
WAIT = 5.0
"""Bound of every wait: loopback answers in microseconds; the machine may be loaded."""


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))


class UdpPeer:
    """A UDP socket on 127.0.0.1 that the test drives by hand, datagrams as bytes."""

    def __init__(self, transport: asyncio.DatagramTransport, inbox: _Inbox) -> None:
        self.transport = transport
        self.inbox = inbox
        self.port = int(transport.get_extra_info("sockname")[1])

    @classmethod
    async def open(cls) -> UdpPeer:
        transport, inbox = await asyncio.get_running_loop().create_datagram_endpoint(
            _Inbox, local_addr=(HOST, 0)
        )
        return cls(transport, inbox)

    def send(self, data: bytes, port: int) -> None:
        self.transport.sendto(data, (HOST, port))

    async def recv(self, timeout: float = WAIT) -> tuple[bytes, tuple[str, int]]:
        return await asyncio.wait_for(self.inbox.queue.get(), timeout)

    def pending(self) -> list[bytes]:
        """What arrived so far, without waiting."""
        found: list[bytes] = []
        while not self.inbox.queue.empty():
            found.append(self.inbox.queue.get_nowait()[0])
        return found

    def close(self) -> None:
        self.transport.close()


def request(method: str, target_port: int, port: int, number: int) -> bytes:
    """A request from a phone on ``port`` to sipha on ``target_port`` (a serving pair takes it)."""
    return (
        f"{method} sip:service@{HOST}:{target_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{port};rport;branch=z9hG4bK-trace-{number}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:phone@{HOST}>;tag=phone{number}\r\n"
        f"To: <sip:service@{HOST}>\r\n"
        f"Call-ID: trace-{number}@{HOST}\r\n"
        f"CSeq: 1 {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def ok(request_bytes: bytes) -> bytes:
    """The 200 OK a UAS answers ``request_bytes`` with (its Via, From, To + tag, Call-ID, CSeq)."""
    head = request_bytes.decode().split("\r\n\r\n", 1)[0].split("\r\n")[1:]
    kept = [line for line in head if re.match(r"(?i)(via|from|to|call-id|cseq):", line)]
    kept = [line + ";tag=uas" if line.lower().startswith("to:") else line for line in kept]
    return ("SIP/2.0 200 OK\r\n" + "\r\n".join(kept) + "\r\nContent-Length: 0\r\n\r\n").encode()


def first_line(message: bytes) -> str:
    return message.split(b"\r\n", 1)[0].decode()


def header(message: bytes, name: str) -> str:
    """The first value of header ``name``."""
    for line in message.decode().split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        field, _, value = line.partition(":")
        if field.strip().lower() == name.lower():
            return value.strip()
    raise KeyError(name)


# ---------------------------------------------------------------------------- SIPp's own trace

_TRACED = re.compile(
    r"^(?:UDP|TCP) message (received|sent) (?:\[\d+\] bytes :|\(\d+ bytes\):)\n\n(.*?)(?=^-{47}|\Z)",
    re.M | re.S,
)


@dataclass(frozen=True)
class Datagram:
    """One message as a capture shows it: from, to, the text (line ends normalised)."""

    source: tuple[str, int]
    destination: tuple[str, int]
    text: str

    @property
    def call_id(self) -> str:
        found = re.search(r"^(?:Call-ID|i):\s*(\S+)", self.text, re.M | re.I)
        assert found is not None, self.text
        return found.group(1)

    @property
    def what(self) -> str:
        """``INVITE``, ``180 INVITE``, ``200 BYE``...: the request method or the status and CSeq method."""
        cseq = re.search(r"^CSeq:\s*\d+\s+(\S+)", self.text, re.M | re.I)
        assert cseq is not None, self.text
        status = re.match(r"SIP/2\.0 (\d{3}) ", self.text)
        return cseq.group(1) if status is None else f"{status.group(1)} {cseq.group(1)}"


def normalised(text: str) -> str:
    return text.replace("\r\n", "\n").strip()


def sipp_traced(
    directory: Path, scenario: str, me: tuple[str, int], sipha: tuple[str, int]
) -> list[Datagram]:
    """What a SIPp run with ``-trace_msg`` logged, as datagrams between it and sipha."""
    found: list[Datagram] = []
    for log in sorted(directory.glob(f"{scenario}_*_messages.log")):
        for kind, body in _TRACED.findall(log.read_text(encoding="utf-8", errors="replace")):
            ends = (me, sipha) if kind == "sent" else (sipha, me)
            found.append(Datagram(*ends, normalised(body)))
    return found


def uac_port(directory: Path) -> int:
    """The SIPp client's port, from the Via of the first request it logged."""
    for log in sorted(directory.glob("uac_*_messages.log")):
        found = re.search(r"^Via: SIP/2\.0/(?:UDP|TCP) [\d.]+:(\d+)", log.read_text(encoding="utf-8"), re.M)
        if found is not None:
            return int(found.group(1))
    raise AssertionError("no Via in the SIPp client's trace")
