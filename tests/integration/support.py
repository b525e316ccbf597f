"""Real peers on loopback: a sipha process, SIPp processes, free ports, bounded waits.

Every process started here is bounded in time and killed at the end of its
context; traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SIPP = shutil.which("sipp")
HOST = "127.0.0.1"
START_TIMEOUT = 10.0


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (SIP listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port pair found")


@dataclass
class Pair:
    name: str
    primary: int
    backup: int
    transport: str = "udp"
    serving: bool = True
    domains: list[str] = field(default_factory=list)
    """``match = { domain = [...] }``: the Request-URI domains this pair serves."""


@dataclass
class RunningProxy:
    """A sipha process listening on ``port`` (UDP and TCP)."""

    port: int
    config: Path
    log: Path
    process: subprocess.Popen[bytes]
    pairs: list[Pair] = field(default_factory=list)

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def write_config(path: Path, port: int, pairs: list[Pair], *, extra: str = "") -> Path:
    lines = [
        "[proxy]",
        f'listen = ["udp:{HOST}:{port}", "tcp:{HOST}:{port}"]',
        f'record-route = "sip:{HOST}:{port};lr"',
        extra,
        "",
        # Each test's sipha gets its own admin port: never the default 8080, which a
        # demo or another run on this machine may hold.
        "[admin]",
        f'listen = "{HOST}:{free_port()}"',
        "",
    ]
    for pair in pairs:
        lines += [
            "[[pair]]",
            f'name = "{pair.name}"',
            f'primary = "{pair.transport}:{HOST}:{pair.primary}"',
            f'backup = "{pair.transport}:{HOST}:{pair.backup}"',
            f"serving = {'true' if pair.serving else 'false'}",
            *([f"match = {{ domain = {pair.domains!r} }}".replace("'", '"')] if pair.domains else []),
            "",
        ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@contextlib.contextmanager
def run_sipha(directory: Path, pairs: list[Pair], *, extra: str = "") -> Iterator[RunningProxy]:
    """Start ``sipha run`` on a free port; wait until it listens; stop it (SIGTERM, then kill)."""
    port = free_port()
    config = write_config(directory / "sipha.toml", port, pairs, extra=extra)
    log = directory / "sipha.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "sipha", "run", "--config", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    proxy = RunningProxy(port, config, log, process, pairs)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while "listening on tcp" not in proxy.log_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sipha did not start:\n{proxy.log_text()}")
            time.sleep(0.05)
        yield proxy
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM, wait, then SIGKILL: nothing outlives its test."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


@dataclass
class SippResult:
    returncode: int
    successful: int
    failed: int
    created: int
    stats: dict[str, str]
    errors: str


def sipp_args(*args: str) -> list[str]:
    assert SIPP is not None, "sipp is not installed (Debian package sip-tester)"
    return [SIPP, *args]


@contextlib.contextmanager
def sipp_server(
    directory: Path, port: int, *args: str, scenario: str = "uas", name: str = "uas"
) -> Iterator[subprocess.Popen[bytes]]:
    """A SIPp server (built-in ``uas`` or an XML file) on 127.0.0.1:``port``, killed at the end."""
    scenario_args = ["-sn", scenario] if not scenario.endswith(".xml") else ["-sf", scenario]
    process = subprocess.Popen(
        sipp_args(
            *scenario_args,
            "-i",
            HOST,
            "-p",
            str(port),
            "-nostdin",
            "-trace_err",
            "-error_file",
            str(directory / f"{name}_errors.log"),
            *args,
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=directory,
    )
    try:
        time.sleep(0.3)  # SIPp binds at once; give it the moment to do so
        if process.poll() is not None:
            raise RuntimeError(f"SIPp server exited early with {process.returncode}")
        yield process
    finally:
        stop_process(process)


def run_sipp_client(
    directory: Path,
    target: str,
    *args: str,
    scenario: str = "uac",
    timeout: float = 120.0,
    name: str = "uac",
    port: int | None = None,
) -> SippResult:
    """Run a SIPp client to completion (bounded by ``timeout``) and read its statistics.

    ``port``: SIPp's own port (a pair member's, to send as the member); a free one by default.
    """
    stats_file = directory / f"{name}_stats.csv"
    errors_file = directory / f"{name}_errors.log"
    scenario_args = ["-sn", scenario] if not scenario.endswith(".xml") else ["-sf", scenario]
    completed = subprocess.run(
        sipp_args(
            *scenario_args,
            target,
            "-i",
            HOST,
            "-p",
            str(port or free_port()),
            "-nostdin",
            "-timeout",
            f"{int(timeout)}s",
            "-trace_stat",
            "-stf",
            str(stats_file),
            "-trace_err",
            "-error_file",
            str(errors_file),
            *args,
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=directory,
        timeout=timeout + 15,
        check=False,
    )
    rows = list(csv.reader(stats_file.open(encoding="utf-8"), delimiter=";")) if stats_file.exists() else []
    stats = dict(zip(rows[0], rows[-1], strict=False)) if len(rows) > 1 else {}
    errors = errors_file.read_text(encoding="utf-8", errors="replace") if errors_file.exists() else ""
    return SippResult(
        completed.returncode,
        int(stats.get("SuccessfulCall(C)", "0")),
        int(stats.get("FailedCall(C)", "0")),
        int(stats.get("TotalCallCreated", "0")),
        stats,
        errors,
    )
