"""``[proxy] workers = 2``: SIPp calls through two worker processes on one port, end to end.

Each worker is an independent proxy; SO_REUSEPORT gives a sender's datagrams to
one of them and the affinity rule hands each transaction's datagrams to the
worker holding it.  These tests prove it with real peers: calls succeed, both
workers carry calls, signals reach every worker, a dead worker is restarted.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
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
    write_config,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SIPP is None, reason="sipp is not installed (Debian package sip-tester)"),
]

WORKERS = "workers = 2"


def admin_port_of(config: Path) -> int:
    match = re.search(rf'listen = "{HOST}:(\d+)"', config.read_text())
    assert match is not None
    return int(match.group(1))


def admin_port(proxy: RunningProxy) -> int:
    return admin_port_of(proxy.config)


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def invites_answered(port: int) -> int:
    """INVITE server transactions answered, from one worker's /metrics."""
    return sum(
        int(float(value))
        for value in re.findall(
            r'^sipha_transactions_total\{[^}]*method="INVITE"[^}]*\} (\S+)$', metrics_text(port), re.M
        )
    )


def handoff(port: int, counter: str) -> int:
    """One of a worker's hand-over counters, from its /metrics."""
    pattern = rf'^sipha_transport_events_total\{{counter="{counter}"\}} (\S+)$'
    match = re.search(pattern, metrics_text(port), re.M)
    assert match is not None, counter
    return int(float(match.group(1)))


def wait_for_log(proxy: RunningProxy, needle: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = proxy.log_text()
        if needle in text:
            return text
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not in sipha.log:\n{proxy.log_text()[-3000:]}")


def test_calls_through_two_workers(tmp_path: Path) -> None:
    """400 SIPp calls at 100/s over UDP from one socket: all succeed, and both workers carry some.

    SIPp's uac sends everything from one address, so the kernel gives all of it to one
    worker's socket: only the Call-ID hand-over can spread the calls.
    """
    primary, backup = free_port(), free_port()
    with (
        sipp_server(tmp_path, primary, "-aa"),
        run_sipha(tmp_path, [Pair("p", primary, backup)], extra=WORKERS) as proxy,
    ):
        wait_for_log(proxy, "worker 1: pair p: primary")
        result = run_sipp_client(tmp_path, f"{HOST}:{proxy.port}", "-r", "100", "-m", "400", timeout=60)
        port = admin_port(proxy)
        per_worker = [invites_answered(port), invites_answered(port + 1)]
        handed_over = [handoff(port + index, "handoff_out") for index in (0, 1)]
        received = [handoff(port + index, "handoff_in") for index in (0, 1)]
        dropped = [handoff(port + index, "handoff_drops") for index in (0, 1)]
    assert result.failed == 0, result.errors[-3000:]
    assert result.successful == 400
    assert sum(per_worker) == 400, per_worker
    assert min(per_worker) >= 100, f"calls per worker {per_worker}: not spread"
    # SIPp's requests all reach one worker's socket: it passes the other's share over.
    assert sum(handed_over) == sum(received) > 0, (handed_over, received)
    assert dropped == [0, 0]


def test_tcp_calls_over_one_connection_are_spread_over_two_workers(tmp_path: Path) -> None:
    """Over TCP a connection stays with the worker that accepted it, but its calls are spread:
    a message for the other worker's share is handed over, and that worker's responses come
    back to be written on the connection (SIPp checks each one arrives, in order)."""
    primary, backup = free_port(), free_port()
    with (
        sipp_server(tmp_path, primary, "-aa", "-t", "t1"),
        run_sipha(tmp_path, [Pair("p", primary, backup, transport="tcp")], extra=WORKERS) as proxy,
    ):
        wait_for_log(proxy, "worker 1: pair p: primary")
        result = run_sipp_client(
            tmp_path, f"{HOST}:{proxy.port}", "-t", "t1", "-r", "100", "-m", "200", timeout=60
        )
        port = admin_port(proxy)
        per_worker = [invites_answered(port), invites_answered(port + 1)]
        handed_over = [handoff(port + index, "handoff_out") for index in (0, 1)]
        dropped = [handoff(port + index, "handoff_drops") for index in (0, 1)]
    assert result.failed == 0, result.errors[-3000:]
    assert result.successful == 200
    assert sum(per_worker) == 200, per_worker
    assert min(per_worker) >= 50, f"calls per worker {per_worker}: not spread"
    # Both ways: requests to the owner, and the owner's responses back to the connection.
    assert min(handed_over) > 0, handed_over
    assert dropped == [0, 0]


def test_sigterm_drains_every_worker(tmp_path: Path) -> None:
    primary, backup = free_port(), free_port()
    with (
        sipp_server(tmp_path, primary, "-aa"),
        run_sipha(tmp_path, [Pair("p", primary, backup)], extra=WORKERS) as proxy,
    ):
        for index in (0, 1):
            wait_for_log(proxy, f"worker {index}: pair p: primary")
        # A worker installs its signal handlers just after that line: a SIGTERM in between
        # would end it without a drain (nothing under way yet), not what this test is about.
        time.sleep(0.5)
        proxy.process.send_signal(signal.SIGTERM)
        assert proxy.process.wait(10) == 0
        text = proxy.log_text()
    for index in (0, 1):
        assert f"worker {index}: SIGTERM: draining" in text
        assert f"worker {index}: drained, exiting" in text
        assert f"worker {index}: SIGTERM again" not in text  # one copy each, not two
    assert "all workers exited" in text


def test_a_dead_worker_is_restarted_on_its_socket(tmp_path: Path) -> None:
    primary, backup = free_port(), free_port()
    with (
        sipp_server(tmp_path, primary, "-aa"),
        run_sipha(tmp_path, [Pair("p", primary, backup)], extra=WORKERS) as proxy,
    ):
        text = wait_for_log(proxy, "started 2 workers")
        match = re.search(r"started 2 workers \(pids (\d+), (\d+)\)", text)
        assert match is not None
        time.sleep(5.5)  # past the start grace: a worker dying later is restarted
        os.kill(int(match.group(2)), signal.SIGKILL)
        wait_for_log(proxy, f"worker 1 (pid {match.group(2)}) exited with status -9: restarting it")
        wait_for_log(proxy, "worker 1: pair p: primary", timeout=10)
        result = run_sipp_client(tmp_path, f"{HOST}:{proxy.port}", "-r", "100", "-m", "200", timeout=60)
    assert result.failed == 0, result.errors[-3000:]
    assert result.successful == 200


def test_a_worker_that_cannot_start_stops_them_all(tmp_path: Path) -> None:
    """Worker 1's admin port (the admin port + 1) is taken: sipha exits 1 and says why."""
    primary, backup = free_port(), free_port()
    config = write_config(tmp_path / "sipha.toml", free_port(), [Pair("p", primary, backup)], extra=WORKERS)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind((HOST, admin_port_of(config) + 1))
        taken.listen(1)
        completed = subprocess.run(
            [sys.executable, "-m", "sipha", "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert completed.returncode == 1, completed.stderr
    assert "cannot start: worker 1 exited with status 1 at start" in completed.stderr
    assert "worker 1: " in completed.stderr  # its own reason, in its log line


def test_sighup_reaches_every_worker_and_listen_changes_are_refused(tmp_path: Path) -> None:
    """SIGHUP to the parent: each worker reloads; a new listen address cannot be taken over
    (the parent binds the shared sockets), so that reload is refused and the old one kept."""
    primary, backup = free_port(), free_port()
    with (
        sipp_server(tmp_path, primary, "-aa"),
        run_sipha(tmp_path, [Pair("p", primary, backup)], extra=WORKERS) as proxy,
    ):
        for index in (0, 1):  # a SIGHUP before a worker set its handlers would kill it
            wait_for_log(proxy, f"worker {index}: pair p: primary")
        text = proxy.config.read_text()
        proxy.config.write_text(text)  # unchanged: a reload that changes nothing
        proxy.process.send_signal(signal.SIGHUP)
        for index in (0, 1):
            wait_for_log(proxy, f"worker {index}: configuration reloaded from {proxy.config}")
        extra = f'"udp:{HOST}:{free_port()}", '
        proxy.config.write_text(text.replace("listen = [", "listen = [" + extra, 1))
        proxy.process.send_signal(signal.SIGHUP)
        for index in (0, 1):
            wait_for_log(proxy, f"worker {index}: SIGHUP: configuration {proxy.config} not applied")
        log = wait_for_log(proxy, "cannot change on reload when proxy.workers > 1")
        result = run_sipp_client(tmp_path, f"{HOST}:{proxy.port}", "-r", "100", "-m", "100", timeout=60)
    assert result.failed == 0, result.errors[-3000:]
    assert result.successful == 100
    assert log.count("cannot change on reload") == 2


def test_one_prober_per_instance_whatever_the_workers(tmp_path: Path) -> None:
    """sipha.proxy.probeshare: with 2 workers the primary gets one OPTIONS per oos-check, not two,
    from worker 0 only; worker 1's monitor follows it (its pair is active on the primary too)."""
    primary, backup = free_port(), free_port()
    extra = WORKERS + "\n\n[monitor]\noos-check = 1\n"
    with (
        sipp_server(tmp_path, primary, "-aa", "-trace_msg", "-message_file", str(tmp_path / "uas_msgs.log")),
        run_sipha(tmp_path, [Pair("p", primary, backup)], extra=extra) as proxy,
    ):
        wait_for_log(proxy, "worker 1: pair p: primary")
        start = (tmp_path / "uas_msgs.log").read_text(errors="replace").count("OPTIONS sip:")
        time.sleep(6.0)
        received = (tmp_path / "uas_msgs.log").read_text(errors="replace").count("OPTIONS sip:") - start
        port = admin_port(proxy)
        with urllib.request.urlopen(f"http://{HOST}:{port + 1}/status", timeout=5) as response:
            follower = response.read().decode()
        result = run_sipp_client(tmp_path, f"{HOST}:{proxy.port}", "-r", "50", "-m", "100", timeout=60)
    # One OPTIONS per second for 6 s (a seventh may fall in the window's edges), not 12.
    assert 5 <= received <= 7, received
    assert '"state": "active"' in follower.replace('":"', '": "'), follower[:2000]
    assert result.failed == 0, result.errors[-3000:]
