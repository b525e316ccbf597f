"""Which message of a SIPp ``uac`` call failed, and how, from SIPp's ``-trace_err`` file.

``bench/overload.py`` needs more than ``bench/proxies.py``'s causes: a 503 to a new INVITE
is a call shed, a 503 to the BYE of a call up is what the issue forbids.  Records are SIPp
3.6's: "Aborting call on unexpected message ... (index N), received '<the message>'" (its
CSeq names the method), "Call-Id: X, receive timeout on message <scenario>:N ..." (the
index names it), and "Dead call" lines for messages that came after a call ended (ignored).
SIPp writes a timeout record without a line break after it: records are split on their
time stamps, not on lines.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

UAC_BYE_INDEX = 7
"""SIPp's built-in uac (``sipp -sd uac``): 0 INVITE, 1-4 its responses, 5 ACK, 6 pause, 7 BYE,
8 the BYE's 200; a failure at an index from here on is the BYE's."""

_RECORD = re.compile(r"'?\d{4}-\d\d-\d\d\t[\d:.]+\t[\d.]+: ")
_UNEXPECTED = re.compile(
    r"Aborting call on unexpected message for Call-Id '([^']*)': while expecting '[^']*'"
    r" \(index (\d+)\), received '(?:SIP/2\.0 (\d{3})([^\r\n]*)|(\w+))"
)
_TIMEOUT = re.compile(r"Call-Id: (\S+), (receive|send) timeout on message .*?:(\d+)")
_CSEQ = re.compile(r"^CSeq:\s*\d+\s+(\w+)", re.MULTILINE)


def failures_by_message(error_file: Path) -> Counter[str]:
    """Failed calls by the message that failed and how: ``INVITE 503 Service Unavailable``,
    ``INVITE timeout``, ``BYE 503 ...``, ``BYE timeout``, ...; each call once (its first failure)."""
    causes: Counter[str] = Counter()
    if not error_file.exists():
        return causes
    seen: set[str] = set()
    for record in _RECORD.split(error_file.read_text(errors="replace")):
        if match := _UNEXPECTED.search(record):
            call, index, code, reason, request = match.groups()
            cseq = _CSEQ.search(record[match.end() :])
            method = cseq.group(1) if cseq else ("BYE" if int(index) >= UAC_BYE_INDEX else "INVITE")
            what = f"{code}{reason.rstrip(chr(39))}" if code else f"request {request} received"
        elif match := _TIMEOUT.search(record):
            call, index = match.group(1), match.group(3)
            method = "BYE" if int(index) >= UAC_BYE_INDEX else "INVITE"
            what = "timeout"
        else:
            continue
        if call not in seen:
            seen.add(call)
            causes[f"{method} {what.strip()}"] += 1
    return causes
