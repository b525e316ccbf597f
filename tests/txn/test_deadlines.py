"""The deadline queue pops exactly what a heap of (deadline, arming order) would."""

from __future__ import annotations

import heapq

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipha.txn.deadlines import MAX_LANES, DeadlineQueue

# (clock step, interval) per push: the clock mostly goes forward, sometimes back.
pushes = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.0, 0.001, 0.25, 1.0, -0.5]),
        st.sampled_from([0.5, 1.0, 2.0, 4.0, 5.0, 32.0, 180.0]),
    ),
    max_size=200,
)


def fill(
    steps: list[tuple[float, float]],
) -> tuple[DeadlineQueue[int, str], list[tuple[float, int, int, str]]]:
    queue: DeadlineQueue[int, str] = DeadlineQueue()
    heap: list[tuple[float, int, int, str]] = []
    now = 100.0
    for number, (step, interval) in enumerate(steps, start=1):
        now += step
        queue.push(now + interval, interval, number, "timer")
        heapq.heappush(heap, (now + interval, number, number, "timer"))
    return queue, heap


@settings(max_examples=300, deadline=None)
@given(pushes)
def test_pop_order_is_a_heaps_whatever_the_clock_does(steps: list[tuple[float, float]]) -> None:
    queue, heap = fill(steps)
    assert len(queue) == len(heap)
    while heap:
        expected = heapq.heappop(heap)
        assert queue.first() == expected
        assert queue.pop() == expected
    assert len(queue) == 0
    assert queue.first() is None


@settings(max_examples=200, deadline=None)
@given(pushes, st.floats(min_value=100.0, max_value=400.0))
def test_pop_due_stops_at_now(steps: list[tuple[float, float]], now: float) -> None:
    queue, heap = fill(steps)
    popped = []
    while (entry := queue.pop_due(now)) is not None:
        popped.append(entry)
    expected = []
    while heap and heap[0][0] <= now:
        expected.append(heapq.heappop(heap))
    assert popped == expected
    assert len(queue) == len(heap)


@settings(max_examples=200, deadline=None)
@given(pushes)
def test_compact_keeps_the_order_of_what_it_keeps(steps: list[tuple[float, float]]) -> None:
    queue, heap = fill(steps)
    queue.compact(lambda entry: entry[2] % 3 != 0)
    expected = sorted(entry for entry in heap if entry[2] % 3 != 0)
    assert len(queue) == len(expected)
    assert [queue.pop() for _ in expected] == expected


def test_a_forward_clock_keeps_every_entry_in_its_lane() -> None:
    """The point of the lanes: timers armed in time order never touch the heap."""
    queue: DeadlineQueue[int, str] = DeadlineQueue()
    for number in range(1000):
        now = number * 0.001
        queue.push(now + 32.0, 32.0, number, "B")
        queue.push(now + 0.5, 0.5, number, "A")
    assert queue.lanes == 2
    assert queue.out_of_lane == 0
    assert queue.pop() == (0.5, 2, 0, "A")


def test_a_clock_set_back_sends_the_entry_beside_its_lane() -> None:
    queue: DeadlineQueue[str, str] = DeadlineQueue()
    queue.push(110.0, 10.0, "first", "t")
    queue.push(105.0, 10.0, "after the clock went back", "t")
    assert queue.out_of_lane == 1
    assert [queue.pop()[2] for _ in range(2)] == ["after the clock went back", "first"]


def test_lanes_are_bounded_and_the_rest_still_comes_in_order() -> None:
    queue: DeadlineQueue[int, str] = DeadlineQueue()
    for number in range(MAX_LANES + 10):
        queue.push(1000.0 - number, float(number), number, "t")
    assert queue.lanes == MAX_LANES
    assert queue.out_of_lane == 10
    assert [queue.pop()[2] for _ in range(MAX_LANES + 10)] == list(reversed(range(MAX_LANES + 10)))


def test_pop_of_an_empty_queue_raises() -> None:
    queue: DeadlineQueue[int, str] = DeadlineQueue()
    with pytest.raises(IndexError):
        queue.pop()
    assert queue.pop_due(1e9) is None


operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("push"), st.sampled_from([0.0, 0.001, 0.5, -0.25]), st.sampled_from([0.5, 2.0, 32.0])
        ),
        st.tuples(st.just("pop_due"), st.sampled_from([0.0, 0.5, 1.0, 40.0]), st.just(0.0)),
        st.tuples(st.just("first"), st.just(0.0), st.just(0.0)),
        st.tuples(st.just("compact"), st.just(0.0), st.just(0.0)),
    ),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_pushes_pops_and_compactions_interleaved_match_a_heap(steps: list[tuple[str, float, float]]) -> None:
    """The earliest entry is remembered between calls: every way of changing the queue keeps it right."""
    queue: DeadlineQueue[int, str] = DeadlineQueue()
    heap: list[tuple[float, int, int, str]] = []
    now = 100.0
    number = 0
    for operation, step, interval in steps:
        if operation == "push":
            now += step
            number += 1
            queue.push(now + interval, interval, number, "t")
            heapq.heappush(heap, (now + interval, number, number, "t"))
        elif operation == "pop_due":
            expected = heapq.heappop(heap) if heap and heap[0][0] <= now + step else None
            assert queue.pop_due(now + step) == expected
        elif operation == "first":
            assert queue.first() == (heap[0] if heap else None)
        else:
            queue.compact(lambda entry: entry[2] % 2 == 0)
            heap = [entry for entry in heap if entry[2] % 2 == 0]
            heapq.heapify(heap)
        assert len(queue) == len(heap)
    assert [queue.pop() for _ in range(len(heap))] == sorted(heap)
