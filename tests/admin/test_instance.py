"""sipha.admin.instance: the counters of ``[proxy] workers`` asked over the real hand-over sockets.

Two :class:`~sipha.net.workers.Handoff` ends in one loop, on the socket pairs the supervisor
makes (:func:`~sipha.net.workers.handoff_pairs`): worker 0 asks, worker 1 answers, and the sums,
the bound on a silent worker and the base kept across a restart are checked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from sipha.admin.instance import WorkerCounters, add_into, decode, encode
from sipha.net.workers import MAX_CONTROL_PAYLOAD, Handoff, handoff_pairs
from tests.admin.support import Running, eventually, running_proxy


async def healthy(running: Running) -> bool:
    status, _ = await running.get("/healthz")
    return status == 200


def snapshot(worker: int, pid: int, invites: int, *, in_flight: int = 0) -> dict[str, Any]:
    return {
        "worker": worker,
        "pid": pid,
        "uptime": 1.0,
        "draining": False,
        "gauges": {"transactions_in_flight": in_flight, "connections_open": 1},
        "counters": {
            "core": {"requests_in": 3 * invites, "overload_sheds": 0},
            "transactions": {"INVITE 2xx": invites},
            "transport": {"datagrams_in": 6 * invites},
            "tls_handshakes": {"ok": 1},
            "hep_sent": 0,
            "hep_dropped": {},
            "takeover_requests_rejected": {"p": worker},
        },
    }


class Worker:
    """One worker's end: its Handoff, its exchange, and the snapshot it answers with."""

    def __init__(self, loop: asyncio.AbstractEventLoop, index: int, pairs: list[Any]) -> None:
        self.current = snapshot(index, 100 + index, 0)
        self.handoff = Handoff(loop, index, pairs, lambda *_: None)
        self.counters = WorkerCounters(self.handoff, 2, lambda: self.current)


@pytest.fixture
async def workers() -> AsyncIterator[tuple[Worker, Worker]]:
    loop = asyncio.get_running_loop()
    pairs = handoff_pairs(2)
    first, second = Worker(loop, 0, pairs), Worker(loop, 1, pairs)
    yield first, second
    first.handoff.close()
    second.handoff.close()
    for receiving, sending in pairs:
        receiving.close()
        sending.close()


def test_numbers_are_added_key_by_key_nested_dicts_alike() -> None:
    total = add_into({}, {"a": 1, "b": {"c": 2}, "flag": True})
    add_into(total, {"a": 2, "b": {"c": 3, "d": 1}, "text": "x"})
    assert total == {"a": 3, "b": {"c": 5, "d": 1}}


def test_a_snapshot_travels_compressed_and_a_huge_one_without_its_detail() -> None:
    small = snapshot(1, 7, 10)
    assert decode(encode(small)) == small
    huge = snapshot(1, 7, 10)
    # Random-looking method names: what a scanner sending made-up methods could leave.
    huge["counters"]["transactions"] = {f"M{i * 7919 % 100003:x}{i} 4xx": i for i in range(40000)}
    payload = encode(huge)
    assert len(payload) <= MAX_CONTROL_PAYLOAD
    back = decode(payload)
    assert back["truncated"] is True
    assert back["counters"]["transactions"] == {}
    assert back["counters"]["core"] == huge["counters"]["core"]
    with pytest.raises(ValueError, match=r"incorrect header|invalid"):
        decode(b"not zlib")


async def test_worker_0_sums_its_counters_and_the_other_workers(workers: tuple[Worker, Worker]) -> None:
    first, second = workers
    first.current = snapshot(0, 100, 150, in_flight=4)
    second.current = snapshot(1, 101, 250, in_flight=6)
    answers = await first.counters.gather(timeout=2.0)
    assert answers == {1: second.current}
    instance = first.counters.instance(first.current, answers)
    assert instance.scope == "instance"
    assert [(w.index, w.answered) for w in instance.workers] == [(0, True), (1, True)]
    counters = instance.totals["counters"]
    assert counters["transactions"] == {"INVITE 2xx": 400}
    assert counters["core"]["requests_in"] == 1200
    assert counters["takeover_requests_rejected"] == {"p": 1}
    assert instance.totals["gauges"] == {"transactions_in_flight": 10, "connections_open": 2}
    # Not SIP traffic: the hand-over's counters are not moved by it.
    assert (first.handoff.handed_over, second.handoff.received) == (0, 0)


async def test_a_silent_worker_costs_the_bound_and_its_last_counters_stay_in_the_sums(
    workers: tuple[Worker, Worker],
) -> None:
    first, second = workers
    second.current = snapshot(1, 101, 250)
    first.counters.instance(first.current, await first.counters.gather(timeout=2.0))
    second.handoff.close()  # stops reading: a worker stopped or stuck in its loop
    started = time.monotonic()
    answers = await first.counters.gather(timeout=0.2)
    waited = time.monotonic() - started
    assert answers == {}
    assert 0.15 <= waited < 1.0, waited
    instance = first.counters.instance(first.current, answers)
    assert [(w.index, w.answered) for w in instance.workers] == [(0, True), (1, False)]
    assert instance.totals["counters"]["transactions"] == {"INVITE 2xx": 250}


async def test_a_restarted_worker_adds_to_what_the_old_one_counted(
    workers: tuple[Worker, Worker],
) -> None:
    first, second = workers
    second.current = snapshot(1, 101, 250)
    first.counters.instance(first.current, await first.counters.gather(timeout=2.0))
    second.current = snapshot(1, 202, 30)  # a new process: counting from 0 again
    instance = first.counters.instance(first.current, await first.counters.gather(timeout=2.0))
    assert instance.totals["counters"]["transactions"] == {"INVITE 2xx": 280}
    second.current = snapshot(1, 202, 40)  # the same process goes on: no second base
    instance = first.counters.instance(first.current, await first.counters.gather(timeout=2.0))
    assert instance.totals["counters"]["transactions"] == {"INVITE 2xx": 290}
    assert instance.workers[1].snapshot is not None
    assert instance.workers[1].snapshot["pid"] == 202


async def test_a_late_answer_is_dropped_not_taken_for_the_next_one(workers: tuple[Worker, Worker]) -> None:
    first, second = workers
    second.handoff.close()
    assert await first.counters.gather(timeout=0.05) == {}
    # Worker 1 catches up on the first question only: its answer arrives during the second request.
    assert second.handoff.read(64) == 1
    assert await first.counters.gather(timeout=0.1) == {}


async def test_a_single_process_is_its_own_instance() -> None:
    """``workers = 1``: /status and /metrics read this process, with no per-worker breakdown."""
    async with running_proxy() as running:
        await eventually(lambda: healthy(running), "the pair active")
        document = await running.status()
        status, metrics = await running.get("/metrics")
    assert document["scope"] == "instance"
    assert document["workers"] == []
    assert document["counters"]["responses_in"] >= 1  # the OPTIONS answers
    assert status == 200
    assert "sipha_worker_up" not in metrics
    assert "sipha_responses_in_total " in metrics
