"""The proxy core alone: CPU per call of SIPp's ``uac`` call flow, with no I/O.

Replays the datagrams of N calls (INVITE, 180, 200, ACK, BYE, 200 for the BYE,
as SIPp's built-in ``uac`` and ``uas -aa`` scenarios send them) through one
:class:`sipha.proxy.core.ProxyCore` on a fake clock advancing at ``--rate`` calls
per second, firing its timers when due and serialising every message it sends,
exactly as the driver (``sipha.net.driver``) does between the sockets.  What it
measures is the sans-IO part of the per-call cost (parse, validate, transactions,
routing, serialise); the socket calls and the event loop come on top (see
``proxies.py`` for the whole).

The datagrams are recorded first by running the calls once through another core
and answering its forwarded requests as the SIPp UAS would; the replay checks
that the second core sends the same number of messages.

    .venv/bin/python bench/core.py                 # 20,000 calls at 5,000 calls/s
    .venv/bin/python bench/core.py --profile       # the same under cProfile (top 30)
    .venv-compiled/bin/python bench/core.py --stalls --calls 160000 --rate 3000
    .venv-compiled/bin/python bench/core.py --calls 110000 --rate 3000 --repeat 2 --each

``--stalls``: the slowest single steps (a datagram received, or the timers fired) of one
replay, wall clock.  The event loop reads nothing during a step: a long one (a dictionary
or heap rebuilt whole) fills the receive queue of a proxy near the top of its core.  Run
it past 32 s of simulated time (Timers J, L and M start ending transactions: the
steady state of a proxy's tables).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from dataclasses import dataclass

from sipha.assembly import build_settings, build_view
from sipha.config import load_config_text
from sipha.proxy.core import ProxyCore
from sipha.runtime import tune_gc
from sipha.sip import Request, Response, parse_message
from sipha.sip.address import Address

PROXY = Address("UDP", "127.0.0.1", 5060)
UAC = Address("UDP", "127.0.0.1", 5090)
UAS = Address("UDP", "127.0.0.1", 5080)

CONFIG = """
[proxy]
listen = ["udp:127.0.0.1:5060"]
record-route = "sip:127.0.0.1:5060;lr"

[[pair]]
name = "bench"
primary = "udp:127.0.0.1:5080"
backup = "udp:127.0.0.1:5081"
serving = true
"""

SDP = (
    "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def uac_request(
    method: str, call: int, cseq: int, branch: int, *, to_tag: str = "", route: str = ""
) -> bytes:
    """A request as SIPp's built-in uac sends it."""
    uri = "sip:service@127.0.0.1:5060" if not route else "sip:127.0.0.1:5080;transport=UDP"
    body = SDP if method == "INVITE" else ""
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-4242-{call}-{branch}",
        "From: sipp <sip:sipp@127.0.0.1:5090>;tag=4242SIPpTag00" + str(call),
        "To: service <sip:service@127.0.0.1:5060>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call}-4242@127.0.0.1",
        f"CSeq: {cseq} {method if method != 'ACK' else 'ACK'}",
        "Contact: sip:sipp@127.0.0.1:5090",
        "Max-Forwards: 70",
        "Subject: Performance Test",
    ]
    if route:
        lines.append(f"Route: {route}")
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def uas_response(request: Request, status: int, reason: str, to_tag: str) -> bytes:
    """A response as SIPp's uas -aa sends it: the request's Vias, Record-Route, dialog fields."""
    to = request.get("to") or ""
    if ";tag=" not in to:  # an in-dialog request (the BYE) carries the tag already
        to += f";tag={to_tag}"
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {value}" for value in request.get_all("via")]
    lines += [f"Record-Route: {value}" for value in request.get_all("record-route")]
    lines += [
        f"From: {request.get('from')}",
        f"To: {to}",
        f"Call-ID: {request.call_id}",
        f"CSeq: {request.get('cseq')}",
        "Contact: <sip:127.0.0.1:5080;transport=UDP>",
    ]
    body = SDP if status == 200 and request.method == "INVITE" else ""
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def new_core() -> ProxyCore:
    config = load_config_text(CONFIG)
    listen = [PROXY]
    return ProxyCore(build_settings(config, listen), build_view(config, listen), token=lambda: "sipha-bench")


@dataclass
class Datagram:
    at_call: int
    data: bytes
    source: Address


def forwarded(core: ProxyCore, method: str) -> Request:
    """The request the core just sent to the UAS."""
    for action in core.drain():
        if isinstance(action.message, Request) and action.message.method == method:
            return action.message
    raise AssertionError(f"the core did not forward the {method}")


def record(calls: int) -> tuple[list[Datagram], int]:
    """The datagrams of ``calls`` calls, and how many messages the core sent for them."""
    core = new_core()
    datagrams: list[Datagram] = []
    sent = 0

    def feed(call: int, data: bytes, source: Address) -> None:
        datagrams.append(Datagram(call, data, source))
        core.receive(data, source, float(call))

    for call in range(calls):
        to_tag = f"uas{call}"
        feed(call, uac_request("INVITE", call, 1, 0), UAC)
        invite = forwarded(core, "INVITE")
        sent += 2  # 100 Trying upstream, the INVITE downstream
        for status, reason in ((180, "Ringing"), (200, "OK")):
            feed(call, uas_response(invite, status, reason, to_tag), UAS)
            sent += len(core.drain())
        route = "<sip:127.0.0.1:5060;lr>"
        feed(call, uac_request("ACK", call, 1, 5, to_tag=to_tag, route=route), UAC)
        sent += len(core.drain())
        feed(call, uac_request("BYE", call, 2, 7, to_tag=to_tag, route=route), UAC)
        bye = forwarded(core, "BYE")
        sent += 1
        feed(call, uas_response(bye, 200, "OK", to_tag), UAS)
        sent += len(core.drain())
    return datagrams, sent


def replay(datagrams: list[Datagram], rate: float) -> tuple[float, int]:
    """CPU seconds to push the datagrams through a new core, and how many messages it sent."""
    core = new_core()
    sent = 0
    deadline: float | None = None
    tune_gc()  # as `sipha run` does
    started = time.process_time()
    for datagram in datagrams:
        now = datagram.at_call / rate
        if deadline is not None and deadline <= now:
            core.handle_timers(now)
        core.receive(datagram.data, datagram.source, now)
        for action in core.drain():
            action.message.to_bytes()
            sent += 1
        deadline = core.next_deadline()
    return time.process_time() - started, sent


def stalls(datagrams: list[Datagram], rate: float) -> list[tuple[float, float]]:
    """Each step's wall-clock time (s) and its simulated time (s), slowest first, for one replay."""
    core = new_core()
    deadline: float | None = None
    steps: list[tuple[float, float]] = []
    clock = time.perf_counter
    tune_gc()
    for datagram in datagrams:
        now = datagram.at_call / rate
        if deadline is not None and deadline <= now:
            started = clock()
            core.handle_timers(now)
            steps.append((clock() - started, now))
        started = clock()
        core.receive(datagram.data, datagram.source, now)
        for action in core.drain():
            action.message.to_bytes()
        deadline = core.next_deadline()
        steps.append((clock() - started, now))
    steps.sort(reverse=True)
    return steps


def print_stalls(datagrams: list[Datagram], rate: float) -> None:
    steps = stalls(datagrams, rate)
    slowest = ", ".join(f"{1000 * seconds:.1f} ms at {at:.1f} s" for seconds, at in steps[:5])
    over = {limit: sum(1 for seconds, _ in steps if seconds > limit / 1000) for limit in (5, 20, 50)}
    print(
        f"{len(steps)} steps over {datagrams[-1].at_call / rate:.0f} s simulated; slowest: {slowest};"
        f" over 5/20/50 ms: {over[5]}/{over[20]}/{over[50]}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=5_000.0, help="calls/s of the fake clock")
    parser.add_argument("--repeat", type=int, default=3, help="best of N replays")
    parser.add_argument("--profile", action="store_true", help="one replay under cProfile")
    parser.add_argument("--stalls", action="store_true", help="one replay: the slowest single steps")
    parser.add_argument(
        "--each",
        action="store_true",
        help="also print each replay's CPU per call, in order: the second and later replays run in a"
        " process that already carried the whole load once, as a proxy in service has",
    )
    options = parser.parse_args()
    datagrams, expected = record(options.calls)
    if not isinstance(parse_message(datagrams[1].data), Response):
        print("the recording is wrong: the second datagram is not the 180", file=sys.stderr)
        return 1
    if options.stalls:
        print_stalls(datagrams, options.rate)
        return 0
    if options.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        replay(datagrams, options.rate)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        return 0
    best = float("inf")
    for number in range(options.repeat):
        seconds, sent = replay(datagrams, options.rate)
        if sent != expected:
            print(f"the replay sent {sent} messages, the recording {expected}", file=sys.stderr)
            return 1
        best = min(best, seconds)
        if options.each:
            print(f"replay {number + 1}: {seconds / options.calls * 1e6:.1f} us CPU per call", flush=True)
    per_call = best / options.calls * 1e6
    received = len(datagrams) / options.calls
    print(
        f"{options.calls} calls, {received:.0f} datagrams in and {expected / options.calls:.0f} out per call:"
        f" {per_call:.1f} us CPU per call ({per_call / received:.1f} us per datagram received),"
        f" {options.calls / best:,.0f} calls/s on one core (best of {options.repeat})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
