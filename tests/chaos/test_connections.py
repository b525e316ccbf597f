"""TCP against sipha: thousands of idle connections and a slowloris, while real calls go on.

In a network namespace of its own (chaos/faultbed.py): sipha on 127.0.0.1:5060 (UDP and
TCP), its pair's primary SIPp's ``uas`` over TCP on 127.0.0.2:5060, and SIPp's ``uac`` over
TCP from 127.0.0.10 making calls all along.  The attack runs in threads of the test
inside the namespace:

* **idle connections**: from 127.0.0.30, connections opened as fast as the kernel takes
  them and never written to, more than ``[limits] max-connections``;
* **a slowloris**: from 127.0.0.31, a connection that sends its first SIP message, then a
  request line and header fields one byte every 100 ms, never the blank line that ends them.

The figures: the stream connections sipha holds (its ``/metrics`` gauge, sampled every
0.1 s) never exceed max-connections; the idle ones are closed, the oldest first when a new
connection needs room (``connections_evicted``), the rest at ``message-timeout`` after their
accept (``message_timeouts``), each kind with one log line; the slowloris is closed at
``message-timeout`` after its first trickled byte; every call of the SIPp caller meanwhile
completes; sipha's resident memory is read before and at the peak.

* CI: max-connections = 300, 600 idle connections, message-timeout = 3 s, 100 calls at 20/s.
* ``make chaos`` (marker ``long``): the defaults (max-connections = 10,000, message-timeout =
  10 s), 11,000 idle connections (the test raises its own limit of open files), 600 calls.

Every test prints one ``TCP`` line (``pytest -s``).
"""

from __future__ import annotations

import contextlib
import resource
import socket
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.chaos.faultbed import (
    PRIMARY_IP,
    SIP_PORT,
    SIPHA_IP,
    START_TIMEOUT,
    Namespace,
    chaos_marks,
    start_uac,
)
from tests.integration.support import SIPP, RunningProxy

pytestmark = chaos_marks()

REPO = Path(__file__).resolve().parents[2]
CALL_SCENARIO = REPO / "tests" / "scenarios" / "uac_call.xml"
IDLE_IP, SLOW_IP = "127.0.0.30", "127.0.0.31"
ADMIN = f"http://{SIPHA_IP}:8080"
CONNECT_TIMEOUT = 5.0


@dataclass
class Attack:
    """What the attacking threads did and saw."""

    opened: int = 0
    failed: int = 0
    closed_by_sipha: int = 0
    slowloris_bytes: int = 0
    slowloris_lived: float = 0.0
    samples: list[int] = field(default_factory=list)
    """sipha's open stream connections, every 0.1 s."""
    stop: threading.Event = field(default_factory=threading.Event)


def start_sipha(ns: Namespace, limits: str) -> RunningProxy:
    config = ns.directory / "sipha.toml"
    config.write_text(
        "\n".join(
            [
                "[proxy]",
                f'listen = ["udp:{SIPHA_IP}:{SIP_PORT}", "tcp:{SIPHA_IP}:{SIP_PORT}"]',
                f'record-route = "sip:{SIPHA_IP}:{SIP_PORT};lr"',
                "[admin]",
                f'listen = "{SIPHA_IP}:8080"',
                "[monitor]",
                "oos-check = 2",
                "[limits]",
                limits,
                "[[pair]]",
                'name = "ha"',
                f'primary = "tcp:{PRIMARY_IP}:{SIP_PORT}"',
                f'backup = "tcp:127.0.0.3:{SIP_PORT}"',
                "serving = true",
                "",
            ]
        ),
        encoding="utf-8",
    )
    log = ns.directory / "sipha.log"
    process = ns.popen(sys.executable, "-m", "sipha", "run", "--config", str(config), log=log)
    proxy = RunningProxy(SIP_PORT, config, log, process, [])
    deadline = time.monotonic() + START_TIMEOUT
    while f"primary tcp:{PRIMARY_IP}:{SIP_PORT} is active" not in proxy.log_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"sipha did not start (exit {process.poll()}):\n{proxy.log_text()[-4000:]}")
        time.sleep(0.05)
    return proxy


def start_member(ns: Namespace) -> None:
    assert SIPP is not None
    ns.popen(
        SIPP, "-sn", "uas", "-t", "t1", "-i", PRIMARY_IP, "-p", str(SIP_PORT), "-aa", "-nostdin",
        log=ns.directory / "member.out",
    )  # fmt: skip


def metrics() -> dict[str, float]:
    """sipha's /metrics (call inside the namespace): transport counters by name, and the gauges."""
    with urllib.request.urlopen(f"{ADMIN}/metrics", timeout=5) as response:  # noqa: S310 - http: only
        text = response.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.labels.get("counter", sample.name)] = sample.value
    return values


def resident_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise LookupError("VmRSS")


def sample(attack: Attack) -> None:
    """sipha's open stream connections every 0.1 s until the attack stops (in the namespace)."""
    while not attack.stop.is_set():
        with contextlib.suppress(OSError):
            attack.samples.append(int(metrics()["sipha_transport_connections_open"]))
        time.sleep(0.1)


def open_idle(attack: Attack, count: int) -> list[socket.socket]:
    """``count`` connections from IDLE_IP, never written to (in the namespace)."""
    held: list[socket.socket] = []
    for _ in range(count):
        if attack.stop.is_set():
            break
        try:
            held.append(
                socket.create_connection(
                    (SIPHA_IP, SIP_PORT), timeout=CONNECT_TIMEOUT, source_address=(IDLE_IP, 0)
                )
            )
            attack.opened += 1
        except OSError:
            attack.failed += 1
    return held


def count_closed(held: list[socket.socket], attack: Attack) -> None:
    """How many of ``held`` sipha closed (EOF or reset); then close them all."""
    for sock in held:
        sock.setblocking(False)
        try:
            closed = sock.recv(1) == b""
        except BlockingIOError:
            closed = False
        except OSError:
            closed = True
        attack.closed_by_sipha += closed
        sock.close()


def slowloris(attack: Attack) -> None:
    """A message, then a header trickled a byte per 100 ms; how long sipha let it live (in the namespace)."""
    first = (
        f"OPTIONS sip:{SIPHA_IP}:{SIP_PORT} SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP {SLOW_IP}:5060;branch=z9hG4bK-slow\r\n"
        f"From: <sip:slow@{SLOW_IP}>;tag=1\r\nTo: <sip:{SIPHA_IP}>\r\nCall-ID: slow\r\nCSeq: 1 OPTIONS\r\n"
        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    endless = b"OPTIONS sip:x SIP/2.0\r\nX-Slow: " + b"a" * 100_000
    with socket.create_connection(
        (SIPHA_IP, SIP_PORT), timeout=CONNECT_TIMEOUT, source_address=(SLOW_IP, 0)
    ) as sock:
        sock.sendall(first)
        sock.recv(4096)  # its 200 (a keepalive OPTIONS): it has spoken, it is not idle
        started = time.monotonic()
        try:
            for byte in endless:
                sock.sendall(bytes([byte]))
                attack.slowloris_bytes += 1
                time.sleep(0.1)
                if attack.stop.is_set():
                    return
        except OSError:  # reset: sipha closed it and more bytes came
            pass
        attack.slowloris_lived = time.monotonic() - started


def run_attack(
    ns: Namespace, *, idle: int, max_connections: int, message_timeout: float, calls: int, rate: float
) -> None:
    start_member(ns)
    proxy = start_sipha(ns, f"max-connections = {max_connections}\nmessage-timeout = {message_timeout:g}")
    before = ns.call(metrics)
    rss_before = resident_kib(proxy.process.pid)
    attack = Attack()
    sampler = ns.spawn(sample, attack)
    slow = ns.spawn(slowloris, attack)
    started = time.monotonic()
    held = ns.call(open_idle, attack, idle, timeout=idle * CONNECT_TIMEOUT)
    opening = time.monotonic() - started
    rss_peak = resident_kib(proxy.process.pid)
    # While sipha holds max-connections idle ones: a new client connects (the oldest idle one makes
    # room) and calls.
    caller = start_uac(
        ns, calls, rate, "-t", "t1", "-d", "200", scenario=str(CALL_SCENARIO), timeout=calls / rate + 30
    )
    result = caller.wait()
    slow.result(timeout=message_timeout + 30)
    time.sleep(message_timeout + 1.0)  # the idle ones left reach their message-timeout
    ns.call(count_closed, held, attack)
    attack.stop.set()
    sampler.result(timeout=10)
    after = ns.call(metrics)
    log = proxy.log_text()
    assert proxy.process.poll() is None, log[-4000:]

    evicted = after["connections_evicted"] - before["connections_evicted"]
    timed_out = after["message_timeouts"] - before["message_timeouts"]
    peak = max(attack.samples)
    assert attack.opened == idle, attack
    assert peak <= max_connections, (peak, max_connections)
    assert evicted >= idle - max_connections
    assert evicted + timed_out >= idle + 1  # every idle one, and the slowloris
    assert attack.closed_by_sipha == idle
    assert message_timeout * 0.9 <= attack.slowloris_lived <= message_timeout + 2.0, attack.slowloris_lived
    assert after["sipha_transport_connections_open"] <= 2  # the member's and a straggler's at most
    assert result.successful == calls, (result.failed, result.errors[-2000:])
    assert log.count(f"TCP: max-connections = {max_connections} reached: closed the oldest connection") == 1
    assert "sent no complete SIP message within" in log
    assert f"TCP {SLOW_IP}:" in log
    assert "did not complete a SIP message within" in log
    print(
        f"\nTCP {idle} idle connections opened in {opening:.2f} s + a slowloris against max-connections = "
        f"{max_connections}, message-timeout = {message_timeout:g} s: at most {peak} open (sampled), "
        f"{evicted:.0f} evicted, {timed_out:.0f} closed at message-timeout, slowloris closed after "
        f"{attack.slowloris_lived:.1f} s ({attack.slowloris_bytes} bytes); {result.successful}/{calls} "
        f"TCP calls ok meanwhile; sipha RSS {rss_before // 1024} -> {rss_peak // 1024} MiB"
    )


def test_idle_connections_and_a_slowloris_are_bounded_and_calls_go_on(netns: Namespace) -> None:
    run_attack(netns, idle=600, max_connections=300, message_timeout=3.0, calls=100, rate=20.0)


@pytest.mark.long
def test_ten_thousand_idle_connections_against_the_defaults(netns: Namespace) -> None:
    idle = 11_000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = idle + 1024
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard limit of open files is {hard}: {idle} connections need {wanted}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    try:
        run_attack(netns, idle=idle, max_connections=10_000, message_timeout=10.0, calls=600, rate=20.0)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
