"""With ``[proxy] workers = 2``, each message is traced exactly once, handed over between workers or not.

A message one worker reads and passes to the worker holding its transaction is traced by
the reader only; a response the owner sends on a TCP connection another worker holds is
traced by the worker that writes it.  SIPp calls through a 2-worker sipha; a HEP
collector (a UDP socket here, decoding with tests/tracing/hepdecode.py) must hold every
message SIPp logged, each once, and nothing else of those calls, with the real addresses.
"""

from __future__ import annotations

import re
import socket
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.support import (
    HOST,
    SIPP,
    Pair,
    free_port,
    run_sipha,
    run_sipp_client,
    sipp_server,
)
from tests.tracing.hepdecode import decode
from tests.tracing.support import Datagram, normalised, sipp_traced, uac_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SIPP is None, reason="sipp not installed (Debian sip-tester)"),
]

CALLS = 20
WAIT = 10.0


def handed_over(admin: str) -> int:
    """Messages the two workers handed to each other (worker N serves /metrics on port + N)."""
    host, _, port = admin.rpartition(":")
    total = 0
    for index in range(2):
        url = f"http://{host}:{int(port) + index}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        for counter in ("handoff_out", "handoff_in"):
            found = re.search(rf'^sipha_transport_events_total{{counter="{counter}"}} (\S+)$', text, re.M)
            total += int(float(found.group(1))) if found is not None else 0
    return total


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_each_message_is_traced_once_across_workers(tmp_path: Path, transport: str) -> None:
    primary, backup = free_port(), free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as collector:
        collector.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        collector.bind((HOST, 0))
        collector.settimeout(0.2)
        extra = f'workers = 2\n[trace]\nhep = "udp:{HOST}:{collector.getsockname()[1]}"'
        sipp_transport = ["-t", "t1"] if transport == "tcp" else []
        with (
            sipp_server(tmp_path, primary, "-aa", "-trace_msg", *sipp_transport),
            run_sipha(tmp_path, [Pair("p", primary, backup, transport=transport)], extra=extra) as proxy,
        ):
            result = run_sipp_client(
                tmp_path, f"{HOST}:{proxy.port}", "-m", str(CALLS), "-r", "20", "-trace_msg", *sipp_transport
            )
            assert (result.successful, result.failed) == (CALLS, 0), result.errors
            admin = re.search(r'^listen = "(.+)"$', proxy.config.read_text(), re.M)
            assert admin is not None
            assert handed_over(admin.group(1)) > 0, "no message was handed over: the test proves nothing"
            sipha = (HOST, proxy.port)
            phone = (HOST, uac_port(tmp_path))
            peers = {phone, (HOST, primary)}
            uac = sipp_traced(tmp_path, "uac", phone, sipha)
            uas = sipp_traced(tmp_path, "uas", (HOST, primary), sipha)
            calls = {datagram.call_id for datagram in uac}
            assert len(calls) == CALLS
            expected = Counter(_key(d, peers) for d in uac + uas if d.call_id in calls)
            captured: Counter[tuple[object, ...]] = Counter()
            protocols: set[int] = set()
            sipha_ends: set[tuple[str, int]] = set()
            vias: set[int] = set()
            deadline = time.monotonic() + WAIT
            while captured != expected and time.monotonic() < deadline:
                try:
                    packet = decode(collector.recv(65535))
                except TimeoutError:
                    continue
                text = normalised(packet.payload.decode("utf-8", "replace"))
                datagram = Datagram(packet.source, packet.destination, text)
                if datagram.call_id in calls:
                    captured[_key(datagram, peers)] += 1
                    protocols.add(packet.u8(0x0002))
                    sipha_ends |= {end for end in (packet.source, packet.destination) if end not in peers}
                    vias |= {int(port) for port in re.findall(r"^Via: SIP/2\.0/\w+ [\d.]+:(\d+)", text, re.M)}
    assert captured - expected == Counter(), "traced but not sent or received by SIPp (or traced twice)"
    assert expected - captured == Counter(), "SIPp sent or received it, no HEP packet has it"
    assert {host for host, _ in sipha_ends} == {HOST}
    assert (HOST, proxy.port) in sipha_ends  # where the phone sends
    if transport == "udp":
        # The other end of sipha's datagrams: a worker's own socket, named in the Via of
        # what the worker sends.
        assert {port for _, port in sipha_ends} <= vias | {proxy.port}
    assert protocols == {6 if transport == "tcp" else 17}


def _key(datagram: Datagram, peers: set[tuple[str, int]]) -> tuple[object, ...]:
    """What must match: the SIPp end's address, the direction, the text.

    sipha's own end is checked apart: with workers a datagram leaves from the worker's own
    socket, and a TCP connection sipha opens from a port of the kernel's; SIPp's log
    shows neither.
    """
    inbound = datagram.source in peers
    return datagram.source if inbound else datagram.destination, inbound, datagram.text
