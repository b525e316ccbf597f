"""One prober per instance (sipha.proxy.probeshare): two workers' cores on one fake clock.

Worker 0 sends the OPTIONS; worker 1's pair monitor runs as before but asks worker 0
for each of its probes.  The test carries the questions and answers between them as
the hand-over socket does, and plays the members.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count

from sipha.ha import State
from sipha.ha.settings import ACTIVE_ACTIVE
from sipha.proxy.core import ProxyCore, ProxySettings
from sipha.sip import Request
from sipha.sip.address import Address
from sipha.txn import SendMessage
from tests.proxy.support import (
    BACKUP,
    PRIMARY,
    RECORD_ROUTE,
    as_request,
    demo_monitor,
    make_view,
    response_to,
)

STEP = 0.05


def core(worker: int, *, active_active: bool = False) -> ProxyCore:
    view = make_view()
    tokens = count(1)
    monitor = demo_monitor(view, oos_check=5.0, oos_force=5.0, takeover=5.0)
    if active_active:
        monitor.use_modes({"demo": ACTIVE_ACTIVE})
    proxy = ProxyCore(
        ProxySettings(record_route=RECORD_ROUTE, via={"UDP": ("127.0.0.1", 5060)}, branch_tag=f".w{worker}"),
        view,
        token=lambda: f"w{worker}t{next(tokens)}",
        monitor=monitor,
    )
    proxy.share_probes(worker)
    return proxy


@dataclass
class Instance:
    """Worker 0 and worker 1 of one instance, and the members as the test plays them."""

    workers: tuple[ProxyCore, ProxyCore] = field(default_factory=lambda: (core(0), core(1)))
    now: float = 0.0
    alive: set[Address] = field(default_factory=lambda: {PRIMARY})
    options: dict[tuple[int, Address], int] = field(default_factory=dict)
    """OPTIONS put on the wire, by worker and member (retransmissions left out)."""
    _branches: set[str] = field(default_factory=set)

    def start(self) -> None:
        for worker in self.workers:
            worker.start(self.now)
        self.settle()

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end - 1e-9:
            self.now += STEP
            for worker in self.workers:
                deadline = worker.next_deadline()
                if deadline is not None and deadline <= self.now:
                    worker.handle_timers(self.now)
            self.settle()

    def settle(self) -> None:
        """Carry everything until nothing moves: OPTIONS answered by live members, questions, answers."""
        moved = True
        while moved:
            moved = False
            for index, worker in enumerate(self.workers):
                for sent in worker.drain():
                    moved |= self._member(index, worker, sent)
            questions, _ = self.workers[1].drain_probe_share()
            for question in questions:
                self.workers[0].probe_question(question, self.now)
                moved = True
            _, answers = self.workers[0].drain_probe_share()
            for answer in answers:
                assert answer.asker == 1
                self.workers[1].probe_answer(answer, self.now)
                moved = True

    def _member(self, index: int, worker: ProxyCore, sent: SendMessage) -> bool:
        message = sent.message
        if not isinstance(message, Request) or message.method != "OPTIONS":
            return False
        request = as_request(sent)
        branch = request.top_via.branch or ""
        if branch not in self._branches:
            self._branches.add(branch)
            key = (index, sent.destination)
            self.options[key] = self.options.get(key, 0) + 1
        if sent.destination not in self.alive:
            return False
        worker.receive(response_to(request, 200, "OK", to_tag="m"), sent.destination, self.now)
        return True

    def state(self, worker: int) -> State:
        monitor = self.workers[worker].monitor
        assert monitor is not None
        return monitor.pairs["demo"].state


def test_only_worker_0_sends_options_one_per_period() -> None:
    instance = Instance()
    instance.start()
    assert instance.state(0) is State.ACTIVE
    assert instance.state(1) is State.ACTIVE  # worker 0's first answer, passed on
    instance.run(60.0)
    assert instance.state(1) is State.ACTIVE
    assert (1, PRIMARY) not in instance.options
    # oos-check = 5 s: one probe per period, at 0, 5, ..., 55 s (worker 1's probes cost none).
    assert instance.options[0, PRIMARY] == 12
    assert (0, BACKUP) not in instance.options


def test_both_members_of_an_active_active_pair_get_one_options_per_period() -> None:
    """Either member of an active-active pair serves while it answers: worker 1's probes of
    either are steady ones, answered from worker 0's probe of the period, not a fresh OPTIONS."""
    instance = Instance(workers=(core(0, active_active=True), core(1, active_active=True)))
    instance.alive.add(BACKUP)
    instance.workers[0].start(instance.now)
    instance.settle()
    instance.run(2.5)  # worker 1 starts half a period later: its probes fall between worker 0's
    instance.workers[1].start(instance.now)
    instance.settle()
    instance.run(57.5)
    assert instance.state(1) is State.ACTIVE
    assert (1, PRIMARY) not in instance.options
    assert (1, BACKUP) not in instance.options
    # oos-check = 5 s: about one probe per period per member (a start-up re-ask or two allowed).
    assert 12 <= instance.options[0, PRIMARY] <= 14
    assert 12 <= instance.options[0, BACKUP] <= 14


def test_a_silent_member_is_noticed_by_both_workers_within_a_period() -> None:
    instance = Instance()
    instance.start()
    instance.run(7.0)
    instance.alive.clear()  # the probe of t = 10 s goes unanswered: its period ends at 15 s
    instance.run(8.6)
    assert instance.state(0) is not State.ACTIVE
    assert instance.state(1) is not State.ACTIVE
    assert (1, PRIMARY) not in instance.options
    assert (1, BACKUP) not in instance.options
    # Both members come back: the primary answers again; both workers find it.
    instance.alive.add(PRIMARY)
    instance.run(6.0)
    assert instance.state(0) is State.ACTIVE
    assert instance.state(1) is State.ACTIVE


def test_a_question_about_a_member_not_recently_heard_sends_one_options() -> None:
    """While its pair is not active, worker 1's probes want fresh answers: worker 0 sends one
    OPTIONS for them, or joins one already under way, and never more than one at a time."""
    instance = Instance()
    instance.alive.clear()
    instance.start()
    instance.run(12.0)
    assert instance.state(0) is not State.ACTIVE
    assert instance.state(1) is not State.ACTIVE
    assert (1, PRIMARY) not in instance.options
    own = instance.options.get((0, PRIMARY), 0) + instance.options.get((0, BACKUP), 0)
    assert own > 0


def test_a_follower_whose_period_ends_a_tick_after_worker_0s_costs_no_options() -> None:
    """Each process fires its timers on its own 10 ms grid, so a follower's period may end a
    tick or two after worker 0's last answer turned one period old, before worker 0's own
    probe of the next period is out.  That answer still stands for the period: no OPTIONS
    of its own (there was one, every few periods: 8 OPTIONS in 6 s at oos-check 1 in CI)."""
    instance = Instance()
    instance.start()
    instance.run(4.95)
    assert instance.options[0, PRIMARY] == 1  # the start's probe, answered at 0.0
    instance.now = 5.02  # worker 1's period timer fires first, 20 ms after the answer's age hit 5 s
    instance.workers[1].handle_timers(instance.now)
    instance.settle()
    assert instance.options[0, PRIMARY] == 1
    assert instance.state(1) is State.ACTIVE
    instance.run(55.0)
    assert instance.options[0, PRIMARY] == 12
    assert instance.state(1) is State.ACTIVE
