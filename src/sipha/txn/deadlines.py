"""Deadlines in first-in, first-out lanes: O(1) per timer where a heap costs O(log n).

A proxy arms a few timers per message, almost all with one of a handful of fixed
intervals (RFC 3261 §17: T1 and its doublings for A, E and G; 64*T1 for B, F, H, J, L
and M; T4 for I and K; §16.6 step 11's Timer C).  Timers armed with the same interval,
on a clock that only goes forward, fall due in the order they were armed: each
interval's deadlines are a queue already sorted, and the earliest deadline of all is
the earliest of the queues' heads.  With 200,000 transactions alive (3,000 calls/s,
Timers J/L/M holding each for 32 s) a heap spent some 8 % of the core's time comparing
tuples on its way down and up (``perf`` on ``bench/core.py``); a lane does one append
and one pop.

An entry that would break its lane's order (a clock set back, a deadline computed
otherwise) goes to a small heap beside the lanes, so the order of :meth:`pop` is
exactly a heap's: by deadline, then by arming order.

Entries are never removed early: the owner decides when one reaching the front is
stale (lazy deletion), and :meth:`compact` drops the stale ones in one pass when the
caller finds they outnumber the live ones.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Hashable
from typing import Final, Generic, TypeVar

Owner = TypeVar("Owner")
Kind = TypeVar("Kind")

MAX_LANES: Final = 32
"""Lanes kept at most; deadlines of any further lane key go to the heap (still in order)."""


class DeadlineQueue(Generic[Owner, Kind]):
    """Timer entries, popped by deadline then arming order; pushed into lanes by interval.

    The earliest entry is remembered between calls (the proxy asks for it after every
    message): a push earlier than it replaces it, a pop forgets it, and only then are the
    lane heads compared again.
    """

    __slots__ = ("_first", "_first_lane", "_known", "_lanes", "_lanes_by_key", "_late", "_sequence", "_size")

    def __init__(self) -> None:
        self._lanes_by_key: dict[Hashable, deque[tuple[float, int, Owner, Kind]]] = {}
        self._lanes: list[deque[tuple[float, int, Owner, Kind]]] = []
        self._late: list[tuple[float, int, Owner, Kind]] = []
        self._sequence = 0
        self._size = 0
        # The earliest entry and the lane it heads (None: the heap's top), valid while _known.
        self._first: tuple[float, int, Owner, Kind] | None = None
        self._first_lane: deque[tuple[float, int, Owner, Kind]] | None = None
        self._known = True

    def __len__(self) -> int:
        return self._size

    @property
    def lanes(self) -> int:
        """How many lanes there are (one per interval seen, up to :data:`MAX_LANES`)."""
        return len(self._lanes)

    @property
    def out_of_lane(self) -> int:
        """Entries waiting in the heap beside the lanes (pushed out of their lane's order)."""
        return len(self._late)

    def push(self, deadline: float, lane: Hashable, owner: Owner, kind: Kind) -> None:
        """Add a timer entry.

        ``lane``: the interval it was armed with (or another key whose deadlines come in
        order, such as the kind of timer).
        """
        self._sequence += 1
        entry = (deadline, self._sequence, owner, kind)
        self._size += 1
        queue = self._lanes_by_key.get(lane)
        if queue is None and len(self._lanes) < MAX_LANES:
            queue = deque()
            self._lanes_by_key[lane] = queue
            self._lanes.append(queue)
        if queue is None or (queue and queue[-1][0] > deadline):
            heapq.heappush(self._late, entry)
            queue = None
        else:
            queue.append(entry)
        if self._known:
            first = self._first
            # A tie goes to the earlier entry: this one was armed last.
            if first is None or deadline < first[0]:
                self._first = entry
                self._first_lane = queue

    def first(self) -> tuple[float, int, Owner, Kind] | None:
        """The entry :meth:`pop` would return next, or None when empty."""
        if not self._known:
            self._find_first()
        return self._first

    def pop(self) -> tuple[float, int, Owner, Kind]:
        """Remove and return the earliest entry (IndexError when empty)."""
        entry = self.pop_due(math.inf)
        if entry is None:
            raise IndexError("pop from an empty DeadlineQueue")
        return entry

    def pop_due(self, now: float) -> tuple[float, int, Owner, Kind] | None:
        """Remove and return the earliest entry if it is due at ``now``, else None.

        Entries are (deadline, arming order, owner, kind).
        """
        if not self._known:
            self._find_first()
        first = self._first
        if first is None or first[0] > now:
            return None
        lane = self._first_lane
        if lane is not None:
            lane.popleft()
        else:
            heapq.heappop(self._late)
        self._size -= 1
        self._first = None
        self._first_lane = None
        self._known = False
        return first

    def _find_first(self) -> None:
        """Compare the lane heads and the heap's top: the earliest becomes :attr:`_first`."""
        best_lane: deque[tuple[float, int, Owner, Kind]] | None = None
        best = self._late[0] if self._late else None
        for queue in self._lanes:
            if queue:
                head = queue[0]
                if best is None or head[0] < best[0] or (head[0] == best[0] and head[1] < best[1]):
                    best = head
                    best_lane = queue
        self._first = best
        self._first_lane = best_lane
        self._known = True

    def compact(self, keep: Callable[[tuple[float, int, Owner, Kind]], bool]) -> None:
        """Drop every entry ``keep`` refuses, in one pass (the order of the rest is kept)."""
        size = 0
        for queue in self._lanes:
            kept = [entry for entry in queue if keep(entry)]
            queue.clear()
            queue.extend(kept)
            size += len(kept)
        self._late = [entry for entry in self._late if keep(entry)]
        heapq.heapify(self._late)
        self._size = size + len(self._late)
        self._first = None
        self._first_lane = None
        self._known = False
