"""A flood of new INVITEs from many source addresses: one sender process of tests/chaos/test_flood.py.

Run as a script inside the fault bed's namespace (``python flooder.py ...``; the standard
library only, so that it starts in a few milliseconds).  It binds one UDP socket on each
of its source addresses, sends new INVITEs (each its own Call-ID, no To tag: a new call)
round-robin over them at ``--rate`` per second, bounded by ``--seconds`` and ``--max``,
reads whatever comes back (never ACKs: a flood does not), and writes what it counted as
JSON to ``--out``: INVITEs sent, and the Call-IDs answered 503, answered otherwise (a 100
Trying or a final response: sipha took the call on), or never answered (dropped).  Then it
keeps its sockets open for ``--linger`` seconds.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import time
from pathlib import Path

_CALL_ID = re.compile(rb"\r\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]+)", re.IGNORECASE)
BURST = 64
"""INVITEs sent at most between two reads of the answers."""
LINGER = 1.0
"""s to keep reading answers after the last INVITE (a 503 in flight is still counted)."""


def invite(n: int, host: str, port: int, domain: str, tag: str) -> bytes:
    return (
        f"INVITE sip:+4420{n:08d}@{domain} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK-{tag}-{n};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:1000@{host}>;tag={tag}{n}\r\n"
        f"To: <sip:+4420{n:08d}@{domain}>\r\n"
        f"Call-ID: {tag}-{n}@{host}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:1000@{host}:{port}>\r\n"
        "User-Agent: pbx\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--sources", required=True, help="comma-separated source IPs")
    parser.add_argument("--rate", type=float, required=True, help="INVITEs per second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--max", type=int, required=True)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--linger", type=float, default=0.0, help="s to keep the sockets open after --out")
    args = parser.parse_args()
    host, _, port_text = args.target.rpartition(":")
    target = (host, int(port_text))
    sockets = []
    for ip in args.sources.split(","):
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sender.bind((ip, 0))
        sender.setblocking(False)
        sockets.append((sender, ip, sender.getsockname()[1]))
    answered_503: set[bytes] = set()
    answered_other: set[bytes] = set()
    sent = 0
    start = time.monotonic()
    end = start + args.seconds
    while True:
        now = time.monotonic()
        if now >= end or sent >= args.max:
            break
        due = min(int((now - start) * args.rate), args.max, sent + BURST)
        while sent < due:
            sender, ip, port = sockets[sent % len(sockets)]
            try:
                sender.sendto(invite(sent, ip, port, args.domain, args.tag), target)
            except BlockingIOError:
                break
            sent += 1
        _read(sockets, answered_503, answered_other)
        if sent >= due:
            time.sleep(0.001)
    stopped = time.monotonic()
    while time.monotonic() < stopped + LINGER:
        _read(sockets, answered_503, answered_other)
        time.sleep(0.01)
    answered_other -= answered_503
    args.out.with_suffix(".tmp").write_text(
        json.dumps(
            {
                "sent": sent,
                "answered_503": len(answered_503),
                "answered_other": len(answered_other),
                "seconds": stopped - start,
            }
        ),
        encoding="utf-8",
    )
    args.out.with_suffix(".tmp").rename(args.out)
    # The sockets stay open (answers read and thrown away) until --linger: sipha retransmits the
    # final responses of the calls it took on (Timer G) until Timer H, and a closed port would
    # answer each with an ICMP error.  A forged source address on the Internet mostly does not.
    end = time.monotonic() + args.linger
    while time.monotonic() < end:
        _read(sockets, set(), set())
        time.sleep(0.05)
    for sender, _, _ in sockets:
        sender.close()


def _read(sockets: list[tuple[socket.socket, str, int]], got_503: set[bytes], got_other: set[bytes]) -> None:
    for sender, _, _ in sockets:
        for _ in range(256):
            try:
                data = sender.recv(65535)
            except BlockingIOError:
                break
            match = _CALL_ID.search(data)
            if match is None:
                continue
            (got_503 if data.startswith(b"SIP/2.0 503 ") else got_other).add(match.group(1))


if __name__ == "__main__":
    main()
