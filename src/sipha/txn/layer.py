"""The transaction layer: owns every transaction, matches messages to them, runs their timers.

Sans-IO: the caller passes messages and the current time in, drains
:class:`~sipha.txn.events.Output` items out, and asks :meth:`next_deadline`
when to call :meth:`handle_timers` next.  Timers live in one
:class:`~sipha.txn.deadlines.DeadlineQueue` (a first-in, first-out lane per interval)
with lazy deletion: an entry is valid only while its transaction still has that timer
armed for that exact deadline (a terminated one has none); stale entries are dropped when
they reach the front, and the queue is compacted when they outnumber the live ones, so
that memory stays proportional to the live transactions.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Final

from sipha.sip import Request, Response
from sipha.sip.address import Address
from sipha.txn.deadlines import DeadlineQueue
from sipha.txn.events import (
    AckReceived,
    Output,
    SendMessage,
    StrayResponse,
    TransactionTerminated,
)
from sipha.txn.keys import (
    TransactionKey,
    ack_key_2543,
    cancel_target_key,
    client_key_of_request,
    client_key_of_response,
    has_magic_cookie,
    server_key,
)
from sipha.txn.machines import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ClientTransaction,
    Emit,
    Input,
    Schedule,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    ServerTransaction,
    Transaction,
    response_input,
    trying_response,
)
from sipha.txn.table import TransactionTable
from sipha.txn.timers import Timer, TimerConfig

# The timer queue is compacted when it holds more than this many entries beyond what the
# live transactions can have armed (at most two timers each: A+B, E+F, G+H).
_HEAP_SLACK: Final = 64
_LIVE_TIMERS_PER_TRANSACTION: Final = 2


class TransactionLayer:
    """All transactions of one proxy instance (RFC 3261 §17).

    ``auto_trying``: answer every new INVITE with 100 (Trying) at once.  §17.2.1
    says the server transaction "MUST generate a 100 (Trying) response unless it
    knows that the TU will generate a provisional or final response within 200
    ms"; a proxy forwarding the INVITE cannot know that, so this is on by default
    (and stops the upstream Timer A retransmissions early).
    """

    def __init__(self, config: TimerConfig | None = None, *, auto_trying: bool = True) -> None:
        self.config = config if config is not None else TimerConfig()
        self.auto_trying = auto_trying
        self._transactions = TransactionTable()
        # RFC 2543 INVITE server transactions by their ACK key (§17.2.3; To tag checked apart).
        self._acks_2543: dict[TransactionKey, ServerInviteTransaction] = {}
        self._timers: DeadlineQueue[Transaction, Timer] = DeadlineQueue()
        self._outputs: deque[Output] = deque()
        # Bound once, shared by every transaction: a bound method made per transaction was two
        # allocations of 64 B each, kept with it for up to 32 s.
        self._emit: Emit = self._outputs.append
        self._schedule_timer: Schedule = self._schedule

    # ------------------------------------------------------------------ inspection

    def __len__(self) -> int:
        return len(self._transactions)

    def __iter__(self) -> Iterator[Transaction]:
        return iter(list(self._transactions.values()))

    @property
    def transactions(self) -> Mapping[TransactionKey, Transaction]:
        """The live transactions by key (a read-only copy)."""
        return MappingProxyType(self._transactions.as_dict())

    def get(self, key: TransactionKey) -> Transaction | None:
        """The live transaction with ``key``, if any."""
        return self._transactions.get(key)

    @property
    def heap_size(self) -> int:
        """Timer entries queued, stale ones included (to check that nothing leaks)."""
        return len(self._timers)

    # ------------------------------------------------------------------ outputs

    def drain(self) -> list[Output]:
        """Every action and event produced since the last call, in order."""
        outputs = list(self._outputs)
        self._outputs.clear()
        return outputs

    def send_stateless(self, message: Request | Response, destination: Address) -> None:
        """Queue a message that belongs to no transaction (an ACK for a 2xx, a stray 2xx)."""
        self._outputs.append(SendMessage(message, destination, None))

    # ------------------------------------------------------------------ client side

    def send_request(
        self, request: Request, destination: Address, now: float, *, reliable: bool | None = None
    ) -> ClientTransaction:
        """Create a client transaction for ``request`` and send it (§17.1.1.2, §17.1.2.2).

        The request must already carry its top Via with an RFC 3261 branch (the
        proxy core adds it, §16.6 step 8).  ``reliable`` defaults to what the
        destination's transport is.  Raises ValueError for an ACK (the ACK of a
        non-2xx is the INVITE transaction's own, and the ACK of a 2xx belongs to
        no transaction: use :meth:`send_stateless`), for a branch without the
        magic cookie, and for a key already in use.
        """
        if request.method == "ACK":
            raise ValueError("an ACK is not sent in a client transaction (§17, §17.1.1.3)")
        key = client_key_of_request(request)
        if key in self._transactions:
            raise ValueError(f"a client transaction with key {key!r} already exists")
        if reliable is None:
            reliable = destination.reliable
        # Each class called by name (not through a variable): a direct call in the compiled build.
        transaction: ClientTransaction
        if request.method == "INVITE":
            transaction = ClientInviteTransaction(
                key, request, destination, reliable=reliable, config=self.config,
                emit=self._emit, schedule=self._schedule_timer,
            )  # fmt: skip
        else:
            transaction = ClientNonInviteTransaction(
                key, request, destination, reliable=reliable, config=self.config,
                emit=self._emit, schedule=self._schedule_timer,
            )  # fmt: skip
        self._transactions.add(key, transaction)
        transaction.handle(Input.SEND, now)
        self._settle(transaction)
        return transaction

    def receive_response(self, response: Response, now: float) -> ClientTransaction | None:
        """Match a response to its client transaction (§17.1.3) and feed it.

        A response that matches nothing becomes a :class:`StrayResponse` event
        and None is returned.  Raises :class:`~sipha.sip.SipParseError` when the
        top Via or the CSeq cannot be parsed (the caller validates first).
        """
        key = client_key_of_response(response)
        transaction = None if key is None else self._transactions.get(key)
        if not isinstance(transaction, ClientTransaction):
            self._outputs.append(StrayResponse(response))
            return None
        transaction.handle(response_input(response.status, from_tu=False), now, response)
        self._settle(transaction)
        return transaction

    # ------------------------------------------------------------------ server side

    def has_server(self, request: Request) -> bool:
        """Whether ``request`` matches a server transaction (§17.2.3): it is a retransmission."""
        return isinstance(self._transactions.get(server_key(request)), ServerTransaction)

    def receive_request(self, request: Request, source: Address, now: float) -> ServerTransaction | None:
        """Match a request to its server transaction (§17.2.3), or create one.

        Retransmissions are absorbed by their transaction (which resends its
        last response as its state says).  An ACK that matches an INVITE server
        transaction is fed to it; any other ACK (the ACK of a 2xx, which is not
        part of the INVITE transaction, §17) becomes an :class:`AckReceived`
        event and None is returned, as an ACK never creates a transaction.
        A CANCEL creates its own non-INVITE transaction (§9.2); see
        :meth:`find_cancel_target`.  Raises :class:`~sipha.sip.SipParseError`
        when a header needed for matching cannot be parsed.
        """
        if request.method == "ACK":
            invite = self._match_ack(request)
            if invite is None:
                self._outputs.append(AckReceived(request, source))
                return None
            invite.handle(Input.ACK, now, request)
            self._settle(invite)
            return invite
        key = server_key(request)
        existing = self._transactions.get(key)
        if isinstance(existing, ServerTransaction):
            existing.handle(Input.REQUEST, now, request)
            self._settle(existing)
            return existing
        reliable = source.reliable
        transaction: ServerTransaction
        if request.method == "INVITE":
            invite = ServerInviteTransaction(
                key, request, source, reliable=reliable, config=self.config,
                emit=self._emit, schedule=self._schedule_timer,
            )  # fmt: skip
            self._transactions.add(key, invite)
            if not has_magic_cookie(request.top_via.branch):
                invite.ack_key = ack_key_2543(request)
                self._acks_2543[invite.ack_key] = invite
            invite.handle(Input.REQUEST, now, request)
            if self.auto_trying:
                invite.handle(Input.TU_1XX, now, trying_response(request))
            transaction = invite
        else:
            transaction = ServerNonInviteTransaction(
                key, request, source, reliable=reliable, config=self.config,
                emit=self._emit, schedule=self._schedule_timer,
            )  # fmt: skip
            self._transactions.add(key, transaction)
            transaction.handle(Input.REQUEST, now, request)
        self._settle(transaction)
        return transaction

    def respond(self, transaction: ServerTransaction, response: Response, now: float) -> bool:
        """Pass a response from the TU to its server transaction.

        Returns False when the transaction is gone or its state discards the
        response (e.g. a second final response, §17.2.2: "MUST be discarded").
        """
        if self._transactions.get(transaction.key) is not transaction:
            return False
        handled = transaction.handle(response_input(response.status, from_tu=True), now, response)
        self._settle(transaction)
        return handled

    def send_trying(self, transaction: ServerTransaction, now: float) -> bool:
        """Send 100 (Trying) on ``transaction`` now (for a layer built with ``auto_trying=False``)."""
        request = transaction.request
        if request is None:  # a final response was sent: it is too late for a 100
            return False
        return self.respond(transaction, trying_response(request), now)

    def find_cancel_target(self, cancel: Request) -> ServerInviteTransaction | None:
        """The live INVITE server transaction a CANCEL refers to (§9.2), if any."""
        transaction = self._transactions.get(cancel_target_key(cancel))
        return transaction if isinstance(transaction, ServerInviteTransaction) else None

    def _match_ack(self, ack: Request) -> ServerInviteTransaction | None:
        """§17.2.3 for ACK: the INVITE server transaction it belongs to, if any."""
        if has_magic_cookie(ack.top_via.branch):
            transaction = self._transactions.get(server_key(ack))
            return transaction if isinstance(transaction, ServerInviteTransaction) else None
        candidate = self._acks_2543.get(ack_key_2543(ack))
        # "... and the To tag of the ACK matches the To tag of the response sent by the
        # server transaction."  (The final response's: only a final one is ACKed.)
        if candidate is None or candidate.final_to_tag is None or candidate.final_to_tag != ack.to.tag:
            return None
        return candidate

    # ------------------------------------------------------------------ both sides

    def transport_error(self, key: TransactionKey, now: float) -> bool:
        """Report that the transport failed to send a message of transaction ``key``.

        §17.1.4 (client: inform the TU, go to Terminated), §17.2.4 and RFC 6026
        §8.8 (server INVITE: inform the TU, keep the state).  Returns False when
        no such transaction is live or its state ignores the error.
        """
        transaction = self._transactions.get(key)
        if transaction is None:
            return False
        handled = transaction.handle(Input.TRANSPORT_ERROR, now)
        self._settle(transaction)
        return handled

    def handle_timers(self, now: float) -> None:
        """Fire every timer due at or before ``now``, earliest first."""
        timers = self._timers
        while (entry := timers.pop_due(now)) is not None:
            if self._live(entry):
                _, _, transaction, timer = entry
                transaction.handle(timer, now)
                self._settle(transaction)

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timers` must next be called, or None when no timer is armed."""
        timers = self._timers
        while (entry := timers.first()) is not None:
            if self._live(entry):
                return entry[0]
            timers.pop()
        return None

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _live(entry: tuple[float, int, Transaction, Timer]) -> bool:
        # The transaction still has that timer armed for that deadline.  That is also "still
        # registered": a transaction leaves the table only in _settle, once Terminated, and
        # reaching Terminated disarms both its timers; a key is never taken over by another
        # transaction while its holder lives (send_request refuses a key in use, and a
        # request matching a live server transaction goes to it).
        _, _, transaction, timer = entry
        return transaction.timer_deadline(timer) == entry[0]

    def _schedule(self, transaction: Transaction, timer: Timer, deadline: float, interval: float) -> None:
        # The lane is the interval: deadlines armed with one interval come in order.
        timers = self._timers
        timers.push(deadline, interval, transaction, timer)
        limit = _HEAP_SLACK + _LIVE_TIMERS_PER_TRANSACTION * len(self._transactions)
        if len(timers) > 2 * limit:
            timers.compact(self._live)

    def _settle(self, transaction: Transaction) -> None:
        """Remove a transaction that reached Terminated, and tell the TU."""
        if not transaction.terminated or self._transactions.get(transaction.key) is not transaction:
            return
        self._transactions.remove(transaction.key)
        ack_key = transaction.ack_key
        if ack_key is not None and self._acks_2543.get(ack_key) is transaction:
            del self._acks_2543[ack_key]
        self._outputs.append(TransactionTerminated(transaction))
