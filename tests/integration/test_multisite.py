"""Two sites, business continuity end to end (docs/deployment.md; issue 14, item 4).

Each site is a pair of ``sipha simulate-server`` processes (UDP, on 127.0.0.1) and two
sipha instances (its pool) that each monitor both pairs, ``serving`` their own site's
pair with ``fallback`` = the other site's; instances never talk to each other.  SIPp
calls site A's instances:

* a SIP server of site A calls a member of site B through the site-A instance (INVITE, ACK,
  BYE; docs/design.md §3 rule 2: a Request-URI naming a member goes to its pair's active member);
* calls answered by site A's primary; both of site A's members SIGKILLed under load: the calls
  in flight then may fail (counted); once site A's pair is out of service (40001) new calls
  succeed through site B's pair, 0 failed;
* site A's members restarted: the pair is restored and the calls come back to site A;
* the second instance of site A, which saw the same outage on its own, sends its calls
  to site B while site A is out and back to site A once restored, as the first does.

One ``MULTISITE`` line gives the figures (``pytest -s``).
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.integration.support import HOST, SIPP, RunningProxy, SippResult, free_port, run_sipha
from tests.integration.test_failover import (
    FAILOVER_TIMEOUT,
    OOS_FORCE,
    SEED_CONFIG,
    SLACK,
    Simulator,
    invite_answers,
    simulator,
    sipp_calls,
    sipp_trace,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.skipif(SIPP is None, reason="sipp not installed")]

OUTAGE_CALLS = 60
OUTAGE_RATE = 20
KILL_AFTER = 1.0  # s into the outage run: about 20 calls before the kill, 40 after
CALLS = 30
RATE = 30


def pair_section(name: str, primary: int, backup: int, *, serving: bool, fallback: str) -> str:
    return (
        f'[[pair]]\nname = "{name}"\nprimary = "udp:{HOST}:{primary}"\nbackup = "udp:{HOST}:{backup}"\n'
        f"serving = {'true' if serving else 'false'}\n" + (f'fallback = "{fallback}"\n' if fallback else "")
    )


@contextlib.contextmanager
def site_instance(
    directory: Path, own: str, other: str, ports: dict[str, tuple[int, int]]
) -> Iterator[RunningProxy]:
    """A sipha instance monitoring both pairs, serving ``own``, falling back to ``other``."""
    directory.mkdir()
    pairs = pair_section(own, *ports[own], serving=True, fallback=other)
    pairs += pair_section(other, *ports[other], serving=False, fallback="")  # a -> b -> a: refused
    # [[pair]] tables after [monitor] (TOML appends them to the array wherever they stand).
    with run_sipha(directory, [], extra=SEED_CONFIG + "\n" + pairs) as proxy:
        yield proxy


def cross_site_call(proxy: RunningProxy, member_port: int, target_port: int) -> list[str]:
    """A call from site A's member (TCP: known by its Via port) to site B's member: the responses.

    INVITE, then ACK and BYE by the route set (Record-Route: the instance); each message names
    site B's member in its Request-URI (docs/design.md §3 rule 2).
    """
    with socket.create_connection((HOST, proxy.port), timeout=5.0) as connection:
        call_id = f"cross-site-{connection.getsockname()[1]}@{HOST}"
        reader = connection.makefile("rb")

        def send(method: str, cseq: int, to_tag: str = "", route: str = "") -> None:
            head = (
                f"{method} sip:peer@{HOST}:{target_port} SIP/2.0\r\n"
                f"Via: SIP/2.0/TCP {HOST}:{member_port};branch=z9hG4bK-cross-{method.lower()}\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:server@{HOST}:{member_port}>;tag=cross\r\n"
                f"To: <sip:peer@{HOST}:{target_port}>{to_tag}\r\n"
                f"Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
                f"Contact: <sip:server@{HOST}:{member_port};transport=tcp>\r\n{route}"
                "Content-Length: 0\r\n\r\n"
            )
            connection.sendall(head.encode())

        def final() -> str:
            while True:  # bounded by the socket's timeout
                lines = []
                while (line := reader.readline().decode(errors="replace")) not in ("\r\n", ""):
                    lines.append(line)
                length = re.search(r"^(?:Content-Length|l): *(\d+)", "".join(lines), re.M | re.I)
                reader.read(int(length.group(1)) if length else 0)  # the body (SDP): not needed here
                if not lines or not lines[0].startswith("SIP/2.0 1"):
                    return "".join(lines)

        send("INVITE", 1)
        answer = final()
        to_tag = re.search(r"^To:.*?(;tag=[^;\r\n]+)", answer, re.M | re.I)
        record_route = re.search(r"^Record-Route: (.*)\r$", answer, re.M | re.I)
        assert to_tag is not None, answer
        assert record_route is not None, answer
        route = f"Route: {record_route.group(1)}\r\n"
        send("ACK", 1, to_tag.group(1), route)
        send("BYE", 2, to_tag.group(1), route)
        return [answer, final()]


def answered_by(directory: Path, name: str, result: SippResult) -> dict[int, int]:
    """Per member port: the calls of a SIPp run whose 200 came from it (its Contact)."""
    counts: dict[int, int] = {}
    for _, port in invite_answers(sipp_trace(directory / f"{name}_messages.log")).calls.values():
        counts[port] = counts.get(port, 0) + 1
    assert sum(counts.values()) >= result.successful
    return counts


def test_site_a_out_of_service_calls_go_to_site_b_and_come_back(tmp_path: Path) -> None:
    ports = {"site-a": (free_port(), free_port()), "site-b": (free_port(), free_port())}
    (a1_port, a2_port), (b1_port, b2_port) = ports["site-a"], ports["site-b"]
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        a1: Simulator = stack.enter_context(simulator(tmp_path, "a1", a1_port, "udp", mode="primary"))
        a2: Simulator = stack.enter_context(simulator(tmp_path, "a2", a2_port, "udp", mode="backup"))
        stack.enter_context(simulator(tmp_path, "b1", b1_port, "udp", mode="primary"))
        stack.enter_context(simulator(tmp_path, "b2", b2_port, "udp", mode="backup"))
        site_a = stack.enter_context(site_instance(tmp_path / "site-a", "site-a", "site-b", ports))
        site_a2 = stack.enter_context(site_instance(tmp_path / "site-a2", "site-a", "site-b", ports))
        stack.enter_context(site_instance(tmp_path / "site-b", "site-b", "site-a", ports))
        stack.enter_context(site_instance(tmp_path / "site-b2", "site-b", "site-a", ports))
        for instance in (site_a, site_a2):
            for pair, member in (("site-a", a1_port), ("site-b", b1_port)):
                line = f"pair {pair}: primary udp:{HOST}:{member} is active"
                wait_for(lambda line=line, i=instance: line in i.log_text(), line)  # type: ignore[misc]

        # A SIP server of site A reaches site B's member through the site-A instance (rule 2).
        invite_answer, bye_answer = cross_site_call(site_a, a1_port, b1_port)
        assert invite_answer.startswith("SIP/2.0 200"), invite_answer
        assert re.search(rf"^Contact: <sip:[^@]+@{HOST}:{b1_port}>", invite_answer, re.M), invite_answer
        assert bye_answer.startswith("SIP/2.0 200"), bye_answer

        before = sipp_calls(tmp_path, site_a, "udp", CALLS, RATE, name="before")
        assert (before.successful, before.failed) == (CALLS, 0)
        assert answered_by(tmp_path, "before", before) == {a1_port: CALLS}

        # Site A lost: both members SIGKILLed under load.
        outage: list[SippResult] = []
        runner = threading.Thread(
            target=lambda: outage.append(
                sipp_calls(tmp_path, site_a, "udp", OUTAGE_CALLS, OUTAGE_RATE, name="outage")
            )
        )
        runner.start()
        time.sleep(KILL_AFTER)
        killed_at, killed_wall = time.monotonic(), datetime.now()
        a1.signal(signal.SIGKILL)
        a2.signal(signal.SIGKILL)
        wait_for(
            lambda: "event 40001: SIP Server HA pair unavailable: pair site-a" in site_a.log_text(),
            "40001",
            timeout=15,
        )
        to_40001 = time.monotonic() - killed_at
        runner.join(timeout=60)
        assert outage, "the outage SIPp run did not finish"
        in_flight_failed = outage[0].failed
        via_b = invite_answers(sipp_trace(tmp_path / "outage_messages.log")).by(b1_port)
        assert via_b, "no call of the outage run went to site B"
        to_site_b = (via_b[0] - killed_wall).total_seconds()
        # The bound: failover-timeout + oos-force (the classic algorithm), plus scheduling slack.
        assert to_site_b <= FAILOVER_TIMEOUT + OOS_FORCE + SLACK, to_site_b

        after = sipp_calls(tmp_path, site_a, "udp", CALLS, RATE, name="after")
        assert (after.successful, after.failed) == (CALLS, 0)  # 0 failed after 40001
        assert answered_by(tmp_path, "after", after) == {b1_port: CALLS}
        # The other instance of site A found the outage on its own (it probes every pair).
        wait_for(
            lambda: "event 40001: SIP Server HA pair unavailable: pair site-a" in site_a2.log_text(),
            "40001 on the second instance",
            timeout=15,
        )
        after2 = sipp_calls(tmp_path, site_a2, "udp", CALLS, RATE, name="after2")
        assert (after2.successful, after2.failed) == (CALLS, 0)
        assert answered_by(tmp_path, "after2", after2) == {b1_port: CALLS}
        assert re.search(
            r"pair site-a out of service: \d+ endpoint request\(s\) sent to pair site-b",
            site_a.log_text(),
        )

        # Site A back: the calls come back to it.
        stack.enter_context(simulator(tmp_path, "a1-again", a1_port, "udp", mode="primary"))
        stack.enter_context(simulator(tmp_path, "a2-again", a2_port, "udp", mode="backup"))
        wait_for(
            lambda: "pair available again: pair site-a" in site_a.log_text(), "site A restored", timeout=15
        )
        back = sipp_calls(tmp_path, site_a, "udp", CALLS, RATE, name="back")
        assert (back.successful, back.failed) == (CALLS, 0)
        assert answered_by(tmp_path, "back", back) == {a1_port: CALLS}
        wait_for(
            lambda: "pair available again: pair site-a" in site_a2.log_text(),
            "site A restored on the second instance",
            timeout=15,
        )
        back2 = sipp_calls(tmp_path, site_a2, "udp", CALLS, RATE, name="back2")
        assert (back2.successful, back2.failed) == (CALLS, 0)
        assert answered_by(tmp_path, "back2", back2) == {a1_port: CALLS}
        print(
            f"MULTISITE before: {before.successful}/{CALLS} via site A; outage run: "
            f"{outage[0].successful} ok, {in_flight_failed} failed of {OUTAGE_CALLS} "
            f"(kill at {KILL_AFTER:.0f} s, {OUTAGE_RATE} calls/s); 40001 {to_40001:.1f} s and first call "
            f"via site B {to_site_b:.2f} s after the kill; "
            "after 40001: "
            f"{after.successful}/{CALLS} via site B, {after.failed} failed; restored: "
            f"{back.successful}/{CALLS} via site A; second site-A instance: {after2.successful}/{CALLS} "
            f"via site B during the outage, {back2.successful}/{CALLS} via site A once restored; "
            "cross-site call 200/200; "
            f"{time.monotonic() - started:.0f} s"
        )
