"""A member of a pair: one SIP server, as configured (docs/design.md §1)."""

from __future__ import annotations

from typing import Final

from sipha.sip.address import Address


class Member:
    """One SIP server of a pair, as configured.

    A value (equality, hash and repr by its fields, like a frozen dataclass) written as a
    plain class, as :class:`~sipha.sip.address.Address` is: members are dictionary keys the
    core looks up several times per call, and a dataclass's generated ``__hash__`` and
    ``__eq__`` run interpreted even in the compiled build (docs/design.md §6).
    """

    __slots__ = ("address", "pair", "role")

    def __init__(self, pair: str, role: str, address: Address) -> None:
        self.pair: Final = pair
        self.role: Final = role
        """"primary" or "backup", as configured."""
        self.address: Final = address

    def __eq__(self, other: object) -> bool:
        if type(other) is not Member:
            return NotImplemented
        return self.address == other.address and self.role == other.role and self.pair == other.pair

    def __ne__(self, other: object) -> bool:
        if type(other) is not Member:
            return NotImplemented
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash((self.pair, self.role, self.address))

    def __repr__(self) -> str:
        return f"Member(pair={self.pair!r}, role={self.role!r}, address={self.address!r})"
