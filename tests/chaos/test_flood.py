"""An INVITE flood from many source addresses while a trusted gateway places calls (issue 15).

In a network namespace of its own (chaos/faultbed.py): sipha on 127.0.0.1:5060 (one
worker) with ``[limits] trusted = ["127.0.0.10"]`` (the gateway) and
``max-transactions = 20000``; the pair ``ha``'s primary 127.0.0.2 is SIPp's ``uas``
(scenarios/uas_lossy.xml: the built-in one aborts a call on an INVITE retransmission, which
sipha sends when the member's 180 waited in its flooded queue past Timer A; it answers
sipha's OPTIONS, -aa).  The flood calls numbers of ``flood.example``, served
by the pair ``fraud`` whose primary 127.0.0.4 is SIPp refusing every INVITE with 403
(chaos/reject.xml), as a SIP server refuses a toll-fraud attempt.

* SIPp ``uac`` on the gateway address places LEGIT_CALLS calls at LEGIT_RATE calls/s;
* from FLOOD_START for FLOOD_SECONDS, FLOODERS processes (chaos/flooder.py) send new
  INVITEs from FLOOD_SOURCES addresses (127.0.1.1 ...) at FLOOD_RATE in all: about ten
  times what sipha can take on (bench/core.py: ~420 µs of CPU per call interpreted on
  this machine, some 2,400 calls/s of one core), never ACKing anything, and keeping their
  ports open once done (LINGER): a closed port would answer every response sipha
  retransmits to it with an ICMP error, a different fault (README, "Faults and attacks");
* sipha's resident memory is sampled every 0.2 s (/proc/PID/status VmRSS).

What must hold: at least LEGIT_SHARE of the legitimate calls complete (INVITE 200, BYE
200); the flood is shed (503 or dropped before it is parsed: sipha's counters and what
the flooders got back); RSS growth within what max-transactions allows (:func:`rss_bound`); and once the
flood stops, every legitimate call placed from RECOVERY_WITHIN on is answered within
PDD_OK (recovery).  One ``FLOOD`` line with ``pytest -s``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.chaos.faultbed import (
    CALLER_IP,
    PRIMARY_IP,
    SIP_PORT,
    SIPHA_IP,
    START_TIMEOUT,
    Namespace,
    calls_of,
    chaos_marks,
    seconds,
    start_uac,
)
from tests.integration.support import SIPP, RunningProxy

pytestmark = chaos_marks()

REPO = Path(__file__).resolve().parents[2]
FLOODER = REPO / "tests" / "chaos" / "flooder.py"
REJECT = REPO / "tests" / "chaos" / "reject.xml"
MEMBER = REPO / "tests" / "scenarios" / "uas_lossy.xml"
"""SIPp's uas made to absorb the retransmissions a loaded proxy sends (its own comment says why)."""
FRAUD_IP = "127.0.0.4"
FLOOD_DOMAIN = "flood.example"
ADMIN = f"http://{SIPHA_IP}:8080"

LEGIT_RATE = 100
LEGIT_SECONDS = 18
LEGIT_CALLS = LEGIT_RATE * LEGIT_SECONDS
LEGIT_SHARE = 0.99
FLOOD_START = 2.0
FLOOD_SECONDS = 12.0
FLOOD_RATE = 24_000
FLOODERS = 4
FLOOD_SOURCES = 64
MAX_TRANSACTIONS = 20_000
LINGER = 60.0
"""s the flooders keep their sockets open after the flood (until the bed closes): no ICMP errors."""
RSS_PER_TRANSACTION = 10
"""KiB of resident memory a transaction costs at most, with its share of the context, the messages
kept and the allocator's slack (interpreted; measured: about 9)."""
RSS_SLACK = 20 * 1024
"""KiB beyond max-transactions x RSS_PER_TRANSACTION: caches, the sources table, buffers."""


def rss_bound(max_transactions: int) -> int:
    """KiB sipha's RSS may grow by: what max-transactions lets it hold (memory bounded by the limit)."""
    return max_transactions * RSS_PER_TRANSACTION + RSS_SLACK


PDD_OK = 1.0
"""s: a call answered within this after its INVITE is served normally."""
RECOVERY_WITHIN = 1.0
"""s after the flood stopped from which every legitimate call must be served normally."""


def write_config(path: Path, max_transactions: int = MAX_TRANSACTIONS) -> Path:
    path.write_text(
        "\n".join(
            [
                "[proxy]",
                f'listen = ["udp:{SIPHA_IP}:{SIP_PORT}"]',
                f'record-route = "sip:{SIPHA_IP}:{SIP_PORT};lr"',
                "[admin]",
                f'listen = "{SIPHA_IP}:8080"',
                "[monitor]",
                "oos-check = 2",
                "[limits]",
                f'trusted = ["{CALLER_IP}"]',
                f"max-transactions = {max_transactions}",
                "[[pair]]",
                'name = "ha"',
                f'primary = "udp:{PRIMARY_IP}:{SIP_PORT}"',
                f'backup = "udp:127.0.0.3:{SIP_PORT}"',
                "serving = true",
                "[[pair]]",
                'name = "fraud"',
                f'primary = "udp:{FRAUD_IP}:{SIP_PORT}"',
                f'backup = "udp:127.0.0.5:{SIP_PORT}"',
                f'match = {{ domain = ["{FLOOD_DOMAIN}"] }}',
                "",
            ]
        ),
        encoding="utf-8",
    )
    return path


def start_sipha(ns: Namespace, max_transactions: int = MAX_TRANSACTIONS) -> RunningProxy:
    config = write_config(ns.directory / "sipha.toml", max_transactions)
    log = ns.directory / "sipha.log"
    process = ns.popen(sys.executable, "-m", "sipha", "run", "--config", str(config), log=log)
    proxy = RunningProxy(SIP_PORT, config, log, process, [])
    deadline = time.monotonic() + START_TIMEOUT
    needles = (
        f"primary udp:{PRIMARY_IP}:{SIP_PORT} is active",
        f"primary udp:{FRAUD_IP}:{SIP_PORT} is active",
    )
    while not all(needle in proxy.log_text() for needle in needles):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"sipha did not start (exit {process.poll()}):\n{proxy.log_text()[-4000:]}")
        time.sleep(0.05)
    return proxy


def start_sipp_server(ns: Namespace, ip: str, name: str, *scenario: str) -> None:
    assert SIPP is not None
    ns.popen(
        SIPP, *scenario, "-i", ip, "-p", str(SIP_PORT), "-aa", "-nostdin", log=ns.directory / f"{name}.out"
    )


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise LookupError("VmRSS")


class RssSampler:
    """VmRSS of a process every 0.2 s, in a thread, until :meth:`stop`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[int] = [rss_kib(pid)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.samples.append(rss_kib(self.pid))
            except (OSError, LookupError):
                return

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(5)
        self.samples.append(rss_kib(self.pid))
        return self.samples


def core_counters() -> dict[str, int]:
    with urllib.request.urlopen(f"{ADMIN}/status", timeout=10) as response:  # noqa: S310 - loopback
        document = json.loads(response.read())
    counters: dict[str, int] = document["counters"]
    return counters


def flood_sources(flooder: int) -> str:
    """The source IPs of flooder ``flooder``: FLOOD_SOURCES / FLOODERS addresses in 127.0.1.0/24."""
    share = FLOOD_SOURCES // FLOODERS
    return ",".join(f"127.0.1.{1 + flooder * share + n}" for n in range(share))


def run_flood(ns: Namespace, rate: float, duration: float) -> list[dict[str, float]]:
    """FLOODERS flooder processes at ``rate`` in all for ``duration`` s; what each counted, once done."""
    outputs = [ns.directory / f"flooder{n}.json" for n in range(FLOODERS)]
    flooders = [
        ns.popen(
            sys.executable,
            str(FLOODER),
            "--target",
            f"{SIPHA_IP}:{SIP_PORT}",
            "--sources",
            flood_sources(n),
            "--rate",
            str(rate / FLOODERS),
            "--seconds",
            str(duration),
            "--max",
            str(int(rate / FLOODERS * duration)),
            "--domain",
            FLOOD_DOMAIN,
            "--tag",
            f"f{n}",
            "--out",
            str(out),
            "--linger",
            str(LINGER),
            log=ns.directory / f"flooder{n}.log",
        )
        for n, out in enumerate(outputs)
    ]
    deadline = time.monotonic() + duration + 15
    while not all(out.exists() for out in outputs):
        assert time.monotonic() < deadline, "the flooders did not finish"
        assert all(p.poll() is None for p in flooders), "a flooder failed"
        time.sleep(0.05)
    return [json.loads(out.read_text()) for out in outputs]


def test_legitimate_calls_survive_a_flood_from_many_sources(netns: Namespace) -> None:
    start_sipp_server(netns, PRIMARY_IP, "member", "-sf", str(MEMBER))
    start_sipp_server(netns, FRAUD_IP, "fraud", "-sf", str(REJECT))
    proxy = start_sipha(netns)
    rss = RssSampler(proxy.process.pid)
    uac = start_uac(netns, LEGIT_CALLS, LEGIT_RATE, timeout=LEGIT_SECONDS + 40)
    time.sleep(FLOOD_START)
    reports = run_flood(netns, FLOOD_RATE, FLOOD_SECONDS)
    flood_over = datetime.now()  # SIPp's trace is in local wall time
    result = uac.wait()
    counters = netns.call(core_counters)
    samples = rss.stop()
    alive = proxy.process.poll() is None

    sent = sum(report["sent"] for report in reports)
    got_503 = sum(report["answered_503"] for report in reports)
    taken = sum(report["answered_other"] for report in reports)
    flood_seconds = max(report["seconds"] for report in reports)
    calls = calls_of(uac.trace())
    ok = result.successful  # SIPp's count: INVITE answered 200 and BYE answered 200
    after = [call for call in calls.values() if seconds(call.invited, flood_over) >= RECOVERY_WITHIN]
    late = [call for call in after if not call.ok or (call.post_dial_delay or 0.0) > PDD_OK]
    # Recovery: from when on every call placed after the flood was served normally.
    served = [
        (seconds(call.invited, flood_over), call.ok and (call.post_dial_delay or 0.0) <= PDD_OK)
        for call in calls.values()
        if seconds(call.invited, flood_over) >= 0.0
    ]
    recovery = max((at for at, ok in served if not ok), default=0.0)
    worst_during = max((call.post_dial_delay or 0.0 for call in calls.values()), default=0.0)
    kib = 1024
    print(
        f"\nFLOOD legit {ok}/{LEGIT_CALLS} calls ok ({ok / LEGIT_CALLS:.2%}; {result.failed} failed), "
        f"longest post-dial delay {worst_during:.2f} s; "
        f"flood {sent} INVITEs in {flood_seconds:.1f} s ({sent / flood_seconds:,.0f}/s from {FLOOD_SOURCES} "
        f"addresses, {FLOODERS} processes): {got_503} answered 503, {taken} taken on (100/403), "
        f"{sent - got_503 - taken} unanswered; sipha: {counters['overload_drops']} dropped unparsed, "
        f"{counters['overload_sheds']} shed 503, {counters.get('transactions_refused', 0)} refused at "
        f"max-transactions = {MAX_TRANSACTIONS}, {counters['requests_in']} requests parsed; "
        f"RSS start {samples[0] / kib:.0f} MiB, peak {max(samples) / kib:.0f} MiB, "
        f"end {samples[-1] / kib:.0f} MiB; after the flood: {len(after) - len(late)}/{len(after)} calls "
        f"placed from "
        f"{RECOVERY_WITHIN:g} s on answered within {PDD_OK:g} s (every call placed {recovery:.2f} s or "
        f"more after the flood served normally)"
    )
    assert alive, proxy.log_text()[-3000:]
    assert ok >= LEGIT_SHARE * LEGIT_CALLS, result.errors[-3000:]
    assert result.created == LEGIT_CALLS, result.stats
    assert counters["overload_drops"] > 0, "the flood was never dropped before it was parsed"
    assert got_503 + taken < sent, "every flood INVITE was answered: nothing was shed before parsing"
    assert max(samples) - samples[0] <= rss_bound(MAX_TRANSACTIONS), samples
    assert after, "no legitimate call was placed after the flood"
    assert late == [], [(call.call_id, call.final, call.post_dial_delay) for call in late[:10]]


LIMITED = 4_000
"""max-transactions of the second test: the untrusted sources' half (2,000) fills in seconds."""
SLOW_FLOOD_RATE = 400
"""New INVITEs/s that sipha takes on in full (not overloaded): each holds two transactions for
32 s (its 403 is retransmitted to a flooder that never ACKs, Timers G and H; Timer D)."""
SLOW_FLOOD_SECONDS = 8.0
GATEWAY_RATE = 20


def test_max_transactions_bounds_what_a_flood_below_capacity_holds(netns: Namespace) -> None:
    """A flood sipha keeps up with: admitted until half of max-transactions, then 503, counted,
    logged; the trusted gateway's calls still have the other half; memory stays bounded."""
    start_sipp_server(netns, PRIMARY_IP, "member", "-sf", str(MEMBER))
    start_sipp_server(netns, FRAUD_IP, "fraud", "-sf", str(REJECT))
    proxy = start_sipha(netns, LIMITED)
    rss = RssSampler(proxy.process.pid)
    calls = int(GATEWAY_RATE * SLOW_FLOOD_SECONDS)
    uac = start_uac(netns, calls, GATEWAY_RATE, timeout=SLOW_FLOOD_SECONDS + 30)
    reports = run_flood(netns, SLOW_FLOOD_RATE, SLOW_FLOOD_SECONDS)
    result = uac.wait()
    status = netns.call(status_document)
    samples = rss.stop()
    sent = sum(report["sent"] for report in reports)
    got_503 = sum(report["answered_503"] for report in reports)
    taken = sum(report["answered_other"] for report in reports)
    counters = status["counters"]
    in_flight = status.get("transactions_in_flight", status.get("gauges", {}).get("transactions_in_flight"))
    logged = [line for line in proxy.log_text().splitlines() if "max-transactions = 4000 reached" in line]
    kib = 1024
    print(
        f"\nFLOOD max-transactions = {LIMITED}: flood {sent} INVITEs at {SLOW_FLOOD_RATE}/s: "
        f"{taken} taken on, "
        f"{got_503} answered 503 ({counters.get('transactions_refused', 0)} refused at the limit, "
        f"{counters['overload_sheds']} shed); transactions alive at the end {in_flight}; gateway calls "
        f"{result.successful}/{calls} ok; RSS start {samples[0] / kib:.0f} MiB, "
        f"peak {max(samples) / kib:.0f} MiB; "
        f"log lines about the limit: {len(logged)}"
    )
    assert proxy.process.poll() is None, proxy.log_text()[-3000:]
    assert result.successful == calls, result.errors[-3000:]
    assert counters["transactions_refused"] > 0, "the limit was never reached"
    # Each INVITE taken on holds two transactions for the whole test: half the limit is 1/4 of them.
    assert taken <= LIMITED // 4, "the flood held more than half of max-transactions"
    assert 1 <= len(logged) <= 2, logged  # one line per 10 s at most
    assert max(samples) - samples[0] <= rss_bound(LIMITED), samples


def status_document() -> dict[str, Any]:
    with urllib.request.urlopen(f"{ADMIN}/status", timeout=10) as response:  # noqa: S310 - loopback
        document: dict[str, Any] = json.loads(response.read())
    return document
