"""A real DNS server for the RFC 3263 tests: dnsmasq on a loopback port, with the records asked for.

Also the two ends of a request located by DNS: :func:`member_request`, a pair member
sending one OPTIONS through sipha and reading its final response, and
:class:`UdpRecorder`, a UDP SIP peer that answers every request 200 and records it
(its TLS counterpart is :class:`tests.tls.support.TlsRecorder`).

dnsmasq (Debian package dnsmasq-base, the binary without the system service)
serves NAPTR (``--naptr-record``), SRV (``--srv-host``) and A/AAAA
(``--host-record``) from its command line, answers NXDOMAIN for any other
name under ``test`` (``--local=/test/``) and reads no system file
(``--conf-file=/dev/null``, ``--no-hosts``, ``--no-resolv``).  Every wait is
bounded; :meth:`Dnsmasq.stop` ends the process it started, and only that one.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import dns.exception
import dns.message
import dns.query

DNSMASQ = shutil.which("dnsmasq") or next(
    (path for path in ("/usr/sbin/dnsmasq", "/usr/local/sbin/dnsmasq") if Path(path).exists()), None
)
START_TIMEOUT = 5.0
STOP_TIMEOUT = 5.0


def dnsmasq_unusable() -> str | None:
    """Why no dnsmasq can be started here (a skip reason), or None."""
    if DNSMASQ is None:
        return "dnsmasq is not installed (Debian package dnsmasq-base; `make deb-deps` installs it)"
    return None


def free_dns_port() -> int:
    """A loopback port free for both UDP and TCP (dnsmasq listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no loopback port free for both UDP and TCP")


class Dnsmasq:
    """One dnsmasq process at a time on 127.0.0.1:``port``, restartable with other records.

    ``records`` are dnsmasq options (``--srv-host=...``); ``ttl`` is the TTL of
    every answer (``--local-ttl``: dnsmasq's default for its own records is 0).
    """

    def __init__(self) -> None:
        self.port = free_dns_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def nameserver(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def start(self, records: list[str], *, ttl: int = 60) -> None:
        """Start dnsmasq with ``records`` and wait until it answers (at most START_TIMEOUT)."""
        assert DNSMASQ is not None, dnsmasq_unusable()
        assert self.process is None, "already running"
        command = [
            DNSMASQ,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--pid-file=",
            "--log-facility=-",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            f"--port={self.port}",
            f"--local-ttl={ttl}",
            "--local=/test/",
            *records,
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT
        query = dns.message.make_query("ready.test.", "A")
        while True:
            if self.process.poll() is not None:
                _, err = self.process.communicate()
                self.process = None
                raise RuntimeError(f"dnsmasq exited at start: {err.decode(errors='replace').strip()}")
            try:
                dns.query.udp(query, "127.0.0.1", port=self.port, timeout=0.2)
            except (dns.exception.Timeout, OSError):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.02)
                continue
            return
        self.stop()
        raise RuntimeError(f"dnsmasq did not answer on port {self.port} within {START_TIMEOUT} s")

    def restart(self, records: list[str], *, ttl: int = 60) -> None:
        """The same port, new records."""
        self.stop()
        self.start(records, ttl=ttl)

    def stop(self) -> None:
        """Terminate the process this object started, then kill it if it lingers."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.communicate(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate(timeout=STOP_TIMEOUT)


# ---------------------------------------------------------------------------- SIP peers


def ok_response(request: str) -> bytes:
    """A 200 to ``request``: its Via, From, Call-ID and CSeq, its To with a tag."""
    head = request.split("\r\n\r\n", 1)[0].split("\r\n")[1:]

    def named(*names: str) -> list[str]:
        return [line for line in head if line.split(":", 1)[0].strip().lower() in names]

    to = next(iter(named("to", "t")), "To: <sip:x>")
    if ";tag=" not in to:
        to += ";tag=recorder"
    kept = [*named("via", "v"), *named("from", "f"), *named("call-id", "i"), *named("cseq")]
    return "\r\n".join(["SIP/2.0 200 OK", *kept, to, "Content-Length: 0", "", ""]).encode()


@dataclass(frozen=True)
class Received:
    """One request a :class:`UdpRecorder` answered: its request line, when (monotonic), from where."""

    line: str
    at: float
    source: tuple[str, int]


class UdpRecorder:
    """A UDP SIP peer on ``host``: answers every request 200, records it (:attr:`received`).

    A context manager: the thread and the socket end with it.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.received: list[Received] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"udp-recorder-{self.port}", daemon=True)

    def __enter__(self) -> UdpRecorder:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            text = data.decode("utf-8", "replace")
            if not text.startswith("SIP/2.0") and text.strip():
                self.received.append(Received(text.split("\r\n", 1)[0], time.monotonic(), source))
                if not text.startswith("ACK "):
                    self.sock.sendto(ok_response(text), source)


def member_request(member: socket.socket, proxy: tuple[str, int], uri: str, timeout: float = 5.0) -> str:
    """One OPTIONS to ``uri`` sent from ``member`` (a bound UDP socket) to ``proxy``: its final response.

    Raises TimeoutError when none comes within ``timeout`` s.
    """
    host, port = member.getsockname()[:2]
    call_id = f"{uuid.uuid4().hex}@{host}"
    request = "\r\n".join(
        [
            f"OPTIONS {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{uuid.uuid4().hex};rport",
            f"From: <sip:member@{host}:{port}>;tag={uuid.uuid4().hex[:8]}",
            f"To: <{uri}>",
            f"Call-ID: {call_id}",
            "CSeq: 1 OPTIONS",
            "Max-Forwards: 70",
            "Content-Length: 0",
            "",
            "",
        ]
    ).encode()
    member.sendto(request, proxy)
    deadline = time.monotonic() + timeout
    while True:
        member.settimeout(max(0.01, deadline - time.monotonic()))
        response = member.recv(65535).decode("utf-8", "replace")
        if call_id in response and not response.startswith("SIP/2.0 1"):
            return response
