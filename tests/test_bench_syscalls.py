"""bench/syscalls.py: system calls per call from ``perf stat`` output, side by side.

The sample is perf 6's own output for sipha's process during 9,000 calls (abridged: perf
lists every tracepoint, most of them at 0).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from syscalls import CPU_SYSTEM, CPU_USER, parse_perf, report

PERF_OUTPUT = """# started on Thu Dec  3 21:42:56 2026


 Performance counter stats for process id '9741':

                65      syscalls:sys_enter_mmap
                 0      syscalls:sys_enter_pselect6
              5165      syscalls:sys_enter_epoll_wait
               398      syscalls:sys_enter_recvmsg
             59393      syscalls:sys_enter_recvfrom
             62715      syscalls:sys_enter_sendto

       6.005180565 seconds time elapsed
"""


def test_perf_counts_by_system_call_without_zeros() -> None:
    assert parse_perf(PERF_OUTPUT) == Counter(
        {"sendto": 62715, "recvfrom": 59393, "epoll_wait": 5165, "recvmsg": 398, "mmap": 65}
    )


def test_the_report_divides_by_successful_calls_and_gives_the_ratio() -> None:
    sipha = parse_perf(PERF_OUTPUT)
    sipha[CPU_USER], sipha[CPU_SYSTEM] = 2934, 630  # ms
    kamailio = Counter({"recvfrom": 53460, "sendto": 62370, "pause": 90, CPU_USER: 2313, CPU_SYSTEM: 1287})
    text = report({"sipha": (sipha, 9000), "kamailio": (kamailio, 9000)}, "syscalls.py", 1500, "udp")
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert rows["sendto"] == "| sendto | 6.97 | 6.93 |"
    assert rows["epoll_wait"] == "| epoll_wait | 0.57 | 0.00 |"
    assert rows["**total**"] == "| **total** | **14.19** | **12.88** |"
    assert rows["CPU ms per 1000 calls, user / system"].endswith("| 326 / 70 | 257 / 143 |")
    assert "**ratio sipha / kamailio: 1.10**" in text
