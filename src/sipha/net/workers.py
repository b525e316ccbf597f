"""Sockets of ``[proxy] workers``: listen sockets shared by port, and the hand-over channel.

Each worker process gets its own UDP socket and TCP listening socket on every
listen address, all bound with SO_REUSEPORT to the same port (socket(7): "the
kernel distributes incoming datagrams / connections" among them, one sender to
one socket).  The parent binds them all before it starts any worker, so a bad
listen address is refused at start, and port 0 is resolved once for all.

SO_REUSEPORT lets *any* socket of the same user that sets it join the group, a
second sipha started by mistake included, which would then silently get part of
the traffic.  So before binding a group the parent binds the address once
without it (:func:`probe_exclusive`), which fails with EADDRINUSE if anyone holds
it.  The UDP sockets of a group do not set SO_REUSEADDR either: on Linux a UDP
socket with SO_REUSEADDR may bind next to another one that has it.

A message that landed on a worker not holding its transaction
(:func:`sipha.proxy.affinity.owner`) is handed over on a Unix datagram socket
to the worker that does: the sender's address, then the message as received.
That holds for datagrams and for messages framed on a TCP connection: the
connection stays with the worker that accepted it, and the owner's answers on
it are handed back to that worker to write.  One Unix datagram socket per
worker, written by all the others; datagrams of one writer arrive in the order
they were sent (unix(7): SOCK_DGRAM "is reliable and does not reorder
datagrams").
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final

from sipha.net.udp import MAX_DATAGRAM, open_udp_socket, set_tos
from sipha.sip.address import Address

if TYPE_CHECKING:
    import asyncio

HANDOFF_BUFFER: Final = 4 * 1024 * 1024
"""SO_SNDBUF/SO_RCVBUF of the hand-over sockets: a burst of 64 KiB datagrams fits."""
_BATCH: Final = 64
_CACHE_MAX: Final = 65536
"""Bound of the header caches (like the UDP source cache: spoofed sources cannot grow them)."""

OnHandedOver = Callable[[bytes, Address, Address, int], None]
"""(data, source, local, the worker that passed it)."""
OnHandedSend = Callable[[bytes, Address, Address], None]
"""(data, destination, fallback destination)."""
OnPairNews = Callable[[str, str, str, float, int], None]
"""(pair, what: ``active`` or ``lost``, member role, when it happened, the worker that saw it)."""
OnProbeQuestion = Callable[[str, str, int, float, int], None]
"""(pair, member role, the asker's probe seq, how fresh an answer must be, the asker)."""
OnMaintenance = Callable[[str, str, bool], None]
"""(pair, member role, on): the operator put a member in maintenance, or back (``sipha ctl member``)."""
OnProbeAnswer = Callable[[str, str, int, int, float], None]
"""(pair, member role, the asker's probe seq, status or -1 when the OPTIONS failed, RTT)."""
OnCountersQuestion = Callable[[int, int], None]
"""(the asker, its question's seq): another worker wants this one's counters (the admin HTTP)."""
OnCounters = Callable[[int, int, bytes], None]
"""(the worker that answers, the question's seq, its counters as it encoded them)."""
MAX_CONTROL_PAYLOAD: Final = 60000
"""Bytes after the header line of a ``K`` packet: what :meth:`Handoff.read` reads whole."""


def bind_shared(
    transport: str, family: socket.AddressFamily, ip: str, port: int, *, udp_buffer: int, ip_tos: int = 0
) -> tuple[socket.socket, bool]:
    """One worker's socket on a shared port (SO_REUSEPORT), and whether it reports ICMP errors.

    ``ip_tos``: the TOS byte of what it sends (:func:`sipha.net.udp.set_tos`; 0: the default).
    """
    if transport.upper() == "UDP":
        return open_udp_socket(
            family, ip, port, buffer_size=udp_buffer, reuse_address=False, reuse_port=True, ip_tos=ip_tos
        )
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        set_tos(sock, ip_tos)  # the SYN-ACKs; accepted connections inherit it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((ip, port))
        sock.listen(1024)
        sock.setblocking(False)  # noqa: FBT003 - the socket API
    except BaseException:
        sock.close()
        raise
    return sock, False


def listen_text(transport: str, host: str, port: int) -> str:
    """A listen entry as written in ``[proxy] listen``: ``udp:127.0.0.1:5060``, ``udp:[::1]:5060``."""
    bracketed = f"[{host}]" if ":" in host else host
    return f"{transport.lower()}:{bracketed}:{port}"


@contextlib.contextmanager
def refused_if_in_use(entry: str) -> Iterator[None]:
    """Turn EADDRINUSE while binding listen entry ``entry`` into an OSError that names it."""
    try:
        yield
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        refused = OSError(f"proxy.listen {entry!r}: address in use by another process (another sipha?)")
        refused.errno = errno.EADDRINUSE
        raise refused from error


def probe_exclusive(transport: str, family: socket.AddressFamily, ip: str, port: int) -> None:
    """Bind ``ip``:``port`` once without SO_REUSEPORT, then release it.

    OSError (EADDRINUSE) if any socket holds the address, whatever options it set: call it
    before :func:`bind_shared`, which would otherwise join another process's group.  UDP:
    no SO_REUSEADDR either; TCP: SO_REUSEADDR, which still conflicts with any listening
    socket but not with the TIME-WAIT connections a sipha restarted on the port left.
    """
    kind = socket.SOCK_DGRAM if transport.upper() == "UDP" else socket.SOCK_STREAM
    with socket.socket(family, kind) as probe:
        if kind == socket.SOCK_STREAM:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as bind_shared binds
        probe.bind((ip, port))


def handoff_pairs(workers: int) -> list[tuple[socket.socket, socket.socket]]:
    """One (receiving end, sending end) Unix datagram socket pair per worker."""
    pairs = []
    for _ in range(workers):
        receiving, sending = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for sock in (receiving, sending):
            sock.setblocking(False)  # noqa: FBT003 - the socket API
            for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, option, HANDOFF_BUFFER)
        pairs.append((receiving, sending))
    return pairs


class Handoff:
    """A worker's end of the hand-over channel: read its own socket, write the others'.

    Two kinds of packets, each a header line then the message as it is:

    * ``R``: a message received from a peer (a datagram, or a message framed on a TCP
      connection) for the transaction the owner holds: ``on_message(data, source, local,
      sender)``;
    * ``S``: a message to write on a stream connection the receiving worker holds (the
      sender's answer to a request it was handed from that connection, RFC 3261 §18.2.2):
      ``on_send(data, destination, fallback)``, where ``fallback`` is where the sender
      would have sent it without that connection.
    * ``M``: a member put in maintenance or back to ``auto`` by the operator, for every worker.
    * ``Q`` and ``A``: a probe of another worker's pair monitor asked of worker 0, and its
      answer (:mod:`sipha.proxy.probeshare`: one prober per instance).
    * ``H``: news of a pair, sent to every other worker (:meth:`broadcast_pair`): a member
      became active, or the active member was lost, at a given time: ``on_pair(pair, what,
      role, at, sender)``.  The workers of an instance thus route a pair one way: a switch
      one of them decides holds for all within a hand-over's latency (well under 1 ms).
    * ``C`` and ``K``: the admin HTTP of one worker asks another for its counters, and its
      answer (:mod:`sipha.admin.instance`: /status and /metrics report the instance).  Not
      counted in :attr:`handed_over` and :attr:`received`, which count SIP traffic.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        index: int,
        pairs: list[tuple[socket.socket, socket.socket]],
        on_message: OnHandedOver,
        *,
        on_batch_end: Callable[[], None] | None = None,
        on_send: OnHandedSend | None = None,
        on_pair: OnPairNews | None = None,
        on_probe_question: OnProbeQuestion | None = None,
        on_probe_answer: OnProbeAnswer | None = None,
        on_maintenance: OnMaintenance | None = None,
    ) -> None:
        self.index = index
        self._loop = loop
        self._receiving = pairs[index][0]
        self._sending = [sending for _, sending in pairs]
        self._on_message = on_message
        self._on_batch_end = on_batch_end
        self._on_send = on_send
        self._on_pair = on_pair
        self._on_probe_question = on_probe_question
        self._on_probe_answer = on_probe_answer
        self._on_maintenance = on_maintenance
        self.on_counters_question: OnCountersQuestion | None = None
        """Set by the admin surface (:class:`sipha.admin.instance.WorkerCounters`)."""
        self.on_counters: OnCounters | None = None
        """Likewise: an answer to one of this worker's :meth:`ask_counters`."""
        # Bounded caches, both ways, of the header naming the addresses: a worker hears
        # from few peers, and formatting or parsing it for every message costs more.
        self._headers: dict[tuple[Address, Address], bytes] = {}
        self._parsed: dict[bytes, tuple[bool, int, Address, Address]] = {}
        self.handed_over = 0
        """Messages passed to another worker (received ones, and ones to write for it)."""
        self.received = 0
        """Messages another worker passed to this one."""
        self.dropped = 0
        """Messages that could not be passed on (the owner's socket buffer was full)."""
        loop.add_reader(self._receiving.fileno(), self._on_readable)

    def close(self) -> None:
        """Stop reading (the sockets belong to the process; they close with it)."""
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._receiving.fileno())

    def send(self, owner: int, data: bytes, source: Address, local: Address) -> None:
        """Pass ``data``, received from ``source`` on ``local``, to worker ``owner``."""
        header = self._headers.get((source, local))
        if header is None:
            header = self._header(b"R", source, local)
            self._headers[source, local] = header
        self._pass(owner, header + data)

    def send_out(self, owner: int, data: bytes, destination: Address, fallback: Address) -> None:
        """Ask worker ``owner``, which holds the connection to ``destination``, to write ``data``."""
        self._pass(owner, self._header(b"S", destination, fallback) + data)

    def broadcast_pair(self, pair: str, what: str, role: str, at: float) -> None:
        """Tell every other worker that ``role`` of ``pair`` became ``active`` or was ``lost`` at ``at``."""
        packet = f"H {self.index} {pair} {what} {role} {at!r}\n".encode()
        for index in range(len(self._sending)):
            if index != self.index:
                self._pass(index, packet)

    def broadcast_maintenance(self, pair: str, role: str, on: bool) -> None:  # noqa: FBT001
        """Tell every other worker that ``role`` of ``pair`` is in maintenance (``on``) or back."""
        packet = f"M {self.index} {pair} {role} {int(on)}\n".encode()
        for index in range(len(self._sending)):
            if index != self.index:
                self._pass(index, packet)

    def ask_probe(self, pair: str, role: str, seq: int, fresh: float) -> None:
        """Ask worker 0 to probe ``role`` of ``pair`` for this worker's probe ``seq``."""
        self._pass(0, f"Q {self.index} {pair} {role} {seq} {fresh!r}\n".encode())

    def answer_probe(self, asker: int, probe: tuple[str, str, int], status: int, rtt: float) -> None:
        """Worker 0's answer to worker ``asker``'s probe: (pair, role, seq); status -1: it failed."""
        pair, role, seq = probe
        self._pass(asker, f"A {self.index} {pair} {role} {seq} {status} {rtt!r}\n".encode())

    def ask_counters(self, worker: int, seq: int) -> bool:
        """Ask ``worker`` for its counters (question ``seq``); False when it could not be sent."""
        return self._control(worker, f"C {self.index} {seq}\n".encode())

    def send_counters(self, asker: int, seq: int, payload: bytes) -> bool:
        """Answer question ``seq`` of worker ``asker`` (``payload``: at most :data:`MAX_CONTROL_PAYLOAD`)."""
        if len(payload) > MAX_CONTROL_PAYLOAD:
            return False
        return self._control(asker, f"K {self.index} {seq}\n".encode() + payload)

    def _control(self, worker: int, packet: bytes) -> bool:
        """Send a packet that is not SIP traffic (not counted); False when the socket refused it."""
        try:
            self._sending[worker].send(packet)
        except OSError:  # full (the worker does not read: dead, or its loop stuck) or gone
            return False
        return True

    def _header(self, kind: bytes, first: Address, second: Address) -> bytes:
        if len(self._headers) >= _CACHE_MAX:
            self._headers.clear()
        return (
            kind
            + (
                f" {self.index} {first.transport} {first.host} {first.port}"
                f" {second.transport} {second.host} {second.port}\n"
            ).encode()
        )

    def _pass(self, owner: int, packet: bytes) -> None:
        try:
            self._sending[owner].send(packet)
        except OSError:
            # Full (BlockingIOError) or gone: lost like a datagram the kernel dropped; the
            # sender retransmits (RFC 3261 §17.1.1.2) and the count shows it in /metrics.
            self.dropped += 1
            return
        self.handed_over += 1

    def _on_readable(self) -> None:
        self.read(_BATCH)

    def read(self, limit: int) -> int:
        """Hand up to ``limit`` messages already passed over to this worker; how many."""
        recv = self._receiving.recv
        count = 0
        for _ in range(limit):
            try:
                packet = recv(MAX_DATAGRAM + 256)
            except (BlockingIOError, InterruptedError):
                break
            count += 1
            end = packet.find(b"\n") + 1
            header = packet[:end]
            if header.startswith((b"H ", b"Q ", b"A ", b"M ")):
                self.received += 1
                self._news(header)
                continue
            if header.startswith((b"C ", b"K ")):
                self._counters(header, packet[end:])
                continue
            parsed = self._parsed.get(header)
            if parsed is None:
                parsed = self._parse_header(header)
            self.received += 1
            received, sender, first, second = parsed
            if received:
                self._on_message(packet[end:], first, second, sender)
            elif self._on_send is not None:
                self._on_send(packet[end:], first, second)
        if count and self._on_batch_end is not None:
            self._on_batch_end()
        return count

    def _news(self, header: bytes) -> None:
        try:
            kind, sender, pair, role_or_what, *rest = header.decode().split()
            if kind == "H" and self._on_pair is not None:
                role, at = rest
                self._on_pair(pair, role_or_what, role, float(at), int(sender))
            elif kind == "Q" and self._on_probe_question is not None:
                seq, fresh = rest
                self._on_probe_question(pair, role_or_what, int(seq), float(fresh), int(sender))
            elif kind == "M" and self._on_maintenance is not None:
                (on,) = rest
                self._on_maintenance(pair, role_or_what, on == "1")
            elif kind == "A" and self._on_probe_answer is not None:
                seq, status, rtt = rest
                self._on_probe_answer(pair, role_or_what, int(seq), int(status), float(rtt))
        except ValueError:  # pragma: no cover - written by a worker of this process group
            return

    def _counters(self, header: bytes, payload: bytes) -> None:
        try:
            kind, sender, seq = header.split()
            if kind == b"C" and self.on_counters_question is not None:
                self.on_counters_question(int(sender), int(seq))
            elif kind == b"K" and self.on_counters is not None:
                self.on_counters(int(sender), int(seq), payload)
        except ValueError:  # pragma: no cover - written by a worker of this process group
            return

    def _parse_header(self, header: bytes) -> tuple[bool, int, Address, Address]:
        kind, sender, transport, host, port, other_transport, other_host, other_port = header.split()
        parsed = (
            kind == b"R",
            int(sender),
            Address(transport.decode(), host.decode(), int(port)),
            Address(other_transport.decode(), other_host.decode(), int(other_port)),
        )
        if len(self._parsed) >= _CACHE_MAX:
            self._parsed.clear()
        self._parsed[header] = parsed
        return parsed
