"""The log line of ``[[pair]] fallback`` (docs/deployment.md), an event like the pair monitor's.

Here rather than in :mod:`sipha.proxy.fallback`, which mypyc compiles (setup.py): a compiled
class cannot subclass :class:`~sipha.ha.events.PairEvent`, which stays interpreted.
"""

from __future__ import annotations

from dataclasses import dataclass

from sipha.ha.events import PairEvent, describe
from sipha.ha.member import Member


@dataclass(frozen=True, slots=True)
class FallbackRouted(PairEvent):
    """Requests of ``pair``, out of service, went to the active member of ``fallback``."""

    fallback: str
    member: Member
    count: int
    """Requests sent to the fallback since the last line (this one included)."""

    @property
    def message(self) -> str:
        """One log line."""
        return (
            f"pair {self.pair} out of service: {self.count} endpoint request(s) sent to "
            f"pair {self.fallback}, {describe(self.member)} (fallback)"
        )
