#!/usr/bin/env python3
"""A soak with faults (issue 15, item 5): SIPp calls through sipha for a long time, a random fault a minute.

Everything runs in a network namespace this script creates (tests/chaos/faultbed.py's
``Namespace``: ``lo`` up, an nftables table for the faults, every process and rule
removed on every exit path, Ctrl-C and SIGTERM included):

* sipha on 127.0.0.1:5060 (``--sipha-python``: the compiled build when ``.venv-compiled``
  exists, as bench/proxies.py chooses; ``[proxy] workers`` = ``--workers``), the monitor
  as in tests/chaos (oos-check 1, oos-force 1, failover-timeout 1.0, takeover-timeout 6),
  ``[limits] trusted`` = the caller;
* the pair ``ha``: ``sipha simulate-server`` members on 127.0.0.2 (primary mode) and
  127.0.0.3 (backup mode: silent), as tests/integration/test_failover.py, whose member
  kill loses no call (the backup is switched to primary mode with SIGUSR1 at the kill);
* the pair ``fraud`` (domain flood.example): SIPp refusing every INVITE with 403
  (tests/chaos/reject.xml), where the flood's INVITEs go, as in tests/chaos/test_flood.py;
* SIPp on 127.0.0.10 running tests/scenarios/uac_call.xml (INVITE, 180, 200, ACK, a
  ``--call-ms`` pause, BYE, 200; retransmitted per RFC 3261) at ``--rate`` calls/s for
  ``--duration`` s, bounded by ``-m``, ``-timeout`` and a wait bound.

Every ``--every`` s one fault drawn by a seeded RNG (``--seed``, printed):

* ``loss``: ``--loss`` % of every datagram dropped at random for 10 s (nftables, input hook);
* ``kill``: the active member SIGKILLed, the other one switched to primary mode at once
  (the backup takes over); the killed one restarted 10-20 s later in backup mode: the
  classic rules (docs/design.md §2) keep the member that took over active while it answers,
  so the restarted one waits as the backup and is the one switched at the next kill;
* ``flood``: new INVITEs from 64 addresses (127.0.1.x, tests/chaos/flooder.py, 4 processes)
  at ``--flood-rate`` for 10 s, never ACKed.

The Markdown report (``--out``, and stdout): the command, the RNG seed, the fault timeline,
calls offered / completed / failed and why (SIPp's error file and per-second statistics,
each failure put down to the last fault before it), sipha's RSS (all its processes) at
start, peak and end, the pair's state changes from sipha's log, CPU per call.  Needs root
(ip netns, nft) and SIPp.  Usage::

    .venv/bin/python bench/chaos_soak.py [--duration 1800] [--every 60] [--rate R] [--seed N] [--out F.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from tests.chaos.faultbed import (  # noqa: E402
    BACKUP_IP,
    CALLER_IP,
    PRIMARY_IP,
    SIP_PORT,
    SIPHA_IP,
    Namespace,
    unusable,
)
from tests.integration.support import SIPP  # noqa: E402

from proxies import (  # noqa: E402 - after the path: bench/ is not a package
    COMPILED_PYTHON,
    cpu_delta,
    cpu_seconds,
    loadavg,
    log,
    process_tree,
    rss_kib,
    sipha_build,
)
from soak_analysis import (  # noqa: E402
    GRACE,
    LOG_LINE,
    RECV_TIMEOUT,
    Fault,
    epoch_of,
    late,
    pair_changes,
    sipp_failures,
    stat_rows,
    window_of,
)

START_TIMEOUT = 30.0
RSS_PERIOD = 2.0
SCENARIO = REPO / "tests" / "scenarios" / "uac_call.xml"
REJECT = REPO / "tests" / "chaos" / "reject.xml"
FLOODER = REPO / "tests" / "chaos" / "flooder.py"
FRAUD_IP = "127.0.0.4"
FRAUD_BACKUP_IP = "127.0.0.5"
FLOOD_DOMAIN = "flood.example"
ADMIN_PORT = 8080
MONITOR = {"oos-check": 1, "oos-force": 1, "failover-timeout": 1.0, "takeover-timeout": 6.0}
"""As tests/chaos/test_takeover.py, the bed the README's zero-lost-calls figures come from."""

DEFAULT_RATE = 800
"""calls/s: about 40 % of this bed's capacity on the 2-core machine.  bench/proxies.py's ladder
(README, Performance) sustains 9,000 calls/s with SIPp members; here the member is sipha's own
simulate-server and SIPp runs a retransmitting scenario, and on 2026-12-03 (load average 2.2
from other runs) 20 s without faults gave 0 failed at 1,000 calls/s and 154 of 40,000 failed at
2,000 (the pair's OPTIONS answers came late: sipha re-probed 5 times): 50 % of ~2,000 is 1,000,
lowered for the loaded machine (bench/README.md, chaos_soak.py)."""
FAULT_SECONDS = 10.0
RESTART_AFTER = (10.0, 20.0)
FAULT_KINDS = ("loss", "kill", "flood")
FLOODERS = 4
FLOOD_SOURCES = 64
FLOOD_LINGER = 60.0
"""s the flooders keep their ports open after their burst (as tests/chaos/test_flood.py): sipha
retransmits the final responses of the INVITEs it took on until Timer H (32 s, later when it lags);
a closed port would answer each with an ICMP error, a different fault (README, the flood row)."""


@dataclass
class Member:
    name: str
    ip: str
    process: subprocess.Popen[bytes]
    starts: int = 1


class Bed:
    """sipha, the pairs and the flooders' target in namespace ``ns``."""

    def __init__(self, ns: Namespace, python: str, workers: int) -> None:
        self.ns = ns
        self.python = python
        self.workers = workers
        self.members: dict[str, Member] = {}
        self.active = "primary"
        config = ns.directory / "sipha.toml"
        config.write_text(sipha_config(workers), encoding="utf-8")
        self.log = ns.directory / "sipha.log"
        self.start_member("primary", PRIMARY_IP, "primary")
        self.start_member("backup", BACKUP_IP, "backup")
        assert SIPP is not None
        ns.popen(SIPP, "-sf", str(REJECT), "-i", FRAUD_IP, "-p", str(SIP_PORT), "-aa", "-nostdin",
                 log=ns.directory / "fraud.out")  # fmt: skip
        self.sipha = ns.popen(python, "-m", "sipha", "run", "--config", str(config), log=self.log)
        needles = [
            f"primary udp:{PRIMARY_IP}:{SIP_PORT} is active",
            f"primary udp:{FRAUD_IP}:{SIP_PORT} is active",
        ]
        self.wait(
            lambda: all(needle in self.log_text() for needle in needles), "sipha and both pairs", self.sipha
        )

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def wait(self, condition: Callable[[], bool], what: str, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not condition():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} not ready (exit {process.poll()}); see {self.ns.directory}")
            time.sleep(0.05)

    def start_member(self, name: str, ip: str, mode: str) -> Member:
        """``sipha simulate-server`` on ``ip``:5060 in ``mode``, once it listens."""
        starts = self.members[name].starts + 1 if name in self.members else 1
        path = self.ns.directory / f"{name}-{starts}.log"
        process = self.ns.popen(self.python, "-m", "sipha", "simulate-server", "--listen",
                                f"udp:{ip}:{SIP_PORT}", "--mode", mode, log=path)  # fmt: skip

        def listening() -> bool:
            return path.exists() and "simulated server listening" in path.read_text(errors="replace")

        self.wait(listening, f"member {name}", process)
        self.members[name] = Member(name, ip, process, starts)
        return self.members[name]

    def pids(self) -> list[int]:
        return process_tree(self.sipha.pid)


def sipha_config(workers: int) -> str:
    return "\n".join(
        [
            "# generated by bench/chaos_soak.py",
            "[proxy]",
            f'listen = ["udp:{SIPHA_IP}:{SIP_PORT}"]',
            f'record-route = "sip:{SIPHA_IP}:{SIP_PORT};lr"',
            f"workers = {workers}",
            "[admin]",
            f'listen = "{SIPHA_IP}:{ADMIN_PORT}"',
            "[monitor]",
            *(f"{key} = {value}" for key, value in MONITOR.items()),
            "[limits]",
            f'trusted = ["{CALLER_IP}"]',
            "[[pair]]",
            'name = "ha"',
            f'primary = "udp:{PRIMARY_IP}:{SIP_PORT}"',
            f'backup = "udp:{BACKUP_IP}:{SIP_PORT}"',
            "serving = true",
            "[[pair]]",
            'name = "fraud"',
            f'primary = "udp:{FRAUD_IP}:{SIP_PORT}"',
            f'backup = "udp:{FRAUD_BACKUP_IP}:{SIP_PORT}"',
            f'match = {{ domain = ["{FLOOD_DOMAIN}"] }}',
            "",
        ]
    )


# --------------------------------------------------------------------------- faults


def loss_burst(bed: Bed, fault: Fault, percent: int) -> None:
    before = bed.ns.counter("dropped")
    bed.ns.loss(percent)
    try:
        time.sleep(FAULT_SECONDS)
    finally:
        bed.ns.heal()
    fault.end = time.time()
    fault.detail = (
        f"{percent} % loss for {FAULT_SECONDS:g} s: {bed.ns.counter('dropped') - before:,} datagrams dropped"
    )


def kill_and_restart(bed: Bed, fault: Fault, rng: random.Random) -> None:
    """SIGKILL the active member, switch the other to primary mode; restart the killed one 10-20 s later."""
    victim = bed.members[bed.active]
    other = bed.members["backup" if bed.active == "primary" else "primary"]
    victim.process.send_signal(signal.SIGKILL)
    other.process.send_signal(signal.SIGUSR1)
    bed.active = other.name
    victim.process.wait(5)
    down = rng.uniform(*RESTART_AFTER)
    time.sleep(down)
    bed.start_member(victim.name, victim.ip, "backup")
    fault.end = time.time()
    fault.detail = (
        f"{victim.name} ({victim.ip}) SIGKILLed, {other.name} ({other.ip}) switched to primary mode;"
        f" {victim.name} restarted in backup mode {down:.1f} s later"
    )


def flood_burst(bed: Bed, fault: Fault, rate: int, index: int) -> None:
    share = FLOOD_SOURCES // FLOODERS
    outputs = [bed.ns.directory / f"flood{index}-{n}.json" for n in range(FLOODERS)]
    processes = []
    for n, out in enumerate(outputs):
        sources = ",".join(f"127.0.1.{1 + n * share + k}" for k in range(share))
        args = ["--target", f"{SIPHA_IP}:{SIP_PORT}", "--sources", sources, "--rate", str(rate / FLOODERS)]
        args += ["--seconds", str(FAULT_SECONDS), "--max", str(int(rate / FLOODERS * FAULT_SECONDS))]
        args += ["--domain", FLOOD_DOMAIN, "--tag", f"f{index}x{n}", "--out", str(out)]
        args += ["--linger", str(FLOOD_LINGER)]
        log_file = bed.ns.directory / f"flood{index}-{n}.log"
        processes.append(bed.ns.popen(sys.executable, str(FLOODER), *args, log=log_file))
    deadline = time.monotonic() + FAULT_SECONDS + 20
    while not all(out.exists() for out in outputs) and time.monotonic() < deadline:
        if any(p.poll() not in (None, 0) for p in processes):
            break
        time.sleep(0.1)
    fault.end = time.time()
    reports = [json.loads(out.read_text()) for out in outputs if out.exists()]
    sent = sum(int(r["sent"]) for r in reports)
    got_503 = sum(int(r["answered_503"]) for r in reports)
    taken = sum(int(r["answered_other"]) for r in reports)
    fault.detail = (
        f"{sent:,} INVITEs from {FLOOD_SOURCES} addresses in {FAULT_SECONDS:g} s (asked {rate:,}/s;"
        f" {len(reports)}/{FLOODERS} flooders reported): {got_503:,} answered 503, {taken:,} taken on"
        f" (the fraud member's 403), {sent - got_503 - taken:,} unanswered"
    )


# --------------------------------------------------------------------------- measurements


class RssSampler:
    """Sum of VmRSS over sipha's processes every RSS_PERIOD s, in a thread."""

    def __init__(self, bed: Bed) -> None:
        self.bed = bed
        self.samples: list[tuple[float, int, int]] = []  # (time, KiB, processes)
        self.sample()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self) -> None:
        pids = self.bed.pids()
        self.samples.append((time.time(), rss_kib(pids)[0], len(pids)))

    def _run(self) -> None:
        while not self._stop.wait(RSS_PERIOD) and self.bed.sipha.poll() is None:
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(RSS_PERIOD * 2)
        if self.bed.sipha.poll() is None:
            self.sample()


def status_counters(ns: Namespace) -> dict[str, int]:
    def fetch() -> dict[str, int]:
        url = f"http://{SIPHA_IP}:{ADMIN_PORT}/status"
        with urllib.request.urlopen(url, timeout=10) as response:
            counters: dict[str, int] = json.loads(response.read())["counters"]
        return counters

    try:
        return ns.call(fetch, timeout=15)
    except (OSError, TimeoutError, KeyError, ValueError):
        return {}


# --------------------------------------------------------------------------- the run


@dataclass
class Soak:
    command: str
    seed: int
    options: argparse.Namespace
    build: str
    workdir: Path
    started: float = 0.0
    ended: float = 0.0
    load_start: str = ""
    load_end: str = ""
    faults: list[Fault] = field(default_factory=list)
    stats: dict[str, str] = field(default_factory=dict)
    failures: list[tuple[float, str]] = field(default_factory=list)
    periodic_failed: list[tuple[float, int]] = field(default_factory=list)
    rss: list[tuple[float, int, int]] = field(default_factory=list)
    cpu: float = 0.0
    changes: list[str] = field(default_factory=list)
    problems: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def run_soak(soak: Soak) -> None:
    options = soak.options
    rng = random.Random(soak.seed)
    calls = int(options.rate * options.duration)
    with Namespace(soak.workdir) as ns:
        log(f"namespace {ns.name}, work directory {soak.workdir}")
        bed = Bed(ns, str(options.sipha_python), options.workers)
        rss = RssSampler(bed)
        cpu0 = cpu_seconds(bed.pids())
        stat_file, error_file = soak.workdir / "uac_stats.csv", soak.workdir / "uac_errors.log"
        bound = options.duration + RECV_TIMEOUT + 60
        assert SIPP is not None
        uac = ns.popen(
            SIPP, "-sf", str(SCENARIO), f"{SIPHA_IP}:{SIP_PORT}", "-i", CALLER_IP, "-p", str(SIP_PORT),
            "-m", str(calls), "-r", str(options.rate), "-d", str(options.call_ms),
            "-recv_timeout", str(int(RECV_TIMEOUT * 1000)), "-timeout", f"{int(bound)}s",
            "-buff_size", str(4 << 20), "-nostdin", "-trace_stat", "-stf", str(stat_file), "-fd", "1",
            "-trace_err", "-error_file", str(error_file), log=soak.workdir / "uac.out",
        )  # fmt: skip
        soak.started, begun = time.time(), time.monotonic()
        soak.load_start = loadavg()
        log(
            f"SIPp: {calls:,} calls at {options.rate}/s; a fault every {options.every:g} s (seed {soak.seed})"
        )
        index = 1
        try:
            while options.every > 0 and index * options.every + RESTART_AFTER[1] + 5 <= options.duration:
                due = begun + index * options.every
                while time.monotonic() < due and uac.poll() is None and bed.sipha.poll() is None:
                    time.sleep(min(0.5, max(0.0, due - time.monotonic())))
                if uac.poll() is not None or bed.sipha.poll() is not None:
                    soak.notes.append(f"SIPp exited {uac.poll()}, sipha {bed.sipha.poll()}: faults stopped")
                    break
                fault = Fault(rng.choice(options.faults), time.time())
                log(f"fault {index}: {fault.kind} at +{fault.start - soak.started:.0f} s")
                if fault.kind == "loss":
                    loss_burst(bed, fault, options.loss)
                elif fault.kind == "kill":
                    kill_and_restart(bed, fault, rng)
                else:
                    flood_burst(bed, fault, options.flood_rate, index)
                log(f"  {fault.detail}")
                soak.faults.append(fault)
                index += 1
            try:
                uac.wait(max(1.0, bound + 15 - (time.monotonic() - begun)))
            except subprocess.TimeoutExpired:
                soak.notes.append("SIPp did not end within its bound: killed")
                uac.kill()
        except KeyboardInterrupt:
            soak.notes.append("interrupted: the report covers what ran")
            log("interrupted: stopping")
        finally:
            soak.ended = time.time()
            soak.load_end = loadavg()
            if bed.sipha.poll() is None:
                soak.cpu = cpu_delta(cpu0, cpu_seconds(bed.pids()))[0]
                soak.counters = status_counters(ns)
            else:
                soak.notes.append(f"sipha exited with {bed.sipha.returncode}")
            rss.stop()
            soak.rss = rss.samples
            (soak.workdir / "rss.csv").write_text(
                "".join(f"{at - soak.started:.1f},{kib},{processes}\n" for at, kib, processes in rss.samples)
            )
    rows = stat_rows(stat_file)
    soak.stats = rows[-1] if rows else {}
    for row in rows:  # a receive timeout fails a call RECV_TIMEOUT s after what went wrong
        if row.get("CurrentTime"):
            at, timeouts = epoch_of(row["CurrentTime"]), int(row.get("FailedTimeoutOnRecv(P)", "0") or 0)
            soak.periodic_failed.append((at, int(row.get("FailedCall(P)", "0") or 0) - timeouts))
            soak.periodic_failed.append((at - RECV_TIMEOUT, timeouts))
    soak.failures = sipp_failures(error_file)
    text = bed.log_text()
    soak.changes = pair_changes(text, soak.started)
    soak.problems = sum(
        1 for _stamp, _ms, level, _m in LOG_LINE.findall(text) if level in ("WARNING", "ERROR", "CRITICAL")
    )
    for at, count in soak.periodic_failed:
        if count and (window := window_of(soak.faults, at)) is not None:
            window.failed += count
    for at, cause in soak.failures:
        if (window := window_of(soak.faults, at)) is not None:
            window.causes[cause] += 1
            window.late += late(window, at)


def report(soak: Soak) -> str:
    options, s = soak.options, soak.stats
    offered = int(options.rate * options.duration)
    created = int(s.get("TotalCallCreated", 0) or 0)
    ok = int(s.get("SuccessfulCall(C)", 0) or 0)
    failed = int(s.get("FailedCall(C)", 0) or 0)
    wall = soak.ended - soak.started
    lines = [
        "## sipha soak with faults (bench/chaos_soak.py)",
        "",
        (
            f"- run: {datetime.datetime.fromtimestamp(soak.started).isoformat(timespec='seconds')},"
            f" {wall:.0f} s; load average at start {soak.load_start}, at end {soak.load_end}"
        ),
        f"- command: `{soak.command}`",
        (
            f"- seed: **{soak.seed}**; a fault every {options.every:g} s: loss {options.loss} % for"
            f" {FAULT_SECONDS:g} s, active member SIGKILLed (restarted {RESTART_AFTER[0]:g}-"
            f"{RESTART_AFTER[1]:g} s later in backup mode), flood at {options.flood_rate:,} INVITEs/s"
            f" for {FAULT_SECONDS:g} s"
        ),
        f"- sipha: {soak.build}, `[proxy] workers = {options.workers}`, [monitor] "
        + ", ".join(f"{k} = {v}" for k, v in MONITOR.items())
        + f"; members `sipha simulate-server`; SIPp uac_call.xml at {options.rate:,} calls/s,"
        f" {options.call_ms} ms calls, -recv_timeout {RECV_TIMEOUT:g} s",
        f"- work directory (every log, SIPp's statistics and errors): {soak.workdir}",
        *(f"- note: {note}" for note in soak.notes),
        "",
        "### Calls",
        "",
        "| offered | created | completed | failed | not started |",
        "|---:|---:|---:|---:|---:|",
        (
            f"| {offered:,} | {created:,} | {ok:,} ({100 * ok / max(offered, 1):.3f} %) | {failed:,} |"
            f" {max(0, offered - created):,} |"
        ),
        "",
        "### Fault timeline",
        "",
        (
            "Failed calls are put down to the last fault before SIPp failed them (from 1 s before it until"
            " 1 s before the next one; SIPp's per-second statistics; a receive timeout counts from"
            f" {RECV_TIMEOUT:g} s before it fired), causes from its error file, and how"
            f" many of those came more than {GRACE:g} s after the fault's end (SIPp's -recv_timeout"
            f" is {RECV_TIMEOUT:g} s): sipha still recovering."
        ),
        "",
        "| # | at | fault | what happened | failed calls | causes | of which late |",
        "|---:|---:|---|---|---:|---|---:|",
    ]
    for n, fault in enumerate(soak.faults, 1):
        causes = ", ".join(f"{cause}: {count}" for cause, count in fault.causes.most_common()) or "-"
        lines.append(
            f"| {n} | +{fault.start - soak.started:.0f} s | {fault.kind} | {fault.detail} |"
            f" {fault.failed:,} | {causes} | {fault.late:,} |"
        )
    outside = sum(count for at, count in soak.periodic_failed if count and window_of(soak.faults, at) is None)
    quiet = Counter(cause for at, cause in soak.failures if window_of(soak.faults, at) is None)
    every_cause = Counter(cause for _at, cause in soak.failures)
    lines += [
        "",
        f"Before the first fault: {outside:,} failed"
        + (f" ({', '.join(f'{c}: {n}' for c, n in quiet.most_common())})" if quiet else ""),
        "",
        "All failure causes (SIPp's error file): "
        + (", ".join(f"{c}: {n:,}" for c, n in every_cause.most_common()) or "none"),
        "",
        "### sipha",
        "",
    ]
    if soak.rss:
        start, peak, end = soak.rss[0], max(soak.rss, key=lambda r: r[1]), soak.rss[-1]
        lines.append(
            f"- RSS (VmRSS summed over its {start[2]} processes, every {RSS_PERIOD:g} s): start"
            f" {start[1] / 1024:.0f} MiB, peak {peak[1] / 1024:.0f} MiB (at +{peak[0] - soak.started:.0f} s),"
            f" end {end[1] / 1024:.0f} MiB"
        )
    if created:
        lines.append(
            f"- CPU: {soak.cpu:.1f} s over the run (all processes), {1000 * soak.cpu / created:.3f} ms"
            " per call created (the flood's and the probes' work included)"
        )
    keys = ("requests_in", "overload_drops", "overload_sheds", "transactions_refused")
    if soak.counters:
        lines.append(
            "- /status counters at the end (one worker's, the one that answered): "
            + ", ".join(f"{k} {soak.counters[k]:,}" for k in keys if k in soak.counters)
        )
    lines.append(f"- WARNING/ERROR lines in sipha.log: {soak.problems:,}")
    lines += [
        "",
        "Pair state changes (sipha.log, every worker's line; times from the start of SIPp's calls):",
        "",
    ]
    lines += [f"- {change}" for change in soak.changes[:200]] or ["- none"]
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=1800.0, help="s of calls (%(default)s)")
    parser.add_argument("--every", type=float, default=60.0, help="s between faults; 0: none (%(default)s)")
    parser.add_argument("--rate", type=int, default=DEFAULT_RATE, help="calls/s (%(default)s)")
    parser.add_argument("--seed", type=int, help="the faults' RNG seed (default: drawn and printed)")
    parser.add_argument("--workers", type=int, default=2, help="sipha's [proxy] workers (%(default)s)")
    parser.add_argument(
        "--loss", type=int, default=10, help="%% of datagrams lost in a loss burst (%(default)s)"
    )
    parser.add_argument(
        "--faults",
        type=lambda text: tuple(text.split(",")),
        default=FAULT_KINDS,
        help=f"the kinds of fault drawn from, comma-separated (default: {','.join(FAULT_KINDS)})",
    )
    parser.add_argument("--flood-rate", type=int, default=10_000, help="INVITEs/s of a flood (%(default)s)")
    parser.add_argument(
        "--call-ms", type=int, default=1000, help="ms between a call's ACK and BYE (%(default)s)"
    )
    parser.add_argument(
        "--sipha-python",
        type=Path,
        default=COMPILED_PYTHON if COMPILED_PYTHON.exists() else Path(sys.executable),
        help="the Python that runs sipha and the members (default: %(default)s)",
    )
    parser.add_argument("--workdir", type=Path, help="where the logs go (default: a new /tmp/sipha-soak-*)")
    parser.add_argument("--out", type=Path, help="also write the Markdown report here")
    options = parser.parse_args()
    if not options.faults or not set(options.faults) <= set(FAULT_KINDS):
        parser.error(f"--faults: a comma-separated subset of {','.join(FAULT_KINDS)}")
    if not 0 < options.rate <= 20_000 or options.duration <= 0 or not 0 <= options.loss <= 100:
        parser.error("--rate 1-20000, --duration > 0, --loss 0-100")
    if (reason := unusable()) is not None or SIPP is None:
        sys.exit(f"cannot run: {reason or 'sipp not installed'}")
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(1 << 31)
    print(f"seed {seed}", flush=True)
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="sipha-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    if options.seed is None:
        command += f" --seed {seed}"

    def interrupted(signum: int, _frame: object) -> None:  # SIGTERM/SIGHUP: unwind through the finally blocks
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    signal.signal(signal.SIGINT, interrupted)  # also when started in the background (SIGINT ignored)
    soak = Soak(command, seed, options, sipha_build(options.sipha_python), workdir)
    try:
        run_soak(soak)
    except KeyboardInterrupt:
        soak.notes.append("interrupted while starting")
    text = report(soak)
    print()
    print(text)
    if options.out:
        options.out.write_text(text + "\n", encoding="utf-8")
        log(f"written to {options.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
