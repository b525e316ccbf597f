"""The proxy core makes no reference cycles: ``sipha run`` turns the cyclic garbage collector off.

With tens of thousands of transactions alive (each kept up to 32 s, about 140
tracked objects per call), one full collection scans millions of objects and
stops the proxy for seconds.  ``sipha.runtime.tune_gc`` therefore disables automatic
collection, and reference counting must free everything the core allocates:
these flows, run with the collector off, must leave nothing for it to find.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from tests.proxy.support import (
    ALICE,
    PRIMARY,
    Harness,
    ack_2xx,
    as_request,
    cancel,
    forward_invite,
    harness,
    invite,
    only,
    response_to,
)


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def cyclic_garbage() -> int:
    return gc.collect()


def test_a_whole_call_leaves_no_cycles(collector_off: None) -> None:
    h = harness()
    for call in range(20):
        call_id = f"call-{call}@alice"
        forwarded = forward_invite(h, invite(call_id=call_id, branch=f"z9hG4bK-i{call}"))
        h.feed(response_to(forwarded, 180, "Ringing"), PRIMARY)
        h.feed(response_to(forwarded, 200, "OK"), PRIMARY)
        h.feed(ack_2xx(branch=f"z9hG4bK-a{call}").replace(b"call-1@alice", call_id.encode()))
        bye = invite(
            method="BYE",
            uri="sip:srv@127.0.0.1:5070",
            branch=f"z9hG4bK-b{call}",
            call_id=call_id,
            cseq=2,
            to_tag="srv1",
            extra="Route: <sip:proxy.example.com;lr>\r\n",
            body=b"",
        )
        sent = h.feed(bye)
        h.feed(response_to(as_request(only(sent, PRIMARY)), 200, "OK"), PRIMARY)
    h.advance(64.0)  # every transaction ends (Timer J, K, L...)
    assert h.core.contexts == 0
    assert cyclic_garbage() == 0


def test_cancelled_timed_out_and_refused_requests_leave_no_cycles(collector_off: None) -> None:
    h = harness()
    forwarded = forward_invite(h, invite(call_id="cancelled@alice"))
    h.feed(response_to(forwarded, 180, "Ringing"), PRIMARY)
    h.feed(cancel(call_id="cancelled@alice"))
    h.feed(response_to(forwarded, 487, "Request Terminated"), PRIMARY)
    forward_invite(h, invite(call_id="silent@alice", branch="z9hG4bK-silent"))  # never answered
    h.feed(b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKbad\r\n\r\n", ALICE)
    h.advance(300.0)
    assert h.core.contexts == 0
    assert cyclic_garbage() == 0


def test_the_harness_itself_is_not_what_is_measured(collector_off: None) -> None:
    """The check can fail: a cycle made on purpose is found."""
    h: Harness = harness()
    loop: list[object] = []
    loop.append(loop)
    del loop
    assert h.core.contexts == 0
    assert cyclic_garbage() == 1
