"""What the transaction layer hands back to its caller: actions for the transport, events for the TU.

Nothing here does I/O.  The caller drains these from
:meth:`sipha.txn.TransactionLayer.drain`, performs the :class:`SendMessage`
actions on its sockets, and gives the events to the transaction user (the
proxy core).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Final

from sipha.sip import Request, Response
from sipha.sip.address import Address
from sipha.txn.keys import TransactionKey

if TYPE_CHECKING:
    from sipha.txn.machines import (
        ClientTransaction,
        ServerInviteTransaction,
        ServerTransaction,
        Transaction,
    )

# ---------------------------------------------------------------------------- actions


class SendMessage:
    """Action: send ``message`` to ``destination``.

    ``key`` names the transaction that sent it, so that a failure can be
    reported back with :meth:`TransactionLayer.transport_error` (§17.1.4,
    §17.2.4); it is None for messages sent outside any transaction.

    Equality, hash and repr by its fields, as a frozen dataclass's; a plain class so that
    mypyc compiles its ``__init__`` (a dataclass's runs interpreted; the compiled build: docs/design.md §6).
    """

    __slots__ = ("destination", "key", "message")

    def __init__(self, message: Request | Response, destination: Address, key: TransactionKey | None) -> None:
        self.message: Final = message
        self.destination: Final = destination
        self.key: Final = key

    def __eq__(self, other: object) -> bool:
        if type(other) is not SendMessage:
            return NotImplemented
        return (
            self.message == other.message and self.destination == other.destination and self.key == other.key
        )

    def __ne__(self, other: object) -> bool:
        if type(other) is not SendMessage:  # compiled, __eq__ is typed bool: NotImplemented is returned here
            return NotImplemented
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash((self.message, self.destination, self.key))

    def __repr__(self) -> str:
        return f"SendMessage(message={self.message!r}, destination={self.destination!r}, key={self.key!r})"


# ---------------------------------------------------------------------------- TU events
#
# Plain classes rather than dataclasses: this module is compiled with the core (mypyc),
# and a compiled dataclass builds its field annotations when the module is imported,
# before sipha.txn.machines (which imports this module) has defined the transaction
# types they name.  Equality is by type and fields, as a dataclass's (the tests compare
# outputs); events are not hashable.


class _TuEvent:
    """Equality and repr by the fields named in ``_fields``."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self._fields)

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None  # type: ignore[assignment]  # mutable-looking and compared by value

    def __repr__(self) -> str:
        values = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({values})"


class RequestReceived(_TuEvent):
    """A new request created ``transaction`` (§17.2.1, §17.2.2: "passed up to the TU")."""

    __slots__ = ("request", "source", "transaction")
    _fields = ("transaction", "request", "source")

    def __init__(self, transaction: ServerTransaction, request: Request, source: Address) -> None:
        self.transaction: Final = transaction
        self.request: Final = request
        self.source: Final = source


class AckReceived(_TuEvent):
    """An ACK for the TU to handle (a proxy forwards it statelessly, §16.7 / §16.11).

    ``transaction`` is None for an ACK that matched no transaction: the ACK of
    a 2xx, which "is not considered part of the transaction" (§17), carries a
    new branch.  It is the server INVITE transaction when an ACK reached it in
    the RFC 6026 Accepted state ("ACK / to TU").
    """

    __slots__ = ("request", "source", "transaction")
    _fields = ("request", "source", "transaction")

    def __init__(
        self, request: Request, source: Address, transaction: ServerInviteTransaction | None = None
    ) -> None:
        self.request: Final = request
        self.source: Final = source
        self.transaction: Final = transaction


class ResponseReceived(_TuEvent):
    """A response the client transaction passes up to the TU (§17.1.1.2, §17.1.2.2)."""

    __slots__ = ("response", "transaction")
    _fields = ("transaction", "response")

    def __init__(self, transaction: ClientTransaction, response: Response) -> None:
        self.transaction: Final = transaction
        self.response: Final = response


class StrayResponse(_TuEvent):
    """A response that matched no client transaction.

    §18.1.2: "If there are any client transactions in existence, the client
    transport uses the matching procedures of Section 17.1.3 to attempt to
    match the response to an existing transaction.  If there is a match, the
    response MUST be passed to that transaction.  Otherwise, the response MUST
    be passed to the core".  What the proxy core then does with it is §16.7
    as updated by RFC 6026 §8.3.
    """

    __slots__ = ("response",)
    _fields = ("response",)

    def __init__(self, response: Response) -> None:
        self.response: Final = response


class TransactionTimeout(_TuEvent):
    """Timer B or F fired (client, "inform the TU that a timeout has occurred"), or H (server).

    §17.2.1 on Timer H: the server transaction "MUST indicate to the TU that a
    transaction failure has occurred".
    """

    __slots__ = ("transaction",)
    _fields = ("transaction",)

    def __init__(self, transaction: Transaction) -> None:
        self.transaction: Final = transaction


class TransportError(_TuEvent):
    """The transport could not send a message of ``transaction`` (§17.1.4, §17.2.4)."""

    __slots__ = ("transaction",)
    _fields = ("transaction",)

    def __init__(self, transaction: Transaction) -> None:
        self.transaction: Final = transaction


class TransactionTerminated(_TuEvent):
    """``transaction`` reached Terminated and was removed from the layer."""

    __slots__ = ("transaction",)
    _fields = ("transaction",)

    def __init__(self, transaction: Transaction) -> None:
        self.transaction: Final = transaction


Event = (
    RequestReceived
    | AckReceived
    | ResponseReceived
    | StrayResponse
    | TransactionTimeout
    | TransportError
    | TransactionTerminated
)
"""The events for the TU."""
Output = SendMessage | Event
"""Everything :meth:`TransactionLayer.drain` returns."""
