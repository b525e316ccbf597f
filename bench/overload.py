#!/usr/bin/env python3
"""Overload at 2x capacity, side by side: sipha and Kamailio each held to a share of one core.

On a 2-core machine SIPp and its members saturate before a whole core's worth of proxy
does, so 2x a proxy's capacity cannot be offered honestly from the same box.  Here the
proxy under test and all its processes run on core 0 (``taskset``, as ``bench/proxies.py
--pin``: sipha with 1 worker, Kamailio with 1 child) *inside a cgroup with a CPU quota*
(``--cpu-limit 0.4``: 40 ms of CPU per 100 ms, ``bench/cpulimit.py``); SIPp, the members
and this harness run on core 1.  For each proxy:

1. **capacity C**: a short ladder (``--rates``, ``--ladder-duration`` s each) of SIPp's
   ``uac`` through the proxy to a ``uas -aa`` primary (an idle backup beside it);
   C = the highest rate with <= 1 % failed calls;
2. **overload**: a fresh proxy (nothing left over from the ladder), then ``--factor`` x C
   (2x) for ``--duration`` s (30), while the pair's state is read from sipha's ``/status``
   (every 0.5 s) and its log (pair events: unknown, 40001, active again).

Reported per proxy: calls completed per second against C (the issue's goal: >= 0.9),
failed calls by cause and by message (SIPp's error file: a new INVITE answered 503 is shed,
an INVITE timed out was dropped or lost, a BYE answered 503 is a call up refused: goal 0),
the pair's states over the run (goal: active throughout), the proxy's CPU and how long the
quota held it back, datagrams dropped.  UDP only.  Usage (as root, after ``make setup
compiled``)::

    .venv/bin/python bench/overload.py [--cpu-limit 0.4] [--rates 400,600,800,1000]
                                       [--duration 30] [--proxies sipha,kamailio] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import proxies
from cpulimit import CpuLimit, CpuLimitUnavailable, Hierarchy, find_hierarchy
from proxies import (
    COMPILED_PYTHON,
    HOST,
    OK_FAILED_PCT,
    PROXY_CPU,
    STOP_FAILED_PCT,
    Bed,
    Sipha,
    Step,
    bench_bed,
    check_kamailio_cfg,
    ensure_installed,
    fmt_ms,
    loadavg,
    log,
    machine,
    max_ok,
    measure_step,
    sipha_build,
    step_row,
    warm_up,
)
from sipperrors import failures_by_message

PROXY_CORE = 0
HARNESS_CORE = 1
DEFAULT_LIMIT = 0.4
PER_CORE_GUESS = 2_200
"""calls/s one whole core carries through either proxy here (README, "Per core"): the default
ladder spans 0.45-1.6x of it times the share."""
LADDER_SHARES = (0.45, 0.6, 0.75, 0.9, 1.05, 1.25, 1.6)
EXTRA_STEPS = 6
"""Steps added above ``--rates`` (each 1.25x the last) while the top one still passes."""
GOAL_COMPLETED = 0.9
MAX_DURATION = 600.0
STATUS_EVERY = 0.5
PAIR_LOG = {
    "unknown": "no active member, probing both",
    "40001": "event 40001",
    "active again": "is active (",
    "overloaded": "overloaded:",
}
"""What sipha logs about its pair and its load (sipha.ha.events, sipha.dispatch)."""


# --------------------------------------------------------------------------- the pair's state


class PairWatcher:
    """Reads sipha's ``/status`` every 0.5 s in a thread: each pair's state, and when it changed."""

    def __init__(self, admin_port: int) -> None:
        self.url = f"http://{HOST}:{admin_port}/status"
        self.states: Counter[str] = Counter()
        self.changes: list[str] = []
        self.first: dict[str, Any] = {}
        self.last: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pair-watcher", daemon=True)
        self._start = time.monotonic()

    def read(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.url, timeout=2) as response:  # noqa: S310 - http://127.0.0.1
                document: dict[str, Any] = json.load(response)
                return document
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def _run(self) -> None:
        current = ""
        while not self._stop.is_set():
            document = self.read()
            if document is None:
                state = "no answer from /status"
            else:
                self.first = self.first or document
                self.last = document
                state = ", ".join(f"{p['name']} {p['state']}" for p in document.get("pairs", []))
            self.states[state] += 1
            if state != current:
                self.changes.append(f"{time.monotonic() - self._start:.1f} s: {state}")
                current = state
            self._stop.wait(STATUS_EVERY)

    def start(self) -> None:
        self.first = self.read() or {}
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.last = self.read() or self.last


def counter_delta(first: dict[str, Any], last: dict[str, Any], *words: str) -> dict[str, int]:
    """Core counters of ``/status`` whose name holds any of ``words``: last minus first."""
    before, after = first.get("counters") or {}, last.get("counters") or {}
    return {
        key: int(value) - int(before.get(key, 0))
        for key, value in after.items()
        if isinstance(value, int) and any(word in key for word in words)
    }


def options_delta(first: dict[str, Any], last: dict[str, Any]) -> dict[str, int]:
    """The pair's OPTIONS counters (sent, answered, failed) over the run, summed over pairs."""

    def total(document: dict[str, Any]) -> Counter[str]:
        out: Counter[str] = Counter()
        for pair in document.get("pairs", []):
            out.update(pair.get("counters") or {})
        return out

    before, after = total(first), total(last)
    return {key: after[key] - before[key] for key in after if key.startswith("options")}


def log_lines(path: Path, start: int, end: int) -> list[str]:
    """The lines of ``path`` between byte offsets ``start`` and ``end``."""
    with contextlib.suppress(OSError), path.open("rb") as handle:
        handle.seek(start)
        return handle.read(max(0, end - start)).decode(errors="replace").splitlines()
    return []


# --------------------------------------------------------------------------- one proxy


@dataclass
class Overload:
    proxy: str
    share: float
    ladder: list[Step] = field(default_factory=list)
    capacity: int = 0
    step: Step | None = None
    duration: float = 0.0
    causes: Counter[str] = field(default_factory=Counter)
    pair_states: Counter[str] = field(default_factory=Counter)
    pair_changes: list[str] = field(default_factory=list)
    pair_log: Counter[str] = field(default_factory=Counter)
    pair_log_lines: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    options: dict[str, int] = field(default_factory=dict)
    throttled_s: float = 0.0
    error: str = ""

    @property
    def completed_cps(self) -> float:
        return self.step.successful / self.duration if self.step and self.duration else 0.0

    @property
    def completed_share(self) -> float:
        return self.completed_cps / self.capacity if self.capacity else 0.0

    def count(self, prefix: str, what: str = "") -> int:
        return sum(n for cause, n in self.causes.items() if cause.startswith(prefix) and what in cause)


def check_inside(bed: Bed, limit: CpuLimit) -> None:
    """Every process of the proxy is in the group (else the run would measure nothing)."""
    outside = set(bed.proxy.pids()) - set(limit.pids())
    if outside:
        raise RuntimeError(f"{bed.proxy.name}: processes {sorted(outside)} outside {limit.path}")
    log(f"  {bed.proxy.name}: {len(limit.pids())} processes in {limit.path}, on core {PROXY_CORE}")


def run_proxy(
    name: str,
    limit: CpuLimit,
    root: Path,
    *,
    rates: list[int],
    ladder_duration: float,
    factor: float,
    duration: float,
) -> Overload:
    """The ladder, then a fresh proxy offered ``factor`` x its capacity for ``duration`` s."""
    result = Overload(name, limit.share, duration=duration)
    PROXY_CPU[:] = limit.wrap(["taskset", "-c", str(PROXY_CORE)])
    workdir = root / name / "ladder"
    workdir.mkdir(parents=True)
    with bench_bed(name, "udp", workdir, None) as bed:
        warm_up(bed, workdir, time.monotonic() + 30)
        check_inside(bed, limit)
        todo = list(rates)
        while todo:
            step = measure_step(bed, workdir, todo.pop(0), ladder_duration)
            result.ladder.append(step)
            if step.note or step.failed_pct > STOP_FAILED_PCT:
                break
            if (
                not todo
                and step.failed_pct <= OK_FAILED_PCT
                and len(result.ladder) < len(rates) + EXTRA_STEPS
            ):
                todo.append(step_up(step.rate))  # the top of the ladder passed: C is higher still
    best = max_ok(result.ladder, keeps_up=False)
    if best is None:
        result.error = f"no rate of the ladder with <= {OK_FAILED_PCT:g}% failed calls"
        return result
    result.capacity = best.rate
    offered = round(factor * best.rate)
    log(f"{name}: capacity {best.rate:,} calls/s under the quota; now {offered:,} calls/s for {duration:g} s")
    workdir = root / name / "overload"
    workdir.mkdir(parents=True)
    with bench_bed(name, "udp", workdir, None) as bed:
        warm_up(bed, workdir, time.monotonic() + 30)
        check_inside(bed, limit)
        watcher = PairWatcher(bed.proxy.admin) if isinstance(bed.proxy, Sipha) else None
        proxy_log = workdir / f"{name}.log"
        log_start = proxy_log.stat().st_size
        throttled = limit.throttled_s()
        if watcher is not None:
            watcher.start()
        try:
            result.step = measure_step(bed, workdir / "overload", offered, duration)
        finally:
            if watcher is not None:
                watcher.stop()
        result.throttled_s = limit.throttled_s() - throttled
        lines = log_lines(proxy_log, log_start, proxy_log.stat().st_size)
        if watcher is not None:
            result.pair_states, result.pair_changes = watcher.states, watcher.changes
            result.counters = counter_delta(watcher.first, watcher.last, "overload", "shed", "drop")
            result.options = options_delta(watcher.first, watcher.last)
            for label, text in PAIR_LOG.items():
                result.pair_log[label] = sum(text in line for line in lines)
            result.pair_log_lines = [
                line for line in lines if any(text in line for text in list(PAIR_LOG.values())[:3])
            ][:10]
        else:  # Kamailio: its dispatcher's complaints (a member set inactive), and what it logged at all
            result.pair_log["dispatcher lines"] = sum("dispatcher" in line for line in lines)
            result.pair_log["log lines"] = len(lines)
            result.pair_log_lines = [line for line in lines if "dispatcher" in line][:10]
    result.causes = failures_by_message(workdir / "overload" / f"rate{offered}" / "uac_stats.err")
    return result


# --------------------------------------------------------------------------- report


def verdict(run: Overload) -> str:
    """sipha against the issue's goals; Kamailio described alike."""
    if run.step is None:
        lines = run.error.strip().splitlines() or ["interrupted"]
        return "not measured: " + (lines[0] if len(lines) == 1 else f"{lines[0]} .. {lines[-1].strip()}")
    problems = []
    not_started = run.step.offered_calls - run.step.created
    if not_started > run.step.offered_calls / 100:
        problems.append(f"SIPp did not start {not_started:,} of the calls (it ended early): not a valid run")
    if run.completed_share < GOAL_COMPLETED:
        problems.append(f"completed {run.completed_share:.2f} of C (< {GOAL_COMPLETED})")
    bye_503 = run.count("BYE 503")
    if bye_503:
        problems.append(f"{bye_503:,} BYE answered 503")
    bad_states = sorted(
        state
        for state in run.pair_states
        if state and any(w in state for w in ("unknown", "takeover", "out-of-service", "initial"))
    )
    no_member = run.count("", "No destination")  # Kamailio's dispatcher found no member up
    if no_member:
        problems.append(f"pair out of service: {no_member:,} calls failed by 503 No destination")
    if run.pair_log["40001"] or run.pair_log["unknown"] or bad_states:
        problems.append(
            f"pair not active throughout (40001 logged {run.pair_log['40001']}x, unknown"
            f" {run.pair_log['unknown']}x; states {', '.join(bad_states) or '-'})"
        )
    bye_lost = run.count("BYE timeout")
    also = f" (also: {bye_lost:,} BYE of calls up timed out, 5 s without an answer)" if bye_lost else ""
    if run.proxy == "kamailio":
        return ("; ".join(problems) if problems else "completed >= 0.9 of C, no BYE answered 503") + also
    return ("**met**" if not problems else "**NOT MET**: " + "; ".join(problems)) + also


def report(runs: list[Overload], meta: dict[str, Any]) -> str:
    names = {"sipha": "sipha", "kamailio": "Kamailio"}
    cols = runs
    head = "| | " + " | ".join(names.get(r.proxy, r.proxy) for r in cols) + " |"
    lines = [
        f"## Overload at {meta['factor']:g}x capacity, each proxy held to {meta['share']:g} of one core",
        "",
        (
            f"- run: {meta['started']}; load average (1/5/15 min) at start {meta['load_start']}, at end"
            f" {meta['load_end']}"
        ),
        f"- machine: {meta['machine_text']}",
        f"- command: `{meta['command']}`",
        (
            f"- CPU limit: {meta['limit']}; the proxy and all its processes on core {PROXY_CORE}"
            f" (`taskset`), SIPp, the members and the harness on core {HARNESS_CORE}"
        ),
        (
            f"- sipha: {meta['sipha_build']}, `[proxy] workers = 1`; Kamailio: `children=1`"
            " (bench/kamailio/kamailio.cfg); UDP; both count a member out after 2 s of silence"
        ),
        (
            f"- C: the highest rate of the ladder with <= {OK_FAILED_PCT:g}% failed calls"
            f" ({meta['ladder_duration']:g} s per rate); then a fresh proxy offered {meta['factor']:g}x C"
            f" for {meta['duration']:g} s; calls completed per second = successful calls /"
            f" {meta['duration']:g} s"
        ),
        "",
        head,
        "|---|" + "---:|" * len(cols),
    ]

    def row(label: str, cell: Callable[[Overload], object]) -> None:
        lines.append(f"| {label} | " + " | ".join(str(cell(r)) for r in cols) + " |")

    def failed(r: Overload, prefix: str, what: str = "", *, other: bool = False) -> str:
        if r.step is None:
            return "-"
        if other:
            known = r.count("INVITE 503") + r.count("INVITE timeout") + r.count("BYE")
            return f"{sum(r.causes.values()) - known:,}"
        return f"{r.count(prefix, what):,}"

    row("capacity C, calls/s (<= 1% failed)", lambda r: f"{r.capacity:,}" if r.capacity else "none")
    row(f"offered for {meta['duration']:g} s, calls/s", lambda r: f"{r.step.rate:,}" if r.step else "-")
    row("calls completed per second", lambda r: f"{r.completed_cps:,.0f}" if r.step else "-")
    row(
        f"completed / C (goal >= {GOAL_COMPLETED})",
        lambda r: f"**{r.completed_share:.2f}**" if r.step else "-",
    )
    row(
        "failed calls (of those offered)",
        lambda r: f"{r.step.failed:,} ({r.step.failed_pct:.1f}%)" if r.step else "-",
    )
    row("- new INVITE answered 503", lambda r: failed(r, "INVITE 503"))
    row("- INVITE timed out (dropped, or lost)", lambda r: failed(r, "INVITE timeout"))
    row("- **BYE answered 503** (goal 0)", lambda r: failed(r, "BYE 503"))
    row("- BYE timed out", lambda r: failed(r, "BYE timeout"))
    row("- anything else", lambda r: failed(r, "", other=True))
    row(
        "- calls SIPp did not start",
        lambda r: f"{max(0, r.step.offered_calls - r.step.created):,}" if r.step else "-",
    )
    row(
        "pair state (/status every 0.5 s)",
        lambda r: "; ".join(f"{s}: {n}x" for s, n in r.pair_states.most_common()) or "n/a",
    )
    row(
        "pair events logged: unknown / 40001 / active again",
        lambda r: (
            f"{r.pair_log['unknown']} / {r.pair_log['40001']} / {r.pair_log['active again']}"
            if r.proxy == "sipha"
            else f"{r.pair_log['dispatcher lines']} dispatcher lines of {r.pair_log['log lines']}"
        ),
    )
    row(
        "calls failed by a 503 for want of a member (Kamailio: `503 No destination`, its dispatcher"
        " has no member up)",
        lambda r: f"{r.count('', 'No destination'):,}" if r.proxy == "kamailio" else "see pair events",
    )
    row(
        "OPTIONS sent / answered / failed",
        lambda r: (
            "/".join(
                str(r.options.get(k, "-")) for k in ("options_sent", "options_answered", "options_failed")
            )
            if r.options
            else "n/a"
        ),
    )
    row("shed counters (/status)", lambda r: ", ".join(f"{k} {v:,}" for k, v in r.counters.items()) or "n/a")
    row(
        "proxy CPU, % of one core (quota)",
        lambda r: f"{100 * r.step.proxy_cpu / r.step.wall:.0f} ({100 * r.share:.0f})" if r.step else "-",
    )
    row("time held back by the quota, s", lambda r: f"{r.throttled_s:.1f}" if r.step else "-")
    row(
        "UDP datagrams dropped: proxy port / others",
        lambda r: f"{r.step.proxy_drops:,} / {r.step.other_drops:,}" if r.step else "-",
    )
    row(
        "response time p50/p95/p99, ms",
        lambda r: f"{fmt_ms(r.step.p50)}/{fmt_ms(r.step.p95)}/{fmt_ms(r.step.p99)}" if r.step else "-",
    )
    row("verdict", verdict)
    lines.append("")
    for r in runs:
        if r.causes:
            lines.append(
                f"- {r.proxy}: failed calls by message and response: "
                + ", ".join(f"{cause} {n:,}" for cause, n in r.causes.most_common())
            )
        if r.pair_changes:
            lines.append(f"- {r.proxy}: pair state changes (s from the start): " + "; ".join(r.pair_changes))
        lines.extend(f"  - log: `{line.strip()}`" for line in r.pair_log_lines)
    lines += [
        "",
        "The ladders (C); the last row of each proxy is the overload run:",
        "",
        (
            "| proxy | transport | offered cps | achieved cps | failed | CPU s / 1000 calls"
            " | RT p50/p95/p99 ms | proxy CPU % | SIPp uac CPU % | UAS CPU %"
            " | UDP drops proxy/other | load 1m |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.extend(step_row(s) for s in r.ladder)
        if r.step is not None:
            lines.append(step_row(r.step).replace(f"| {r.step.rate:,} |", f"| **{r.step.rate:,}** |", 1))
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def step_up(rate: int) -> int:
    return max(rate + 50, round(rate * 1.25 / 50) * 50)


def default_rates(share: float) -> list[int]:
    return sorted({max(50, round(share * PER_CORE_GUESS * k / 50) * 50) for k in LADDER_SHARES})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cpu-limit",
        type=float,
        default=DEFAULT_LIMIT,
        help="the proxy's CPU quota, a share of one core (%(default)s)",
    )
    parser.add_argument("--rates", help="the ladder that finds C, calls/s (default: from --cpu-limit)")
    parser.add_argument("--ladder-duration", type=float, default=8, help="s per ladder rate (%(default)s)")
    parser.add_argument("--factor", type=float, default=2.0, help="the overload: this x C (%(default)s)")
    parser.add_argument("--duration", type=float, default=30, help="s of overload (%(default)s)")
    parser.add_argument("--proxies", default="sipha,kamailio", help="sipha, kamailio, in this order")
    parser.add_argument(
        "--sipha-python",
        type=Path,
        default=COMPILED_PYTHON if COMPILED_PYTHON.exists() else Path(sys.executable),
        help="the Python that runs sipha (default: %(default)s; `make compiled` builds .venv-compiled)",
    )
    parser.add_argument("--out", type=Path, help="also write the Markdown report here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, SIPp files)")
    options = parser.parse_args()
    names = [p.strip() for p in options.proxies.split(",") if p.strip()]
    if not names or any(name not in ("sipha", "kamailio") for name in names):
        parser.error(f"--proxies {options.proxies!r}: sipha and/or kamailio")
    if not 0 < options.duration <= MAX_DURATION or options.ladder_duration <= 0:
        parser.error(f"--duration {options.duration:g}: above 0, at most {MAX_DURATION:g} s")
    if options.factor < 1:
        parser.error(f"--factor {options.factor:g}: at least 1")
    if (os.cpu_count() or 1) < 2:
        parser.error("needs two cores: the proxy on one, SIPp on the other")
    if not 0 < options.cpu_limit <= 1:
        parser.error(f"--cpu-limit {options.cpu_limit:g}: a share of one core, above 0 and at most 1")
    try:
        hierarchy: Hierarchy = find_hierarchy()
    except CpuLimitUnavailable as error:
        sys.exit(f"bench/overload.py: {error}")
    rates = [int(r) for r in options.rates.split(",")] if options.rates else default_rates(options.cpu_limit)
    command = shlex.join([os.path.relpath(sys.executable, Path.cwd()), *sys.argv])

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    Sipha.workers = 1
    Sipha.python = os.path.abspath(options.sipha_python)  # sipha runs in its work directory
    proxies.KAMAILIO_CHILDREN = 1
    os.sched_setaffinity(0, {HARNESS_CORE})  # this process, SIPp and the members: inherited
    ensure_installed()
    if "kamailio" in names:
        check_kamailio_cfg()
    root = Path(tempfile.mkdtemp(prefix="sipha-overload-"))
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    load_start = loadavg()
    log(
        f"ladder {rates} ({options.ladder_duration:g} s each),"
        f" then {options.factor:g}x C for {options.duration:g} s"
    )
    runs: list[Overload] = []
    described = ""
    try:
        for name in names:
            with CpuLimit(options.cpu_limit, hierarchy) as limit:
                described = limit.describe
                log(f"{name}: {described}")
                try:
                    runs.append(
                        run_proxy(
                            name,
                            limit,
                            root,
                            rates=rates,
                            ladder_duration=options.ladder_duration,
                            factor=options.factor,
                            duration=options.duration,
                        )
                    )
                except RuntimeError as error:
                    log(f"{name}: {error}")
                    runs.append(Overload(name, options.cpu_limit, error=str(error)))
                finally:
                    PROXY_CPU[:] = []
    except CpuLimitUnavailable as error:
        sys.exit(f"bench/overload.py: {error}")
    except KeyboardInterrupt:
        log("interrupted: reporting what was measured")
    finally:
        if options.keep:
            log(f"work directory kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    meta = {
        "command": command,
        "started": started,
        "load_start": load_start,
        "load_end": loadavg(),
        "machine_text": machine(),
        "sipha_build": sipha_build(options.sipha_python),
        "share": options.cpu_limit,
        "limit": described,
        "factor": options.factor,
        "duration": options.duration,
        "ladder_duration": options.ladder_duration,
    }
    text = report(runs, meta)
    print()
    print(text)
    if options.out:
        options.out.write_text(text + "\n")
        log(f"written to {options.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
