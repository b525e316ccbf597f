"""The /status and /healthz content, read from the running app at request time."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Protocol

from sipha import __version__
from sipha.admin.telemetry import Telemetry, iso
from sipha.ha import Member
from sipha.proxy.core import ProxyCore
from sipha.sip.address import Address
from sipha.trace.export import Tracing


class AdminSource(Protocol):
    """What the admin surface reads, and what it may ask: :class:`sipha.app.ProxyApp` provides it.

    Asking (``POST /reload``, ``POST /drain``, :mod:`sipha.admin.control`) goes through the
    same methods as SIGHUP and SIGTERM, so the admin HTTP can do nothing a signal cannot.
    """

    core: ProxyCore | None
    telemetry: Telemetry
    trace: Tracing

    @property
    def listen_addresses(self) -> list[Address]:
        """The bound SIP listen addresses."""
        ...

    def monotonic(self) -> float:
        """The clock the core runs on (the loop's)."""
        ...

    def transport_counters(self) -> dict[str, int]:
        """The transports' counters by name (datagrams, bytes, ICMP errors, connections...)."""
        ...

    @property
    def started_at(self) -> float | None:
        """:meth:`monotonic` time of the start, None before."""
        ...

    def member_problem(self, address: Address) -> str | None:
        """Why the transport cannot reach this member now (a failed TLS handshake), or None."""
        ...

    def tls_status(self) -> dict[str, Any] | None:
        """TLS connections, handshakes by outcome and the certificate's dates; None without TLS."""
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
                "counters": {
                    "options_sent": status.counters.probes_sent,
                    "options_answered": status.counters.probes_answered,
                    "options_failed": status.counters.probes_failed,
                    "switchovers": status.counters.switchovers,
                },
            }
        )
    return out


def build_status(source: AdminSource, demo: DemoControl | None = None) -> dict[str, Any]:
    """The whole /status document."""
    core = source.core
    healthy, down = health(source)
    counters: dict[str, int] = {}
    in_flight = 0
    if core is not None:
        counters = {f.name: getattr(core.counters, f.name) for f in dataclasses.fields(core.counters)}
        in_flight = len(core.txn)
    counters.setdefault("overload_rejections", source.telemetry.overload_rejections)
    started = source.started_at
    document: dict[str, Any] = {
        "version": __version__,
        "time": iso(time.time()),
        "uptime": 0.0 if started is None else round(source.monotonic() - started, 3),
        "healthy": healthy,
        "pairs_without_active_member": down,
        "listen": [address_text(address) for address in source.listen_addresses],
        "transactions_in_flight": in_flight,
        "draining": core is not None and core.draining,
        "counters": counters,
        "transactions": [
            {"method": method, "class": klass, "count": count}
            for (method, klass), count in sorted(source.telemetry.transactions.items())
        ],
        "pairs": pairs_status(source),
        "tls": source.tls_status(),
        "trace": source.trace.status(),
        "events": list(source.telemetry.events),
        "demo": None if demo is None else demo.status(),
    }
    return document
