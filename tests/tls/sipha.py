"""sipha on TLS between the real peers of tests/tls/support.py: its configuration, its process.

:func:`run_sipha_tls` starts ``sipha run`` listening on UDP and TLS on
127.0.0.1 with ``pki.proxy`` as its certificate and ``pki.ca`` as trust anchor,
with the pairs given (members usually ``tls:`` Kamailio members verified by
name), waits until it listens, and stops it at the end.  :func:`status` reads
its ``/status``.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.support import HOST, START_TIMEOUT, free_port, stop_process
from tests.tls.support import Pki


@dataclass(frozen=True)
class TlsMember:
    """A pair member for the configuration: ``transport:127.0.0.1:port`` and the name to verify."""

    port: int
    transport: str = "tls"
    server_name: str = ""


@dataclass(frozen=True)
class TlsPair:
    name: str
    primary: TlsMember
    backup: TlsMember
    serving: bool = True


@dataclass
class SiphaTls:
    """A running sipha: its UDP port ``udp_port``, TLS port ``tls_port``, admin URL, log."""

    udp_port: int
    tls_port: int
    admin: str
    config: Path
    log: Path
    process: subprocess.Popen[bytes]
    pairs: list[TlsPair] = field(default_factory=list)

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def status(self, worker: int = 0) -> dict[str, Any]:
        """The /status document (of worker ``worker`` of ``[proxy] workers``: admin port + its index)."""
        base, _, port = self.admin.rpartition(":")
        with urllib.request.urlopen(f"{base}:{int(port) + worker}/status", timeout=5) as answer:  # noqa: S310
            document: dict[str, Any] = json.load(answer)
        return document

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.admin}/metrics", timeout=5) as answer:  # noqa: S310 - loopback
            text: str = answer.read().decode()
        return text

    def pair(self, name: str) -> dict[str, Any]:
        """One pair of /status."""
        return next(pair for pair in self.status()["pairs"] if pair["name"] == name)


def member_line(role: str, member: TlsMember) -> list[str]:
    lines = [f'{role} = "{member.transport}:{HOST}:{member.port}"']
    if member.server_name:
        lines.append(f'{role}-server-name = "{member.server_name}"')
    return lines


def write_tls_config(
    path: Path,
    pki: Pki,
    pairs: list[TlsPair],
    *,
    udp_port: int,
    tls_port: int,
    admin_port: int,
    proxy: str = "",
    tls: str = "",
) -> Path:
    """sipha's configuration: UDP and TLS listens, [tls] with ``pki``, the pairs; extra lines."""
    lines = [
        "[proxy]",
        f'listen = ["udp:{HOST}:{udp_port}", "tls:{HOST}:{tls_port}"]',
        f'record-route = "sip:{HOST}:{udp_port};lr"',
        proxy,
        "",
        "[admin]",
        f'listen = "{HOST}:{admin_port}"',
        "",
        "[tls]",
        f'certificate = "{pki.proxy.cert}"',
        f'private-key = "{pki.proxy.key}"',
        f'ca-file = "{pki.ca}"',
        tls,
        "",
    ]
    for pair in pairs:
        lines += ["[[pair]]", f'name = "{pair.name}"']
        lines += member_line("primary", pair.primary) + member_line("backup", pair.backup)
        lines += [f"serving = {'true' if pair.serving else 'false'}", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@contextlib.contextmanager
def run_sipha_tls(
    directory: Path,
    pki: Pki,
    pairs: list[TlsPair],
    *,
    proxy: str = "",
    tls: str = "",
    name: str = "sipha",
) -> Iterator[SiphaTls]:
    """``sipha run`` on UDP and TLS (free ports) with ``pairs``; ready when it listens on TLS.

    ``proxy``/``tls``: extra lines for those sections (e.g. ``workers = 2``,
    ``verify-clients = "required"``).  Stopped (SIGTERM, then SIGKILL) at the end.
    """
    udp_port, tls_port, admin_port = free_port(), free_port(), free_port()
    config = write_tls_config(
        directory / f"{name}.toml",
        pki,
        pairs,
        udp_port=udp_port,
        tls_port=tls_port,
        admin_port=admin_port,
        proxy=proxy,
        tls=tls,
    )
    log = directory / f"{name}.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "sipha", "run", "--config", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    running = SiphaTls(udp_port, tls_port, f"http://{HOST}:{admin_port}", config, log, process, pairs)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while "listening on tls" not in running.log_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sipha did not start:\n{running.log_text()}")
            time.sleep(0.05)
        yield running
    finally:
        stop_process(process)


def wait_until(condition: Callable[[], object], what: str, timeout: float = 15.0) -> None:
    """Poll ``condition()`` every 50 ms until true; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
