"""The fake clock of the sans-IO unit tests: time moves only when a test says so."""

from collections.abc import Callable
from typing import Protocol


class Timed(Protocol):
    """A sans-IO endpoint that says when it must be called next."""

    def next_deadline(self) -> float | None: ...


def run_timers(endpoint: Timed, fire: Callable[[float], None], now: float, end: float) -> float:
    """Fire ``endpoint``'s deadlines from ``now`` up to ``end``, each at its own time, in order.

    ``fire(t)`` is the endpoint's timer input (``handle_timers``, ``tick``).  Returns ``end``,
    the new time.
    """
    while True:
        deadline = endpoint.next_deadline()
        if deadline is None or deadline > end:
            return end
        now = max(now, deadline)
        fire(now)
