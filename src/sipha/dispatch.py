"""The proxy's layer on the driver: worker hand-over, §18.2.2 fallback, counts; compiled with the core.

:class:`sipha.net.driver.Driver` feeds the proxy core and flushes what it
produced.  What only the proxy needs is here, as overrides of the driver's
steps:

* a message whose transaction another worker of ``[proxy] workers`` holds
  (:func:`sipha.proxy.affinity.owner`) is passed to that worker unread, and what
  other workers pass to this one is fed in the same batch as a socket's;
* a stream whose framing failed is answered (400/513) before it is closed;
* pair monitor events go to the application (log, dashboard) and, once, to the
  other workers, so that a switch one worker decides holds for all;
* a response whose connection is gone goes where §18.2.2 says, and a final
  response of a server transaction is counted (for /metrics).

It does no I/O of its own and keeps no clock: the transports send, and the
application (:mod:`sipha.app`) attaches it to the loop.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from sipha.ha import MemberBecameActive, PairUnknown
from sipha.net.driver import Driver, Outgoing, Transports
from sipha.proxy.admission import DROP_LEVEL, OTHERS_SHARE
from sipha.proxy.affinity import owner
from sipha.proxy.overload import is_new_invite
from sipha.proxy.probeshare import Answer as ProbeAnswer
from sipha.proxy.probeshare import Question
from sipha.proxy.ratelimit import ADMIT, RATE_LIMITED, SourceGuard, user_agent
from sipha.proxy.via import response_fallback_destination
from sipha.sip import Response, SipParseError
from sipha.txn import SendMessage

if TYPE_CHECKING:
    from sipha.ha import HaEvent
    from sipha.net.locate import Locator
    from sipha.net.workers import Handoff
    from sipha.proxy.core import ProxyCore
    from sipha.sip.address import Address
    from sipha.txn.keys import TransactionKey

log = logging.getLogger("sipha")

FINAL: int = 200
OVERLOAD_LOG_EVERY: float = 10.0
"""s between two log lines about shedding new calls (the state can flip many times a second)."""
LIMIT_LOG_EVERY: float = 10.0
"""s between two log lines about requests refused at [limits] max-transactions."""
_STREAM_HOLDERS_MAX: int = 65536
"""Bound of the table of stream peers held by other workers (like the other address caches)."""
_HANDOFF_BACKLOG: int = 20_000
"""At most this many handed-over messages are read before the timers are judged."""
TIMER_GRID: float = 0.01
"""The core's timer fires on this grid (s): however many transaction timers fall due, the
loop wakes up for them at most 100 times a second.  The shortest SIP timer is T1 (500 ms)
and a failover-timeout is a second or more: 10 ms late is network jitter.  With thousands
of calls a second every call's transactions end at their own instant (Timers K, J, L, M),
and waking for each one cost a loop iteration, a callback and a read of every socket."""


class Dispatcher(Driver):
    """The driver of the proxy core, with the hand-over between workers and the proxy's sending rules."""

    def __init__(
        self,
        *,
        on_event: Callable[[HaEvent], None],
        count_final: Callable[[str, int], None],
    ) -> None:
        super().__init__(grid=TIMER_GRID)
        self._core: ProxyCore | None = None
        self.handoff: Handoff | None = None
        self.worker_index = 0
        self.worker_count = 1
        self.own_addresses: frozenset[Address] = frozenset()
        """A worker's own UDP addresses (its probe socket's included): what arrives there
        answers its own requests."""
        self.probe_socket = False
        """Whether the transports have the pair monitor's own UDP socket (probes leave from it)."""
        self._on_event = on_event
        self._count_final = count_final
        self._stream_holders: dict[Address, int] = {}
        """Stream peers whose connection another worker holds: that worker's index."""
        self.locator: Locator | None = None
        """Runs the core's RFC 3263 lookups (docs/design.md §3 rule 3); None: no target is ever found."""
        self._behind: dict[int, int] = {}
        """The UDP sockets (ids) whose receive queue is filling, and how far (:meth:`on_backlog`)."""
        self.dropping = False
        """Far behind: new INVITEs from untrusted endpoints are dropped unparsed (:meth:`on_backlog`)."""
        self._overload_logged: tuple[float, int] | None = None
        """When shedding was last logged, and the count of new INVITEs shed then."""
        self._refused_logged: tuple[float, int] = (-LIMIT_LOG_EVERY, 0)
        """When max-transactions refusals were last logged, and their count then."""
        self.sources = SourceGuard()
        """[limits]: per source IP, a rate and scanners' User-Agents (docs/design.md §3)."""
        self.max_transactions = 0
        """[limits] max-transactions, given to the core (:mod:`sipha.proxy.admission`); 0 = none."""

    @property
    def core(self) -> ProxyCore | None:
        """The proxy core, the driven endpoint; None until it is built (messages are dropped)."""
        return self._core

    @core.setter
    def core(self, core: ProxyCore | None) -> None:
        self._core = core
        self.endpoint = core
        if core is not None:
            self._admission(core)

    def limit_transactions(self, max_transactions: int) -> None:
        """[limits] max-transactions (at start and on reload); the trusted sources are the guard's."""
        self.max_transactions = max_transactions
        if self._core is not None:
            self._admission(self._core)

    def _admission(self, core: ProxyCore) -> None:
        core.admission.limit(self.max_transactions)
        core.admission.trusted = self._trusted

    def _trusted(self, host: str) -> bool:
        return self.sources.trusted(host, self.clock())

    # ------------------------------------------------------------------ inputs

    def on_message(self, data: bytes, source: Address, local: Address) -> None:
        """A datagram or a framed stream message from the transports."""
        if self.dropping and self._drop_new_call(data, source):
            return  # first: under a flood, the cheapest way out
        sources = self.sources
        if sources.enabled:
            verdict = sources.check(data, source.host, self.clock())
            if verdict != ADMIT:
                self._log_source(verdict, data, source)
                return
        handoff = self.handoff
        if handoff is not None and (source.transport != "UDP" or local not in self.own_addresses):
            # Another worker may hold this message's transaction: pass it on unread.  (What
            # comes to this worker's own UDP port answers its own requests.)  A stream
            # connection stays here; the owner's answers on it come back to be written.
            target = owner(data, self.worker_count)
            if target is not None and target != self.worker_index:
                if self.tracer is not None:  # traced here, where it came in; the owner does not
                    self.tracer.received(data, source, local)
                handoff.send(target, data, source, local)
                return
        super().on_message(data, source, local)

    def _drop_new_call(self, data: bytes, source: Address) -> bool:
        """Far behind: a new INVITE over UDP from an untrusted source is dropped before it is parsed.

        The cheap tests first: the transport, the first bytes, the source's tier (one look-up in
        the guard's table), then the To header field.  The caller retransmits (§17.1.1.2).
        Over TCP and TLS nothing is retransmitted: those are parsed and answered 503.
        """
        core = self._core
        if (
            core is None
            or source.transport != "UDP"
            or not data.startswith(b"INVITE ")
            or self.sources.trusted(source.host, self.clock())
            or not is_new_invite(data)
            or core.view.member_at(source.host, source.port) is not None
        ):
            return False  # a SIP server's and a trusted source's new calls keep priority, as in the core
        core.counters.overload_drops += 1
        core.admission.others_dropped_at = self.clock()
        return True

    def _log_source(self, verdict: int, data: bytes, source: Address) -> None:
        """A message dropped by [limits]: one line per source per minute at most, with the count."""
        sources = self.sources
        count = sources.notice(source.host, self.clock())
        if not count:
            return
        settings = sources.settings
        if verdict == RATE_LIMITED:
            why = f"over [limits] source-rate = {settings.rate:g}/s (burst {settings.burst:g})"
        else:  # the header is the sender's: quoted, cut, escaped (no control character reaches the log)
            agent = (user_agent(data) or b"")[:80].decode("utf-8", "replace")
            why = f"its User-Agent {agent!r} names a scanner ([limits] scanner-user-agents)"
        log.warning(
            "source %s: %s: its messages are dropped unanswered (%d since the last line about it)",
            source.host,
            why,
            count,
        )

    def on_bad_stream(self, error: SipParseError, source: Address) -> None:
        """A stream whose framing failed: the core answers what it can, before the close (§18.3)."""
        core = self._core
        if core is None:
            return
        core.bad_stream(error, source, self.clock())
        self.flush()

    def on_handed_over(self, data: bytes, source: Address, local: Address, sender: int) -> None:
        """A message another worker (``sender``) received for a transaction of this one."""
        del local
        if source.transport == "UDP":
            self.receive(data, source)
            return
        # From a connection ``sender`` holds: what this worker sends to that peer is
        # written there (§18.2.2: responses go back on the request's connection).
        holders = self._stream_holders
        if len(holders) >= _STREAM_HOLDERS_MAX:
            holders.clear()
        holders[source] = sender
        self.receive(data, source, stream=True)

    def on_handed_send(self, data: bytes, destination: Address, fallback: Address) -> None:
        """Write what another worker sends to a peer of a connection this worker holds.

        The connection may have closed meanwhile: then ``fallback``, where the sender would
        have sent it without one (§18.2.2 for a response; the peer itself for a request).
        """
        transports = self.transports
        if transports is None:
            return
        target = destination if transports.has_connection(destination) else fallback
        transports.send(data, target)
        if self.tracer is not None:  # traced by the worker that writes it, not the one that sent it over
            self.tracer.sent(data, target)

    def on_pair_news(self, pair: str, what: str, role: str, at: float, sender: int) -> None:
        """Another worker (``sender``) saw ``role`` of ``pair`` become ``active`` or be ``lost`` at ``at``."""
        del sender
        core = self._core
        if core is None:
            return
        core.pair_news(pair, what, role, at, self.clock())
        self._pending = True  # flushed at the end of the hand-over batch

    def on_backlog(self, endpoint: object, level: int) -> None:
        """A UDP socket fell behind (its receive queue is filling: ``level`` 1 or 2) or caught up (0).

        While any socket is behind, the core sheds new INVITEs from endpoints (503 with
        Retry-After); at level 2 they are dropped before they are parsed.  The queue then
        drains instead of overflowing, and the kernel does not drop the ACKs, BYEs and
        responses of the calls already up (docs/design.md §3, overload).
        """
        sockets = self._behind
        if level:
            sockets[id(endpoint)] = level
        else:
            sockets.pop(id(endpoint), None)
        worst = max(sockets.values(), default=0)
        self.dropping = worst >= DROP_LEVEL
        core = self._core
        if core is None:
            return
        core.overloaded = bool(sockets)
        core.admission.level = worst
        if level:
            self._log_overload(core)

    def _log_overload(self, core: ProxyCore) -> None:
        now = self.clock()
        shed = core.counters.overload_sheds + core.counters.overload_drops
        last = self._overload_logged
        if last is not None and now - last[0] < OVERLOAD_LOG_EVERY:
            return
        since = "" if last is None else f" ({shed - last[1]} new INVITEs shed since the last line)"
        log.warning(
            "overloaded: a receive queue is filling; new INVITEs from untrusted endpoints get 503, "
            "or are dropped when far behind, trusted ones get 503 only when further behind, until "
            "it drains%s",
            since,
        )
        self._overload_logged = (now, shed)

    def _log_refused(self, core: ProxyCore) -> None:
        """Requests refused at max-transactions: one line per LIMIT_LOG_EVERY at most, with the count."""
        refused = core.admission.refused
        at, count = self._refused_logged
        now = self.clock()
        if refused == count or now - at < LIMIT_LOG_EVERY:
            return
        log.warning(
            "[limits] max-transactions = %d reached: %d new requests answered 503 since the last line "
            "about it (untrusted sources' from %d transactions)",
            core.admission.max_transactions,
            refused - count,
            int(core.admission.max_transactions * OTHERS_SHARE),
        )
        self._refused_logged = (now, refused)

    def on_probe_question(self, pair: str, role: str, seq: int, fresh: float, asker: int) -> None:
        """Worker 0: another worker's probe to answer (:mod:`sipha.proxy.probeshare`)."""
        core = self._core
        if core is not None:
            core.probe_question(Question(pair, role, seq, fresh, asker), self.clock())
            self._pending = True  # flushed at the end of the hand-over batch

    def on_probe_answer(self, pair: str, role: str, seq: int, status: int, rtt: float) -> None:
        """Worker 0's answer to one of this worker's probes."""
        core = self._core
        if core is not None:
            core.probe_answer(ProbeAnswer(pair, role, seq, status, rtt, self.worker_index), self.clock())
            self._pending = True

    def set_maintenance(self, pair: str, role: str, on: bool) -> None:  # noqa: FBT001
        """The operator's maintenance of a member, here and in every other worker (ValueError: no such)."""
        core = self._core
        if core is None:
            raise ValueError("sipha is starting")
        core.set_maintenance(pair, role, on, self.clock())
        if self.handoff is not None:
            self.handoff.broadcast_maintenance(pair, role, on)
        self.flush()

    def on_maintenance(self, pair: str, role: str, on: bool) -> None:  # noqa: FBT001
        """Another worker's :meth:`set_maintenance`."""
        core = self._core
        if core is not None:
            with contextlib.suppress(ValueError):  # a pair this worker does not have (mid-reload)
                core.set_maintenance(pair, role, on, self.clock())
            self._pending = True

    def read_backlog(self) -> None:
        """The sockets' backlog, then what other workers already passed over."""
        super().read_backlog()
        handoff = self.handoff
        if handoff is not None:
            handoff.read(_HANDOFF_BACKLOG)

    # ------------------------------------------------------------------ output

    def flush(self) -> None:
        """The pair monitor's events first, then what the core sends, then the timer."""
        core = self._core
        if core is not None and core.events and self.transports is not None:
            for event in core.drain_events():
                self._on_event(event)
                self._pass_on(event, core)
        if core is not None and self.handoff is not None and core.probe_share_pending:
            self._carry_probes(core, self.handoff)
        if core is not None and core.aliases and self.transports is not None:
            for connection, host, port in core.drain_aliases():
                self.transports.alias(connection, host, port)
        if core is not None and (core.lookups or core.failed_targets):
            self._locate(core)
        if core is not None and core.admission.refused != self._refused_logged[1]:
            self._log_refused(core)
        super().flush()

    def _locate(self, core: ProxyCore) -> None:
        """RFC 3263: the core's lookups to the locator, and the targets it found failed."""
        lookups, failed = core.drain_lookups()
        locator = self.locator
        if locator is None:
            for lookup in lookups:
                core.located(lookup.key, (), self.clock())
            return
        for target in failed:
            locator.failed(target)
        for lookup in lookups:
            locator.locate(lookup)

    def on_located(self, key: int, targets: list[Address]) -> None:
        """The locator's answer to the core's lookup ``key``: the targets, in order (maybe none)."""
        core = self._core
        if core is None:
            return
        core.located(key, targets, self.clock())
        self.flush()

    def send(self, output: Outgoing, transports: Transports) -> None:
        """Count a final response; §18.2.2 when the connection is gone; another worker's connection."""
        if not isinstance(output, SendMessage):  # pragma: no cover - the core sends nothing else
            super().send(output, transports)
            return
        destination = output.destination
        message = output.message
        response = message if isinstance(message, Response) else None
        if response is not None and response.status >= FINAL and output.key is not None:
            # A final response of a server transaction (not one sent statelessly): one transaction
            # answered.
            # try/except, not contextlib.suppress: an interpreted object per final response.
            try:  # noqa: SIM105
                self._count_final(response.cseq.method, response.status)
            except SipParseError:
                pass
        elif response is None and self.probe_socket and self._is_probe(output.key, destination):
            data = message.to_bytes()
            transports.send_probe(data, destination)  # its Via names that socket
            if self.tracer is not None:
                self.tracer.sent(data, destination, probe=True)
            return
        if destination.reliable and not transports.has_connection(destination):
            fallback = destination
            if response is not None:
                # §18.2.2: the request's connection is gone: "the server SHOULD open a
                # connection to the IP address in the received parameter ... using the
                # port in the sent-by value".
                with contextlib.suppress(SipParseError):
                    fallback = response_fallback_destination(response.top_via, destination)
            holder = self._stream_holders.get(destination)
            if holder is not None and self.handoff is not None:
                # The connection is another worker's (the request was handed over from it).
                self.handoff.send_out(holder, message.to_bytes(), destination, fallback)
                return
            destination = fallback
        data = message.to_bytes()
        transports.send(data, destination)
        if self.tracer is not None:
            self.tracer.sent(data, destination)

    def _carry_probes(self, core: ProxyCore, handoff: Handoff) -> None:
        questions, answers = core.drain_probe_share()
        for question in questions:
            handoff.ask_probe(question.pair, question.role, question.seq, question.fresh)
        for answer in answers:
            probe = (answer.pair, answer.role, answer.seq)
            handoff.answer_probe(answer.asker, probe, answer.status, answer.rtt)

    def _is_probe(self, key: TransactionKey | None, destination: Address) -> bool:
        core = self._core
        return destination.transport == "UDP" and core is not None and core.is_probe(key)

    def _pass_on(self, event: HaEvent, core: ProxyCore) -> None:
        """Tell the other workers of a pair's switch or loss.

        A switch one worker decides holds for every worker (docs/design.md §5: one instance,
        whatever ``workers`` is); news that came from another worker is not passed on again.
        """
        handoff = self.handoff
        if handoff is None:
            return
        if isinstance(event, MemberBecameActive) and event.reason != "worker":
            handoff.broadcast_pair(event.pair, "active", event.member.role, event.at)
        elif isinstance(event, PairUnknown) and event.member is not None and event.reason != "worker":
            what = "gone" if core.gone(event.member) else "lost"
            handoff.broadcast_pair(event.pair, what, event.member.role, event.at)
