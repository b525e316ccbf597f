"""The RFC 3261 §16 stateful proxy core: the transaction user on top of :mod:`sipha.txn`.

Sans-IO: :meth:`ProxyCore.receive` takes the bytes of one message, where they
came from and the time; :meth:`ProxyCore.drain` returns what to send, and
:meth:`ProxyCore.next_deadline` when to call :meth:`ProxyCore.handle_timers`.

One request, one *response context* (§16.1): the server transaction it
arrived on, the client transaction it was forwarded on, the best final
response so far, and Timer C for INVITEs.  sipha forwards each request to one
target (the active member of a pair, or the next hop of a Route), so a context
has one branch; the selection rules of §16.7 are kept general all the same.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from sipha.ha import (
    HaEvent,
    Member,
    MemberBecameActive,
    Monitor,
    PairOutOfService,
    PairUnknown,
    Probe,
    State,
    build_options,
)
from sipha.proxy.routing import (
    RETRY_AFTER_SECONDS,
    Answer,
    Forward,
    decide,
    is_keepalive,
    uri_port,
)
from sipha.proxy.via import response_destination, stamp_received
from sipha.proxy.view import ConfiguredView
from sipha.sip import (
    DEFAULT_LIMITS,
    ParserLimits,
    Request,
    Response,
    SipParseError,
    SipUri,
    make_response,
    parse_message,
    parse_uri,
)
from sipha.sip.address import Address, default_port
from sipha.sip.grammar import split_commas
from sipha.sip.headers import branch_via
from sipha.txn import (
    AckReceived,
    RequestReceived,
    ResponseReceived,
    SendMessage,
    StrayResponse,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
)
from sipha.txn.keys import TransactionKey
from sipha.txn.machines import ClientTransaction, ServerTransaction, build_ack
from sipha.txn.timers import TimerConfig

MAGIC_COOKIE: Final = "z9hG4bK"
# §16.6 step 11: "Timer C MUST be set ... the timer MUST be greater than 3 minutes."
TIMER_C: Final = 181.0
# §16.6 step 3: "If the copy does not contain a Max-Forwards header field, the proxy MUST
# add one with a field value, which SHOULD be 70."
DEFAULT_MAX_FORWARDS: Final = 70
# Requests that may create a dialog, so that the proxy Record-Routes them (§16.6 step 4;
# RFC 3515 REFER, RFC 6665 SUBSCRIBE/NOTIFY).
DIALOG_CREATING: Final = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})
ALLOWED_SCHEMES: Final = frozenset({"sip", "sips", "tel"})
# Retry-After of the 503 to a new INVITE over overload-ctrl-dialog-rate: the bucket refills
# within a second (RFC 3261 §21.5.4, §20.33).
OVERLOAD_RETRY_AFTER: Final = 1
# Retry-After of the 503 to a new request while draining (SIGTERM): the caller should use
# another instance of the pool meanwhile (RFC 3263 §4.3); this one is coming back.
DRAIN_RETRY_AFTER: Final = RETRY_AFTER_SECONDS
# Calls set up through this instance (a 2xx to a dialog-creating INVITE relayed) are
# remembered until their BYE, so that a drain can wait for them; a call whose BYE goes
# elsewhere (another pool instance, or none) is forgotten after CALL_MEMORY, and at most
# CALL_LIMIT are remembered (the oldest go first).
CALL_MEMORY: Final = 3600.0
CALL_LIMIT: Final = 200_000


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """What the core needs of the configuration."""

    record_route: str
    """The Record-Route URI (the pool FQDN with ;lr)."""
    via: dict[str, tuple[str, int]]
    """Per transport (UDP, TCP, TLS): the host and port put in our Via sent-by."""
    supported: frozenset[str] = frozenset()
    """Option tags a Proxy-Require may name (§16.3 step 6)."""
    timers: TimerConfig = field(default_factory=TimerConfig)
    timer_c: float = TIMER_C
    limits: ParserLimits = DEFAULT_LIMITS
    failover_timeout: float = 1.0
    """s without any response from a pair member (INVITE: without a provisional one) before
    the pair is re-probed at once and the request held for the member that answers."""
    hold_limit: float = 11.0
    """How long a held request waits for a pair to get an active member before 503: a bound
    behind the pair monitor's own (40001 ends every hold at once)."""
    overload_rate: float = 0.0
    """``overload-ctrl-dialog-rate``: new INVITEs per second (token bucket, burst = the rate,
    at least 1); over it, 503 with Retry-After.  0 = no limit."""
    branch_tag: str = ""
    """Appended to the branch of every request this core sends (``.w1``: worker 1 of
    ``[proxy] workers``), so that responses reach the worker holding the transaction
    (:mod:`sipha.proxy.affinity`).  Empty with one worker."""


@dataclass(slots=True, eq=False)
class ResponseContext:
    """§16.1 response context of one forwarded request."""

    server: ServerTransaction
    request: Request
    forwarded: Request | None = None
    client: ClientTransaction | None = None
    destination: Address | None = None
    provisional: bool = False
    final_sent: bool = False
    cancel_pending: bool = False
    cancelled: bool = False
    cancel_sent: bool = False
    timer_c_fired: bool = False
    best: Response | None = None
    timer_c: float | None = None
    pair: str | None = None
    member: Member | None = None
    responded: bool = False
    failover_at: float | None = None
    held_until: float | None = None
    hold_deadline: float | None = None
    """When the first hold began plus hold-limit: the bound of all holds of this request."""
    attempt: int = 0
    responded_members: set[Member] = field(default_factory=set)
    """Members that answered a branch given up on: the request is never sent to them again."""
    abandoned: list[str] = field(default_factory=list)
    """Branches of this request given up on (forgotten with the context)."""
    resumed: str | None = None
    """A given-up branch that answered after all, while the request was still held."""
    suspended: bool = False
    """Held with its branch still live: failover-timeout fired, but nothing says the member is
    dead, so its transaction goes on retransmitting while the pair is re-probed.  The branch
    continues if that member is found active again (never a second copy to it), and is given
    up if another member is."""


@dataclass(slots=True)
class Counters:
    """What the core counts (exported as metrics by the admin surface later)."""

    requests_in: int = 0
    responses_in: int = 0
    parse_errors: int = 0
    requests_refused: int = 0
    requests_forwarded: int = 0
    responses_forwarded: int = 0
    stray_responses_dropped: int = 0
    loops_detected: int = 0
    overload_rejections: int = 0
    """New INVITEs refused with 503 by overload-ctrl-dialog-rate."""
    drain_rejections: int = 0
    """New out-of-dialog requests refused with 503 while draining (SIGTERM)."""
    reoffered: int = 0
    """Ringing INVITEs moved from a member that died to the member that took over."""


class ProxyCore:
    """RFC 3261 §16 proxy behaviour over the §17 transaction layer."""

    def __init__(
        self,
        settings: ProxySettings,
        view: ConfiguredView,
        *,
        token: Callable[[], str] | None = None,
        monitor: Monitor | None = None,
    ) -> None:
        self.settings = settings
        self.view = view
        self.monitor = monitor
        self.events: list[HaEvent] = []
        self._probes: dict[TransactionKey, Probe] = {}
        # The member whose failure made each pair unknown, until another member takes over.
        self._suspected: dict[str, Member] = {}
        self._held: dict[str, list[ResponseContext]] = {}
        # When each member last answered a request forwarded to it (any response; the key
        # None gathers the next hops outside the pairs, never failed over).
        self._heard: dict[Member | None, float] = {}
        # When a transport error (ICMP, refused or reset connection) last came from each member:
        # later than anything heard from it, it confirms the member is gone (not just silent).
        self._unreachable: dict[Member, float] = {}
        # Branches given up on a dead member: their late responses are dropped, not relayed.
        # Branches given up on a member: branch -> (forget after, context, member).
        self._abandoned: dict[str, tuple[float, ResponseContext, Member | None]] = {}
        self._abandoned_pruned = 0.0
        # The core's own timers (Timer C, failover, hold) in one heap with lazy deletion:
        # (deadline, sequence, context, attribute); an entry whose context attribute no
        # longer holds that deadline is stale.  O(log n) per timer, whatever the load.
        self._deadlines: list[tuple[float, int, ResponseContext, str]] = []
        self._sequence = itertools.count()
        self.txn = TransactionLayer(settings.timers)
        self.counters = Counters()
        self._token = token or _default_token()
        self._by_server: dict[object, ResponseContext] = {}
        self._by_client: dict[object, ResponseContext] = {}
        self._own_cancels: set[object] = set()
        self._sent_by = {(host.lower().strip("[]"), port) for host, port in settings.via.values()}
        record_route = parse_uri(settings.record_route)
        if not isinstance(record_route, SipUri):
            raise TypeError(f"record-route must be a SIP URI: {settings.record_route!r}")
        self._record_route = record_route
        self._out: list[SendMessage] = []
        # Where the message being processed came from: requests and ACKs the transaction
        # layer passes up during one receive() call came from there (it is synchronous).
        self._source: Address | None = None
        rr_host = record_route.host
        self._probe_from = f"sip:sipha@{rr_host}" + (f":{record_route.port}" if record_route.port else "")
        self.draining = False
        """Set by :meth:`start_draining`: new out-of-dialog requests get 503."""
        # overload-ctrl-dialog-rate: a token bucket of new INVITEs (full at the first one).
        self._tokens = 0.0
        self._tokens_at: float | None = None
        # Calls set up through this instance and not seen ending: dialog key -> set up at.
        self._calls: dict[tuple[str, str, str], float] = {}

    # ------------------------------------------------------------------ I/O-facing API

    def start(self, now: float) -> None:
        """Start the pair monitor (first OPTIONS), if there is one."""
        if self.monitor is not None:
            self.monitor.start(now)
            self._run(now)

    def drain_events(self) -> list[HaEvent]:
        """Pair monitor events since the last call, for the log."""
        events, self.events = self.events, []
        return events

    def receive(self, data: bytes, source: Address, now: float, *, stream: bool = False) -> None:
        """One message from the network (a datagram, or a framed stream message)."""
        self._source = source
        try:
            message = parse_message(data, self.settings.limits, stream=stream)
            message.validate()
        except SipParseError as error:
            self._refuse_malformed(error, source)
        else:
            if isinstance(message, Request):
                self.counters.requests_in += 1
                self._receive_request(message, source, now)
            else:
                self.counters.responses_in += 1
                self.txn.receive_response(message, now)
        self._run(now)
        self._source = None

    def bad_stream(self, error: SipParseError, source: Address, now: float) -> None:
        """A stream whose framing failed: answer what can be answered (it is then closed)."""
        self._refuse_malformed(error, source)
        self._run(now)

    def transport_error(self, destination: Address, now: float) -> None:
        """The transport could not reach ``destination`` (ICMP, refused or reset connection).

        §17.1.4: client transactions waiting on that destination are told; the ones
        that have had any response are alive and left alone.
        """
        member = self.view.member_at(destination.host, destination.port)
        if member is not None and member.address == destination:
            self._unreachable[member] = now
        for context in list(self._by_client.values()):
            client = context.client
            if client is not None and context.destination == destination and not context.responded:
                self.txn.transport_error(client.key, now)
        for key, probe in list(self._probes.items()):
            if probe.member.address == destination:
                self.txn.transport_error(key, now)
        self._run(now)

    def pair_news(self, pair: str, what: str, role: str, at: float, now: float) -> None:
        """What another worker of this instance saw happen to a pair at ``at`` (``[proxy] workers``).

        ``what`` is ``active`` (``role`` became the active member), ``lost`` (the active
        member ``role`` was lost: the takeover window opens here too) or ``gone`` (lost,
        and a transport error is the last thing heard from it: its ringing calls may move).  The pair monitor
        takes it unless it knows of something later; its events are not passed on again.
        """
        monitor = self.monitor
        pair_monitor = None if monitor is None else monitor.pairs.get(pair)
        if monitor is None or pair_monitor is None:
            return
        members = {member.role: member for member in pair_monitor.members()}
        member = members.get(role)
        if member is None:
            return
        if what == "active":
            monitor.peer_active(member, at, now)
        elif what in ("lost", "gone"):
            if what == "gone":
                self._unreachable[member] = max(at, self._unreachable.get(member, at))
            monitor.peer_lost(member, at, now)
        self._run(now)

    def handle_timers(self, now: float) -> None:
        """Fire every timer due at ``now`` (the transactions' and Timer C)."""
        self.txn.handle_timers(now)
        if self.monitor is not None:
            self.monitor.tick(now)
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            deadline, _, context, kind = heapq.heappop(heap)
            if getattr(context, kind) != deadline:
                continue  # re-armed or cleared since: a stale entry
            if kind == "timer_c":
                self._timer_c(context, now)
            elif kind == "failover_at":
                if self._heard_lately(context.member, now):
                    # failover-timeout is "without any response from the active member": this
                    # one answered other requests within it, so this answer is late or lost
                    # (an overloaded proxy drops datagrams too) and the branch stays, its
                    # transaction retransmitting.  Judged again one failover-timeout later:
                    # a member that stops answering altogether is still failed over, at
                    # most one failover-timeout later than a silent one.
                    self._arm(context, "failover_at", now + self.settings.failover_timeout)
                    continue
                self._failover(context, now, dead=False)
            else:
                self._hold_expired(context, now)
        if self._abandoned and now >= self._abandoned_pruned + 1.0:
            # At most once a second: the set is small (branches given up in the last 32 s).
            self._abandoned = {b: entry for b, entry in self._abandoned.items() if entry[0] > now}
            self._abandoned_pruned = now
        self._run(now)

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timers` must be called next, or None."""
        heap = self._deadlines
        while heap and getattr(heap[0][2], heap[0][3]) != heap[0][0]:
            heapq.heappop(heap)  # stale: the context's timer was cleared or re-armed
        deadline = heap[0][0] if heap else None
        other = self.txn.next_deadline()
        if other is not None and (deadline is None or other < deadline):
            deadline = other
        if self.monitor is not None:
            other = self.monitor.next_deadline()
            if other is not None and (deadline is None or other < deadline):
                deadline = other
        return deadline

    def drain(self) -> list[SendMessage]:
        """The messages to send, in order."""
        out, self._out = self._out, []
        return out

    @property
    def contexts(self) -> int:
        """Response contexts alive (for tests and metrics)."""
        return len(self._by_server)

    # ------------------------------------------------------------------ lifecycle (drain, reload)

    def start_draining(self) -> None:
        """SIGTERM: from now on new out-of-dialog requests get 503 with Retry-After.

        In-dialog requests (To tag), ACKs and CANCELs still flow, and transactions
        under way finish; the app waits for :attr:`under_way` and :attr:`calls` to
        reach 0 (bounded), then exits.
        """
        self.draining = True

    @property
    def under_way(self) -> int:
        """Transactions under way: response contexts whose final response is not sent yet.

        A context that has sent its final response only waits for retransmissions
        (Timer J/I/H: up to 32 s); it is not counted.  Probes never are.
        """
        return sum(1 for context in self._by_server.values() if not context.final_sent)

    @property
    def calls(self) -> int:
        """Calls set up through this instance (2xx to an INVITE relayed) not seen ending (BYE)."""
        return len(self._calls)

    def reconfigure(
        self, settings: ProxySettings, view: ConfiguredView, monitor: Monitor | None, now: float
    ) -> None:
        """SIGHUP: new settings, routing view and monitor; transactions under way go on.

        ``monitor`` may carry over pair monitors of the old one (their state is kept);
        its pairs not started yet are started here (unknown, first probe now).  Probes
        of pairs whose monitor was not carried over are forgotten (their answers are
        dropped).  Our old Via sent-by addresses stay ours, so that responses to
        requests forwarded before the reload are still relayed.
        """
        record_route = parse_uri(settings.record_route)
        if not isinstance(record_route, SipUri):
            raise TypeError(f"record-route must be a SIP URI: {settings.record_route!r}")
        old_monitor = self.monitor
        self.settings = settings
        self._sent_by |= {(host.lower().strip("[]"), port) for host, port in settings.via.values()}
        self._record_route = record_route
        rr_port = f":{record_route.port}" if record_route.port else ""
        self._probe_from = f"sip:sipha@{record_route.host}{rr_port}"
        if settings.overload_rate <= 0:
            self._tokens_at = None
        else:
            self._tokens = min(self._tokens, max(settings.overload_rate, 1.0))
        self.view = view
        self.monitor = monitor
        for key, probe in list(self._probes.items()):
            old_pair = None if old_monitor is None else old_monitor.pairs.get(probe.pair)
            if monitor is None or monitor.pairs.get(probe.pair) is not old_pair:
                del self._probes[key]
        if monitor is not None:
            for pair in monitor.pairs.values():
                if pair.state is State.INITIAL:
                    pair.start(now)
            view.active.update(monitor.active_table())
        # A suspicion only stands for a pair whose monitor state was carried over.
        self._suspected = {
            name: member
            for name, member in self._suspected.items()
            if monitor is not None
            and old_monitor is not None
            and monitor.pairs.get(name) is old_monitor.pairs.get(name)
        }
        self._run(now)

    # ------------------------------------------------------------------ receiving

    def _refuse_malformed(self, error: SipParseError, source: Address) -> None:
        """Answer a malformed request with the error's status; drop anything else (§16.3 step 1)."""
        self.counters.parse_errors += 1
        partial = error.message
        if not isinstance(partial, Request) or partial.method == "ACK" or not partial.get("via"):
            return  # responses, ACKs and unaddressable requests are dropped (§17.1.1.3, §16.7)
        response = make_response(
            partial, error.status, error.reason, to_tag=self._token(), headers=[("Warning", _warning(error))]
        )
        # To the source address, not to the Via (which is unchecked here, and could name
        # any host: answering there would make sipha a reflector).  §18.2.2 would add
        # ``received`` first, which also points back at the source.
        self.txn.send_stateless(response, source)

    def _receive_request(self, request: Request, source: Address, now: float) -> None:
        try:
            stamp_received(request, source)
        except SipParseError:  # pragma: no cover - validate() parsed the top Via already
            return
        # The transaction layer answers to the §18.2.2 / RFC 3581 address; routing still
        # needs the real source (self._source), to tell a pair member from an endpoint.
        self.txn.receive_request(request, response_destination(request.top_via, source), now)

    # ------------------------------------------------------------------ transaction events

    def _run(self, now: float) -> None:
        """Process what the transaction layer produced, until it produces nothing more."""
        out = self._out
        txn = self.txn
        # The monitor is pumped for what it was given before (a tick, a start), then again
        # whenever a probe's outcome was fed to it; the other inputs pump it themselves.
        fed = self.monitor is not None
        while True:
            if fed:
                self._pump_monitor(now)
                fed = False
            outputs = txn.drain()
            if not outputs:
                return
            for output in outputs:
                # The output types are final: compare the exact type, the commonest first.
                if type(output) is SendMessage:
                    out.append(output)
                elif self._probes and self._probe_output(output, now):
                    fed = True
                    continue
                elif type(output) is RequestReceived:
                    self._on_request(output.transaction, output.request, self._source or output.source, now)
                elif type(output) is ResponseReceived:
                    self._on_response(output.transaction, output.response, now)
                elif type(output) is TransactionTerminated:
                    self._on_terminated(output.transaction)
                elif type(output) is AckReceived:
                    self._on_ack(output.request, self._source or output.source, now)
                elif type(output) is StrayResponse:
                    self._forward_stray(output.response, now)
                elif type(output) is TransactionTimeout or type(output) is TransportError:
                    self._on_failure(output.transaction, timeout=type(output) is TransactionTimeout, now=now)

    def _on_request(self, server: ServerTransaction, request: Request, source: Address, now: float) -> None:
        if request.method == "CANCEL":
            self._on_cancel(server, request, source, now)
            return
        context = ResponseContext(server, request)
        self._by_server[server.key] = context
        refusal = self._check(request)
        if refusal is not None:
            self._answer(context, *refusal, now=now)
            return
        self._preprocess_routes(request)
        member_source = self._member_source(request, source)
        self._note_request_from(request, member_source, now)
        if request.to.tag is None:
            if self.draining:
                self.counters.drain_rejections += 1
                retry = [("Retry-After", str(DRAIN_RETRY_AFTER))]
                self._answer(context, 503, "Service Unavailable", retry, now=now)
                return
            if request.method == "INVITE" and not self._admit_invite(now):
                self.counters.overload_rejections += 1
                retry = [("Retry-After", str(OVERLOAD_RETRY_AFTER))]
                self._answer(context, 503, "Service Unavailable", retry, now=now)
                return
        elif request.method == "BYE" and self._calls:
            self._calls.pop(_call_key(request.call_id, request.from_.tag, request.to.tag), None)
        decision = decide(request, member_source, self.view)
        if isinstance(decision, Answer):
            if decision.pair is not None and self._probing(decision.pair):
                # The pair is being re-probed: hold the request for the member that answers
                # rather than fail a call that can be saved (docs/design.md §2).
                context.pair = decision.pair
                self._hold(context, now)
                return
            headers = [] if decision.retry_after is None else [("Retry-After", str(decision.retry_after))]
            self._answer(context, decision.status, decision.reason, headers, now=now)
            return
        self._forward(context, decision, now)

    def _admit_invite(self, now: float) -> bool:
        """overload-ctrl-dialog-rate: take a token for a new INVITE; False when there is none."""
        rate = self.settings.overload_rate
        if rate <= 0:
            return True
        burst = max(rate, 1.0)
        last = self._tokens_at
        tokens = burst if last is None else min(burst, self._tokens + max(now - last, 0.0) * rate)
        self._tokens_at = now
        # A hair of tolerance: n/rate seconds of float clock must refill n tokens.
        if tokens >= 1.0 - 1e-9:
            self._tokens = max(tokens - 1.0, 0.0)
            return True
        self._tokens = tokens
        return False

    def _remember_call(self, context: ResponseContext, response: Response, now: float) -> None:
        """A 2xx to a dialog-creating INVITE was relayed: a call is up through this instance."""
        request = context.request
        if request.method != "INVITE" or request.to.tag is not None:
            return
        to_tag = response.to.tag
        if to_tag is None:
            return
        calls = self._calls
        calls[_call_key(request.call_id, request.from_.tag, to_tag)] = now
        # Oldest first (insertion order): forget the ones past their memory or the limit.
        while calls:
            oldest = next(iter(calls))
            if len(calls) <= CALL_LIMIT and calls[oldest] + CALL_MEMORY > now:
                break
            del calls[oldest]

    def _check(self, request: Request) -> tuple[int, str, list[tuple[str, str]]] | None:
        """§16.3 request validation, steps 2 to 6 (step 1, syntax, was done on receipt)."""
        # Step 2: "If the Request-URI has a URI whose scheme is not understood by the proxy,
        # the proxy SHOULD reject the request with a 416 (Unsupported URI Scheme) response."
        if request.parsed_uri.scheme not in ALLOWED_SCHEMES:
            return 416, "Unsupported URI Scheme", []
        # Step 3: "If the request does not contain a Max-Forwards header field, this check is
        # passed.  ... If the field value is zero (0), the element MUST NOT forward the
        # request ... the element MUST return a 483 (Too many hops) response."
        if request.max_forwards == 0:
            return 483, "Too Many Hops", []
        # Step 4: loop detection (optional, done): see _looped.
        if self._looped(request):
            self.counters.loops_detected += 1
            return 482, "Loop Detected", []
        # Step 5: Proxy-Require: "the element MUST return a response with status code 420
        # (Bad Extension) ... an Unsupported header field listing those options".
        unsupported = [tag for tag in request.proxy_require if tag not in self.settings.supported]
        if unsupported:
            return 420, "Bad Extension", [("Unsupported", ", ".join(unsupported))]
        return None

    def _looped(self, request: Request) -> bool:
        """§16.3 step 4: a Via of ours whose branch equals the hash this request gets now.

        When we forwarded the request before, the Via just below ours was its top
        Via; the branch we put in carried the hash of the fields listed in §16.6
        step 8 with that top Via.  Same hash again: a loop.  Different (the
        Request-URI or another field changed on the way): a spiral, which is allowed.
        """
        vias = request.vias
        if len(vias) < 2:  # noqa: PLR2004 - our Via and the one below it
            return False
        elements = [element for value in request.get_all("via") for element in split_commas(value)]
        for index, via in enumerate(vias[:-1]):
            if (via.host_key, via.port) in self._sent_by and via.branch:
                expected = MAGIC_COOKIE + _loop_hash(request, elements[index + 1])
                if via.branch.partition(".")[0] == expected:
                    return True
        return False

    def _preprocess_routes(self, request: Request) -> None:
        """§16.4 route information preprocessing."""
        uri = request.parsed_uri
        routes = request.routes
        # "If the Request-URI of the request contains a value this proxy previously placed
        # into a Record-Route header field ... replace the Request-URI in the request with the
        # last value from the Route header field, and remove that value" (strict routing).
        if isinstance(uri, SipUri) and routes and self._is_record_route(uri):
            last = routes[-1]
            elements = request.get_elements("route")
            request.remove_header("route")
            for element in elements[:-1]:
                request.add_header("Route", element)
            request.set_uri(last.uri_text)
            routes = request.routes
        # "If the first value in the Route header field indicates this proxy, the proxy MUST
        # remove that value from the request."
        if routes:
            first = routes[0].uri
            if isinstance(first, SipUri) and self._is_own_uri(first):
                request.pop_route()

    def _is_own_uri(self, uri: SipUri) -> bool:
        return self.view.is_own(uri.host_key, uri_port(uri))

    def _is_record_route(self, uri: SipUri) -> bool:
        """Whether ``uri`` is the value this proxy puts in Record-Route (no user part)."""
        own = self._record_route
        return uri.user is None and uri.host_key == own.host_key and uri_port(uri) == uri_port(own)

    def _member_source(self, request: Request, source: Address) -> Address:
        """The address a member is recognised by (docs/design.md §2): UDP source port; TCP/TLS Via port."""
        if source.reliable:
            return Address(
                source.transport, source.host, request.top_via.port or default_port(source.transport)
            )
        return source

    # ------------------------------------------------------------------ forwarding

    def _forward(self, context: ResponseContext, decision: Forward, now: float) -> None:
        """§16.6 request forwarding, steps 1 to 11, for one target."""
        request = context.request
        forwarded = self._prepare(request, decision.destination, fork=context.attempt)
        client = self.txn.send_request(forwarded, decision.destination, now)
        context.forwarded = forwarded
        context.client = client
        context.destination = decision.destination
        self._by_client[client.key] = context
        self.counters.requests_forwarded += 1
        if request.method == "INVITE" and context.timer_c is None:
            self._arm(context, "timer_c", now + self.settings.timer_c)
        if decision.pair is not None:
            context.pair = decision.pair
            context.member = self.view.active_member(decision.pair)
            if self.monitor is not None and self.settings.failover_timeout > 0:
                self._arm(context, "failover_at", now + self.settings.failover_timeout)

    def _prepare(self, request: Request, destination: Address, *, fork: int) -> Request:
        """Steps 1-8: copy, Max-Forwards, Record-Route, Via (the target is ``destination``)."""
        forwarded = request.copy()  # step 1
        max_forwards = request.max_forwards
        forwarded.set_max_forwards(  # step 3
            DEFAULT_MAX_FORWARDS if max_forwards is None else max_forwards - 1
        )
        if request.method in DIALOG_CREATING and request.to.tag is None:  # step 4
            forwarded.push_record_route(f"<{self.settings.record_route}>")
        transport = destination.transport.upper()
        host, port = self.settings.via.get(transport) or next(iter(self.settings.via.values()))
        # Step 8: the branch carries the §16.6 loop hash, so that loop detection can
        # recompute it, and a CANCEL (same fields but the method) gets the INVITE's branch
        # whichever pool instance forwards it (§16.11 asks the same of stateless proxies).
        tag = self.settings.branch_tag
        branch = f"{MAGIC_COOKIE}{_loop_hash(request, _top_via_text(request))}.{fork}{tag}"
        via_text, via = branch_via(f"SIP/2.0/{transport} {host}:{port}", branch)
        forwarded.push_via(via_text, via)
        return forwarded

    def _answer(
        self,
        context: ResponseContext,
        status: int,
        reason: str,
        headers: Iterable[tuple[str, str]] = (),
        *,
        now: float,
    ) -> None:
        """A final response generated here (§16.3 refusals, routing answers, §16.7 step 6)."""
        self.counters.requests_refused += status >= 300  # noqa: PLR2004 - failures only
        context.final_sent = True
        context.timer_c = None
        response = make_response(context.request, status, reason, to_tag=self._token(), headers=headers)
        self.txn.respond(context.server, response, now)

    def _on_ack(self, ack: Request, source: Address, now: float) -> None:
        """An ACK for a 2xx: its own transaction, forwarded like any request (§16.6, §13.2.2.4)."""
        if ack.max_forwards == 0:
            return  # an ACK is never answered (§17.1.1.3); a looped one is dropped
        self._preprocess_routes(ack)
        member_source = self._member_source(ack, source)
        self._note_request_from(ack, member_source, now)
        decision = decide(ack, member_source, self.view)
        if isinstance(decision, Forward):
            self.txn.send_stateless(self._prepare(ack, decision.destination, fork=0), decision.destination)

    # ------------------------------------------------------------------ responses

    def _on_response(self, client: ClientTransaction, response: Response, now: float) -> None:
        """§16.7 response processing."""
        if client.key in self._own_cancels:
            return  # the 200 to a CANCEL we generated is hop-by-hop (§16.10)
        context = self._by_client.get(client.key)
        if context is None:
            return
        self._heard[context.member] = now
        if context.suspended:
            # Held with its branch live, and the member answered: the branch goes on.
            context.suspended = False
            self._unhold(context)
        if context.final_sent and response.status >= 300:  # noqa: PLR2004
            return
        context.responded = True
        context.failover_at = None
        status = response.status
        if status < 200:  # noqa: PLR2004 - provisional
            context.provisional = True
            if context.cancel_pending:
                self._send_cancel(context, now)
            if status == 100:  # noqa: PLR2004 - step 5: "the 100 (Trying) ... MUST NOT be forwarded"
                return
            if context.timer_c is not None and not context.cancel_sent:
                self._arm(context, "timer_c", now + self.settings.timer_c)  # §16.7 step 2: reset Timer C
            self._relay(context, response, now)
            return
        if status < 300:  # noqa: PLR2004 - step 5: every 2xx is forwarded at once
            context.final_sent = True
            context.timer_c = None
            self._relay(context, response, now)
            self._remember_call(context, response, now)
            return
        # Steps 4 and 6: keep the best final response; with its only branch complete, send it.
        context.best = _better(context.best, response)
        self._complete(context, now)

    def _complete(self, context: ResponseContext, now: float) -> None:
        """Step 6: all branches are done: forward the best response (or generate one)."""
        best = context.best
        if best is None:
            self._answer(context, 408, "Request Timeout", now=now)
            return
        if best.status == 503:  # noqa: PLR2004
            # §16.7 step 6: "A proxy which receives a 503 (Service Unavailable) response
            # SHOULD NOT forward it upstream unless it can determine that any subsequent
            # requests it might proxy will also generate a 503. ... If the only response
            # that was received is a 503, the proxy SHOULD generate a 500 response".
            self._answer(context, 500, "Server Internal Error", now=now)
            return
        context.final_sent = True
        context.timer_c = None
        self._relay(context, best, now)

    def _relay(self, context: ResponseContext, response: Response, now: float) -> None:
        """Step 3 (remove our Via) and step 9 (send on the server transaction)."""
        relayed = response.copy()
        relayed.pop_via()
        if relayed.get("via") is None:
            # §16.7 step 3: "If no Via header field values remain in the response, the
            # response was meant for this element and MUST NOT be forwarded."
            self.counters.stray_responses_dropped += 1
            return
        self.counters.responses_forwarded += 1
        self.txn.respond(context.server, relayed, now)

    def _forward_stray(self, response: Response, now: float) -> None:
        """A response no client transaction knows: forward it by its Via, if the top one is ours.

        §18.1.2 / §16.7: 2xx retransmissions and 2xx from other forks arrive this way
        (RFC 6026 §8.3); a top Via that is not ours is dropped (§18.1.2: the sent-by
        "does not match ... the response MUST be silently discarded").
        """
        try:
            vias = response.vias
        except SipParseError:  # pragma: no cover - validate() parsed them on receipt
            return
        if (
            len(vias) < 2  # noqa: PLR2004 - ours and the one to relay to
            or (vias[0].host_key, vias[0].port) not in self._sent_by
        ):
            self.counters.stray_responses_dropped += 1
            return
        abandoned = self._abandoned.get(vias[0].branch or "")
        if abandoned is not None:
            self._late_response(vias[0].branch or "", abandoned[1], abandoned[2], response, now)
            return
        relayed = response.copy()
        relayed.pop_via()
        next_via = vias[1]
        # §18.2.2 / RFC 3581 from the Via alone: the received address and rport port that
        # were stamped when the request came in (for a stream, the connection's address).
        rport = next_via.rport
        port = int(rport) if rport else next_via.port or default_port(next_via.transport)
        host = next_via.received or next_via.host_key
        destination = Address(next_via.transport, host.strip("[]"), port)
        self.counters.responses_forwarded += 1
        self.txn.send_stateless(relayed, destination)

    def _on_failure(self, transaction: object, *, timeout: bool, now: float) -> None:
        """Timer B/F or a transport error on a branch (§16.7 step 1, §16.8)."""
        if not isinstance(transaction, ClientTransaction):
            return  # a server transaction's Timer H: nothing left to send
        context = self._by_client.get(transaction.key)
        if context is None or context.final_sent or context.client is not transaction:
            return
        if self._can_fail_over(context):
            self._failover(context, now, dead=True)
            return
        # §16.8: a timeout is a 408; §16.7: a transport error "as if a 503" (then step 6 turns
        # a selected 503 into a 500).
        status, reason = (408, "Request Timeout") if timeout else (503, "Service Unavailable")
        synthetic = make_response(context.forwarded or context.request, status, reason, to_tag=self._token())
        context.best = _better(context.best, synthetic)
        self._complete(context, now)

    def _on_terminated(self, transaction: object) -> None:
        key = getattr(transaction, "key", None)
        self._own_cancels.discard(key)
        self._by_client.pop(key, None)
        context = self._by_server.pop(key, None)
        if context is not None:
            for branch in context.abandoned:
                self._abandoned.pop(branch, None)

    # ------------------------------------------------------------------ CANCEL

    def _on_cancel(self, server: ServerTransaction, cancel: Request, source: Address, now: float) -> None:
        """§16.10: answer the CANCEL hop by hop, then cancel the pending branch."""
        target = self.txn.find_cancel_target(cancel)
        context = None if target is None else self._by_server.get(target.key)
        if context is None:
            # "If a response context is not found, the element does not have any knowledge of
            # the request to apply the CANCEL to.  It MUST statelessly forward the CANCEL."
            # It is forwarded with the branch its INVITE got from any pool instance (see
            # _prepare), so the next hop can match it; statefully, so that its own response
            # comes back through this server transaction.
            orphan = ResponseContext(server, cancel)
            self._by_server[server.key] = orphan
            member_source = self._member_source(cancel, source)
            self._note_request_from(cancel, member_source, now)
            decision = decide(cancel, member_source, self.view)
            if isinstance(decision, Answer):
                self._answer(orphan, 481, "Call/Transaction Does Not Exist", now=now)
                return
            self._forward(orphan, decision, now)
            return
        self.txn.respond(server, make_response(cancel, 200, "OK", to_tag=self._token()), now)
        if context.final_sent or context.cancelled:
            return
        if context.client is None or context.suspended:
            # Held for a pair being re-probed: nothing was sent downstream (or a branch that
            # never answered, so no CANCEL may be sent on it, §9.1): answer it here.
            self._unhold(context)
            self._abandon_branch(context, now)
            self._answer(context, 487, "Request Terminated", now=now)
            return
        context.cancelled = True
        context.timer_c = None
        if context.provisional:
            self._send_cancel(context, now)
        else:
            # §9.1: "If no provisional response has been received, the CANCEL request MUST
            # NOT be sent; rather, the client MUST wait for the arrival of a provisional
            # response before sending the request."
            context.cancel_pending = True

    def _send_cancel(self, context: ResponseContext, now: float) -> None:
        """Build and send the CANCEL of a forwarded INVITE (§9.1)."""
        forwarded = context.forwarded
        destination = context.destination
        context.cancel_pending = False
        if forwarded is None or destination is None:  # pragma: no cover - forwarded contexts only
            return
        headers: list[tuple[str, str]] = [("Via", _top_via_text(forwarded))]
        headers += [("Route", value) for value in forwarded.get_all("route")]
        headers += [
            ("Max-Forwards", str(DEFAULT_MAX_FORWARDS)),
            ("From", forwarded.get("from") or ""),
            ("To", forwarded.get("to") or ""),
            ("Call-ID", forwarded.get("call-id") or ""),
            ("CSeq", f"{forwarded.cseq.seq} CANCEL"),
        ]
        cancel = Request.build("CANCEL", forwarded.uri, headers)
        client = self.txn.send_request(cancel, destination, now)
        self._own_cancels.add(client.key)
        # §9.1: "If there is no final response for the original request in 64*T1 seconds
        # ... the client SHOULD then consider the original transaction cancelled and SHOULD
        # destroy the client transaction handling the original request."
        context.cancel_sent = True
        self._arm(context, "timer_c", now + 64 * self.settings.timers.t1)

    def _arm(self, context: ResponseContext, kind: str, deadline: float) -> None:
        """Set one of the context's timers (``timer_c``, ``failover_at``, ``held_until``)."""
        setattr(context, kind, deadline)
        heapq.heappush(self._deadlines, (deadline, next(self._sequence), context, kind))

    # ------------------------------------------------------------------ high availability

    def _note_request_from(self, request: Request, member_source: Address, now: float) -> None:
        """docs/design.md §2: a request from the inactive member makes it active at once.

        Keepalive OPTIONS to the proxy itself are not traffic for the pair and do not count.
        """
        if self.monitor is None or self.view.member_at(member_source.host, member_source.port) is None:
            return  # most requests: from user agents, not from a pair member (the view knows)
        if is_keepalive(request, self.view):
            return
        if self.monitor.request_from(member_source.host, member_source.port, now) is not None:
            self._pump_monitor(now)  # else not from a member: no pair was told anything

    def _pump_monitor(self, now: float) -> None:
        """Send the monitor's probes; apply its events to the routing view."""
        monitor = self.monitor
        if monitor is None or not monitor.pending():
            return  # the usual case: nothing to send, nothing changed
        changed = False
        failed: list[tuple[Member, bool]] = []
        out_of_service: list[str] = []
        for output in monitor.drain():
            if isinstance(output, Probe):
                self._send_probe(output, now)
                continue
            self.events.append(output)
            changed = True
            if isinstance(output, PairUnknown) and output.member is not None:
                # Suspected only: a lost OPTIONS must not end calls.  Confirmed when the
                # other member takes over, or when the pair goes out of service.
                self._suspected[output.pair] = output.member
            elif isinstance(output, MemberBecameActive):
                gone = self._suspected.pop(output.pair, None) or output.previous
                if gone is not None and gone != output.member:
                    # Gone for sure when the other member took over by a request, or when a
                    # transport error is the last thing heard from it.
                    failed.append((gone, output.reason == "request" or self._unreachable_last(gone)))
            elif isinstance(output, PairOutOfService):
                out_of_service.append(output.pair)
                gone = self._suspected.pop(output.pair, None)
                if gone is not None:
                    failed.append((gone, False))
        if changed:
            self.view.active.update(monitor.active_table())
            self._release_held(now)
            for member, dead in failed:
                self._end_ringing_on(member, now, gone=dead)
            for pair in out_of_service:
                for context in list(self._held.get(pair, ())):
                    self._hold_expired(context, now)  # 40001: the caller gets 503 now

    def _send_probe(self, probe: Probe, now: float) -> None:
        """A real OPTIONS through the transaction layer (RFC 3261 §11), fresh ids each."""
        address = probe.member.address
        transport = address.transport.upper()
        host, port = self.settings.via.get(transport) or next(iter(self.settings.via.values()))
        token = self._token()
        options = build_options(
            address,
            self._probe_from,
            host,
            port,
            transport,
            call_id=f"{token}.probe@{host.strip('[]')}",
            branch=f"{MAGIC_COOKIE}{token}.probe{self.settings.branch_tag}",
            from_tag=token,
            cseq=probe.seq,
        )
        client = self.txn.send_request(options, address, now)
        self._probes[client.key] = probe

    def _probe_output(self, output: object, now: float) -> bool:
        """Feed the monitor what concerns a probe; True when ``output`` was a probe's."""
        transaction = getattr(output, "transaction", None)
        key: TransactionKey | None = getattr(transaction, "key", None)
        probe = None if key is None else self._probes.get(key)
        if key is None or probe is None or self.monitor is None:
            return False
        if isinstance(output, ResponseReceived):
            # Any answer to an OPTIONS shows the member is alive (docs/design.md §2: a member that
            # answered anything since a request went unanswered is alive).
            self._heard[probe.member] = now
            self.monitor.probe_answered(probe, output.response.status, now)
        elif isinstance(output, TransactionTimeout | TransportError):
            self.monitor.probe_failed(probe, now)
        elif isinstance(output, TransactionTerminated):
            del self._probes[key]
        return True

    def _probing(self, pair: str) -> bool:
        """Whether ``pair`` has no active member but is still being probed (not yet 40001)."""
        monitor = self.monitor
        if monitor is None or pair not in monitor.pairs:
            return False
        state = monitor.pairs[pair].state
        return state is State.UNKNOWN or state is State.TAKEOVER

    def _can_fail_over(self, context: ResponseContext) -> bool:
        """A branch to a pair member that never answered: its request can still be saved.

        Only with OPTIONS monitoring on (oos-check > 0): without probes nothing could pick
        the member to hold the request for, so a slow member is simply waited for.
        """
        monitor = self.monitor
        return (
            monitor is not None
            and context.pair is not None
            and context.pair in monitor.pairs
            and monitor.pairs[context.pair].monitoring
            and not context.responded
            and not context.cancelled
            and context.request.method != "CANCEL"
        )

    def gone(self, member: Member) -> bool:
        """Whether ``member`` is known to be gone, not just silent (for the other workers)."""
        return self._unreachable_last(member)

    def _unreachable_last(self, member: Member) -> bool:
        """Whether a transport error is the last thing heard from ``member`` (it is gone)."""
        return self._unreachable.get(member, -math.inf) > self._heard.get(member, -math.inf)

    def _heard_lately(self, member: Member | None, now: float) -> bool:
        """Whether ``member`` answered a forwarded request within the last failover-timeout."""
        return self._heard.get(member, -math.inf) > now - self.settings.failover_timeout

    def _failover(self, context: ResponseContext, now: float, *, dead: bool) -> None:
        """No response from the member within failover-timeout, or its branch failed (``dead``).

        The pair is re-probed at once and the request held for the member that answers: it is
        never sent to both members at once.  A branch that failed (transport error, Timer B/F)
        is given up now (its late responses are dropped, never relayed).  A branch that is only
        late stays live, retransmitting, while the request is held (``suspended``): if the same
        member is found active again the branch simply goes on, so a member that received the
        request never gets a second copy of it.
        """
        context.failover_at = None
        client = context.client
        if client is None or context.final_sent or not self._can_fail_over(context):
            return
        if context.suspended:
            if dead:
                self._abandon_branch(context, now)  # still held: the member is gone after all
            return
        if dead:
            self._abandon_branch(context, now)
        else:
            context.suspended = True
        if context.member is not None and self.monitor is not None:
            self.monitor.suspect(context.member, now)
        self._pump_monitor(now)  # the routing view first: the pair has no active member now
        self._hold(context, now)

    def _abandon_branch(self, context: ResponseContext, now: float) -> None:
        """Give up the context's branch: its late responses are dropped; it stops retransmitting."""
        client = context.client
        context.suspended = False
        if client is None:
            return
        self._by_client.pop(client.key, None)
        context.client = None
        forwarded = context.forwarded
        if forwarded is not None:
            branch = forwarded.top_via.branch
            if branch:
                # Remembered for as long as the request can live (Timer C, then 64*T1).
                forget = now + self.settings.timer_c + 64 * self.settings.timers.t1
                self._abandoned[branch] = (forget, context, context.member)
                context.abandoned.append(branch)
        context.attempt += 1
        self.txn.transport_error(client.key, now)  # stop retransmitting to the member

    def _hold(self, context: ResponseContext, now: float) -> None:
        """Keep ``context`` until its pair has an active member (bounded by hold-limit)."""
        pair = context.pair
        if pair is None:  # pragma: no cover - only pair traffic is held
            return
        if context.hold_deadline is None:
            context.hold_deadline = now + self.settings.hold_limit
        if now >= context.hold_deadline:
            self._hold_expired(context, now)
            return
        active = self.view.active_member(pair)
        if active is not None and active not in context.responded_members:
            if context.client is not None and active == context.member:
                self._resume(context, now)  # suspended, and its member is still the active one
                return
            if active != context.member:
                self._abandon_branch(context, now)
                self._forward(context, Forward(active.address, pair), now)
                return
        self._arm(context, "held_until", context.hold_deadline)
        self._held.setdefault(pair, []).append(context)

    def _resume(self, context: ResponseContext, now: float) -> None:
        """A suspended branch's member is active (again): the branch goes on, judged again later."""
        context.suspended = False
        context.held_until = None
        if self.settings.failover_timeout > 0:
            self._arm(context, "failover_at", now + self.settings.failover_timeout)

    def _unhold(self, context: ResponseContext) -> None:
        context.held_until = None
        held = self._held.get(context.pair or "")
        if held is not None and context in held:
            held.remove(context)

    def _release_held(self, now: float) -> None:
        """A pair got an active member: forward what waited for it (or let a live branch go on)."""
        for pair, contexts in list(self._held.items()):
            active = self.view.active_member(pair)
            if active is None or not contexts:
                continue
            kept = [context for context in contexts if active in context.responded_members]
            if kept:
                self._held[pair] = kept  # they wait for the other member, or the hold limit
            else:
                del self._held[pair]
            for context in contexts:
                if context in kept:
                    continue
                context.held_until = None
                if context.final_sent or context.cancelled:
                    continue
                if context.client is not None and active == context.member:
                    self._resume(context, now)
                    continue
                self._abandon_branch(context, now)
                self._forward(context, Forward(active.address, pair), now)

    def _late_response(
        self, branch: str, context: ResponseContext, member: Member | None, response: Response, now: float
    ) -> None:
        """A response on a branch given up on: the member was alive after all.

        While the request is still held (sent nowhere else), the call goes on with that
        member: its responses are relayed, and a non-2xx final one is ACKed here, as its
        client transaction would have (§17.1.1.3).  Once the request went to the other
        member, the late response is dropped, and the request is never sent back to it.
        """
        if member is not None:
            context.responded_members.add(member)
        resumable = context.resumed == branch or (context.client is None and context.resumed is None)
        if not resumable or context.final_sent:
            self.counters.stray_responses_dropped += 1
            return
        if context.resumed is None:
            context.resumed = branch
            context.responded = True
            self._unhold(context)
        status = response.status
        if status == 100:  # noqa: PLR2004 - never forwarded (§16.7 step 5)
            return
        if status >= 300 and context.forwarded is not None and context.destination is not None:  # noqa: PLR2004
            self.txn.send_stateless(build_ack(context.forwarded, response), context.destination)
        if status >= 200:  # noqa: PLR2004
            context.final_sent = True
            self._arm_clear(context)
        self._relay(context, response, now)

    def _arm_clear(self, context: ResponseContext) -> None:
        """Disarm every core timer of ``context`` (heap entries become stale)."""
        context.timer_c = None
        context.failover_at = None
        context.held_until = None

    def _end_ringing_on(self, member: Member, now: float, *, gone: bool) -> None:
        """The INVITEs ringing on a member that lost its pair (taken over, or both down).

        The member got them and said so with a provisional response.  When it is known to be
        ``gone`` (a transport error is the last we heard of it, or the other member took over
        by a request) and the pair has an active member, each is re-offered there: the dead
        branch gets a CANCEL (in case), a new branch goes to the active member, and the caller
        sees a new early dialog (serial forking, RFC 3261 §16.6, §16.7).  When it is only
        silent (a partition: it may still have the call, and answer it), a second copy could
        make two calls: the caller gets the 408 Timer C would give (§16.8), now rather than
        three minutes later, and the branch a CANCEL.
        """
        for context in list(self._by_client.values()):
            if context.member != member or not context.provisional or context.final_sent:
                continue
            pair = context.pair
            active = None if pair is None else self.view.active_member(pair)
            if gone and not context.cancelled and pair is not None and active not in (None, member):
                assert active is not None  # noqa: S101 - checked just above
                self._reoffer(context, active, pair, now)
                continue
            if not context.cancelled:
                context.cancelled = True
                self._send_cancel(context, now)
            self._answer(context, 408, "Request Timeout", now=now)

    def _reoffer(self, context: ResponseContext, active: Member, pair: str, now: float) -> None:
        """Move a ringing INVITE from a dead member's branch to a new branch to ``active``."""
        self._send_cancel(context, now)  # §9.1: it had a provisional response, so it may be
        self._abandon_branch(context, now)
        context.provisional = context.responded = False
        context.cancel_pending = context.cancel_sent = context.timer_c_fired = False
        context.timer_c = None  # §16.6 step 11: the new branch gets its own Timer C
        context.best = None
        self.counters.reoffered += 1
        self._forward(context, Forward(active.address, pair), now)

    def _hold_expired(self, context: ResponseContext, now: float) -> None:
        """No member became active in time: only now does the caller get 503 (§21.5.4)."""
        self._unhold(context)
        self._abandon_branch(context, now)  # a suspended branch: its member is not coming back
        if not context.final_sent:
            retry = [("Retry-After", str(RETRY_AFTER_SECONDS))]
            self._answer(context, 503, "Service Unavailable", retry, now=now)

    def _timer_c(self, context: ResponseContext, now: float) -> None:
        """§16.8: Timer C fired: CANCEL a branch that answered provisionally, else 408.

        Also the §9.1 limit after a CANCEL was sent: no final response in 64*T1, so the
        branch is given up: the caller gets 487 (it cancelled) or 408 (Timer C did).
        """
        context.timer_c = None
        if context.final_sent:  # pragma: no cover - a final response clears the timer
            return
        if context.cancel_sent:
            caller_cancelled = context.cancelled and not context.timer_c_fired
            status, reason = (487, "Request Terminated") if caller_cancelled else (408, "Request Timeout")
            self._answer(context, status, reason, now=now)
            if context.client is not None:
                self.txn.transport_error(context.client.key, now)  # destroys the client transaction
            return
        context.timer_c_fired = True
        if context.provisional and not context.cancelled:
            context.cancelled = True
            self._send_cancel(context, now)
        else:
            self._answer(context, 408, "Request Timeout", now=now)


def _default_token() -> Callable[[], str]:
    """Unique tokens for To tags: a random prefix per process and a counter."""
    prefix = secrets.token_hex(4)
    counter = iter(range(1, 2**63))
    return lambda: f"{prefix}{next(counter):x}"


def _call_key(call_id: str, tag_a: str | None, tag_b: str | None) -> tuple[str, str, str]:
    """A dialog's key whichever side sends the request (the tags in a fixed order)."""
    first, second = sorted((tag_a or "", tag_b or ""))
    return (call_id, first, second)


def _top_via_text(request: Request) -> str:
    value = request.get_all("via")[0]
    return split_commas(value)[0] if "," in value else value


def _loop_hash(request: Request, top_via: str) -> str:
    """The loop-detection hash of §16.6 step 8.

    "a hash of the To tag, From tag, Call-ID header field, the Request-URI of the
    request received (before translation), the topmost Via header, and the sequence
    number from the CSeq header field, in addition to any Proxy-Require and
    Proxy-Authorization header fields that may be present".
    """
    parts = (
        request.to.tag or "",
        request.from_.tag or "",
        request.call_id,
        request.uri,
        top_via,
        str(request.cseq.seq),
        request.get("proxy-require") or "",
        request.get("proxy-authorization") or "",
    )
    return hashlib.blake2b("\x00".join(parts).encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


def _class_rank(status: int) -> tuple[int, int]:
    """Order of preference among final responses (§16.7 step 6)."""
    klass = status // 100
    if klass == 6:  # noqa: PLR2004 - "choose from the 6xx class responses if any exist"
        return (0, status)
    if klass == 2:  # noqa: PLR2004
        return (1, status)
    return (2 + klass, status)  # "the lowest response class stored"


def _better(current: Response | None, candidate: Response) -> Response:
    if current is None or _class_rank(candidate.status) < _class_rank(current.status):
        return candidate
    return current


def _warning(error: SipParseError) -> str:
    """A Warning header value naming what was wrong (RFC 3261 §20.43, code 399 misc)."""
    detail = error.detail.replace("\\", "").replace('"', "'")[:120]
    return f'399 sipha "{detail}"'
