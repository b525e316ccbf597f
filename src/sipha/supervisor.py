"""The parent of ``[proxy] workers``: bind every worker's sockets, fork the workers, pass signals on.

Each worker is a whole sipha instance in its own process; the parent only holds
the sockets, so that a worker that dies is restarted on the same ones with
nothing lost in their buffers (docs/design.md §5).  What a worker runs is the
caller's (:func:`sipha.app.run` gives it a :class:`sipha.app.ProxyApp`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Final

from sipha.assembly import OWN_SOCKETS, WorkerPlan, WorkerSockets, listen_key
from sipha.config import Config, parse_address
from sipha.logs import WorkerField
from sipha.net.listen import check_listen_transport, resolve_listen
from sipha.net.manager import DEFAULT_UDP_BUFFER
from sipha.net.udp import open_udp_socket
from sipha.net.workers import bind_shared, handoff_pairs, probe_exclusive, refused_if_in_use

log = logging.getLogger("sipha")

WORKER_START_GRACE: Final = 5.0
"""A worker that dies sooner than this after its start is not restarted: the parent stops."""

ServeWorker = Callable[[WorkerPlan], None]
"""What a worker process runs, until it is done (in the child; it never returns into the parent)."""


def bind_worker_sockets(config: Config, count: int) -> list[WorkerSockets]:
    """Every worker's sockets, bound now (SO_REUSEPORT, one port per listen entry for all).

    Each worker also gets a UDP socket of its own per UDP listen entry, on a port the
    kernel picks (under :data:`sipha.assembly.OWN_SOCKETS`): it sends from it and names it
    in Via, so the SIP servers' responses reach the worker holding their transaction
    directly (the shared port then carries only requests, and one worker reading a busy
    sender's datagrams is not also reading all the answers).
    OSError or ValueError (a transport not served) as ``sipha run`` would raise them;
    nothing stays bound then.

    An address another process holds is refused (:func:`~sipha.net.workers.probe_exclusive`
    on every entry first, before any group is bound): SO_REUSEPORT would otherwise let these
    sockets join the group of another sipha on the port and share its traffic.
    """
    for text in config.proxy.listen:
        check_listen_transport(parse_address(text).transport)
    resolved = []
    for text in config.proxy.listen:
        configured = parse_address(text)
        family, ip = resolve_listen(configured.transport, configured.host, configured.port)
        with refused_if_in_use(text):
            probe_exclusive(configured.transport, family, ip, configured.port)
        resolved.append((text, configured, family, ip))
    plans: list[WorkerSockets] = [{} for _ in range(count)]
    try:
        for text, configured, family, ip in resolved:
            port = configured.port
            for plan in plans:
                with refused_if_in_use(text):  # taken since the probe
                    sock, recverr = bind_shared(
                        configured.transport,
                        family,
                        ip,
                        port,
                        udp_buffer=DEFAULT_UDP_BUFFER,
                        ip_tos=config.proxy.sip_ip_tos,
                    )
                port = sock.getsockname()[1]  # port 0: the first bind picks the port for all
                plan[listen_key(text)] = [(sock, recverr)]
                if configured.transport.upper() == "UDP":
                    own = open_udp_socket(
                        family,
                        ip,
                        0,
                        buffer_size=DEFAULT_UDP_BUFFER,
                        reuse_address=False,
                        ip_tos=config.proxy.sip_ip_tos,
                    )
                    plan.setdefault(OWN_SOCKETS, []).append(own)
    except BaseException:
        for plan in plans:
            for sockets in plan.values():
                for sock, _ in sockets:
                    sock.close()
        raise
    return plans


def run_workers(config: Config, serve: ServeWorker) -> None:
    """The parent of ``[proxy] workers``: bind, start the workers, pass signals on, restart.

    Each worker runs ``serve`` with its :class:`~sipha.assembly.WorkerPlan` (a whole sipha
    instance: core, pair monitor, admin HTTP on the admin port + its index) in its own
    process.  SIGTERM/SIGINT/SIGHUP go to every worker; the parent exits when they all
    have.  Raises OSError when a worker cannot start (the others are stopped then).
    """
    count = config.proxy.workers
    plans = bind_worker_sockets(config, count)
    pairs = handoff_pairs(count)
    children: dict[int, tuple[int, float]] = {}  # pid -> (worker index, started at)
    stopping = False
    failure: str | None = None

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum != signal.SIGHUP:
            stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    for index in range(count):
        pid = _fork_worker(WorkerPlan(index, count, plans[index], pairs), plans, serve)
        children[pid] = (index, time.monotonic())
    log.info("started %d workers (pids %s)", count, ", ".join(str(pid) for pid in children))
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:  # pragma: no cover - every child is in `children`
            break
        index, started = children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            continue
        if time.monotonic() - started < WORKER_START_GRACE:
            failure = f"worker {index} exited with status {code} at start (see its log lines above)"
            stopping = True
            forward(signal.SIGTERM, None)
            continue
        log.error("worker %d (pid %d) exited with status %d: restarting it", index, pid, code)
        new = _fork_worker(WorkerPlan(index, count, plans[index], pairs), plans, serve)
        children[new] = (index, time.monotonic())
    if failure is not None:
        raise OSError(failure)
    log.info("all workers exited")


def _fork_worker(plan: WorkerPlan, every: list[WorkerSockets], serve: ServeWorker) -> int:
    """Start worker ``plan.index`` in a child process; its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:  # the child: never returns into the parent's code
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        # SIGHUP's default is to terminate: a reload asked for while the worker starts (a
        # logrotate hook) would kill it, and the parent would stop every worker.  Ignored until
        # the worker's app installs its handler; the configuration it starts with is current.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        # Its own process group: a Ctrl-C at a terminal (or `timeout`) signals the parent's
        # group, and the parent passes the signal on once; a second copy would stop the
        # worker at once instead of draining it.
        os.setpgid(0, 0)
        for other in every:
            if other is not plan.sockets:
                for sockets in other.values():
                    for sock, _ in sockets:
                        sock.close()
        for handler in logging.getLogger().handlers:  # text: "worker N: " before the message
            handler.addFilter(WorkerField(plan.index))
        serve(plan)
    except BaseException:  # whatever it is, the child must not return into the parent's code
        log.exception("worker %d failed", plan.index)
        code = 1
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
