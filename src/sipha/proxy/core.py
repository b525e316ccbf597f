"""The RFC 3261 §16 stateful proxy core: the transaction user on top of :mod:`sipha.txn`.

Sans-IO: :meth:`ProxyCore.receive` takes the bytes of one message, where they
came from and the time; :meth:`ProxyCore.drain` returns what to send, and
:meth:`ProxyCore.next_deadline` when to call :meth:`ProxyCore.handle_timers`.

The core follows the outline of §16: a request is validated (§16.3), its route
information preprocessed (§16.4), routed (docs/design.md §3) and forwarded
(§16.6); responses are processed per §16.7, a CANCEL per §16.10.  The rules
are pure functions (:mod:`sipha.proxy.rules`); each request's response context
goes through the table of :mod:`sipha.proxy.context`, driven by
:class:`~sipha.proxy.responses.ResponseContexts`; what to do when a pair member
fails is the :class:`~sipha.proxy.failover.FailoverPolicy`'s decision, and the
pair monitor is reached through :class:`~sipha.proxy.monitoring.MonitorLink`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import Final

from sipha.ha import HaEvent, Member, Monitor, Probe
from sipha.proxy.admission import Admission
from sipha.proxy.context import Input, ResponseContext
from sipha.proxy.failover import FailoverPolicy
from sipha.proxy.lifecycle import CallMemory, TokenBucket
from sipha.proxy.monitoring import MonitorLink
from sipha.proxy.probeshare import Answer as ProbeAnswer
from sipha.proxy.probeshare import ProbeDelegate, ProbeServer, Question
from sipha.proxy.responses import ResponseContexts
from sipha.proxy.routing import RETRY_AFTER_SECONDS, Answer, Forward, decide
from sipha.proxy.rules import (
    LOOP_DETECTED,
    MAGIC_COOKIE,
    call_key,
    check_request,
    member_source,
    ours,
    preprocess_routes,
    record_route_uri,
    via_destination,
    warning,
)
from sipha.proxy.settings import Counters, ProxySettings
from sipha.proxy.targets import Lookup
from sipha.proxy.via import response_destination, stamp_received
from sipha.proxy.view import ConfiguredView
from sipha.sip import Request, Response, SipParseError, make_response, parse_message
from sipha.sip.address import SIPS_PORT, Address
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
from sipha.txn.machines import ServerTransaction

__all__ = [
    "DRAIN_RETRY_AFTER",
    "MAGIC_COOKIE",
    "OVERLOAD_RETRY_AFTER",
    "Counters",
    "ProxyCore",
    "ProxySettings",
    "ResponseContext",
]

# Retry-After of the 503 to a new INVITE over overload-ctrl-dialog-rate: the bucket refills
# within a second (RFC 3261 §21.5.4, §20.33).
OVERLOAD_RETRY_AFTER: Final = 1
# Retry-After of the 503 to a new request while draining (SIGTERM): the caller should use
# another instance of the pool meanwhile (RFC 3263 §4.3); this one is coming back.
DRAIN_RETRY_AFTER: Final = RETRY_AFTER_SECONDS


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
        self.txn = TransactionLayer(settings.timers)
        self.counters = Counters()
        self.aliases: list[tuple[Address, str, int]] = []
        """RFC 5923 ``alias`` requests not drained yet (:meth:`drain_aliases`)."""
        self._token = token or _default_token()
        self._record_route = record_route_uri(settings.record_route)
        self._sent_by = {(host.lower().strip("[]"), port) for host, port in settings.via.values()}
        self._out: list[SendMessage] = []
        # Where the message being processed came from: requests and ACKs the transaction
        # layer passes up during one receive() call came from there (it is synchronous).
        self._source: Address | None = None
        self.draining = False
        """Set by :meth:`start_draining`: new out-of-dialog requests get 503."""
        self._overloaded = False
        self._bucket = TokenBucket(settings.overload_rate)
        self.admission = Admission(self.counters, self._token)
        """Overload shedding by source tier and [limits] max-transactions (docs/design.md §3)."""
        self._calls = CallMemory()
        self._responses = ResponseContexts(
            settings,
            view,
            monitor,
            txn=self.txn,
            counters=self.counters,
            calls=self._calls,
            token=self._token,
        )
        self.failover: FailoverPolicy = self._responses.failover
        self._link = MonitorLink(self.failover, self.txn, settings, self._record_route, self._token)
        self._record_routes = self._responses.record_routes
        self._responses.pump_monitor = self._link.pump
        self.failover.report = lambda event: self._link.events.append(event)  # noqa: PLW0108 - drains swap it

    # ------------------------------------------------------------------ I/O-facing API

    def start(self, now: float) -> None:
        """Start the pair monitor (first OPTIONS), if there is one."""
        if self.monitor is not None:
            self.monitor.start(now)
            self._run(now)

    @property
    def events(self) -> list[HaEvent]:
        """Pair monitor events not drained yet."""
        return self._link.events

    def drain_events(self) -> list[HaEvent]:
        """Pair monitor events since the last call, for the log."""
        events, self._link.events = self._link.events, []
        return events

    @property
    def overloaded(self) -> bool:
        """Set by the driver while sipha reads slower than datagrams arrive (a receive queue fills).

        New INVITEs from endpoints get 503 with Retry-After, so that the work left for what
        is already under way (ACK, BYE, re-INVITE, CANCEL, responses, probes) fits; and
        failover-timeout suspects nobody, as the member's answer may be waiting in that
        queue (docs/design.md §3, overload).
        """
        return self._overloaded

    @overloaded.setter
    def overloaded(self, behind: bool) -> None:
        self._overloaded = behind
        self.failover.behind = behind

    def set_maintenance(self, pair: str, role: str, on: bool, now: float) -> None:  # noqa: FBT001
        """Put ``role`` of ``pair`` in maintenance (``on``) or back to the algorithm (docs/design.md §2).

        ValueError naming what is wrong: no such pair, or no such member in it.
        """
        monitor = self.monitor
        pair_monitor = None if monitor is None else monitor.pairs.get(pair)
        if pair_monitor is None:
            raise ValueError(f"no pair {pair!r}")
        pair_monitor.set_maintenance(role, on, now)
        self._run(now)

    def share_probes(self, worker: int) -> None:
        """``[proxy] workers``: worker 0 probes for the instance, the others ask it.

        :mod:`sipha.proxy.probeshare`: each member gets the OPTIONS of one monitor per
        instance, whatever the number of workers.
        """
        link = self._link
        if worker == 0:
            link.server = ProbeServer(lambda: link.monitor, link.serve_options)
        else:
            link.delegate = ProbeDelegate(lambda: link.monitor, worker)

    @property
    def probe_share_pending(self) -> bool:
        """Whether questions (a follower) or answers (worker 0) wait to be carried."""
        link = self._link
        return bool(
            (link.delegate is not None and link.delegate.questions) or (link.server and link.server.answers)
        )

    def drain_probe_share(self) -> tuple[list[Question], list[ProbeAnswer]]:
        """The questions for worker 0 and the answers for the other workers, since the last call."""
        link = self._link
        questions: list[Question] = []
        answers: list[ProbeAnswer] = []
        if link.delegate is not None:
            questions, link.delegate.questions = link.delegate.questions, []
        if link.server is not None:
            answers, link.server.answers = link.server.answers, []
        return questions, answers

    def probe_question(self, question: Question, now: float) -> None:
        """Another worker's probe (worker 0): answered now or once an OPTIONS settles."""
        if self._link.server is not None:
            self._link.server.question(question, now)
            self._run(now)

    def probe_answer(self, answer: ProbeAnswer, now: float) -> None:
        """Worker 0's answer to one of this worker's probes: fed to the pair monitor."""
        delegate = self._link.delegate
        if delegate is not None and delegate.answered(answer, now):
            self._run(now)

    def use_probe_port(self, transport: str, port: int) -> None:
        """Name ``port`` in the Via of the pair monitor's probes over ``transport`` (its own socket)."""
        self._link.probe_ports[transport.upper()] = port

    def is_probe(self, key: TransactionKey | None) -> bool:
        """Whether ``key`` is one of the pair monitor's OPTIONS transactions (sent from its socket)."""
        return key is not None and key in self._link.probes

    def drain_aliases(self) -> list[tuple[Address, str, int]]:
        """RFC 5923 requests since the last call: (connection, sent-by host, port) to alias."""
        aliases, self.aliases = self.aliases, []
        return aliases

    @property
    def lookups(self) -> list[Lookup]:
        """RFC 3263 lookups of next hops named by host names, not drained yet (docs/design.md §3)."""
        return self._responses.targets.lookups

    @property
    def failed_targets(self) -> list[Address]:
        """RFC 3263 targets that failed, not drained yet: to be tried last for a while."""
        return self._responses.targets.failed

    def drain_lookups(self) -> tuple[list[Lookup], list[Address]]:
        """The lookups to run (answer each with :meth:`located`) and the targets that failed."""
        return self._responses.targets.drain()

    def located(self, key: int, targets: Sequence[Address], now: float) -> None:
        """The answer to :class:`~sipha.proxy.targets.Lookup` ``key``: its targets in order, or none."""
        self._responses.targets.located(key, targets, now)
        self._run(now)

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
                if source.transport == "TLS" and "alias" in message.top_via.params:
                    # RFC 5923 §5: the peer asks that requests to its sent-by reuse this
                    # connection; the transport grants it only for a verified identity.
                    via = message.top_via
                    self.aliases.append((source, via.host_key, via.port or SIPS_PORT))
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
            self.failover.unreachable[member] = now
        self._responses.transport_error(destination, now)
        self._link.transport_error(destination, now)
        self._run(now)

    def pair_news(self, pair: str, what: str, role: str, at: float, now: float) -> None:
        """What another worker of this instance saw happen to a pair at ``at`` (``[proxy] workers``).

        ``what`` is ``active`` (``role`` became the active member), ``lost`` (the active
        member ``role`` was lost: the takeover window opens here too) or ``gone`` (lost,
        and a transport error is the last thing heard from it: its ringing calls may move).
        The pair monitor takes it unless it knows of something later; its events are not
        passed on again.
        """
        if self.monitor is not None:
            self._link.pair_news(pair, what, role, at, now)
            self._run(now)

    def gone(self, member: Member) -> bool:
        """Whether ``member`` is known to be gone, not just silent (for the other workers)."""
        return self.failover.gone(member)

    def handle_timers(self, now: float) -> None:
        """Fire every timer due at ``now`` (the transactions', the monitor's, Timer C, failover)."""
        self.txn.handle_timers(now)
        if self.monitor is not None:
            self.monitor.tick(now)
        self._responses.handle_timers(now)
        self._run(now)

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timers` must be called next, or None."""
        deadline = self._responses.next_deadline()
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
        return len(self._responses.by_server)

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
        return self._responses.under_way

    @property
    def calls(self) -> int:
        """Calls set up through this instance (2xx to an INVITE relayed) not seen ending (BYE)."""
        return len(self._calls)

    def reconfigure(
        self, settings: ProxySettings, view: ConfiguredView, monitor: Monitor | None, now: float
    ) -> None:
        """SIGHUP: new settings, routing view and monitor; transactions under way go on.

        ``monitor`` may carry over pair monitors of the old one (their state is kept);
        its pairs not started yet are started here (unknown, first probe now).  Our old
        Via sent-by addresses stay ours, so that responses to requests forwarded before
        the reload are still relayed.
        """
        record_route = record_route_uri(settings.record_route)
        old_monitor = self.monitor
        self.settings = settings
        self._sent_by |= {(host.lower().strip("[]"), port) for host, port in settings.via.values()}
        self._record_route = record_route
        self._bucket.reconfigure(settings.overload_rate)
        self.view = view
        self.monitor = monitor
        self._responses.reconfigure(settings, view, monitor)
        self._record_routes = self._responses.record_routes
        self._link.reconfigure(settings, record_route, old_monitor, now)
        self._run(now)

    # ------------------------------------------------------------------ receiving

    def _refuse_malformed(self, error: SipParseError, source: Address) -> None:
        """Answer a malformed request with the error's status; drop anything else (§16.3 step 1)."""
        self.counters.parse_errors += 1
        partial = error.message
        if not isinstance(partial, Request) or partial.method == "ACK" or not partial.get("via"):
            return  # responses, ACKs and unaddressable requests are dropped (§17.1.1.3, §16.7)
        response = make_response(
            partial, error.status, error.reason, to_tag=self._token(), headers=[("Warning", warning(error))]
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
        destination = response_destination(request.top_via, source)
        # Behind, or at max-transactions: a 503 without a transaction (sipha.proxy.admission).
        refusal = self.admission.check(request, source, self.txn, self.view, behind=self._overloaded, now=now)
        if refusal is not None:
            self.txn.send_stateless(refusal, destination)
            return
        self.txn.receive_request(request, destination, now)

    def _run(self, now: float) -> None:
        """Process what the transaction layer produced, until it produces nothing more."""
        out = self._out
        txn = self.txn
        link = self._link
        # The monitor is pumped for what it was given before (a tick, a start), then again
        # whenever a probe's outcome was fed to it; the other inputs pump it themselves.
        fed = self.monitor is not None
        while True:
            if fed:
                link.pump(now)
                fed = False
            outputs = txn.drain()
            if not outputs:
                return
            for output in outputs:
                # The output types are final: compare the exact type, the commonest first.
                if type(output) is SendMessage:
                    out.append(output)
                elif link.probes and link.probe_output(output, now):
                    fed = True
                elif type(output) is RequestReceived:
                    self._on_request(output.transaction, output.request, self._source or output.source, now)
                elif type(output) is ResponseReceived:
                    self._responses.on_response(output.transaction, output.response, now)
                elif type(output) is TransactionTerminated:
                    self._responses.on_terminated(output.transaction)
                elif type(output) is AckReceived:
                    self._on_ack(output.request, self._source or output.source, now)
                elif type(output) is StrayResponse:
                    self._forward_stray(output.response, now)
                elif type(output) is TransactionTimeout or type(output) is TransportError:
                    self._responses.on_failure(
                        output.transaction, timeout=type(output) is TransactionTimeout, now=now
                    )

    # ------------------------------------------------------------------ requests: §16.3 to §16.6

    def _on_request(self, server: ServerTransaction, request: Request, source: Address, now: float) -> None:
        """A new request: validate, preprocess its routes, route it, forward it (§16.3 to §16.6)."""
        if request.method == "CANCEL":
            self._on_cancel(server, request, source, now)
            return
        context = ResponseContext(server, request)
        self._responses.by_server[server.key] = context
        refusal = check_request(request, self.settings.supported, self._sent_by)  # §16.3
        if refusal is not None:
            self.counters.loops_detected += refusal[0] == LOOP_DETECTED
            self._responses.refuse(context, *refusal, now=now)
            return
        preprocess_routes(request, self._record_routes, self.view)  # §16.4
        origin = member_source(request, source)
        self._link.note_request_from(request, origin, now)
        if request.to.tag is None:
            if self.draining:
                self.counters.drain_rejections += 1
                retry = [("Retry-After", str(DRAIN_RETRY_AFTER))]
                self._responses.refuse(context, 503, "Service Unavailable", retry, now=now)
                return
            if request.method == "INVITE" and self._refuse_new_call(now):
                self._responses.refuse(
                    context, 503, "Service Unavailable", [("Retry-After", str(OVERLOAD_RETRY_AFTER))], now=now
                )
                return
        elif request.method == "BYE" and self._calls:
            self._calls.forget(call_key(request.call_id, request.from_.tag, request.to.tag))
        decision = decide(request, origin, self.view)  # §16.5, docs/design.md §3
        if isinstance(decision, Answer):
            if decision.pair is not None and self.failover.probing(decision.pair):
                # The pair is being re-probed: hold the request for the member that answers
                # rather than fail a call that can be saved (docs/design.md §2).
                context.pair = decision.pair
                self.failover.hold(context, now)
                return
            fallback = self.failover.fallback(decision, now)  # out of service: docs/deployment.md
            if fallback is not None:
                self._responses.forward(context, fallback, now)
                return
            headers = [] if decision.retry_after is None else [("Retry-After", str(decision.retry_after))]
            self._responses.refuse(context, decision.status, decision.reason, headers, now=now)
            return
        self._responses.forward(context, decision, now)

    def _refuse_new_call(self, now: float) -> bool:
        """Whether a new INVITE is over overload-ctrl-dialog-rate (503)."""
        if not self._bucket.admit(now):
            self.counters.overload_rejections += 1
            return True
        return False

    def _on_ack(self, ack: Request, source: Address, now: float) -> None:
        """An ACK for a 2xx: its own transaction, forwarded like any request (§16.6, §13.2.2.4)."""
        if ack.max_forwards == 0 or self.admission.is_shed_ack(ack):
            # An ACK is never answered (§17.1.1.3); a looped one is dropped, and so is the
            # ACK of a 503 sent without a transaction (sipha.proxy.admission): it ends here.
            return
        preprocess_routes(ack, self._record_routes, self.view)
        origin = member_source(ack, source)
        self._link.note_request_from(ack, origin, now)
        decision = decide(ack, origin, self.view)
        if isinstance(decision, Answer):  # a pair out of service: its fallback's (docs/deployment.md)
            decision = self.failover.fallback(decision, now) or decision
        if isinstance(decision, Forward):
            if decision.locate is not None:  # a host name: sent once its RFC 3263 targets are known
                self._responses.targets.locate_ack(ack, source, decision.locate, now)
                return
            forwarded = self._responses.prepare(ack, source, decision.destination, fork=0)  # §16.6 steps 1-8
            self.txn.send_stateless(forwarded, decision.destination)

    # ------------------------------------------------------------------ responses: §16.7

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
        if len(vias) < 2 or not ours(vias[0], self._sent_by):  # noqa: PLR2004 - ours and the next
            self.counters.stray_responses_dropped += 1
            return
        if self.failover.abandoned and self.failover.late_response(vias[0].branch or "", response, now):
            return  # a branch given up on (docs/design.md §2)
        relayed = response.copy()
        relayed.pop_via()
        self.counters.responses_forwarded += 1
        self.txn.send_stateless(relayed, via_destination(vias[1]))

    # ------------------------------------------------------------------ CANCEL: §16.10

    def _on_cancel(self, server: ServerTransaction, cancel: Request, source: Address, now: float) -> None:
        """§16.10: answer the CANCEL hop by hop, then cancel the pending branch."""
        target = self.txn.find_cancel_target(cancel)
        context = None if target is None else self._responses.by_server.get(target.key)
        if target is None:
            # "If a response context is not found, the element does not have any knowledge of
            # the request to apply the CANCEL to.  It MUST statelessly forward the CANCEL."
            # It is forwarded with the branch its INVITE got from any pool instance (see
            # rules.prepare), so the next hop can match it; statefully, so that its own
            # response comes back through this server transaction.
            orphan = ResponseContext(server, cancel)
            self._responses.by_server[server.key] = orphan
            origin = member_source(cancel, source)
            self._link.note_request_from(cancel, origin, now)
            decision = decide(cancel, origin, self.view)
            if isinstance(decision, Answer):
                self._responses.refuse(orphan, 481, "Call/Transaction Does Not Exist", now=now)
                return
            self._responses.forward(orphan, decision, now)
            return
        # "If a response context is found, the element MUST immediately return a 200 (OK)
        # response to the CANCEL request."
        self.txn.respond(server, make_response(cancel, 200, "OK", to_tag=self._token()), now)
        if context is not None:  # None: answered and retired (ResponseContexts.retire_if_done)
            self._responses.step(context, Input.CANCEL, now)

    # ------------------------------------------------------------------ what the HA tests inspect

    @property
    def _by_client(self) -> dict[object, ResponseContext]:
        return self._responses.by_client

    @property
    def _held(self) -> dict[str, list[ResponseContext]]:
        return self.failover.held

    @property
    def _abandoned(self) -> dict[str, tuple[float, ResponseContext, Member | None]]:
        return self.failover.abandoned

    @property
    def _probes(self) -> dict[TransactionKey, Probe]:
        return self._link.probes


def _default_token() -> Callable[[], str]:
    """Unique tokens for To tags: a random prefix per process and a counter."""
    prefix = secrets.token_hex(4)
    counter = iter(range(1, 2**63))
    return lambda: f"{prefix}{next(counter):x}"
