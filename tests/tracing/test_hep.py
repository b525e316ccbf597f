"""The HEPv3 encoder against the specification's own example, decoded by hand, and its edges."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sipha.trace.hep
from sipha.sip.address import Address
from sipha.trace.hep import encode
from tests.tracing.hepdecode import decode

# The "Example HEP3 packet" of the HEP3 Network Protocol Specification (rev. 37), chunk by
# chunk as the spec decodes it: vendor, type, length, value.
SPEC_HEADER = "48 45 50 33 00 71"  # "HEP3", total length 113
SPEC_CHUNKS = {
    "family": "00 00 00 01 00 07 02",  # IP protocol family 2 (IPv4)
    "protocol": "00 00 00 02 00 07 11",  # IP protocol ID 17 (UDP)
    "source": "00 00 00 03 00 0a d4 ca 00 01",  # 212.202.0.1
    "destination": "00 00 00 04 00 0a 52 74 00 d3",  # 82.116.0.211
    "source port": "00 00 00 07 00 08 2e ea",  # 12010
    "destination port": "00 00 00 08 00 08 13 c4",  # 5060
    "seconds": "00 00 00 09 00 0a 4e 49 82 cb",  # 1313440459
    "microseconds": "00 00 00 0a 00 0a 00 01 d4 c0",  # 120000
    "type": "00 00 00 0b 00 07 01",  # 01: SIP
    "capture id": "00 00 00 0c 00 0a 00 00 00 e4",  # 228
    "payload": "00 00 00 0f 00 14 49 4e 56 49 54 45 20 73 69 70 3a 62 6f 62",  # "INVITE sip:bob"
}
SENT_AT = 1313440459 * 10**9 + 120_000 * 10**3
SOURCE = Address("UDP", "212.202.0.1", 12010)
DESTINATION = Address("UDP", "82.116.0.211", 5060)


def spec_example() -> bytes:
    return encode(b"INVITE sip:bob", SOURCE, DESTINATION, SENT_AT, capture_id=228)


def test_the_spec_example_byte_for_byte_in_the_reference_agents_order() -> None:
    # The same chunks as the spec's example, in the order of captagent/hep-c (hep.py says why).
    order = ["family", "protocol", "source port", "destination port", "seconds", "microseconds"]
    order += ["type", "capture id", "source", "destination", "payload"]
    expected = bytes.fromhex(SPEC_HEADER + " " + " ".join(SPEC_CHUNKS[name] for name in order))
    assert spec_example() == expected


def test_the_spec_example_decodes_to_its_values() -> None:
    packet = decode(spec_example())
    assert len(spec_example()) == 113
    assert packet.u8(0x0001) == 2
    assert packet.u8(0x0002) == 17
    assert packet.source == ("212.202.0.1", 12010)
    assert packet.destination == ("82.116.0.211", 5060)
    assert (packet.u32(0x0009), packet.u32(0x000A)) == (1313440459, 120000)
    assert packet.u8(0x000B) == 1
    assert packet.u32(0x000C) == 228
    assert packet.payload == b"INVITE sip:bob"
    assert 0x000E not in packet.chunks  # no key, no key chunk


def test_the_auth_key_is_a_chunk_of_its_own_before_the_payload() -> None:
    raw = encode(
        b"OPTIONS sip:x SIP/2.0\r\n\r\n", SOURCE, DESTINATION, SENT_AT, capture_id=1, auth_key=b"s3cret"
    )
    packet = decode(raw)
    assert packet.chunks[0x000E] == b"s3cret"
    assert packet.order[-2:] == [0x000E, 0x000F]
    assert bytes.fromhex("00 00 00 0e 00 0c") + b"s3cret" in raw  # length 12 = 6 + 6
    assert len(raw) == len(spec_example()) - len(b"INVITE sip:bob") + len(packet.payload) + 12


def test_ipv6_addresses_and_the_linux_family_number() -> None:
    packet = decode(
        encode(b"x", Address("TCP", "[2001:db8::1]", 5060), Address("TCP", "::1", 40000), 0, capture_id=7)
    )
    assert packet.u8(0x0001) == 10  # AF_INET6 on Linux, as Kamailio and captagent send it
    assert packet.u8(0x0002) == 6
    assert 0x0003 not in packet.chunks
    assert packet.source == ("2001:db8::1", 5060)
    assert packet.destination == ("::1", 40000)


def test_an_ipv4_peer_on_a_dual_stack_socket_is_mapped() -> None:
    packet = decode(
        encode(b"x", Address("UDP", "192.0.2.1", 5060), Address("UDP", "::", 5060), 0, capture_id=0)
    )
    assert packet.source == ("::ffff:c000:201", 5060)
    assert packet.u8(0x0001) == 10


@pytest.mark.parametrize(("transport", "protocol"), [("UDP", 17), ("TCP", 6), ("TLS", 22), ("tls", 22)])
def test_the_transport_is_the_ip_protocol_tls_as_kamailio_marks_it(transport: str, protocol: int) -> None:
    source = Address(transport, "10.0.0.1", 5061)
    assert decode(encode(b"x", source, DESTINATION, 0, capture_id=0)).u8(0x0002) == protocol


def test_microseconds_are_truncated_and_seconds_kept() -> None:
    packet = decode(encode(b"x", SOURCE, DESTINATION, 1_700_000_000_999_999_999, capture_id=0))
    assert (packet.u32(0x0009), packet.u32(0x000A)) == (1_700_000_000, 999_999)


def test_what_cannot_be_encoded_is_refused() -> None:
    with pytest.raises(ValueError, match=r"'a\.example\.com' does not appear to be an IPv4 or IPv6"):
        encode(b"x", Address("UDP", "a.example.com", 5060), DESTINATION, 0, capture_id=0)
    with pytest.raises(ValueError, match="transport 'SCTP'"):
        encode(b"x", Address("SCTP", "10.0.0.1", 5060), DESTINATION, 0, capture_id=0)
    largest = 65535 - len(spec_example()) + len(b"INVITE sip:bob")
    assert len(encode(b"x" * largest, SOURCE, DESTINATION, 0, capture_id=228)) == 65535
    with pytest.raises(ValueError, match="at most 65535 octets; this one would be 65536"):
        encode(b"x" * (largest + 1), SOURCE, DESTINATION, 0, capture_id=228)


def test_the_encoder_is_sans_io() -> None:
    """It imports no socket, clock or event loop (docs/design.md §6): a pure function."""
    tree = ast.parse(Path(sipha.trace.hep.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"__future__", "ipaddress", "struct", "functools", "typing", "sipha.sip.address"}
