"""A pool behind DNS, end to end: three sipha instances, a real DNS server, a real user agent.

The bed (tests/pool/support.py): sipha a, b, c on 127.0.0.11-13, published by dnsmasq as
the SRV records of ``pool.test`` (priorities 10, 20, 30) and as its A records, all with
``record-route = "sip:pool.test;lr"``; a pair whose primary is a simulated server that
sends its own requests through ``sip:pool.test;transport=udp`` (located by SRV, RFC 3263
with failover across the targets: :mod:`sipha.sim.outbound`); baresip user agents whose
outbound proxy is ``sip:pool.test;transport=T``, asking that DNS server.

The story (docs/design.md §1): calls go through a, the first SRV target.  A call is set
up and held.  a is SIGKILLed: the next call goes to b.  b is SIGSTOPped: the next call goes
to c; the held call's BYE, routed to ``pool.test`` by its Record-Route, is carried by c;
the member's requests fail over to c too.  One ``POOL`` line gives the figures
(``pytest -s``).

What the user agent does is baresip's own (Debian's 1.0.0 on libre 1.1.0), RFC 3263
§4.3 as written: it moves to the next SRV target on a transport error or a 503, or when
Timer B/F fires (64*T1 = 32 s, T1 fixed at 500 ms in libre), and remembers nothing for
the next request.  Over TCP a killed instance refuses the connection: the next target at
once.  Over UDP libre does not listen for ICMP errors: a killed instance costs 32 s, and a
hung one costs 32 s over either transport.  So CI runs the user agents over TCP (one hung
instance in the way: one 32 s wait); the UDP run (64 s per call once a and b are both
down) is marked ``long`` (``make chaos``).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.net.dns_support import dnsmasq_unusable
from tests.pool.support import POOL, PoolBed, Traced, UserAgent, answered_by, sent_to, wait_for
from tests.tls.support import baresip_unusable, skip_unless_usable

pytestmark = [pytest.mark.integration, skip_unless_usable(dnsmasq_unusable(), baresip_unusable())]

TARGET = f"sip:bob@{POOL}"
CALLS_BEFORE = 3
TIMER_B = 32.0  # libre: 64 * SIP_T1, SIP_T1 = 500 ms
HOLD = 0.3  # s each call stays up
SETUP_BOUND = 10.0  # s for a call with a live first target


def unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def place_call(agent: UserAgent, bound: float) -> tuple[float, str]:
    """One call: answered within ``bound`` s, held, hung up; (setup time, Call-ID)."""
    result = agent.call(TARGET, timeout=bound)
    assert result.established, (result, agent.log.read_text(errors="replace")[-3000:])
    assert result.call_id is not None
    time.sleep(HOLD)
    assert agent.hangup()
    return result.seconds, result.call_id


@pytest.mark.parametrize(
    ("transport", "calls_after"),
    [pytest.param("tcp", 1, id="tcp"), pytest.param("udp", 2, id="udp", marks=pytest.mark.long)],
)
def test_pool_behind_dns_with_a_real_user_agent(tmp_path: Path, transport: str, calls_after: int) -> None:
    # Bounds: a call may meet a killed and a hung instance before the live one.
    dead_cost = TIMER_B if transport == "udp" else 0.0  # a killed instance: ICMP ignored over UDP
    call_bound = dead_cost + TIMER_B + SETUP_BOUND
    with PoolBed(tmp_path, transport) as bed:
        caller, holder = bed.caller, bed.holder
        assert caller is not None
        assert holder is not None
        a, b, c = bed.instances["a"], bed.instances["b"], bed.instances["c"]

        # 1. Everything up: the calls and the member's request go to a, the first SRV target.
        before = [place_call(caller, SETUP_BOUND) for _ in range(CALLS_BEFORE)]
        member_before = bed.member_request(timeout=SETUP_BOUND)
        held = holder.call(TARGET, timeout=SETUP_BOUND)
        assert held.established, held
        assert held.call_id is not None
        assert a.transactions("INVITE") == CALLS_BEFORE + 1  # sipha a's own count

        # 2. a is killed: the next call goes to b.
        a.kill()
        after_kill_seconds, after_kill_id = place_call(caller, call_bound)

        # 3. b hangs: the caller's next calls go to c; meanwhile the held call is hung up
        # (its BYE follows the Record-Route, pool.test) and the member sends a request.
        b.stop()

        def hang_up_held() -> float:
            start = time.monotonic()
            assert holder.hangup()
            wait_for(
                lambda: answered_by(holder.trace(), held.call_id or "", "BYE"),
                call_bound,
                "the held call's BYE to be answered",
            )
            return time.monotonic() - start

        with ThreadPoolExecutor(3) as threads:
            bye = threads.submit(hang_up_held)
            member = threads.submit(bed.member_request, SETUP_BOUND)
            after_stop = [place_call(caller, call_bound) for _ in range(calls_after)]
            bye_seconds, member_after = bye.result(), member.result()
        c_invites = c.transactions("INVITE")
        c_byes = c.transactions("BYE")
        trace, held_trace = caller.trace(), holder.trace()
        logs = {name: instance.log_text() for name, instance in bed.instances.items()}

    def names(addresses: list[str]) -> list[str]:
        return [bed.carrier(address) for address in addresses]

    def via(call_id: str, agent_trace: list[Traced] = trace, method: str = "INVITE") -> list[str]:
        """The instances whose 200 answered the call's ``method``."""
        return names(answered_by(agent_trace, call_id, method))

    def tried(call_id: str, agent_trace: list[Traced] = trace, method: str = "INVITE") -> list[str]:
        """The instances the call's ``method`` was sent to, in order."""
        return names(unique(sent_to(agent_trace, call_id, method)))

    carriers_before = sorted({name for _, call_id in before for name in via(call_id)})
    carriers_after = sorted({name for _, call_id in after_stop for name in via(call_id)})
    held_carrier = via(held.call_id, held_trace)
    bye_carrier, bye_tried = via(held.call_id, held_trace, "BYE"), tried(held.call_id, held_trace, "BYE")
    print(  # the measured line (pytest -s)
        f"POOL ({transport}): {CALLS_BEFORE} calls via {'/'.join(carriers_before)}"
        f" (set up in {min(s for s, _ in before):.3f}-{max(s for s, _ in before):.3f} s);"
        f" a SIGKILLed: next call via {'/'.join(via(after_kill_id))} in {after_kill_seconds:.3f} s"
        f" (tried {', '.join(tried(after_kill_id))});"
        f" b SIGSTOPped: next {calls_after} call(s) via {'/'.join(carriers_after)}"
        f" in {', '.join(f'{s:.3f}' for s, _ in after_stop)} s"
        f" (tried {', '.join(tried(after_stop[0][1]))});"
        f" call held via {'/'.join(held_carrier)} across both: BYE via {'/'.join(bye_carrier)}"
        f" {bye_seconds:.3f} s after hang-up (tried {', '.join(bye_tried)});"
        f" member's OPTIONS via the pool: before [{member_before.split(': ', 2)[-1]}],"
        f" after [{member_after.split(': ', 2)[-1]}];"
        f" failed calls: 0 of {CALLS_BEFORE + 2 + calls_after}"
    )
    for name, log in logs.items():
        assert "Traceback" not in log, (name, log)
        # Event 40000 (docs/design.md §4): every instance finds itself among the SRV targets.
        assert "event 40000" not in log, (name, log)
    # RFC 3263 §4.3 on the client side, and which instance carried what.
    assert carriers_before == ["a"]
    assert all(via(call_id) == ["a"] for _, call_id in before)
    assert held_carrier == ["a"]
    # The trace shows the messages sent: over TCP none to a (its connection was refused).
    killed = ["a"] if transport == "udp" else []
    assert via(after_kill_id) == ["b"]
    assert tried(after_kill_id) == [*killed, "b"]
    assert all(via(call_id) == ["c"] for _, call_id in after_stop)
    assert all(tried(call_id) == [*killed, "b", "c"] for _, call_id in after_stop)
    assert c_invites == calls_after
    # The call set up through a survives a's death: its BYE, routed to pool.test, reaches
    # the member through c (sipha c counts it), and the member answers it.
    # Its Route, sip:pool.test;lr, names no transport and pool.test has no NAPTR: RFC 3263
    # §4.1 leaves the choice among the SRV transports to the client, and libre takes TCP
    # first (a refused connection, not traced) whatever the transport of the INVITE.
    bye_transports = {m.transport for m in held_trace if m.method == "BYE" and m.status is None}
    assert bye_transports == {"TCP"}, bye_transports
    assert bye_carrier == ["c"]
    assert bye_tried == ["b", "c"]
    assert c_byes >= 1
    # Timings: the killed instance costs nothing over TCP (refused), Timer B over UDP; the
    # hung one costs Timer B.
    assert after_kill_seconds < dead_cost + SETUP_BOUND / 2
    assert all(TIMER_B - 1 < seconds < call_bound for seconds, _ in after_stop)
    # The member (sipha.sim.outbound): a fails at once (ICMP), b after failover-timeout (1 s).
    assert " 200 from udp:127.0.0.11:" in member_before, member_before
    assert " 200 from udp:127.0.0.13:" in member_after, member_after
    assert "failed: udp:127.0.0.11:" in member_after, member_after
    assert "udp:127.0.0.12:" in member_after, member_after
