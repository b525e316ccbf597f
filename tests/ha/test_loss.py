"""Loss is not death (docs/design.md §2): a period counts as silent only when no probe of it was answered.

The period's probe is an OPTIONS client transaction: over UDP it is retransmitted
per Timer E (RFC 3261 §17.1.2.2, at T1 = 0.5 s, then 1.5 s, 3.5 s ...) and the
member's server transaction answers each retransmission again.  With oos-check =
1 s only one retransmission fits in the period, so 5 % loss on each datagram left
about one period in a hundred unanswered (both exchanges lost: 0.0975²), and the
pair unknown.  While the period's probe is unanswered the active member is now
probed again at each quarter of the period (``PERIOD_REASKS``); the timeout is
unchanged, so a dead member is still found at oos-check.

The first tests drive the pair monitor alone (tests/ha/support.py: oos-check 5 s,
oos-force 2 s, the primary active since 100, its period probe sent at 105); the
last ones the proxy core with its transaction layer (tests/proxy/support.py),
where retransmissions are real datagrams that can be lost.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from sipha.ha import Input, PairUnknown, Probe, State
from sipha.ha.settings import PERIOD_REASKS
from sipha.sip import Request
from tests.ha.support import BACKUP, CHECK, PRIMARY, Harness, kinds, of_type
from tests.proxy.support import PRIMARY as PRIMARY_ADDRESS
from tests.proxy.support import HaHarness, ha_harness, requests, response_to

QUARTER = CHECK / (PERIOD_REASKS + 1)


def active_at_105(takeover: float = 0.0) -> Harness:
    """Active on the primary since 100, its period probe sent at 105 (an answer is due before 110)."""
    harness = Harness.started(takeover=takeover)
    harness.answer(harness.last_probe())
    harness.advance(CHECK)
    assert harness.last_probe().sent_at == 105.0
    return harness


def period_probes(harness: Harness) -> list[Probe]:
    return [probe for probe in harness.probes() if probe.member == PRIMARY and probe.sent_at >= 105.0]


# ---------------------------------------------------------------------------- the pair monitor


@pytest.mark.parametrize("takeover", [0.0, 6.0], ids=["classic", "takeover"])
def test_a_silent_member_is_asked_at_each_quarter_and_lost_at_oos_check_as_before(takeover: float) -> None:
    harness = active_at_105(takeover)
    out = harness.at(110.0)
    lost = ["PairUnknown", "Probe:backup"] + (["Probe:primary"] if takeover else [])
    assert kinds(out) == ["Probe:primary"] * PERIOD_REASKS + lost
    assert [probe.sent_at for probe in period_probes(harness)][: PERIOD_REASKS + 1] == [
        105.0 + k * QUARTER for k in range(PERIOD_REASKS + 1)
    ]
    unknown = of_type(out, PairUnknown)[0]
    assert (unknown.reason, unknown.member, unknown.at) == ("no-answer", PRIMARY, 110.0)


@pytest.mark.parametrize("answered", range(PERIOD_REASKS + 1), ids=lambda k: f"probe{k}")
def test_an_alive_answer_to_any_probe_of_the_period_keeps_the_member(answered: int) -> None:
    harness = active_at_105()
    harness.at(109.9)
    probes = period_probes(harness)
    assert len(probes) == PERIOD_REASKS + 1
    assert harness.answer(probes[answered]) == []
    assert kinds(harness.at(110.0)) == ["Probe:primary"]  # the next period, on time
    assert harness.monitor.active == PRIMARY
    assert of_type(harness.events(), PairUnknown)[1:] == []  # only the start's


def test_an_answered_period_has_one_probe() -> None:
    harness = active_at_105()
    harness.at(105.01)
    harness.answer(harness.last_probe())
    assert harness.at(109.99) == []
    assert harness.monitor.next_deadline() == 110.0


def test_asking_again_stops_at_the_answer() -> None:
    harness = active_at_105()
    harness.at(105.0 + QUARTER + 0.1)
    assert len(period_probes(harness)) == 2
    harness.answer(period_probes(harness)[0])  # the first probe's answer, late but in the period
    assert harness.at(109.99) == []
    assert len(period_probes(harness)) == 2


@pytest.mark.parametrize("result", ["503", "failed"])
def test_a_negative_result_of_any_probe_of_the_period_settles_it_at_once(result: str) -> None:
    harness = active_at_105()
    harness.at(105.0 + 2 * QUARTER)
    reask = harness.last_probe()
    assert reask.sent_at == 105.0 + 2 * QUARTER
    out = harness.answer(reask, 503) if result == "503" else harness.fail(reask)
    assert kinds(out) == ["PairUnknown", "Probe:backup"]
    assert of_type(out, PairUnknown)[0].reason == ("not-alive" if result == "503" else "probe-failed")


def test_a_failed_probe_of_an_earlier_period_is_stale() -> None:
    harness = active_at_105()
    harness.at(109.0)
    earlier = period_probes(harness)
    harness.answer(earlier[0])
    harness.at(110.0)
    harness.answer(harness.last_probe())
    assert harness.fail(earlier[1]) == []
    assert harness.monitor.state is State.ACTIVE
    assert harness.trace[-1] == (State.ACTIVE, Input.NEGATIVE_STALE)


def test_the_quarters_follow_oos_check() -> None:
    harness = Harness.started(check=1.0)
    harness.answer(harness.last_probe())
    harness.advance(1.0)
    harness.advance(0.99)
    sent = [probe.sent_at for probe in harness.probes() if probe.sent_at >= 101.0]
    assert sent == pytest.approx([101.0, 101.25, 101.5, 101.75])
    assert harness.monitor.active == PRIMARY
    assert BACKUP not in {probe.member for probe in harness.probes()[1:]}


# ---------------------------------------------------------------------------- the proxy core, datagrams


def core(oos_check: float = 1.0) -> HaHarness:
    """The core with the pair active on the primary at 0, oos-check 1 s, a 5 s takeover window."""
    h = ha_harness(oos_check=oos_check, oos_force=1.0, takeover=5.0, primary_active=True)
    h.core.drain_events()
    return h


def options_to_primary(h: HaHarness, since: int) -> list[Request]:
    """The OPTIONS sent to the primary from ``h.sent[since]`` on (retransmissions included)."""
    return [r for r in requests(h.sent[since:], PRIMARY_ADDRESS) if r.method == "OPTIONS"]


def pair_state(h: HaHarness) -> State:
    monitor = h.core.monitor
    assert monitor is not None
    return monitor.pairs["demo"].state


def answer(h: HaHarness, request: Request) -> None:
    h.feed(response_to(request, 200, "OK", to_tag="primary"), PRIMARY_ADDRESS)


def test_one_lost_answer_is_recovered_by_the_probes_own_retransmission() -> None:
    h = core()
    mark = len(h.sent)
    h.advance(1.0)  # the period's probe
    h.advance(0.5)  # its Timer E retransmission (and re-asks), the first answer lost
    sent = options_to_primary(h, mark)
    first = sent[0]
    retransmitted = [r for r in sent if r.top_via.branch == first.top_via.branch]
    assert len(retransmitted) == 2  # the probe at 1.0 and again at 1.5: Timer E, not cut short
    answer(h, retransmitted[1])
    h.advance(1.0)
    assert h.core.drain_events() == []
    assert pair_state(h) is State.ACTIVE


def test_a_probe_and_its_retransmission_both_unanswered_is_not_death() -> None:
    h = core()
    mark = len(h.sent)
    h.advance(1.8)  # the probe at 1.0 and its retransmission at 1.5 lost; re-asked at 1.25, 1.5, 1.75
    sent = options_to_primary(h, mark)
    reasks = [r for r in sent if r.top_via.branch != sent[0].top_via.branch]
    assert len({r.top_via.branch for r in reasks}) == PERIOD_REASKS
    answer(h, reasks[-1])  # a re-ask (the one sent at 1.75)
    h.advance(0.5)
    assert h.core.drain_events() == []
    assert pair_state(h) is State.ACTIVE


def lossy_periods(h: HaHarness, rng: random.Random, loss: float, seconds: float) -> int:
    """Run ``seconds`` with the primary answering every OPTIONS datagram that reaches it, each datagram
    (probe, retransmission, answer) lost with probability ``loss``; the backup silent.  How many
    times the pair became unknown."""
    end = h.now + seconds
    seen = len(h.sent)
    unknown = 0
    while (deadline := h.core.next_deadline()) is not None and deadline <= end:
        h.advance(max(deadline - h.now, 0.0))
        for request in options_to_primary(h, seen):
            if rng.random() >= loss and rng.random() >= loss:  # the request arrived, and its answer
                answer(h, request)
        seen = len(h.sent)
        unknown += sum(isinstance(event, PairUnknown) for event in h.core.drain_events())
    return unknown


def test_five_percent_loss_on_every_datagram_never_makes_the_pair_unknown() -> None:
    assert lossy_periods(core(), random.Random(2026), 0.05, 2000.0) == 0


def test_without_asking_again_five_percent_loss_makes_the_pair_unknown() -> None:
    """The control: only the probe and its Timer E retransmission, as before the rule (same losses)."""
    h = core()
    monitor = h.core.monitor
    assert monitor is not None
    pair = monitor.pairs["demo"]
    pair.settings = dataclasses.replace(pair.settings, period_reasks=0)
    assert lossy_periods(h, random.Random(2026), 0.05, 2000.0) >= 5  # ~1 % of 2,000 periods
