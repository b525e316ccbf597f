"""One prober per instance: the workers of ``[proxy] workers`` share worker 0's OPTIONS.

docs/design.md §2: sipha monitors each member with OPTIONS.  With N worker
processes, N monitors each sending their own OPTIONS would give every member N
times the traffic the operator configured, and N views of one member that can
disagree.  So only worker 0 puts OPTIONS on the wire.  The other workers keep
their own pair monitor (its state machine, timers and events are unchanged),
but each :class:`~sipha.ha.Probe` it asks for is *delegated*: a question to
worker 0, answered with the outcome of an OPTIONS to that member.

Worker 0 (:class:`ProbeServer`) answers a question at once with the last
alive-or-not answer of the member when it is recent enough for the asker
(``fresh``: the asker's period while the member is its active one, so that a
follower's steady probing costs no OPTIONS at all; a quarter of a second
otherwise, so that the confirmation of a takeover or the re-probe of a suspected
member is a new OPTIONS); else it waits for the OPTIONS to the member already
under way, or sends one.  Failures (transport error, timeout) are passed on,
never remembered.  A follower (:class:`ProbeDelegate`) feeds the answer to its
monitor as if its own OPTIONS had been answered, with the round trip worker 0
measured.  Both sides are sans-IO: questions and answers are queued here and
carried between the processes by the driver (:mod:`sipha.net.workers`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from sipha.ha import TAKEOVER_PROBE_INTERVAL, Member, Monitor, Probe
from sipha.txn.keys import TransactionKey

FAILED: Final = -1
"""The status of an answer that says the OPTIONS failed (transport error or timeout)."""
STEADY_GRACE: Final = TAKEOVER_PROBE_INTERVAL
"""How late a steady question (the serving member, once per period) may come after worker 0's
last answer turned a period old, and still wait for worker 0's own probe of the next period
rather than cost an OPTIONS (s).  Each process fires its timers on its own 10 ms grid and the
periods drift by a tick: a follower's period may end just before worker 0's next probe is out.
Without it that cost an OPTIONS every few periods (8 in 6 s at oos-check 1, where 6 were due)."""
ASKED_KEPT: Final = 4096
"""Bound of the questions a follower keeps waiting for (worker 0 may have died meanwhile)."""


@dataclass(frozen=True, slots=True)
class Question:
    """A follower's probe, asked of worker 0: ``pair``'s member ``role``, its ``seq``."""

    pair: str
    role: str
    seq: int
    fresh: float
    """How old a remembered answer may be and still do (s)."""
    asker: int
    """The worker that asks."""


@dataclass(frozen=True, slots=True)
class Answer:
    """Worker 0's answer to a :class:`Question`: a status (:data:`FAILED` when none) and the RTT."""

    pair: str
    role: str
    seq: int
    status: int
    rtt: float
    asker: int


class ProbeDelegate:
    """A follower's side: probes become questions; answers are fed to the monitor."""

    def __init__(self, monitor: Callable[[], Monitor | None], worker: int) -> None:
        self._monitor = monitor
        self.worker = worker
        self.asked: dict[tuple[str, int], Probe] = {}
        self.questions: list[Question] = []
        """Not carried to worker 0 yet (the driver drains them)."""

    def ask(self, probe: Probe, now: float) -> None:
        """Delegate ``probe``: a question to worker 0."""
        del now
        monitor = self._monitor()
        pair = None if monitor is None else monitor.pairs.get(probe.pair)
        # The member that serves (the active one; either of an active-active pair while it
        # answers) is probed once per period: an answer that fresh is as good as one's own.
        steady = pair is not None and (pair.active == probe.member or probe.member in pair.answering())
        fresh = pair.settings.oos_check if steady and pair is not None else TAKEOVER_PROBE_INTERVAL
        if len(self.asked) >= ASKED_KEPT:
            self.asked.pop(next(iter(self.asked)))  # the oldest: its answer never came
        self.asked[probe.pair, probe.seq] = probe
        self.questions.append(Question(probe.pair, probe.member.role, probe.seq, fresh, self.worker))

    def answered(self, answer: Answer, now: float) -> bool:
        """Feed worker 0's ``answer`` to the monitor; False when no question of ours matches."""
        probe = self.asked.pop((answer.pair, answer.seq), None)
        monitor = self._monitor()
        if probe is None or monitor is None or monitor.pairs.get(probe.pair) is None:
            return False
        if answer.status == FAILED:
            monitor.probe_failed(probe, now)
        else:
            monitor.probe_answered(probe, answer.status, now, answer.rtt)
        return True


@dataclass(slots=True)
class _Heard:
    status: int
    rtt: float
    at: float


class ProbeServer:
    """Worker 0's side: answer the followers' questions from the OPTIONS it sends."""

    def __init__(
        self, monitor: Callable[[], Monitor | None], send: Callable[[Member, float], TransactionKey]
    ) -> None:
        self._monitor = monitor
        self._send = send
        self._heard: dict[Member, _Heard] = {}
        self._waiting: dict[Member, list[Question]] = {}
        self._under_way: dict[Member, int] = {}
        """OPTIONS to each member not settled yet (this worker's own probes and the served ones)."""
        self.served: set[TransactionKey] = set()
        """The OPTIONS sent only to answer questions (not probes of this worker's monitor)."""
        self.answers: list[Answer] = []
        """Not carried to the askers yet (the driver drains them)."""

    def question(self, question: Question, now: float) -> None:
        """A follower's question: answered now, or when an OPTIONS to the member settles."""
        monitor = self._monitor()
        pair = None if monitor is None else monitor.pairs.get(question.pair)
        member = None if pair is None else {m.role: m for m in pair.members()}.get(question.role)
        if member is None:
            self._reply(question, FAILED, 0.0)  # not a pair of ours (a reload in between)
            return
        heard = self._heard.get(member)
        if heard is not None and now - heard.at <= question.fresh:
            self._reply(question, heard.status, heard.rtt)
            return
        self._waiting.setdefault(member, []).append(question)
        if self._under_way.get(member):
            return
        if (
            heard is not None
            and pair is not None
            and pair.active == member
            and question.fresh >= pair.settings.oos_check
            and now - heard.at <= question.fresh + STEADY_GRACE
        ):
            return  # worker 0 probes its active member every period: the next probe is a tick away
        self.sent(member)
        self.served.add(self._send(member, now))

    def sent(self, member: Member) -> None:
        """An OPTIONS to ``member`` went out (this worker's probe, or one to serve questions)."""
        self._under_way[member] = self._under_way.get(member, 0) + 1

    def settled(
        self, member: Member, status: int, rtt: float, now: float, key: TransactionKey | None
    ) -> None:
        """An OPTIONS to ``member`` got its final answer (``status``) or failed (:data:`FAILED`)."""
        count = self._under_way.get(member, 0)
        if count > 1:
            self._under_way[member] = count - 1
        else:
            self._under_way.pop(member, None)
        if key is not None:
            self.served.discard(key)
        if status != FAILED:
            self._heard[member] = _Heard(status, rtt, now)
        for question in self._waiting.pop(member, []):
            self._reply(question, status, rtt)

    def _reply(self, question: Question, status: int, rtt: float) -> None:
        self.answers.append(Answer(question.pair, question.role, question.seq, status, rtt, question.asker))
