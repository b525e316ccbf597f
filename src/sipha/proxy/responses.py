"""The live response contexts: their branches, their timers, and what their table's operations do.

:class:`ResponseContexts` indexes each context by its server transaction and by
its live branch's client transaction, keeps the contexts' own timers (Timer C,
failover-timeout, hold-limit) in one deadline queue, and performs the operations of the
rows of :data:`sipha.proxy.context.TABLE`: relay a response (§16.7 steps 3, 9),
send the best one (§16.7 step 6), generate one, CANCEL a branch (§9.1, §16.10),
run Timer C (§16.6 step 11, §16.8).  It is the failover policy's
:class:`~sipha.proxy.failover.Host`, and the RFC 3263 target policy's
(:class:`~sipha.proxy.targets.TargetPolicy`: next hops named by host names).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final

from sipha.ha import Monitor
from sipha.proxy.context import TABLE, Input, Op, ResponseContext, State, Timer
from sipha.proxy.failover import FailoverPolicy
from sipha.proxy.lifecycle import CallMemory
from sipha.proxy.routing import RETRY_AFTER_SECONDS, Forward
from sipha.proxy.rules import RecordRoutes, better, build_cancel, call_key, prepare
from sipha.proxy.settings import Counters, ProxySettings
from sipha.proxy.targets import TargetPolicy
from sipha.proxy.view import ConfiguredView
from sipha.sip import Request, Response, make_response
from sipha.sip.address import Address
from sipha.txn import State as TxnState
from sipha.txn import Transaction, TransactionLayer
from sipha.txn.deadlines import DeadlineQueue
from sipha.txn.machines import ClientTransaction, build_ack

# The deadline queue is compacted when it holds more than this many entries beyond what the
# live contexts can have armed (Timer C, the failover timer and the hold timer).
_HEAP_SLACK: Final = 64
_LIVE_TIMERS_PER_CONTEXT: Final = 3


class ResponseContexts:
    """Every response context alive, driven through its table (§16.7, §16.8, §16.10)."""

    def __init__(
        self,
        settings: ProxySettings,
        view: ConfiguredView,
        monitor: Monitor | None,
        *,
        txn: TransactionLayer,
        counters: Counters,
        calls: CallMemory,
        token: Callable[[], str],
    ) -> None:
        self.settings = settings
        self.record_routes = _record_routes(settings)
        """Our Record-Route values per transport (§16.6 step 4, RFC 5658), for these settings."""
        self.view = view
        self.txn = txn
        self.counters = counters
        self.calls = calls
        self.token = token
        self.by_server: dict[object, ResponseContext] = {}
        self.by_client: dict[object, ResponseContext] = {}
        # The live branches by destination, so that a transport error (an ICMP error, a refused
        # connection) looks at its own branches only: a flood's closed ports must not make each
        # error a scan of every branch.
        self._branches_to: dict[Address, set[object]] = {}
        self._destination_of: dict[object, Address] = {}
        self.own_cancels: set[object] = set()
        """Client transactions of the CANCELs sent here: their 200 is hop-by-hop (§16.10)."""
        # The contexts' timers with lazy deletion: (deadline, sequence, context, timer); an
        # entry whose context no longer holds that deadline for that timer is stale.  A lane
        # per kind of timer: each is armed with one interval (Timer C's 180 s and its 64*T1
        # after a CANCEL aside), so their deadlines come in order (sipha.txn.deadlines).
        self._deadlines: DeadlineQueue[ResponseContext, Timer] = DeadlineQueue()
        self.failover = FailoverPolicy(self, settings, view, monitor, counters)
        self.targets = TargetPolicy(self, settings, counters)
        self.pump_monitor: Callable[[float], None] = _no_pump
        """Sends the pair monitor's probes and applies its news (set by the core)."""

    def reconfigure(self, settings: ProxySettings, view: ConfiguredView, monitor: Monitor | None) -> None:
        """SIGHUP: new settings, view and monitor for the contexts and the policy."""
        self.settings = settings
        self.record_routes = _record_routes(settings)
        self.view = view
        self.failover.reconfigure(settings, view, monitor)
        self.targets.reconfigure(settings)

    @property
    def under_way(self) -> int:
        """Contexts whose final response is not sent yet."""
        return sum(1 for context in self.by_server.values() if context.state is not State.COMPLETED)

    # ------------------------------------------------------------------ what happens to the contexts

    def forward(self, context: ResponseContext, decision: Forward, now: float) -> None:
        """§16.6 request forwarding, steps 1 to 11, for one target (a host name: its targets, step 7)."""
        if decision.locate is not None:
            self.targets.locate(context, decision.locate, now)
            return
        # Steps 1-8 (the server transaction's peer: where, and on which transport, the request came from).
        source = context.server.peer
        forwarded = self.prepare(context.request, source, decision.destination, fork=context.attempt)
        client = self.txn.send_request(forwarded, decision.destination, now)  # step 10
        context.forwarded = forwarded
        context.client = client
        context.destination = decision.destination
        self.by_client[client.key] = context
        self._destination_of[client.key] = decision.destination
        self._branches_to.setdefault(decision.destination, set()).add(client.key)
        self.counters.requests_forwarded += 1
        self.step(context, Input.FORWARDED, now)  # step 11: Timer C
        if decision.pair is not None:
            context.pair = decision.pair
            context.member = self.view.active_member(decision.pair)
            self.failover.forwarded(context, now)

    def prepare(self, request: Request, source: Address, destination: Address, *, fork: int) -> Request:
        """§16.6 steps 1 to 8 with our settings: the copy of ``request``, from ``source``, to send."""
        settings = self.settings
        return prepare(
            request,
            destination,
            inbound=source.transport,
            record_routes=self.record_routes,
            via=settings.via,
            branch_tag=settings.branch_tag,
            fork=fork,
        )

    def refuse(
        self,
        context: ResponseContext,
        status: int,
        reason: str,
        headers: Iterable[tuple[str, str]] = (),
        *,
        now: float,
    ) -> None:
        """Answer a request that is not forwarded (§16.3, routing, drain, overload, §16.10)."""
        self.step(context, Input.REFUSED, now, self._generated(context, status, reason, headers))

    def on_response(self, client: ClientTransaction, response: Response, now: float) -> None:
        """§16.7 response processing: step 1 finds the context, its table does the rest."""
        if client.key in self.own_cancels:
            return  # the 200 to a CANCEL we generated is hop-by-hop (§16.10)
        context = self.by_client.get(client.key)
        if context is None:
            return
        self.failover.heard[context.member] = now
        status = response.status
        if context.locate is not None:
            self.targets.answered(context, now)
            if status == 503 and self.targets.failed_branch(context, now, response=True):  # noqa: PLR2004
                return  # RFC 3263 §4.3: the next target
        if status < 200:  # noqa: PLR2004
            event = Input.RESP_100 if status == 100 else Input.RESP_1XX  # noqa: PLR2004
        else:
            event = Input.RESP_2XX if status < 300 else Input.RESP_3XX_6XX  # noqa: PLR2004
        self.step(context, event, now, response)

    def on_failure(self, transaction: Transaction, *, timeout: bool, now: float) -> None:
        """Timer B/F or a transport error on a branch (§16.8, §16.9)."""
        if not isinstance(transaction, ClientTransaction):
            return  # a server transaction's Timer H: nothing left to send
        context = self.by_client.get(transaction.key)
        if context is None or context.client is not transaction or context.state is State.COMPLETED:
            return
        if self.failover.can_fail_over(context):
            self.failover.fail_over(context, now, dead=True)
            return
        if context.locate is not None and self.targets.failed_branch(context, now):
            return  # RFC 3263 §4.3: the next target, or 408
        # §8.1.3.1: a timeout is a 408; §16.9: a transport error "as if a 503" (then §16.7
        # step 6 turns a selected 503 into a 500).
        status, reason = (408, "Request Timeout") if timeout else (503, "Service Unavailable")
        synthetic = make_response(context.forwarded or context.request, status, reason, to_tag=self.token())
        self.step(context, Input.TIMEOUT if timeout else Input.TRANSPORT_ERROR, now, synthetic)

    def on_terminated(self, transaction: Transaction) -> None:
        """A transaction ended: forget it (and the context, when it was the server one)."""
        key = transaction.key
        self.own_cancels.discard(key)
        branch_of = self._unbranch(key)
        if branch_of is not None:
            self.retire_if_done(branch_of)
        context = self.by_server.pop(key, None)
        if context is not None and context.abandoned:
            self.failover.forget(context)

    def _unbranch(self, key: object) -> ResponseContext | None:
        """Forget the branch of client transaction ``key``; its context, if it was live."""
        destination = self._destination_of.pop(key, None)
        if destination is not None:
            keys = self._branches_to.get(destination)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._branches_to[destination]
        return self.by_client.pop(key, None)

    def retire_if_done(self, context: ResponseContext) -> None:
        """Forget a context that has nothing left to do (memory: docs/design.md §5).

        Its final response is sent, no branch is live, nothing is held or given up on: no
        response can reach it and none of its timers runs.  What a held call still needs
        is its server transaction (which absorbs INVITE retransmissions until Timer L);
        a late CANCEL is answered from that transaction (:meth:`ProxyCore._on_cancel`).

        A branch whose client transaction is Completed is done too: it passes nothing up
        any more (§17.1.1.2: retransmissions of the final response "MUST NOT be passed up
        to the TU"; §17.1.2.2: Completed "buffer[s] any additional response
        retransmissions").  Waiting for its Timer D (32 s) would keep every rejected
        INVITE's request, copy and response that long: a flood's memory.
        """
        client = context.client
        if (
            context.state is State.COMPLETED
            and (client is None or client.terminated or client.state is TxnState.COMPLETED)
            and not context.abandoned
            and context.held_until is None
            and self.by_server.get(context.server.key) is context
        ):
            del self.by_server[context.server.key]
            if client is not None and not client.terminated:
                self._unbranch(client.key)
            # A stale timer-queue entry may keep the context a while: not its copies and responses.
            context.forwarded = context.best = context.client = None

    def transport_error(self, destination: Address, now: float) -> None:
        """§17.1.4: the branches waiting on ``destination`` are told (not the ones answered)."""
        for key in list(self._branches_to.get(destination, ())):
            context = self.by_client.get(key)
            client = None if context is None else context.client
            if (
                context is not None
                and client is not None
                and client.key == key
                and context.destination == destination
                and (client.state is TxnState.CALLING or client.state is TxnState.TRYING)
            ):
                self.txn.transport_error(client.key, now)

    # ------------------------------------------------------------------ timers

    def arm(self, context: ResponseContext, timer: Timer, deadline: float) -> None:
        """Set one of the context's timers."""
        context.set_deadline(timer, deadline)
        queue = self._deadlines
        queue.push(deadline, timer, context, timer)
        # Stale entries (Timer C of an answered INVITE: 180 s) would keep their contexts, and the
        # requests they hold, alive long after they are forgotten: compact the queue once they
        # outnumber what the live contexts can have armed (amortised O(1) per push).
        if len(queue) > 2 * (_HEAP_SLACK + _LIVE_TIMERS_PER_CONTEXT * len(self.by_server)):
            queue.compact(_armed)

    def handle_timers(self, now: float) -> None:
        """Fire the contexts' timers due at ``now``."""
        queue = self._deadlines
        while (entry := queue.pop_due(now)) is not None:
            deadline, _, context, timer = entry
            if context.deadline(timer) != deadline:
                continue  # re-armed or cleared since: a stale entry
            if timer is Timer.C:
                context.timer_c = None
                self.step(context, Input.TIMER_C, now)
            elif timer is Timer.FAILOVER:
                if context.locate is not None:
                    self.targets.silent(context, now)
                else:
                    self.failover.failover_due(context, now)
            else:
                self.failover.expire(context, now)
        if self.failover.releasing:
            self.failover.release_more(now)
        self.failover.prune(now)

    def next_deadline(self) -> float | None:
        """When the earliest live timer of a context fires, or None."""
        queue = self._deadlines
        while (entry := queue.first()) is not None and not _armed(entry):
            queue.pop()  # stale: the context's timer was cleared or re-armed
        deadline = entry[0] if entry is not None else None
        release = self.failover.release_due
        if release is not None and (deadline is None or release < deadline):
            return release
        return deadline

    # ------------------------------------------------------------------ the table

    def step(
        self, context: ResponseContext, event: Input, now: float, message: Response | None = None
    ) -> bool:
        """Feed ``event`` to ``context``: its row's operations, in order; False when ignored."""
        state = context.state
        row = TABLE.get((state, event))
        if row is None:
            return False
        target = row.target
        if state is State.CALLING and target is not State.CALLING:
            context.failover_at = None  # the member answered, or the branch is handled otherwise
        if target is State.COMPLETED:
            context.timer_c = None
        context.state = target
        for op in row.ops:
            self._perform(op, context, now, message)
        if target is State.COMPLETED:
            self.retire_if_done(context)
        return True

    def branches(self) -> list[ResponseContext]:
        """The contexts with a live branch (a copy)."""
        return list(self.by_client.values())

    def pump(self, now: float) -> None:
        """Send the pair monitor's probes and apply its news, now."""
        self.pump_monitor(now)

    def _perform(self, op: Op, context: ResponseContext, now: float, message: Response | None) -> None:
        """One operation of a row (see :class:`sipha.proxy.context.Op`), the commonest first."""
        if op is Op.RELAY:
            self._relay(context, _need(message), now)
        elif op is Op.START_TIMER_C:
            if context.request.method == "INVITE" and context.timer_c is None:
                self.arm(context, Timer.C, now + self.settings.timer_c)
        elif op is Op.RESTART_TIMER_C:
            if context.timer_c is not None:
                self.arm(context, Timer.C, now + self.settings.timer_c)
        elif op is Op.REMEMBER_CALL:
            self._remember_call(context, _need(message), now)
        elif op is Op.KEEP_BEST:
            context.best = better(context.best, _need(message))
        elif op is Op.SEND_BEST:
            self._send_best(context, now)
        elif op is Op.RESPOND:
            self._send_final(context, _need(message), now)
        elif op is Op.ANSWER_408:
            self._answer(context, 408, "Request Timeout", now=now)
        elif op is Op.ANSWER_487:
            self._answer(context, 487, "Request Terminated", now=now)
        elif op is Op.ANSWER_503:
            retry = [("Retry-After", str(RETRY_AFTER_SECONDS))]
            self._answer(context, 503, "Service Unavailable", retry, now=now)
        elif op is Op.STOP_TIMER_C:
            context.timer_c = None
        elif op is Op.SEND_CANCEL:
            self._send_cancel(context, now)
        elif op is Op.GUARD_CANCEL:
            self.arm(context, Timer.C, now + 64 * self.settings.timers.t1)
        elif op is Op.DESTROY_BRANCH:
            if context.client is not None:
                self.txn.transport_error(context.client.key, now)  # destroys the client transaction
        elif op is Op.ACK:
            if context.forwarded is not None and context.destination is not None:
                self.txn.send_stateless(build_ack(context.forwarded, _need(message)), context.destination)
        elif op is Op.UNHOLD:
            self.failover.unhold(context)
        elif op is Op.GIVE_UP_BRANCH:
            self._give_up_branch(context, now)
        elif op is Op.RETIRE_BRANCH:
            self._retire_branch(context)
        else:  # Op.FORGET_BEST
            context.best = None

    def _relay(self, context: ResponseContext, response: Response, now: float) -> None:
        """§16.7 step 3 (remove our Via) and step 9 (send on the server transaction)."""
        relayed = response.copy()
        relayed.pop_via()
        if relayed.get("via") is None:
            # §16.7 step 3: "If no Via header field values remain in the response, the
            # response was meant for this element and MUST NOT be forwarded."
            self.counters.stray_responses_dropped += 1
            return
        self.counters.responses_forwarded += 1
        self.txn.respond(context.server, relayed, now)

    def _send_best(self, context: ResponseContext, now: float) -> None:
        """§16.7 step 6: all branches are done: forward the best response (or generate one)."""
        best = context.best
        if best is None:  # pragma: no cover - every row keeps a response before sending the best
            # "If there are no final responses in the context, the proxy MUST send a 408
            # (Request Timeout) response to the server transaction."
            self._answer(context, 408, "Request Timeout", now=now)
        elif best.status == 503:  # noqa: PLR2004
            # "A proxy which receives a 503 (Service Unavailable) response SHOULD NOT forward
            # it upstream unless it can determine that any subsequent requests it might proxy
            # will also generate a 503. ... If the only response that was received is a 503,
            # the proxy SHOULD generate a 500 response".
            self._answer(context, 500, "Server Internal Error", now=now)
        else:
            self._relay(context, best, now)

    def _answer(
        self,
        context: ResponseContext,
        status: int,
        reason: str,
        headers: Iterable[tuple[str, str]] = (),
        *,
        now: float,
    ) -> None:
        """A final response generated here (§16.7 step 6, §16.8, §16.10, docs/design.md §2)."""
        self._send_final(context, self._generated(context, status, reason, headers), now)

    def _generated(
        self, context: ResponseContext, status: int, reason: str, headers: Iterable[tuple[str, str]]
    ) -> Response:
        """A final response of our own to the context's request, with a fresh To tag (§8.2.6)."""
        return make_response(context.request, status, reason, to_tag=self.token(), headers=headers)

    def _send_final(self, context: ResponseContext, response: Response, now: float) -> None:
        self.counters.requests_refused += response.status >= 300  # noqa: PLR2004 - failures only
        self.txn.respond(context.server, response, now)

    def _send_cancel(self, context: ResponseContext, now: float) -> None:
        """Send the CANCEL of a forwarded INVITE (§9.1) on a client transaction of its own."""
        forwarded = context.forwarded
        destination = context.destination
        if forwarded is None or destination is None:  # pragma: no cover - forwarded contexts only
            return
        client = self.txn.send_request(build_cancel(forwarded), destination, now)
        self.own_cancels.add(client.key)

    def _give_up_branch(self, context: ResponseContext, now: float) -> None:
        """The branch is given up: its late responses are recognised; it stops retransmitting."""
        client = context.client
        if client is None:
            return
        self._unbranch(client.key)
        context.client = None
        self.failover.given_up(context, now)
        context.attempt += 1
        self.txn.transport_error(client.key, now)  # stop retransmitting to the member

    def _retire_branch(self, context: ResponseContext) -> None:
        """A failed branch (RFC 3263 §4.3): forgotten here; its transaction ends on its own.

        After a 503 an INVITE's client transaction still ACKs the retransmissions (§17.1.1.2,
        Timer D): it is not stopped, only no longer this context's branch.
        """
        client = context.client
        if client is not None:
            self._unbranch(client.key)
            context.client = None
        context.attempt += 1

    def _remember_call(self, context: ResponseContext, response: Response, now: float) -> None:
        """A 2xx to a dialog-creating INVITE was relayed: a call is up through this instance."""
        request = context.request
        to_tag = response.to.tag
        if request.method == "INVITE" and request.to.tag is None and to_tag is not None:
            self.calls.remember(call_key(request.call_id, request.from_.tag, to_tag), now)


def _record_routes(settings: ProxySettings) -> RecordRoutes:
    """Our Record-Route values for ``settings`` (derived from the configured URI and Via if not given)."""
    return RecordRoutes.build(settings.record_route, settings.record_routes, settings.via)


def _no_pump(now: float) -> None:
    """The pump before the core connects the monitor link (nothing to send, nothing changed)."""


def _need(message: Response | None) -> Response:
    """The response an operation works on (rows that need one are fed one)."""
    if message is None:  # pragma: no cover - a table row fed without its response
        raise ValueError("this operation needs the response")
    return message


def _armed(entry: tuple[float, int, ResponseContext, Timer]) -> bool:
    """Whether a queued timer entry is still its context's deadline for that timer."""
    return entry[2].deadline(entry[3]) == entry[0]
