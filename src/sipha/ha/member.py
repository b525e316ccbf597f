"""A member of a pair: one SIP server, as configured (docs/design.md §1)."""

from __future__ import annotations

from dataclasses import dataclass

from sipha.sip.address import Address


@dataclass(frozen=True, slots=True)
class Member:
    """One SIP server of a pair, as configured."""

    pair: str
    role: str  # "primary" or "backup", as configured
    address: Address
