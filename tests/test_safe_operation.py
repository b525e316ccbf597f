"""Operator traps: a second sipha on a port that one already serves, IPv6 addresses in the log.

A second ``sipha run`` on the same listen address used to start silently and take half the
datagrams (SO_REUSEPORT with ``[proxy] workers``, SO_REUSEADDR on UDP without): it must
refuse to start, naming the address, and the first must keep all the traffic.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipha.config import load_config_text
from sipha.net.workers import probe_exclusive
from sipha.supervisor import bind_worker_sockets
from tests.integration.support import HOST, free_port, stop_process

START_TIMEOUT = 15.0
KEEPALIVES = 100


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def config_text(listen: list[str], admin_port: int, workers: int) -> str:
    entries = ", ".join(f'"{entry}"' for entry in listen)
    return f'[proxy]\nlisten = [{entries}]\nworkers = {workers}\n\n[admin]\nlisten = "{HOST}:{admin_port}"\n'


def write_config(path: Path, listen: list[str], workers: int) -> Path:
    # Worker N serves its admin HTTP on the admin port + N: keep them all free.
    path.write_text(config_text(listen, free_port(), workers), encoding="utf-8")
    return path


@contextlib.contextmanager
def running_sipha(config: Path, log: Path, ready: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """``sipha run --config``, once every line of ``ready`` is in its log; stopped after."""
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "sipha", "run", "--config", str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not all(line in log.read_text(errors="replace") for line in ready):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sipha did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.05)
        yield process
    finally:
        stop_process(process)


def keepalive(port: int, number: int, client: tuple[str, int]) -> bytes:
    """An OPTIONS to the proxy itself (docs/design.md §3 rule 1): the proxy answers it."""
    return (
        f"OPTIONS sip:{HOST}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {client[0]}:{client[1]};branch=z9hG4bK-safe-{number};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@{HOST}>;tag=safe\r\n"
        f"To: <sip:{HOST}:{port}>\r\n"
        f"Call-ID: safe-{number}@{HOST}\r\n"
        f"CSeq: {number} OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def answered_keepalives(port: int, count: int) -> set[int]:
    """Send ``count`` keepalives to ``port``; the numbers of those answered (any status)."""
    answered: set[int] = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind((HOST, 0))
        client.settimeout(0.2)
        for number in range(count):
            client.sendto(keepalive(port, number, client.getsockname()), (HOST, port))
        deadline = time.monotonic() + 10.0
        while len(answered) < count and time.monotonic() < deadline:
            try:
                data = client.recv(65535)
            except TimeoutError:
                continue
            for line in data.decode(errors="replace").split("\r\n"):
                if line.lower().startswith("call-id: safe-"):
                    answered.add(int(line.split("safe-", 1)[1].split("@", 1)[0]))
    return answered


# ============================================================================ a second sipha


@pytest.mark.parametrize("second_workers", [1, 2])
@pytest.mark.parametrize("first_workers", [1, 2])
def test_a_second_sipha_on_the_same_address_refuses_to_start(
    tmp_path: Path, first_workers: int, second_workers: int
) -> None:
    port = free_port()
    listen = [f"udp:{HOST}:{port}", f"tcp:{HOST}:{port}"]
    first = write_config(tmp_path / "first.toml", listen, first_workers)
    second = write_config(tmp_path / "second.toml", listen, second_workers)
    ready = [f"listening on tcp:{HOST}:{port}"]
    if first_workers > 1:
        ready = [f"worker {index}: listening on tcp:{HOST}:{port}" for index in range(first_workers)]
    with running_sipha(first, tmp_path / "first.log", ready) as process:
        started = time.monotonic()
        refused = subprocess.run(
            [sys.executable, "-m", "sipha", "run", "--config", str(second)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        elapsed = time.monotonic() - started
        assert refused.returncode != 0, refused.stderr
        assert (
            f"sipha: cannot start: proxy.listen 'udp:{HOST}:{port}': address in use by another process"
            " (another sipha?)"
        ) in refused.stderr, refused.stderr
        assert elapsed < 10.0
        assert process.poll() is None
        # The first one still gets every datagram: nobody joined its port.
        assert answered_keepalives(port, KEEPALIVES) == set(range(KEEPALIVES))


def test_the_workers_parent_refuses_a_port_held_by_any_socket() -> None:
    """The probe binds without SO_REUSEPORT: an SO_REUSEPORT group, or a plain socket, or one
    with SO_REUSEADDR, on the port all refuse it (without the probe a group would be joined)."""
    for options in (
        (),
        (socket.SO_REUSEPORT,),
        (socket.SO_REUSEADDR,),
        (socket.SO_REUSEADDR, socket.SO_REUSEPORT),
    ):
        for kind, transport in ((socket.SOCK_DGRAM, "udp"), (socket.SOCK_STREAM, "tcp")):
            with socket.socket(socket.AF_INET, kind) as holder:
                for option in options:
                    holder.setsockopt(socket.SOL_SOCKET, option, 1)
                holder.bind((HOST, 0))
                if kind == socket.SOCK_STREAM:
                    holder.listen()
                port = holder.getsockname()[1]
                with pytest.raises(OSError, match="in use") as caught:
                    probe_exclusive(transport, socket.AF_INET, HOST, port)
                assert caught.value.errno == errno.EADDRINUSE, (options, transport)
                config = load_config_text(config_text([f"{transport}:{HOST}:{port}"], free_port(), 2))
                with pytest.raises(OSError, match="in use by another process") as refused:
                    bind_worker_sockets(config, 2)
                assert str(refused.value) == (
                    f"proxy.listen '{transport}:{HOST}:{port}': address in use by another process"
                    " (another sipha?)"
                )


def test_the_workers_parent_binds_a_free_port_for_every_worker() -> None:
    port = free_port()
    listen = [f"udp:{HOST}:{port}", f"tcp:{HOST}:{port}"]
    plans = bind_worker_sockets(load_config_text(config_text(listen, free_port(), 2)), 2)
    try:
        for plan in plans:
            for key in (("udp", HOST, port), ("tcp", HOST, port)):
                ((sock, _),) = plan[key]
                assert sock.getsockname()[1] == port
        # The group is taken: a plain socket cannot bind the address any more.
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other,
            pytest.raises(OSError, match="in use"),
        ):
            other.bind((HOST, port))
    finally:
        for plan in plans:
            for sockets in plan.values():
                for sock, _ in sockets:
                    sock.close()


# ============================================================================ IPv6 in the log


@pytest.mark.skipif(not ipv6_available(), reason="IPv6 is not available (no ::1)")
def test_ipv6_listen_addresses_are_logged_in_brackets(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        sock.bind(("::1", 0))
        port = sock.getsockname()[1]
    config = write_config(tmp_path / "sipha.toml", [f"udp:[::1]:{port}"], 1)
    log = tmp_path / "sipha.log"
    with running_sipha(config, log, ["listening on udp:"]):
        text = log.read_text(errors="replace")
    assert f"listening on udp:[::1]:{port}" in text, text
    assert f"udp:::1:{port}" not in text, text
