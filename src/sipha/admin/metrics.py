"""/metrics: a Prometheus collector that reads the live state at scrape time.

Nothing is counted per message for this: the core's :class:`~sipha.proxy.core.Counters`,
the pair monitor's status and :class:`~sipha.admin.telemetry.Telemetry` are read
when Prometheus scrapes, through an :class:`~sipha.admin.instance.Instance`: with
``[proxy] workers``, the sums over the workers, and ``sipha_worker_*`` per worker
(docs/design.md §4).  The collector lives in its own
:class:`~prometheus_client.CollectorRegistry` (not the process-wide default).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from sipha import __version__
from sipha.admin.instance import Instance, local_instance
from sipha.admin.status import AdminSource, address_text

_STATES = ("active", "takeover", "unknown", "out-of-service")
_COUNTER_HELP = {
    "requests_in": "SIP requests received (parsed)",
    "responses_in": "SIP responses received (parsed)",
    "parse_errors": "messages refused as malformed (RFC 3261 §16.3 step 1)",
    "requests_refused": "requests the proxy itself answered with a failure (e.g. 503: no active member)",
    "requests_forwarded": "requests forwarded to a next hop",
    "responses_forwarded": "responses relayed upstream",
    "stray_responses_dropped": "responses that matched no transaction and were dropped",
    "loops_detected": "requests refused as looping (482)",
    "reoffered": "ringing INVITEs moved from a member that died to the member that took over",
    "overload_sheds": "new INVITEs from endpoints answered 503 because sipha was behind on a receive queue",
    "overload_drops": "new INVITEs from untrusted endpoints dropped unparsed because sipha was far behind",
    "transactions_refused": "requests answered 503 without a transaction at [limits] max-transactions",
}


class SiphaCollector(Collector):
    """Every sipha metric, computed from the app's state when collected."""

    def __init__(self, source: AdminSource, instance: Instance | None = None) -> None:
        self.source = source
        self.instance = instance
        """The counters to report (gathered over the workers); None: this process's, when collected."""

    def collect(self) -> Iterator[Metric]:
        """Yield the metric families (called by prometheus_client at scrape time)."""
        source = self.source
        instance = local_instance(source) if self.instance is None else self.instance
        totals = instance.totals["counters"]
        info = InfoMetricFamily("sipha_build", "sipha version")
        info.add_metric([], {"version": __version__})
        yield info
        started = source.started_at
        yield GaugeMetricFamily(
            "sipha_uptime_seconds",
            "seconds since the proxy started",
            value=0.0 if started is None else source.monotonic() - started,
        )
        yield GaugeMetricFamily(
            "sipha_transactions_in_flight",
            "SIP transactions (client and server) alive in the transaction layer",
            value=instance.totals["gauges"].get("transactions_in_flight", 0),
        )
        transactions = CounterMetricFamily(
            "sipha_transactions",
            "transactions answered upstream, by method and final response class "
            "(final responses sent by server transactions)",
            labels=["method", "class"],
        )
        for key, count in sorted(totals["transactions"].items()):
            method, _, klass = key.rpartition(" ")
            transactions.add_metric([method, klass], count)
        yield transactions
        for name, value in totals["core"].items():
            if name != "overload_rejections":
                yield CounterMetricFamily(
                    f"sipha_{name}", _COUNTER_HELP.get(name, name.replace("_", " ")), value=value
                )
        yield CounterMetricFamily(
            "sipha_overload_rejections",
            "new INVITEs refused with 503 by overload-ctrl-dialog-rate",
            value=totals["core"].get("overload_rejections", 0),
        )
        yield from self._transport(instance)
        yield from self._tls(instance)
        yield from self._trace(instance)
        yield from self._pairs(totals["takeover_requests_rejected"])
        yield from self._workers(instance)

    def _workers(self, instance: Instance) -> Iterator[Metric]:
        """Per worker of ``[proxy] workers`` (on worker 0's admin HTTP): is it answering, its share."""
        if not instance.workers:
            return
        count = len(instance.workers)
        yield GaugeMetricFamily("sipha_workers", "worker processes of this instance", value=count)
        up = GaugeMetricFamily(
            "sipha_worker_up",
            "1 when the worker gave its counters for this scrape; 0: the sums use the last it gave",
            labels=["worker"],
        )
        requests = CounterMetricFamily(
            "sipha_worker_requests_in", "SIP requests received (parsed) by each worker", labels=["worker"]
        )
        in_flight = GaugeMetricFamily(
            "sipha_worker_transactions_in_flight", "SIP transactions alive in each worker", labels=["worker"]
        )
        for report in instance.workers:
            label = [str(report.index)]
            up.add_metric(label, int(report.answered))
            if report.snapshot is not None:
                requests.add_metric(label, report.snapshot["counters"]["core"].get("requests_in", 0))
                in_flight.add_metric(label, report.snapshot["gauges"].get("transactions_in_flight", 0))
        yield from (up, requests, in_flight)

    def _transport(self, instance: Instance) -> Iterator[Metric]:
        counters = dict(instance.totals["counters"]["transport"])
        open_now = instance.totals["gauges"].get("connections_open", 0)
        for name in [name for name in counters if name.startswith("tls_")]:
            del counters[name]  # sipha_tls_* (below) shows them, by outcome
        yield GaugeMetricFamily("sipha_transport_connections_open", "stream connections open", value=open_now)
        family = CounterMetricFamily(
            "sipha_transport_events",
            "transport counters: datagrams and bytes in/out, UDP send queueing and drops, ICMP "
            "errors, stream messages, connections, framing errors; with workers, datagrams handed "
            "over between them (handoff_drops: lost, the owner's buffer full); [limits]: messages dropped "
            "unanswered (scanner_requests, source_rate_limited), connections closed (message_timeouts, "
            "connections_evicted)",
            labels=["counter"],
        )
        for name, value in sorted(counters.items()):
            family.add_metric([name], value)
        yield family

    def _tls(self, instance: Instance) -> Iterator[Metric]:
        tls = self.source.tls_status()
        if tls is None:
            return
        yield GaugeMetricFamily(
            "sipha_tls_connections_open",
            "TLS connections open (handshaking included)",
            value=instance.totals["gauges"].get("tls_connections_open", 0),
        )
        handshakes = CounterMetricFamily(
            "sipha_tls_handshakes",
            "TLS handshakes by outcome, both directions: ok, verify_failed (the peer's certificate), "
            "peer_refused (the peer's alert), not_tls (plaintext on a TLS port), closed, timeout, error",
            labels=["outcome"],
        )
        for outcome, count in sorted(instance.totals["counters"]["tls_handshakes"].items()):
            handshakes.add_metric([outcome], count)
        yield handshakes
        certificate = tls.get("certificate")
        if certificate is not None:
            yield GaugeMetricFamily(
                "sipha_tls_certificate_expiry_timestamp_seconds",
                "Unix time at which this instance's certificate expires (not after)",
                value=certificate["not_after_timestamp"],
            )

    def _trace(self, instance: Instance) -> Iterator[Metric]:
        trace = instance.totals["counters"]
        yield CounterMetricFamily(
            "sipha_trace_hep_sent", "SIP messages sent as HEP packets to [trace] hep", value=trace["hep_sent"]
        )
        dropped = CounterMetricFamily(
            "sipha_trace_hep_dropped",
            "SIP messages not sent to [trace] hep: buffer_full (the socket's buffer), send_error "
            "(e.g. the collector's port unreachable), unencodable (an address not an IP, over 64 KiB)",
            labels=["reason"],
        )
        for reason, count in sorted(trace["hep_dropped"].items()):
            dropped.add_metric([reason], count)
        yield dropped

    def _pairs(self, claims_rejected: dict[str, int]) -> Iterator[Metric]:
        """The pairs as worker 0, the prober, sees them; ``claims_rejected``: summed over the workers."""
        core = self.source.core
        monitor = None if core is None else core.monitor
        labels = ["pair", "member", "address"]
        active = GaugeMetricFamily(
            "sipha_pair_active_member", "1 for the active member of each pair, else 0", labels=labels
        )
        up = GaugeMetricFamily("sipha_pair_up", "1 when the pair has an active member", labels=["pair"])
        state = GaugeMetricFamily(
            "sipha_pair_state", "1 for the pair's current state, else 0", labels=["pair", "state"]
        )
        split = GaugeMetricFamily(
            "sipha_pair_split_brain", "1 while both members act as primary", labels=["pair"]
        )
        changed = GaugeMetricFamily(
            "sipha_pair_last_change_timestamp_seconds",
            "Unix time of the last change of state or active member",
            labels=["pair"],
        )
        switchovers = CounterMetricFamily(
            "sipha_pair_switchovers", "times the active member changed", labels=["pair"]
        )
        sent = CounterMetricFamily("sipha_pair_options_sent", "OPTIONS probes sent", labels=["pair"])
        answered = CounterMetricFamily(
            "sipha_pair_options_answered", "OPTIONS probes answered with an alive code", labels=["pair"]
        )
        failed = CounterMetricFamily(
            "sipha_pair_options_failed",
            "OPTIONS probes answered outside alive-codes, timed out or failed",
            labels=["pair"],
        )
        claims = CounterMetricFamily(
            "sipha_pair_takeover_requests_rejected",
            "requests from the member that was not active, not followed: it did not answer OPTIONS "
            "alive (forged, or sent in backup mode)",
            labels=["pair"],
        )
        last_rtt = GaugeMetricFamily(
            "sipha_pair_options_last_rtt_seconds",
            "round trip of the member's last answered OPTIONS",
            labels=["pair", "member"],
        )
        rtt = HistogramMetricFamily(
            "sipha_pair_options_rtt_seconds", "OPTIONS round trips", labels=["pair", "member"]
        )
        unreachable = GaugeMetricFamily(
            "sipha_pair_member_transport_error",
            "1 while the transport cannot reach the member (its last TLS handshake failed; the "
            "reason is in /status and the log)",
            labels=["pair", "member", "address"],
        )
        maintenance = GaugeMetricFamily(
            "sipha_pair_member_maintenance",
            "1 while the operator keeps the member in maintenance (sipha ctl member)",
            labels=["pair", "member", "address"],
        )
        serving = GaugeMetricFamily(
            "sipha_pair_member_serving",
            "1 for the members new calls go to: the active one; an active-active pair's that answer",
            labels=["pair", "member", "address"],
        )
        mode = GaugeMetricFamily("sipha_pair_mode", "1 for the pair's mode", labels=["pair", "mode"])
        if monitor is not None:
            now = self.source.monotonic()
            wall = time.time()
            for name, pair in monitor.pairs.items():
                status = pair.status()
                for member in pair.members():
                    is_active = member == status.active
                    where = address_text(member.address)
                    active.add_metric([name, member.role, where], int(is_active))
                    problem = self.source.member_problem(member.address)
                    unreachable.add_metric([name, member.role, where], int(problem is not None))
                    maintenance.add_metric([name, member.role, where], int(member.role in status.maintenance))
                    takes = member.role in status.spread if status.mode == "active-active" else is_active
                    serving.add_metric([name, member.role, where], int(takes))
                    seconds = status.last_rtt.get(member.role)
                    if seconds is not None:
                        last_rtt.add_metric([name, member.role], seconds)
                    histogram = self.source.telemetry.rtt.get((name, member.role))
                    if histogram is not None:
                        rtt.add_metric(
                            [name, member.role], buckets=histogram.cumulative(), sum_value=histogram.total
                        )
                up.add_metric([name], int(status.active is not None))
                mode.add_metric([name, status.mode], 1)
                for value in _STATES:
                    state.add_metric([name, value], int(status.state == value))
                split.add_metric([name], int(status.split_brain))
                if status.since is not None:
                    changed.add_metric([name], wall - (now - status.since))
                switchovers.add_metric([name], status.counters.switchovers)
                sent.add_metric([name], status.counters.probes_sent)
                answered.add_metric([name], status.counters.probes_answered)
                failed.add_metric([name], status.counters.probes_failed)
                claims.add_metric([name], claims_rejected.get(name, status.counters.claims_rejected))
        yield from (active, up, state, split, changed, switchovers, sent, answered, failed, claims)
        yield from (last_rtt, rtt, unreachable, maintenance, serving, mode)


def build_registry(source: AdminSource, instance: Instance | None = None) -> CollectorRegistry:
    """A registry of its own holding the sipha collector (``instance``: see :class:`SiphaCollector`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SiphaCollector(source, instance))
    return registry
