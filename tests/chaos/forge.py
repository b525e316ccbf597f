"""Forged SIP requests: UDP datagrams with a source address and port that are not the sender's.

Run inside a fault bed's namespace (``ip netns exec NS python forge.py ...``, as
root): a raw IPv4 socket (``IPPROTO_RAW``, so the IP header is ours) sends
OPTIONS and INVITE requests, alternately, that claim to come from ``--source``
(e.g. the pair's backup, 127.0.0.3:5060) to ``--target`` (sipha).  The kernel
fills in the IP checksum and length; the UDP checksum is 0 ("none", RFC 768).
Bounded: at most ``--count`` datagrams and ``--duration`` seconds (both capped).
Prints one line at the end: how many datagrams it sent.
"""

from __future__ import annotations

import argparse
import secrets
import socket
import struct
import sys
import time

MAX_COUNT = 10_000
MAX_DURATION = 120.0
METHODS = ("OPTIONS", "INVITE")


def udp_datagram(source: tuple[str, int], target: tuple[str, int], payload: bytes) -> bytes:
    """An IPv4 header (no options, DF, TTL 64, checksum left to the kernel) + a UDP header + ``payload``."""
    udp_length = 8 + len(payload)
    ip_header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,  # version 4, header length 5 words
        0,  # DSCP/ECN
        20 + udp_length,  # total length (the kernel fills it in anyway)
        0,  # identification: 0 = the kernel picks one
        0x4000,  # don't fragment
        64,  # TTL
        socket.IPPROTO_UDP,
        0,  # header checksum: the kernel fills it in
        socket.inet_aton(source[0]),
        socket.inet_aton(target[0]),
    )
    udp_header = struct.pack("!HHHH", source[1], target[1], udp_length, 0)  # checksum 0: none
    return ip_header + udp_header + payload


def sip_request(method: str, source: tuple[str, int], target: tuple[str, int], index: int) -> bytes:
    """A well-formed out-of-dialog request that names ``source`` in Via, From and Contact."""
    here = f"{source[0]}:{source[1]}"
    uri = f"sip:service@{target[0]}:{target[1]}"
    token = secrets.token_hex(6)
    return "\r\n".join(
        [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {here};branch=z9hG4bK-forged-{index}-{token}",
            "Max-Forwards: 70",
            f"From: <sip:sipha-sim@{here}>;tag=forged{index}",
            f"To: <{uri}>",
            f"Call-ID: forged-{index}-{token}@{source[0]}",
            f"CSeq: 1 {method}",
            f"Contact: <sip:sipha-sim@{here}>",
            "User-Agent: sipha-chaos-forger",
            "Content-Length: 0",
            "",
            "",
        ]
    ).encode()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        return socket.inet_ntoa(socket.inet_aton(host)), int(port)
    except (OSError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r}: IPv4:PORT") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--source", type=_address, required=True, metavar="IP:PORT")
    parser.add_argument("--target", type=_address, required=True, metavar="IP:PORT")
    parser.add_argument("--rate", type=float, default=50.0, help="datagrams per second")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds at most")
    args = parser.parse_args(argv)
    if not (0 < args.rate <= 1000 and 0 < args.count <= MAX_COUNT and 0 < args.duration <= MAX_DURATION):
        parser.error(f"rate 0-1000/s, count 1-{MAX_COUNT}, duration up to {MAX_DURATION} s")
    sent = 0
    start = time.monotonic()
    deadline = start + args.duration
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        while sent < args.count and time.monotonic() < deadline:
            payload = sip_request(METHODS[sent % len(METHODS)], args.source, args.target, sent)
            raw.sendto(udp_datagram(args.source, args.target, payload), (args.target[0], 0))
            sent += 1
            time.sleep(max(0.0, start + sent / args.rate - time.monotonic()))
    print(
        f"forged {sent} datagrams from {args.source[0]}:{args.source[1]} in {time.monotonic() - start:.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
