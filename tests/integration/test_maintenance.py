"""A member taken into maintenance with `sipha ctl member` during 200 calls/s: no call lost.

Two simulated SIP servers, both answering OPTIONS alive and calls (a pair that can take the
calls on either member, as a pair that shares its call state does; docs/design.md §2,
maintenance); SIPp places 200 calls/s through sipha; in the middle `sipha ctl member demo
primary maintenance` runs, the real command against the admin HTTP.  The new calls move to
the backup once it answers its OPTIONS, those under way finish, none fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.support import (
    HOST,
    SIPP,
    Pair,
    SippResult,
    free_port,
    run_sipha,
    run_sipp_client,
    stop_process,
)
from tests.integration.test_workers import admin_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SIPP is None, reason="sipp is not installed (Debian package sip-tester)"),
]

RATE = 200
CALLS = 1600  # 8 s
SWITCH_AFTER = 3.0


def simulated(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sipha",
            "simulate-server",
            "--listen",
            f"udp:{HOST}:{port}",
            "--mode",
            "primary",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def ctl(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sipha", "ctl", "--url", url, *args],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def test_maintenance_of_the_active_member_during_200_calls_per_second_loses_no_call(tmp_path: Path) -> None:
    primary, backup = free_port(), free_port()
    members = [simulated(primary), simulated(backup)]
    try:
        with run_sipha(tmp_path, [Pair("demo", primary, backup)]) as proxy:
            url = f"http://{HOST}:{admin_port(proxy)}"
            deadline = time.monotonic() + 10
            while '"state": "active"' not in ctl(url, "status", "--json").stdout:
                assert time.monotonic() < deadline, proxy.log_text()
                time.sleep(0.1)
            results: list[SippResult] = []
            calls = threading.Thread(
                target=lambda: results.append(
                    run_sipp_client(
                        tmp_path,
                        f"{HOST}:{proxy.port}",
                        "-r",
                        str(RATE),
                        "-m",
                        str(CALLS),
                        "-d",
                        "500",
                        timeout=60,
                    )
                )
            )
            calls.start()
            time.sleep(SWITCH_AFTER)
            asked = ctl(url, "member", "demo", "primary", "maintenance")
            calls.join(90)
            status = json.loads(ctl(url, "status", "--json").stdout)
            with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:  # noqa: S310 - loopback
                metrics = response.read().decode()
            shown = ctl(url, "status").stdout
            back = ctl(url, "member", "demo", "primary", "auto")
            after = json.loads(ctl(url, "status", "--json").stdout)
            unknown = ctl(url, "member", "nope", "primary", "auto")
            log = proxy.log_text()
    finally:
        for process in members:
            stop_process(process)
    [result] = results
    print(f"\nMAINTENANCE at {RATE} calls/s: {result.successful}/{CALLS} ok, {result.failed} failed")
    print(f"  {asked.stdout.strip()}")
    assert asked.returncode == 0, asked.stderr
    assert "pair demo: primary in maintenance" in asked.stdout
    assert result.failed == 0, result.errors[-3000:]
    assert result.successful == CALLS
    [pair] = status["pairs"]
    assert pair["active"] == "backup", pair
    assert pair["maintenance"] == ["primary"]
    assert [m["maintenance"] for m in pair["members"]] == [True, False]
    assert "pair demo: backup udp:" in log
    assert "the other member is in maintenance" in log
    assert (
        f'sipha_pair_member_maintenance{{address="udp:{HOST}:{primary}",member="primary",pair="demo"}} 1.0'
        in metrics
    )
    assert "maint" in shown
    assert back.returncode == 0, back.stderr
    assert after["pairs"][0]["maintenance"] == []
    assert after["pairs"][0]["active"] == "backup"  # auto moves nothing at once
    assert unknown.returncode == 1
    assert "404" in unknown.stderr
    assert "no pair 'nope'" in unknown.stderr
