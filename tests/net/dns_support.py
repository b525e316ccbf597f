"""A real DNS server for the RFC 3263 tests: dnsmasq on a loopback port, with the records asked for.

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
import time
from pathlib import Path

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
