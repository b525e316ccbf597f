"""System calls per call, sipha against Kamailio: exact counts where CPU time is noisy.

CPU seconds per call on a shared 2-core machine vary by 10-30 % from run to run (see
bench/results-pin.md); the system calls a proxy makes for the same calls do not.  Each one
costs a kernel entry and exit, and for a proxy that does little else per datagram they are a
large share of the CPU: this counts them, by name, with ``perf stat`` on the kernel's
``syscalls:sys_enter_*`` tracepoints, for every process of each proxy (sipha compiled with 1
worker, Kamailio with 1 UDP child, as ``bench/proxies.py --pin`` runs them, on core 0), while
SIPp's ``uac`` places ``--calls`` calls at ``--rate`` through it (INVITE / 100 / 180 / 200 /
ACK / BYE / 200: 7 datagrams in and 7 out per call at the proxy, the 100 Trying included).

    .venv/bin/python bench/syscalls.py [--rate 1000] [--calls 8000] [--transport udp] [--out FILE.md]

Needs root (perf on tracepoints) and, for sipha, the compiled build (``make compiled``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import proxies
from proxies import CLK_TCK, COMPILED_PYTHON, Sipha, _proc_stat, bench_bed, ensure_installed, run_uac, warm_up

PERF_EVENTS = "syscalls:sys_enter_*"
SHOWN = 12
"""System calls listed by name per proxy (the rest are summed as "other")."""
CPU_USER, CPU_SYSTEM = "cpu:user", "cpu:system"
_COUNT_LINE = re.compile(r"^\s*([\d,]+)\s+syscalls:sys_enter_(\w+)")


def parse_perf(text: str) -> Counter[str]:
    """``perf stat`` output -> calls by system call name (zero counts left out)."""
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        match = _COUNT_LINE.match(line)
        if match:
            count = int(match.group(1).replace(",", ""))
            if count:
                counts[match.group(2)] += count
    return counts


def user_system_seconds(pids: list[int]) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pids`` so far (/proc/PID/stat utime, stime)."""
    user = system = 0.0
    for pid in pids:
        fields = _proc_stat(pid)
        if fields is not None:  # fields[0] is field 3 (state): utime = 14, stime = 15
            user += int(fields[11]) / CLK_TCK
            system += int(fields[12]) / CLK_TCK
    return user, system


def count_during(pids: list[int], workdir: Path, action: Callable[[], None]) -> Counter[str]:
    """System calls of ``pids`` while ``action`` runs (perf stat attached, then stopped by SIGINT);
    the CPU seconds they spent meanwhile are added as ``cpu:user`` and ``cpu:system``, in ms."""
    user0, system0 = user_system_seconds(pids)
    output = workdir / "perf.txt"
    command = [
        "perf",
        "stat",
        "--no-big-num",
        "-e",
        PERF_EVENTS,
        "-p",
        ",".join(map(str, pids)),
        "-o",
        str(output),
    ]
    perf = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        action()
    finally:
        perf.send_signal(signal.SIGINT)
        perf.wait(30)
    user1, system1 = user_system_seconds(pids)
    counts = parse_perf(output.read_text(encoding="utf-8"))
    counts[CPU_USER] = round(1000 * (user1 - user0))
    counts[CPU_SYSTEM] = round(1000 * (system1 - system0))
    return counts


def measure(name: str, transport: str, rate: int, calls: int, root: Path) -> tuple[Counter[str], int]:
    """(system calls by name, successful calls) of one proxy."""
    workdir = root / f"{name}-{transport}"
    workdir.mkdir(parents=True)
    succeeded: list[int] = []
    with bench_bed(name, transport, workdir, None) as bed:
        warm_up(bed, workdir, deadline=time.monotonic() + 60)

        def place_calls() -> None:
            result = run_uac(
                workdir / "calls", bed.target, transport, rate=rate, calls=calls, duration=calls / rate
            )
            succeeded.append(result.successful)

        counts = count_during(bed.proxy.pids(), workdir, place_calls)
    return counts, succeeded[0]


def report(results: dict[str, tuple[Counter[str], int]], command: str, rate: int, transport: str) -> str:
    """A markdown table: system calls per successful call, by name, side by side."""
    names = list(results)
    cpu = {
        name: (counts.pop(CPU_USER, 0), counts.pop(CPU_SYSTEM, 0), ok)
        for name, (counts, ok) in results.items()
    }
    per_call = {
        name: {call: count / max(ok, 1) for call, count in counts.items()}
        for name, (counts, ok) in results.items()
    }
    totals = {name: sum(values.values()) for name, values in per_call.items()}
    shown: list[str] = []
    for name in names:
        for call, _ in Counter(per_call[name]).most_common(SHOWN):
            if call not in shown:
                shown.append(call)
    lines = [
        f"## System calls per call ({transport.upper()}, {rate} calls/s), `perf stat -e '{PERF_EVENTS}'`",
        "",
        f"- run: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}; command: `{command}`",
        "- " + "; ".join(f"{name}: {ok:,} calls succeeded" for name, (_, ok) in results.items()),
        "",
        "| system call | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    lines.extend(
        f"| {call} | " + " | ".join(f"{per_call[name].get(call, 0.0):.2f}" for name in names) + " |"
        for call in shown
    )
    other = {
        name: max(0.0, totals[name] - sum(per_call[name].get(call, 0.0) for call in shown)) for name in names
    }
    lines.append("| other | " + " | ".join(f"{other[name]:.2f}" for name in names) + " |")
    lines.append("| **total** | " + " | ".join(f"**{totals[name]:.2f}**" for name in names) + " |")
    lines.append(
        "| CPU ms per 1000 calls, user / system | "
        + " | ".join(
            f"{1000 * user / max(ok, 1):.0f} / {1000 * system / max(ok, 1):.0f}"
            for user, system, ok in cpu.values()
        )
        + " |"
    )
    if len(names) == 2 and totals[names[1]]:
        lines += ["", f"**ratio {names[0]} / {names[1]}: {totals[names[0]] / totals[names[1]]:.2f}**"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=1000, help="calls/s (default: %(default)s)")
    parser.add_argument("--calls", type=int, default=8000, help="calls per proxy (default: %(default)s)")
    parser.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    parser.add_argument("--proxies", default="sipha,kamailio", help="comma-separated (default: %(default)s)")
    parser.add_argument("--sipha-python", type=Path, default=COMPILED_PYTHON)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    options = parser.parse_args()
    if options.rate <= 0 or options.calls <= 0:
        parser.error("--rate and --calls must be positive")
    if os.geteuid() != 0:
        parser.error("perf on the kernel's tracepoints needs root")
    if (os.cpu_count() or 1) < 2:
        parser.error("needs two cores")
    # As bench/proxies.py --pin: the proxy on core 0, 1 worker / 1 child; SIPp and members on core 1.
    Sipha.workers = 1
    Sipha.python = str(options.sipha_python.absolute())
    proxies.KAMAILIO_CHILDREN = 1
    proxies.PROXY_CPU[:] = ["taskset", "-c", "0"]
    os.sched_setaffinity(0, {1})
    ensure_installed()
    root = Path(tempfile.mkdtemp(prefix="sipha-syscalls-"))
    results = {
        name: measure(name, options.transport, options.rate, options.calls, root)
        for name in options.proxies.split(",")
    }
    text = report(results, "python " + " ".join(sys.argv), options.rate, options.transport)
    print(text)
    if options.out is not None:
        options.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
