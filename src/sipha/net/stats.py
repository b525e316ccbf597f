"""Transport counters, plain integers bumped in place (read by the metrics endpoint later).

Compiled with the datagram path (setup.py ``IO_COMPILED``): each datagram bumps two or three
of them, and an interpreted object's attribute costs compiled code a generic look-up (about
1,000 instructions) where a compiled one is a field of a struct.  Not ``slots=True``: that
makes the dataclass decorator build a new class, which a compiled class cannot be.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class TransportStats:
    """Monotonic counters, except ``connections_open`` and ``tls_connections_open``: gauges."""

    datagrams_in: int = 0
    datagrams_out: int = 0
    udp_bytes_in: int = 0
    udp_bytes_out: int = 0
    udp_send_queued: int = 0
    """Datagrams that met a full socket buffer (EAGAIN) and waited for the writer."""
    udp_send_drops: int = 0
    """Datagrams dropped because the send queue was full (oldest first)."""
    udp_send_errors: int = 0
    icmp_errors: int = 0
    """ICMP errors read from the socket error queue (IP_RECVERR)."""
    stream_messages_in: int = 0
    stream_messages_out: int = 0
    stream_bytes_in: int = 0
    stream_bytes_out: int = 0
    pings: int = 0
    """RFC 5626 CRLF CRLF keepalives answered."""
    connections_open: int = 0
    connections_accepted: int = 0
    connections_opened: int = 0
    connections_refused: int = 0
    """Inbound connections closed at once, or outbound ones not opened, over the connection limit."""
    connect_failures: int = 0
    idle_closes: int = 0
    message_timeouts: int = 0
    """Connections closed: no complete message within ``[limits] message-timeout`` (a slowloris)."""
    connections_evicted: int = 0
    """Connections that never sent a complete message, closed at max-connections for a new one."""
    write_overflows: int = 0
    """Connections aborted because the peer did not read what was sent to it."""
    framing_errors: int = 0
    tls_connections_open: int = 0
    """Gauge: TLS connections not yet lost (handshaking, open or closing)."""
    tls_handshakes: int = 0
    """TLS handshakes completed, either direction."""
    tls_aliases_refused: int = 0
    """RFC 5923 alias requests refused: the peer's certificate does not name its sent-by."""
    tls_handshake_failures: int = 0
    """TLS handshakes that failed or timed out, either direction (by outcome: the manager)."""

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return asdict(self)
