#!/usr/bin/env python3
"""Parser benchmark: sipha's SIP parser side by side with a pure-Python peer.

For every test message and every parser this measures messages per second of
the work a stateless proxy does on each message it relays:

1. parse the datagram (``bytes``) into a message object;
2. read the proxy-relevant fields: top Via branch and sent-by (host, port),
   Call-ID, CSeq number and method, From tag, To tag, Max-Forwards, the Route
   list, and the request URI (requests) or the status code (responses);
3. requests only: decrement Max-Forwards;
4. add one Via header on top and serialise the message back to ``bytes``.

Both parsers run in the same process, single-threaded, one after the other.
Each cell of the table is the best of several timed batches
(``time.perf_counter``; the cyclic garbage collector is disabled while a
batch runs, as ``timeit`` does).

Before timing, every parser's output is checked once: the extracted fields
must match the known values of the test message, and the re-serialised bytes
must carry the new Via on top, the decremented Max-Forwards, every other
header unchanged and the body intact with an exact Content-Length.

The peer parser is **not** a dependency of sipha (nor of its tests); install
it just for the benchmark::

    pip install -r bench/requirements.txt

Usage::

    python bench/parse.py [--seconds N] [--repeat R]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PEER_NAME = "sipmessage"
PEER_VERSION = "0.7.1"  # keep in sync with bench/requirements.txt

# The Via a proxy at 192.0.2.1 inserts when it forwards the message.
NEW_VIA = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKpx1a2b3c4d5e6f"

# ---------------------------------------------------------------------------
# Test messages
# ---------------------------------------------------------------------------

#: A typical initial INVITE from a phone, with an SDP offer (~700 bytes).
INVITE: bytes = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.101:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice Liddell" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.101:5060;transport=udp>\r\n"
    b"Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, UPDATE\r\n"
    b"Supported: replaces, timer\r\n"
    b"User-Agent: ExamplePhone/4.2.1\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 187\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.101\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.101\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=sendrecv\r\n"
)

#: The 200 OK to that INVITE as it reaches the first proxy on its way back:
#: two Vias (that proxy's own on top), To tag, Contact (~400 bytes).  The SDP
#: answer is left out so the message stays header-only (Content-Length: 0);
#: neither parser looks inside bodies, so this only shifts bytes, not work.
RESPONSE_200: bytes = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK8a2f1c7e.1\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.101:5060;branch=z9hG4bK776asdhds"
    b";rport=5060;received=192.0.2.101\r\n"
    b'From: "Alice Liddell" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:bob@192.0.2.4>\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

# (branch, host, port, call_id, cseq seq, cseq method, from tag, to tag,
#  max_forwards as read, number of Route entries, request URI / status code)
Fields = tuple[Any, ...]


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    is_request: bool
    expected: Fields


CASES: tuple[Case, ...] = (
    Case(
        name=f"INVITE + SDP ({len(INVITE)} B)",
        data=INVITE,
        is_request=True,
        expected=(
            "z9hG4bK776asdhds",
            "192.0.2.101",
            5060,
            "a84b4c76e66710@pc33.atlanta.example.com",
            314159,
            "INVITE",
            "1928301774",
            None,
            70,
            0,
            "sip:bob@biloxi.example.com",
        ),
    ),
    Case(
        name=f"200 OK, 2 Vias ({len(RESPONSE_200)} B)",
        data=RESPONSE_200,
        is_request=False,
        expected=(
            "z9hG4bK8a2f1c7e.1",
            "192.0.2.10",
            5060,
            "a84b4c76e66710@pc33.atlanta.example.com",
            314159,
            "INVITE",
            "1928301774",
            "a6c85cf",
            None,
            0,
            200,
        ),
    ),
)

# One proxy step: message bytes in, (forwarded bytes, fields read) out.
Work = Callable[[bytes], tuple[bytes, Fields]]

# ---------------------------------------------------------------------------
# The two contenders
# ---------------------------------------------------------------------------


def sipha_work() -> Work:
    """The proxy step written against ``sipha.sip``."""
    try:
        from sipha.sip import Request, parse_message  # noqa: PLC0415 - optional at run time
    except ImportError:
        # Running from a source checkout without sipha installed.
        src = Path(__file__).resolve().parent.parent / "src"
        if not src.is_dir() or str(src) in sys.path:
            raise
        sys.path.insert(0, str(src))
        from sipha.sip import Request, parse_message  # noqa: PLC0415 - optional at run time

    def work(data: bytes) -> tuple[bytes, Fields]:
        msg = parse_message(data)
        via = msg.top_via
        cseq = msg.cseq
        max_forwards = msg.max_forwards
        fields = (
            via.branch,
            via.host,
            via.port,
            msg.call_id,
            cseq.seq,
            cseq.method,
            msg.from_.tag,
            msg.to.tag,
            max_forwards,
            len(msg.routes),
            msg.uri if isinstance(msg, Request) else msg.status,
        )
        if isinstance(msg, Request) and max_forwards is not None:
            msg.set_max_forwards(max_forwards - 1)
        msg.push_via(NEW_VIA)
        return msg.to_bytes(), fields

    return work


def peer_work() -> Work:
    """The same proxy step written against the peer, ``sipmessage``.

    It uses the peer's typed accessors except for the top Via: the peer's
    ``msg.via`` parses *every* Via, so only the first Via header field is
    handed to ``Via.parse_many`` (the cheapest route its public API offers).
    The new Via is inserted as a raw string in front of the existing raw Via
    values, so the existing Vias are not re-serialised.
    """
    sipmessage: Any = importlib.import_module(PEER_NAME)
    parse = sipmessage.Message.parse
    parse_vias = sipmessage.Via.parse_many
    request_type = sipmessage.Request

    def work(data: bytes) -> tuple[bytes, Fields]:
        msg = parse(data)
        headers = msg.headers
        vias = headers.getlist("Via")
        via = parse_vias(vias[0])[0]
        cseq = msg.cseq
        max_forwards = msg.max_forwards
        fields = (
            via.parameters.get("branch"),
            via.host,
            via.port,
            msg.call_id,
            cseq.sequence,
            cseq.method,
            msg.from_address.parameters.get("tag"),
            msg.to_address.parameters.get("tag"),
            max_forwards,
            len(msg.route),
            msg.uri if isinstance(msg, request_type) else msg.code,
        )
        if isinstance(msg, request_type) and max_forwards is not None:
            msg.max_forwards = max_forwards - 1
        headers.setlist("Via", [NEW_VIA, *vias])
        return bytes(msg), fields

    return work


@dataclass
class Contender:
    label: str
    make: Callable[[], Work] | None  # None: not installed
    problem: str = ""


def load_contenders() -> tuple[Contender, Contender]:
    try:
        sipha_work()
        sipha = Contender("sipha", sipha_work)
    except ImportError as exc:
        sipha = Contender("sipha", None, f"sipha.sip is not importable ({exc})")

    try:
        version = importlib.metadata.version(PEER_NAME)
        importlib.import_module(PEER_NAME)
        peer = Contender(f"{PEER_NAME} {version}", peer_work)
        if version != PEER_VERSION:
            peer.problem = (
                f"note: {PEER_NAME} {version} is installed; the benchmark is "
                f"pinned to {PEER_VERSION} (bench/requirements.txt)"
            )
    except (ImportError, importlib.metadata.PackageNotFoundError):
        peer = Contender(
            PEER_NAME,
            None,
            f"The peer parser is not installed. For the benchmark only (it is "
            f"not a sipha dependency), run:  pip install {PEER_NAME}=={PEER_VERSION}",
        )
    return sipha, peer


# ---------------------------------------------------------------------------
# Output check (independent of both parsers)
# ---------------------------------------------------------------------------

_COMPACT = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
}
_COMMA = re.compile(r"\s*,\s*")


def _split(data: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("no blank line between headers and body")
    lines = head.decode("utf-8").split("\r\n")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # folded line
            name, value = headers.pop()
            headers.append((name, f"{value} {line.strip()}"))
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise ValueError(f"bad header line {line!r}")
        name = name.strip().lower()
        value = _COMMA.sub(", ", " ".join(value.split()))
        headers.append((_COMPACT.get(name, name), value))
    return lines[0], headers, body


def _values(headers: list[tuple[str, str]], name: str) -> list[str]:
    out: list[str] = []
    for key, value in headers:
        if key == name:
            out += [v.strip() for v in value.split(",")]
    return out


def check(case: Case, out: bytes, fields: Fields) -> list[str]:
    """Return a list of problems with one proxy step's result (empty if none)."""
    problems: list[str] = []
    got = tuple(str(f) if i == 10 and case.is_request else f for i, f in enumerate(fields))
    if got != case.expected:
        for i, (g, e) in enumerate(zip(got, case.expected, strict=True)):
            if g != e:
                problems.append(f"field #{i}: got {g!r}, expected {e!r}")

    start_in, hdrs_in, body_in = _split(case.data)
    try:
        start_out, hdrs_out, body_out = _split(out)
    except ValueError as exc:
        return [*problems, f"output does not split: {exc}"]
    if start_out != start_in:
        problems.append(f"start line changed: {start_out!r}")
    vias_in, vias_out = _values(hdrs_in, "via"), _values(hdrs_out, "via")
    if vias_out != [NEW_VIA, *vias_in]:
        problems.append(f"Via list is {vias_out!r}")
    mf_in, mf_out = _values(hdrs_in, "max-forwards"), _values(hdrs_out, "max-forwards")
    if case.is_request and mf_out != [str(int(mf_in[0]) - 1)]:
        problems.append(f"Max-Forwards is {mf_out!r}")
    if not case.is_request and mf_out != mf_in:
        problems.append(f"Max-Forwards is {mf_out!r}")
    # Every other header must survive; "A: x, y" and "A: x" + "A: y" are
    # equivalent (RFC 3261 section 7.3.1), and so is reordering across names.
    names = {name for name, _ in hdrs_in + hdrs_out} - {"via", "max-forwards"}
    problems.extend(
        f"{name} is {_values(hdrs_out, name)!r}"
        for name in sorted(names)
        if _values(hdrs_out, name) != _values(hdrs_in, name)
    )
    if body_out != body_in:
        problems.append("body changed")
    if _values(hdrs_out, "content-length") != [str(len(body_out))]:
        problems.append("Content-Length does not match the body")
    return problems


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------


def _batch(work: Work, data: bytes, n: int) -> float:
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            work(data)
        return time.perf_counter() - t0
    finally:
        if gc_was_enabled:
            gc.enable()


def measure(work: Work, data: bytes, seconds: float, repeat: int) -> float:
    """Best-of-``repeat`` messages per second, spending about ``seconds``."""
    # Calibrate: grow the batch until it takes >= 20 ms (also warms up).
    n = 1
    while (elapsed := _batch(work, data, n)) < 0.02:
        n *= 2
    per_batch = max(seconds / repeat, 0.02)
    n = max(1, int(n * per_batch / elapsed))
    best = min(_batch(work, data, n) for _ in range(repeat))
    return n / best


def _fmt_rate(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--seconds",
        type=float,
        default=2.0,
        help="approximate time per message per parser (default: 2)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=5,
        help="timed batches per measurement; the best is kept (default: 5)",
    )
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.repeat < 1:
        parser.error("--seconds must be > 0 and --repeat >= 1")

    for case in CASES:  # guard against editing the messages carelessly
        _, hdrs, body = _split(case.data)
        assert _values(hdrs, "content-length") == [str(len(body))], case.name

    contenders = load_contenders()
    status = 0
    for contender in contenders:
        if contender.problem:
            print(contender.problem)

    # Correctness first: a parser that gets the fields or the output wrong is
    # not timed.
    works: dict[tuple[str, str], Work] = {}
    for contender in contenders:
        if contender.make is None:
            continue
        work = contender.make()
        for case in CASES:
            problems = check(case, *work(case.data))
            if problems:
                status = 1
                print(f"{contender.label} fails on {case.name}:", file=sys.stderr)
                for problem in problems:
                    print(f"  - {problem}", file=sys.stderr)
            else:
                works[contender.label, case.name] = work

    peer = contenders[1]
    print()
    print("| message | sipha msg/s | peer msg/s | ratio (sipha / peer) |")
    print("|---|---:|---:|---:|")
    for case in CASES:
        rates: list[float | None] = []
        for contender in contenders:
            work_or_none = works.get((contender.label, case.name))
            rates.append(
                None if work_or_none is None else measure(work_or_none, case.data, args.seconds, args.repeat)
            )
        ours, theirs = rates
        ratio = "n/a" if ours is None or theirs is None else f"{ours / theirs:.2f}x"
        print(f"| {case.name} | {_fmt_rate(ours)} | {_fmt_rate(theirs)} | {ratio} |")
    print()
    peer_desc = peer.label if peer.make is not None else f"{PEER_NAME} (not installed)"
    print(
        f"peer: {peer_desc}; {platform.python_implementation()} "
        f"{platform.python_version()} on {platform.machine()} ({sys.platform}); "
        f"single thread, best of {args.repeat} batches"
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
