"""``sipha demo`` as a process: starts, serves the dashboard, switches over, exits 0 on SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sipha.sim.demo import DemoOptions, demo_config
from tests.admin.support import HOST, DemoProcess, demo_process, wait_until
from tests.integration.support import free_port


def test_demo_config_is_the_embedded_default_with_demo_timers() -> None:
    config = demo_config(DemoOptions())
    assert config.proxy.listen == ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
    assert config.admin.listen == "127.0.0.1:8080"
    assert (config.monitor.oos_check, config.monitor.oos_force) == (2, 1)
    (pair,) = config.pair
    assert (pair.name, pair.primary, pair.backup) == ("demo", "udp:127.0.0.1:5070", "udp:127.0.0.1:5080")


def test_demo_starts_switches_over_and_stops(tmp_path: Path) -> None:
    with demo_process(tmp_path, "--calls-per-second", "5") as demo:
        assert f"open http://{HOST}:{demo.admin}/ to watch the pair" in demo.log_text()
        assert demo.get("/healthz") == (200, b"ok\n")
        status = demo.status()
        assert status["demo"]["primary_mode"] == f"udp:{HOST}:{demo.primary}"
        assert status["pairs"][0]["active"] == "primary"
        code, body = demo.get("/demo/switch", method="POST")
        assert code == 200, body
        wait_until(lambda: demo.status()["pairs"][0]["active"] == "backup", "the backup to become active")
        status = demo.status()
        assert status["demo"]["primary_mode"] == f"udp:{HOST}:{demo.backup}"
        assert status["pairs"][0]["counters"]["switchovers"] == 1
        wait_until(lambda: demo.status()["demo"]["traffic"]["ok"] >= 3, "demo traffic to be answered")
        demo.process.send_signal(signal.SIGTERM)
        assert demo.process.wait(10) == 0
        assert "demo: stopping" in demo.log_text()


def test_demo_switches_by_itself(tmp_path: Path) -> None:
    with demo_process(tmp_path, "--switch-every", "1", "--calls-per-second", "0") as demo:
        wait_until(lambda: demo.status()["demo"]["switches"] >= 1, "an automatic switchover", timeout=5)
        assert demo.status()["demo"]["traffic"] is None


def test_demo_names_the_busy_port_and_the_option() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind((HOST, 0))
        port = int(taken.getsockname()[1])
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "sipha",
                "demo",
                "--sip-port",
                str(port),
                "--admin-port",
                str(free_port()),
            ],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    assert result.returncode == 1
    assert f"port {port} (SIP, UDP on {HOST}) is in use: choose another with --sip-port PORT" in result.stderr


def _free(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as probe:
        if kind == socket.SOCK_STREAM:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do (TIME-WAIT)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
        return True


@pytest.mark.skipif(
    not (
        _free(5060, socket.SOCK_DGRAM) and _free(5060, socket.SOCK_STREAM) and _free(8080, socket.SOCK_STREAM)
    ),
    reason="the embedded default's ports (5060, 8080) are in use on this machine",
)
def test_run_without_a_file_serves_the_admin_page_on_8080(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "sipha", "run"], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        demo = DemoProcess(process, log, 5060, 8080, 5070, 5080)
        # Nobody answers on 5070/5080: the default pair has no active member.
        wait_until(lambda: demo.get("/healthz")[0] == 503, "the admin HTTP on 8080")
        assert json.loads(demo.get("/healthz")[1])["pairs_without_active_member"] == ["demo"]
        assert demo.get("/")[0] == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "admin HTTP on http://127.0.0.1:8080/" in log.read_text()
