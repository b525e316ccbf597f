"""Overload with real peers: a flood of new INVITEs while calls are up (docs/design.md §3, overload).

SIPp sets up calls through sipha to a SIPp server; then a flood of new INVITEs, each
its own call, arrives faster than sipha can read them (a sender in this test, bounded
in count and time, to 127.0.0.1).  What must hold: every call that was up ends with its
BYE answered 200 (nothing already under way is refused), the pair stays active on its
member (the monitor's OPTIONS answers come back on a socket of their own: no unknown
state, no 40001), new INVITEs are shed (503) or dropped and counted, and once the flood
is over new calls go through again.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.support import (
    HOST,
    SIPP,
    Pair,
    RunningProxy,
    SippResult,
    free_port,
    run_sipha,
    run_sipp_client,
    sipp_server,
)
from tests.integration.test_workers import admin_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SIPP is None, reason="sipp is not installed (Debian package sip-tester)"),
]

CALLS = 40
CALL_RATE = 20
CALL_SECONDS = 7.0  # every call's BYE falls inside the flood
FLOOD_START = CALLS / CALL_RATE + 0.5
FLOOD_SECONDS = 6.0
FLOOD_MAX = 400_000
FLOOD_DOMAIN = "flood.example"
"""The flood's calls go to a pair of their own (by domain): what sipha admits of them loads
that pair's SIPp, not the one of the calls under test."""


def flood_invite(n: int, port: int, target: int) -> bytes:
    return (
        f"INVITE sip:flood{n}@{FLOOD_DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK-flood-{n};rport\r\n"
        f"From: <sip:flooder@{HOST}>;tag=f{n}\r\n"
        f"To: <sip:flood{n}@{FLOOD_DOMAIN}>\r\n"
        f"Call-ID: flood-{n}@{HOST}\r\n"
        "CSeq: 1 INVITE\r\n"
        "Max-Forwards: 70\r\n"
        f"Contact: <sip:flooder@{HOST}:{port}>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def flood(target: int, stop_at: float) -> int:
    """New INVITEs to ``target`` as fast as one thread sends, until ``stop_at`` or FLOOD_MAX."""
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.bind((HOST, 0))
        port = sender.getsockname()[1]
        sender.setblocking(False)
        while sent < FLOOD_MAX and time.monotonic() < stop_at:
            try:
                sender.sendto(flood_invite(sent, port, target), (HOST, target))
            except BlockingIOError:
                time.sleep(0.001)
                continue
            sent += 1
            try:  # throw the 100s and 503s away as they come, so the answers do not back up
                while True:
                    sender.recv(65535)
            except BlockingIOError:
                pass
    return sent


def status(proxy: RunningProxy) -> dict[str, object]:
    with urllib.request.urlopen(f"http://{HOST}:{admin_port(proxy)}/status", timeout=20) as response:
        document: dict[str, object] = json.loads(response.read())
    return document


def test_a_flood_of_new_calls_is_shed_and_the_calls_up_end_normally(tmp_path: Path) -> None:
    primary, backup = free_port(), free_port()
    flood_primary, flood_backup = free_port(), free_port()
    extra = "\n[monitor]\noos-check = 1\noos-force = 1\n"
    pairs = [
        Pair("demo", primary, backup),
        Pair("flood", flood_primary, flood_backup, serving=False, domains=[FLOOD_DOMAIN]),
    ]
    with (
        sipp_server(tmp_path, primary, "-aa"),
        sipp_server(tmp_path, flood_primary, "-aa", name="flood_uas"),
        run_sipha(tmp_path, pairs, extra=extra) as proxy,
    ):
        results: list[SippResult] = []
        calls = threading.Thread(
            target=lambda: results.append(
                run_sipp_client(
                    tmp_path,
                    f"{HOST}:{proxy.port}",
                    "-m",
                    str(CALLS),
                    "-r",
                    str(CALL_RATE),
                    "-d",
                    str(int(CALL_SECONDS * 1000)),
                    # A BYE is retransmitted until Timer F (64*T1 = 32 s: 11 times with T2 = 4 s,
                    # RFC 3261 §17.1.2.2), as a real user agent does, not SIPp's default 5
                    # (11.5 s): the flood lasts 6 s, and the kernel may drop a BYE while it runs.
                    "-max_non_invite_retrans",
                    "11",
                    timeout=60,
                )
            )
        )
        calls.start()
        time.sleep(FLOOD_START)
        sent = flood(proxy.port, time.monotonic() + FLOOD_SECONDS)
        calls.join(90)
        during = status(proxy)
        after = run_sipp_client(
            tmp_path, f"{HOST}:{proxy.port}", "-m", "20", "-r", "20", timeout=30, name="after"
        )
        final = status(proxy)
    [up] = results
    counters = final["counters"]
    assert isinstance(counters, dict)
    shed = counters["overload_sheds"] + counters["overload_drops"]
    every = [event for event in final["events"] if isinstance(event, dict)]  # type: ignore[attr-defined]
    events = [event for event in every if event["pair"] == "demo"]
    print(
        f"\nOVERLOAD flood: {sent} new INVITEs in {FLOOD_SECONDS:.0f} s; shed 503 "
        f"{counters['overload_sheds']}, dropped {counters['overload_drops']}; calls up: "
        f"{up.successful}/{CALLS} ended, {up.failed} failed; after: {after.successful}/20; "
        f"HA events of the calls' pair: {[event['kind'] for event in events]}, of the flood's: "
        f"{[event['kind'] for event in every if event['pair'] == 'flood']}"
    )
    assert up.failed == 0, up.errors
    assert up.successful == CALLS
    assert shed > 0, "the flood never made sipha shed: it did not overload it"
    for document in (during, final):
        [pair] = [pair for pair in document["pairs"] if pair["name"] == "demo"]  # type: ignore[attr-defined]
        assert pair["state"] == "active", pair
        assert pair["active"] == "primary", pair
    # The monitor never took sipha's own lateness for a dead member: no OPTIONS answer was
    # lost (they come back on the monitor's own socket), and the pair never went out of
    # service.  (A "suspect" re-probe may happen: the flood's admitted calls can make the
    # SIPp member itself slow to answer; the member is found alive again at once.)
    lost = [
        event
        for event in events
        if event["kind"] == "unknown" and event.get("reason") not in ("start", "suspect")
    ]
    assert lost == [], events
    assert not [event for event in events if event["kind"] == "out-of-service"], events
    assert after.failed == 0, after.errors
    assert after.successful == 20
