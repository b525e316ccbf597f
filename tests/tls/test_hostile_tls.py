"""Hostile input over TLS: every stream case of tests/integration/test_hostile.py, on a TLS listen.

The same rig, the same cases, the same expectations as over TCP (RFC 3261 §18.3: TLS
is a stream, framed by Content-Length like TCP): the RFC 4475 §3.1 torture corpus,
RFC 4475's double request over a stream, a Content-Length of 10 MB, an endless header
section, bad characters (NUL, bare CR and LF), a response with a foreign Via, an
orphan CANCEL and Routes to third parties.  Only the client side changes: a TLS
connection (trustme certificates, tests/tls/conftest.py) to sipha's ``tls:`` listen,
verified as ``sipha.test``.  The pair's member is the suite's plain SIP server over
TCP, so that sipha's leg to it and what it forwards are checked as in the TCP cases.

What each case must show, as over TCP: the right 4xx, or a silent drop, per the RFC;
nothing forwarded that must not be; the connection closed where the framer must close
it (a framing error: ``ncl``, the double request's trailing garbage, the 10 MB body,
the endless header section) and kept where it must wait (``clerr``, ``baddn``) or go on
(every 4xx: the probe that follows is sent on the same connection); sipha still serving.

A request that comes in over TLS and leaves over TCP gets two Record-Route values
(RFC 5658, docs/design.md §3); the TCP checks expect only the outgoing side's, so the
incoming (TLS) side's value is checked here and then taken out before them.

The UDP-only cases of the suite (datagram sizes, UDP Content-Length rules, random
datagrams, ICMP) have no TLS counterpart.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import pytest

from sipha.sip import Request, Response
from tests.integration import test_hostile as hostile
from tests.integration.support import HOST, START_TIMEOUT, RunningProxy, free_port, stop_process
from tests.sip.rfc4475_cases import CASES, TortureCase
from tests.tls.sipha import TlsMember, TlsPair, write_tls_config
from tests.tls.support import Pki, client_context

pytestmark = [pytest.mark.integration, pytest.mark.tls]

SERVER_NAME = "sipha.test"


class TlsClient(hostile.TcpClient):
    """One TLS connection to sipha's TLS listen; a stream client like the suite's TcpClient."""

    def __init__(self, tls_port: int, context: ssl.SSLContext) -> None:
        raw = socket.create_connection((HOST, tls_port), timeout=hostile.WAIT)
        self.sock = context.wrap_socket(raw, server_hostname=SERVER_NAME)
        self.port = int(self.sock.getsockname()[1])
        self.buffer = bytearray()
        self.inbox: list[Request | Response | bytes] = []
        self.closed = False

    def via(self) -> str:
        return f"SIP/2.0/TLS {HOST}:{self.port}"


@dataclass
class TlsRig(hostile.Rig):
    """The suite's rig with a TLS listen: clients connect over TLS, the member leg is TCP."""

    pki: Pki | None = None
    tls_port: int = 0

    def start(self) -> None:
        self.stack = contextlib.ExitStack()
        self.proxy = self.stack.enter_context(run_sipha(self))

    def client(self) -> hostile.UdpClient | hostile.TcpClient:
        assert self.pki is not None
        client = TlsClient(self.tls_port, client_context(self.pki.ca, SERVER_NAME))
        self.clients.append(client)
        return client

    @property
    def tls_record_route(self) -> bytes:
        """The Record-Route value of the incoming TLS side (RFC 5658)."""
        return f"Record-Route: <sip:{HOST}:{self.tls_port};transport=tls;lr>\r\n".encode()


@contextlib.contextmanager
def run_sipha(rig: TlsRig) -> Iterator[RunningProxy]:
    """``sipha run`` listening on UDP and TCP (one port) and TLS, the rig's pair over TCP."""
    assert rig.pki is not None
    port, rig.tls_port = free_port(), free_port()
    pair = TlsPair("hostile", TlsMember(rig.server.port, "tcp"), TlsMember(rig.backup, "tcp"))
    config = write_tls_config(
        rig.directory / "sipha.toml",
        rig.pki,
        [pair],
        udp_port=port,
        tls_port=rig.tls_port,
        admin_port=free_port(),
    )
    text = config.read_text(encoding="utf-8")
    listen = f'listen = ["udp:{HOST}:{port}", "tls:{HOST}:{rig.tls_port}"]'
    assert listen in text
    config.write_text(
        text.replace(
            listen, f'listen = ["udp:{HOST}:{port}", "tcp:{HOST}:{port}", "tls:{HOST}:{rig.tls_port}"]'
        ),
        encoding="utf-8",
    )
    log = rig.directory / "sipha.log"
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "sipha", "run", "--config", str(config)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    proxy = RunningProxy(port, config, log, process, [])
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while "primary tcp:" not in proxy.log_text() or " is active" not in proxy.log_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sipha did not start:\n{proxy.log_text()[-3000:]}")
            time.sleep(0.05)
        yield proxy
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def tls_rig(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TlsRig]:
    directory = tmp_path_factory.mktemp("hostile-tls")
    rig = TlsRig("tcp", directory, hostile.SipServer(free_port()), free_port(), pki=pki)
    try:
        rig.start()
        yield rig
    finally:
        rig.close()


@pytest.fixture
def tcp_rig(tls_rig: TlsRig) -> TlsRig:
    """The suite looks its stream rig up by this name (test_hostile.get_rig): the TLS one here."""
    return tls_rig


@pytest.fixture
def rig(tls_rig: TlsRig, monkeypatch: pytest.MonkeyPatch) -> TlsRig:
    """The TLS rig, restarted if a case killed sipha; the forwarded checks see the TCP side only."""
    tls_rig.ensure_running()
    check = hostile.assert_forwarded_intact

    def outgoing_side_only(rig: hostile.Rig, original: Request, received: hostile.Received) -> None:
        assert isinstance(rig, TlsRig)
        value = rig.tls_record_route
        if original.method in hostile.DIALOG_CREATING and original.to.tag is None:
            assert received.raw.count(value) == 1, (
                f"no TLS-side Record-Route (RFC 5658): {received.raw[:600]!r}"
            )
            raw = received.raw.replace(value, b"", 1)
            received = replace(received, raw=raw, message=hostile.parse(raw, stream=True))
        check(rig, original, received)

    monkeypatch.setattr(hostile, "assert_forwarded_intact", outgoing_side_only)
    return tls_rig


def stream_cases() -> list[object]:
    """The RFC 4475 cases the suite runs over TCP (dblreq: its own stream test)."""
    return [pytest.param(case, id=case.name) for case in CASES if case.name != "dblreq"]


@pytest.mark.parametrize("case", stream_cases())
def test_rfc4475_over_tls(request: pytest.FixtureRequest, rig: TlsRig, case: TortureCase) -> None:
    hostile.test_rfc4475(request, "tcp", case)
    assert rig.alive(), rig.log()


def route_to_test_net(rig: TlsRig) -> None:
    hostile.test_route_to_third_party_refused(rig, "203.0.113.9")


def route_to_loopback(rig: TlsRig) -> None:
    hostile.test_route_to_third_party_refused(rig, "loopback")


OWN_CASES: dict[str, Callable[[TlsRig], None]] = {
    "dblreq": hostile.test_dblreq_over_tcp,
    "oversize-stream-message": hostile.test_oversize_stream_message,
    "endless-header-section": hostile.test_endless_header_section,
    "response-with-foreign-via": hostile.test_response_with_foreign_via_dropped,
    "orphan-cancel": hostile.test_orphan_cancel_forwarded,
    "route-to-203.0.113.9": route_to_test_net,
    "route-to-loopback": route_to_loopback,
}
"""The suite's own hostile cases that apply to a stream (test_hostile.py, by its test names)."""


@pytest.mark.parametrize("name", sorted(OWN_CASES))
def test_hostile_over_tls(rig: TlsRig, name: str) -> None:
    OWN_CASES[name](rig)
    assert rig.alive(), rig.log()


BAD_CHARACTERS: list[tuple[str, str | None, tuple[str, ...]]] = next(
    mark.args[1]
    for mark in getattr(hostile.test_bad_characters_refused, "pytestmark", [])
    if mark.name == "parametrize"
)
"""The suite's cases of bad characters (NUL, bare CR and LF), as its test parametrizes them."""


@pytest.mark.parametrize(
    ("what", "start_line", "extra"),
    [pytest.param(*values, id=values[0]) for values in BAD_CHARACTERS],
)
def test_bad_characters_over_tls(
    rig: TlsRig, what: str, start_line: str | None, extra: tuple[str, ...]
) -> None:
    hostile.test_bad_characters_refused(rig, what, start_line, extra)


def test_sipha_survived_every_case(tls_rig: TlsRig) -> None:
    """Last in this module: the rig never had to restart sipha (a case that killed it would have)."""
    assert tls_rig.restarts == 0, tls_rig.log()
    assert tls_rig.alive()
