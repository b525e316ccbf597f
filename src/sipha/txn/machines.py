"""The transactions that run the tables of :mod:`sipha.txn.tables` (RFC 3261 §17, RFC 6026).

A :class:`Transaction` feeds each input to its table, performs the row's operations and
keeps the timers as the tables' docstring says.  The names of the tables module are
re-exported here for the callers that know the machines by this name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Final

from sipha.sip import Request, Response, SipParseError, make_response, parse_message
from sipha.sip.address import Address
from sipha.sip.grammar import split_commas
from sipha.txn.events import (
    AckReceived,
    Output,
    RequestReceived,
    ResponseReceived,
    SendMessage,
    TransactionTimeout,
    TransportError,
)
from sipha.txn.keys import TransactionKey
from sipha.txn.tables import (
    CLIENT_INVITE_TABLE,
    CLIENT_NON_INVITE_TABLE,
    SERVER_INVITE_TABLE,
    SERVER_NON_INVITE_TABLE,
    Input,
    Op,
    State,
    Table,
    TableInput,
    Transition,
)
from sipha.txn.timers import Timer, TimerConfig

__all__ = [
    "ACK_MAX_FORWARDS",
    "CLIENT_INVITE_TABLE",
    "CLIENT_NON_INVITE_TABLE",
    "SERVER_INVITE_TABLE",
    "SERVER_NON_INVITE_TABLE",
    "TABLES",
    "ClientInviteTransaction",
    "ClientNonInviteTransaction",
    "ClientTransaction",
    "Input",
    "Op",
    "ServerInviteTransaction",
    "ServerNonInviteTransaction",
    "ServerTransaction",
    "State",
    "Table",
    "TableInput",
    "Transaction",
    "Transition",
    "build_ack",
    "response_input",
    "trying_response",
]

# RFC 3261 §8.1.1.6: "A UAC MUST insert a Max-Forwards header field into each request it
# originates with a value that SHOULD be 70."  The ACK built here is such a request.
ACK_MAX_FORWARDS: Final = "70"


# ------------------------------------------------------------------ helpers


def response_input(status: int, *, from_tu: bool) -> Input:
    """The table input for a response: received (client side) or from the TU (server side)."""
    if status < 200:  # noqa: PLR2004 - 1xx is provisional (§7.2)
        return Input.TU_1XX if from_tu else Input.RESP_1XX
    if status < 300:  # noqa: PLR2004 - 2xx is success
        return Input.TU_2XX if from_tu else Input.RESP_2XX
    return Input.TU_3XX_6XX if from_tu else Input.RESP_3XX_6XX


def build_ack(request: Request, response: Response) -> Request:
    """The ACK a client INVITE transaction sends for a 300-699 response (§17.1.1.3).

    "The ACK request constructed by the client transaction MUST contain values
    for the Call-ID, From, and Request-URI that are equal to the values of
    those header fields in the request passed to the transport by the client
    transaction (call this the 'original request').  The To header field in
    the ACK MUST equal the To header field in the response being acknowledged
    ... The ACK MUST contain a single Via header field, and this MUST be equal
    to the top Via header field of the original request.  The CSeq header field
    in the ACK MUST contain the same value for the sequence number as was
    present in the original request, but the method parameter MUST be equal to
    'ACK'.  If the INVITE request whose response is being acknowledged had
    Route header fields, those header fields MUST appear in the ACK."
    """
    top_via = split_commas(request.get_all("via")[0])[0]
    headers: list[tuple[str, str]] = [("Via", top_via)]
    headers += [("Route", value) for value in request.get_all("route")]
    headers += [
        ("Max-Forwards", ACK_MAX_FORWARDS),
        ("From", request.get("from") or ""),
        ("To", response.get("to") or ""),
        ("Call-ID", request.get("call-id") or ""),
        ("CSeq", f"{request.cseq.seq} ACK"),
    ]
    return Request.build("ACK", request.uri, headers)


def trying_response(request: Request) -> Response:
    """A 100 (Trying) for ``request``, copying Timestamp as §8.2.6.1 requires.

    "If a Timestamp header field is present in the request, the UAS MUST copy
    it into the response"; a 100 gets no To tag (§8.2.6.2 asks for one only
    when the response is not a 100).
    """
    timestamp = request.get("timestamp")
    headers = [] if timestamp is None else [("Timestamp", timestamp)]
    return make_response(request, 100, "Trying", headers=headers)


def _need_response(message: Request | Response | None) -> Response:
    if not isinstance(message, Response):
        raise TypeError(f"this input needs a response, got {message!r}")
    return message


def _resent(data: bytes) -> Response:
    """The final response a server transaction sent, parsed back from its bytes to be sent again."""
    try:
        response = parse_message(data)
    except SipParseError:
        response = None
    if isinstance(response, Response):
        return response
    # Bytes sipha serialised itself, from a message it parsed or built: they parse.  Were they
    # ever not to, the same bytes still go (the status is what the sending side reads).
    return Response(int(data[8:11]), "", [], raw=data)


def _kept(request: Request | None) -> Request:
    if request is None:  # pragma: no cover - the tables forget the request only where no row uses it
        raise RuntimeError("the transaction's request was forgotten (Op.FORGET_*) and a later row needs it")
    return request


def _need_request(message: Request | Response | None) -> Request:
    if not isinstance(message, Request):
        raise TypeError(f"this input needs a request, got {message!r}")
    return message


Emit = Callable[[Output], None]
Schedule = Callable[["Transaction", Timer, float, float], None]
"""(transaction, timer, deadline, interval): arm a timer."""


# ------------------------------------------------------------------ transactions


class Transaction:
    """One transaction: its table, state, timers and messages.

    Transactions do no I/O and keep no clock: every input comes with ``now``,
    outputs go to ``emit`` and timers are announced to ``schedule`` (the
    :class:`~sipha.txn.TransactionLayer` keeps them in a deadline queue and calls
    :meth:`handle` with the timer when it is due).
    """

    TABLE: ClassVar[Table]
    is_invite: ClassVar[bool]
    is_client: ClassVar[bool]

    __slots__ = (
        "_deadline_1",
        "_deadline_2",
        "_emit",
        "_fired",
        "_interval_1",
        "_interval_2",
        "_schedule",
        "_timer_1",
        "_timer_2",
        "ack",
        "ack_key",
        "config",
        "final_bytes",
        "final_to_tag",
        "key",
        "last_response",
        "method",
        "peer",
        "reliable",
        "request",
        "state",
    )

    def __init__(
        self,
        key: TransactionKey,
        request: Request,
        peer: Address,
        *,
        reliable: bool,
        config: TimerConfig,
        emit: Emit,
        schedule: Schedule,
    ) -> None:
        self.key = key
        self.method = request.method
        self.request: Request | None = request
        """The request, until a state that never sends it nor passes it up again (Op.FORGET_*)."""
        self.peer = peer
        """Client: where the request goes.  Server: where the request came from."""
        self.reliable = reliable
        self.config = config
        self.state = State.INITIAL
        self.last_response: Response | None = None
        """Server: the last provisional response sent (resent on retransmissions; a final one is
        kept as :attr:`final_bytes`).  Client: the last received."""
        self.ack: Request | None = None
        """Client INVITE: the ACK built for a 300-699 response (§17.1.1.3)."""
        self.ack_key: TransactionKey | None = None
        """Server INVITE from an RFC 2543 client: the key of its ACK (§17.2.3; set by the layer)."""
        self.final_to_tag: str | None = None
        """Server: the To tag of the final response sent (§17.2.3 matches an RFC 2543 ACK by it)."""
        self.final_bytes: bytes | None = None
        """Server: the final response sent, as sent: all a retransmitted request needs again
        (§17.2.1 Completed, §17.2.2 Completed).  Not the parsed response: some 3 KB a
        transaction, kept for Timer J's or Timer H's 32 s, at thousands of calls a second."""
        self._emit = emit
        self._schedule = schedule
        # The armed timers, in two slots: no table arms more than two at once (A and B, E and
        # F, G and H; tests/txn/test_tables.py checks every row).  A dictionary per transaction
        # cost an allocation per timer and kept some 300 bytes per transaction for 32 s.
        self._timer_1: Timer | None = None
        self._deadline_1 = 0.0
        self._interval_1 = 0.0
        self._timer_2: Timer | None = None
        self._deadline_2 = 0.0
        self._interval_2 = 0.0
        self._fired: float = 0.0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method} {self.state.value} {self.key!r}>"

    @property
    def terminated(self) -> bool:
        """Whether the transaction reached Terminated."""
        return self.state is State.TERMINATED

    def timer_deadline(self, timer: Timer) -> float | None:
        """When ``timer`` fires, or None when it is not armed."""
        if self._timer_1 is timer:
            return self._deadline_1
        if self._timer_2 is timer:
            return self._deadline_2
        return None

    @property
    def timers(self) -> dict[Timer, float]:
        """The armed timers and their deadlines (a copy)."""
        armed: dict[Timer, float] = {}
        if self._timer_1 is not None:
            armed[self._timer_1] = self._deadline_1
        if self._timer_2 is not None:
            armed[self._timer_2] = self._deadline_2
        return armed

    def handle(self, event: TableInput, now: float, message: Request | Response | None = None) -> bool:
        """Feed one input; return False when the current state ignores it.

        A :class:`Timer` input must be one that is armed (the layer checks this
        before calling); it is disarmed before the transition runs.
        """
        state = self.state
        transition = self.TABLE.get((state, event))
        if event.__class__ is Timer:
            if self._timer_1 is event:
                self._timer_1 = None
                self._fired = self._interval_1
            elif self._timer_2 is event:
                self._timer_2 = None
                self._fired = self._interval_2
        if transition is None:
            return False
        for op in transition.ops:
            self._run(op, event, now, message)
        target = transition.target
        if target is not state:
            keep = transition.keep
            if self._timer_1 is not None and self._timer_1 not in keep:
                self._timer_1 = None
            if self._timer_2 is not None and self._timer_2 not in keep:
                self._timer_2 = None
            self.state = target
        if target is State.TERMINATED:
            # Nothing is sent any more: the messages go too (stale timer-queue entries may keep
            # the transaction object itself a while; docs/design.md §6, memory).
            self._timer_1 = self._timer_2 = None
            self.request = self.last_response = self.ack = None
            self.final_bytes = None
            return True
        if not transition.start:
            return True
        due_now: list[Timer] = []
        for timer in transition.start:
            interval = self.config.initial(timer, reliable=self.reliable)
            if interval is None:
                continue  # a retransmission timer on a reliable transport
            if interval == 0:
                due_now.append(timer)
            self._arm(timer, now, interval)
        for timer in due_now:
            # No table starts two zero timers at once, and a terminated transaction
            # ignores any further input anyway.
            self.handle(timer, now)
        return True

    def _arm(self, timer: Timer, now: float, interval: float) -> None:
        deadline = now + interval
        if self._timer_1 is timer or (self._timer_1 is None and self._timer_2 is not timer):
            self._timer_1, self._deadline_1, self._interval_1 = timer, deadline, interval
        elif self._timer_2 is timer or self._timer_2 is None:
            self._timer_2, self._deadline_2, self._interval_2 = timer, deadline, interval
        else:
            raise RuntimeError(f"{self!r}: a third timer ({timer.name}) armed beside {self.timers}")
        if interval > 0:
            self._schedule(self, timer, deadline, interval)

    def _run(self, op: Op, event: TableInput, now: float, message: Request | Response | None) -> None:
        """Perform one operation of a transition."""
        match op:
            case Op.SEND_REQUEST:
                self._emit(SendMessage(_kept(self.request), self.peer, self.key))
            case Op.SEND_ACK:
                if self.ack is None:
                    self.ack = build_ack(_kept(self.request), _need_response(message))
                self._emit(SendMessage(self.ack, self.peer, self.key))
            case Op.SEND_RESPONSE:
                response = _need_response(message)
                if response.status >= 200:  # noqa: PLR2004 - a final response
                    self.final_to_tag = response.to.tag
                    self.final_bytes = response.wire()
                    self.last_response = None
                else:
                    self.last_response = response
                self._emit(SendMessage(response, self.peer, self.key))
            case Op.RESEND_RESPONSE:
                # §17.2.1: "the most recent provisional response" - there may be none yet.
                if self.final_bytes is not None:
                    self._emit(SendMessage(_resent(self.final_bytes), self.peer, self.key))
                elif self.last_response is not None:
                    self._emit(SendMessage(self.last_response, self.peer, self.key))
            case Op.TU_REQUEST:
                assert isinstance(self, ServerTransaction)  # noqa: S101 - only server tables pass requests up
                self._emit(RequestReceived(self, _kept(self.request), self.peer))
            case Op.TU_RESPONSE:
                assert isinstance(self, ClientTransaction)  # noqa: S101 - only client tables pass responses up
                self.last_response = _need_response(message)
                self._emit(ResponseReceived(self, self.last_response))
            case Op.TU_ACK:
                assert isinstance(self, ServerInviteTransaction)  # noqa: S101 - only its table has TU_ACK
                self._emit(AckReceived(_need_request(message), self.peer, self))
            case Op.TU_TIMEOUT:
                self._emit(TransactionTimeout(self))
            case Op.TU_TRANSPORT_ERROR:
                self._emit(TransportError(self))
            case Op.FORGET_REQUEST:
                self.request = None
            case Op.FORGET_MESSAGES:
                self.request = None
                self.last_response = None
                self.final_bytes = None
            case _:  # Op.REARM_DOUBLE | Op.REARM_DOUBLE_CAPPED | Op.REARM_T2
                assert isinstance(event, Timer)  # noqa: S101 - REARM rows are keyed by a timer
                if op is Op.REARM_DOUBLE:
                    interval = self.config.doubled(self._fired)
                elif op is Op.REARM_DOUBLE_CAPPED:
                    interval = self.config.doubled_capped(self._fired)
                else:
                    interval = self.config.t2
                self._arm(event, now, interval)


class ClientTransaction(Transaction):
    """A client transaction (§17.1): sends a request, matches its responses."""

    __slots__ = ()
    is_client = True


class ClientInviteTransaction(ClientTransaction):
    """The INVITE client transaction (§17.1.1, Figure 5)."""

    __slots__ = ()
    TABLE = CLIENT_INVITE_TABLE
    is_invite = True


class ClientNonInviteTransaction(ClientTransaction):
    """The non-INVITE client transaction (§17.1.2, Figure 6)."""

    __slots__ = ()
    TABLE = CLIENT_NON_INVITE_TABLE
    is_invite = False


class ServerTransaction(Transaction):
    """A server transaction (§17.2): receives a request, sends the TU's responses."""

    __slots__ = ()
    is_client = False


class ServerInviteTransaction(ServerTransaction):
    """The INVITE server transaction (§17.2.1, Figure 7, with RFC 6026's Accepted state)."""

    __slots__ = ()
    TABLE = SERVER_INVITE_TABLE
    is_invite = True


class ServerNonInviteTransaction(ServerTransaction):
    """The non-INVITE server transaction (§17.2.2, Figure 8)."""

    __slots__ = ()
    TABLE = SERVER_NON_INVITE_TABLE
    is_invite = False


TABLES: Final[dict[type[Transaction], Table]] = {
    ClientInviteTransaction: CLIENT_INVITE_TABLE,
    ClientNonInviteTransaction: CLIENT_NON_INVITE_TABLE,
    ServerInviteTransaction: SERVER_INVITE_TABLE,
    ServerNonInviteTransaction: SERVER_NON_INVITE_TABLE,
}
"""Every machine and its table (for documentation and table-driven tests)."""
