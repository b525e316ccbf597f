"""Crashes found by the coverage-guided fuzzer (tests/fuzz), each reduced to the input that causes it.

The core's input must never raise (tests/fuzz/fuzz_core.py): bad input gets the right
4xx or a silent drop, a log line and a counter.  Each test names the crash file's
harness and what it found.
"""

from __future__ import annotations

import pytest

from sipha.sip import Response
from tests.proxy.support import ALICE, PRIMARY, harness, only


def stray_ok(next_via_params: str) -> bytes:
    """A 200 no transaction knows (§18.1.2: relayed statelessly by its Vias), our Via on top."""
    return (
        "SIP/2.0 200 OK\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-stray.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-alice-1{next_via_params}\r\n"
        'From: "Alice" <sip:alice@127.0.0.1:5061>;tag=a1\r\n'
        "To: <sip:service@127.0.0.1>;tag=srv1\r\n"
        "Call-ID: stray-1@alice\r\n"
        "CSeq: 1 INVITE\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("rport", ["506bK-srv-bye", "99999", "0", "-1"])
def test_stray_response_whose_next_via_has_a_bad_rport_goes_to_the_sent_by_port(rport: str) -> None:
    """fuzz_core found: ``int()`` of the next Via's rport raised ValueError out of ``receive``.

    RFC 3581 §3: ``response-port = "rport" [EQUAL 1*DIGIT]``; a value that is not a port
    is ignored, as for a request's top Via (sipha.proxy.via.response_destination): the
    response goes to the received address at the sent-by port (§18.2.2).
    """
    h = harness()
    sent = h.feed(stray_ok(f";rport={rport};received=127.0.0.1"), PRIMARY)
    relayed = only(sent)
    assert relayed.destination == ALICE
    assert isinstance(relayed.message, Response)
    assert relayed.message.status == 200
    assert h.core.counters.responses_forwarded == 1
