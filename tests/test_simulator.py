"""The simulated SIP server (sipha.sim): a UAS on loopback, driven by Python sockets and SIPp."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from sipha.cli import main
from sipha.sim.server import SimulatedServer, drop_counts
from sipha.sim.uas import ALLOW
from sipha.sip import Request, Response, make_response, parse_message
from sipha.sip.address import Address
from sipha.txn import TimerConfig
from tests.integration.support import free_port

HOST = "127.0.0.1"
SIPP = "/usr/bin/sipp" if os.access("/usr/bin/sipp", os.X_OK) else shutil.which("sipp")
QUIET = 0.3  # seconds of silence that count as "not answered"
FAST = TimerConfig(t1=0.05, t2=0.2, t4=0.5)


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[Request | Response, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((parse_message(data), addr))


class UdpPeer:
    """A UDP socket on 127.0.0.1 that plays a UAC (or a proxy) by hand."""

    def __init__(self, transport: asyncio.DatagramTransport, inbox: _Inbox) -> None:
        self.transport = transport
        self.inbox = inbox
        self.port = int(transport.get_extra_info("sockname")[1])
        self.last_source: tuple[str, int] | None = None

    @classmethod
    async def open(cls) -> UdpPeer:
        loop = asyncio.get_running_loop()
        transport, inbox = await loop.create_datagram_endpoint(_Inbox, local_addr=(HOST, 0))
        return cls(transport, inbox)

    def send(self, message: Request | Response | bytes, port: int) -> None:
        data = message if isinstance(message, bytes) else message.to_bytes()
        self.transport.sendto(data, (HOST, port))

    async def recv(self, timeout: float = 2.0) -> Request | Response | None:
        try:
            message, self.last_source = await asyncio.wait_for(self.inbox.queue.get(), timeout)
        except TimeoutError:
            return None
        return message

    async def response(self, timeout: float = 2.0) -> Response:
        message = await self.recv(timeout)
        assert isinstance(message, Response), f"expected a response, got {message!r}"
        return message

    def request(
        self,
        method: str,
        port: int,
        *,
        call_id: str | None = None,
        branch: str | None = None,
        from_tag: str = "uac1",
        to_tag: str | None = None,
        cseq: int = 1,
        cseq_method: str | None = None,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> Request:
        to = f"<sip:service@{HOST}:{port}>" + (f";tag={to_tag}" if to_tag else "")
        branch = branch or f"z9hG4bK{secrets.token_hex(6)}"
        return Request.build(
            method,
            f"sip:service@{HOST}:{port}",
            [
                (
                    "Via",
                    f"SIP/2.0/UDP {HOST}:{self.port};branch={branch or 'z9hG4bK' + secrets.token_hex(6)}",
                ),
                ("Max-Forwards", "70"),
                ("From", f"<sip:uac@{HOST}:{self.port}>;tag={from_tag}"),
                ("To", to),
                ("Call-ID", call_id or secrets.token_hex(8)),
                ("CSeq", f"{cseq} {cseq_method or method}"),
                ("Contact", f"<sip:uac@{HOST}:{self.port}>"),
                *(headers or []),
            ],
            body,
        )

    def close(self) -> None:
        self.transport.close()


@pytest.fixture
async def peer() -> AsyncIterator[UdpPeer]:
    udp = await UdpPeer.open()
    yield udp
    udp.close()


@contextlib.asynccontextmanager
async def running(**kwargs: object) -> AsyncIterator[SimulatedServer]:
    server = SimulatedServer([("udp", HOST, 0), ("tcp", HOST, 0)], **kwargs)  # type: ignore[arg-type]
    async with server:
        yield server


def udp_port(server: SimulatedServer) -> int:
    return server.address("UDP").port


async def options(peer: UdpPeer, server: SimulatedServer, timeout: float = 2.0) -> Response | None:
    peer.send(peer.request("OPTIONS", udp_port(server)), udp_port(server))
    message = await peer.recv(timeout)
    assert message is None or isinstance(message, Response)
    return message


async def until(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------------------- modes


async def test_options_answered_200_in_primary_mode(peer: UdpPeer) -> None:
    async with running() as server:
        request = peer.request("OPTIONS", udp_port(server))
        peer.send(request, udp_port(server))
        response = await peer.response()
        raw = response.to_bytes()
    assert response.status == 200
    assert response.get("allow") == ALLOW
    assert response.get("accept") == "application/sdp"
    assert b"\r\nContent-Length: 0\r\n" in raw
    assert response.to.tag
    assert response.call_id == request.call_id
    assert response.top_via.branch == request.top_via.branch
    assert peer.last_source == (HOST, udp_port(server))
    assert server.stats.options_answered == 1


async def test_backup_mode_is_silent(peer: UdpPeer) -> None:
    async with running(mode="backup") as server:
        assert await options(peer, server, QUIET) is None
        peer.send(peer.request("INVITE", udp_port(server)), udp_port(server))
        assert await peer.recv(QUIET) is None
    assert server.stats.ignored == 2
    assert server.stats.options_answered == 0


async def test_backup_answer_503(peer: UdpPeer) -> None:
    async with running(mode="backup", backup_answer=503) as server:
        response = await options(peer, server)
        assert response is not None
        assert response.status == 503
        assert response.to.tag
        # An INVITE gets 503 too; its ACK is absorbed by the INVITE transaction (§17.2.1).
        invite = peer.request("INVITE", udp_port(server))
        peer.send(invite, udp_port(server))
        refused = await peer.response()
        assert refused.status == 503
        ack = peer.request("ACK", udp_port(server), call_id=invite.call_id, branch=invite.top_via.branch)
        ack.set_header("to", refused.get("to") or "")
        peer.send(ack, udp_port(server))
        assert await peer.recv(QUIET) is None
    assert server.stats.backup_answered == 2


async def test_mode_switch_at_run_time(peer: UdpPeer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sipha.simulator")
    async with running() as server:
        first = await options(peer, server)
        assert first is not None
        assert first.status == 200
        server.set_mode("backup")
        assert server.mode == "backup"
        assert await options(peer, server, QUIET) is None
        server.set_mode("backup")  # no change, no log line
        server.set_mode("primary")
        again = await options(peer, server)
        assert again is not None
        assert again.status == 200
        with pytest.raises(ValueError, match="primary or backup"):
            server.set_mode("standby")  # type: ignore[arg-type]
    assert server.stats.mode_changes == 2
    changes = [r.getMessage() for r in caplog.records if "mode" in r.getMessage() and "->" in r.getMessage()]
    assert len(changes) == 2
    assert changes[0].endswith("mode primary -> backup")
    assert any("listening on udp:127.0.0.1:" in r.getMessage() for r in caplog.records)


def test_bad_settings_refused() -> None:
    with pytest.raises(ValueError, match="backup_answer"):
        SimulatedServer([("udp", HOST, 0)], backup_answer=200)
    with pytest.raises(ValueError, match="mode"):
        SimulatedServer([("udp", HOST, 0)], mode="active")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="listen"):
        SimulatedServer([])


# ---------------------------------------------------------------------------- calls


async def test_invite_180_200_ack_bye(peer: UdpPeer) -> None:
    async with running(timers=FAST) as server:
        port = udp_port(server)
        routes = ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr;x=y>"]
        invite = peer.request("INVITE", port, headers=[("Record-Route", route) for route in routes])
        peer.send(invite, port)
        ringing = await peer.response()
        ok = await peer.response()
        assert (ringing.status, ok.status) == (180, 200)
        tag = ok.to.tag
        assert tag
        assert ringing.to.tag == tag
        for response in (ringing, ok):
            # §12.1.1: Record-Route copied in order; Contact is the server's own address.
            assert response.get_all("record-route") == [
                "<sip:p1.example.com;lr>",
                "<sip:p2.example.com;lr;x=y>",
            ]
            assert response.get("contact") == f"<sip:sipha-sim@{HOST}:{port}>"
        assert ok.get("content-type") == "application/sdp"
        assert ok.body.startswith(b"v=0\r\n")
        assert b"m=audio " in ok.body
        assert ok.content_length == len(ok.body)
        # The ACK of a 2xx is a new transaction (§17.1.1.3 / §13.2.2.4): new branch.
        peer.send(peer.request("ACK", port, call_id=invite.call_id, to_tag=tag), port)
        assert await peer.recv(4 * FAST.t1) is None  # the 2xx retransmissions stopped
        bye = peer.request("BYE", port, call_id=invite.call_id, to_tag=tag, cseq=2)
        peer.send(bye, port)
        bye_ok = await peer.response()
        assert bye_ok.status == 200
        assert bye_ok.cseq.method == "BYE"
    stats = server.stats
    assert (stats.invites_answered, stats.acks_received, stats.calls_completed) == (1, 1, 1)
    assert stats.ok_retransmissions == 0


async def test_invite_retransmission_gets_the_last_response_again(peer: UdpPeer) -> None:
    async with running(answer_delay=0.5) as server:
        port = udp_port(server)
        invite = peer.request("INVITE", port)
        peer.send(invite, port)
        ringing = await peer.response()
        assert ringing.status == 180
        peer.send(invite, port)  # Proceeding: §17.2.1 resends the last provisional
        again = await peer.response()
        assert again.status == 180
        assert again.to.tag == ringing.to.tag
        ok = await peer.response()
        assert ok.status == 200
        peer.send(invite, port)  # Accepted: the UAS core resends its 2xx
        ok_again = await peer.response(timeout=0.4)  # before the first 2xx retransmission (T1)
        assert ok_again.status == 200
        assert ok_again.to_bytes() == ok.to_bytes()
        peer.send(peer.request("ACK", port, call_id=invite.call_id, to_tag=ok.to.tag), port)
    assert server.stats.invite_retransmissions == 2
    assert server.stats.invites_answered == 1


async def test_2xx_retransmitted_until_ack(peer: UdpPeer) -> None:
    async with running(timers=FAST) as server:
        port = udp_port(server)
        invite = peer.request("INVITE", port)
        peer.send(invite, port)
        assert (await peer.response()).status == 180
        ok = await peer.response()
        start = time.monotonic()
        arrivals = []
        for _ in range(4):
            retransmitted = await peer.response(timeout=1.0)
            assert retransmitted.status == 200
            assert retransmitted.to_bytes() == ok.to_bytes()
            arrivals.append(time.monotonic() - start)
        # §13.3.1.4: T1, then doubling up to T2: 0.05, 0.1, 0.2, 0.2 -> at 0.05, 0.15, 0.35, 0.55.
        gaps = [b - a for a, b in zip([0.0, *arrivals], arrivals, strict=False)]
        assert gaps[0] < gaps[2]
        assert 0.15 <= gaps[3] < 0.4  # capped at T2
        peer.send(peer.request("ACK", port, call_id=invite.call_id, to_tag=ok.to.tag), port)
        await until(lambda: server.stats.acks_received == 1)
        while (late := await peer.recv(2 * FAST.t2)) is not None:  # one may have crossed the ACK
            assert isinstance(late, Response)
        assert server.stats.ok_retransmissions >= 4


async def test_2xx_given_up_after_64_t1(peer: UdpPeer) -> None:
    timers = TimerConfig(t1=0.01, t2=0.04, t4=0.05)
    async with running(timers=timers) as server:
        port = udp_port(server)
        peer.send(peer.request("INVITE", port), port)
        await until(lambda: server.stats.acks_missing == 1, timeout=3.0)
        sent = server.stats.ok_retransmissions
        await asyncio.sleep(0.1)
        assert server.stats.ok_retransmissions == sent
    # 64*T1 = 0.64 s: 0.01 + 0.02 + 0.04 * n <= 0.64 -> about 17 retransmissions.
    assert 10 <= sent <= 17


async def test_cancel_gets_200_and_the_invite_487(peer: UdpPeer) -> None:
    async with running(answer_delay=5.0) as server:
        port = udp_port(server)
        invite = peer.request("INVITE", port)
        peer.send(invite, port)
        ringing = await peer.response()
        assert ringing.status == 180
        cancel = peer.request(
            "CANCEL", port, call_id=invite.call_id, branch=invite.top_via.branch, cseq_method="CANCEL"
        )
        peer.send(cancel, port)
        first, second = await peer.response(), await peer.response()
        by_method = {r.cseq.method: r for r in (first, second)}
        assert by_method["CANCEL"].status == 200
        assert by_method["INVITE"].status == 487
        assert by_method["INVITE"].to.tag == ringing.to.tag
        # The ACK of the 487 belongs to the INVITE transaction (same branch, §17.1.1.3).
        ack = peer.request("ACK", port, call_id=invite.call_id, branch=invite.top_via.branch)
        ack.set_header("to", by_method["INVITE"].get("to") or "")
        peer.send(ack, port)
        assert await peer.recv(QUIET) is None
        # §9.2: a CANCEL that matches nothing gets 481.
        peer.send(peer.request("CANCEL", port), port)
        assert (await peer.response()).status == 481
    assert server.stats.cancels_answered == 1
    assert server.stats.invites_answered == 0


async def test_bye_and_other_requests_answered_200(peer: UdpPeer) -> None:
    async with running() as server:
        port = udp_port(server)
        # A BYE for a call the other pair member set up: 200 (the pair shares its calls).
        peer.send(peer.request("BYE", port, to_tag="elsewhere"), port)
        assert (await peer.response()).status == 200
        for method in ("MESSAGE", "INFO", "NOTIFY"):
            peer.send(peer.request(method, port), port)
            assert (await peer.response()).status == 200
        peer.send(peer.request("REGISTER", port), port)
        registered = await peer.response()
        assert registered.status == 200
        assert registered.get("contact") == f"<sip:uac@{HOST}:{peer.port}>"
        # §8.2.2.3: no extension is supported.
        peer.send(peer.request("OPTIONS", port, headers=[("Require", "100rel")]), port)
        refused = await peer.response()
        assert refused.status == 420
        assert refused.get("unsupported") == "100rel"
        # A malformed request gets a 400 it can match.
        broken = peer.request("MESSAGE", port).to_bytes().replace(b"CSeq: 1 MESSAGE", b"CSeq: one MESSAGE")
        peer.send(broken, port)
        assert (await peer.response()).status == 400
    assert server.stats.byes_answered == 1
    assert server.stats.calls_completed == 0
    assert server.stats.other_answered == 4


async def _read_response(reader: asyncio.StreamReader) -> Response:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2.0)
    length = int(re.search(rb"Content-Length: *(\d+)", head, re.IGNORECASE).group(1))  # type: ignore[union-attr]
    body = await asyncio.wait_for(reader.readexactly(length), 2.0)
    message = parse_message(head + body, stream=True)
    assert isinstance(message, Response)
    return message


async def test_tcp_call(peer: UdpPeer) -> None:
    async with running() as server:
        port = server.address("TCP").port
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            invite = peer.request("INVITE", port)
            invite.replace_top_via(f"SIP/2.0/TCP {HOST}:{peer.port};branch=z9hG4bKtcp1")
            writer.write(invite.to_bytes())
            ringing, ok = await _read_response(reader), await _read_response(reader)
            assert (ringing.status, ok.status) == (180, 200)
            assert ok.get("contact") == f"<sip:sipha-sim@{HOST}:{port};transport=tcp>"
            ack = peer.request("ACK", port, call_id=invite.call_id, to_tag=ok.to.tag)
            ack.replace_top_via(f"SIP/2.0/TCP {HOST}:{peer.port};branch=z9hG4bKtcp2")
            bye = peer.request("BYE", port, call_id=invite.call_id, to_tag=ok.to.tag, cseq=2)
            bye.replace_top_via(f"SIP/2.0/TCP {HOST}:{peer.port};branch=z9hG4bKtcp3")
            writer.write(ack.to_bytes() + bye.to_bytes())
            assert (await _read_response(reader)).status == 200
        finally:
            writer.close()
            await writer.wait_closed()
    assert server.stats.calls_completed == 1


# ---------------------------------------------------------------------------- requests from the member


async def test_send_request_reaches_the_proxy_from_the_listening_port(peer: UdpPeer) -> None:
    async with running() as server:
        proxy = Address("UDP", HOST, peer.port)
        task = asyncio.create_task(server.send_request(proxy))
        request = await peer.recv()
        assert isinstance(request, Request)
        assert request.method == "OPTIONS"
        assert request.uri == f"sip:probe@{HOST}:{peer.port}"
        # docs/design.md §2: the proxy matches the member by source IP and port.
        assert peer.last_source == (HOST, udp_port(server))
        assert request.top_via.sent_by == f"{HOST}:{udp_port(server)}"
        assert request.top_via.branch.startswith("z9hG4bK")  # type: ignore[union-attr]
        assert request.max_forwards == 70
        assert request.from_.tag
        assert request.to.tag is None
        peer.send(make_response(request, 100, "Trying"), udp_port(server))
        peer.send(make_response(request, 200, "OK", to_tag="proxy"), udp_port(server))
        assert await asyncio.wait_for(task, 2.0) == 200
        # Unanswered: None after the timeout; in backup mode too (a backup sends requests).
        server.set_mode("backup")
        assert await server.send_request(proxy, "MESSAGE", timeout=QUIET) is None
        message = await peer.recv()
        assert isinstance(message, Request)
        assert message.method == "MESSAGE"
        with pytest.raises(ValueError, match="non-INVITE"):
            await server.send_request(proxy, "INVITE")
    assert server.stats.requests_sent == 2


async def test_send_request_over_tcp_names_the_listening_port() -> None:
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def proxy_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        received.put_nowait(head)
        request = parse_message(head, stream=True)
        writer.write(make_response(request, 200, "OK", to_tag="p").to_bytes())
        await writer.drain()

    tcp_server = await asyncio.start_server(proxy_side, HOST, 0)
    proxy_port = tcp_server.sockets[0].getsockname()[1]
    try:
        async with running() as server:
            status = await server.send_request(Address("TCP", HOST, proxy_port), timeout=2.0)
            head = received.get_nowait()
    finally:
        tcp_server.close()
        await tcp_server.wait_closed()
    assert status == 200
    # TCP: the proxy matches on the top Via sent-by port (docs/design.md §2).
    assert f"Via: SIP/2.0/TCP {HOST}:{server.address('TCP').port};".encode() in head


# ---------------------------------------------------------------------------- dropped requests (drop)


async def test_drop_first_invite_and_its_retransmissions(
    peer: UdpPeer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sipha.simulator")
    async with running(drop={"invite": 1}) as server:
        port = udp_port(server)
        first = peer.request("INVITE", port)
        peer.send(first, port)
        assert await peer.recv(QUIET) is None
        peer.send(first, port)  # its retransmission (same transaction, §17.2.3): dropped too
        assert await peer.recv(QUIET) is None
        alive = await options(peer, server)  # otherwise healthy: OPTIONS answered meanwhile
        assert alive is not None
        assert alive.status == 200
        second = peer.request("INVITE", port)
        peer.send(second, port)
        ringing, ok = await peer.response(), await peer.response()
        assert (ringing.status, ok.status) == (180, 200)
        assert ok.call_id == second.call_id
        peer.send(peer.request("ACK", port, call_id=second.call_id, to_tag=ok.to.tag), port)
        # The dropped INVITE never made a transaction: its CANCEL matches nothing (§9.2: 481).
        cancel = peer.request(
            "CANCEL", port, call_id=first.call_id, branch=first.top_via.branch, cseq_method="CANCEL"
        )
        peer.send(cancel, port)
        assert (await peer.response()).status == 481
    assert server.drop == {"INVITE": 1}
    assert server.stats.dropped == 2
    assert server.stats.invites_answered == 1
    drops = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dropping")]
    assert drops == [
        f"dropping INVITE 1 of 1 (Call-ID {first.call_id}): not answered",
        f"dropping a retransmission of INVITE (Call-ID {first.call_id}): not answered",
    ]


async def test_drop_counts_per_method_in_primary_mode_only(peer: UdpPeer) -> None:
    async with running(mode="backup", backup_answer=503, drop={"REGISTER": 2, "MESSAGE": 1}) as server:
        port = udp_port(server)
        peer.send(peer.request("REGISTER", port), port)
        assert (await peer.response()).status == 503  # backup mode: answered, not counted
        server.set_mode("primary")
        for _ in range(2):
            peer.send(peer.request("REGISTER", port), port)  # a new transaction each time
            assert await peer.recv(QUIET) is None
        peer.send(peer.request("REGISTER", port), port)
        assert (await peer.response()).status == 200
        peer.send(peer.request("MESSAGE", port), port)
        assert await peer.recv(QUIET) is None
        peer.send(peer.request("MESSAGE", port), port)
        assert (await peer.response()).status == 200
    assert server.stats.dropped == 3
    assert server.stats.other_answered == 2
    assert server.stats.backup_answered == 1


def test_drop_settings() -> None:
    assert drop_counts([]) == {}
    assert drop_counts(["invite", "REGISTER:3", "INVITE:2", " info : 1 "]) == {
        "INVITE": 3,
        "REGISTER": 3,
        "INFO": 1,
    }
    for bad in ("INVITE:0", ":2", "INVITE:x", "IN VITE", "INVITE:-1", ""):
        with pytest.raises(ValueError, match="--drop"):
            drop_counts([bad])
    with pytest.raises(ValueError, match="drop"):
        SimulatedServer([("udp", HOST, 0)], drop={"INVITE": 0})
    with pytest.raises(ValueError, match="drop"):
        SimulatedServer([("udp", HOST, 0)], drop={"": 1})
    assert SimulatedServer([("udp", HOST, 0)], drop={"bye": 2, "BYE": 1}).drop == {"BYE": 3}


# ---------------------------------------------------------------------------- SIPp, the real peer


def _sipp_counts(screen: Path) -> tuple[int, int]:
    text = screen.read_text(encoding="utf-8", errors="replace")
    ok = re.findall(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", text)
    failed = re.findall(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", text)
    return int(ok[-1]), int(failed[-1])


@pytest.mark.integration
@pytest.mark.skipif(SIPP is None, reason="SIPp is not installed")
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_uac_20_calls(transport: str, tmp_path: Path) -> None:
    assert SIPP is not None
    async with running() as server:
        port = server.address(transport).port
        screen = tmp_path / "screen.log"
        process = await asyncio.create_subprocess_exec(
            SIPP,
            "-sn", "uac", f"{HOST}:{port}",
            "-t", "u1" if transport == "udp" else "t1",
            "-i", HOST, "-p", str(free_port()),
            "-m", "20", "-r", "20",
            "-nostdin", "-timeout", "20s", "-timeout_error",
            "-trace_screen", "-screen_file", str(screen),
            cwd=tmp_path,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), 30.0)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert process.returncode == 0, stderr.decode(errors="replace")
    assert _sipp_counts(screen) == (20, 0)
    assert server.stats.calls_completed == 20
    assert server.stats.acks_received == 20


# ---------------------------------------------------------------------------- the command line


def test_cli_refuses_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate-server", "--listen", "udp:127.0.0.1:5070", "--backup-answer", "200"]) == 2
    assert "backup_answer" in capsys.readouterr().err
    assert main(["simulate-server", "--listen", "sctp:127.0.0.1:5070"]) == 2
    assert main(["simulate-server", "--listen", "udp:127.0.0.1:5070", "--drop", "INVITE:0"]) == 2
    assert "--drop 'INVITE:0'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:
        main(["simulate-server", "--listen", "udp:127.0.0.1:5070", "--listen-delay", "-1"])
    assert refused.value.code == 2
    assert "0 to 86400 seconds" in capsys.readouterr().err


@pytest.mark.integration
async def test_cli_subprocess_signals(peer: UdpPeer, tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "sim.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "sipha", "simulate-server",
                "--listen", f"udp:{HOST}:{port}", "--listen", f"tcp:{HOST}:{port}",
                "--mode", "primary", "--proxy", f"udp:{HOST}:{peer.port}",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip

    def log_text() -> str:
        return log_path.read_text(encoding="utf-8", errors="replace")

    async def answered() -> bool:
        peer.send(peer.request("OPTIONS", port), port)
        response = await peer.recv(QUIET)
        assert response is None or isinstance(response, Response)
        return response is not None and response.status == 200

    async def eventually(want: bool) -> None:
        deadline = time.monotonic() + 5.0
        while await answered() != want:
            assert time.monotonic() < deadline, log_text()
        while await peer.recv(0.05) is not None:  # late answers to earlier probes
            pass

    try:
        await until(lambda: "listening on" in log_text() or process.poll() is not None, timeout=10.0)
        assert (
            f"simulated server listening on udp:{HOST}:{port}, tcp:{HOST}:{port} in primary mode"
            in log_text()
        )
        assert await answered()
        process.send_signal(signal.SIGUSR2)
        await eventually(want=False)
        process.send_signal(signal.SIGUSR1)
        await eventually(want=True)
        # SIGHUP: one OPTIONS to --proxy, from the listening port.
        process.send_signal(signal.SIGHUP)
        probe = await peer.recv(5.0)
        assert isinstance(probe, Request)
        assert probe.method == "OPTIONS"
        assert peer.last_source == (HOST, port)
        peer.send(make_response(probe, 200, "OK", to_tag="p"), port)
        await until(lambda: f"OPTIONS to udp:{HOST}:{peer.port}: 200" in log_text(), timeout=5.0)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 10.0) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log_text()
    assert "mode primary -> backup" in text
    assert "mode backup -> primary" in text
    assert "Traceback" not in text


@pytest.mark.integration
async def test_cli_listen_delay_and_drop(peer: UdpPeer, tmp_path: Path) -> None:
    """--listen-delay: the port stays closed until then; --drop OPTIONS:1: the first OPTIONS vanishes."""
    port = free_port()
    delay = 1.5
    log_path = tmp_path / "sim.log"
    started = time.monotonic()
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "sipha", "simulate-server", "--listen", f"udp:{HOST}:{port}",
                "--listen-delay", str(delay), "--drop", "OPTIONS:1",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip

    def log_text() -> str:
        return log_path.read_text(encoding="utf-8", errors="replace")

    try:
        await until(lambda: "listening in 1.500 s" in log_text() or process.poll() is not None, timeout=10.0)
        listening = f"simulated server listening on udp:{HOST}:{port} in primary mode"
        if listening not in log_text():  # not yet bound: nothing answers (the datagram is refused)
            peer.send(peer.request("OPTIONS", port), port)
            assert await peer.recv(QUIET) is None or listening in log_text()
        await until(lambda: listening in log_text() or process.poll() is not None, timeout=10.0)
        assert time.monotonic() - started >= delay
        dropped = peer.request("OPTIONS", port)
        peer.send(dropped, port)
        assert await peer.recv(QUIET) is None
        peer.send(peer.request("OPTIONS", port), port)
        answered = await peer.response()
        assert answered.status == 200
        assert f"dropping OPTIONS 1 of 1 (Call-ID {dropped.call_id}): not answered" in log_text()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 10.0) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Traceback" not in log_text()


@pytest.mark.integration
async def test_cli_stopped_before_it_listens(tmp_path: Path) -> None:
    """SIGTERM during --listen-delay: exit 0 at once, never bound."""
    log_path = tmp_path / "sim.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "sipha", "simulate-server", "--listen", f"udp:{HOST}:{free_port()}",
                "--listen-delay", "30",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    text = ""
    try:
        await until(
            lambda: "listening in 30.000 s" in log_path.read_text() or process.poll() is not None, 10.0
        )
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 5.0) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        text = log_path.read_text()
    assert "stopping" in text
    assert "simulated server listening on" not in text
