"""UDP: raw non-blocking sockets driven by ``loop.add_reader`` / ``add_writer``.

asyncio's DatagramTransport is not used: it allocates a handle and calls the
protocol once per datagram and hides ICMP errors.  Here one wakeup reads up to
``batch`` datagrams in a loop, and ICMP errors for datagrams we sent are read
from the socket's error queue (Linux ``IP_RECVERR``, ip(7)) and reported with
the destination they concern, which is what RFC 3261 §18.4 asks the transport
to do ("the transport user SHOULD be informed of the failure", ICMP port
unreachable in particular) and lets a transaction fail fast instead of
waiting for Timer B/F.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from sipha.sip.address import Address

if TYPE_CHECKING:
    import asyncio

    from sipha.net.stats import TransportStats

# The largest UDP payload: a datagram can never be longer, so one buffer size fits all.
MAX_DATAGRAM: Final = 65535
# Linux values, used when the socket module does not export them (CPython < 3.12).
IP_RECVERR: Final[int] = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR: Final[int] = getattr(socket, "IPV6_RECVERR", 25)
_ERRQUEUE_SUPPORTED: Final = sys.platform.startswith("linux") and hasattr(socket, "MSG_ERRQUEUE")
_MSG_ERRQUEUE: Final[int] = getattr(socket, "MSG_ERRQUEUE", 0)
# struct sock_extended_err { u32 ee_errno; u8 ee_origin, ee_type, ee_code, ee_pad; u32 ee_info, ee_data; }
_EXTENDED_ERR: Final = struct.Struct("=IBBBBII")
_ERR_ANCILLARY: Final = socket.CMSG_SPACE(_EXTENDED_ERR.size + 128)  # + the offender's sockaddr
_ERRQUEUE_BATCH: Final = 64
# Source Address objects are cached per peer (a frozen dataclass costs ~1 µs to build).
_SOURCE_CACHE_MAX: Final = 65536
# SO_MEMINFO (socket(7), Linux >= 3.6; not exported by the socket module): the socket's
# memory counters, u32 each; [0] bytes queued for reading (skb truesize), [1] the receive
# buffer's size, [8] datagrams the kernel dropped because the buffer was full.
SO_MEMINFO: Final[int] = getattr(socket, "SO_MEMINFO", 55)
_MEMINFO: Final = struct.Struct("=9I")
BEHIND_SHARES: Final = (0.25, 0.5, 0.75)
"""A socket is *behind* (level 1, 2, 3) when, after a full batch, more than this share of its
receive buffer is still queued: the proxy reads slower than datagrams arrive and the kernel
will soon drop them (whatever they are: BYEs and ACKs as well as new INVITEs).  Level 1
leaves the time to shed untrusted sources' new calls with 503; from level 2 they are dropped
unparsed, which costs a tenth as much; at level 3 trusted sources' new calls get 503 too
(docs/design.md §3, overload; sipha.proxy.admission)."""
BEHIND_DELAYS: Final[tuple[float, ...]] = (0.2, 0.5, 1.0)
"""... or when the oldest datagram still queued after a full batch has waited longer than this
(s; its kernel receive time, SO_TIMESTAMPNS).  A share of the buffer is seconds of work on a
slow or throttled CPU, and every message in the queue waits that long, the BYEs of calls up
and the members' answers as well: SIPp gives a BYE up after a few seconds, and a member's
answer read late looks like a dead member.  The queue must stay well under T1 (500 ms): past
it every peer retransmits what waits (Timers A and E), the load doubles and calls collapse.
Measured at twice capacity (bench/overload.py): levels from 200 ms completed 1.07 of
capacity, from 300 ms 0.85, from 500 ms 0.66.  The price: a proxy near the top of its core
sheds a few calls it might have carried (bench/proxies.py --pin)."""
SO_TIMESTAMPNS: Final[int] = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC: Final = struct.Struct("=qq")
_TIMESTAMP_SPACE: Final = socket.CMSG_SPACE(_TIMESPEC.size)

BACKLOG_CHECK_EVERY: Final = 256
"""Datagrams between two looks at the queue during one long read (one getsockopt each)."""

OnMessage = Callable[[bytes, Address, Address], None]
OnError = Callable[[Address, "OSError | str"], None]


class SocketOptions(Protocol):
    """What :func:`set_tos` needs: a socket, or the one a stream transport exposes."""

    @property
    def family(self) -> int: ...  # noqa: D102

    def setsockopt(self, level: int, optname: int, value: int, /) -> None: ...  # noqa: D102


def set_tos(sock: SocketOptions, tos: int, *, reset: bool = False) -> None:
    """Mark what ``sock`` sends with the TOS byte ``tos`` (IPv4 ``IP_TOS``, IPv6 ``IPV6_TCLASS``).

    ``tos`` 0 leaves the socket as it is, unless ``reset`` (a reload back to 0): then the
    system default is put back (ip(7) TOS 0, ipv6(7) traffic class -1 = the kernel's).
    OSError if the kernel refuses it.
    """
    if tos == 0 and not reset:
        return
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tos or -1)
        # An IPv6 socket that also carries IPv4 (not V6ONLY) marks those packets with IP_TOS.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
    elif sock.family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)


def open_udp_socket(
    family: socket.AddressFamily,
    host: str,
    port: int,
    *,
    buffer_size: int,
    reuse_address: bool,
    reuse_port: bool = False,
    ip_tos: int = 0,
) -> tuple[socket.socket, bool]:
    """A bound, non-blocking UDP socket; returns it and whether ICMP errors will be reported.

    ``reuse_port``: SO_REUSEPORT, for the sockets of ``[proxy] workers`` on one port
    (the kernel then gives each datagram to one of them, by the sender's address).
    ``reuse_address``: SO_REUSEADDR, which UDP does not need (no TIME-WAIT) and which on
    Linux lets another socket that also sets it bind the same address and take datagrams
    meant for this one (a second sipha started by mistake): listen sockets leave it off.
    ``ip_tos``: the TOS byte of the datagrams it sends (:func:`set_tos`; 0: the default).
    """
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)  # noqa: FBT003 - the socket API
        if reuse_address:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # Separate IPv4 and IPv6 sockets may then share a port number.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            # Bursts of SIP traffic overflow the default ~200 KiB; the kernel caps the request
            # at net.core.rmem_max / wmem_max without failing, and reports what it granted.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, buffer_size)
        set_tos(sock, ip_tos)
        with contextlib.suppress(OSError):  # the receive time of what waits (queue_delay)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        recverr = _enable_recverr(sock, family)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock, recverr


def _enable_recverr(sock: socket.socket, family: socket.AddressFamily) -> bool:
    if not _ERRQUEUE_SUPPORTED:
        return False
    level, option = (
        (socket.IPPROTO_IPV6, IPV6_RECVERR) if family == socket.AF_INET6 else (socket.IPPROTO_IP, IP_RECVERR)
    )
    try:
        sock.setsockopt(level, option, 1)
    except OSError:
        return False
    return True


def extended_error(ancdata: list[tuple[int, int, bytes]]) -> OSError:
    """The error a ``sock_extended_err`` control message describes (ip(7), IP_RECVERR)."""
    for level, kind, data in ancdata:
        if (level, kind) in (
            (socket.IPPROTO_IP, IP_RECVERR),
            (socket.IPPROTO_IPV6, IPV6_RECVERR),
        ) and len(data) >= _EXTENDED_ERR.size:
            code = _EXTENDED_ERR.unpack_from(data)[0]
            # OSError(errno, text) builds the matching subclass (ConnectionRefusedError, ...).
            return OSError(code, os.strerror(code))
    return OSError("ICMP error without details")


class UdpEndpoint:
    """One bound UDP socket: batched reads, ICMP error reports, a bounded send queue."""

    __slots__ = (
        "_batch",
        "_behind",
        "_fd",
        "_loop",
        "_on_backlog",
        "_on_batch_end",
        "_on_error",
        "_on_message",
        "_queue",
        "_queue_limit",
        "_sources",
        "_stats",
        "_writing",
        "behind_delays",
        "local",
        "recverr",
        "sock",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        *,
        recverr: bool,
        on_message: OnMessage,
        on_error: OnError,
        stats: TransportStats,
        batch: int,
        queue_limit: int,
        on_batch_end: Callable[[], None] | None = None,
        on_backlog: Callable[[object, int], None] | None = None,
    ) -> None:
        self._loop = loop
        self.sock = sock
        self._fd = sock.fileno()
        name = sock.getsockname()
        self.local = Address("UDP", name[0], name[1])
        self.recverr = recverr
        self._on_message = on_message
        self._on_error = on_error
        self._on_batch_end = on_batch_end
        self._stats = stats
        self._batch = batch
        self._queue_limit = queue_limit
        self._queue: deque[tuple[bytes, tuple[str, int]]] = deque()
        self._writing = False
        self._sources: dict[Any, Address] = {}
        self._on_backlog = on_backlog
        self._behind = 0
        self.behind_delays: tuple[float, ...] = BEHIND_DELAYS
        """The queue delays of the levels (:data:`BEHIND_DELAYS`; a test may set its own)."""

    @property
    def behind(self) -> int:
        """How far behind the last read left the socket: 0 to 3 (BEHIND_SHARES, BEHIND_DELAYS)."""
        return self._behind

    def queue_delay(self) -> float:
        """How long the oldest datagram still queued has waited (s); 0.0 when none is.

        Its kernel receive time (SO_TIMESTAMPNS, wall clock) read with MSG_PEEK: the datagram
        stays queued.  One system call: made after a full batch only.
        """
        try:
            _data, ancdata, _flags, _peer = self.sock.recvmsg(1, _TIMESTAMP_SPACE, socket.MSG_PEEK)
        except BlockingIOError:
            return 0.0
        except OSError:
            # IP_RECVERR: the peek took the pending error of an ICMP message; its details are
            # in the error queue, reported now as a read would have.
            self.drain_errors()
            return 0.0
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
                seconds, nanoseconds = _TIMESPEC.unpack_from(data)
                received: float = seconds + nanoseconds / 1e9
                return max(0.0, time.time() - received)
        return 0.0

    def queued(self) -> tuple[int, int, int]:
        """(bytes queued for reading, receive buffer size, datagrams dropped), SO_MEMINFO.

        (0, 0, 0) where the kernel does not have it.
        """
        try:
            info = _MEMINFO.unpack(self.sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, _MEMINFO.size))
        except (OSError, struct.error):
            return (0, 0, 0)
        return (info[0], info[1], info[8])

    @property
    def buffer_sizes(self) -> tuple[int, int]:
        """(SO_RCVBUF, SO_SNDBUF) as granted by the kernel (Linux reports twice the request)."""
        return (
            self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
        )

    def start(self) -> None:
        """Start reading."""
        self._loop.add_reader(self._fd, self._on_readable)

    def close(self) -> None:
        """Stop reading and writing, close the socket; queued datagrams are dropped."""
        self._loop.remove_reader(self._fd)
        if self._writing:
            self._loop.remove_writer(self._fd)
            self._writing = False
        self._stats.udp_send_drops += len(self._queue)
        self._queue.clear()
        self.sock.close()

    # ------------------------------------------------------------------ receive

    def _on_readable(self) -> None:
        self.read(self._batch)

    def read(self, limit: int) -> int:
        """Read and hand over up to ``limit`` datagrams already received; return how many.

        ``on_batch_end`` (if any) is called once after them: the caller sends what the
        whole batch produced at once.
        """
        recvfrom = self.sock.recvfrom
        on_message = self._on_message
        local = self.local
        sources = self._sources
        count = 0
        size = 0
        # A long read (the backlog before timers, up to thousands of datagrams) looks at the
        # queue every BACKLOG_CHECK_EVERY datagrams too: a level judged low before it would be
        # stale by its end, and a flood read at full cost meanwhile (docs/design.md §3, overload).
        check_at = BACKLOG_CHECK_EVERY if self._on_backlog is not None and limit > BACKLOG_CHECK_EVERY else -1
        try:
            for _ in range(limit):
                try:
                    data, peer = recvfrom(MAX_DATAGRAM)
                except BlockingIOError:
                    if count == 0:
                        # Woken with nothing to read: epoll reports POLLERR for a queued ICMP
                        # error whose pending socket error was already consumed (by sendto).
                        self.drain_errors()
                    break
                except InterruptedError:
                    continue
                except OSError:
                    if self.sock.fileno() < 0:
                        break  # closed by a callback (stop() from on_message)
                    # IP_RECVERR: recvfrom returns the pending error of an ICMP message
                    # (ECONNREFUSED for port unreachable); the details are in the error queue.
                    self.drain_errors()
                    continue
                count += 1
                size += len(data)
                source = sources.get(peer)
                if source is None:
                    source = self._source(peer)
                on_message(data, source, local)
                if count == check_at:
                    check_at += BACKLOG_CHECK_EVERY
                    self._report_backlog(full=True, rising=True)
        finally:
            stats = self._stats
            stats.datagrams_in += count
            stats.udp_bytes_in += size
        if self._on_backlog is not None:
            # Only a full batch can leave a backlog: the check costs one getsockopt then.
            self._report_backlog(full=count >= limit)
        if count and self._on_batch_end is not None:
            self._on_batch_end()
        return count

    def _report_backlog(self, *, full: bool, rising: bool = False) -> None:
        """Tell ``on_backlog`` how far behind the socket is, when that changed (0 when not ``full``).

        ``rising``: in the middle of a read, only a higher level is reported: shedding goes on
        until the read ends (a queue that drains for a moment is not a flood that ended).
        """
        behind = 0
        if full:
            queued, buffer, _ = self.queued()
            behind = sum(queued > buffer * share for share in BEHIND_SHARES)
            if behind < len(BEHIND_SHARES) and self.behind_delays:
                delay = self.queue_delay()
                behind = max(behind, sum(delay > limit for limit in self.behind_delays))
        if rising and behind < self._behind:
            return
        if behind != self._behind and self._on_backlog is not None:
            self._behind = behind
            self._on_backlog(self, behind)

    def _source(self, peer: Any) -> Address:  # noqa: ANN401 - a socket address tuple
        sources = self._sources
        if len(sources) >= _SOURCE_CACHE_MAX:
            sources.clear()  # bounded: a flood of spoofed sources must not grow it forever
        source = sources[peer] = Address("UDP", peer[0], peer[1])
        return source

    def drain_errors(self) -> None:
        """Report every ICMP error queued on the socket, with the original destination."""
        if not self.recverr:
            return
        recvmsg = self.sock.recvmsg
        for _ in range(_ERRQUEUE_BATCH):
            try:
                _data, ancdata, _flags, peer = recvmsg(0, _ERR_ANCILLARY, _MSG_ERRQUEUE)
            except OSError:
                return  # EAGAIN: the queue is empty
            self._stats.icmp_errors += 1
            if peer:
                # ip(7): "The original destination address of the datagram that caused the
                # error is supplied via msg_name."
                self._on_error(Address("UDP", peer[0], peer[1]), extended_error(ancdata))

    # ------------------------------------------------------------------ send

    def send(self, data: bytes, peer: tuple[str, int]) -> None:
        """Send one datagram now, or queue it if the socket buffer is full; never blocks."""
        stats = self._stats
        if self._queue:
            self._enqueue(data, peer)  # keep the order behind what is already waiting
            return
        try:
            self.sock.sendto(data, peer)
        except BlockingIOError:
            self._enqueue(data, peer)
            return
        except OSError as error:
            if not self._retry_after_icmp(data, peer, error):
                return
        stats.datagrams_out += 1
        stats.udp_bytes_out += len(data)

    def _retry_after_icmp(self, data: bytes, peer: tuple[str, int], error: OSError) -> bool:
        # With IP_RECVERR, a pending ICMP error for an *earlier* datagram (to another
        # destination, maybe) fails the next sendto with its errno, without sending.  Report
        # the queued errors to whom they belong, then try once more.
        if self.recverr:
            self.drain_errors()
            try:
                self.sock.sendto(data, peer)
            except BlockingIOError:
                self._enqueue(data, peer)
                return False
            except OSError as again:
                error = again
            else:
                return True
        self._stats.udp_send_errors += 1
        self._on_error(Address("UDP", peer[0], peer[1]), error)
        return False

    def _enqueue(self, data: bytes, peer: tuple[str, int]) -> None:
        queue = self._queue
        stats = self._stats
        if len(queue) >= self._queue_limit:
            # A bounded queue: under sustained overload the oldest datagrams are the least
            # useful (their transactions retransmit anyway, RFC 3261 §17.1.1.2).
            queue.popleft()
            stats.udp_send_drops += 1
        queue.append((data, peer))
        stats.udp_send_queued += 1
        if not self._writing:
            self._writing = True
            self._loop.add_writer(self._fd, self._on_writable)

    def _on_writable(self) -> None:
        queue = self._queue
        sendto = self.sock.sendto
        stats = self._stats
        while queue:
            data, peer = queue[0]
            try:
                sendto(data, peer)
            except BlockingIOError:
                return
            except OSError as error:
                queue.popleft()
                if self._retry_after_icmp(data, peer, error):
                    stats.datagrams_out += 1
                    stats.udp_bytes_out += len(data)
                continue
            queue.popleft()
            stats.datagrams_out += 1
            stats.udp_bytes_out += len(data)
        self._writing = False
        self._loop.remove_writer(self._fd)
