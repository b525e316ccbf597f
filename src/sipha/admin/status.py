"""The /status and /healthz content, read from the running app at request time.

With ``[proxy] workers``, the counters are the instance's (:mod:`sipha.admin.instance`).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from sipha import __version__
from sipha.admin.instance import Instance, InstanceSource, WorkerReport, local_instance
from sipha.admin.telemetry import iso
from sipha.ha import Member
from sipha.sip.address import Address


class AdminSource(InstanceSource, Protocol):
    """What the admin surface reads, and what it may ask: :class:`sipha.app.ProxyApp` provides it.

    Asking (``POST /reload``, ``POST /drain``, :mod:`sipha.admin.control`) goes through the
    same methods as SIGHUP and SIGTERM, so the admin HTTP can do nothing a signal cannot.
    """

    @property
    def listen_addresses(self) -> list[Address]:
        """The bound SIP listen addresses."""
        ...

    def member_problem(self, address: Address) -> str | None:
        """Why the transport cannot reach this member now (a failed TLS handshake), or None."""
        ...

    async def reload(self) -> bool:
        """SIGHUP: re-read the configuration file and apply it; False when refused.

        What it did (changes, or problems) is then in ``telemetry.last_reload``.
        """
        ...

    async def drain_and_stop(self, limit: float = ...) -> None:
        """SIGTERM: new out-of-dialog requests get 503; stop once what is under way is done."""
        ...

    def set_maintenance(self, pair: str, role: str, on: bool) -> None:  # noqa: FBT001
        """``POST /member``: ``role`` of ``pair`` in maintenance or back to auto (ValueError: no such)."""
        ...


class DemoControl(Protocol):
    """``sipha demo``'s hooks: the switchover button and what the demo does."""

    def switch(self) -> dict[str, Any]:
        """Swap the simulated servers' modes; returns what was done."""
        ...

    def status(self) -> dict[str, Any]:
        """The simulated servers' modes and the demo traffic counts."""
        ...


def address_text(address: Address) -> str:
    """``udp:127.0.0.1:5070`` (IPv6 hosts in brackets)."""
    host = f"[{address.host}]" if ":" in address.host else address.host
    return f"{address.transport.lower()}:{host}:{address.port}"


def _member(member: Member) -> str:
    return address_text(member.address)


def wall_time(source: AdminSource, monotonic: float | None) -> str | None:
    """A monitor (loop clock) time as wall-clock ISO 8601, or None."""
    if monotonic is None:
        return None
    return iso(time.time() - (source.monotonic() - monotonic))


def health(source: AdminSource) -> tuple[bool, list[str]]:
    """(every pair has an active member, the names of the pairs without one)."""
    core = source.core
    if core is None or core.monitor is None:
        return False, []
    down = [name for name, pair in core.monitor.pairs.items() if pair.active is None]
    return not down, down


def pairs_status(source: AdminSource) -> list[dict[str, Any]]:
    """One entry per pair: members, the active one, state, RTTs, last change, split brain, counters."""
    core = source.core
    if core is None or core.monitor is None:
        return []
    out: list[dict[str, Any]] = []
    for name, pair in core.monitor.pairs.items():
        status = pair.status()
        active = status.active
        members = []
        for member in pair.members():
            rtt = status.last_rtt.get(member.role)
            members.append(
                {
                    "role": member.role,
                    "address": _member(member),
                    "active": member == active,
                    "last_rtt_ms": None if rtt is None else round(rtt * 1000, 3),
                    "transport_error": source.member_problem(member.address),
                    "maintenance": member.role in status.maintenance,
                    "answering": member.role in status.answering,  # active-active (docs/design.md §2.2)
                    "serving": member.role in status.spread if status.spread else member == active,
                }
            )
        out.append(
            {
                "name": name,
                "state": status.state,
                "active": None if active is None else active.role,
                "active_address": None if active is None else _member(active),
                "members": members,
                "monitoring": status.monitoring,
                "last_change": wall_time(source, status.since),
                "split_brain": status.split_brain,
                "split_brain_since": wall_time(source, status.split_brain_since),
                "maintenance": list(status.maintenance),
                "mode": status.mode,
                "spread": list(status.spread),
                "counters": {
                    "options_sent": status.counters.probes_sent,
                    "options_answered": status.counters.probes_answered,
                    "options_failed": status.counters.probes_failed,
                    "switchovers": status.counters.switchovers,
                },
            }
        )
    return out


def transactions_list(by_key: dict[str, int]) -> list[dict[str, Any]]:
    """``{"INVITE 2xx": 3}`` -> ``[{"method": "INVITE", "class": "2xx", "count": 3}]``, sorted."""
    out = []
    for key, count in sorted(by_key.items()):
        method, _, klass = key.rpartition(" ")
        out.append({"method": method, "class": klass, "count": count})
    return out


def _worker(report: WorkerReport) -> dict[str, Any]:
    """One entry of ``workers``: what that worker counted (the last it said, if it did not answer)."""
    snapshot = report.snapshot or {}
    counters = snapshot.get("counters") or {}
    transport = counters.get("transport") or {}
    return {
        "worker": report.index,
        "pid": snapshot.get("pid"),
        "answered": report.answered,
        "uptime": snapshot.get("uptime"),
        "draining": snapshot.get("draining"),
        "transactions_in_flight": (snapshot.get("gauges") or {}).get("transactions_in_flight"),
        "counters": counters.get("core") or {},
        "transactions": transactions_list(counters.get("transactions") or {}),
        "handoff": {name: transport.get(f"handoff_{name}", 0) for name in ("out", "in", "drops")},
    }


def build_status(
    source: AdminSource, demo: DemoControl | None = None, instance: Instance | None = None
) -> dict[str, Any]:
    """The whole /status document; ``instance``: gathered over the workers (else this process's)."""
    instance = local_instance(source) if instance is None else instance
    totals = instance.totals
    counters = totals["counters"]
    healthy, down = health(source)
    started = source.started_at
    tls = source.tls_status()
    if tls is not None:
        tls["connections_open"] = totals["gauges"].get("tls_connections_open", 0)
        tls["handshakes"] = counters["tls_handshakes"]
    trace = source.trace.status()
    trace.update(hep_sent=counters["hep_sent"], hep_dropped=counters["hep_dropped"])
    document: dict[str, Any] = {
        "version": __version__,
        "time": iso(time.time()),
        "uptime": 0.0 if started is None else round(source.monotonic() - started, 3),
        "scope": instance.scope,
        "healthy": healthy,
        "pairs_without_active_member": down,
        "listen": [address_text(address) for address in source.listen_addresses],
        "transactions_in_flight": totals["gauges"].get("transactions_in_flight", 0),
        "draining": instance.draining,
        "counters": counters["core"],
        "transactions": transactions_list(counters["transactions"]),
        "workers": [_worker(report) for report in instance.workers],
        "pairs": pairs_status(source),
        "tls": tls,
        "trace": trace,
        "events": list(source.telemetry.events),
        "demo": None if demo is None else demo.status(),
    }
    return document
