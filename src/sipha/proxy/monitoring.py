"""The proxy core's side of the pair monitor (docs/design.md §2): probes out, news in.

:class:`MonitorLink` turns the monitor's :class:`~sipha.ha.Probe` actions into
real OPTIONS transactions and feeds their results back; tells the monitor of
requests from members and of what the other workers saw; and applies the
monitor's events: the routing view's active members, then the failover policy's
consequences (held requests released, ringing calls of a lost member ended,
holds of a pair out of service ended).
"""

from __future__ import annotations

from collections.abc import Callable

from sipha.ha import (
    HaEvent,
    Member,
    MemberBecameActive,
    Monitor,
    PairOutOfService,
    PairUnknown,
    Probe,
    State,
    build_options,
)
from sipha.proxy.failover import FailoverPolicy
from sipha.proxy.probeshare import FAILED, ProbeDelegate, ProbeServer
from sipha.proxy.routing import is_keepalive
from sipha.proxy.rules import MAGIC_COOKIE
from sipha.proxy.settings import ProxySettings
from sipha.sip import Request, SipUri
from sipha.sip.address import Address
from sipha.txn import (
    Output,
    ResponseReceived,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    TransportError,
)
from sipha.txn.keys import TransactionKey


class MonitorLink:
    """Probes as transactions, and the monitor's news applied to the view and the policy."""

    def __init__(
        self,
        policy: FailoverPolicy,
        txn: TransactionLayer,
        settings: ProxySettings,
        record_route: SipUri,
        token: Callable[[], str],
    ) -> None:
        self.policy = policy
        self.txn = txn
        self.settings = settings
        self.token = token
        self.probes: dict[TransactionKey, Probe] = {}
        """The OPTIONS transactions under way, and the probe each one is."""
        self.events: list[HaEvent] = []
        """The monitor's events since the core's last ``drain_events``, for the log."""
        # The member whose failure made each pair unknown, until another member takes over.
        self.suspected: dict[str, Member] = {}
        self.probe_from = _probe_from(record_route)
        self.delegate: ProbeDelegate | None = None
        """Set in a worker other than 0 of ``[proxy] workers``: its probes are asked of worker 0."""
        self.server: ProbeServer | None = None
        """Set in worker 0 of ``[proxy] workers``: it answers the other workers' probes."""
        self.probe_ports: dict[str, int] = {}
        """Per transport, the port of the socket the probes leave from when it is not the
        listen port (UDP: the monitor's own socket, docs/design.md §2): their Via names it,
        so that their answers come back there."""

    @property
    def monitor(self) -> Monitor | None:
        """The pair monitor (the policy's: one reference, replaced on reload)."""
        return self.policy.monitor

    def reconfigure(
        self, settings: ProxySettings, record_route: SipUri, old: Monitor | None, now: float
    ) -> None:
        """SIGHUP, after the policy got the new monitor and view: keep what was carried over.

        Probes of pairs whose monitor was not carried over are forgotten (their answers are
        dropped); the new monitor's pairs not started yet are started here (unknown, first
        probe now); a suspicion only stands for a pair whose monitor state was carried over.
        """
        self.settings = settings
        self.probe_from = _probe_from(record_route)
        monitor = self.monitor
        for key, probe in list(self.probes.items()):
            old_pair = None if old is None else old.pairs.get(probe.pair)
            if monitor is None or monitor.pairs.get(probe.pair) is not old_pair:
                del self.probes[key]
        if monitor is not None:
            for pair in monitor.pairs.values():
                if pair.state is State.INITIAL:
                    pair.start(now)
            self.policy.view.active.update(monitor.active_table())
        self.suspected = {
            name: member
            for name, member in self.suspected.items()
            if monitor is not None and old is not None and monitor.pairs.get(name) is old.pairs.get(name)
        }

    # ------------------------------------------------------------------ news in

    def note_request_from(self, request: Request, member_source: Address, now: float) -> None:
        """docs/design.md §2: a request from the inactive member makes it active at once.

        Keepalive OPTIONS to the proxy itself are not traffic for the pair and do not count.
        """
        monitor = self.monitor
        view = self.policy.view
        if monitor is None or view.member_at(member_source.host, member_source.port) is None:
            return  # most requests: from user agents, not from a pair member (the view knows)
        if is_keepalive(request, view):
            return
        if monitor.request_from(member_source.host, member_source.port, now) is not None:
            self.pump(now)  # else not from a member: no pair was told anything

    def pair_news(self, pair: str, what: str, role: str, at: float, now: float) -> None:
        """What another worker of this instance saw happen to a pair at ``at`` (see ProxyCore.pair_news)."""
        monitor = self.monitor
        pair_monitor = None if monitor is None else monitor.pairs.get(pair)
        if monitor is None or pair_monitor is None:
            return
        members = {member.role: member for member in pair_monitor.members()}
        member = members.get(role)
        if member is None:
            return
        if what == "active":
            monitor.peer_active(member, at, now)
        elif what in ("lost", "gone"):
            if what == "gone":
                unreachable = self.policy.unreachable
                unreachable[member] = max(at, unreachable.get(member, at))
            monitor.peer_lost(member, at, now)

    def probe_output(self, output: Output, now: float) -> bool:
        """Feed the monitor what concerns a probe; True when ``output`` was a probe's."""
        monitor = self.monitor
        if monitor is None:
            return False
        if isinstance(output, ResponseReceived):
            key = output.transaction.key
            probe = self.probes.get(key)
            if probe is None:
                return False
            # Any answer to an OPTIONS shows the member is alive (docs/design.md §2: a member that
            # answered anything since a request went unanswered is alive).
            self.policy.heard[probe.member] = now
            status = output.response.status
            if probe.seq >= 0:
                monitor.probe_answered(probe, status, now)
            if self.server is not None and status >= 200:  # noqa: PLR2004 - a final response
                self.server.settled(probe.member, status, now - probe.sent_at, now, key)
        elif isinstance(output, TransactionTimeout | TransportError):
            key = output.transaction.key
            probe = self.probes.get(key)
            if probe is None:
                return False
            if probe.seq >= 0:
                monitor.probe_failed(probe, now)
            if self.server is not None:
                self.server.settled(probe.member, FAILED, 0.0, now, key)
        elif isinstance(output, TransactionTerminated):
            if self.probes.pop(output.transaction.key, None) is None:
                return False
        else:
            return False
        return True

    def transport_error(self, destination: Address, now: float) -> None:
        """The transport could not reach ``destination``: its probes failed (§17.1.4)."""
        for key, probe in list(self.probes.items()):
            if probe.member.address == destination:
                self.txn.transport_error(key, now)

    # ------------------------------------------------------------------ probes out, news applied

    def pump(self, now: float) -> None:
        """Send the monitor's probes; apply its events to the routing view, then to the policy."""
        monitor = self.monitor
        if monitor is None or not monitor.pending():
            return  # the usual case: nothing to send, nothing changed
        changed = False
        failed: list[tuple[Member, bool]] = []
        out_of_service: list[str] = []
        policy = self.policy
        for output in monitor.drain():
            if isinstance(output, Probe):
                self._send_probe(output, now)
                continue
            self.events.append(output)
            changed = True
            if isinstance(output, PairUnknown) and output.member is not None:
                # Suspected only: a lost OPTIONS must not end calls.  Confirmed when the
                # other member takes over, or when the pair goes out of service.
                self.suspected[output.pair] = output.member
            elif isinstance(output, MemberBecameActive):
                gone = self.suspected.pop(output.pair, None) or output.previous
                if gone is not None and gone != output.member:
                    # Gone for sure when the other member took over by a request, or when a
                    # transport error is the last thing heard from it.
                    failed.append((gone, output.reason == "request" or policy.gone(gone)))
            elif isinstance(output, PairOutOfService):
                out_of_service.append(output.pair)
                gone = self.suspected.pop(output.pair, None)
                if gone is not None:
                    failed.append((gone, False))
        if changed:
            policy.view.active.update(monitor.active_table())
            policy.release_held(now)
            for member, dead in failed:
                policy.end_ringing_on(member, now, gone=dead)
            for pair in out_of_service:
                policy.out_of_service(pair, now)  # 40001: the caller gets 503 now

    def _send_probe(self, probe: Probe, now: float) -> None:
        """A real OPTIONS through the transaction layer (RFC 3261 §11), fresh ids each.

        In a worker other than 0 of ``[proxy] workers``, a question to worker 0 instead
        (:mod:`sipha.proxy.probeshare`: one prober per instance).
        """
        if self.delegate is not None:
            self.delegate.ask(probe, now)
            return
        self.probes[self._send_options(probe.member, probe.seq, now)] = probe
        if self.server is not None:
            self.server.sent(probe.member)

    def serve_options(self, member: Member, now: float) -> TransactionKey:
        """An OPTIONS to ``member`` only to answer other workers' probes (worker 0)."""
        key = self._send_options(member, 1, now)
        self.probes[key] = Probe(member.pair, member, -1, now)  # seq -1: no probe of our monitor
        return key

    def _send_options(self, member: Member, seq: int, now: float) -> TransactionKey:
        address = member.address
        transport = address.transport.upper()
        via = self.settings.via
        host, port = via.get(transport) or next(iter(via.values()))
        port = self.probe_ports.get(transport, port)
        token = self.token()
        options = build_options(
            address,
            self.probe_from,
            host,
            port,
            transport,
            call_id=f"{token}.probe@{host.strip('[]')}",
            branch=f"{MAGIC_COOKIE}{token}.probe{self.settings.branch_tag}",
            from_tag=token,
            cseq=seq,
        )
        return self.txn.send_request(options, address, now).key


def _probe_from(record_route: SipUri) -> str:
    """The From URI of our probes: the Record-Route host and port, user ``sipha``."""
    port = f":{record_route.port}" if record_route.port else ""
    return f"sip:sipha@{record_route.host}{port}"
