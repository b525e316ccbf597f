"""The seed corpus of the fuzz harnesses, built from the messages already in the repository.

* the RFC 4475 §3.1 torture messages (tests/sip/fixtures/rfc4475, byte-exact);
* every message the SIPp scenarios of tests/scenarios send, their keywords filled in
  (:func:`scenario_messages`);
* call flows through a core (:func:`core_flows`): each one is recorded as the core
  harness replays it (tests/fuzz/fuzz_core.py), so that the fuzzer starts from inputs
  that reach a forwarded INVITE, a 200 relayed, an ACK and a BYE in the dialog, a
  CANCEL, a failover to the backup, a stream over TCP.

``python -m tests.fuzz.seeds DIR`` writes DIR/parser, DIR/framer and DIR/core.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from sipha.sip import Request, StreamFramer
from sipha.sip.address import Address
from sipha.txn import SendMessage
from tests.fuzz import fuzz_core
from tests.fuzz.fuzz_core import SEPARATOR, SOURCES
from tests.proxy.support import (
    ALICE,
    BACKUP,
    PRIMARY,
    RECORD_ROUTE,
    Harness,
    ack_2xx,
    as_request,
    cancel,
    invite,
    response_to,
)
from tests.sip.rfc4475_cases import FIXTURE_DIR

SCENARIOS: Final = Path(__file__).resolve().parent.parent / "scenarios"
TARGETS: Final = ("parser", "framer", "core")

# What SIPp would put for each keyword: a caller at 127.0.0.1:5061 calling "service" through
# the proxy at 127.0.0.1:5060; a callee answering a request the proxy forwarded.
_CALLER_VIA: Final = "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-alice-1;rport"
_PROXY_VIA: Final = "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-proxy.0;rport"
_KEYWORDS: Final = {
    "service": "service",
    "remote_ip": "127.0.0.1",
    "remote_port": "5060",
    "local_ip": "127.0.0.1",
    "local_port": "5061",
    "transport": "UDP",
    "call_number": "1",
    "pid": "4242",
    "local_ip_type": "4",
    "media_ip_type": "4",
    "media_ip": "127.0.0.1",
    "media_port": "6000",
    "next_url": "sip:service@127.0.0.1:5070",
    "peer_tag_param": ";tag=srv1",
    "routes": f"Route: <{RECORD_ROUTE}>",
    "$via1": f" {_PROXY_VIA}",
    "$via2": f" {_CALLER_VIA}",
    "$cseq": "1",
    "host": "sip.example.com",  # -key host NAME (uac_to_host.xml: a Request-URI naming a host)
    "last_Via:": f"Via: {_PROXY_VIA}\r\nVia: {_CALLER_VIA}",
    "last_From:": 'From: "Alice" <sip:alice@127.0.0.1:5061>;tag=a1',
    "last_To:": "To: <sip:service@127.0.0.1>",
    "last_Call-ID:": "Call-ID: call-1@alice",
    "last_CSeq:": "CSeq: 1 INVITE",
    "last_Contact:": "Contact: <sip:alice@127.0.0.1:5061>",
}
_ELEMENT_RE: Final = re.compile(r"<(send|recv)\b[^>]*?(?:/>|>(.*?)</\1>)", re.DOTALL)
_CDATA_RE: Final = re.compile(r"<!\[CDATA\[(.*?)\]\]>", re.DOTALL)
_KEYWORD_RE: Final = re.compile(r"\[([$A-Za-z_][-A-Za-z_:0-9]*)\]")
_BRANCH_BACK_RE: Final = re.compile(r"\[branch-([0-9]+)\]")


def rfc4475_messages() -> dict[str, bytes]:
    """The RFC 4475 §3.1 torture messages, by name."""
    return {path.stem: path.read_bytes() for path in sorted(FIXTURE_DIR.glob("*.dat"))}


def scenario_messages() -> dict[str, bytes]:
    """Every message the SIPp scenarios send, as SIPp would send it, by ``<scenario>-<index>``."""
    messages: dict[str, bytes] = {}
    for path in sorted(SCENARIOS.glob("*.xml")):
        text = path.read_text(encoding="iso-8859-1")
        for index, element in enumerate(_ELEMENT_RE.finditer(text)):
            cdata = _CDATA_RE.search(element.group(2) or "")
            if element.group(1) == "send" and cdata is not None:
                messages[f"{path.stem}-{index}"] = sipp_message(cdata.group(1), f"{path.stem}-{index}", index)
    return messages


def sipp_message(template: str, call: str, index: int) -> bytes:
    """A SIPp ``<send>`` text as SIPp sends it: lines trimmed, CRLF, keywords and [len] filled in."""

    def branch_back(match: re.Match[str]) -> str:
        return f"z9hG4bK-{call.rsplit('-', 1)[0]}-{index - int(match.group(1))}"

    def keyword(match: re.Match[str]) -> str:
        return _KEYWORDS.get(match.group(1), match.group(0))

    text = _BRANCH_BACK_RE.sub(branch_back, template.replace("[branch]", f"z9hG4bK-{call}"))
    text = text.replace("[call_id]", f"{call}@127.0.0.1")
    lines = [line.strip() for line in _KEYWORD_RE.sub(keyword, text).strip().splitlines()]
    blank = lines.index("") if "" in lines else len(lines)
    head = [line for line in lines[:blank] if line]
    body = "".join(f"{line}\r\n" for line in lines[blank + 1 :])
    message = "\r\n".join(head) + "\r\n\r\n" + body
    return message.replace("[len]", str(len(body.encode()))).encode()


# ---------------------------------------------------------------------- call flows through a core


class Recorder:
    """Drives a core as :func:`fuzz_core.fuzz_one_input` does, recording the input that replays it."""

    def __init__(self, setup: int) -> None:
        self.setup = setup
        self.h: Harness = fuzz_core.setup(setup)
        self.framers: dict[Address, StreamFramer] = {}
        self.records: list[bytes] = []
        self.idled = 0

    def idle(self, seconds: int) -> None:
        """Let ``seconds`` pass; the next record waits them before it is delivered (the same timers fire)."""
        self.h.advance(float(seconds))
        self.idled += seconds

    def send(self, source: Address, data: bytes, *, wait: int = 0) -> list[SendMessage]:
        """``data`` from ``source`` after ``wait`` seconds (idled ones included: < 32); what the core sent."""
        record = bytes([(self.idled + wait) << 3 | SOURCES.index(source)]) + data
        self.records.append(record)
        self.idled = 0
        self.h.advance(float(wait))
        return fuzz_core.feed(self.h, self.framers, source, data)

    def last_request(self, destination: Address, method: str = "INVITE") -> Request:
        """The last ``method`` request sent to ``destination``."""
        sent = [s for s in self.h.sent if s.destination == destination and isinstance(s.message, Request)]
        chosen = [as_request(s) for s in sent if s.message.method == method]  # type: ignore[union-attr]
        assert chosen, (destination, method, self.h.sent)
        return chosen[-1]

    def input(self) -> bytes:
        return bytes([self.setup]) + SEPARATOR.join(self.records)


BYE_FROM_ALICE: Final = invite(
    method="BYE",
    uri="sip:srv@127.0.0.1:5070",
    branch="z9hG4bK-alice-bye",
    cseq=2,
    to_tag="srv1",
    extra=f"Route: <{RECORD_ROUTE}>\r\n",
    body=b"",
)
BYE_FROM_SERVER: Final = (
    "BYE sip:alice@127.0.0.1:5061 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-srv-bye\r\n"
    f"Route: <{RECORD_ROUTE}>\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:service@127.0.0.1>;tag=srv1\r\n"
    'To: "Alice" <sip:alice@127.0.0.1:5061>;tag=a1\r\n'
    "Call-ID: call-1@alice\r\n"
    "CSeq: 7 BYE\r\n"
    "Content-Length: 0\r\n\r\n"
).encode()


def flow_call(setup: int, *, callee_hangs_up: bool = False) -> bytes:
    """INVITE, 180, 200, ACK, then a BYE from the caller (or the callee) and its 200."""
    r = Recorder(setup)
    r.send(ALICE, invite())
    forwarded = r.last_request(PRIMARY)
    r.send(PRIMARY, response_to(forwarded, 180, "Ringing"))
    r.send(PRIMARY, response_to(forwarded, 200, "OK", extra="Contact: <sip:srv@127.0.0.1:5070>"))
    r.send(ALICE, ack_2xx())
    if callee_hangs_up:
        r.send(PRIMARY, BYE_FROM_SERVER, wait=5)
        r.send(ALICE, response_to(r.last_request(ALICE, "BYE"), 200, "OK", to_tag=""))
    else:
        r.send(ALICE, BYE_FROM_ALICE, wait=5)
        r.send(PRIMARY, response_to(r.last_request(PRIMARY, "BYE"), 200, "OK", to_tag=""))
    return r.input()


def flow_cancel(setup: int) -> bytes:
    """INVITE, 180, CANCEL, 200 (CANCEL), 487 (INVITE), ACK (§9.1, §16.10)."""
    r = Recorder(setup)
    r.send(ALICE, invite())
    forwarded = r.last_request(PRIMARY)
    r.send(PRIMARY, response_to(forwarded, 180, "Ringing"))
    r.send(ALICE, cancel(), wait=1)
    r.send(PRIMARY, response_to(r.last_request(PRIMARY, "CANCEL"), 200, "OK"))
    r.send(PRIMARY, response_to(forwarded, 487, "Request Terminated"))
    r.send(ALICE, invite(method="ACK", body=b"", to_tag="srv1"))
    return r.input()


def flow_failover() -> bytes:
    """A pair monitor, the primary active; it never answers the INVITE, which moves to the backup."""
    r = Recorder(3)
    r.send(ALICE, invite())
    answered: set[str] = set()
    for _ in range(6):
        r.idle(1)
        for send in r.h.sent:
            request = send.message
            if send.destination == BACKUP and isinstance(request, Request):
                branch = request.top_via.branch or ""
                if branch not in answered:
                    answered.add(branch)
                    r.send(BACKUP, response_to(as_request(send), 200, "OK", to_tag="srv2"))
    return r.input()


def flow_transport_error() -> bytes:
    """No pair monitor: the primary is unreachable (ICMP, refused), an INVITE gets a 5xx."""
    r = Recorder(0)
    r.send(ALICE, invite())
    r.send(PRIMARY, b"", wait=1)
    return r.input()


def flow_tcp(setup: int) -> bytes:
    """An INVITE over TCP (a keepalive ping first), answered over UDP; then a stream that cannot be framed."""
    alice_tcp = SOURCES[3]
    r = Recorder(setup)
    data = invite(via_host="127.0.0.1:5061").replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP", 1)
    r.send(alice_tcp, b"\r\n\r\n" + data[:100])
    r.send(alice_tcp, data[100:])
    forwarded = r.last_request(PRIMARY)
    r.send(PRIMARY, response_to(forwarded, 486, "Busy Here"))
    r.send(
        alice_tcp, invite(method="ACK", body=b"", to_tag="srv1").replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP", 1)
    )
    r.send(SOURCES[4], b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5070\r\n\r\n")
    return r.input()


def core_flows() -> dict[str, bytes]:
    """The recorded call flows, by name (each with and without a pair monitor)."""
    flows: dict[str, bytes] = {}
    for setup in (0, 3):
        flows[f"call-{setup}"] = flow_call(setup)
        flows[f"callee-bye-{setup}"] = flow_call(setup, callee_hangs_up=True)
        flows[f"cancel-{setup}"] = flow_cancel(setup)
        flows[f"tcp-{setup}"] = flow_tcp(setup)
    flows["call-small-limits"] = flow_call(8)
    # overload-ctrl-dialog-rate 1/s: the second and third new INVITE of the same second get 503.
    flows["overload"] = b"\x10" + SEPARATOR.join(
        b"\x00" + invite(call_id=f"call-{n}@alice", branch=f"z9hG4bK-alice-o{n}") for n in range(3)
    )
    flows["failover"] = flow_failover()
    flows["transport-error"] = flow_transport_error()
    # Draining (SIGTERM): a new INVITE gets 503, a BYE in a dialog still goes through.
    flows["draining"] = b"\x04" + SEPARATOR.join((b"\x00" + invite(), b"\x00" + BYE_FROM_ALICE))
    return flows


# ---------------------------------------------------------------------- the corpus of each target


def messages() -> dict[str, bytes]:
    """Every single message: RFC 4475 first, then the scenarios'."""
    return {**{f"rfc4475-{k}": v for k, v in rfc4475_messages().items()}, **scenario_messages()}


def corpus(target: str) -> Iterator[tuple[str, bytes]]:
    """The seeds of ``target`` (one of :data:`TARGETS`), by file name."""
    singles = messages()
    if target == "parser":
        yield from singles.items()
    elif target == "framer":
        names = list(singles)
        for index, name in enumerate(names):
            yield f"{name}-whole", b"\x00" + singles[name]
            # Two messages back to back, with a keepalive between them, cut in short reads.
            other = singles[names[(index + 1) % len(names)]]
            yield f"{name}-pieces", bytes([1 + index % 254]) + singles[name] + b"\r\n\r\n" + other
    elif target == "core":
        for name, data in singles.items():
            yield f"{name}-from-caller", b"\x00\x00" + data
            yield f"{name}-from-primary", b"\x03\x01" + data
            yield f"{name}-over-tcp", b"\x00\x03" + data
        yield from core_flows().items()
    else:
        raise ValueError(f"unknown fuzz target {target!r}: one of {', '.join(TARGETS)}")


def write(directory: Path) -> dict[str, int]:
    """Write the corpus of every target under ``directory``; return how many seeds each has."""
    counts: dict[str, int] = {}
    for target in TARGETS:
        folder = directory / target
        folder.mkdir(parents=True, exist_ok=True)
        counts[target] = 0
        for name, data in corpus(target):
            (folder / name).write_bytes(data)
            counts[target] += 1
    return counts


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m tests.fuzz.seeds DIRECTORY")
    for target, count in write(Path(sys.argv[1])).items():
        print(f"{target}: {count} seeds in {Path(sys.argv[1]) / target}")
