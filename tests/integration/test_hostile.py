"""Hostile input end to end: a real ``sipha run`` fed the RFC 4475 §3.1 torture corpus and worse.

The proxy has one pair; its primary is :class:`SipServer`, plain sockets in this
process that record every message the proxy forwards and answer each request
with a 200.  The "client" is a plain socket too.  Every wait is bounded, every
loop is bounded, all traffic stays on 127.0.0.1.

One sipha process per transport for the whole module: UDP clients with a UDP
pair, TCP clients with a TCP pair.  A test that kills it gets it restarted.

Ordering instead of long quiet periods: sipha runs one event loop, so what it
does with a message is done before it reads the next one from the same socket
or connection.  After each hostile message the test sends a well-formed probe
the same way; once the probe has come through, anything the hostile message
caused has happened already, and "nothing reached the server" is a fact, not
a timeout.

UDP and the Via address: RFC 3261 §18.2.2 sends a response over UDP to the
top Via's address (``received`` / sent-by port, default 5060), not to the
datagram's source.  The corpus Vias name hosts such as 192.0.2.15 or
host5.example.com, so over UDP the top Via's sent-by is rewritten to the test
client's 127.0.0.1:port (:func:`aim_at`); nothing else in the bytes changes.
Over TCP, responses use the connection, and the corpus is sent byte for byte.
"""

from __future__ import annotations

import contextlib
import functools
import random
import re
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import pytest

from sipha.sip import Request, Response, SipParseError, make_response, parse_message
from tests.integration.support import HOST, Pair, RunningProxy, free_port, run_sipha
from tests.sip.rfc4475_cases import CASES, TortureCase

pytestmark = pytest.mark.integration

WAIT = 1.0  # for something that must come: sipha on loopback answers in milliseconds
QUIET = 0.3  # for something that must not come, where no probe can prove it
RECV_SIZE = 70_000
Transport = Literal["udp", "tcp"]

# Content-Length (or "l") at the start of a header line, for framing streams here.
_LENGTH_RE = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*(\d+)", re.IGNORECASE)
_CALL_ID_RE = re.compile(rb"\r\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)
# The top Via's sent-by: the header name, the sent-protocol (LWS and folding allowed
# around the slashes, RFC 3261 §7.3.1), then the host[:port] that follows.
_LWS = rb"(?:[ \t]|\r\n[ \t])*"
_TOP_VIA_RE = re.compile(
    rb"(\r\n(?:via|v)[ \t]*:"
    + _LWS
    + rb"SIP"
    + _LWS
    + rb"/"
    + _LWS
    + rb"[0-9.]+"
    + _LWS
    + rb"/"
    + _LWS
    + rb"[A-Za-z0-9]+(?:[ \t]|\r\n[ \t])+)([^ \t;,\r\n]+)",
    re.IGNORECASE,
)


# ---------------------------------------------------------------------------- wire helpers


def aim_at(data: bytes, port: int) -> bytes:
    """``data`` with its top Via's sent-by replaced by 127.0.0.1:``port`` (see module docstring)."""
    rewritten, count = _TOP_VIA_RE.subn(lambda m: m.group(1) + f"{HOST}:{port}".encode(), data, count=1)
    assert count == 1, f"no Via sent-by found in {data[:200]!r}"
    return rewritten


def call_id_of(data: bytes) -> str | None:
    match = _CALL_ID_RE.search(data)
    return None if match is None else match.group(1).strip().decode("utf-8", "surrogateescape")


def split_stream(buffer: bytearray) -> list[bytes]:
    """Cut complete messages off the front of a stream buffer (RFC 3261 §18.3)."""
    messages: list[bytes] = []
    while True:
        while buffer[:2] == b"\r\n":
            del buffer[:2]
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return messages
        match = _LENGTH_RE.search(bytes(buffer[: end + 2]))
        total = end + 4 + (int(match.group(1)) if match else 0)
        if len(buffer) < total:
            return messages
        messages.append(bytes(buffer[:total]))
        del buffer[:total]


def parse(data: bytes, *, stream: bool = False) -> Request | Response:
    message = parse_message(data, stream=stream)
    message.validate()
    return message


def parse_answer(data: bytes, *, stream: bool = False) -> Request | Response | bytes:
    """What a client got, read leniently: a 400 copies the bad headers of its request (§8.2.6.2)."""
    try:
        return parse_message(data, stream=stream)
    except SipParseError:
        return data


def parse_request(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def call_id_or_none(message: Request | Response) -> str | None:
    try:
        return message.call_id
    except SipParseError:
        return None


def request_bytes(
    method: str,
    uri: str,
    *,
    via: str,
    call_id: str,
    headers: tuple[str, ...] = (),
    body: bytes = b"",
    content_length: int | None = None,
    to_tag: str | None = None,
) -> bytes:
    """A well-formed request (plus ``headers`` lines verbatim, which may be anything)."""
    length = len(body) if content_length is None else content_length
    to = "<sip:hostile@example.com>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: {via};branch=z9hG4bK{call_id}",
        "Max-Forwards: 70",
        "From: <sip:tester@example.net>;tag=t1",
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: 1 {method}",
        *headers,
        f"Content-Length: {length}",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body


_counter = iter(range(1, 1_000_000))


def fresh_call_id(what: str) -> str:
    return f"hostile-{what}-{next(_counter)}-{time.monotonic_ns()}"


# ---------------------------------------------------------------------------- the server


@dataclass
class Received:
    """One message the proxy sent to the server."""

    transport: str
    raw: bytes
    message: Request | Response | None
    error: str | None = None

    @property
    def call_id(self) -> str | None:
        if self.message is not None:
            return call_id_or_none(self.message)
        return call_id_of(self.raw)


class SipServer:
    """The pair's primary: UDP socket and TCP listener on one port, in a thread.

    Records every message, answers every request but ACK with a 200 at once (so
    that the proxy never retransmits to it).
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((HOST, port))
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((HOST, port))
        self.listener.listen(16)
        self.streams: dict[socket.socket, bytearray] = {}
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sip-server-{port}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in [self.udp, self.listener, *self.streams]:
            sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([self.udp, self.listener, *self.streams], [], [], 0.05)
            for sock in readable:
                if sock is self.udp:
                    data, peer = self.udp.recvfrom(RECV_SIZE)
                    self._record("udp", data, functools.partial(self._send_udp, peer))
                elif sock is self.listener:
                    connection, _ = self.listener.accept()
                    self.streams[connection] = bytearray()
                else:
                    self._read_stream(sock)

    def _send_udp(self, peer: tuple[str, int], data: bytes) -> None:
        self.udp.sendto(data, peer)

    def _read_stream(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(RECV_SIZE)
        except OSError:
            data = b""
        if not data:
            del self.streams[sock]
            sock.close()
            return
        buffer = self.streams[sock]
        buffer += data
        for message in split_stream(buffer):
            self._record("tcp", message, sock.sendall)

    def _record(self, transport: str, data: bytes, reply: Callable[[bytes], object]) -> None:
        try:
            message: Request | Response | None = parse(data, stream=transport == "tcp")
            error = None
        except SipParseError as bad:
            message, error = None, str(bad)
        with self._lock:
            self.received.append(Received(transport, data, message, error))
        if isinstance(message, Request) and message.method != "ACK":
            answer = make_response(message, 200, "OK", to_tag="server").to_bytes()
            with contextlib.suppress(OSError):
                reply(answer)

    def mark(self) -> int:
        with self._lock:
            return len(self.received)

    def since(self, mark: int) -> list[Received]:
        with self._lock:
            return list(self.received[mark:])

    def wait_for(self, call_id: str, mark: int, timeout: float = WAIT) -> Received | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for item in self.since(mark):
                if item.call_id == call_id:
                    return item
            time.sleep(0.005)
        return None


# ---------------------------------------------------------------------------- the clients


class Client(Protocol):
    transport: Transport
    port: int

    def send(self, data: bytes) -> None: ...

    def messages(self, timeout: float) -> list[Request | Response | bytes]: ...

    def via(self) -> str: ...


class UdpClient:
    """One UDP socket; kept open until the module ends, so the proxy never gets ICMP errors."""

    transport: Transport = "udp"

    def __init__(self, proxy_port: int) -> None:
        self.proxy_port = proxy_port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.port = int(self.sock.getsockname()[1])
        self.inbox: list[Request | Response | bytes] = []

    def via(self) -> str:
        return f"SIP/2.0/UDP {HOST}:{self.port}"

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, (HOST, self.proxy_port))

    def messages(self, timeout: float) -> list[Request | Response | bytes]:
        """Whatever arrived so far, reading for at most ``timeout`` while nothing comes."""
        self.sock.settimeout(timeout)
        with contextlib.suppress(TimeoutError):
            for _ in range(100):
                self.inbox.append(parse_answer(self.sock.recv(RECV_SIZE)))
                self.sock.settimeout(0.02)
        return self.inbox

    def close(self) -> None:
        self.sock.close()


class TcpClient:
    """One TCP connection to the proxy; ``closed`` once the proxy closed it."""

    transport: Transport = "tcp"

    def __init__(self, proxy_port: int) -> None:
        self.sock = socket.create_connection((HOST, proxy_port), timeout=WAIT)
        self.port = int(self.sock.getsockname()[1])
        self.buffer = bytearray()
        self.inbox: list[Request | Response | bytes] = []
        self.closed = False

    def via(self) -> str:
        return f"SIP/2.0/TCP {HOST}:{self.port}"

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read(self, timeout: float) -> bool:
        """Read once; False on timeout or when closed."""
        if self.closed:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(RECV_SIZE)
        except TimeoutError:
            return False
        except OSError:  # reset
            data = b""
        if not data:
            self.closed = True
            return False
        self.buffer += data
        self.inbox += [parse_answer(raw, stream=True) for raw in split_stream(self.buffer)]
        return True

    def messages(self, timeout: float) -> list[Request | Response | bytes]:
        deadline = time.monotonic() + timeout
        for _ in range(100):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._read(remaining):
                break
            deadline = time.monotonic() + 0.02
        return self.inbox

    def wait_closed(self, timeout: float = WAIT) -> bool:
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self._read(max(deadline - time.monotonic(), 0.001))
        return self.closed

    def close(self) -> None:
        self.sock.close()


def responses(client: Client, call_id: str | None, timeout: float = WAIT) -> list[Response]:
    found = [m for m in client.messages(timeout) if isinstance(m, Response)]
    return [r for r in found if call_id is None or call_id_or_none(r) == call_id]


def final_response(client: Client, call_id: str | None, timeout: float = WAIT) -> Response | None:
    """The first final response for ``call_id``, waiting at most ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        finals = [r for r in responses(client, call_id, 0.05) if r.status >= 200]
        if finals or time.monotonic() >= deadline:
            return finals[0] if finals else None


# ---------------------------------------------------------------------------- the rig


@dataclass
class Rig:
    """One sipha process, its server and the clients the tests opened."""

    transport: Transport
    directory: Path
    server: SipServer
    backup: int
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    proxy: RunningProxy | None = None
    clients: list[UdpClient | TcpClient] = field(default_factory=list)
    restarts: int = 0

    def start(self) -> None:
        self.stack = contextlib.ExitStack()
        pair = Pair("hostile", self.server.port, self.backup, transport=self.transport)
        self.proxy = self.stack.enter_context(run_sipha(self.directory, [pair]))

    @property
    def port(self) -> int:
        assert self.proxy is not None
        return self.proxy.port

    def ensure_running(self) -> None:
        """Restart sipha if a test killed it (each restart is counted, and reported)."""
        assert self.proxy is not None
        if self.proxy.process.poll() is not None:
            self.stack.close()
            self.restarts += 1
            self.start()

    def alive(self) -> bool:
        return self.proxy is not None and self.proxy.process.poll() is None

    def client(self) -> UdpClient | TcpClient:
        client: UdpClient | TcpClient = (
            UdpClient(self.port) if self.transport == "udp" else TcpClient(self.port)
        )
        self.clients.append(client)
        return client

    def tcp_client(self) -> TcpClient:
        client = self.client()
        assert isinstance(client, TcpClient)
        return client

    def close(self) -> None:
        # sipha first (nothing is sent to a closed client socket), killed: a SIGTERM's drain
        # would wait for the calls the cases set up and never hung up, until stop_process
        # gives up after 5 s and kills it anyway (drains are test_lifecycle's).
        if self.proxy is not None and self.alive():
            self.proxy.process.kill()
        self.stack.close()
        for client in self.clients:
            client.close()
        self.server.close()

    def log(self) -> str:
        return "" if self.proxy is None else self.proxy.log_text()[-3000:]


@contextlib.contextmanager
def make_rig(directory: Path, transport: Transport) -> Iterator[Rig]:
    rig = Rig(transport, directory, SipServer(free_port()), free_port())
    try:
        rig.start()
        yield rig
    finally:
        rig.close()


@pytest.fixture(scope="module")
def udp_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with make_rig(tmp_path_factory.mktemp("hostile-udp"), "udp") as rig:
        yield rig


@pytest.fixture(scope="module")
def tcp_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    with make_rig(tmp_path_factory.mktemp("hostile-tcp"), "tcp") as rig:
        yield rig


def get_rig(request: pytest.FixtureRequest, transport: Transport) -> Rig:
    rig: Rig = request.getfixturevalue(f"{transport}_rig")
    rig.ensure_running()
    return rig


@pytest.fixture(params=["udp", "tcp"])
def rig(request: pytest.FixtureRequest) -> Rig:
    return get_rig(request, request.param)


@pytest.fixture
def udp(request: pytest.FixtureRequest) -> Rig:
    return get_rig(request, "udp")


@pytest.fixture
def tcp(request: pytest.FixtureRequest) -> Rig:
    return get_rig(request, "tcp")


# ---------------------------------------------------------------------------- the probe


def probe(rig: Rig, client: Client | None = None) -> Received:
    """A well-formed OPTIONS to the serving pair must be forwarded and its 200 relayed back.

    Sent on ``client`` (the connection or socket the hostile message used) when it
    is still usable, so that it also proves the hostile message was fully handled.
    """
    assert rig.alive(), f"sipha died:\n{rig.log()}"
    if client is None or (isinstance(client, TcpClient) and client.closed):
        client = rig.client()
    call_id = fresh_call_id("probe")
    mark = rig.server.mark()
    client.send(request_bytes("OPTIONS", "sip:probe@example.com", via=client.via(), call_id=call_id))
    forwarded = rig.server.wait_for(call_id, mark)
    assert forwarded is not None, f"probe not forwarded: the proxy stopped serving\n{rig.log()}"
    answer = final_response(client, call_id)
    assert answer is not None, "the server's 200 to the probe was not relayed back"
    assert answer.status == 200
    return forwarded


def own_request(item: Received) -> bool:
    """A request sipha made itself (one Via: its own), e.g. a pair monitor's OPTIONS (docs/design.md §2)."""
    message = item.message
    return isinstance(message, Request) and len(message.get_elements("via")) == 1


def others(rig: Rig, mark: int, probe_call_id: str) -> list[Received]:
    """What the server got since ``mark``: not the probe, not sipha's own requests."""
    return [
        item for item in rig.server.since(mark) if item.call_id != probe_call_id and not own_request(item)
    ]


def probe_and_check_nothing_forwarded(rig: Rig, client: Client, mark: int) -> None:
    """The probe, then: the server got nothing but the probe since ``mark``."""
    probed = probe(rig, client)
    assert probed.call_id is not None
    leaked = others(rig, mark, probed.call_id)
    assert not leaked, f"forwarded although it must not be: {[item.raw[:120] for item in leaked]}"


# ---------------------------------------------------------------------------- forwarded intact

OWN_VIA = r"SIP/2\.0/{transport} 127\.0\.0\.1:{port};branch=z9hG4bK[-.!%*_+`'~0-9A-Za-z]+;rport"
DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})


def _without_stamp(via: str) -> str:
    """A Via value without what §18.2.1 / RFC 3581 let the proxy add (received, rport value)."""
    via = re.sub(r";[ \t]*received[ \t]*=[ \t]*[^;,]*", "", via, flags=re.IGNORECASE)
    return re.sub(r"(;[ \t]*rport)=[0-9]+", r"\1", via, flags=re.IGNORECASE)


def assert_forwarded_intact(rig: Rig, original: Request, received: Received) -> None:
    """§16.6: our Via on top, Max-Forwards - 1, Record-Route for dialog creators; the rest as sent."""
    forwarded = received.message
    assert isinstance(forwarded, Request), f"not a request: {received.error} {received.raw[:200]!r}"
    assert forwarded.start_line == f"{original.method} {original.uri} SIP/2.0"
    headers = forwarded.headers
    top_name, top_value = headers[0]
    assert top_name == "via"
    assert re.fullmatch(OWN_VIA.format(transport=rig.transport.upper(), port=rig.port), top_value), top_value
    rest = headers[1:]
    # RFC 5658: the Record-Route of the transport the request went out on (TCP: transport=tcp).
    suffix = "" if rig.transport == "udp" else f";transport={rig.transport}"
    record_route = f"<sip:{HOST}:{rig.port}{suffix};lr>"
    if original.method in DIALOG_CREATING and original.to.tag is None:
        added = [
            i for i, (name, value) in enumerate(rest) if name == "record-route" and value == record_route
        ]
        assert len(added) == 1, f"expected our Record-Route once: {rest}"
        del rest[added[0]]
    expected: list[tuple[str, str]] = []
    client_via = True
    for name, value in original.headers:
        if name == "max-forwards":
            expected.append((name, str(int(value) - 1)))
        else:
            expected.append((name, value))
    got: list[tuple[str, str]] = []
    for name, value in rest:
        if name == "via" and client_via:
            client_via = False
            # §18.2.1: a sent-by that is a name or another IP than the source gets received=.
            if not original.top_via.host.startswith(HOST):
                assert "received=127.0.0.1" in value, value
            value = _without_stamp(value)  # noqa: PLW2901
        got.append((name, value))
    first_via = next(i for i, (name, _) in enumerate(expected) if name == "via")
    expected[first_via] = ("via", _without_stamp(expected[first_via][1]))
    assert got == expected
    assert forwarded.body == original.body


# ---------------------------------------------------------------------------- RFC 4475 §3.1

Kind = Literal["forward", "answer", "drop", "answer-close", "wait"]


@dataclass(frozen=True)
class Expect:
    kind: Kind
    status: int | None = None


def expectation(case: TortureCase, transport: Transport) -> Expect:
    """What sipha must do with ``case`` arriving over ``transport`` (the why is in comments)."""
    is_response = case.load().startswith(b"SIP/")
    if case.name in ("wsinv", "mpart01"):
        # Valid, but each carries a Route to a host that is neither sipha nor a pair member
        # (wsinv: <sip:services.example.com;lr>, mpart01: <sip:127.0.0.1:5080>).  From an
        # endpoint that is relaying to a third party: docs/design.md §3 (rule 2 and the "not an
        # open relay" policy of routing.decide) refuses it with 403, which RFC 3261 §16.3/§16.5
        # leave to proxy policy.  wsinv is in-dialog (To tag); the policy does not care.
        return Expect("answer", 403)
    if case.valid:
        # Responses here match no transaction and their top Via is not ours: §18.1.2 drop.
        return Expect("drop") if is_response else Expect("forward")
    if case.drop:
        return Expect("drop")
    if transport == "tcp":
        if case.name == "clerr":
            # RFC 4475 §3.1.2.2: over a stream "there's not much the receiving party could do
            # but wait for more data on the stream" (and close later: idle timeout, 120 s).
            return Expect("wait")
        if case.name == "baddn":
            # The archive has no empty line after the headers: a stream waits for the rest.
            return Expect("wait")
        if case.name == "ncl":
            # §3.1.2.3: "If a request like this arrives over TCP, the framing error is not
            # recoverable, and the connection should be closed." sipha answers first.
            return Expect("answer-close", case.status)
    assert case.status is not None
    return Expect("answer", case.status)


def torture_params() -> list[object]:
    params: list[object] = []
    for transport in ("udp", "tcp"):
        for case in CASES:
            if case.name == "dblreq" and transport == "tcp":
                continue  # a UDP-only case; over TCP see test_dblreq_over_tcp
            params.append(pytest.param(transport, case, id=f"{transport}-{case.name}"))
    return params


@pytest.mark.parametrize(("transport", "case"), torture_params())
def test_rfc4475(request: pytest.FixtureRequest, transport: Transport, case: TortureCase) -> None:
    rig = get_rig(request, transport)
    expect = expectation(case, transport)
    if case.name == "mpart01":
        assert 5080 not in (rig.port, rig.server.port, rig.backup)  # its Route port
    client = rig.client()
    data = case.load()
    is_request = not data.startswith(b"SIP/")
    if transport == "udp" and is_request:
        data = aim_at(data, client.port)
    call_id = call_id_of(data)
    mark = rig.server.mark()
    client.send(data)

    if expect.kind == "forward":
        assert call_id is not None
        got = rig.server.wait_for(call_id, mark)
        assert got is not None, f"{case.name} was not forwarded\n{rig.log()}"
        assert_forwarded_intact(rig, parse_request(data), got)
        if case.name == "dblreq":  # §18.3: the octets after the REGISTER are not forwarded
            assert b"INVITE" not in got.raw
        answer = final_response(client, call_id)  # the server's 200, relayed back
        assert answer is not None
        assert answer.status == 200
        probed = probe(rig, client)
        assert probed.call_id is not None
        forwarded = others(rig, mark, probed.call_id)
        assert [item.raw for item in forwarded] == [got.raw], "forwarded more than once"
        return
    if expect.kind in ("answer", "answer-close"):
        answer = final_response(client, call_id)
        assert answer is not None, f"no response to {case.name}\n{rig.log()}"
        assert answer.status == expect.status, f"{answer.status} {answer.reason}"
        if expect.kind == "answer-close":
            assert isinstance(client, TcpClient)
            assert client.wait_closed(), "connection left open after a framing error"
        probe_and_check_nothing_forwarded(rig, client, mark)
        return
    if expect.kind == "wait":
        assert isinstance(client, TcpClient)
        client.messages(QUIET)
        assert not client.closed, "closed at once: RFC 4475 says wait for more data"
        assert client.inbox == [], client.inbox
        probe_and_check_nothing_forwarded(rig, rig.client(), mark)
        return
    # drop: no answer, nothing forwarded (the probe after it proves it was handled)
    probe_and_check_nothing_forwarded(rig, client, mark)
    answered = [m for m in client.inbox if not isinstance(m, Response) or call_id_or_none(m) == call_id]
    assert answered == [], f"{case.name} was answered: {answered}"


def test_dblreq_over_tcp(tcp: Rig) -> None:
    """RFC 4475 §3.1.1.8's bytes over a stream are two messages (rfc4475_cases docstring).

    Framed by Content-Length (§18.3): the REGISTER (0 octets of body), a lone CRLF
    (ignored, §7.5), then an INVITE with Content-Length 150, whose body is the first
    150 of its 153 octets of SDP.  The REGISTER and that INVITE are both well formed,
    so both are forwarded, the INVITE with exactly 150 octets of body.  What is left
    ("PC" CRLF CRLF) is no message: a framing error, after which the connection
    cannot be resynchronised and is closed.
    """
    client = tcp.tcp_client()
    data = CASES_BY_NAME["dblreq"].load()
    mark = tcp.server.mark()
    client.send(data)
    register = tcp.server.wait_for("dblreq.0ha0isndaksdj99sdfafnl3lk233412", mark)
    invite = tcp.server.wait_for("dblreq.0ha0isnda977644900765@192.0.2.15", mark)
    assert register is not None
    assert isinstance(register.message, Request)
    assert register.message.method == "REGISTER"
    assert b"INVITE sip:joe" not in register.raw
    assert register.message.body == b""
    assert invite is not None
    assert isinstance(invite.message, Request)
    second = data.index(b"INVITE sip:joe")
    head_end = data.index(b"\r\n\r\n", second) + 4
    assert invite.message.body == data[head_end : head_end + 150]
    assert client.wait_closed(), "the stream's trailing garbage should close the connection"
    probe(tcp)


CASES_BY_NAME = {case.name: case for case in CASES}


# ---------------------------------------------------------------------------- our own cases


def test_oversize_datagram(udp: Rig) -> None:
    """70,000 bytes cannot be one UDP datagram; 65,000 with one 64 KB header line is dropped.

    The proxy's limits (ParserLimits): 65,535 bytes a message, 8,192 a header line.
    A header line over the limit raises MessageTooLarge with no partial message to
    address a 513 to, so the datagram is dropped silently (see the report: RFC 3261
    §21.5.11 would allow a 513).
    """
    client = udp.client()
    assert isinstance(client, UdpClient)
    too_big = request_bytes(
        "INVITE", "sip:big@example.com", via=client.via(), call_id="big", body=b"x" * 70_000
    )
    with pytest.raises(OSError, match="too long"):
        client.send(too_big)
    call_id = fresh_call_id("huge-header")
    head = request_bytes(
        "INVITE", "sip:big@example.com", via=client.via(), call_id=call_id, headers=("X-Huge: ",)
    )
    huge = head.replace(b"X-Huge: ", b"X-Huge: " + b"a" * (65_000 - len(head)))
    assert len(huge) == 65_000
    mark = udp.server.mark()
    client.send(huge)
    probe_and_check_nothing_forwarded(udp, client, mark)
    assert responses(client, call_id, QUIET) == [], "an answer to the oversize request (a 513 is fine too)"


def test_too_many_headers_datagram(udp: Rig) -> None:
    """More header fields than the parser allows (256) in one datagram: dropped, no crash."""
    client = udp.client()
    call_id = fresh_call_id("many-headers")
    lines = tuple(f"X-Many-{index}: {'b' * 200}" for index in range(300))
    data = request_bytes("OPTIONS", "sip:many@example.com", via=client.via(), call_id=call_id, headers=lines)
    assert 60_000 < len(data) < 65_000
    mark = udp.server.mark()
    client.send(data)
    probe_and_check_nothing_forwarded(udp, client, mark)
    assert responses(client, call_id, QUIET) == []


def test_oversize_stream_message(tcp: Rig) -> None:
    """Content-Length 10,000,000 on TCP: 513 Message Too Large, then the connection is closed."""
    client = tcp.tcp_client()
    call_id = fresh_call_id("ten-megabytes")
    client.send(
        request_bytes(
            "INVITE", "sip:big@example.com", via=client.via(), call_id=call_id, content_length=10_000_000
        )
        + b"x" * 1000
    )
    answer = final_response(client, call_id)
    assert answer is not None
    assert answer.status == 513
    assert client.wait_closed()
    probe(tcp)


def test_endless_header_section(tcp: Rig) -> None:
    """Header lines past the 65,535-byte limit, never an empty line: the connection is closed.

    Without the limit sipha would buffer until its 120 s idle timeout (or memory ran out).
    """
    client = tcp.tcp_client()
    mark = tcp.server.mark()
    line = b"X-Endless: " + b"e" * 1000 + b"\r\n"
    with contextlib.suppress(OSError):  # reset by the proxy while we write: fine
        client.send(b"OPTIONS sip:endless@example.com SIP/2.0\r\n" + line * 70)  # ~71 KB
    assert client.wait_closed(), "still open after 71 KB of header lines"
    assert [m for m in client.inbox if isinstance(m, Response)] == []  # nothing to address a 400 to
    probe_and_check_nothing_forwarded(tcp, tcp.client(), mark)


@pytest.mark.parametrize(
    ("what", "start_line", "extra"),
    [
        # RFC 3261 §25.1: NUL is allowed nowhere but in a quoted-pair / escaped (%00) URI.
        ("nul-in-start-line", "OPTIONS sip:nul\x00user@example.com SIP/2.0", ()),
        # Call-ID = word ["@" word] (§25.1): no NUL; sipha uses Call-ID (transactions, loops).
        ("nul-in-call-id", None, ("Call-ID: before\x00after",)),
        # TEXT-UTF8char (§25.1) excludes it too, in headers sipha does not use: forwarded, a
        # NUL cuts the header short in a next hop written in C.
        ("nul-in-subject", None, ("Subject: a\x00b",)),
        # §7.3.1 lines end in CRLF; a bare LF is a header injection attempt against next hops
        # that split on LF.
        ("bare-lf-in-header", None, ("Subject: hello\nX-Injected: evil",)),
        ("bare-cr-in-header", None, ("Subject: hello\rX-Injected: evil",)),
    ],
)
def test_bad_characters_refused(rig: Rig, what: str, start_line: str | None, extra: tuple[str, ...]) -> None:
    client = rig.client()
    call_id = fresh_call_id(what)
    data = request_bytes("OPTIONS", "sip:chars@example.com", via=client.via(), call_id=call_id, headers=extra)
    if what == "nul-in-call-id":
        data = data.replace(f"Call-ID: {call_id}\r\n".encode(), b"")
    if start_line is not None:
        data = start_line.encode() + data[data.index(b"\r\n") :]
    mark = rig.server.mark()
    client.send(data)
    answer = final_response(client, None)  # a fresh client: the only answer is this one
    assert answer is not None, f"no answer to {what}"
    assert answer.status == 400
    probe_and_check_nothing_forwarded(rig, client, mark)


def test_content_length_larger_than_body(udp: Rig) -> None:
    """§18.3: over UDP a body shorter than Content-Length is an error: 400."""
    client = udp.client()
    call_id = fresh_call_id("short-body")
    data = request_bytes(
        "MESSAGE", "sip:len@example.com", via=client.via(), call_id=call_id, body=b"hello", content_length=50
    )
    mark = udp.server.mark()
    client.send(data)
    answer = final_response(client, call_id)
    assert answer is not None
    assert answer.status == 400
    probe_and_check_nothing_forwarded(udp, client, mark)


def test_content_length_smaller_than_body(udp: Rig) -> None:
    """§18.3: over UDP the octets past Content-Length are discarded; the rest is forwarded."""
    client = udp.client()
    call_id = fresh_call_id("long-body")
    data = request_bytes(
        "MESSAGE",
        "sip:len@example.com",
        via=client.via(),
        call_id=call_id,
        headers=("Content-Type: text/plain",),
        body=b"hello, and the rest is noise",
        content_length=5,
    )
    mark = udp.server.mark()
    client.send(data)
    got = udp.server.wait_for(call_id, mark)
    assert got is not None
    assert isinstance(got.message, Request)
    assert got.message.body == b"hello"
    assert got.raw.endswith(b"\r\n\r\nhello")
    assert_forwarded_intact(udp, parse_request(data), got)
    probe(udp, client)


def test_response_with_foreign_via_dropped(rig: Rig) -> None:
    """A response to no transaction of ours whose top Via is not ours: §18.1.2, dropped."""
    client = rig.client()
    call_id = fresh_call_id("foreign-response")
    data = (
        f"SIP/2.0 200 OK\r\nVia: {client.via()};branch=z9hG4bKforeign\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{rig.server.port};branch=z9hG4bKsecond\r\n"
        f"From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>;tag=2\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    mark = rig.server.mark()
    client.send(data)
    probe_and_check_nothing_forwarded(rig, client, mark)
    assert responses(client, call_id, 0.01) == []


def test_orphan_cancel_forwarded(rig: Rig) -> None:
    """§16.10: a CANCEL with no response context "MUST statelessly forward" (sipha: with its Via)."""
    client = rig.client()
    call_id = fresh_call_id("orphan-cancel")
    data = request_bytes("CANCEL", "sip:orphan@example.com", via=client.via(), call_id=call_id)
    mark = rig.server.mark()
    client.send(data)
    got = rig.server.wait_for(call_id, mark)
    assert got is not None, "orphan CANCEL not forwarded"
    assert_forwarded_intact(rig, parse_request(data), got)
    answer = final_response(client, call_id)
    assert answer is not None
    assert answer.status == 200  # the server's, relayed
    probe(rig, client)


@pytest.mark.parametrize("third_party", ["203.0.113.9", "loopback"])
def test_route_to_third_party_refused(rig: Rig, third_party: str) -> None:
    """An endpoint's INVITE with a Route to a third party: 403, and nothing sent anywhere.

    docs/design.md §3: requests from outside the pairs are not relayed to third parties.
    The loopback variant listens on the third party's address to prove nothing went
    there; 203.0.113.9 (TEST-NET-3) is the address of the brief.
    """
    with contextlib.ExitStack() as stack:
        host, port = third_party, 5060
        witness_udp = witness_tcp = None
        if third_party == "loopback":
            host, port = HOST, free_port()
            witness_udp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            witness_udp.bind((HOST, port))
            witness_tcp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            witness_tcp.bind((HOST, port))
            witness_tcp.listen(1)
        client = rig.client()
        call_id = fresh_call_id("third-party")
        route = f"Route: <sip:{host}:{port};lr>" if port != 5060 else f"Route: <sip:{host};lr>"
        data = request_bytes(
            "INVITE", "sip:victim@example.com", via=client.via(), call_id=call_id, headers=(route,)
        )
        mark = rig.server.mark()
        client.send(data)
        answer = final_response(client, call_id)
        assert answer is not None
        assert answer.status == 403
        probe_and_check_nothing_forwarded(rig, client, mark)
        if witness_udp is not None and witness_tcp is not None:
            readable, _, _ = select.select([witness_udp, witness_tcp], [], [], 0.05)
            assert readable == [], "the request went to the third party"


def test_random_datagrams(udp: Rig) -> None:
    """1,000 seeded random datagrams (raw bytes, and garbage behind a plausible start): still serving."""
    generator = random.Random(4475)
    client = udp.client()
    prefixes = [
        b"",
        b"INVITE sip:fuzz@example.com SIP/2.0\r\n",
        f"OPTIONS sip:fuzz@example.com SIP/2.0\r\nVia: {client.via()};branch=z9hG4bKfuzz\r\n".encode(),
        b"SIP/2.0 200 OK\r\n",
    ]
    alphabet = b"\r\n:;,<>@ \t\x00\xffSIP/2.0"  # no "Via": only the prefix's Via addresses an answer
    mark = udp.server.mark()
    for index in range(1000):
        size = generator.randrange(0, 1400)
        if index % 2:
            body = bytes(generator.getrandbits(8) for _ in range(size))
        else:
            body = bytes(generator.choice(alphabet) for _ in range(size))
        client.send(prefixes[index % len(prefixes)] + body)
        if index % 100 == 99:  # let the proxy keep up (drops are not the point)
            time.sleep(0.01)
    probe(udp, client)
    keepalive_id = fresh_call_id("keepalive")
    client.send(request_bytes("OPTIONS", f"sip:{HOST}:{udp.port}", via=client.via(), call_id=keepalive_id))
    answer = final_response(client, keepalive_id)
    assert answer is not None
    assert answer.status == 200  # answered by sipha itself (docs/design.md §3 rule 1)
    assert udp.alive()
    assert [item.raw[:80] for item in udp.server.since(mark) if b"fuzz" in item.raw] == []


# ---------------------------------------------------------------------------- bugs


def test_error_response_goes_to_source_address(udp: Rig) -> None:
    """§18.2.1: a sent-by IP other than the source gets received=<source>; the answer goes there.

    The client at 127.0.0.1:P sends a malformed request whose Via says 127.0.0.2:P.
    A witness socket at 127.0.0.2:P catches a misdirected answer (and spares sipha
    an ICMP error).  Valid requests are stamped (see test_rfc4475, TCP); malformed
    ones are answered from the unstamped partial message.
    """
    client = udp.client()
    assert isinstance(client, UdpClient)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as witness:
        witness.bind(("127.0.0.2", client.port))
        witness.settimeout(WAIT)
        call_id = fresh_call_id("misdirected")
        data = request_bytes(
            "OPTIONS",
            "sip:victim@example.com",
            via=f"SIP/2.0/UDP 127.0.0.2:{client.port}",
            call_id=call_id,
            headers=("Subject: hello\nX-Injected: evil",),
        )
        client.send(data)
        answer = final_response(client, call_id)
        misdirected = b""
        if answer is None:
            with contextlib.suppress(TimeoutError):
                misdirected = witness.recv(RECV_SIZE)
        assert answer is not None, f"400 went to the Via host 127.0.0.2 instead: {misdirected[:60]!r}"
        assert answer.status == 400


def test_udp_survives_icmp_from_a_gone_client(tmp_path: Path) -> None:
    """A client that leaves before its 483 stops being retransmitted must not deafen the proxy.

    RFC 3261 §17.2.1: the 483 to an INVITE over UDP is retransmitted (Timer G, 0.5 s)
    until an ACK comes.  The client is gone, so each retransmission earns an ICMP
    port unreachable (§18.4: report it to the transport user, no more).  Own sipha
    process: this test is expected to leave it deaf on UDP.
    """
    with make_rig(tmp_path, "udp") as rig:
        leaving = UdpClient(rig.port)
        call_id = fresh_call_id("gone")
        data = request_bytes("INVITE", "sip:gone@example.com", via=leaving.via(), call_id=call_id)
        leaving.send(data.replace(b"Max-Forwards: 70", b"Max-Forwards: 0"))
        answer = final_response(leaving, call_id)
        assert answer is not None
        assert answer.status == 483
        leaving.close()
        time.sleep(1.2)  # Timer G fires at 0.5 s and 1.0 s: two ICMP errors, outside any read
        assert rig.alive()
        probe(rig)
