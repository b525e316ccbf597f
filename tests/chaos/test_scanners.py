"""Scanners against sipha: SIPVicious (svmap, svwar, svcrack) and sipsak (flood, random), for real.

In a network namespace of its own (chaos/faultbed.py): sipha on 127.0.0.1:5060 with
``[limits] source-rate = 10``, ``source-burst = 20`` (about Kamailio's pike sample: 16
requests per 2 s), the default ``scanner-user-agents``, and the SIPp caller 127.0.0.10
``trusted`` (a gateway).  The pair's primary, 127.0.0.2:5060, is SIPp running
chaos/registrar.xml: a registrar with one account, 190 (a REGISTER for it gets 401, for
anyone else 404: the tell svwar reads), and a callee; it answers OPTIONS itself (-aa).
Its message trace is what "reached the member" means: every request it received with
two Vias or more (sipha's OPTIONS probes carry one).

The scanners run one after the other, each bounded in time: svmap from 127.0.0.20; svwar
(extensions 100-199) and svcrack (account 190, passwords 1000-1020) from 127.0.0.1
(SIPVicious 0.3.3's svwar and svcrack ignore ``-b``); sipsak's flood (1,000 OPTIONS) from
127.0.0.21 and its random mode from 127.0.0.22.  nftables counters in the namespace
count what each sent to sipha and what sipha answered.  The figures:

* sipha is alive, and then proxies 200 calls at 100 calls/s from the trusted caller and
  10 calls at 2 calls/s from an untrusted one (127.0.0.11, under its rate): none fails;
* svmap finds no SIP device, svwar no extension, svcrack no password; no request with a
  scanner's User-Agent reached the member, and sipha answered none;
* each sipsak source reached the member with at most ``burst + rate x seconds`` requests,
  each one well-formed (sipha's parser reads it), and got at most that many answers;
* the log has one line per source, the counters (/metrics) count every drop.

The second test shows what sipha stops: with ``scanner-user-agents = []`` and no rate
(a proxy that stops nothing) svwar does enumerate account 190 through sipha; with the
rate alone (reloaded with SIGHUP) svwar's requests reach the member at most at the rate.

Every test prints one ``SCAN`` line (``pytest -s``).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sipha.sip import SipParseError, parse_message
from tests.chaos.faultbed import (
    CALLER_IP,
    PRIMARY_IP,
    SIP_PORT,
    SIPHA_IP,
    START_TIMEOUT,
    Namespace,
    chaos_marks,
    start_uac,
)
from tests.integration.support import SIPP, RunningProxy

MISSING = [tool for tool in ("svmap", "svwar", "svcrack", "sipsak") if shutil.which(tool) is None]
pytestmark = [
    *chaos_marks(),
    pytest.mark.skipif(bool(MISSING), reason=f"{MISSING} missing (Debian sipvicious, sipsak: make deb-deps)"),
]

REPO = Path(__file__).resolve().parents[2]
REGISTRAR = REPO / "tests" / "chaos" / "registrar.xml"
CALL_SCENARIO = REPO / "tests" / "scenarios" / "uac_call.xml"
ACCOUNT = "190"
RATE, BURST = 10, 20
SVMAP_IP, FLOOD_IP, RANDOM_IP = "127.0.0.20", "127.0.0.21", "127.0.0.22"
UNTRUSTED_CALLER_IP = "127.0.0.11"
SCANNER_TIMEOUT = 60.0
"""No scanner may run longer (a hung one fails the test)."""
ADMIN = f"http://{SIPHA_IP}:8080"

_TRACE = re.compile(
    rb"^-{47} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\r?\n"
    rb"(?:UDP|TCP) message received[^\n]*\n\r?\n(.*?)(?=^-{47} |\Z)",
    re.M | re.S,
)
"""A message SIPp's -trace_msg log says it received, with SIPp's timestamp (as in test_failover)."""


# ---------------------------------------------------------------------------- the bed


def write_config(path: Path, limits: str) -> Path:
    path.write_text(
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
                f'primary = "udp:{PRIMARY_IP}:{SIP_PORT}"',
                f'backup = "udp:127.0.0.3:{SIP_PORT}"',
                "serving = true",
                "",
            ]
        ),
        encoding="utf-8",
    )
    return path


def start_sipha(ns: Namespace, limits: str) -> RunningProxy:
    config = write_config(ns.directory / "sipha.toml", limits)
    log = ns.directory / "sipha.log"
    process = ns.popen(sys.executable, "-m", "sipha", "run", "--config", str(config), log=log)
    proxy = RunningProxy(SIP_PORT, config, log, process, [])
    deadline = time.monotonic() + START_TIMEOUT
    while f"primary udp:{PRIMARY_IP}:{SIP_PORT} is active" not in proxy.log_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"sipha did not start (exit {process.poll()}):\n{proxy.log_text()[-4000:]}")
        time.sleep(0.05)
    return proxy


def start_member(ns: Namespace) -> Path:
    """SIPp with chaos/registrar.xml on the primary's address; its message trace."""
    assert SIPP is not None
    trace = ns.directory / "member_messages.log"
    ns.popen(
        SIPP,
        "-sf",
        str(REGISTRAR),
        "-i",
        PRIMARY_IP,
        "-p",
        str(SIP_PORT),
        "-aa",
        "-nostdin",
        "-trace_msg",
        "-message_file",
        str(trace),
        log=ns.directory / "member.out",
    )
    return trace


@dataclass
class Received:
    at: datetime
    data: bytes

    @property
    def forwarded(self) -> bool:
        """A request relayed by sipha (its Via on top of the sender's), not one of sipha's probes."""
        head = self.data.split(b"\r\n\r\n", 1)[0]
        return (
            not self.data.startswith(b"SIP/") and len(re.findall(rb"^(?:Via|v)\s*:", head, re.M | re.I)) >= 2
        )


def member_received(trace: Path) -> list[Received]:
    """What the member received, as bytes with CRLF line ends (SIPp's trace keeps the message)."""
    text = trace.read_bytes() if trace.exists() else b""
    found = []
    for stamp, body in _TRACE.findall(text):
        data = re.sub(rb"\r?\n", b"\r\n", body.rstrip(b"\r\n")) + b"\r\n"
        head, _, rest = data.partition(b"\r\n\r\n")
        found.append(
            Received(datetime.strptime(stamp.decode(), "%Y-%m-%d %H:%M:%S.%f"), head + b"\r\n\r\n" + rest)
        )
    return found


def metrics(ns: Namespace) -> dict[str, float]:
    """sipha's /metrics: ``sipha_transport_events_total`` by counter, and the core's totals."""

    def fetch() -> str:
        with urllib.request.urlopen(f"{ADMIN}/metrics", timeout=5) as response:  # noqa: S310 - http: only
            return str(response.read().decode())

    values: dict[str, float] = {}
    for family in text_string_to_metric_families(ns.call(fetch, timeout=10)):
        for sample in family.samples:
            key = (
                sample.labels.get("counter", sample.name)
                if family.name == "sipha_transport_events"
                else sample.name
            )
            values[key] = sample.value
    return values


@dataclass
class Scan:
    """One scanner's run: its output, how long it took, what it sent and got (nft counters)."""

    name: str
    output: str
    seconds: float
    sent: int
    answers: int
    started: datetime
    ended: datetime


def watch_source(ns: Namespace, name: str, ip: str) -> None:
    """nft counters: what ``ip`` sends to sipha's SIP port, what sipha's SIP port sends to ``ip``."""
    ns.watch(f"{name}_sent", f"ip saddr {ip} ip daddr {SIPHA_IP} udp dport {SIP_PORT}")
    ns.watch(f"{name}_answers", f"ip saddr {SIPHA_IP} udp sport {SIP_PORT} ip daddr {ip}")


def run_scanner(ns: Namespace, name: str, counters: str, *argv: str) -> Scan:
    """Run a scanner to its end in the namespace (bounded by SCANNER_TIMEOUT)."""
    sent, answers = ns.counter(f"{counters}_sent"), ns.counter(f"{counters}_answers")
    started, clock = datetime.now(), time.monotonic()
    done = subprocess.run(
        ns.argv(*argv), capture_output=True, text=True, errors="replace", timeout=SCANNER_TIMEOUT, check=False
    )
    seconds = time.monotonic() - clock
    time.sleep(0.3)  # the last answers in flight
    return Scan(
        name,
        done.stdout + done.stderr,
        seconds,
        ns.counter(f"{counters}_sent") - sent,
        ns.counter(f"{counters}_answers") - answers,
        started,
        datetime.now(),
    )


def reached(received: list[Received], scan: Scan) -> list[Received]:
    """The requests sipha relayed to the member while ``scan`` ran (alone: no other scanner ran then)."""
    return [r for r in received if r.forwarded and scan.started <= r.at <= scan.ended]


def relayed_from(received: list[Received], ip: str) -> list[Received]:
    """The requests sipha relayed to the member from source ``ip`` (RFC 3581: sipha's ``received``)."""
    stamp = re.compile(rb"received=" + re.escape(ip.encode()) + rb"(?![0-9])")
    return [r for r in received if r.forwarded and stamp.search(r.data)]


def in_parallel(*runs: Callable[[], list[Scan]]) -> list[Scan]:
    """Run each sequence of scanners in a thread of its own; their scans, in the order given."""
    with ThreadPoolExecutor(len(runs)) as pool:
        futures = [pool.submit(run) for run in runs]
        return [scan for future in futures for scan in future.result(timeout=4 * SCANNER_TIMEOUT)]


def calls(ns: Namespace, ip: str, count: int, rate: float, name: str) -> tuple[int, int]:
    """(successful, failed) calls of SIPp from ``ip`` (chaos/faultbed's ``uac``, the IP overridden)."""
    run = start_uac(
        ns,
        count,
        rate,
        "-i",
        ip,
        "-d",
        "200",
        scenario=str(CALL_SCENARIO),
        name=name,
        timeout=count / rate + 20,
    )
    result = run.wait()
    return result.successful, result.failed


@pytest.fixture
def bed(netns: Namespace) -> tuple[Namespace, Path]:
    trace = start_member(netns)
    for name, ip in (("svmap", SVMAP_IP), ("flood", FLOOD_IP), ("random", RANDOM_IP), ("local", SIPHA_IP)):
        watch_source(netns, name, ip)
    return netns, trace


# ---------------------------------------------------------------------------- the scanners


def test_scanners_find_nothing_reach_nothing_and_sipha_keeps_proxying(bed: tuple[Namespace, Path]) -> None:
    ns, trace = bed
    proxy = start_sipha(ns, f'source-rate = {RATE}\nsource-burst = {BURST}\ntrusted = ["{CALLER_IP}"]')
    target, port = f"sip:100@{SIPHA_IP}:{SIP_PORT}", str(SIP_PORT)
    flood = ("sipsak", "-F", "-e", "1000", "--local-ip", FLOOD_IP, "-s", target)
    scans = in_parallel(
        # svwar and svcrack both from 127.0.0.1 (SIPVicious 0.3.3 ignores their -b): one after the other.
        lambda: [
            run_scanner(ns, "svwar", "local", "svwar", "-e", "100-199", "-p", port, SIPHA_IP),
            run_scanner(
                ns, "svcrack", "local", "svcrack", "-u", ACCOUNT, "-r", "1000-1020", "-p", port, SIPHA_IP
            ),
        ],
        lambda: [
            run_scanner(ns, "svmap", "svmap", "svmap", "-b", SVMAP_IP, "-p", port, SIPHA_IP),
            run_scanner(ns, "sipsak flood", "flood", *flood),
            run_scanner(ns, "sipsak random", "random", "sipsak", "-R", "--local-ip", RANDOM_IP, "-s", target),
        ],
    )
    assert proxy.process.poll() is None, proxy.log_text()[-4000:]
    received = member_received(trace)
    by_name = {scan.name: scan for scan in scans}

    # SIPVicious: nothing found, nothing relayed, nothing answered.
    assert "found nothing" in by_name["svmap"].output
    assert f"{SIPHA_IP}:{SIP_PORT}" not in by_name["svmap"].output
    assert "found nothing" in by_name["svwar"].output
    assert "reqauth" not in by_name["svwar"].output
    assert "found nothing" in by_name["svcrack"].output
    assert not [r for r in received if b"friendly-scanner" in r.data]
    for name in ("svmap", "svwar", "svcrack"):
        assert by_name[name].sent >= 1, by_name[name]
        assert by_name[name].answers == 0, by_name[name]

    # sipsak: rate-limited per source, and only well-formed requests reach the member.
    figures = []
    for name, ip in (("sipsak flood", FLOOD_IP), ("sipsak random", RANDOM_IP)):
        scan = by_name[name]
        relayed = relayed_from(received, ip)
        allowed = BURST + RATE * (scan.ended - scan.started).total_seconds()
        assert len(relayed) <= allowed, (name, len(relayed), allowed)
        assert scan.answers <= allowed, (name, scan.answers, allowed)
        assert_well_formed(relayed)
        figures.append(f"{name} {scan.sent} sent -> {len(relayed)} relayed, {scan.answers} answered")
    assert by_name["sipsak flood"].sent >= 1000
    assert len(relayed_from(received, FLOOD_IP)) >= BURST  # the burst does go through

    # What sipha logged and counted.
    log = proxy.log_text()
    assert log.count(f"source {SVMAP_IP}: its User-Agent 'friendly-scanner' names a scanner") == 1
    assert log.count(f"source {FLOOD_IP}: over [limits] source-rate = {RATE}/s (burst {BURST})") == 1
    counted = metrics(ns)
    scanners_sent = sum(by_name[name].sent for name in ("svmap", "svwar", "svcrack"))
    assert counted["scanner_requests"] == scanners_sent
    assert counted["source_rate_limited"] >= by_name["sipsak flood"].sent - BURST - 1

    # sipha still proxies: the trusted gateway at 100 calls/s, an untrusted phone under its rate.
    trusted = calls(ns, CALLER_IP, 200, 100.0, "trusted")
    untrusted = calls(ns, UNTRUSTED_CALLER_IP, 6, 2.0, "untrusted")
    assert trusted == (200, 0)
    assert untrusted == (6, 0)
    assert proxy.process.poll() is None
    longest = max(scans, key=lambda scan: scan.seconds)
    print(
        f"\nSCAN svmap/svwar/svcrack: {scanners_sent} requests sent, 0 answered, 0 reached the member, "
        f"found nothing; {'; '.join(figures)} (rate {RATE}/s, burst {BURST}); "
        f"{counted['scanner_requests']:.0f} dropped as scanners, {counted['source_rate_limited']:.0f} over "
        f"the rate; then {trusted[0]}/200 trusted and {untrusted[0]}/6 untrusted calls ok; "
        f"longest scanner run {longest.seconds:.1f} s ({longest.name})"
    )


def test_what_a_proxy_that_stops_nothing_lets_svwar_see(bed: tuple[Namespace, Path]) -> None:
    """No scanner words, no rate: svwar enumerates 190 through sipha.  The rate alone: bounded.

    sipsak's random mode runs unlimited here (with the rate it stops at the burst): each of its
    mutations reaches sipha's parser, and what is relayed is well-formed.
    """
    ns, trace = bed
    proxy = start_sipha(ns, "scanner-user-agents = []")
    target, port = f"sip:100@{SIPHA_IP}:{SIP_PORT}", str(SIP_PORT)
    open_scan, mutated = in_parallel(
        lambda: [run_scanner(ns, "svwar", "local", "svwar", "-e", "100-199", "-p", port, SIPHA_IP)],
        lambda: [
            run_scanner(ns, "sipsak random", "random", "sipsak", "-R", "--local-ip", RANDOM_IP, "-s", target)
        ],
    )
    assert re.search(rf"\|\s*{ACCOUNT}\s*\|\s*reqauth", open_scan.output), open_scan.output
    received = member_received(trace)
    open_reached = len([r for r in received if r.forwarded and b"friendly-scanner" in r.data])
    assert open_reached >= 100  # every extension asked, through sipha
    mutated_relayed = relayed_from(received, RANDOM_IP)
    assert_well_formed(mutated_relayed)
    assert proxy.process.poll() is None

    write_config(proxy.config, f"scanner-user-agents = []\nsource-rate = {RATE}\nsource-burst = {BURST}")
    proxy.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while f"limits.source-rate 0 -> {RATE}" not in proxy.log_text():
        assert time.monotonic() < deadline, proxy.log_text()[-3000:]
        time.sleep(0.05)
    limited = run_scanner(ns, "svwar", "local", "svwar", "-e", "100-199", "-p", port, SIPHA_IP)
    relayed = len(reached(member_received(trace), limited))
    allowed = BURST + RATE * (limited.ended - limited.started).total_seconds()
    assert relayed <= allowed
    found = ACCOUNT if re.search(rf"\|\s*{ACCOUNT}\s*\|", limited.output) else "nothing"
    assert proxy.process.poll() is None
    print(
        f"\nSCAN svwar without [limits]: {open_scan.sent} sent, {open_reached} reached the member, found "
        f"{ACCOUNT} in {open_scan.seconds:.1f} s; sipsak random without [limits]: {mutated.sent} mutations "
        f"sent, {len(mutated_relayed)} relayed (all well-formed), {mutated.answers} answered, "
        f"{mutated.seconds:.1f} s; with source-rate {RATE}/s burst {BURST} only: "
        f"{limited.sent} sent, {relayed} reached the member (<= {allowed:.0f}), found {found} in "
        f"{limited.seconds:.1f} s"
    )


def assert_well_formed(requests: list[Received]) -> None:
    """Every request sipha relayed parses and validates (sipha's own parser): nothing malformed passed."""
    for request in requests:
        try:
            parse_message(request.data).validate()
        except SipParseError as error:
            raise AssertionError(
                f"a malformed request reached the member ({error}):\n{request.data!r}"
            ) from None
