"""``[proxy] workers = 2``: SIPp calls through two worker processes on one port, end to end.

Each worker is an independent proxy; SO_REUSEPORT gives a sender's datagrams to
one of them and the affinity rule hands each transaction's datagrams to the
worker holding it.  These tests prove it with real peers: calls succeed, both
workers carry calls, signals reach every worker, a dead worker is restarted, and
the admin HTTP of worker 0 reports the instance: the counters of both workers summed
(sipha.admin.instance), a stopped worker not hanging it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

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


def status_of(port: int) -> dict[str, Any]:
    """/status: of the instance on the admin port (worker 0), of worker N alone on the port + N."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/status", timeout=5) as response:
        document: dict[str, Any] = json.load(response)
    return document


def invites_answered(port: int) -> int:
    """INVITE server transactions answered, from /metrics (the instance's on the admin port)."""
    return sum(
        int(float(value))
        for value in re.findall(
            r'^sipha_transactions_total\{[^}]*method="INVITE"[^}]*\} (\S+)$', metrics_text(port), re.M
        )
    )


def invites(transactions: list[dict[str, Any]]) -> int:
    """INVITE transactions answered, from a /status "transactions" list."""
    return sum(entry["count"] for entry in transactions if entry["method"] == "INVITE")


def per_worker(document: dict[str, Any]) -> list[int]:
    """INVITEs answered by each worker, from the instance's /status "workers"."""
    return [invites(worker["transactions"]) for worker in document["workers"]]


def sample(port: int, name: str, labels: str = "") -> float:
    """One sample of /metrics, e.g. ``sample(port, "sipha_worker_up", 'worker="1"')``."""
    pattern = rf"^{name}(?:\{{{labels}\}})? (\S+)$"
    match = re.search(pattern, metrics_text(port), re.M)
    assert match is not None, (name, labels)
    return float(match.group(1))


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
        instance = status_of(port)
        metrics_invites = invites_answered(port)
        worker_1 = status_of(port + 1)  # worker 1's own view
    assert result.failed == 0, result.errors[-3000:]
    assert result.successful == 400
    # Worker 0's admin HTTP reports the instance: both workers' counters, summed.
    assert instance["scope"] == "instance"
    assert [(w["worker"], w["answered"]) for w in instance["workers"]] == [(0, True), (1, True)]
    assert invites(instance["transactions"]) == metrics_invites == 400
    spread = per_worker(instance)
    assert sum(spread) == 400, spread
    assert min(spread) >= 100, f"calls per worker {spread}: not spread"
    assert worker_1["scope"] == "worker 1"
    assert invites(worker_1["transactions"]) == spread[1]
    for counter in ("requests_in", "responses_in", "requests_forwarded", "responses_forwarded"):
        assert instance["counters"][counter] == sum(w["counters"][counter] for w in instance["workers"])
    assert instance["counters"]["requests_in"] >= 400 * 3  # INVITE, ACK, BYE of each call
    # SIPp's requests all reach one worker's socket: it passes the other's share over.
    handoff = [worker["handoff"] for worker in instance["workers"]]
    assert sum(h["out"] for h in handoff) == sum(h["in"] for h in handoff) > 0, handoff
    assert [h["drops"] for h in handoff] == [0, 0]


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
        instance = status_of(admin_port(proxy))
    assert result.failed == 0, result.errors[-3000:]
    assert result.successful == 200
    assert invites(instance["transactions"]) == 200
    spread = per_worker(instance)
    assert sum(spread) == 200, spread
    assert min(spread) >= 50, f"calls per worker {spread}: not spread"
    # Both ways: requests to the owner, and the owner's responses back to the connection.
    handoff = [worker["handoff"] for worker in instance["workers"]]
    assert min(h["out"] for h in handoff) > 0, handoff
    assert [h["drops"] for h in handoff] == [0, 0]


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
    """Worker 1 is stopped (SIGSTOP: a stuck loop), then killed and restarted.  Worker 0's /status
    answers without it within its bound, with the last counters it gave; after the restart the
    instance's counters go on from there (never down), and the calls through it succeed."""
    primary, backup = free_port(), free_port()
    with (
        sipp_server(tmp_path, primary, "-aa"),
        run_sipha(tmp_path, [Pair("p", primary, backup)], extra=WORKERS) as proxy,
    ):
        text = wait_for_log(proxy, "started 2 workers")
        match = re.search(r"started 2 workers \(pids (\d+), (\d+)\)", text)
        assert match is not None
        wait_for_log(proxy, "worker 1: pair p: primary")
        started = time.monotonic()
        first = run_sipp_client(tmp_path, f"{HOST}:{proxy.port}", "-r", "100", "-m", "100", timeout=60)
        port = admin_port(proxy)
        before = status_of(port)
        pid = int(match.group(2))
        os.kill(pid, signal.SIGSTOP)
        asked = time.monotonic()
        stopped = status_of(port)
        waited = time.monotonic() - asked
        worker_up = sample(port, "sipha_worker_up", 'worker="1"')
        time.sleep(max(0.0, 5.5 - (time.monotonic() - started)))  # past the start grace: restarted
        os.kill(pid, signal.SIGKILL)
        wait_for_log(proxy, f"worker 1 (pid {pid}) exited with status -9: restarting it")
        result = run_sipp_client(tmp_path, f"{HOST}:{proxy.port}", "-r", "100", "-m", "200", timeout=60)
        after = status_of(port)
    assert first.failed == 0, first.errors[-3000:]
    assert result.failed == 0, result.errors[-3000:]
    assert result.successful == 200
    assert invites(before["transactions"]) == 100
    assert per_worker(before)[1] > 0, per_worker(before)
    # The stopped worker does not hang the request: the bound (0.5 s), with its last counters.
    assert waited < 2.0, waited
    assert [w["answered"] for w in stopped["workers"]] == [True, False]
    assert invites(stopped["transactions"]) == 100
    assert worker_up == 0
    # The restarted worker counts from 0; the instance keeps what the old one had counted.
    assert after["workers"][1]["pid"] != pid
    assert [w["answered"] for w in after["workers"]] == [True, True]
    assert invites(after["transactions"]) == 300, (per_worker(before), per_worker(after))


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
        port = admin_port(proxy)
        sent = 'pair="p"'
        start = (tmp_path / "uas_msgs.log").read_text(errors="replace").count("OPTIONS sip:")
        sent_before = sample(port, "sipha_pair_options_sent_total", sent)
        time.sleep(6.0)
        received = (tmp_path / "uas_msgs.log").read_text(errors="replace").count("OPTIONS sip:") - start
        sent_during = sample(port, "sipha_pair_options_sent_total", sent) - sent_before
        follower = status_of(port + 1)
        workers = [sample(port, "sipha_worker_up", f'worker="{index}"') for index in (0, 1)]
        result = run_sipp_client(tmp_path, f"{HOST}:{proxy.port}", "-r", "50", "-m", "100", timeout=60)
        instance = status_of(port)
    # One OPTIONS per second for 6 s (a seventh may fall in the window's edges), not 12.
    assert 5 <= received <= 7, received
    # The instance's /metrics counts the OPTIONS of its prober, worker 0, as the member got them
    # (the followers' delegated probes are not OPTIONS on the wire: not summed in).
    assert 5 <= sent_during <= 7, sent_during
    assert workers == [1.0, 1.0]
    assert follower["scope"] == "worker 1"
    assert follower["pairs"][0]["state"] == "active", follower["pairs"]
    assert result.failed == 0, result.errors[-3000:]
    assert invites(instance["transactions"]) == 100
