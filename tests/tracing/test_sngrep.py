"""HEP to a real receiver: sngrep (Debian) listens for HEP and writes a pcap; SIPp calls through sipha.

The dialogs in sngrep's capture must be exactly what the two SIPp processes logged
(``-trace_msg``): every INVITE, 100, 180, 200, ACK, BYE and 200 of each call, on both legs,
byte for byte, each with the real addresses of its datagram (SIPp's, sipha's).  sngrep
is given a HEP password: packets without the right one would be dropped, so the
capture also shows the authentication key is sent.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import struct
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
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
    stop_process,
)
from tests.tracing.support import Datagram, normalised, sipp_traced, uac_port

SNGREP = shutil.which("sngrep")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SIPP is None, reason="sipp not installed (Debian sip-tester)"),
    pytest.mark.skipif(SNGREP is None, reason="sngrep not installed (Debian sngrep)"),
]

CALLS = 5
PASSWORD = "hep-s3cret"  # noqa: S105 - the test collector's
WAIT = 10.0


def read_pcap(path: Path) -> list[Datagram]:
    """The UDP datagrams of a classic pcap file of Ethernet frames (what sngrep writes for HEP)."""
    data = path.read_bytes() if path.exists() else b""
    if len(data) < 24:
        return []
    magic, _major, _minor, _zone, _sigfigs, _snaplen, linktype = struct.unpack("<IHHiIII", data[:24])
    assert magic == 0xA1B2C3D4, hex(magic)
    assert linktype == 1  # Ethernet
    found: list[Datagram] = []
    at = 24
    while at + 16 <= len(data):
        _seconds, _micro, captured, _original = struct.unpack("<IIII", data[at : at + 16])
        frame = data[at + 16 : at + 16 + captured]
        at += 16 + captured
        if len(frame) < captured:
            break  # sngrep is still writing the last one
        (ethertype,) = struct.unpack("!H", frame[12:14])
        assert ethertype == 0x0800
        ip = frame[14:]
        header = (ip[0] & 0x0F) * 4
        assert ip[9] == 17  # sngrep writes every HEP message as UDP
        source_ip, destination_ip = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        source_port, destination_port, length = struct.unpack("!HHH", ip[header : header + 6])
        payload = ip[header + 8 : header + length]
        text = normalised(payload.decode("utf-8", "replace"))
        found.append(Datagram((source_ip, source_port), (destination_ip, destination_port), text))
    return found


@contextlib.contextmanager
def sngrep_listening(directory: Path, port: int) -> Iterator[Path]:
    """``sngrep -N -L udp:127.0.0.1:PORT -O FILE`` with a HEP password; the pcap it writes."""
    settings = directory / "sngreprc"
    settings.write_text(f"set eep.listen.pass {PASSWORD}\n", encoding="utf-8")
    pcap = directory / "hep.pcap"
    assert SNGREP is not None
    command = [SNGREP, "-F", "-f", str(settings), "-N", "-q", "-L", f"udp:{HOST}:{port}", "-O", str(pcap)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + WAIT
        while not _bound(port):
            assert process.poll() is None, f"sngrep exited with {process.returncode}"
            assert time.monotonic() < deadline, "sngrep did not bind its HEP port"
            time.sleep(0.05)
        yield pcap
    finally:
        stop_process(process)


def _bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return True
        return False


def test_sngrep_shows_the_calls_sipp_made_on_both_legs(tmp_path: Path) -> None:
    hep_port, primary, backup = free_port(), free_port(), free_port()
    trace = f'[trace]\nhep = "udp:{HOST}:{hep_port}"\nhep-password = "{PASSWORD}"'
    with (
        sngrep_listening(tmp_path, hep_port) as pcap,
        sipp_server(tmp_path, primary, "-aa", "-trace_msg"),
        run_sipha(tmp_path, [Pair("p", primary, backup)], extra=trace) as proxy,
    ):
        result = run_sipp_client(
            tmp_path, f"{HOST}:{proxy.port}", "-m", str(CALLS), "-r", "5", "-trace_msg", timeout=60
        )
        assert (result.successful, result.failed) == (CALLS, 0), result.errors
        sipha = (HOST, proxy.port)
        uas = sipp_traced(tmp_path, "uas", (HOST, primary), sipha)
        phone = (HOST, uac_port(tmp_path))
        uac = sipp_traced(tmp_path, "uac", phone, sipha)
        calls = {datagram.call_id for datagram in uac}
        assert len(calls) == CALLS
        expected = Counter(datagram for datagram in uac + uas if datagram.call_id in calls)
        deadline = time.monotonic() + WAIT
        while True:
            captured = Counter(datagram for datagram in read_pcap(pcap) if datagram.call_id in calls)
            if captured == expected or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert captured - expected == Counter(), "captured but not sent or received by SIPp"
    assert expected - captured == Counter(), "SIPp sent or received it, sngrep did not get it"
    for call_id in calls:
        for peer in (phone, (HOST, primary)):
            leg = [d.what for d in captured if d.call_id == call_id and peer in (d.source, d.destination)]
            assert {"INVITE", "180 INVITE", "200 INVITE", "ACK", "BYE", "200 BYE"} <= set(leg), (peer, leg)
