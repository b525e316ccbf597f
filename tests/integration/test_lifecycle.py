"""Lifecycle under SIPp load: SIGHUP reload, SIGTERM drain, overload.

Real processes on loopback: ``sipha run --config FILE``, SIPp's uac (tests/scenarios/
uac_drain.xml: a 503 ends a call without failing it, so FailedCall counts only calls
that really went wrong) and SIPp uas ``-aa`` servers.  Every process is bounded
(SIPp's ``-timeout``, ``wait`` timeouts) and stopped at the end of its ``with`` block.
"""

from __future__ import annotations

import csv
import json
import re
import signal
import socket
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.support import (
    HOST,
    SIPP,
    Pair,
    RunningProxy,
    SippResult,
    free_port,
    run_sipha,
    run_sipp_client,
    sipp_args,
    sipp_server,
    stop_process,
)

pytestmark = [pytest.mark.integration, pytest.mark.skipif(SIPP is None, reason="sipp not installed")]

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
UAC = str(SCENARIOS / "uac_drain.xml")
DRAIN_LIMIT = 32.0  # sipha.app.DRAIN_LIMIT


def wait_for_log(proxy: RunningProxy, text: str, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while text not in (log := proxy.log_text()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the log:\n{log[-3000:]}")
        time.sleep(0.05)
    return log


def trace_counts(directory: Path) -> dict[str, int]:
    """The last row of SIPp's -trace_counts file: messages per scenario step, summed by kind."""
    files = sorted(directory.glob("uac_drain_*_counts.csv"))
    assert files, "no -trace_counts file"
    rows = list(csv.reader(files[-1].open(encoding="utf-8"), delimiter=";"))
    header, last = rows[0], rows[-1]
    counts: dict[str, int] = {}
    for name, value in zip(header, last, strict=False):
        if value.isdigit() and re.match(r"\d+_", name):
            counts[name] = int(value)
    return counts


def count(counts: dict[str, int], pattern: str) -> int:
    """The largest count among the columns matching ``pattern`` (a message seen at one step)."""
    matching = [value for name, value in counts.items() if re.fullmatch(pattern, name)]
    assert matching, (pattern, sorted(counts))
    return max(matching)


def options_answered(port: int) -> int:
    """Send one OPTIONS to the proxy on 127.0.0.1:``port`` (UDP); its status (0 = no answer)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(2.0)
        own = sock.getsockname()[1]
        request = (
            f"OPTIONS sip:{HOST}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{own};branch=z9hG4bK-lifecycle-{time.monotonic_ns()};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:test@{HOST}>;tag=t1\r\nTo: <sip:{HOST}:{port}>\r\n"
            f"Call-ID: lifecycle-{time.monotonic_ns()}@{HOST}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        sock.sendto(request.encode(), (HOST, port))
        try:
            data = sock.recv(65535).decode()
        except TimeoutError:
            return 0
        return int(data.split(" ", 2)[1])


def admin_status(proxy: RunningProxy) -> dict[str, object]:
    match = re.search(r'\[admin\]\s*listen = "([^"]+)"', proxy.config.read_text())
    assert match is not None
    with urllib.request.urlopen(f"http://{match.group(1)}/status", timeout=5) as answer:
        document: dict[str, object] = json.loads(answer.read())
    return document


def uac(directory: Path, proxy: RunningProxy, *args: str, timeout: float = 40) -> SippResult:
    return run_sipp_client(
        directory, f"{HOST}:{proxy.port}", "-trace_counts", *args, scenario=UAC, timeout=timeout
    )


# ---------------------------------------------------------------------------- SIGHUP


def test_reload_under_load(tmp_path: Path) -> None:
    """SIPp uac at 100 calls/s for 10 s; a valid SIGHUP mid-run, then an invalid one: no failed call.

    The valid file changes oos-check, adds a second pair and a listen address (bound at
    once: it answers an OPTIONS), and keeps the pair under load (its monitor state kept);
    the invalid one is refused with every problem named, and the proxy goes on.
    """
    primary, backup = free_port(), free_port()
    site_b, site_b_backup = free_port(), free_port()
    pair = Pair("load", primary, backup)
    with (
        sipp_server(tmp_path, primary, "-aa"),
        sipp_server(tmp_path, site_b, "-aa", name="uas_b"),
        run_sipha(tmp_path, [pair]) as proxy,
        ThreadPoolExecutor(1) as pool,
    ):
        wait_for_log(proxy, "is active")  # the pair became active
        running = pool.submit(uac, tmp_path, proxy, "-m", "1000", "-r", "100")
        time.sleep(3.0)
        extra_port = free_port()
        config = proxy.config.read_text()
        config = config.replace(
            f'listen = ["udp:{HOST}:{proxy.port}", "tcp:{HOST}:{proxy.port}"]',
            f'listen = ["udp:{HOST}:{proxy.port}", "tcp:{HOST}:{proxy.port}", "udp:{HOST}:{extra_port}"]',
        )
        config += (
            f'[[pair]]\nname = "site-b"\nprimary = "udp:{HOST}:{site_b}"\n'
            f'backup = "udp:{HOST}:{site_b_backup}"\n\n[monitor]\noos-check = 2\n'
        )
        proxy.config.write_text(config)
        proxy.process.send_signal(signal.SIGHUP)
        log = wait_for_log(proxy, "configuration reloaded")
        assert options_answered(extra_port) == 200
        time.sleep(3.0)
        good = proxy.config.read_text()
        proxy.config.write_text(good.replace("oos-check = 2", 'oos-check = 9999\nbogus = "x"'))
        proxy.process.send_signal(signal.SIGHUP)
        log = wait_for_log(proxy, "refused, keeping the running one")
        result = running.result(timeout=60)
        assert options_answered(extra_port) == 200  # still the reloaded configuration
        status = admin_status(proxy)
        log = proxy.log_text()
    reloaded = next(line for line in log.splitlines() if "configuration reloaded" in line)
    print(f"\nRELOAD: {result.successful} calls ok, {result.failed} failed\n{reloaded}")
    assert result.failed == 0, f"{result.errors[-3000:]}\n{log[-3000:]}"
    assert result.successful == 1000, result.stats
    assert "monitor.oos-check 5 -> 2" in reloaded
    assert "pair site-b added" in reloaded
    assert f"udp:{HOST}:{extra_port}" in reloaded
    assert "re-probing" not in reloaded  # the pair under load kept its state
    assert "monitor.oos-check = 9999" in log
    assert "monitor.bogus = 'x': unknown option" in log
    pairs = {p["name"]: p for p in status["pairs"]}  # type: ignore[attr-defined]
    assert set(pairs) == {"load", "site-b"}


def test_reload_without_a_file_is_refused_plainly(tmp_path: Path) -> None:
    """The file is gone: SIGHUP is refused, the proxy keeps serving."""
    primary, backup = free_port(), free_port()
    with sipp_server(tmp_path, primary, "-aa"), run_sipha(tmp_path, [Pair("p", primary, backup)]) as proxy:
        proxy.config.rename(tmp_path / "moved.toml")
        proxy.process.send_signal(signal.SIGHUP)
        wait_for_log(proxy, "cannot read")
        assert options_answered(proxy.port) == 200


# ---------------------------------------------------------------------------- SIGTERM


def test_drain_under_load(tmp_path: Path) -> None:
    """SIPp: 3 s calls at 50 calls/s for 3 s; SIGTERM after 1.5 s.

    The calls set up before go on to their BYE and its 200 (none fails); the INVITEs
    after it get 503 with Retry-After; sipha exits 0 once the last call ended, well
    within the bound.
    """
    primary, backup = free_port(), free_port()
    with (
        sipp_server(tmp_path, primary, "-aa"),
        run_sipha(tmp_path, [Pair("drain", primary, backup)]) as proxy,
        ThreadPoolExecutor(1) as pool,
    ):
        wait_for_log(proxy, "is active")
        running = pool.submit(uac, tmp_path, proxy, "-m", "150", "-r", "50", "-d", "3000", "-trace_msg")
        time.sleep(1.5)
        signalled = time.monotonic()
        proxy.process.send_signal(signal.SIGTERM)
        returncode = proxy.process.wait(DRAIN_LIMIT + 5)
        took = time.monotonic() - signalled
        result = running.result(timeout=60)
        log = proxy.log_text()
    counts = trace_counts(tmp_path)
    refused = count(counts, r"\d+_503_Recv")
    byes_ok = count(counts, r"\d+_200_Recv")
    drained = [line for line in log.splitlines() if "drain" in line]
    print(
        f"\nDRAIN: {byes_ok} calls completed, {refused} refused (503); exit {returncode} after {took:.1f} s"
    )
    print("\n".join(drained))
    assert returncode == 0, log[-3000:]
    assert result.failed == 0, f"{result.errors[-3000:]}\n{log[-3000:]}"
    assert result.successful == 150, result.stats
    assert refused > 0
    assert byes_ok + refused == 150
    assert "drained, exiting" in log
    assert took < DRAIN_LIMIT
    uac_messages = "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("uac_drain_*_messages.log"))
    assert "Retry-After: 5" in uac_messages


def test_second_sigterm_stops_at_once(tmp_path: Path) -> None:
    """20 calls up for 10 s: the first SIGTERM drains (waits for them), the second stops now."""
    primary, backup = free_port(), free_port()
    with (
        sipp_server(tmp_path, primary, "-aa"),
        run_sipha(tmp_path, [Pair("drain", primary, backup)]) as proxy,
    ):
        wait_for_log(proxy, "is active")
        caller = subprocess.Popen(
            sipp_args(
                *("-sf", UAC, f"{HOST}:{proxy.port}", "-i", HOST, "-p", str(free_port())),
                *("-m", "20", "-r", "20", "-d", "10000", "-nostdin", "-timeout", "20s"),
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=tmp_path,
        )
        try:
            time.sleep(1.5)  # the 20 calls are up, in their 10 s pause
            proxy.process.send_signal(signal.SIGTERM)
            wait_for_log(proxy, "draining")
            time.sleep(0.5)
            assert proxy.process.poll() is None  # waiting for the calls
            proxy.process.send_signal(signal.SIGTERM)
            returncode = proxy.process.wait(5)
            log = proxy.log_text()
        finally:
            stop_process(caller)
    assert returncode == 0
    assert "again: stopping at once" in log
    assert re.search(r"draining: \d+ transactions under way, 20 calls up", log), log[-2000:]


# ---------------------------------------------------------------------------- overload


def test_overload_control(tmp_path: Path) -> None:
    """overload-ctrl-dialog-rate = 20, SIPp at 50 calls/s for 4 s: some 503s with Retry-After: 1."""
    primary, backup = free_port(), free_port()
    with (
        sipp_server(tmp_path, primary, "-aa"),
        run_sipha(tmp_path, [Pair("busy", primary, backup)], extra="overload-ctrl-dialog-rate = 20") as proxy,
    ):
        wait_for_log(proxy, "is active")
        result = uac(tmp_path, proxy, "-m", "200", "-r", "50", "-trace_msg")
        status = admin_status(proxy)
        assert proxy.process.poll() is None
    counters: dict[str, int] = status["counters"]  # type: ignore[assignment]
    counts = trace_counts(tmp_path)
    refused = count(counts, r"\d+_503_Recv")
    print(f"\nOVERLOAD: {result.successful} calls, {refused} refused with 503; counters {counters}")
    assert result.failed == 0, result.errors[-3000:]
    assert counters["overload_rejections"] == refused
    # 4 s at 20/s plus the burst of 20: about 100 admitted, the rest refused.
    assert 60 <= refused <= 140
    uac_messages = "\n".join(p.read_text(errors="replace") for p in tmp_path.glob("uac_drain_*_messages.log"))
    assert "Retry-After: 1" in uac_messages
