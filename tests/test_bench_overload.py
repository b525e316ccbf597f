"""bench/sipperrors.py reads SIPp's error file for bench/overload.py: which message of a call failed.

The issue's overload goal turns on it ("no BYE of an established call gets 503"), so the
records below are SIPp 3.6's own formats (an unexpected response, a receive timeout, the
"Dead call" lines of messages that come after a call ended), each call counted once.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from sipperrors import failures_by_message

STAMP = "2026-12-03\t16:21:06.648187\t1796314466.648187: "


def unexpected(call: str, index: int, status: str, method: str) -> str:
    return (
        f"{STAMP}Aborting call on unexpected message for Call-Id '{call}': while expecting '200'"
        f" (index {index}), received 'SIP/2.0 {status}\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-1\nCall-ID: {call}\nCSeq: 2 {method}\n"
        "Content-Length: 0\n\n'"
    )


def timeout(call: str, index: int) -> str:
    return (
        f"{STAMP}Call-Id: {call}, receive timeout on message Basic Sipstone UAC:{index} without label to"
        " jump to (ontimeout attribute): aborting call"
    )


def test_each_call_is_counted_once_by_the_message_that_failed(tmp_path: Path) -> None:
    errors = tmp_path / "uac_stats.err"
    errors.write_text(
        "The following events occurred:\n"
        + unexpected("1-1@127.0.0.1", 1, "503 Service Unavailable", "INVITE")
        + unexpected("2-1@127.0.0.1", 8, "503 Service Unavailable", "BYE")
        + unexpected("3-1@127.0.0.1", 8, "408 Request Timeout", "BYE")
        + timeout("4-1@127.0.0.1", 1)  # glued to the next record, as SIPp writes them
        + timeout("5-1@127.0.0.1", 8)
        + f"{STAMP}Dead call 2-1@127.0.0.1 (aborted), received 'SIP/2.0 503 Service Unavailable\n'"
        + unexpected("2-1@127.0.0.1", 8, "503 Service Unavailable", "BYE")  # its retransmission
        + unexpected("6-1@127.0.0.1", 4, "503 No destination", "INVITE")
    )
    assert failures_by_message(errors) == {
        "INVITE 503 Service Unavailable": 1,
        "BYE 503 Service Unavailable": 1,
        "BYE 408 Request Timeout": 1,
        "INVITE timeout": 1,
        "BYE timeout": 1,
        "INVITE 503 No destination": 1,
    }


def test_no_error_file_is_no_failure(tmp_path: Path) -> None:
    assert not failures_by_message(tmp_path / "absent.err")
