"""HA round 2 in the fault bed: no call lost while the backup takes over, however the primary fails.

Each scenario runs in a network namespace of its own (chaos/faultbed.py): sipha
on 127.0.0.1:5060, the pair ``ha`` = primary 127.0.0.2:5060 / backup
127.0.0.3:5060 (``sipha simulate-server``), SIPp's ``uac`` on 127.0.0.10.  sipha's
monitor: ``oos-check = 1``, ``oos-force = 1``, ``failover-timeout = 1.0``,
``takeover-timeout = 6.0`` (while a pair that had an active member has none, its
requests are held for up to 6 s and both members probed every ~0.25 s; 503 and
event 40001 only when the window ends with no member).  Every case runs with
``[proxy] workers`` 1 and 2.  Which member answered a call is the host in the
Contact of its 200 (SIPp's message trace); times are wall clock (SIPp's trace,
sipha's and the simulators' logs, the test), all on this host.

* a) the primary is SIGKILLed 3 s into 2,000 calls at 200/s; the backup (primary
  mode) binds its port 0, 0.5, 2 or 5 s after the kill (its process starts
  earlier with ``--listen-delay``, so that Python's start-up time does not blur
  when the member is ready; until then sipha gets ICMP port unreachable):
  0 failed calls; the held calls reach the backup within one probe interval of
  it listening.
* b) the primary is killed and there is no backup: new calls (a Python UDP
  caller, one INVITE per 100 ms) are held, and get 503 + Retry-After no sooner
  than takeover-timeout after the kill (minus 0.5 s) and no later than
  takeover-timeout + failover-timeout; event 40001 then; later calls get 503 at once.
* c) the primary is partitioned (nftables, both directions: silence, no ICMP)
  under load, the backup switched to primary mode at that moment: 0 failed;
  the first call answered by the backup comes within failover-timeout + one
  probe interval (0.3 s) + SLACK of the partition.
* d) the same with asymmetric partitions: "to" (the primary gets nothing) and
  "from" (nothing is heard from it): 0 failed, same bound.
* e) the primary flaps (partitioned 3 s, reachable 3 s, for FLAP_DURATION s)
  under load, the backup stays silent: no call that began after sipha first
  noticed a partition fails (the calls in flight at that first detection are
  reported, not judged), SIPp's own failure count is no higher than the trace's
  failures before it, and no "split brain" line.
* f) the primary rings (180, 200 two seconds later) and is SIGKILLed with calls
  ringing; the backup is switched to primary mode at the kill: 0 failed, and
  every call that was ringing on the primary is answered by the backup.
* g) 50 forged datagrams/s with the backup's address as source (raw socket,
  chaos/forge.py) during 2,000 calls at 200/s, the real backup silent: 0 failed,
  every call answered by the primary, the pair never switched.
* h) an idle pair whose primary drops one INVITE or REGISTER (with its
  retransmissions) and keeps answering OPTIONS: that request, 3 s, then 20
  calls: no event 40001, no 503, no switch to the backup, 20/20 calls.

Each test prints one line (``pytest -s``): what it measured.  Run them with
``.venv/bin/pytest tests/chaos -s`` as root; ``SIPHA_CHAOS_LONG=1`` flaps for 60 s
and runs every scenario 5 times; ``SIPHA_CHAOS_TAKEOVER=off`` leaves
takeover-timeout out of sipha's configuration (a sipha without it; the bounds
asserted stay those of 6 s).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.chaos.faultbed import (
    BACKUP_IP,
    LONG,
    PRIMARY_IP,
    SIP_PORT,
    SIPHA_IP,
    Call,
    Direction,
    Member,
    Namespace,
    SippRun,
    active_line,
    answered_by,
    calls_of,
    chaos_marks,
    longest_post_dial_delay,
    seconds,
    sleep_until,
    start_member,
    start_sipha,
    start_uac,
    wait_count,
)
from tests.integration.support import RunningProxy, SippResult
from tests.integration.test_failover import PyCall, calls_while_down, first_503, log_lines, wait_for_line

pytestmark = chaos_marks()

REPEATED = True
"""In long mode (SIPHA_CHAOS_LONG=1) every test here runs 5 times (conftest.pytest_generate_tests)."""

OOS_CHECK = 1
OOS_FORCE = 1
FAILOVER_TIMEOUT = 1.0
TAKEOVER_TIMEOUT = 6.0
_TAKEOVER_SETTING = os.environ.get("SIPHA_CHAOS_TAKEOVER", f"{TAKEOVER_TIMEOUT}")
MONITOR: dict[str, object] = {
    "oos-check": OOS_CHECK,
    "oos-force": OOS_FORCE,
    "failover-timeout": FAILOVER_TIMEOUT,
    **({} if _TAKEOVER_SETTING == "off" else {"takeover-timeout": float(_TAKEOVER_SETTING)}),
}
PROBE_INTERVAL = 0.25
"""How often sipha probes both members while a pair has no active member (takeover-timeout)."""
SLACK = 0.2
"""Scheduling slack on a loaded 2-CPU machine: sipha's timers, SIPp, our nft call or signal."""

RATE = 200
CALLS = 2000  # 10 s at RATE
FAULT_AFTER = 3.0  # s into the SIPp run
RECV_TIMEOUT = 15.0
"""SIPp fails a call that waits longer than this for its next message (not at Timer C, 3 min)."""

FLAP_ON = 3.0
FLAP_OFF = 3.0
FLAP_DURATION = 60.0 if LONG else 20.0
FLAP_LEAD = 2.0  # calls before the first and after the last partition

RING = 2.0  # f: --answer-delay, 180 -> 200
RING_RATE = 50
RING_CALLS = 600

FORGED_RATE = 50
FORGED = 400  # 8 s at FORGED_RATE, inside the 10 s of calls
FORGE = Path(__file__).resolve().parent / "forge.py"

# Every case with 1 worker in `make test`; with 2 workers too in `make chaos` (marker "long":
# the hand-over between workers is exercised in `make test` by tests/integration).
WORKERS = pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.long)], ids=["w1", "w2"])


# ---------------------------------------------------------------------------- the pair, the calls


def start_pair(
    ns: Namespace,
    workers: int,
    *,
    primary_args: Iterable[str] = (),
    backup_mode: str | None = "backup",
    backup_args: Iterable[str] = (),
) -> tuple[RunningProxy, Member, Member | None]:
    """Primary (primary mode), sipha, backup (``backup_mode``; None: none); the primary active everywhere."""
    primary = start_member(ns, "primary", PRIMARY_IP, "primary", *primary_args)
    proxy = start_sipha(ns, workers=workers, monitor=MONITOR)
    backup = None if backup_mode is None else start_member(ns, "backup", BACKUP_IP, backup_mode, *backup_args)
    wait_count(proxy, active_line("primary", PRIMARY_IP), workers)
    return proxy, primary, backup


def uac(
    ns: Namespace,
    calls: int = CALLS,
    rate: float = RATE,
    *,
    recv_timeout: float = RECV_TIMEOUT,
    timeout: float = 60,
) -> SippRun:
    return start_uac(ns, calls, rate, "-recv_timeout", str(int(recv_timeout * 1000)), timeout=timeout)


def assert_all_ok(result: SippResult, calls: int, proxy: RunningProxy) -> None:
    assert result.created == calls, result.stats
    assert result.failed == 0, f"{result.errors[-3000:]}\n--- sipha.log:\n{proxy.log_text()[-3000:]}"
    assert result.successful == calls, result.stats


def ms(value: float) -> str:
    return "never" if value == float("inf") else f"{value * 1000:.0f} ms"


def report(case: str, workers: int, result: SippResult, calls: dict[str, Call], *figures: str) -> None:
    """One line: what the scenario measured."""
    failed_in_trace = sum(1 for call in calls.values() if not call.ok)
    print(
        f"\nCHAOS {case} workers={workers}: {result.successful} ok, {result.failed} failed of "
        f"{result.created} calls (trace: {failed_in_trace} not completed); " + "; ".join(figures)
    )


def first_via_backup(calls: dict[str, Call], fault: datetime) -> float:
    by_backup = answered_by(calls.values(), BACKUP_IP)
    return seconds(by_backup[0] if by_backup else None, fault)


# ---------------------------------------------------------------------------- a: the backup is ready late


@WORKERS
@pytest.mark.parametrize("ready_after", [0.0, 0.5, 2.0, 5.0], ids=lambda d: f"ready{d:g}s")
def test_a_backup_ready_late_after_primary_killed(netns: Namespace, workers: int, ready_after: float) -> None:
    proxy, primary, _ = start_pair(netns, workers, backup_mode=None)
    # The backup's process starts now and binds its port listen_in s after its "listening in" line;
    # the primary is killed ready_after s before that (about FAULT_AFTER s into the calls).
    listen_in = FAULT_AFTER + ready_after + 0.5
    backup = start_member(
        netns, "backup", BACKUP_IP, "primary", "--listen-delay", f"{listen_in:g}", wait=False
    )
    waiting = backup.logged_at("listening in")
    assert waiting is not None
    run = uac(netns)
    kill_at = waiting + timedelta(seconds=listen_in - ready_after)
    sleep_until(time.monotonic() + seconds(kill_at, datetime.now()))
    killed = datetime.now()
    primary.signal(signal.SIGKILL)
    result = run.wait()
    calls = calls_of(run.trace())
    ready = seconds(backup.listening_at(), killed)
    first = first_via_backup(calls, killed)
    longest = longest_post_dial_delay(calls.values())
    report(
        f"a) primary killed, backup listening {ready_after:g} s later",
        workers,
        result,
        calls,
        f"backup listening {ms(ready)} after the kill",
        f"first call via the backup {ms(first)} after the kill",
        f"longest post-dial delay {ms(longest)}",
    )
    assert abs(ready - ready_after) <= 0.3, f"the backup listened {ready:.3f} s after the kill"
    assert_all_ok(result, CALLS, proxy)
    # The held calls go to the backup at the first probe after it listens.
    assert first - ready <= PROBE_INTERVAL + SLACK, f"first via backup {first:.3f} s, ready {ready:.3f} s"
    # The longest wait of a held call: until the backup answers a probe, then its own way
    # through a busy 2-core machine (SIPp and three processes at 200 calls/s); a bound, not a
    # figure (the CHAOS line prints it): 5.97 s was seen for ready = 5.00 s with other tests
    # running beside CI.
    assert longest <= ready + PROBE_INTERVAL + 1.0, longest


# ---------------------------------------------------------------------------- b: no backup ever


@WORKERS
def test_b_no_backup_503_after_the_takeover_window(netns: Namespace, workers: int) -> None:
    proxy, primary, _ = start_pair(netns, workers, backup_mode=None)
    send_for = TAKEOVER_TIMEOUT + 1.5
    killed_clock = time.monotonic()
    killed = datetime.now()
    primary.signal(signal.SIGKILL)
    calls: list[PyCall] = netns.call(
        calls_while_down, SIP_PORT, killed_clock, send_for, 0.1, TAKEOVER_TIMEOUT + 1.0, timeout=60
    )
    unavailable = wait_for_line(proxy, "event 40001", after=killed, timeout=5)
    out_of_service = seconds(unavailable.at, killed)
    first = first_503(calls, killed_clock)
    held = [c.answered - c.sent for c in calls if c.answered is not None]
    later = [c for c in calls if c.sent - killed_clock >= out_of_service + 0.1]
    refused_at_once = [c for c in later if c.answered is not None and c.answered - c.sent < 0.3]
    print(
        f"\nCHAOS b) primary killed, no backup workers={workers}: {len(calls)} new calls in {send_for:g} s, "
        f"statuses {sorted({c.status or 0 for c in calls})}; first 503 {ms(first)} after the kill; "
        f"event 40001 {ms(out_of_service)} after it; longest hold {ms(max(held, default=0))}; "
        f"{len(refused_at_once)}/{len(later)} calls after 40001 refused at once"
    )
    assert calls
    assert [c.status for c in calls] == [503] * len(calls), [(c.status, c.answered) for c in calls]
    assert all(c.retry_after.isdigit() for c in calls), [c.retry_after for c in calls]
    assert first >= TAKEOVER_TIMEOUT - 0.5, f"a 503 {first:.3f} s after the kill: before the window ended"
    assert first <= TAKEOVER_TIMEOUT + FAILOVER_TIMEOUT + SLACK, first
    assert out_of_service >= TAKEOVER_TIMEOUT - 0.5, out_of_service
    assert max(held) <= TAKEOVER_TIMEOUT + 2 * SLACK, max(held)
    assert later, "no call was made after event 40001"
    assert len(refused_at_once) == len(later), [(c.sent - killed_clock, c.answered) for c in later]


# ---------------------------------------------------------------------------- c, d: partitions


def partition_under_load(ns: Namespace, workers: int, direction: Direction) -> None:
    """CALLS at RATE; FAULT_AFTER s in, the primary partitioned (``direction``), the backup made primary."""
    proxy, _, backup = start_pair(ns, workers)
    assert backup is not None
    run = uac(ns)
    time.sleep(FAULT_AFTER)
    fault = datetime.now()  # before the rule is in: the bound below is measured from the earliest moment
    ns.partition(PRIMARY_IP, direction)
    backup.signal(signal.SIGUSR1)
    result = run.wait()
    calls = calls_of(run.trace())
    dropped = ns.counter("dropped")
    first = first_via_backup(calls, fault)
    switched = next(
        (line for line in log_lines(proxy) if active_line("backup", BACKUP_IP) in line.message), None
    )
    report(
        f"{'c' if direction == 'both' else 'd'}) primary partitioned ({direction})",
        workers,
        result,
        calls,
        f"{dropped} packets dropped",
        f"sipha switched {ms(seconds(switched.at if switched else None, fault))} after the partition",
        f"first call via the backup {ms(first)} after it",
        f"longest post-dial delay {ms(longest_post_dial_delay(calls.values()))}",
        f"{len(answered_by(calls.values(), PRIMARY_IP))} answered by the primary",
    )
    assert dropped > 0, "the partition dropped nothing"
    assert_all_ok(result, CALLS, proxy)
    assert first <= FAILOVER_TIMEOUT + 0.3 + SLACK, f"first call via the backup {first:.3f} s after"


@WORKERS
def test_c_primary_partitioned(netns: Namespace, workers: int) -> None:
    partition_under_load(netns, workers, "both")


@WORKERS
@pytest.mark.parametrize("direction", ["to", "from"])
def test_d_primary_partitioned_one_way(netns: Namespace, workers: int, direction: Direction) -> None:
    partition_under_load(netns, workers, direction)


# ---------------------------------------------------------------------------- e: a flapping primary


@WORKERS
def test_e_flapping_primary(netns: Namespace, workers: int) -> None:
    proxy, _, _ = start_pair(netns, workers)
    total = FLAP_LEAD + FLAP_DURATION + FLAP_LEAD
    count = int(RATE * total)
    run = uac(netns, count, RATE, timeout=total + 60)
    began = time.monotonic()
    since = datetime.now()
    flaps = 0
    at = began + FLAP_LEAD
    while at + FLAP_ON <= began + FLAP_LEAD + FLAP_DURATION:
        sleep_until(at)
        netns.partition(PRIMARY_IP, "both")
        sleep_until(at + FLAP_ON)
        netns.heal()
        flaps += 1
        at += FLAP_ON + FLAP_OFF
    result = run.wait()
    calls = calls_of(run.trace())
    lines = [line for line in log_lines(proxy) if line.at >= since]
    unknown = [line for line in lines if "no active member" in line.message]
    detected = unknown[0].at if unknown else None
    failed = [c for c in calls.values() if not c.ok]
    failed_after = [c for c in failed if detected is not None and c.invited >= detected]
    log = proxy.log_text()
    report(
        f"e) primary flapping (partitioned {FLAP_ON:g} s, reachable {FLAP_OFF:g} s) for {FLAP_DURATION:g} s",
        workers,
        result,
        calls,
        f"{flaps} partitions, {netns.counter('dropped')} packets dropped",
        f"{len(unknown)} 'no active member' lines, the first {ms(seconds(detected, since) - FLAP_LEAD)} "
        "after the first partition",
        f"{len(failed) - len(failed_after)} calls in flight at the first detection not completed",
        f"{len(failed_after)} begun after it not completed",
        f"longest post-dial delay {ms(longest_post_dial_delay(calls.values()))}",
        f"split brain lines: {log.count('split brain')}",
    )
    assert result.created == count, result.stats
    assert detected is not None, f"sipha never noticed a partition:\n{log[-3000:]}"
    assert len(unknown) >= flaps, f"{flaps} partitions, {len(unknown)} noticed"
    assert not failed_after, [(c.call_id, c.invited, c.final, c.bye) for c in failed_after[:10]]
    assert result.failed <= len(failed) - len(failed_after), (result.failed, result.errors[-3000:])
    assert "split brain" not in log


# ---------------------------------------------------------------------------- f: ringing calls at the kill


@WORKERS
def test_f_ringing_calls_moved_to_the_backup(netns: Namespace, workers: int) -> None:
    ring = ("--answer-delay", f"{RING:g}")
    proxy, primary, backup = start_pair(netns, workers, primary_args=ring, backup_args=ring)
    assert backup is not None
    run = uac(netns, RING_CALLS, RING_RATE, recv_timeout=RECV_TIMEOUT + RING, timeout=90)
    time.sleep(FAULT_AFTER)
    killed = datetime.now()
    primary.signal(signal.SIGKILL)
    backup.signal(signal.SIGUSR1)
    result = run.wait()
    calls = calls_of(run.trace())
    rang_on_primary = [c for c in calls.values() if PRIMARY_IP in c.rang_from and c.answered_by != PRIMARY_IP]
    moved = [c for c in rang_on_primary if c.answered_by == BACKUP_IP]
    report(
        "f) primary killed with calls ringing",
        workers,
        result,
        calls,
        f"{len(rang_on_primary)} calls ringing on the primary at the kill, "
        f"{len(moved)} of them answered by the backup",
        f"first call via the backup {ms(first_via_backup(calls, killed))} after the kill",
        f"longest post-dial delay {ms(longest_post_dial_delay(calls.values()))}",
    )
    # About RING_RATE x RING calls ring at any moment: the kill must have caught some.
    assert len(rang_on_primary) >= RING_RATE * RING / 2, len(rang_on_primary)
    assert_all_ok(result, RING_CALLS, proxy)
    assert len(moved) == len(rang_on_primary)


# ---------------------------------------------------------------------------- g: forged datagrams


@WORKERS
def test_g_forged_requests_from_the_backup_do_not_switch(netns: Namespace, workers: int) -> None:
    proxy, _, _ = start_pair(netns, workers)
    netns.watch(
        "forged", f"ip saddr {BACKUP_IP} udp sport {SIP_PORT} ip daddr {SIPHA_IP} udp dport {SIP_PORT}"
    )
    run = uac(netns)
    time.sleep(1.0)
    forge_log = netns.directory / "forge.log"
    forger = netns.popen(
        sys.executable,
        str(FORGE),
        "--source",
        f"{BACKUP_IP}:{SIP_PORT}",
        "--target",
        f"{SIPHA_IP}:{SIP_PORT}",
        "--rate",
        str(FORGED_RATE),
        "--count",
        str(FORGED),
        "--duration",
        f"{FORGED / FORGED_RATE + 2:g}",
        log=forge_log,
    )
    result = run.wait()
    forger_exit = forger.wait(15)
    forged = netns.counter("forged")
    calls = calls_of(run.trace())
    by_primary = answered_by(calls.values(), PRIMARY_IP)
    by_backup = answered_by(calls.values(), BACKUP_IP)
    log = proxy.log_text()
    report(
        f"g) {FORGED_RATE} forged requests/s from the backup's address",
        workers,
        result,
        calls,
        f"{forged} forged datagrams reached sipha's input",
        f"{len(by_primary)} calls answered by the primary, {len(by_backup)} by the backup",
        f"switches to the backup: {log.count(active_line('backup', BACKUP_IP))}",
        f"longest post-dial delay {ms(longest_post_dial_delay(calls.values()))}",
    )
    assert forger_exit == 0, forge_log.read_text()
    assert forged == FORGED, forge_log.read_text()
    assert_all_ok(result, CALLS, proxy)
    assert len(by_primary) == CALLS
    assert active_line("backup", BACKUP_IP) not in log


# ---------------------------------------------------------------------------- h: one request unanswered


def _lone_request(method: str, stop: threading.Event, limit: float = 30.0) -> list[int]:
    """Send one ``method`` to sipha and collect the statuses of its responses until ``stop`` (or ``limit`` s).

    It is not retransmitted by this caller (sipha's client transaction retransmits
    it to the primary, which drops those too).  A final response to an INVITE is
    acknowledged (§17.1.1.3 hop by hop; a 2xx end to end through the Record-Route).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((SIPHA_IP, 0))
        sock.settimeout(0.05)
        here = f"{SIPHA_IP}:{sock.getsockname()[1]}"
        uri = f"sip:service@{SIPHA_IP}:{SIP_PORT}"
        call_id, branch = uuid.uuid4().hex, f"z9hG4bK{uuid.uuid4().hex}"

        def message(first: str, cseq: str, via_branch: str, to: str, *extra: str) -> bytes:
            return "\r\n".join(
                [
                    first,
                    f"Via: SIP/2.0/UDP {here};branch={via_branch};rport",
                    "Max-Forwards: 70",
                    f"From: <sip:lone@{here}>;tag=lone",
                    f"To: {to}",
                    f"Call-ID: {call_id}",
                    f"CSeq: {cseq}",
                    *extra,
                    "Content-Length: 0",
                    "",
                    "",
                ]
            ).encode()

        extra = [f"Contact: <sip:lone@{here}>", *(["Expires: 60"] if method == "REGISTER" else [])]
        sock.sendto(
            message(f"{method} {uri} SIP/2.0", f"1 {method}", branch, f"<{uri}>", *extra),
            (SIPHA_IP, SIP_PORT),
        )
        statuses: list[int] = []
        deadline = time.monotonic() + limit
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                text = sock.recv(65535).decode("utf-8", "replace")
            except TimeoutError:
                continue
            if not text.startswith("SIP/2.0 "):
                continue
            status = int(text.split(" ", 2)[1])
            statuses.append(status)
            if method != "INVITE" or status < 200:
                continue
            headers = dict(
                line.split(":", 1) for line in text.split("\r\n\r\n", 1)[0].split("\r\n")[1:] if ":" in line
            )
            to = headers.get("To", "").strip()
            if status >= 300:
                ack = message(f"ACK {uri} SIP/2.0", "1 ACK", branch, to)
            else:
                contact = headers.get("Contact", f"<{uri}>").strip().strip("<>")
                route = [f"Route: {headers['Record-Route'].strip()}"] if "Record-Route" in headers else []
                ack = message(f"ACK {contact} SIP/2.0", "1 ACK", f"z9hG4bK{uuid.uuid4().hex}", to, *route)
            sock.sendto(ack, (SIPHA_IP, SIP_PORT))
        return statuses


@WORKERS
@pytest.mark.parametrize("method", ["INVITE", "REGISTER"])
def test_h_one_unanswered_request_is_no_failover(netns: Namespace, workers: int, method: str) -> None:
    proxy, primary, _ = start_pair(netns, workers, primary_args=("--drop", f"{method}:1"))
    stop = threading.Event()
    lone = netns.spawn(_lone_request, method, stop)
    time.sleep(3.0)
    run = uac(netns, 20, 20)
    result = run.wait()
    stop.set()
    statuses = lone.result(10)
    calls = calls_of(run.trace())
    log = proxy.log_text()
    dropped = primary.log_text().count(f"dropping {method} 1 of 1")
    report(
        f"h) idle primary drops one {method}",
        workers,
        result,
        calls,
        f"that {method} got {statuses or 'no response'}",
        f"the primary dropped it {dropped}x (+{primary.log_text().count('retransmission')} retransmissions)",
        f"'no active member' lines: {log.count('no active member')}",
        f"event 40001: {log.count('event 40001')}",
        f"switches to the backup: {log.count(active_line('backup', BACKUP_IP))}",
    )
    assert dropped == 1, primary.log_text()[-2000:]
    assert 503 not in statuses
    assert "event 40001" not in log
    assert active_line("backup", BACKUP_IP) not in log
    assert_all_ok(result, 20, proxy)
    assert [c.final for c in calls.values()] == [200] * 20
    assert len(answered_by(calls.values(), PRIMARY_IP)) == 20
