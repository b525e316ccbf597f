"""What the driver calls for each SIP message when ``[trace]`` is on: HEP export and the log trace.

:class:`MessageTracer` is the driver's :class:`sipha.net.driver.Tracer`: the driver
calls it with every message it hands to the transports and every message the
transports gave it, after the fact, so that tracing never delays a message.  It adds
what the driver does not know (the wall-clock time, the local address a message left
from) and passes the message to :class:`HepExporter` and/or the ``sipha.trace`` logger.

:class:`HepExporter` sends from a UDP socket of its own, non-blocking: a packet the
socket cannot take now (its buffer full, the collector unreachable) is dropped and
counted, never queued and never an error of the proxy (docs/tracing.md).
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Final, Protocol

from sipha.net.addr import parse_ip
from sipha.sip.address import Address
from sipha.trace.hep import encode

log = logging.getLogger("sipha.trace")
"""The log trace's logger: every message at INFO, whole (docs/tracing.md)."""
_status_log = logging.getLogger("sipha")

HEP_SEND_BUFFER: Final = 1024 * 1024
"""SO_SNDBUF of the HEP socket: a burst of a few hundred messages fits while the NIC drains it."""
_STREAM_PEERS_MAX: Final = 65536
"""Bound of the table of stream peers' local addresses (like the transports' address caches)."""
_BUFFER_FULL: Final = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS})
_WILDCARD: Final[dict[int, str]] = {socket.AF_INET: "0.0.0.0", socket.AF_INET6: "::"}  # noqa: S104


class LocalAddresses(Protocol):
    """What the tracer asks the transports (:class:`sipha.net.manager.TransportManager`)."""

    def local_address(self, transport: str, family: int = socket.AF_INET) -> Address:
        """The first listen address of ``transport`` and ``family``: where UDP messages leave from."""
        ...

    def open_probe_socket(self, family: int = socket.AF_INET) -> Address:
        """The pair monitor's own UDP socket of ``family`` (opened already when probes use it)."""
        ...


@dataclass
class HepCounters:
    """What the HEP export did, for /status and /metrics; kept across reloads."""

    sent: int = 0
    dropped: dict[str, int] = field(
        default_factory=lambda: {"buffer_full": 0, "send_error": 0, "unencodable": 0}
    )
    """Messages not exported, by reason: the socket's buffer was full; the send failed (the
    collector's port unreachable, no route); an address was no IP or the message too large."""


class HepExporter:
    """HEPv3 packets to one collector over UDP, from a connected non-blocking socket."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        target: str,
        capture_id: int,
        auth_key: bytes,
        counters: HepCounters,
    ) -> None:
        self.sock = sock
        self.target = target
        """The collector as configured (``udp:host:port``), for /status and the log."""
        self.capture_id = capture_id
        self.auth_key = auth_key
        self.counters = counters
        self._failures_logged: set[str] = set()

    @classmethod
    def open(
        cls, ip: str, port: int, *, target: str, capture_id: int, auth_key: bytes, counters: HepCounters
    ) -> HepExporter:
        """An exporter whose socket is connected to ``ip``:``port`` (OSError: no route, no such family)."""
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)  # noqa: FBT003 - the socket API
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, HEP_SEND_BUFFER)
            sock.connect((ip, port))
        except BaseException:
            sock.close()
            raise
        return cls(sock, target=target, capture_id=capture_id, auth_key=auth_key, counters=counters)

    def export(self, payload: bytes, source: Address, destination: Address, time_ns: int) -> None:
        """Send one message's HEP packet now, or drop and count it."""
        counters = self.counters
        try:
            packet = encode(
                payload, source, destination, time_ns, capture_id=self.capture_id, auth_key=self.auth_key
            )
        except ValueError as error:
            counters.dropped["unencodable"] += 1
            self._log_first("unencodable", str(error))
            return
        try:
            self.sock.send(packet)
        except OSError as error:
            # A connected UDP socket reports an ICMP error (port unreachable) on the next send.
            reason = "buffer_full" if error.errno in _BUFFER_FULL else "send_error"
            counters.dropped[reason] += 1
            self._log_first(reason, error.strerror or str(error))
            return
        counters.sent += 1

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def _log_first(self, reason: str, text: str) -> None:
        """The first drop of each kind is logged; the others are counted (sipha_trace_hep_dropped)."""
        if reason in self._failures_logged:
            return
        self._failures_logged.add(reason)
        _status_log.warning(
            "trace: HEP to %s: a message not exported (%s: %s); further ones are only counted",
            self.target,
            reason,
            text,
        )


class MessageTracer:
    """The driver's tracer: each message to the HEP exporter and/or the log, with both addresses."""

    __slots__ = ("_probe_locals", "_stream_locals", "_udp_locals", "exporter", "log", "transports")

    def __init__(self, transports: LocalAddresses, exporter: HepExporter | None, *, log: bool) -> None:
        self.transports = transports
        self.exporter = exporter
        self.log = log
        self._udp_locals: dict[int, Address] = {}
        self._probe_locals: dict[int, Address] = {}
        self._stream_locals: dict[tuple[str, str, int], Address] = {}
        """Stream peer (transport, IP, port) -> the local address of its connection, as seen on
        what it sent us; what we send to it left from there too (docs/tracing.md)."""

    def received(self, data: bytes, source: Address, local: Address) -> None:
        """A message the transports gave the driver: from ``source``, to ``local``."""
        now = time.time_ns()
        if source.transport != "UDP":
            peers = self._stream_locals
            if len(peers) >= _STREAM_PEERS_MAX:
                peers.clear()
            peers[_peer_key(source)] = local
        exporter = self.exporter
        if exporter is not None:
            exporter.export(data, source, local, now)
        if self.log:
            log_message("received from", data, source, "on", local)

    def sent(self, data: bytes, destination: Address, *, probe: bool = False) -> None:
        """A message the driver handed to the transports for ``destination`` (``probe``: the monitor's)."""
        now = time.time_ns()
        local = self.local_for(destination, probe=probe)
        exporter = self.exporter
        if exporter is not None:
            exporter.export(data, local, destination, now)
        if self.log:
            log_message("sent to", data, destination, "from", local)

    def local_for(self, destination: Address, *, probe: bool = False) -> Address:
        """The address a message to ``destination`` leaves from.

        UDP: the socket the transports send from (the first UDP listen address of the
        destination's family, or the pair monitor's socket for a probe).  TCP/TLS: the
        connection's local address once the peer has sent on it; before that (a connection
        sipha opens, until the first answer) the listen address of that transport, as
        Kamailio's siptrace reports every stream message.
        """
        transport = destination.transport.upper()
        parsed = parse_ip(destination.host)
        family = socket.AF_INET if parsed is None else parsed[0]
        if transport == "UDP":
            cache = self._probe_locals if probe else self._udp_locals
            local = cache.get(family)
            if local is None:
                local = cache[family] = self._socket_address(family, probe=probe)
            return local
        if parsed is not None:
            known = self._stream_locals.get((transport, parsed[1], destination.port))
            if known is not None:
                return known
        try:
            return self.transports.local_address(transport, family)
        except LookupError:
            return Address(transport, _WILDCARD.get(family, "0.0.0.0"), 0)  # noqa: S104

    def _socket_address(self, family: int, *, probe: bool) -> Address:
        try:
            if probe:
                return self.transports.open_probe_socket(family)
            return self.transports.local_address("UDP", family)
        except (LookupError, RuntimeError, OSError):
            return Address("UDP", _WILDCARD.get(family, "0.0.0.0"), 0)  # noqa: S104


def _peer_key(address: Address) -> tuple[str, str, int]:
    parsed = parse_ip(address.host)
    return address.transport.upper(), address.host if parsed is None else parsed[1], address.port


def address_text(address: Address) -> str:
    """``udp:127.0.0.1:5060``, ``tcp:[::1]:5060``."""
    host = f"[{address.host}]" if ":" in address.host and not address.host.startswith("[") else address.host
    return f"{address.transport.lower()}:{host}:{address.port}"


def log_message(direction: str, data: bytes, peer: Address, relation: str, local: Address) -> None:
    """One message in the log, whole: where it went or came from, then its text (docs/tracing.md)."""
    if not log.isEnabledFor(logging.INFO):
        return
    text = data.decode("utf-8", "replace").replace("\r\n", "\n").rstrip("\n")
    log.info(
        "SIP %s %s %s %s (%d bytes):\n%s",
        direction,
        address_text(peer),
        relation,
        address_text(local),
        len(data),
        text,
    )
