"""What bench/chaos_soak.py reads after its run: SIPp's failures and statistics, sipha's pair events.

Times are wall clock (epoch seconds): SIPp's error and statistics files carry them, sipha's log
has the local time to the millisecond, and the soak notes each fault's start and end.
"""

from __future__ import annotations

import csv
import datetime
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

RECV_TIMEOUT = 15.0
"""s SIPp waits for a message before failing the call (not Timer C's 3 min)."""
GRACE = RECV_TIMEOUT + 5.0
"""s after a fault's end: a failure later than this is 'late' (sipha still recovering)."""
_SIPP_EVENT = re.compile(
    r"\d{4}-\d\d-\d\d\t[\d:.]+\t(\d+\.\d+): (.*?)(?=\d{4}-\d\d-\d\d\t[\d:.]+\t\d+\.\d+: |\Z)", re.S
)
_RECEIVED = re.compile(r"while expecting '([^']*)'.*?received '(SIP/2\.0 (\d{3})|\w+)", re.S)
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) (\w+) sipha: (.*)$", re.M)


@dataclass
class Fault:
    kind: str
    start: float
    """Wall clock (epoch s), to compare with SIPp's and sipha's times."""
    end: float = 0.0
    detail: str = ""
    failed: int = 0
    """Calls SIPp failed from 1 s before this fault until 1 s before the next one."""
    late: int = 0
    """Of the failures in its error file, those more than GRACE s after its end."""
    causes: Counter[str] = field(default_factory=Counter)


def sipp_failures(error_file: Path) -> list[tuple[float, str]]:
    """(epoch, cause) of each call SIPp aborted, from its -trace_err file; a receive timeout's epoch is
    RECV_TIMEOUT s before it fired, when the call last heard something."""
    if not error_file.exists():
        return []
    found = []
    for match in _SIPP_EVENT.finditer(error_file.read_text(errors="replace")):
        at, text = float(match.group(1)), match.group(2)
        if not text.startswith("Aborting call") and "timeout" not in text.lower():
            continue  # "Dead call" (a retransmission after the end), automatic answers: not failures
        received = _RECEIVED.search(text)
        if received:
            got = f"{received.group(3)} received" if received.group(3) else f"{received.group(2)} received"
            cause = f"{got} (expecting {received.group(1)})"
        elif "retransmission timeout" in text:
            cause = "UDP retransmission timeout (no answer)"
        elif "timeout" in text.lower():
            cause = "receive timeout (no message within -recv_timeout)"
        else:
            cause = text.split(" for Call", 1)[0][:80]
        found.append((at - RECV_TIMEOUT if cause.startswith("receive timeout") else at, cause))
    return found


def stat_rows(stat_file: Path) -> list[dict[str, str]]:
    if not stat_file.exists():
        return []
    return list(csv.DictReader(stat_file.open(encoding="utf-8", errors="replace"), delimiter=";"))


def epoch_of(current_time: str) -> float:
    """SIPp's CurrentTime column: ``date<TAB>time<TAB>epoch``."""
    return float(current_time.rsplit(maxsplit=1)[-1])


def window_of(faults: list[Fault], at: float) -> Fault | None:
    """The fault a failure at ``at`` is put down to: the latest one started (1 s slack) before it.
    A failure long after a fault's end still counts against it: sipha may take long to recover."""
    for fault in reversed(faults):
        if fault.start - 1.0 <= at:
            return fault
    return None


def late(fault: Fault, at: float) -> bool:
    """A failure more than GRACE s after ``fault`` ended."""
    return at > (fault.end or fault.start) + GRACE


def pair_changes(text: str, start: float) -> list[str]:
    """sipha.log's pair events (switches, takeover windows, 40001, split brain), each worker's:
    ``+s worker N: message``."""
    rows = []
    for stamp, millis, _level, message in LOG_LINE.findall(text):
        if not re.search(r"(^|: )pair |40001|split brain", message):
            continue
        at = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").timestamp() + int(millis) / 1000
        rows.append(f"{at - start:+.2f} s {message}")
    return rows
