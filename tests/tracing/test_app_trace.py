"""[trace] in a running ProxyApp: every message in and out as HEP, with the real addresses; reloads.

The peers are raw UDP sockets on loopback: a phone, the pair's primary (which answers
OPTIONS and requests 200) and a HEP collector that decodes what it gets.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from sipha.admin.metrics import build_registry
from sipha.admin.status import build_status
from sipha.app import ProxyApp
from sipha.config import load_config
from tests.net.support import free_port
from tests.tracing.hepdecode import HepPacket, decode
from tests.tracing.support import HOST, WAIT, UdpPeer, first_line, header, ok, request


@dataclass
class Bed:
    app: ProxyApp
    sip: int
    phone: UdpPeer
    member: UdpPeer
    collector: UdpPeer
    config: Path

    def write(self, trace: str) -> None:
        self.config.write_text(config_text(self.sip, self.member.port, trace), encoding="utf-8")

    async def answer_member(self, stop: asyncio.Event) -> None:
        """The primary: 200 to everything it gets (the monitor's OPTIONS, forwarded requests)."""
        while not stop.is_set():
            try:
                data, _ = await self.member.recv(0.1)
            except TimeoutError:
                continue
            if not data.startswith(b"SIP/2.0"):
                self.member.send(ok(data), self.sip)


def config_text(sip: int, member: int, trace: str) -> str:
    return f"""
[proxy]
listen = ["udp:{HOST}:{sip}"]
record-route = "sip:{HOST}:{sip};lr"
[monitor]
oos-check = 1
oos-force = 1
[trace]
{trace}
[[pair]]
name = "p"
primary = "udp:{HOST}:{member}"
backup = "udp:{HOST}:{free_port()}"
serving = true
"""


@asynccontextmanager
async def bed(tmp_path: Path, trace: str) -> AsyncIterator[Bed]:
    phone, member, collector = await UdpPeer.open(), await UdpPeer.open(), await UdpPeer.open()
    trace = trace.format(collector=collector.port)
    sip = free_port()
    path = tmp_path / "sipha.toml"
    path.write_text(config_text(sip, member.port, trace), encoding="utf-8")
    app = ProxyApp(load_config(path), admin=False, config_path=path)
    stop = asyncio.Event()
    running = Bed(app, sip, phone, member, collector, path)
    answering = asyncio.get_running_loop().create_task(running.answer_member(stop))
    await app.start()
    try:
        yield running
    finally:
        stop.set()
        await answering
        await app.stop()
        for peer in (phone, member, collector):
            peer.close()


async def call(running: Bed, number: int) -> bytes:
    """A MESSAGE from the phone through sipha to the member and its 200 back; the 200 as received."""
    running.phone.send(request("MESSAGE", running.sip, running.phone.port, number), running.sip)
    data, _ = await running.phone.recv()
    assert first_line(data) == "SIP/2.0 200 OK"
    return data


async def collect(collector: UdpPeer, until: int, seconds: float = WAIT) -> list[HepPacket]:
    """The HEP packets of every message of Call-ID ``trace-{until}@...`` once its 4 are in."""
    packets: list[HepPacket] = []
    deadline = time.monotonic() + seconds
    wanted = f"trace-{until}@".encode()
    while sum(wanted in packet.payload for packet in packets) < 4:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{len(packets)} HEP packets, not the 4 of call {until}"
        data, _ = await collector.recv(remaining)
        packets.append(decode(data))
    return packets


async def test_every_message_in_and_out_with_its_real_addresses(tmp_path: Path) -> None:
    trace = 'hep = "udp:127.0.0.1:{collector}"\nhep-capture-id = 4242\nhep-password = "pw"'
    async with bed(tmp_path, trace) as running:
        before = time.time_ns() // 1000
        delivered = await call(running, 1)
        packets = await collect(running.collector, 1)
        after = time.time_ns() // 1000
        sip, phone, member = (
            ("127.0.0.1", running.sip),
            (HOST, running.phone.port),
            (HOST, running.member.port),
        )
        of_call = [packet for packet in packets if b"trace-1@" in packet.payload]
        flow = [(first_line(p.payload), p.source, p.destination) for p in of_call]
        assert flow == [
            (f"MESSAGE sip:service@{HOST}:{running.sip} SIP/2.0", phone, sip),
            (f"MESSAGE sip:service@{HOST}:{running.sip} SIP/2.0", sip, member),
            ("SIP/2.0 200 OK", member, sip),
            ("SIP/2.0 200 OK", sip, phone),
        ]
        assert of_call[0].payload == request("MESSAGE", running.sip, running.phone.port, 1)
        assert of_call[3].payload == delivered  # the bytes the phone got, exactly
        for packet in packets:
            assert packet.u8(0x0002) == 17
            assert packet.u8(0x000B) == 1
            assert packet.u32(0x000C) == 4242
            assert packet.chunks[0x000E] == b"pw"
            stamp = packet.u32(0x0009) * 1_000_000 + packet.u32(0x000A)
            assert before - 2_000_000 <= stamp <= after  # probes may predate the call by a second
        # The monitor's probes are traced too, leaving from the socket their Via names.
        probes = [packet for packet in packets if first_line(packet.payload).startswith("OPTIONS ")]
        assert probes, "no OPTIONS probe traced"
        sent_by = re.search(r"SIP/2\.0/UDP ([^:;]+):(\d+)", header(probes[0].payload, "Via"))
        assert sent_by is not None
        assert probes[0].source == (sent_by.group(1), int(sent_by.group(2)))
        assert probes[0].destination == member


async def test_status_and_metrics_count_what_was_sent(tmp_path: Path) -> None:
    async with bed(tmp_path, 'hep = "udp:127.0.0.1:{collector}"') as running:
        await call(running, 2)
        await collect(running.collector, 2)
        block = build_status(running.app)["trace"]
        assert block["hep"] == f"udp:127.0.0.1:{running.collector.port}"
        assert block["hep_capture_id"] == 2001
        assert block["log"] is False
        assert block["hep_sent"] >= 4
        assert block["hep_dropped"] == {"buffer_full": 0, "send_error": 0, "unencodable": 0}
        metrics = generate_latest(build_registry(running.app)).decode()
        sent = re.search(r"^sipha_trace_hep_sent_total (\S+)$", metrics, re.M)
        assert sent is not None
        assert float(sent.group(1)) >= 4
        assert 'sipha_trace_hep_dropped_total{reason="buffer_full"} 0.0' in metrics


async def test_reload_turns_tracing_on_changes_it_and_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with bed(tmp_path, "") as running:
        app = running.app
        assert app._dispatch.tracer is None  # nothing traced: the driver pays one check
        await call(running, 3)
        assert not [r for r in caplog.records if r.name == "sipha.trace"]

        running.write(f'hep = "udp:127.0.0.1:{running.collector.port}"')
        assert await app.reload()
        assert f"trace.hep '' -> 'udp:127.0.0.1:{running.collector.port}'" in caplog.text
        await call(running, 4)
        await collect(running.collector, 4)

        running.write("log = true")
        assert await app.reload()
        assert app.trace.exporter is None
        running.collector.pending()
        delivered = await call(running, 5)
        traced = [r.getMessage() for r in caplog.records if r.name == "sipha.trace"]
        traced = [text for text in traced if "trace-5@" in text]
        assert len(traced) == 4
        assert traced[3] == (
            f"SIP sent to udp:{HOST}:{running.phone.port} from udp:127.0.0.1:{running.sip} "
            f"({len(delivered)} bytes):\n" + delivered.decode().replace("\r\n", "\n").rstrip("\n")
        )
        await asyncio.sleep(0.2)
        assert not [p for p in running.collector.pending() if b"trace-5@" in p]

        running.write('hep = "udp:no-such-host.invalid:9060"\nlog = true')
        assert not await app.reload()
        assert "trace.hep = 'udp:no-such-host.invalid:9060': cannot send there" in caplog.text
        assert app.trace.settings is not None
        assert app.trace.settings.hep == ""  # the running configuration kept

        running.write("")
        assert await app.reload()
        assert app._dispatch.tracer is None
