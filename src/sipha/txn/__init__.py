"""sipha.txn: the RFC 3261 §17 transaction layer, sans-IO.

Messages and the current time (``now``, in seconds, from any monotonic clock)
go in; :class:`SendMessage` actions and TU events come out of
:meth:`TransactionLayer.drain`, and :meth:`TransactionLayer.next_deadline`
says when to call :meth:`TransactionLayer.handle_timers`.  No sockets, no
clock, no asyncio: tests drive it with a float.

The four machines are tables in :mod:`sipha.txn.machines`, one row per
transition, each citing its RFC text.  Two choices a reader should know:

* The server INVITE transaction implements RFC 6026: a 2xx leads to the
  Accepted state, which absorbs INVITE retransmissions for Timer L (64*T1)
  instead of terminating at once, so a proxy does not forward a retransmitted
  INVITE as a new request.
* The client INVITE transaction follows RFC 3261 as written: a 2xx is passed
  up and terminates it (RFC 6026's client Accepted state and Timer M are not
  implemented).  Retransmissions of that 2xx and 2xx responses from other
  forks therefore reach the TU as :class:`StrayResponse` events, which the
  proxy core forwards (§16.7 step 5, RFC 6026 §8.3).
"""

from sipha.txn.events import (
    AckReceived,
    Event,
    Output,
    RequestReceived,
    ResponseReceived,
    SendMessage,
    StrayResponse,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
)
from sipha.txn.keys import (
    MAGIC_COOKIE,
    TransactionKey,
    ack_key_2543,
    cancel_target_key,
    client_key,
    client_key_of_request,
    client_key_of_response,
    has_magic_cookie,
    server_key,
)
from sipha.txn.layer import TransactionLayer
from sipha.txn.machines import (
    CLIENT_INVITE_TABLE,
    CLIENT_NON_INVITE_TABLE,
    SERVER_INVITE_TABLE,
    SERVER_NON_INVITE_TABLE,
    TABLES,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ClientTransaction,
    Input,
    Op,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    ServerTransaction,
    State,
    Transaction,
    Transition,
    build_ack,
    response_input,
    trying_response,
)
from sipha.txn.timers import Timer, TimerConfig

__all__ = [
    "CLIENT_INVITE_TABLE",
    "CLIENT_NON_INVITE_TABLE",
    "MAGIC_COOKIE",
    "SERVER_INVITE_TABLE",
    "SERVER_NON_INVITE_TABLE",
    "TABLES",
    "AckReceived",
    "ClientInviteTransaction",
    "ClientNonInviteTransaction",
    "ClientTransaction",
    "Event",
    "Input",
    "Op",
    "Output",
    "RequestReceived",
    "ResponseReceived",
    "SendMessage",
    "ServerInviteTransaction",
    "ServerNonInviteTransaction",
    "ServerTransaction",
    "State",
    "StrayResponse",
    "Timer",
    "TimerConfig",
    "Transaction",
    "TransactionKey",
    "TransactionLayer",
    "TransactionTerminated",
    "TransactionTimeout",
    "Transition",
    "TransportError",
    "ack_key_2543",
    "build_ack",
    "cancel_target_key",
    "client_key",
    "client_key_of_request",
    "client_key_of_response",
    "has_magic_cookie",
    "response_input",
    "server_key",
    "trying_response",
]
