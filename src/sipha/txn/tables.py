"""The four RFC 3261 §17 transaction state machines, as tables (run by :mod:`sipha.txn.machines`).

Each machine is a table from ``(state, input)`` to a :class:`Transition`: the
next state, the operations to perform (send, pass to the TU, re-arm the timer
that fired), the timers to start on the way, and the RFC text that mandates
it.  A pair missing from a table is an input the state ignores (a late
provisional response, a final response the TU passes after the final one,
...); :meth:`Transaction.handle` then returns False.

Timer bookkeeping is uniform, so the tables only list what differs:

* when a transition changes the state, the timers of the old state stop,
  except those it names in ``keep`` (the non-INVITE client keeps E and F from
  Trying to Proceeding, §17.1.2.2); a transition to the same state keeps them;
* the timers in ``start`` are armed with :meth:`TimerConfig.initial`; the
  retransmission timers (A, E, G) are skipped on reliable transports and the
  zero-valued ones (D, I, J, K on reliable transports) fire at once;
* a timer that fires is disarmed, unless one of the ``REARM_*`` operations
  arms it again with its next interval.

The server INVITE machine is the RFC 6026 one: a 2xx from the TU leads to
Accepted, which absorbs retransmissions of the INVITE until Timer L, instead
of RFC 3261's immediate Terminated (after which a retransmitted INVITE would
look new and be forwarded again).  The client INVITE machine follows RFC 3261
as written: a 2xx terminates it, and 2xx retransmissions reach the TU as
stray responses (see the package docstring of :mod:`sipha.txn`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

from sipha.txn.timers import Timer


class State(Enum):
    """Transaction states (RFC 3261 Figures 5-8, RFC 6026 Accepted)."""

    __hash__ = object.__hash__  # members are singletons: hash by identity, in C

    INITIAL = "Initial"
    """Before the first input: not an RFC state, the source of the entering transition."""
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class Input(Enum):
    """What can happen to a transaction, besides its timers firing."""

    __hash__ = object.__hash__  # members are singletons: hash by identity, in C

    SEND = "request from TU"
    """Client: the TU hands over the request (the entering transition)."""
    REQUEST = "request received"
    """Server: the request, first copy (entering transition) or a retransmission."""
    ACK = "ACK received"
    RESP_1XX = "1xx received"
    RESP_2XX = "2xx received"
    RESP_3XX_6XX = "300-699 received"
    TU_1XX = "1xx from TU"
    TU_2XX = "2xx from TU"
    TU_3XX_6XX = "300-699 from TU"
    TRANSPORT_ERROR = "transport error"


class Op(Enum):
    """An operation a transition performs, in the order listed."""

    __hash__ = object.__hash__  # members are singletons: hash by identity, in C

    SEND_REQUEST = "send the request"
    SEND_ACK = "send the ACK (built from the response on first use, §17.1.1.3)"
    SEND_RESPONSE = "send the response from the TU and remember it"
    RESEND_RESPONSE = "send the last response again"
    TU_REQUEST = "pass the request to the TU"
    TU_RESPONSE = "pass the response to the TU"
    TU_ACK = "pass the ACK to the TU"
    TU_TIMEOUT = "inform the TU of a timeout"
    TU_TRANSPORT_ERROR = "inform the TU of a transport error"
    REARM_DOUBLE = "re-arm the fired timer with twice its interval"
    REARM_DOUBLE_CAPPED = "re-arm the fired timer with twice its interval, at most T2"
    REARM_T2 = "re-arm the fired timer with T2"
    FORGET_REQUEST = "forget the request: no later transition sends it or passes it up"
    FORGET_MESSAGES = "forget the request and the last response: no later transition sends either"


TableInput = Input | Timer


@dataclass(frozen=True, slots=True)
class Transition:
    """One row of a state table."""

    target: State
    ops: tuple[Op, ...]
    rfc: str
    """The section and text that mandate this transition."""
    start: tuple[Timer, ...] = ()
    keep: tuple[Timer, ...] = ()


# A dict (not a Mapping): the compiled build looks rows up with the dict primitive.
Table = dict[tuple[State, TableInput], Transition]

_S = State
_I = Input
_T = Timer

# ------------------------------------------------------------------ client INVITE, §17.1.1, Figure 5

_ICT_2XX = (
    "§17.1.1.2: When in either the 'Calling' or 'Proceeding' states, reception of a 2xx response "
    "MUST cause the client transaction to enter the 'Terminated' state, and the response MUST be "
    "passed up to the TU."
)
_ICT_FINAL = (
    "§17.1.1.2: When in either the 'Calling' or 'Proceeding' states, reception of a response with "
    "status code from 300-699 MUST cause the client transaction to transition to 'Completed'. The "
    "client transaction MUST pass the received response up to the TU, and the client transaction "
    "MUST generate an ACK request ... and then pass the ACK to the transport layer ... The client "
    "transaction SHOULD start timer D when it enters the 'Completed' state"
)
_ICT_KEEPS = (
    " [Completed only re-sends that ACK: the request and the response are dropped, and the state "
    "keeps the ACK, the peer and Timer D; docs/design.md §6, memory.]"
)
_ICT_ACK_FINAL: Final = (Op.TU_RESPONSE, Op.SEND_ACK, Op.FORGET_MESSAGES)
_CLIENT_TRANSPORT = (
    "§17.1.4: the client transaction SHOULD inform the TU that a transport failure has occurred, "
    "and the client transaction SHOULD transition directly to the 'Terminated' state."
)

CLIENT_INVITE_TABLE: Final[Table] = {
    (_S.INITIAL, _I.SEND): Transition(
        _S.CALLING,
        (Op.SEND_REQUEST,),
        "§17.1.1.2: The initial state, 'calling', MUST be entered when the TU initiates a new client "
        "transaction with an INVITE request. The client transaction MUST pass the request to the "
        "transport layer for transmission. If an unreliable transport is being used, the client "
        "transaction MUST start timer A with a value of T1 ... For any transport, the client "
        "transaction MUST start timer B with a value of 64*T1 seconds",
        start=(_T.A, _T.B),
    ),
    (_S.CALLING, _T.A): Transition(
        _S.CALLING,
        (Op.SEND_REQUEST, Op.REARM_DOUBLE),
        "§17.1.1.2: When timer A fires, the client transaction MUST retransmit the request by passing "
        "it to the transport layer, and MUST reset the timer with a value of 2*T1.",
    ),
    (_S.CALLING, _T.B): Transition(
        _S.TERMINATED,
        (Op.TU_TIMEOUT,),
        "§17.1.1.2: If the client transaction is still in the 'Calling' state when timer B fires, the "
        "client transaction SHOULD inform the TU that a timeout has occurred. The client transaction "
        "MUST NOT generate an ACK.",
    ),
    (_S.CALLING, _I.RESP_1XX): Transition(
        _S.PROCEEDING,
        (Op.TU_RESPONSE,),
        "§17.1.1.2: If the client transaction receives a provisional response while in the 'Calling' "
        "state, it transitions to the 'Proceeding' state. In the 'Proceeding' state, the client "
        "transaction SHOULD NOT retransmit the request any longer. Furthermore, the provisional "
        "response MUST be passed to the TU.",
    ),
    (_S.CALLING, _I.RESP_2XX): Transition(_S.TERMINATED, (Op.TU_RESPONSE,), _ICT_2XX),
    (_S.CALLING, _I.RESP_3XX_6XX): Transition(
        _S.COMPLETED, _ICT_ACK_FINAL, _ICT_FINAL + _ICT_KEEPS, start=(_T.D,)
    ),
    (_S.CALLING, _I.TRANSPORT_ERROR): Transition(_S.TERMINATED, (Op.TU_TRANSPORT_ERROR,), _CLIENT_TRANSPORT),
    (_S.PROCEEDING, _I.RESP_1XX): Transition(
        _S.PROCEEDING,
        (Op.TU_RESPONSE,),
        "§17.1.1.2: Any further provisional responses MUST be passed up to the TU while in the "
        "'Proceeding' state.",
    ),
    (_S.PROCEEDING, _I.RESP_2XX): Transition(_S.TERMINATED, (Op.TU_RESPONSE,), _ICT_2XX),
    (_S.PROCEEDING, _I.RESP_3XX_6XX): Transition(
        _S.COMPLETED, _ICT_ACK_FINAL, _ICT_FINAL + _ICT_KEEPS, start=(_T.D,)
    ),
    (_S.PROCEEDING, _I.TRANSPORT_ERROR): Transition(
        _S.TERMINATED, (Op.TU_TRANSPORT_ERROR,), _CLIENT_TRANSPORT
    ),
    (_S.COMPLETED, _I.RESP_3XX_6XX): Transition(
        _S.COMPLETED,
        (Op.SEND_ACK,),
        "§17.1.1.2: Any retransmissions of the final response that are received while in the "
        "'Completed' state MUST cause the ACK to be re-passed to the transport layer for "
        "retransmission, but the newly received response MUST NOT be passed up to the TU.",
    ),
    (_S.COMPLETED, _T.D): Transition(
        _S.TERMINATED,
        (),
        "§17.1.1.2: If timer D fires while the client transaction is in the 'Completed' state, the "
        "client transaction MUST move to the terminated state.",
    ),
    (_S.COMPLETED, _I.TRANSPORT_ERROR): Transition(
        _S.TERMINATED,
        (Op.TU_TRANSPORT_ERROR,),
        "Figure 5 (Completed: Transport Err. / Inform TU); " + _CLIENT_TRANSPORT,
    ),
}

# ------------------------------------------------------------------ client non-INVITE, §17.1.2, Figure 6

_NICT_FINAL = (
    "§17.1.2.2: If a final response (status codes 200-699) is received while in the 'Trying' [or "
    "'Proceeding'] state, the response MUST be passed to the TU, and the client transaction MUST "
    "transition to the 'Completed' state. ... Once the client transaction enters the 'Completed' "
    "state, it MUST set Timer K to fire in T4 seconds for unreliable transports, and zero seconds "
    "for reliable transports."
)
_NICT_KEEPS = " [Completed sends nothing: it keeps the key and Timer K only; docs/design.md §6, memory.]"
_NICT_ABSORB = (
    "§17.1.2.2: The 'Completed' state exists to buffer any additional response retransmissions that "
    "may be received"
)

CLIENT_NON_INVITE_TABLE: Final[Table] = {
    (_S.INITIAL, _I.SEND): Transition(
        _S.TRYING,
        (Op.SEND_REQUEST,),
        "§17.1.2.2: The 'Trying' state is entered when the TU initiates a new client transaction with "
        "a request. When entering this state, the client transaction SHOULD set timer F to fire in "
        "64*T1 seconds. The request MUST be passed to the transport layer for transmission. If an "
        "unreliable transport is in use, the client transaction MUST set timer E to fire in T1 seconds.",
        start=(_T.E, _T.F),
    ),
    (_S.TRYING, _T.E): Transition(
        _S.TRYING,
        (Op.SEND_REQUEST, Op.REARM_DOUBLE_CAPPED),
        "§17.1.2.2: If timer E fires while still in this state, the timer is reset, but this time with "
        "a value of MIN(2*T1, T2). When the timer fires again, it is reset to a MIN(4*T1, T2).",
    ),
    (_S.TRYING, _T.F): Transition(
        _S.TERMINATED,
        (Op.TU_TIMEOUT,),
        "§17.1.2.2: If Timer F fires while the client transaction is still in the 'Trying' state, the "
        "client transaction SHOULD inform the TU about the timeout, and then it SHOULD enter the "
        "'Terminated' state.",
    ),
    (_S.TRYING, _I.RESP_1XX): Transition(
        _S.PROCEEDING,
        (Op.TU_RESPONSE,),
        "§17.1.2.2: If a provisional response is received while in the 'Trying' state, the response "
        "MUST be passed to the TU, and then the client transaction SHOULD move to the 'Proceeding' "
        "state.",
        keep=(_T.E, _T.F),
    ),
    (_S.TRYING, _I.RESP_2XX): Transition(
        _S.COMPLETED, (Op.TU_RESPONSE, Op.FORGET_MESSAGES), _NICT_FINAL + _NICT_KEEPS, start=(_T.K,)
    ),
    (_S.TRYING, _I.RESP_3XX_6XX): Transition(
        _S.COMPLETED, (Op.TU_RESPONSE, Op.FORGET_MESSAGES), _NICT_FINAL + _NICT_KEEPS, start=(_T.K,)
    ),
    (_S.TRYING, _I.TRANSPORT_ERROR): Transition(_S.TERMINATED, (Op.TU_TRANSPORT_ERROR,), _CLIENT_TRANSPORT),
    (_S.PROCEEDING, _T.E): Transition(
        _S.PROCEEDING,
        (Op.SEND_REQUEST, Op.REARM_T2),
        "§17.1.2.2: If Timer E fires while in the 'Proceeding' state, the request MUST be passed to "
        "the transport layer for retransmission, and Timer E MUST be reset with a value of T2 seconds.",
    ),
    (_S.PROCEEDING, _T.F): Transition(
        _S.TERMINATED,
        (Op.TU_TIMEOUT,),
        "§17.1.2.2: If timer F fires while in the 'Proceeding' state, the TU MUST be informed of a "
        "timeout, and the client transaction MUST transition to the terminated state.",
    ),
    (_S.PROCEEDING, _I.RESP_1XX): Transition(
        _S.PROCEEDING,
        (Op.TU_RESPONSE,),
        "§17.1.2.2: If a provisional response is received while in the 'Proceeding' state, it MUST be "
        "passed to the TU.",
    ),
    (_S.PROCEEDING, _I.RESP_2XX): Transition(
        _S.COMPLETED, (Op.TU_RESPONSE, Op.FORGET_MESSAGES), _NICT_FINAL + _NICT_KEEPS, start=(_T.K,)
    ),
    (_S.PROCEEDING, _I.RESP_3XX_6XX): Transition(
        _S.COMPLETED, (Op.TU_RESPONSE, Op.FORGET_MESSAGES), _NICT_FINAL + _NICT_KEEPS, start=(_T.K,)
    ),
    (_S.PROCEEDING, _I.TRANSPORT_ERROR): Transition(
        _S.TERMINATED, (Op.TU_TRANSPORT_ERROR,), _CLIENT_TRANSPORT
    ),
    (_S.COMPLETED, _I.RESP_2XX): Transition(_S.COMPLETED, (), _NICT_ABSORB),
    (_S.COMPLETED, _I.RESP_3XX_6XX): Transition(_S.COMPLETED, (), _NICT_ABSORB),
    (_S.COMPLETED, _T.K): Transition(
        _S.TERMINATED,
        (),
        "§17.1.2.2: If Timer K fires while in this state, the client transaction MUST transition to "
        "the 'Terminated' state.",
    ),
}

# ---------------------------------------------------------- server INVITE, §17.2.1, Figure 7 + RFC 6026

_IST_TRANSPORT = (
    "RFC 6026 §8.8 (updating §17.2.4): the server transaction SHOULD inform the TU that a transport "
    "failure has occurred, and MUST remain in the current state (its state is needed to absorb "
    "retransmissions of the INVITE)."
)

SERVER_INVITE_TABLE: Final[Table] = {
    (_S.INITIAL, _I.REQUEST): Transition(
        _S.PROCEEDING,
        (Op.TU_REQUEST,),
        "§17.2.1: When a server transaction is constructed for a request, it enters the 'Proceeding' "
        "state. ... The request MUST be passed to the TU.",
    ),
    (_S.PROCEEDING, _I.REQUEST): Transition(
        _S.PROCEEDING,
        (Op.RESEND_RESPONSE,),
        "§17.2.1: If a request retransmission is received while in the 'Proceeding' state, the most "
        "recent provisional response that was received from the TU MUST be passed to the transport "
        "layer for retransmission.",
    ),
    (_S.PROCEEDING, _I.TU_1XX): Transition(
        _S.PROCEEDING,
        (Op.SEND_RESPONSE,),
        "§17.2.1: The TU passes any number of provisional responses to the server transaction. So "
        "long as the server transaction is in the 'Proceeding' state, each of these MUST be passed "
        "to the transport layer for transmission.",
    ),
    (_S.PROCEEDING, _I.TU_2XX): Transition(
        _S.ACCEPTED,
        (Op.SEND_RESPONSE, Op.FORGET_MESSAGES),
        "RFC 6026 §7.1, §8.5 (replacing §17.2.1): a 2xx from the TU is passed to the transport and "
        "the transaction enters the 'Accepted' state, where it sets Timer L to 64*T1. [Accepted "
        "absorbs INVITE retransmissions and never re-sends the 2xx itself: the request and the "
        "response are dropped; docs/design.md §6, memory.]",
        start=(_T.L,),
    ),
    (_S.PROCEEDING, _I.TU_3XX_6XX): Transition(
        _S.COMPLETED,
        (Op.SEND_RESPONSE, Op.FORGET_REQUEST),
        "§17.2.1: If, while in the 'Proceeding' state, the TU passes a response with status code from "
        "300 to 699 to the server transaction, the response MUST be passed to the transport layer for "
        "transmission, and the state machine MUST enter the 'Completed' state. For unreliable "
        "transports, timer G is set to fire in T1 seconds ... When the 'Completed' state is entered, "
        "timer H MUST be set to fire in 64*T1 seconds for all transports. [Completed re-sends the "
        "response only: the request is dropped; docs/design.md §6, memory.]",
        start=(_T.G, _T.H),
    ),
    (_S.PROCEEDING, _I.TRANSPORT_ERROR): Transition(_S.PROCEEDING, (Op.TU_TRANSPORT_ERROR,), _IST_TRANSPORT),
    (_S.COMPLETED, _I.REQUEST): Transition(
        _S.COMPLETED,
        (Op.RESEND_RESPONSE,),
        "§17.2.1: Furthermore, while in the 'Completed' state, if a request retransmission is "
        "received, the server SHOULD pass the response to the transport for retransmission.",
    ),
    (_S.COMPLETED, _T.G): Transition(
        _S.COMPLETED,
        (Op.RESEND_RESPONSE, Op.REARM_DOUBLE_CAPPED),
        "§17.2.1: If timer G fires, the response is passed to the transport layer once more for "
        "retransmission, and timer G is set to fire in MIN(2*T1, T2) seconds. From then on, when "
        "timer G fires, ... timer G is reset with a value that doubles, unless that value exceeds "
        "T2, in which case it is reset with the value of T2.",
    ),
    (_S.COMPLETED, _T.H): Transition(
        _S.TERMINATED,
        (Op.TU_TIMEOUT,),
        "§17.2.1: If timer H fires while in the 'Completed' state, it implies that the ACK was never "
        "received. In this case, the server transaction MUST transition to the 'Terminated' state, "
        "and MUST indicate to the TU that a transaction failure has occurred.",
    ),
    (_S.COMPLETED, _I.ACK): Transition(
        _S.CONFIRMED,
        (Op.FORGET_MESSAGES,),
        "§17.2.1: If an ACK is received while the server transaction is in the 'Completed' state, the "
        "server transaction MUST transition to the 'Confirmed' state. As Timer G is ignored in this "
        "state, any retransmissions of the response will cease. ... When this state is entered, "
        "timer I is set to fire in T4 seconds for unreliable transports, and zero seconds for "
        "reliable transports. [Confirmed sends nothing: the response is dropped.]",
        start=(_T.I,),
    ),
    (_S.COMPLETED, _I.TRANSPORT_ERROR): Transition(_S.COMPLETED, (Op.TU_TRANSPORT_ERROR,), _IST_TRANSPORT),
    (_S.CONFIRMED, _I.ACK): Transition(
        _S.CONFIRMED,
        (),
        "§17.2.1: The purpose of the 'Confirmed' state is to absorb any additional ACK messages that "
        "arrive, triggered from retransmissions of the final response.",
    ),
    (_S.CONFIRMED, _I.REQUEST): Transition(
        _S.CONFIRMED,
        (),
        "§17.2.3: a late INVITE retransmission still matches this transaction, and Figure 7 gives "
        "'Confirmed' nothing to do for it, so it is absorbed rather than seen as a new request.",
    ),
    (_S.CONFIRMED, _T.I): Transition(
        _S.TERMINATED,
        (),
        "§17.2.1: Once timer I fires, the server MUST transition to the 'Terminated' state.",
    ),
    (_S.ACCEPTED, _I.REQUEST): Transition(
        _S.ACCEPTED,
        (),
        "RFC 6026 §7.1, §8.7: retransmissions of the INVITE received in the 'Accepted' state are "
        "absorbed: they MUST NOT be passed to the TU (the TU retransmits the 2xx itself, §13.3.1.4).",
    ),
    (_S.ACCEPTED, _I.ACK): Transition(
        _S.ACCEPTED,
        (Op.TU_ACK,),
        "RFC 6026 §7.1 (Accepted: ACK / to TU): an ACK matching the transaction in this state "
        "acknowledges the 2xx, which is the TU's business.",
    ),
    (_S.ACCEPTED, _I.TU_2XX): Transition(
        _S.ACCEPTED,
        (Op.SEND_RESPONSE, Op.FORGET_MESSAGES),
        "RFC 6026 §7.1, §8.7 (Accepted: 2xx from TU / send response): further 2xx responses from the "
        "TU (retransmissions, or other forks' 2xx a proxy forwards) are passed to the transport.",
    ),
    (_S.ACCEPTED, _T.L): Transition(
        _S.TERMINATED,
        (),
        "RFC 6026 §8.7: If Timer L fires while the INVITE server transaction is in the 'Accepted' "
        "state, the transaction MUST transition to the 'Terminated' state.",
    ),
    (_S.ACCEPTED, _I.TRANSPORT_ERROR): Transition(_S.ACCEPTED, (Op.TU_TRANSPORT_ERROR,), _IST_TRANSPORT),
}

# ------------------------------------------------------------------ server non-INVITE, §17.2.2, Figure 8

_NIST_FINAL = (
    "§17.2.2: If the TU passes a final response (status codes 200-699) to the server while in the "
    "'Proceeding' state [Figure 8: or 'Trying'], the transaction MUST enter the 'Completed' state, "
    "and the response MUST be passed to the transport layer for transmission. ... When the server "
    "transaction enters the 'Completed' state, it MUST set Timer J to fire in 64*T1 seconds for "
    "unreliable transports, and zero seconds for reliable transports. [Completed re-sends the "
    "response only: the request is dropped; docs/design.md §6, memory.]"
)
_NIST_SEND_FINAL: Final = (Op.SEND_RESPONSE, Op.FORGET_REQUEST)
_NIST_TRANSPORT = "Figure 8 (Trnsprt Err / Inform TU, to 'Terminated'); §17.2.4"

SERVER_NON_INVITE_TABLE: Final[Table] = {
    (_S.INITIAL, _I.REQUEST): Transition(
        _S.TRYING,
        (Op.TU_REQUEST,),
        "§17.2.2: The state machine is initialized in the 'Trying' state and is passed a request other "
        "than INVITE or ACK when initialized. This request is passed up to the TU.",
    ),
    (_S.TRYING, _I.REQUEST): Transition(
        _S.TRYING,
        (),
        "§17.2.2: Once in the 'Trying' state, any further request retransmissions are discarded.",
    ),
    (_S.TRYING, _I.TU_1XX): Transition(
        _S.PROCEEDING,
        (Op.SEND_RESPONSE,),
        "§17.2.2: While in the 'Trying' state, if the TU passes a provisional response to the server "
        "transaction, the server transaction MUST enter the 'Proceeding' state. The response MUST be "
        "passed to the transport layer for transmission.",
    ),
    (_S.TRYING, _I.TU_2XX): Transition(_S.COMPLETED, _NIST_SEND_FINAL, _NIST_FINAL, start=(_T.J,)),
    (_S.TRYING, _I.TU_3XX_6XX): Transition(_S.COMPLETED, _NIST_SEND_FINAL, _NIST_FINAL, start=(_T.J,)),
    (_S.PROCEEDING, _I.REQUEST): Transition(
        _S.PROCEEDING,
        (Op.RESEND_RESPONSE,),
        "§17.2.2: If a retransmission of the request is received while in the 'Proceeding' state, the "
        "most recently sent provisional response MUST be passed to the transport layer for "
        "retransmission.",
    ),
    (_S.PROCEEDING, _I.TU_1XX): Transition(
        _S.PROCEEDING,
        (Op.SEND_RESPONSE,),
        "§17.2.2: Any further provisional responses that are received from the TU while in the "
        "'Proceeding' state MUST be passed to the transport layer for transmission.",
    ),
    (_S.PROCEEDING, _I.TU_2XX): Transition(_S.COMPLETED, _NIST_SEND_FINAL, _NIST_FINAL, start=(_T.J,)),
    (_S.PROCEEDING, _I.TU_3XX_6XX): Transition(_S.COMPLETED, _NIST_SEND_FINAL, _NIST_FINAL, start=(_T.J,)),
    (_S.PROCEEDING, _I.TRANSPORT_ERROR): Transition(_S.TERMINATED, (Op.TU_TRANSPORT_ERROR,), _NIST_TRANSPORT),
    # No TU_* rows in Completed: "Any other final responses passed by the TU to the server
    # transaction MUST be discarded while in the 'Completed' state." (§17.2.2)
    (_S.COMPLETED, _I.REQUEST): Transition(
        _S.COMPLETED,
        (Op.RESEND_RESPONSE,),
        "§17.2.2: While in the 'Completed' state, the server transaction MUST pass the final response "
        "to the transport layer for retransmission whenever a retransmission of the request is "
        "received.",
    ),
    (_S.COMPLETED, _T.J): Transition(
        _S.TERMINATED,
        (),
        "§17.2.2: The server transaction remains in this state until Timer J fires, at which point it "
        "MUST transition to the 'Terminated' state.",
    ),
    (_S.COMPLETED, _I.TRANSPORT_ERROR): Transition(_S.TERMINATED, (Op.TU_TRANSPORT_ERROR,), _NIST_TRANSPORT),
}
