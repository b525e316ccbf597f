"""SIPp through sipha, on loopback: load over UDP and TCP, CANCEL, packet loss, non-INVITE
requests; and hand-made messages from Python sockets: stray responses, Max-Forwards, loops.

Every test is bounded in time (SIPp's own ``-timeout``, socket timeouts) and every
process it starts is stopped at the end of its ``with`` block (see support.py).
The SIPp scenarios are in tests/scenarios/; the README's "Try it by hand" section
runs the same commands.  SIPp servers run with ``-aa``: they answer out-of-call
OPTIONS 200, as a pair member answers the pair monitor's probes (docs/design.md §2).
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.support import (
    HOST,
    SIPP,
    Pair,
    RunningProxy,
    free_port,
    run_sipha,
    run_sipp_client,
    sipp_server,
)

pytestmark = [pytest.mark.integration, pytest.mark.skipif(SIPP is None, reason="sipp not installed")]

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
# Added after [proxy]'s keys by write_config: a [monitor] table of its own.
NO_FAILOVER = "[monitor]\nfailover-timeout = 32"
# SIPp -trace_msg: each message follows a line of 47 dashes and a timestamp.
_TRACED = re.compile(
    r"^(?:UDP|TCP) message (received|sent) (?:\[\d+\] bytes :|\(\d+ bytes\):)\n\n(.*?)(?=^-{47}|\Z)",
    re.M | re.S,
)


# ---------------------------------------------------------------------------- helpers


def traced(directory: Path, scenario: str, direction: str) -> list[str]:
    """The messages a SIPp run with ``-trace_msg`` logged as ``received`` or ``sent``."""
    messages: list[str] = []
    for log in sorted(directory.glob(f"{scenario}_*_messages.log")):
        text = log.read_text(encoding="utf-8", errors="replace")
        messages += [body for kind, body in _TRACED.findall(text) if kind == direction]
    return messages


def header_values(message: str, name: str) -> list[str]:
    """Every value of header ``name`` (comma-separated values split; no quoted commas here)."""
    head = message.split("\n\n", 1)[0]
    values: list[str] = []
    for line in head.splitlines()[1:]:
        field, _, value = line.partition(":")
        if field.strip().lower() == name.lower():
            values += [part.strip() for part in value.split(",")]
    return values


def start_line(message: str) -> str:
    return message.split("\n", 1)[0].strip()


def status_of(message: str) -> int:
    match = re.match(r"SIP/2\.0 (\d{3}) ", message)
    assert match is not None, f"not a response: {message!r}"
    return int(match.group(1))


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    """A UDP socket on 127.0.0.1, closed at the end."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    sock.settimeout(5.0)
    try:
        yield sock
    finally:
        sock.close()


def local_port(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def make_request(
    method: str,
    uri: str,
    sock: socket.socket,
    *,
    branch: str,
    max_forwards: int | None = 70,
    call_id: str = "py-1@127.0.0.1",
) -> bytes:
    """A minimal request sent from ``sock`` (its Via names the socket)."""
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {HOST}:{local_port(sock)};branch={branch};rport",
        f"From: <sip:python@{HOST}>;tag=py-from",
        f"To: <{uri}>",
        f"Call-ID: {call_id}",
        f"CSeq: 1 {method}",
        f"Contact: <sip:python@{HOST}:{local_port(sock)}>",
    ]
    if max_forwards is not None:
        lines.append(f"Max-Forwards: {max_forwards}")
    lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def final_response(sock: socket.socket, timeout: float = 5.0) -> str:
    """Read responses on ``sock`` until a final one (provisional ones are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(65535).decode("utf-8", "replace")
        if status_of(data) >= 200:
            return data


def ack_for(response: str, uri: str, sock: socket.socket, branch: str) -> bytes:
    """The ACK for a non-2xx final response (RFC 3261 17.1.1.3: the INVITE's branch, the response's To)."""
    to = header_values(response, "To")[0]
    return "\r\n".join(
        [
            f"ACK {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {HOST}:{local_port(sock)};branch={branch};rport",
            f"From: <sip:python@{HOST}>;tag=py-from",
            f"To: {to}",
            f"Call-ID: {header_values(response, 'Call-ID')[0]}",
            "CSeq: 1 ACK",
            "Max-Forwards: 70",
            "Content-Length: 0",
            "",
            "",
        ]
    ).encode()


def assert_no_sipp_failures(directory: Path, name: str) -> None:
    """A SIPp server counts its failures only in its own logs: its caller may still succeed."""
    errors = directory / f"{name}_errors.log"
    text = errors.read_text(encoding="utf-8", errors="replace") if errors.exists() else ""
    for failure in ("Aborting call", "Failed regexp", "unexpected message"):
        assert failure not in text, text[-4000:]


# ---------------------------------------------------------------------------- 1. load


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_thousand_calls(tmp_path: Path, transport: str) -> None:
    """SIPp's uac -> sipha -> SIPp's uas: 1,000 calls at 100 calls/s, none failed.

    Over TCP both SIPp sides run ``-t t1`` (TCP, one connection) and the pair is a TCP
    pair: the uas listens on TCP only, so every call that succeeds went over TCP on
    both legs.
    """
    primary, backup = free_port(), free_port()
    sipp_transport = ["-t", "t1"] if transport == "tcp" else []
    with (
        sipp_server(tmp_path, primary, "-aa", *sipp_transport),
        run_sipha(tmp_path, [Pair("load", primary, backup, transport=transport)]) as proxy,
    ):
        result = run_sipp_client(
            tmp_path, f"{HOST}:{proxy.port}", "-m", "1000", "-r", "100", *sipp_transport, timeout=60
        )
    assert result.failed == 0, result.errors[-4000:]
    assert result.successful == 1000, result.stats
    assert_no_sipp_failures(tmp_path, "uas")


# ---------------------------------------------------------------------------- 2. CANCEL


def test_cancel(tmp_path: Path) -> None:
    """INVITE, 180, CANCEL: 200 for the CANCEL (hop by hop), the callee's 487, ACK.

    RFC 3261 16.10: the proxy answers the CANCEL itself and sends its own CANCEL
    downstream with the branch of the INVITE it forwarded (9.1); the callee's 487
    comes back (uac_cancel.xml checks its To tag is the callee's), and the proxy
    ACKs it downstream itself (17.1.1.3) while relaying it upstream.
    """
    primary, backup = free_port(), free_port()
    with (
        sipp_server(tmp_path, primary, "-aa", "-trace_msg", scenario=str(SCENARIOS / "uas_cancel.xml")),
        run_sipha(tmp_path, [Pair("cancel", primary, backup)]) as proxy,
    ):
        result = run_sipp_client(
            tmp_path,
            f"{HOST}:{proxy.port}",
            "-m",
            "50",
            "-r",
            "25",
            scenario=str(SCENARIOS / "uac_cancel.xml"),
            timeout=30,
        )
    assert result.failed == 0, result.errors[-4000:]
    assert result.successful == 50, result.stats
    assert_no_sipp_failures(tmp_path, "uas")
    received = traced(tmp_path, "uas_cancel", "received")
    invites = [m for m in received if m.startswith("INVITE ")]
    invite_branch = {header_values(m, "Call-ID")[0]: header_values(m, "Via")[0] for m in invites}
    cancels = [m for m in received if m.startswith("CANCEL ")]
    assert len(invite_branch) == 50
    assert len(cancels) == 50
    for cancel in cancels:
        vias = header_values(cancel, "Via")
        assert vias == [invite_branch[header_values(cancel, "Call-ID")[0]]], cancel
        assert vias[0].startswith(f"SIP/2.0/UDP {HOST}:{proxy.port};branch=z9hG4bK"), cancel
    acks = [m for m in received if m.startswith("ACK ")]
    assert len(acks) == 50


# ---------------------------------------------------------------------------- 3. packet loss


def test_packet_loss(tmp_path: Path) -> None:
    """10% loss on both SIPp sides (SIPp's ``-lost 10``, sent and received messages).

    SIPp retransmits on its timers; the proxy's transactions absorb retransmissions
    from either side and retransmit on their own (Timers A and E), and 2xx
    retransmissions pass through.  The uas is uas_lossy.xml, the built-in uas
    without the two SIPp limits that would fail calls whatever the proxy does (see
    the comment in that file).  SIPp's counters show the loss did happen.

    The pair monitor's failover-timeout is set to its maximum (32 s, Timer F's
    64*T1) so that this test is about the transactions alone: with the default 1 s,
    two lost copies of one request are enough for the proxy to re-probe, hold the
    traffic for oos-force (5 s) and re-send held requests on a new branch.
    """
    primary, backup = free_port(), free_port()
    with (
        sipp_server(
            tmp_path, primary, "-aa", "-lost", "10", "-trace_msg", scenario=str(SCENARIOS / "uas_lossy.xml")
        ),
        run_sipha(tmp_path, [Pair("lossy", primary, backup)], extra=NO_FAILOVER) as proxy,
    ):
        result = run_sipp_client(
            tmp_path, f"{HOST}:{proxy.port}", "-m", "200", "-r", "20", "-lost", "10", "-trace_msg", timeout=90
        )
    assert result.failed == 0, result.errors[-4000:]
    assert result.successful == 200, result.stats
    assert_no_sipp_failures(tmp_path, "uas")
    assert int(result.stats["Retransmissions(C)"]) > 0, "no loss happened: -lost had no effect"
    uac_log = "\n".join(p.read_text() for p in tmp_path.glob("uac_*_messages.log"))
    assert "voluntary lost" in uac_log
    assert "lost (recv)" in uac_log


# ---------------------------------------------------------------------------- 4. non-INVITE


@pytest.mark.parametrize("method", ["OPTIONS", "MESSAGE", "REGISTER"])
def test_non_invite(tmp_path: Path, method: str) -> None:
    """20 OPTIONS, MESSAGE or REGISTER transactions through the proxy, all answered 200.

    The uas sees each request once, with the proxy's Via on top of the caller's and
    Max-Forwards 69 for the caller's 70 (RFC 3261 16.6 steps 3 and 8); no
    Record-Route on a REGISTER (no dialog: 16.6 step 4, 10.3); the caller gets the
    200 with its own Via only (16.7 step 3).
    """
    primary, backup = free_port(), free_port()
    scenario = f"uac_{method.lower()}"
    with (
        sipp_server(tmp_path, primary, "-aa", "-trace_msg", scenario=str(SCENARIOS / "uas_any.xml")),
        run_sipha(tmp_path, [Pair("plain", primary, backup)]) as proxy,
    ):
        result = run_sipp_client(
            tmp_path,
            f"{HOST}:{proxy.port}",
            "-m",
            "20",
            "-r",
            "50",
            "-trace_msg",
            scenario=str(SCENARIOS / f"{scenario}.xml"),
            timeout=30,
        )
    assert result.failed == 0, result.errors[-4000:]
    assert result.successful == 20, result.stats
    assert_no_sipp_failures(tmp_path, "uas")
    # The caller's requests (a pair monitor's OPTIONS, if any, are not the caller's).
    requests = [m for m in traced(tmp_path, "uas_any", "received") if "SIPpTag00" in m]
    assert len(requests) == 20
    for request in requests:
        assert start_line(request).startswith(f"{method} "), request
        vias = header_values(request, "Via")
        assert len(vias) == 2, request
        assert vias[0].startswith(f"SIP/2.0/UDP {HOST}:{proxy.port};branch=z9hG4bK"), request
        assert not vias[1].startswith(f"SIP/2.0/UDP {HOST}:{proxy.port};"), request
        assert header_values(request, "Max-Forwards") == ["69"], request
        if method == "REGISTER":
            assert header_values(request, "Record-Route") == [], request
    responses = traced(tmp_path, scenario, "received")
    assert len(responses) == 20
    for response in responses:
        assert status_of(response) == 200, response
        assert len(header_values(response, "Via")) == 1, response


# ---------------------------------------------------------------------------- 5. stray responses


def stray_200(top_via: str, upstream: socket.socket, call_id: str) -> bytes:
    return "\r\n".join(
        [
            "SIP/2.0 200 OK",
            f"Via: {top_via}",
            f"Via: SIP/2.0/UDP {HOST}:{local_port(upstream)};branch=z9hG4bK-upstream",
            f"From: <sip:python@{HOST}>;tag=py-from",
            f"To: <sip:callee@{HOST}>;tag=py-to",
            f"Call-ID: {call_id}",
            "CSeq: 1 INVITE",
            "Content-Length: 0",
            "",
            "",
        ]
    ).encode()


def keepalive_answer(proxy: RunningProxy, sock: socket.socket) -> int:
    """The status of the proxy's answer to a keepalive OPTIONS (no user part, to the proxy).

    200 when a pair has an active member, 503 when none has (docs/design.md §3 rule 1):
    either way the proxy is up and answering.
    """
    uri = f"sip:{HOST}:{proxy.port}"
    keepalive = make_request("OPTIONS", uri, sock, branch="z9hG4bK-keepalive", call_id="ka@py")
    sock.sendto(keepalive, (HOST, proxy.port))
    return status_of(final_response(sock))


def test_response_for_unknown_transaction(tmp_path: Path, udp: socket.socket) -> None:
    """RFC 3261 16.7 / 18.1.2: a response no transaction knows.

    With the proxy's Via on top it is forwarded statelessly by the next Via, with
    the top Via removed (it is how 2xx retransmissions travel).  With another top
    Via it is dropped (18.1.2: the sent-by does not match).  The proxy keeps going.
    """
    primary, backup = free_port(), free_port()
    with (
        run_sipha(tmp_path, [Pair("stray", primary, backup)]) as proxy,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as upstream,
    ):
        upstream.bind((HOST, 0))
        upstream.settimeout(2.0)
        ours = f"SIP/2.0/UDP {HOST}:{proxy.port};branch=z9hG4bK-unknown"
        udp.sendto(stray_200(ours, upstream, "stray-ours@py"), (HOST, proxy.port))
        relayed = upstream.recv(65535).decode()
        assert status_of(relayed) == 200
        upstream_via = f"SIP/2.0/UDP {HOST}:{local_port(upstream)};branch=z9hG4bK-upstream"
        assert header_values(relayed, "Via") == [upstream_via]
        assert header_values(relayed, "Call-ID") == ["stray-ours@py"]

        theirs = f"SIP/2.0/UDP {HOST}:{free_port()};branch=z9hG4bK-unknown"
        udp.sendto(stray_200(theirs, upstream, "stray-theirs@py"), (HOST, proxy.port))
        upstream.settimeout(0.5)
        with pytest.raises(TimeoutError):
            upstream.recv(65535)

        assert keepalive_answer(proxy, udp) in {200, 503}
        assert proxy.process.poll() is None


# ---------------------------------------------------------------------------- 6. hop limits


@pytest.mark.parametrize("method", ["INVITE", "OPTIONS"])
def test_max_forwards_zero(tmp_path: Path, udp: socket.socket, method: str) -> None:
    """RFC 3261 16.3 step 3: Max-Forwards 0 is not forwarded: 483 (Too Many Hops)."""
    primary, backup = free_port(), free_port()
    with run_sipha(tmp_path, [Pair("hops", primary, backup)]) as proxy:
        uri = f"sip:service@{HOST}:{proxy.port}"
        branch = f"z9hG4bK-mf0-{method.lower()}"
        udp.sendto(make_request(method, uri, udp, branch=branch, max_forwards=0), (HOST, proxy.port))
        response = final_response(udp)
        assert status_of(response) == 483, response
        assert header_values(response, "CSeq") == [f"1 {method}"]
        if method == "INVITE":
            udp.sendto(ack_for(response, uri, udp, branch), (HOST, proxy.port))
        assert keepalive_answer(proxy, udp) in {200, 503}


def test_loop_detected(tmp_path: Path, udp: socket.socket) -> None:
    """RFC 3261 16.3 step 4: a request that comes back unchanged is a loop: 482.

    The realistic loop: the pair member sends the request straight back to the pool,
    as a SIP server that uses sipha as its outbound proxy and relays the request
    for the same Request-URI does (here a Python socket, acting as a stateless
    proxy: it adds its Via and relays; 16.11).  The copy that comes back carries
    the proxy's Via whose branch holds the 16.6 step 8 hash of this very request
    (same Request-URI, Call-ID, tags, CSeq, Via below), so the proxy refuses it
    with 482 instead of forwarding it again; the member relays the 482 back and the
    proxy relays it to the caller.  (A pair whose primary is the proxy's own
    address does not make a loop once the pair monitor runs: the proxy's own
    keepalive answer is 503 while no member is active, so that member never is.)
    """
    backup = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as member:
        member.bind((HOST, 0))
        member.settimeout(5.0)
        with run_sipha(tmp_path, [Pair("loop", local_port(member), backup)]) as proxy:
            uri = f"sip:service@{HOST}:{proxy.port}"
            branch = "z9hG4bK-loop"
            udp.sendto(make_request("INVITE", uri, udp, branch=branch, call_id="loop@py"), (HOST, proxy.port))
            request, _ = member_receive(member, "loop@py")
            assert start_line(request) == f"INVITE {uri} SIP/2.0"
            member_via = f"SIP/2.0/UDP {HOST}:{local_port(member)};branch=z9hG4bK-member-loop"
            first, _, rest = request.partition("\r\n")
            member.sendto(f"{first}\r\nVia: {member_via}\r\n{rest}".encode(), (HOST, proxy.port))
            refusal = member_final_response(member, "loop@py")
            assert status_of(refusal) == 482, refusal
            assert header_values(refusal, "Via")[0] == member_via, refusal
            # As the stateless proxy it is: remove its own Via and relay the 482 back.
            relayed = refusal.replace(f"Via: {member_via}\r\n", "", 1)
            member.sendto(relayed.encode(), (HOST, proxy.port))
            response = final_response(udp)
            assert status_of(response) == 482, response
            vias = header_values(response, "Via")
            assert len(vias) == 1, response
            assert vias[0].startswith(f"SIP/2.0/UDP {HOST}:{local_port(udp)};branch={branch}"), response
            udp.sendto(ack_for(response, uri, udp, branch), (HOST, proxy.port))
            assert proxy.process.poll() is None


def member_final_response(member: socket.socket, call_id: str) -> str:
    """As a pair member: the next final response for ``call_id`` (probes answered meanwhile)."""
    while True:
        data, source = member.recvfrom(65535)
        message = data.decode("utf-8", "replace")
        if message.startswith("SIP/2.0 "):
            if header_values(message, "Call-ID") == [call_id] and status_of(message) >= 200:
                return message
        elif message.startswith("OPTIONS "):
            member.sendto(answer_200(message, header_values(message, "Via")), source)


# ---------------------------------------------------------------------------- found on the way


def member_receive(server: socket.socket, call_id: str) -> tuple[str, tuple[str, int]]:
    """As a pair member: answer the monitor's OPTIONS 200 until the request ``call_id`` comes."""
    while True:
        data, source = server.recvfrom(65535)
        request = data.decode("utf-8", "replace")
        if header_values(request, "Call-ID") == [call_id]:
            return request, source
        if request.startswith("OPTIONS "):
            server.sendto(answer_200(request, header_values(request, "Via")), source)


def answer_200(request: str, vias: list[str]) -> bytes:
    """A 200 to ``request`` with the Vias ``vias``."""
    lines = ["SIP/2.0 200 OK", *(f"Via: {via}" for via in vias)]
    lines += [f"{name}: {header_values(request, name)[0]}" for name in ("From", "Call-ID", "CSeq")]
    lines += [f"To: {header_values(request, 'To')[0]};tag=member", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def test_response_without_a_via_for_the_caller_is_not_relayed(tmp_path: Path, udp: socket.socket) -> None:
    """RFC 3261 16.7 step 3: "If no Via header field values remain in the response, the
    response was meant for this element and MUST NOT be forwarded."

    Found with an early uas_cancel.xml that answered the 487 with the CANCEL's Via
    (the proxy's only): the caller received a 487 with no Via at all.  Here the
    pair's primary is a Python socket that answers an OPTIONS with the proxy's Via
    only; the caller must not get that 200.
    """
    backup = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind((HOST, 0))
        server.settimeout(5.0)
        with run_sipha(tmp_path, [Pair("broken", local_port(server), backup)]) as proxy:
            uri = f"sip:service@{HOST}:{proxy.port}"
            udp.sendto(make_request("OPTIONS", uri, udp, branch="z9hG4bK-novia"), (HOST, proxy.port))
            request, source = member_receive(server, "py-1@127.0.0.1")
            top_via = header_values(request, "Via")[0]
            server.sendto(answer_200(request, [top_via]), source)
            udp.settimeout(1.0)
            try:
                relayed = udp.recv(65535).decode()
            except TimeoutError:
                return
            pytest.fail(f"relayed without a Via:\n{relayed}")
