"""Rules of ``[[pair]] fallback`` that involve other pairs (docs/deployment.md, business continuity).

Kept out of :mod:`sipha.config` (which stays within its size): :func:`fallback_problems`
returns one line per problem, ``key = value: what is allowed``, as every refusal at start.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


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
