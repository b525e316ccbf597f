"""``[[pair]]`` options kept out of :mod:`sipha.config` (which stays within its size).

The rules of ``fallback`` that involve other pairs (docs/deployment.md, business
continuity): :func:`fallback_problems` returns one line per problem, ``key = value: what is
allowed``, as every refusal at start.  The field of ``mode`` (docs/design.md §2.2): a value
outside :data:`~sipha.ha.settings.PAIR_MODES` is refused naming the key, the value and both
allowed values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Protocol

from pydantic import Field

from sipha.ha.settings import PRIMARY_BACKUP, PairMode

__all__ = ["MODE_FIELD", "NamedPair", "PairMode", "fallback_problems"]

MODE_FIELD: Final[Any] = Field(
    default=PRIMARY_BACKUP,
    description="primary-backup: one active member; active-active: both serve, new Call-IDs spread over them",
)
"""``[[pair]] mode`` (its type: :data:`PairMode`)."""


class NamedPair(Protocol):
    """What the rules read of a ``[[pair]]`` section."""

    @property
    def name(self) -> str:
        """The pair's name."""
        ...

    @property
    def fallback(self) -> str:
        """The pair that takes its endpoint requests while it is out of service ("" = none)."""
        ...


def fallback_problems(pairs: Sequence[NamedPair]) -> list[str]:
    """Unknown fallback names, a pair that is its own fallback, fallback cycles (a -> b -> a)."""
    fallback_of = {pair.name: pair.fallback for pair in pairs if pair.fallback}
    names = [pair.name for pair in pairs]
    problems: list[str] = []
    for index, pair in enumerate(pairs):
        if not pair.fallback:
            continue
        key = f"pair.{index}.fallback = {pair.fallback!r}"
        others = ", ".join(repr(name) for name in names if name != pair.name) or "none"
        if pair.fallback == pair.name:
            problems.append(
                f"{key}: a pair cannot be its own fallback; allowed: another pair's name ({others})"
            )
        elif pair.fallback not in names:
            problems.append(f"{key}: no pair has this name; allowed: another pair's name ({others})")
        else:
            chain = [pair.name]
            step: str | None = pair.fallback
            while step is not None and step not in chain:
                chain.append(step)
                step = fallback_of.get(step)
            if step == pair.name:
                cycle = " -> ".join([*chain, step])
                problems.append(
                    f"{key}: fallbacks form a cycle ({cycle}); allowed: a chain that ends at a pair "
                    "without fallback"
                )
    return problems
