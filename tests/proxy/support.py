"""Shared fixtures for the proxy core tests: a core on a fake clock, and message builders."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count

from sipha.ha import AliveCodes, Monitor, MonitorSettings
from sipha.proxy.core import ProxyCore, ProxySettings
from sipha.proxy.targets import Lookup
from sipha.proxy.view import ConfiguredView, PairSpec
from sipha.sip import Request, Response, parse_message
from sipha.sip.address import Address
from sipha.txn import SendMessage
from tests.clock import run_timers

PROXY = Address("UDP", "127.0.0.1", 5060)
PRIMARY = Address("UDP", "127.0.0.1", 5070)
BACKUP = Address("UDP", "127.0.0.1", 5080)
ALICE = Address("UDP", "127.0.0.1", 5061)
RECORD_ROUTE = "sip:proxy.example.com;lr"


def make_view() -> ConfiguredView:
    return ConfiguredView.build(
        [("127.0.0.1", 5060), ("proxy.example.com", None)],
        [PairSpec("demo", PRIMARY, BACKUP, serving=True)],
    )


@dataclass
class Harness:
    """A proxy core driven by hand: ``now`` is the fake clock."""

    core: ProxyCore
    now: float = 0.0
    sent: list[SendMessage] = field(default_factory=list)
    lookups: list[Lookup] = field(default_factory=list)
    """The RFC 3263 lookups the core asked for (answered by :meth:`locate`)."""
    failed_targets: list[Address] = field(default_factory=list)
    """The RFC 3263 targets the core reported as failed."""

    def feed(self, data: bytes, source: Address = ALICE) -> list[SendMessage]:
        self.core.receive(data, source, self.now)
        return self._collect()

    def advance(self, seconds: float) -> list[SendMessage]:
        """Move the clock, firing every deadline on the way, in order."""
        self.now = run_timers(self.core, self.core.handle_timers, self.now, self.now + seconds)
        return self._collect()

    def transport_error(self, destination: Address) -> list[SendMessage]:
        """The transport reports that ``destination`` could not be reached."""
        self.core.transport_error(destination, self.now)
        return self._collect()

    def locate(self, *targets: Address) -> list[SendMessage]:
        """The driver's part of RFC 3263: every lookup asked for so far gets ``targets`` (or none)."""
        lookups, failed = self.core.drain_lookups()
        self.lookups += lookups
        self.failed_targets += failed
        for lookup in lookups:
            self.core.located(lookup.key, targets, self.now)
        return self._collect()

    def _collect(self) -> list[SendMessage]:
        self.failed_targets += self.core.failed_targets
        self.core.failed_targets.clear()
        out = self.core.drain()
        self.sent.extend(out)
        return out


def harness(**settings: object) -> Harness:
    tokens = count(1)
    core = ProxyCore(
        ProxySettings(
            record_route=RECORD_ROUTE,
            via={"UDP": ("127.0.0.1", 5060), "TCP": ("127.0.0.1", 5060)},
            **settings,  # type: ignore[arg-type]
        ),
        make_view(),
        token=lambda: f"t{next(tokens)}",
    )
    return Harness(core)


def invite(
    *,
    uri: str = "sip:service@127.0.0.1:5060",
    branch: str = "z9hG4bK-alice-1",
    call_id: str = "call-1@alice",
    extra: str = "",
    method: str = "INVITE",
    cseq: int = 1,
    to_tag: str = "",
    max_forwards: int | None = 70,
    via_host: str = "127.0.0.1:5061",
    body: bytes = b"v=0\r\n",
) -> bytes:
    mf = "" if max_forwards is None else f"Max-Forwards: {max_forwards}\r\n"
    content_type = "Content-Type: application/sdp\r\n" if body else ""
    to = "<sip:service@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    head = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {via_host};branch={branch};rport\r\n"
        f"{mf}"
        f'From: "Alice" <sip:alice@127.0.0.1:5061>;tag=a1\r\n'
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"Contact: <sip:alice@127.0.0.1:5061>\r\n"
        f"{extra}"
        f"{content_type}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def response_to(
    request: Request, status: int, reason: str, *, to_tag: str = "srv1", extra: str = ""
) -> bytes:
    """A response from the server to the request it received (all Vias copied)."""
    lines = [f"SIP/2.0 {status} {reason}"]
    for name, value in request.headers:
        if name == "via":
            lines.append(f"Via: {value}")
        elif name in {"from", "call-id", "cseq", "record-route"}:
            lines.append(f"{name}: {value}")
        elif name == "to":
            lines.append(f"To: {value}" + (f";tag={to_tag}" if to_tag and status > 100 else ""))
    if extra:
        lines.append(extra.rstrip("\r\n"))
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def only(sent: list[SendMessage], destination: Address | None = None) -> SendMessage:
    chosen = [s for s in sent if destination is None or s.destination == destination]
    assert len(chosen) == 1, chosen
    return chosen[0]


def as_request(message: SendMessage) -> Request:
    parsed = parse_message(message.message.to_bytes())
    assert isinstance(parsed, Request)
    return parsed


def as_response(message: SendMessage) -> Response:
    parsed = parse_message(message.message.to_bytes())
    assert isinstance(parsed, Response)
    return parsed


def cancel(**fields: object) -> bytes:
    """The CANCEL of :func:`invite` called with the same ``fields`` (§9.1: same Via, CSeq number)."""
    return invite(method="CANCEL", body=b"", **fields)  # type: ignore[arg-type]


def ack_2xx(
    *,
    uri: str = "sip:srv@127.0.0.1:5070",
    branch: str = "z9hG4bK-alice-ack",
    route: str | None = f"<{RECORD_ROUTE}>",
    max_forwards: int | None = 70,
    to_tag: str = "srv1",
) -> bytes:
    """The ACK for a 2xx to :func:`invite`: a new transaction, in the dialog, via the Record-Route."""
    extra = "" if route is None else f"Route: {route}\r\n"
    return invite(
        method="ACK", uri=uri, branch=branch, to_tag=to_tag, extra=extra, max_forwards=max_forwards, body=b""
    )


def requests(sent: list[SendMessage], destination: Address | None = None) -> list[Request]:
    """The requests among ``sent`` (to ``destination``), parsed back from their bytes."""
    return [
        as_request(s)
        for s in sent
        if isinstance(s.message, Request) and (destination is None or s.destination == destination)
    ]


def responses(sent: list[SendMessage], destination: Address | None = None) -> list[Response]:
    """The responses among ``sent`` (to ``destination``), parsed back from their bytes."""
    return [
        as_response(s)
        for s in sent
        if isinstance(s.message, Response) and (destination is None or s.destination == destination)
    ]


def statuses(sent: list[SendMessage], destination: Address = ALICE) -> list[int]:
    """The status codes sent to ``destination``."""
    return [r.status for r in responses(sent, destination)]


def forward_invite(h: Harness, data: bytes | None = None) -> Request:
    """Feed an INVITE from Alice and return the one request it caused toward the primary."""
    sent = h.feed(invite() if data is None else data)
    assert statuses(sent) == [100]
    return as_request(only(sent, PRIMARY))


# ---------------------------------------------------------------------- high availability


@dataclass
class HaHarness(Harness):
    """A core with a pair monitor (docs/design.md §2) on the fake clock; probes can be answered by hand."""

    answered: set[str] = field(default_factory=set)
    """Branches of the OPTIONS probes answered so far (retransmissions share the branch)."""

    def probes(self, member: Address | None = None) -> list[Request]:
        """Every distinct OPTIONS probe sent so far (to ``member``), in order; retransmissions left out."""
        seen: dict[str, Request] = {}
        for request in requests(self.sent, member):
            branch = request.top_via.branch or ""
            if request.method == "OPTIONS" and branch.endswith(".probe") and branch not in seen:
                seen[branch] = request
        return list(seen.values())

    def pending_probes(self, member: Address) -> list[Request]:
        return [p for p in self.probes(member) if (p.top_via.branch or "") not in self.answered]

    def answer_probes(self, member: Address, status: int = 200) -> list[SendMessage]:
        """``member`` answers every probe it has not answered yet (``status``, 200 by default)."""
        out: list[SendMessage] = []
        for probe in self.pending_probes(member):
            self.answered.add(probe.top_via.branch or "")
            reason = "OK" if status < 300 else "Not Alive"
            out += self.feed(response_to(probe, status, reason, to_tag=f"m{member.port}"), member)
        return out

    def run(self, seconds: float, *, alive: Address | None = None) -> list[SendMessage]:
        """Move the clock deadline by deadline; ``alive`` answers each of its probes as it is sent."""
        end = self.now + seconds
        out: list[SendMessage] = []
        if alive is not None:
            out += self.answer_probes(alive)
        while True:
            deadline = self.core.next_deadline()
            if deadline is None or deadline > end:
                break
            out += self.advance(max(deadline - self.now, 0.0))
            if alive is not None:
                out += self.answer_probes(alive)
        out += self.advance(end - self.now)
        return out


def ha_harness(
    *,
    oos_check: float = 5.0,
    oos_force: float = 5.0,
    takeover: float = 0.0,
    primary_active: bool = False,
    **settings: object,
) -> HaHarness:
    """A core with ``monitor=Monitor([view.members("demo")], ...)``, started at t = 0.

    ``primary_active``: the primary answers the first probe, so that the pair starts active on it.
    ``takeover``: takeover-timeout (0, the default here: the classic algorithm, 503 at once).
    """
    tokens = count(1)
    view = make_view()
    monitor = demo_monitor(view, oos_check=oos_check, oos_force=oos_force, takeover=takeover)
    core = ProxyCore(
        ProxySettings(
            record_route=RECORD_ROUTE,
            via={"UDP": ("127.0.0.1", 5060), "TCP": ("127.0.0.1", 5060)},
            **settings,  # type: ignore[arg-type]
        ),
        view,
        token=lambda: f"t{next(tokens)}",
        monitor=monitor,
    )
    h = HaHarness(core)
    core.start(h.now)
    h._collect()
    if primary_active:
        h.answer_probes(PRIMARY)
    return h


def demo_monitor(view: ConfiguredView, *, oos_check: float, oos_force: float, takeover: float) -> Monitor:
    """The pair monitor of the ``demo`` pair of ``view`` (alive codes: any 2xx)."""
    settings = MonitorSettings(
        oos_check=oos_check,
        oos_force=oos_force,
        alive_codes=AliveCodes.parse(["2xx"]),
        takeover_timeout=takeover,
    )
    return Monitor([view.members("demo")], settings)
