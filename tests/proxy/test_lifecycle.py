"""The overload token bucket and the memory of calls up (sipha.proxy.lifecycle), alone."""

from __future__ import annotations

from sipha.proxy.lifecycle import CALL_MEMORY, CallMemory, TokenBucket


def test_calls_are_forgotten_after_their_memory_even_the_last_one() -> None:
    calls = CallMemory()
    calls.remember(("a", "1", "2"), 0.0)
    calls.remember(("b", "1", "2"), 1.0)
    assert len(calls) == 2
    calls.remember(("c", "1", "2"), CALL_MEMORY + 1.0)
    assert len(calls) == 1
    calls.forget(("c", "1", "2"))
    calls.forget(("c", "1", "2"))  # a second BYE: nothing left
    assert len(calls) == 0


def test_a_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = TokenBucket(2.0)
    assert bucket.admit(0.0)
    assert bucket.admit(0.0)
    assert not bucket.admit(0.0)
    assert bucket.admit(0.5)
    bucket.reconfigure(0.0)
    assert all(bucket.admit(0.5) for _ in range(10))
