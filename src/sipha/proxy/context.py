"""The response context of RFC 3261 §16.1, and its life as a table.

One request, one *response context*: the server transaction it arrived on, the
client transaction it was forwarded on (its *branch*), the best final response
so far, and Timer C for INVITEs.  sipha forwards each request to one target at
a time, so a context has one live branch; it forks serially only to move a
request from a pair member that failed to the one that took over
(docs/design.md §2), or from a target of a next hop named by a host name to
the next target RFC 3263 gives (§16.6 step 7, :mod:`sipha.proxy.targets`).

Where the context is, is one field, :attr:`ResponseContext.state`.  What happens
to it (a response on its branch, the caller's CANCEL, Timer C, a decision of
the failover policy or of the RFC 3263 target list) is an :class:`Input`; :data:`TABLE` maps
``(state, input)`` to a :class:`Transition`: the next state and the operations
the proxy core performs, in order, with the RFC text that mandates them.  A
pair missing from the table is an input the state ignores (a CANCEL after the
final response, a late 486 after a 200, ...).  Two pieces of bookkeeping are
uniform, so the rows do not list them: a transition out of Calling disarms the
failover timer (the member answered, or the branch is handled otherwise), and
entering Completed disarms Timer C (and the §9.1 limit kept in its place).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from sipha.ha import Member
from sipha.proxy.routing import Locate
from sipha.sip import Request, Response
from sipha.sip.address import Address
from sipha.txn.machines import ClientTransaction, ServerTransaction


class State(Enum):
    """Where a response context is."""

    __hash__ = object.__hash__  # members are singletons: hash by identity, in C

    INITIAL = "Initial"
    """Received and validated: not forwarded, not answered yet (the source of the first transition)."""
    HELD = "Held"
    """No live branch: held until its pair has an active member (docs/design.md §2), or between
    the branch just given up and the next one."""
    CALLING = "Calling"
    """Forwarded; no response on the branch yet."""
    SUSPENDED = "Suspended"
    """Forwarded, no response within failover-timeout, and nothing says the member is dead: held
    while the pair is re-probed, its branch still live (retransmitting)."""
    LOCATING = "Locating"
    """The next hop is a host name: waiting for its targets (RFC 3263), or between a target
    that failed and the next one (§16.6 step 7).  No live branch."""
    PROCEEDING = "Proceeding"
    """A provisional response arrived on the branch."""
    CANCEL_PENDING = "Cancel pending"
    """The caller cancelled before any provisional response: the CANCEL waits for one (§9.1)."""
    CANCELLING = "Cancelling"
    """The caller's CANCEL was sent down the branch; waiting for its final response (64*T1)."""
    EXPIRING = "Expiring"
    """Timer C fired on a ringing branch: a CANCEL was sent; waiting for its final response (64*T1)."""
    RESUMED = "Resumed"
    """A branch given up on answered while the request was still held: the call goes on with it,
    without its client transaction."""
    COMPLETED = "Completed"
    """A final response was sent upstream."""


class Input(Enum):
    """What can happen to a response context."""

    __hash__ = object.__hash__

    FORWARDED = "forwarded on a new branch"
    REFUSED = "a final response generated before forwarding (validation, routing, drain, overload)"
    RESP_100 = "100 on the branch"
    RESP_1XX = "101-199 on the branch"
    RESP_2XX = "2xx on the branch"
    RESP_3XX_6XX = "300-699 on the branch"
    TIMEOUT = "the branch's client transaction timed out (Timer B or F)"
    TRANSPORT_ERROR = "the branch's client transaction reported a transport error"
    CANCEL = "the caller's CANCEL matched this context"
    TIMER_C = "Timer C fired (or, after our CANCEL, the 64*T1 limit kept in its place)"
    HOLD = "held: the pair has no active member"
    SUSPEND = "failover-timeout fired, the member silent but not known dead"
    GIVE_UP = "the branch is given up: its member failed, or the other member is active"
    RESUME = "the suspended branch's member is active again"
    HOLD_EXPIRED = "hold-limit reached, or the pair went out of service (40001)"
    REOFFER = "the ringing member is gone and the other member took over"
    MEMBER_LOST = "the ringing member lost its pair and may still be alive (a partition)"
    LATE_100 = "100 on a branch given up on"
    LATE_1XX = "101-199 on a branch given up on"
    LATE_2XX = "2xx on a branch given up on"
    LATE_3XX_6XX = "300-699 on a branch given up on"
    LOCATE = "the next hop is a host name: its targets are looked up (RFC 3263)"
    NEXT_TARGET = "the branch failed (a 503, Timer B or F, a transport error) and a target is left"
    TARGET_SILENT = "failover-timeout fired on a branch that never answered, and a target is left"
    EXHAUSTED = "no target is left: the name gave none, or every one failed (§16.6 step 7)"


class Op(Enum):
    """An operation a transition performs, in the order listed."""

    __hash__ = object.__hash__

    RELAY = "forward the response upstream without our Via (§16.7 steps 3, 9)"
    START_TIMER_C = "INVITE: start Timer C, unless it runs already (a held request keeps its own)"
    RESTART_TIMER_C = "INVITE: restart Timer C"
    STOP_TIMER_C = "stop Timer C"
    REMEMBER_CALL = "a 2xx to a dialog-creating INVITE: remember the call until its BYE (drain)"
    KEEP_BEST = "keep the response if it is the best final response so far"
    SEND_BEST = "send the best final response upstream: a lone 503 as 500, none as 408"
    RESPOND = "send the final response generated here"
    ANSWER_408 = "answer 408 Request Timeout"
    ANSWER_487 = "answer 487 Request Terminated"
    ANSWER_503 = "answer 503 Service Unavailable with Retry-After"
    SEND_CANCEL = "send a CANCEL down the branch"
    GUARD_CANCEL = "give the branch 64*T1 for its final response (in Timer C's place)"
    DESTROY_BRANCH = "destroy the branch's client transaction"
    ACK = "ACK the non-2xx final response here: its client transaction is gone"
    UNHOLD = "stop holding the request (the pair's list, the hold timer)"
    GIVE_UP_BRANCH = "give the branch up: its late responses are recognised, its transaction stops"
    FORGET_BEST = "forget the best response so far: the next branch starts afresh"
    RETIRE_BRANCH = (
        "leave a failed branch to end on its own (its transaction still absorbs retransmissions); "
        "the next one gets a new branch id"
    )


class Timer(Enum):
    """The proxy core's own timers of a context (the transactions keep theirs)."""

    __hash__ = object.__hash__

    C = "Timer C (§16.6 step 11), or the §9.1 64*T1 limit after our CANCEL"
    FAILOVER = "failover-timeout (docs/design.md §2; for a target of an RFC 3263 list, §3)"
    HOLD = "hold-limit (docs/design.md §2), or the bound of an RFC 3263 lookup"


@dataclass(frozen=True, slots=True)
class Transition:
    """One row of the table."""

    target: State
    ops: tuple[Op, ...]
    source: str
    """The section and text that mandate this transition."""


@dataclass(slots=True, eq=False, init=False)
class ResponseContext:
    """§16.1 response context of one forwarded request.

    Its ``__init__`` is written out (``init=False``) so that mypyc compiles it: a dataclass's
    generated one runs interpreted, for every request (the compiled build: docs/design.md §6).
    """

    server: ServerTransaction
    request: Request
    state: State = State.INITIAL
    forwarded: Request | None = None
    client: ClientTransaction | None = None
    destination: Address | None = None
    best: Response | None = None
    timer_c: float | None = None
    """When Timer C fires (after our CANCEL: the §9.1 64*T1 limit), or None."""
    pair: str | None = None
    member: Member | None = None
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
    locate: Locate | None = None
    """The next hop, a host name, whose RFC 3263 targets the request goes to (None: an address)."""
    targets: tuple[Address, ...] = ()
    """The RFC 3263 targets not tried yet, in order (§16.6 step 7)."""

    def __init__(self, server: ServerTransaction, request: Request) -> None:
        self.server = server
        self.request = request
        self.state = State.INITIAL
        self.forwarded = None
        self.client = None
        self.destination = None
        self.best = None
        self.timer_c = None
        self.pair = None
        self.member = None
        self.failover_at = None
        self.held_until = None
        self.hold_deadline = None
        self.attempt = 0
        self.responded_members = set()
        self.abandoned = []
        self.resumed = None
        self.locate = None
        self.targets = ()

    @property
    def final_sent(self) -> bool:
        """Whether a final response was sent upstream."""
        return self.state is State.COMPLETED

    def deadline(self, timer: Timer) -> float | None:
        """When ``timer`` fires, or None when it is not armed."""
        if timer is Timer.C:
            return self.timer_c
        if timer is Timer.FAILOVER:
            return self.failover_at
        return self.held_until

    def set_deadline(self, timer: Timer, deadline: float | None) -> None:
        """Arm ``timer`` for ``deadline`` (None: disarm it)."""
        if timer is Timer.C:
            self.timer_c = deadline
        elif timer is Timer.FAILOVER:
            self.failover_at = deadline
        else:
            self.held_until = deadline


_S = State
_I = Input
_O = Op

# ------------------------------------------------------------------ the RFC text of the rows

_FORWARD = (
    "§16.6 step 11: In order to handle the case where an INVITE request never generates a final "
    "response, the TU uses a timer which is called timer C. Timer C MUST be set for each client "
    "transaction when an INVITE request is proxied."
)
_REFUSE = (
    "§16.3: If any of these checks fail, the element MUST behave as a user agent server (see "
    "Section 8.2) and respond with an error code. (The same for the answers of docs/design.md §3 "
    "routing, of draining and of overload control.)"
)
_100 = (
    "§16.7 step 5: Until a final response has been sent on the server transaction, the following "
    "responses MUST be forwarded immediately: - Any provisional response other than 100 (Trying)"
)
_1XX = (
    "§16.7 step 2: For an INVITE transaction, if the response is a provisional response with status "
    "codes 101 to 199 inclusive (i.e., anything but 100), the proxy MUST reset timer C for that "
    "client transaction. Step 5: ... the following responses MUST be forwarded immediately: - Any "
    "provisional response other than 100 (Trying)"
)
_1XX_CANCELLED = (
    "§16.7 step 5: ... MUST be forwarded immediately: - Any provisional response other than 100 "
    "(Trying); the branch is being cancelled, so Timer C stays replaced by the §9.1 64*T1 limit."
)
_2XX = (
    "§16.7 step 5: Until a final response has been sent on the server transaction, the following "
    "responses MUST be forwarded immediately: ... - Any 2xx response"
)
_2XX_AFTER = (
    "§16.7 step 5: After a final response has been sent on the server transaction, the following "
    "responses MUST be forwarded immediately: - Any 2xx response to an INVITE request"
)
_NOT_AFTER = (
    "§16.7 step 5: A stateful proxy MUST NOT immediately forward any other responses. (A request "
    "answered here while held with its branch live stops being held once that branch answers.)"
)
_FINAL = (
    "§16.7 step 4: Final responses received are stored in the response context until a final "
    "response is generated on the server transaction associated with this context. Step 6: A "
    "stateful proxy MUST send a final response to a response context's server transaction if no "
    "final responses have been immediately forwarded by the above rules and all client "
    "transactions in this response context have been terminated."
)
_TIMEOUT = (
    "§8.1.3.1: If the client transaction returns a timeout, this is treated as a 408 (Request "
    "Timeout) response. §16.7 step 6 then sends the best response: the branch was the only one."
)
_TRANSPORT = (
    "§16.9: If the transport layer notifies a proxy of an error when it tries to forward a request "
    "(see Section 18.4), the proxy MUST behave as if the forwarded request received a 503 (Service "
    "Unavailable) response. (§16.7 step 6 then turns a lone 503 into a 500.)"
)
_CANCEL_WAIT = (
    "§16.10: A proxy MUST cancel any pending client transactions associated with a response context "
    "when it receives a matching CANCEL request. §9.1: If no provisional response has been received, "
    "the CANCEL request MUST NOT be sent; rather, the client MUST wait for the arrival of a "
    "provisional response before sending the request."
)
_CANCEL_SEND = (
    "§16.10: A proxy MUST cancel any pending client transactions associated with a response context "
    "when it receives a matching CANCEL request. §9.1: If there is no final response for the original "
    "request in 64*T1 seconds ..., the client SHOULD then consider the original transaction cancelled"
)
_CANCEL_ON_1XX = (
    "§9.1: the client MUST wait for the arrival of a provisional response before sending the "
    "request: it has arrived, the CANCEL goes now."
)
_CANCEL_HERE = (
    "§16.10: A proxy MUST cancel any pending client transactions associated with a response context "
    "when it receives a matching CANCEL request. None is pending (the request is held, or its branch "
    "never answered and §9.1 forbids to CANCEL it): the request is answered as a UAS would, §9.2: "
    "the UAS SHOULD then respond to the INVITE with a 487 (Request Terminated)."
)
_TIMER_C_RINGING = (
    "§16.8: If timer C should fire, the proxy MUST either reset the timer with any value it chooses, "
    "or terminate the client transaction. If the client transaction has received a provisional "
    "response, the proxy MUST generate a CANCEL request matching that transaction."
)
_TIMER_C_SILENT = (
    "§16.8: If the client transaction has not received a provisional response, the proxy MUST "
    "behave as if the transaction received a 408 (Request Timeout) response. (§16.7 step 6: the "
    "only branch, so the 408 is sent.)"
)
_GUARD = (
    "§9.1: If there is no final response for the original request in 64*T1 seconds (T1 is defined "
    "in Section 17.1.1.1), the client SHOULD then consider the original transaction cancelled and "
    "SHOULD destroy the client transaction handling the original request."
)
_HOLD = (
    "docs/design.md §2: When a pair that had an active member loses it, its requests are held, not "
    "refused, and both members are probed every 0.25 s; the first member that answers alive gets every "
    "held request."
)
_SUSPEND = (
    "docs/design.md §2: a request forwarded to a member that gets no response in that time (an INVITE: "
    "no provisional one) makes the member suspected. ... Otherwise the pair is re-probed at once and "
    "the request held"
)
_GIVE_UP = (
    "docs/design.md §2: if the other member answers first, the branch is given up and the request "
    "goes to the new member on a new branch. ... A transport error ... gives the branch up at once."
)
_RESUME = (
    "docs/design.md §2: if the same member answers, its branch simply goes on (a member never gets "
    "a second copy of a request it may have received)"
)
_EXPIRED = (
    "docs/design.md §2: A held request waits at most the hold limit ... then gets 503. Only when the "
    "window ends with no member does the pair go out of service (40001, 503). RFC 3261 §21.5.4 (503): "
    "The server MAY indicate when the client should retry the request in a Retry-After header field."
)
_REOFFER = (
    "docs/design.md §2: an INVITE that had a provisional response from a member that is gone ... is "
    "CANCELled there and offered to the new active member on a new branch (serial forking, "
    "RFC 3261 §16.6, §16.7)."
)
_LOST = (
    "docs/design.md §2: When the member is only silent (a partition: it may still answer), a second "
    "copy could make two calls, so the caller gets 408 at once and the branch a CANCEL (the 408 "
    "Timer C would give, §16.8)."
)
_LATE = (
    "docs/design.md §2: a member never gets a second copy of a request it may have received. Decision: "
    "a branch given up on that answers while the request is still held (sent nowhere else) carries "
    "the call, and §16.7 step 5 forwards its provisional and 2xx responses immediately."
)
_LOCATE = (
    "§16.6 step 7: the proxy MUST apply the procedures listed in [4] (RFC 3263) ... to the first "
    "Route header field value (if present) or the Request-URI. The procedures will produce an ordered "
    "set of (address, port, transport) tuples. (The driver looks the host name up; the request "
    "waits for the set.)"
)
_FIRST_TARGET = (
    "§16.6 step 7: the proxy MUST attempt to deliver the message to the first tuple in that set, and "
    "proceed through the set in order until the delivery attempt succeeds. For each tuple attempted, "
    "the proxy MUST format the message as appropriate for the tuple and send the request using a new "
    "client transaction as detailed in steps 8 through 10. Step 11: Timer C MUST be set for each "
    "client transaction when an INVITE request is proxied."
)
_NEXT_TARGET = (
    "RFC 3263 §4.3: For SIP requests, failure occurs if the transaction layer reports a 503 error "
    "response or a transport failure of some sort ... Failure also occurs if the transaction layer "
    "times out without ever having received any response, provisional or final (i.e., timer B or "
    "timer F in RFC 3261 fires). If a failure occurs, the client SHOULD create a new request, which is "
    "identical to the previous, but has a different value of the Via branch ID than the previous (and "
    "therefore constitutes a new SIP transaction). That request is sent to the next element in the "
    "list as specified by RFC 2782."
)
_SILENT_TARGET = (
    "docs/design.md §3: failover-timeout bounds the silence of a target of an RFC 3263 list as it "
    "bounds a pair member's: a branch without any response in that time, from a target that answered "
    "nothing else either, is given up (its late responses dropped) and the request goes to the next "
    "target on a new branch (RFC 3263 §4.3)."
)
_EXHAUSTED = (
    "§16.6 step 7: If the ordered set is exhausted, the request cannot be forwarded to this element "
    "in the target set. The proxy does not need to place anything in the response context, but "
    "otherwise acts as if this element of the target set returned a 408 (Request Timeout) final "
    "response. (A name that gives no tuple is an empty set: exhausted at once.)"
)
_LOOKUP_LIMIT = (
    "§16.6 step 7 (If the ordered set is exhausted ... acts as if this element of the target set "
    "returned a 408): a lookup that brings no set within 64*T1 (the span of Timer F: the caller's "
    "transaction has given up by then) leaves the set empty, so 408 (Request Timeout)."
)
_LATE_FINAL = (
    "§17.1.1.3: the client transaction MUST generate an ACK request for a 300-699 response; the "
    "branch's transaction is gone, so the ACK is sent here, and the response is forwarded (§16.7 "
    "step 6: the only branch)."
)

# Rows shared by the states with a live branch that has not answered (Calling, Suspended),
# and by the ones being cancelled (Cancelling, Expiring).
_FAILURES: Final = {
    _I.TIMEOUT: Transition(_S.COMPLETED, (_O.KEEP_BEST, _O.SEND_BEST), _TIMEOUT),
    _I.TRANSPORT_ERROR: Transition(_S.COMPLETED, (_O.KEEP_BEST, _O.SEND_BEST), _TRANSPORT),
}


def _answers(*ops: Op) -> dict[Input, Transition]:
    """The rows of a branch that has not answered yet; ``ops`` come first (Suspended: unhold)."""
    return {
        _I.RESP_100: Transition(_S.PROCEEDING, ops, _100),
        _I.RESP_1XX: Transition(_S.PROCEEDING, (*ops, _O.RESTART_TIMER_C, _O.RELAY), _1XX),
        _I.RESP_2XX: Transition(_S.COMPLETED, (*ops, _O.RELAY, _O.REMEMBER_CALL), _2XX),
        _I.RESP_3XX_6XX: Transition(_S.COMPLETED, (*ops, _O.KEEP_BEST, _O.SEND_BEST), _FINAL),
        **_FAILURES,
    }


def _cancelling(state: State, guard_answer: Op, guard_source: str) -> dict[Input, Transition]:
    """The rows of a branch whose CANCEL was sent; the 64*T1 limit answers ``guard_answer``."""
    return {
        _I.RESP_100: Transition(state, (), _100),
        _I.RESP_1XX: Transition(state, (_O.RELAY,), _1XX_CANCELLED),
        _I.RESP_2XX: Transition(_S.COMPLETED, (_O.RELAY, _O.REMEMBER_CALL), _2XX),
        _I.RESP_3XX_6XX: Transition(_S.COMPLETED, (_O.KEEP_BEST, _O.SEND_BEST), _FINAL),
        **_FAILURES,
        _I.TIMER_C: Transition(_S.COMPLETED, (guard_answer, _O.DESTROY_BRANCH), guard_source),
        _I.MEMBER_LOST: Transition(_S.COMPLETED, (_O.ANSWER_408,), _LOST),
    }


def _target_failures() -> dict[Input, Transition]:
    """The rows of a branch to an RFC 3263 target that failed (§4.3): the next target, or 408.

    In Proceeding only a 503 is fed (a provisional response rules out Timer B and a
    transport failure "without ever having received any response").
    """
    return {
        _I.NEXT_TARGET: Transition(_S.LOCATING, (_O.RETIRE_BRANCH, _O.STOP_TIMER_C), _NEXT_TARGET),
        _I.EXHAUSTED: Transition(_S.COMPLETED, (_O.ANSWER_408,), _EXHAUSTED),
    }


_ROWS: Final[dict[State, dict[Input, Transition]]] = {
    _S.INITIAL: {
        _I.FORWARDED: Transition(_S.CALLING, (_O.START_TIMER_C,), _FORWARD),
        _I.REFUSED: Transition(_S.COMPLETED, (_O.RESPOND,), _REFUSE),
        _I.HOLD: Transition(_S.HELD, (), _HOLD),
        _I.LOCATE: Transition(_S.LOCATING, (), _LOCATE),
    },
    _S.HELD: {
        _I.FORWARDED: Transition(_S.CALLING, (_O.START_TIMER_C,), _FORWARD),
        _I.HOLD: Transition(_S.HELD, (), _HOLD),
        _I.CANCEL: Transition(_S.COMPLETED, (_O.UNHOLD, _O.ANSWER_487), _CANCEL_HERE),
        _I.TIMER_C: Transition(_S.COMPLETED, (_O.ANSWER_408,), _TIMER_C_SILENT),
        _I.HOLD_EXPIRED: Transition(_S.COMPLETED, (_O.UNHOLD, _O.ANSWER_503), _EXPIRED),
        _I.LATE_100: Transition(_S.RESUMED, (_O.UNHOLD,), _LATE),
        _I.LATE_1XX: Transition(_S.RESUMED, (_O.UNHOLD, _O.RELAY), _LATE),
        _I.LATE_2XX: Transition(_S.COMPLETED, (_O.UNHOLD, _O.RELAY), _LATE),
        _I.LATE_3XX_6XX: Transition(_S.COMPLETED, (_O.UNHOLD, _O.ACK, _O.RELAY), _LATE_FINAL),
    },
    _S.LOCATING: {
        _I.FORWARDED: Transition(_S.CALLING, (_O.UNHOLD, _O.START_TIMER_C), _FIRST_TARGET),
        _I.EXHAUSTED: Transition(_S.COMPLETED, (_O.UNHOLD, _O.ANSWER_408), _EXHAUSTED),
        _I.CANCEL: Transition(_S.COMPLETED, (_O.UNHOLD, _O.ANSWER_487), _CANCEL_HERE),
        _I.HOLD_EXPIRED: Transition(_S.COMPLETED, (_O.UNHOLD, _O.ANSWER_408), _LOOKUP_LIMIT),
    },
    _S.CALLING: {
        **_answers(),
        _I.CANCEL: Transition(_S.CANCEL_PENDING, (_O.STOP_TIMER_C,), _CANCEL_WAIT),
        _I.TIMER_C: Transition(_S.COMPLETED, (_O.ANSWER_408,), _TIMER_C_SILENT),
        _I.SUSPEND: Transition(_S.SUSPENDED, (), _SUSPEND),
        _I.GIVE_UP: Transition(_S.HELD, (_O.GIVE_UP_BRANCH,), _GIVE_UP),
        **_target_failures(),
        _I.TARGET_SILENT: Transition(_S.LOCATING, (_O.GIVE_UP_BRANCH, _O.STOP_TIMER_C), _SILENT_TARGET),
    },
    _S.SUSPENDED: {
        **_answers(_O.UNHOLD),
        _I.HOLD: Transition(_S.SUSPENDED, (), _HOLD),
        _I.CANCEL: Transition(_S.COMPLETED, (_O.UNHOLD, _O.GIVE_UP_BRANCH, _O.ANSWER_487), _CANCEL_HERE),
        _I.TIMER_C: Transition(_S.COMPLETED, (_O.ANSWER_408,), _TIMER_C_SILENT),
        _I.GIVE_UP: Transition(_S.HELD, (_O.GIVE_UP_BRANCH,), _GIVE_UP),
        _I.RESUME: Transition(_S.CALLING, (), _RESUME),
        _I.HOLD_EXPIRED: Transition(_S.COMPLETED, (_O.UNHOLD, _O.GIVE_UP_BRANCH, _O.ANSWER_503), _EXPIRED),
    },
    _S.PROCEEDING: {
        _I.RESP_100: Transition(_S.PROCEEDING, (), _100),
        _I.RESP_1XX: Transition(_S.PROCEEDING, (_O.RESTART_TIMER_C, _O.RELAY), _1XX),
        _I.RESP_2XX: Transition(_S.COMPLETED, (_O.RELAY, _O.REMEMBER_CALL), _2XX),
        _I.RESP_3XX_6XX: Transition(_S.COMPLETED, (_O.KEEP_BEST, _O.SEND_BEST), _FINAL),
        **_FAILURES,
        _I.CANCEL: Transition(_S.CANCELLING, (_O.SEND_CANCEL, _O.GUARD_CANCEL), _CANCEL_SEND),
        _I.TIMER_C: Transition(_S.EXPIRING, (_O.SEND_CANCEL, _O.GUARD_CANCEL), _TIMER_C_RINGING),
        _I.REOFFER: Transition(
            _S.HELD, (_O.SEND_CANCEL, _O.GIVE_UP_BRANCH, _O.STOP_TIMER_C, _O.FORGET_BEST), _REOFFER
        ),
        _I.MEMBER_LOST: Transition(_S.COMPLETED, (_O.SEND_CANCEL, _O.ANSWER_408), _LOST),
        **_target_failures(),
    },
    _S.CANCEL_PENDING: {
        _I.RESP_100: Transition(_S.CANCELLING, (_O.SEND_CANCEL, _O.GUARD_CANCEL), _CANCEL_ON_1XX),
        _I.RESP_1XX: Transition(
            _S.CANCELLING, (_O.SEND_CANCEL, _O.GUARD_CANCEL, _O.RELAY), _CANCEL_ON_1XX + " " + _1XX
        ),
        _I.RESP_2XX: Transition(_S.COMPLETED, (_O.RELAY, _O.REMEMBER_CALL), _2XX),
        _I.RESP_3XX_6XX: Transition(_S.COMPLETED, (_O.KEEP_BEST, _O.SEND_BEST), _FINAL),
        **_FAILURES,
    },
    _S.CANCELLING: _cancelling(
        _S.CANCELLING,
        _O.ANSWER_487,
        _GUARD + " The caller cancelled: 487 (Request Terminated), as §9.2 has a UAS answer.",
    ),
    _S.EXPIRING: _cancelling(
        _S.EXPIRING, _O.ANSWER_408, _GUARD + " Timer C fired: 408 (Request Timeout), §16.8."
    ),
    _S.RESUMED: {
        _I.LATE_100: Transition(_S.RESUMED, (), _LATE),
        _I.LATE_1XX: Transition(_S.RESUMED, (_O.RELAY,), _LATE),
        _I.LATE_2XX: Transition(_S.COMPLETED, (_O.RELAY,), _LATE),
        _I.LATE_3XX_6XX: Transition(_S.COMPLETED, (_O.ACK, _O.RELAY), _LATE_FINAL),
        _I.CANCEL: Transition(_S.COMPLETED, (_O.ANSWER_487,), _CANCEL_HERE),
        _I.TIMER_C: Transition(_S.COMPLETED, (_O.ANSWER_408,), _TIMER_C_SILENT),
    },
    _S.COMPLETED: {
        _I.RESP_100: Transition(_S.COMPLETED, (_O.UNHOLD,), _NOT_AFTER),
        _I.RESP_1XX: Transition(_S.COMPLETED, (_O.UNHOLD,), _NOT_AFTER),
        _I.RESP_2XX: Transition(_S.COMPLETED, (_O.UNHOLD, _O.RELAY, _O.REMEMBER_CALL), _2XX_AFTER),
        _I.RESP_3XX_6XX: Transition(_S.COMPLETED, (_O.UNHOLD,), _NOT_AFTER),
        _I.HOLD_EXPIRED: Transition(_S.COMPLETED, (_O.UNHOLD, _O.GIVE_UP_BRANCH), _EXPIRED),
    },
}

# A dict keyed by (state, input), as the §17 tables (the compiled build looks rows up with the
# dict primitive).
Table = dict[tuple[State, Input], Transition]
TABLE: Final[Table] = {(state, event): row for state, rows in _ROWS.items() for event, row in rows.items()}
"""Every transition of a response context."""
