"""``sipha ctl`` end to end: a real ``sipha run`` process, simulated SIP servers, the client as a process.

Each test starts its own sipha on free ports (oos-check 1, oos-force 1) and bounds every
wait; what ``ctl`` prints and its exit status are what a script would see.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sipha import ctl
from tests.integration.support import HOST, free_port, stop_process

START = 10.0
WAIT = 8.0
TOKEN = "ctl-test-token-7f3a"  # noqa: S105 - a test value


@dataclass
class Sipha:
    process: subprocess.Popen[bytes]
    config: Path
    log: Path
    admin: int
    primary: int
    backup: int

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.admin}"

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def config_text(sip: int, admin: int, primary: int, backup: int, *, token: str = "", extra: str = "") -> str:
    return f"""
[proxy]
listen = ["udp:{HOST}:{sip}"]
record-route = "sip:{HOST}:{sip};lr"
{extra}
[monitor]
oos-check = 1
oos-force = 1
[admin]
listen = "{HOST}:{admin}"
token = "{token}"
[[pair]]
name = "site"
primary = "udp:{HOST}:{primary}"
backup = "udp:{HOST}:{backup}"
serving = true
"""


@contextlib.contextmanager
def sipha(directory: Path, *, token: str = "", extra: str = "") -> Iterator[Sipha]:
    """``sipha run`` on free ports, its pair's members not started; stopped at the end."""
    admin, primary, backup = free_port(), free_port(), free_port()
    config = directory / "sipha.toml"
    config.write_text(config_text(free_port(), admin, primary, backup, token=token, extra=extra))
    log = directory / "sipha.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "sipha", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    running = Sipha(process, config, log, admin, primary, backup)
    try:
        deadline = time.monotonic() + START
        while "admin HTTP on" not in running.log_text() or "listening on udp" not in running.log_text():
            assert process.poll() is None, running.log_text()
            assert time.monotonic() < deadline, running.log_text()
            time.sleep(0.05)
        yield running
    finally:
        stop_process(process)


@contextlib.contextmanager
def member(port: int) -> Iterator[None]:
    """A simulated SIP server in primary mode on ``port`` (answers OPTIONS 200)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sipha", "simulate-server", "--listen", f"udp:{HOST}:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        stop_process(process)


def run_ctl(*args: str, token: str | None = None, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != ctl.TOKEN_ENV}
    if token is not None:
        env[ctl.TOKEN_ENV] = token
    return subprocess.run(
        [sys.executable, "-m", "sipha", "ctl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def status(running: Sipha, **kwargs: Any) -> dict[str, Any]:
    result = run_ctl("--url", running.url, "status", "--json", **kwargs)
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def wait_until_active(running: Sipha, **kwargs: Any) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while True:
        document = status(running, **kwargs)
        if document["healthy"]:
            return document
        assert time.monotonic() < deadline, document
        time.sleep(0.1)


def test_status_as_a_table_and_as_json(tmp_path: Path) -> None:
    with sipha(tmp_path) as running, member(running.primary):
        document = wait_until_active(running)
        (pair,) = document["pairs"]
        assert (pair["name"], pair["state"], pair["active"]) == ("site", "active", "primary")
        assert document["draining"] is False

        result = run_ctl("status", "--url", running.url)  # options after the command too
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        lines = result.stdout.splitlines()
        assert lines[0].startswith(f"sipha {document['version']} at {running.url}: up ")
        assert lines[0].endswith(", healthy")
        assert lines[1].startswith("transactions in flight: ")
        header = lines[3].split()
        assert header[:4] == ["PAIR", "STATE", "LAST", "CHANGE"]
        primary_row, backup_row = lines[4], lines[5]
        assert primary_row.split()[:2] == ["site", "active"]
        assert f"udp:{HOST}:{running.primary}  primary  *" in primary_row
        assert " ms" in primary_row  # its OPTIONS round trip
        assert backup_row.split() == [f"udp:{HOST}:{running.backup}", "backup", "-"]


def test_reload_applied_then_refused(tmp_path: Path) -> None:
    with sipha(tmp_path) as running:
        running.config.write_text(running.config.read_text().replace("oos-check = 1", "oos-check = 2"))
        result = run_ctl("--url", running.url, "reload")
        assert result.returncode == ctl.EXIT_OK, result.stderr
        assert result.stdout == f"configuration {running.config} reloaded:\n  monitor.oos-check 1 -> 2\n"
        assert "configuration reloaded from" in running.log_text()

        running.config.write_text(running.config.read_text().replace("oos-check = 2", "oos-check = -1"))
        result = run_ctl("--url", running.url, "reload")
        assert result.returncode == ctl.EXIT_REFUSED
        assert result.stdout == ""
        first, *problems = result.stderr.splitlines()
        assert first == (
            f"sipha ctl: {running.url}/reload: reload refused: configuration {running.config}: 1 problem;"
            " the running configuration is kept"
        )
        assert problems == ["  monitor.oos-check = -1: Input should be greater than or equal to 0"]

        result = run_ctl("--url", running.url, "--json", "reload")
        assert result.returncode == ctl.EXIT_REFUSED
        assert json.loads(result.stdout)["applied"] is False
        assert running.process.poll() is None  # still serving, with the configuration it had
        assert status(running)["pairs"][0]["name"] == "site"


def test_drain_then_sipha_exits_0(tmp_path: Path) -> None:
    with sipha(tmp_path) as running:
        result = run_ctl("--url", running.url, "drain")
        assert result.returncode == ctl.EXIT_OK, result.stderr
        assert result.stdout.startswith("draining: 0 transactions under way, 0 calls up;")
        assert running.process.wait(10) == 0
        assert "drain asked over the admin HTTP" in running.log_text()
        # Gone: the next request cannot reach it.
        result = run_ctl("--url", running.url, "drain")
        assert result.returncode == ctl.EXIT_UNREACHABLE


def test_events_follow_sees_a_member_become_active(tmp_path: Path) -> None:
    with sipha(tmp_path) as running:
        follower = subprocess.Popen(
            [sys.executable, "-m", "sipha", "ctl", "--url", running.url, "events", "--follow"],
            # A test run started in the background of a non-interactive shell inherits SIGINT
            # ignored, and Python then installs no Ctrl-C handler: give the child the default.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509 - no threads in the child yet
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        assert follower.stdout is not None
        stdout = follower.stdout

        def read() -> None:
            for line in stdout:
                lines.put(line)

        threading.Thread(target=read, daemon=True).start()
        try:

            def next_line() -> str:
                try:
                    return lines.get(timeout=WAIT)
                except queue.Empty:
                    raise AssertionError("no event line within the wait") from None

            assert "pair site: no active member, probing both (starting)" in next_line()
            with member(running.primary):  # the primary starts answering: the pair becomes active
                while True:
                    line = next_line()
                    if " active " in line:
                        break
            assert f"pair site: primary udp:{HOST}:{running.primary} is active (answered OPTIONS)" in line
            follower.send_signal(signal.SIGINT)
            assert follower.wait(15) == ctl.EXIT_OK  # a loaded CI machine: seconds to be scheduled
            assert follower.stderr is not None
            assert follower.stderr.read() == "sipha ctl: stopped (Ctrl-C)\n"
        finally:
            stop_process(follower)  # type: ignore[arg-type]


def test_events_follow_ends_when_sipha_stops(tmp_path: Path) -> None:
    with sipha(tmp_path) as running:
        follower = subprocess.Popen(
            [sys.executable, "-m", "sipha", "ctl", "--url", running.url, "events", "-f", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert follower.stdout is not None
            first = json.loads(follower.stdout.readline())
            assert first["kind"] == "unknown"
            running.process.send_signal(signal.SIGTERM)
            assert running.process.wait(10) == 0
            _, stderr = follower.communicate(timeout=WAIT)
            assert follower.returncode == ctl.EXIT_OK
            where = f"sipha ctl: {running.url}/events?follow=1"
            assert stderr == f"{where}: the server ended the stream: sipha is stopping\n"
        finally:
            stop_process(follower)  # type: ignore[arg-type]


def test_events_follow_is_exit_3_when_sipha_is_killed(tmp_path: Path) -> None:
    with sipha(tmp_path) as running:
        follower = subprocess.Popen(
            [sys.executable, "-m", "sipha", "ctl", "--url", running.url, "events", "--follow"],
            # A test run started in the background of a non-interactive shell inherits SIGINT
            # ignored, and Python then installs no Ctrl-C handler: give the child the default.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509 - no threads in the child yet
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert follower.stdout is not None
            assert "probing both (starting)" in follower.stdout.readline()
            running.process.kill()
            _, stderr = follower.communicate(timeout=WAIT)
            assert follower.returncode == ctl.EXIT_UNREACHABLE
            assert stderr == (
                f"sipha ctl: {running.url}/events?follow=1: the connection was lost (sipha stopped or was"
                " killed?)\n"
            )
        finally:
            stop_process(follower)  # type: ignore[arg-type]


def test_unauthorised_is_exit_4_and_the_token_is_never_shown(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with sipha(tmp_path, token=TOKEN) as running:
        result = run_ctl("--url", running.url, "status")
        assert result.returncode == ctl.EXIT_UNAUTHORISED
        assert result.stderr == (
            f"sipha ctl: {running.url}/status: 401 unauthorised: this sipha wants its [admin] token"
            f" (--token-file FILE or ${ctl.TOKEN_ENV})\n"
        )
        result = run_ctl("--url", running.url, "reload", token="not-" + TOKEN)
        assert result.returncode == ctl.EXIT_UNAUTHORISED
        assert result.stderr == f"sipha ctl: {running.url}/reload: 401 unauthorised: the token was refused\n"
        assert TOKEN not in result.stderr + result.stdout

        assert status(running, token=TOKEN)["pairs"][0]["name"] == "site"  # from the environment
        result = run_ctl("--url", running.url, "--token-file", str(token_file), "events", token="wrong")  # noqa: S106
        assert result.returncode == ctl.EXIT_OK, result.stderr  # the file wins over the environment
        assert "probing both (starting)" in result.stdout
        assert TOKEN not in running.log_text()


def test_unreachable_is_exit_3(tmp_path: Path) -> None:
    del tmp_path
    port = free_port()
    result = run_ctl("--url", f"http://{HOST}:{port}", "status")
    assert result.returncode == ctl.EXIT_UNREACHABLE
    assert result.stderr == (
        f"sipha ctl: http://{HOST}:{port}/status: cannot connect: connection refused"
        " (is sipha running, its [admin] listen there?)\n"
    )
    # Something that accepts the connection and never answers: the timeout.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind((HOST, 0))
        silent.listen()
        url = f"http://{HOST}:{silent.getsockname()[1]}"
        result = run_ctl("--url", url, "--timeout", "0.5", "status")
    assert result.returncode == ctl.EXIT_UNREACHABLE
    assert result.stderr == f"sipha ctl: {url}/status: no answer within 0.5 s\n"


def test_another_http_error_is_exit_1(tmp_path: Path) -> None:
    with sipha(tmp_path) as running:
        result = run_ctl("--url", running.url + "/not-sipha", "status")
    assert result.returncode == ctl.EXIT_REFUSED
    assert result.stderr.startswith(f"sipha ctl: {running.url}/not-sipha/status: 404 Not Found: ")
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "sipha ctl: a COMMAND is needed"),
        (("--url", "ftp://127.0.0.1/", "status"), "an http:// or https:// URL"),
        (("--url", "http://user:pw@127.0.0.1:1/", "status"), "no credentials in the URL"),
        (("--token-file", "/nonexistent/token", "status"), "--token-file /nonexistent/token: cannot read"),
        (("status", "--token", "x"), "unrecognized arguments: --token"),
        (("--token", "x", "status"), "invalid choice"),  # not taken for --token-file
        (("restart",), "invalid choice: 'restart'"),
    ],
)
def test_usage_errors_are_exit_2(args: tuple[str, ...], message: str) -> None:
    result = run_ctl(*args)
    assert result.returncode == ctl.EXIT_USAGE
    assert message in result.stderr


def test_with_workers_every_worker_reloads_and_drains(tmp_path: Path) -> None:
    with sipha(tmp_path, extra="workers = 2") as running:
        deadline = time.monotonic() + START
        while "worker 1: admin HTTP on" not in running.log_text():
            assert time.monotonic() < deadline, running.log_text()
            time.sleep(0.05)
        worker_1 = f"http://{HOST}:{running.admin + 1}"
        running.config.write_text(running.config.read_text().replace("oos-check = 1", "oos-check = 2"))
        result = run_ctl("--url", worker_1, "reload")
        assert result.returncode == ctl.EXIT_OK, result.stderr
        assert "monitor.oos-check 1 -> 2" in result.stdout
        deadline = time.monotonic() + WAIT
        while running.log_text().count("configuration reloaded from") < 2:
            assert time.monotonic() < deadline, running.log_text()
            time.sleep(0.05)
        log = running.log_text()
        assert "worker 0: configuration reloaded from" in log
        assert "worker 1: configuration reloaded from" in log

        result = run_ctl("--url", running.url, "drain")
        assert result.returncode == ctl.EXIT_OK, result.stderr
        assert running.process.wait(10) == 0
        log = running.log_text()
        assert "worker 0: SIGTERM: draining" in log
        assert "worker 1: SIGTERM: draining" in log
        assert "restarting" not in log


# ---------------------------------------------------------------------------- the table, offline


def test_the_table_shows_split_brain_tls_problems_and_draining() -> None:
    document = {
        "version": "9.9",
        "time": "2026-01-01T12:10:00.000Z",
        "uptime": 7384.0,
        "healthy": False,
        "pairs_without_active_member": ["b"],
        "listen": ["udp:127.0.0.1:5060"],
        "transactions_in_flight": 4,
        "draining": True,
        "pairs": [
            {
                "name": "a",
                "state": "active",
                "active": "primary",
                "last_change": "2026-01-01T12:05:00.000Z",
                "split_brain": True,
                "split_brain_since": "2026-01-01T12:09:30.000Z",
                "counters": {"switchovers": 3},
                "members": [
                    {"role": "primary", "address": "udp:10.0.0.1:5060", "active": True, "last_rtt_ms": 0.5},
                    {"role": "backup", "address": "udp:10.0.0.2:5060", "active": False, "last_rtt_ms": None},
                ],
            },
            {
                "name": "b",
                "state": "unknown",
                "active": None,
                "monitoring": True,
                "last_change": None,
                "split_brain": False,
                "counters": {"switchovers": 0},
                "members": [
                    {
                        "role": "primary",
                        "address": "tls:10.0.1.1:5061",
                        "active": False,
                        "last_rtt_ms": None,
                        "transport_error": "TLS handshake failed: certificate verify failed",
                    },
                ],
            },
        ],
        "tls": {"certificate": {"problems": [], "warnings": ["tls.certificate expires in 12 days"]}},
    }
    text = ctl.render_status(document, "http://127.0.0.1:8080")
    lines = text.splitlines()
    assert lines[0] == (
        "sipha 9.9 at http://127.0.0.1:8080: up 2h 03m, UNHEALTHY (no active member: b),"
        " DRAINING (new requests get 503; exits when done)"
    )
    assert lines[1] == "transactions in flight: 4; listening on udp:127.0.0.1:5060"
    row = ["a", "active", "12:05:00Z", "(5m", "00s", "ago)", "3", "udp:10.0.0.1:5060", "primary", "*"]
    assert lines[4].split() == [*row, "0.500", "ms"]
    assert lines[6].split()[:5] == ["b", "unknown", "-", "0", "tls:10.0.1.1:5061"]
    assert lines[6].endswith("TLS handshake failed: certificate verify failed")
    assert lines[-2] == (
        "! split brain in pair a since 12:09:30Z (30.0 s ago): both members act as primary;"
        " sipha keeps primary"
    )
    assert lines[-1] == "! TLS: tls.certificate expires in 12 days"


def test_an_event_line() -> None:
    entry = {"time": "2026-01-01T12:00:00.000Z", "kind": "out-of-service", "event_id": 40001, "message": "m"}
    assert ctl.render_event(entry) == "2026-01-01 12:00:00.000Z  out-of-service    event 40001: m"


def test_a_member_change_names_the_active_member_of_a_primary_backup_pair() -> None:
    pair = {"name": "a", "state": "active", "mode": "primary-backup", "active": "primary", "spread": []}
    assert ctl.render_member_change({**pair, "maintenance": ["primary"]}, "primary", "maintenance") == (
        "pair a: primary in maintenance; active, active: primary"
        " (it keeps new calls until the other member answers OPTIONS)"
    )
    moved = {**pair, "active": "backup", "maintenance": ["primary"]}
    assert ctl.render_member_change(moved, "primary", "maintenance") == (
        "pair a: primary in maintenance; active, active: backup"
    )
    assert ctl.render_member_change({**pair, "maintenance": []}, "primary", "auto") == (
        "pair a: primary back to auto; active, active: primary; in maintenance: none"
    )


def test_a_member_change_names_the_members_serving_an_active_active_pair() -> None:
    """docs/design.md §2.2: no member is "the" active one; new calls go to the spread."""
    pair = {"name": "aa", "state": "active", "mode": "active-active", "active": "backup"}
    left = {**pair, "spread": ["backup"], "maintenance": ["primary"]}
    assert ctl.render_member_change(left, "primary", "maintenance") == (
        "pair aa: primary in maintenance; active, serving: backup"
    )
    last = {**pair, "active": "primary", "spread": ["primary"], "maintenance": ["primary"]}
    assert ctl.render_member_change(last, "primary", "maintenance") == (
        "pair aa: primary in maintenance; active, serving: primary"
        " (it keeps new calls: the other member does not answer OPTIONS)"
    )
    both = {**pair, "spread": ["primary", "backup"], "maintenance": []}
    assert ctl.render_member_change(both, "primary", "auto") == (
        "pair aa: primary back to auto; active, serving: primary, backup; in maintenance: none"
    )
