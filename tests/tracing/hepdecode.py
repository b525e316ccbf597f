"""A HEPv3 reader for the tests, written from the spec (not from sipha.trace.hep): it checks
every length it reads and gives the chunks by type, so that an encoder bug cannot hide."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass


@dataclass
class HepPacket:
    chunks: dict[int, bytes]
    """Generic (vendor 0) chunk type -> its value; each type at most once."""
    order: list[int]

    def u8(self, kind: int) -> int:
        (value,) = struct.unpack("!B", self.chunks[kind])
        return int(value)

    def u16(self, kind: int) -> int:
        (value,) = struct.unpack("!H", self.chunks[kind])
        return int(value)

    def u32(self, kind: int) -> int:
        (value,) = struct.unpack("!I", self.chunks[kind])
        return int(value)

    @property
    def source(self) -> tuple[str, int]:
        kind = 0x0003 if 0x0003 in self.chunks else 0x0005
        return str(ipaddress.ip_address(self.chunks[kind])), self.u16(0x0007)

    @property
    def destination(self) -> tuple[str, int]:
        kind = 0x0004 if 0x0004 in self.chunks else 0x0006
        return str(ipaddress.ip_address(self.chunks[kind])), self.u16(0x0008)

    @property
    def payload(self) -> bytes:
        return self.chunks[0x000F]


SIZES = {0x0001: 1, 0x0002: 1, 0x0003: 4, 0x0004: 4, 0x0005: 16, 0x0006: 16, 0x0007: 2, 0x0008: 2}
SIZES |= {0x0009: 4, 0x000A: 4, 0x000B: 1, 0x000C: 4}
"""Fixed-size generic chunk values (spec table: uint8, uint16, uint32, inet4-addr, inet6-addr)."""


def decode(packet: bytes) -> HepPacket:
    """Parse ``packet``; AssertionError naming the first length that is wrong."""
    assert packet[:4] == b"HEP3", packet[:4]
    (total,) = struct.unpack("!H", packet[4:6])
    assert total == len(packet), f"header length {total}, packet {len(packet)} octets"
    chunks: dict[int, bytes] = {}
    order: list[int] = []
    at = 6
    while at < total:
        assert at + 6 <= total, f"chunk header at {at} runs past the end ({total})"
        vendor, kind, length = struct.unpack("!HHH", packet[at : at + 6])
        assert vendor == 0, f"vendor {vendor:#06x} at {at}"
        assert length >= 6, f"chunk {kind:#06x}: length {length} shorter than its header"
        assert at + length <= total, f"chunk {kind:#06x} at {at}: length {length} runs past {total}"
        value = packet[at + 6 : at + length]
        if kind in SIZES:
            assert len(value) == SIZES[kind], f"chunk {kind:#06x}: {len(value)} octets, not {SIZES[kind]}"
        assert kind not in chunks, f"chunk {kind:#06x} twice"
        chunks[kind] = value
        order.append(kind)
        at += length
    assert at == total
    return HepPacket(chunks, order)
