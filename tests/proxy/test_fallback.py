"""``[[pair]] fallback`` (docs/deployment.md, business continuity), on a fake clock.

Two pairs: ``site-a`` (serving, ``fallback = "site-b"``; primary 127.0.0.1:5070, backup
127.0.0.1:5080) and ``site-b`` (primary 127.0.0.2:5070, backup 127.0.0.2:5080), both monitored.
Only requests of rule 4 move (not those naming a member of ``site-a``), and only once
``site-a`` is out of service (event 40001); while it is being probed they are held as before.
"""

from __future__ import annotations

from itertools import count

from sipha.ha import AliveCodes, Monitor, MonitorSettings, PairOutOfService
from sipha.ha.fallback import FallbackRouted
from sipha.proxy.core import ProxyCore, ProxySettings
from sipha.proxy.fallback import LOG_EVERY
from sipha.proxy.view import ConfiguredView, PairSpec
from sipha.sip.address import Address
from sipha.txn import SendMessage
from tests.proxy.support import (
    ALICE,
    BACKUP,
    PRIMARY,
    RECORD_ROUTE,
    HaHarness,
    invite,
    requests,
    response_to,
    responses,
    statuses,
)

B_PRIMARY = Address("UDP", "127.0.0.2", 5070)
B_BACKUP = Address("UDP", "127.0.0.2", 5080)


def two_sites(*, fallback: str | None = "site-b", oos_force: float = 2.0) -> HaHarness:
    tokens = count(1)
    view = ConfiguredView.build(
        [("127.0.0.1", 5060), ("proxy.example.com", None)],
        [
            PairSpec("site-a", PRIMARY, BACKUP, serving=True, fallback=fallback),
            PairSpec("site-b", B_PRIMARY, B_BACKUP),
        ],
    )
    settings = MonitorSettings(
        oos_check=5.0, oos_force=oos_force, alive_codes=AliveCodes.parse(["2xx"]), takeover_timeout=0.0
    )
    monitor = Monitor([view.members("site-a"), view.members("site-b")], settings)
    core = ProxyCore(
        ProxySettings(record_route=RECORD_ROUTE, via={"UDP": ("127.0.0.1", 5060)}),
        view,
        token=lambda: f"t{next(tokens)}",
        monitor=monitor,
    )
    h = HaHarness(core)
    core.start(h.now)
    h._collect()
    h.answer_probes(B_PRIMARY)  # site B is up all along
    return h


def run(h: HaHarness, seconds: float, *alive: Address) -> list[SendMessage]:
    """Move the clock deadline by deadline, the members in ``alive`` answering every probe."""
    end = h.now + seconds
    out: list[SendMessage] = []
    while True:
        for member in alive:
            out += h.answer_probes(member)
        deadline = h.core.next_deadline()
        if deadline is None or deadline > end:
            break
        out += h.advance(max(deadline - h.now, 0.0))
    out += h.advance(end - h.now)
    return out


def out_of_service_a(h: HaHarness) -> None:
    run(h, 5.0, B_PRIMARY)  # site A's members never answer: 40001 at 4 (oos-force 2)
    events = h.core.drain_events()
    assert [e.pair for e in events if isinstance(e, PairOutOfService)] == ["site-a"]


def fallback_lines(h: HaHarness) -> list[FallbackRouted]:
    return [e for e in h.core.drain_events() if isinstance(e, FallbackRouted)]


def test_new_calls_of_a_pair_out_of_service_go_to_the_fallbacks_active_member() -> None:
    h = two_sites()
    out_of_service_a(h)
    sent = h.feed(invite(branch="z9hG4bK-1", call_id="c1@alice"))
    assert statuses(sent) == [100]
    assert [r.call_id for r in requests(sent, B_PRIMARY)] == ["c1@alice"]
    assert requests(sent, PRIMARY) == requests(sent, BACKUP) == []
    assert h.core.counters.fallback_routed == 1
    lines = fallback_lines(h)
    assert [(e.pair, e.fallback, e.count) for e in lines] == [("site-a", "site-b", 1)]
    assert "pair site-a out of service" in lines[0].message
    assert "pair site-b" in lines[0].message
    sent = h.feed(invite(method="MESSAGE", branch="z9hG4bK-2", call_id="m2@alice", body=b""))
    assert [r.method for r in requests(sent, B_PRIMARY)] == ["MESSAGE"]
    assert h.core.counters.fallback_routed == 2
    assert fallback_lines(h) == []  # at most one line per LOG_EVERY per pair


def test_the_log_line_comes_again_after_log_every_with_the_count_since_the_last() -> None:
    h = two_sites()
    out_of_service_a(h)
    h.feed(invite(branch="z9hG4bK-1", call_id="c1@alice"))
    assert len(fallback_lines(h)) == 1
    for n in range(3):
        h.feed(invite(branch=f"z9hG4bK-x{n}", call_id=f"x{n}@alice"))
    run(h, LOG_EVERY, B_PRIMARY)
    h.feed(invite(branch="z9hG4bK-y", call_id="y@alice"))
    assert [e.count for e in fallback_lines(h)] == [4]
    assert h.core.counters.fallback_routed == 5


def test_requests_held_while_probing_stay_held_then_go_to_the_fallback_at_40001() -> None:
    h = two_sites()
    run(h, 1.0, B_PRIMARY)  # (held from 1: its hold limit, 4 s, ends after 40001)
    sent = h.feed(invite(branch="z9hG4bK-held", call_id="held@alice"))  # site A unknown: held
    assert statuses(sent) == [100]
    assert requests(sent) == []
    sent = run(h, 2.5, B_PRIMARY)  # still probing site A (40001 at 4): still held
    assert [r for r in requests(sent) if r.method != "OPTIONS"] == []
    sent = run(h, 1.0, B_PRIMARY)  # 40001: the held INVITE goes to site B, not 503
    invites = [r for r in requests(sent, B_PRIMARY) if r.method == "INVITE"]  # (and its retransmissions)
    assert {(r.call_id, r.top_via.branch) for r in invites} == {("held@alice", invites[0].top_via.branch)}
    assert [r.status for r in responses(h.sent, ALICE)] == [100]
    assert h.core.counters.fallback_routed == 1


def test_calls_come_back_when_the_pair_is_restored() -> None:
    h = two_sites()
    out_of_service_a(h)
    sent = h.feed(invite(branch="z9hG4bK-1", call_id="c1@alice"))
    assert len(requests(sent, B_PRIMARY)) == 1
    run(h, 3.0, B_PRIMARY, BACKUP)  # site A's backup answers its next probe: restored
    sent = h.feed(invite(branch="z9hG4bK-2", call_id="c2@alice"))
    assert [r.call_id for r in requests(sent, BACKUP)] == ["c2@alice"]
    assert requests(sent, B_PRIMARY) == []
    assert h.core.counters.fallback_routed == 1


def test_requests_naming_a_member_do_not_move() -> None:
    """Rule 2 (e.g. in-dialog, to site A's Contact): site B's servers do not know those dialogs."""
    h = two_sites()
    out_of_service_a(h)
    sent = h.feed(invite(uri="sip:x@127.0.0.1:5070", branch="z9hG4bK-r2", call_id="r2@alice"))
    assert statuses(sent) == [100, 503]  # it names site A's primary
    bye = invite(method="BYE", uri="sip:x@127.0.0.1:5080", branch="z9hG4bK-b", to_tag="srv1", body=b"")
    assert statuses(h.feed(bye)) == [503]
    assert [r.method for r in requests(h.sent, B_PRIMARY) if r.method != "OPTIONS"] == []
    assert h.core.counters.fallback_routed == 0


def test_in_dialog_requests_to_the_proxy_follow_their_call_to_the_fallback() -> None:
    """A user agent that sends ACK and BYE to its outbound proxy (rule 4): they go where the call is."""
    h = two_sites()
    out_of_service_a(h)
    sent = h.feed(invite(branch="z9hG4bK-1", call_id="c1@alice"))
    assert len(requests(sent, B_PRIMARY)) == 1
    ack = invite(method="ACK", branch="z9hG4bK-a", call_id="c1@alice", to_tag="srv1", body=b"")
    assert [r.method for r in requests(h.feed(ack), B_PRIMARY)] == ["ACK"]
    bye = invite(method="BYE", branch="z9hG4bK-b", call_id="c1@alice", cseq=2, to_tag="srv1", body=b"")
    assert [r.method for r in requests(h.feed(bye), B_PRIMARY)] == ["BYE"]
    assert h.core.counters.fallback_routed == 3


def test_no_fallback_or_a_fallback_without_active_member_still_gets_503() -> None:
    h = two_sites(fallback=None)
    out_of_service_a(h)
    assert statuses(h.feed(invite())) == [100, 503]
    h = two_sites()
    run(h, 12.0)  # nobody answers at all: both pairs out of service
    assert statuses(h.feed(invite(branch="z9hG4bK-z", call_id="z@alice"))) == [100, 503]
    assert h.core.counters.fallback_routed == 0


def test_a_chain_of_fallbacks_is_followed_to_the_first_pair_with_an_active_member() -> None:
    """a -> b -> c: with a and b both out of service, a's requests go to c's active member."""
    tokens = count(1)
    c_primary = Address("UDP", "127.0.0.3", 5070)
    view = ConfiguredView.build(
        [("127.0.0.1", 5060)],
        [
            PairSpec("site-a", PRIMARY, BACKUP, serving=True, fallback="site-b"),
            PairSpec("site-b", B_PRIMARY, B_BACKUP, fallback="site-c"),
            PairSpec("site-c", c_primary, Address("UDP", "127.0.0.3", 5080)),
        ],
    )
    settings = MonitorSettings(oos_check=5.0, oos_force=2.0, alive_codes=AliveCodes.parse(["2xx"]))
    monitor = Monitor([view.members(name) for name in ("site-a", "site-b", "site-c")], settings)
    core = ProxyCore(
        ProxySettings(record_route=RECORD_ROUTE, via={"UDP": ("127.0.0.1", 5060)}),
        view,
        token=lambda: f"t{next(tokens)}",
        monitor=monitor,
    )
    h = HaHarness(core)
    core.start(h.now)
    h._collect()
    run(h, 5.0, c_primary)  # only site C answers: a and b out of service
    sent = h.feed(invite())
    assert len(requests(sent, c_primary)) == 1
    assert [(e.pair, e.fallback) for e in fallback_lines(h)] == [("site-a", "site-c")]


def test_a_request_whose_member_died_goes_to_the_fallback_at_40001() -> None:
    """Sent to site A's primary, which died (transport error): held, then site B at 40001, not 503."""
    h = two_sites()
    h.answer_probes(PRIMARY)  # site A active on its primary
    sent = h.feed(invite(branch="z9hG4bK-1", call_id="c1@alice"))
    assert len(requests(sent, PRIMARY)) == 1
    h.transport_error(PRIMARY)  # ICMP: the primary is gone; the request is held, the pair re-probed
    sent = run(h, 2.2, B_PRIMARY)  # the backup silent too: 40001 at 2
    moved = [r for r in requests(sent, B_PRIMARY) if r.method == "INVITE"]
    assert [r.call_id for r in moved] == ["c1@alice"]
    h.feed(response_to(moved[0], 180, "Ringing"), B_PRIMARY)
    assert [r.status for r in responses(h.sent, ALICE)] == [100, 180]
    assert h.core.counters.fallback_routed == 1
