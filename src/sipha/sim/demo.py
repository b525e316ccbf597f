"""``sipha demo``: the proxy, two simulated SIP servers and the dashboard, in one process.

The pair is the embedded default's ``demo`` pair (primary udp:127.0.0.1:5070,
backup udp:127.0.0.1:5080), monitored with short timers (oos-check 2,
oos-force 1) so that a switchover shows within about three seconds.  A
switchover swaps the simulators' modes: the one in primary mode goes to backup
mode (silent) and the other to primary mode; sipha finds out with its OPTIONS,
as it would with real servers.  It is triggered by the dashboard's button
(``POST /demo/switch``) or every ``--switch-every`` seconds.

With ``--calls-per-second N`` (default 1) a third simulated endpoint sends N
MESSAGE requests per second to ``sip:demo@<proxy>``, through sipha's own
transaction layer; the dashboard shows how many were answered 2xx.  Requests
sent while the pair has no active member are held by sipha (failover-timeout)
or refused with 503.  No INVITE dialogs: the endpoint is a non-INVITE UAC.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import tomllib
from dataclasses import dataclass, field
from typing import Any, Final

from sipha.app import ProxyApp
from sipha.config import Config, default_config_text
from sipha.sim.server import SimulatedServer
from sipha.sip.address import Address

log = logging.getLogger("sipha.demo")

HOST: Final = "127.0.0.1"
DEMO_OOS_CHECK: Final = 2
DEMO_OOS_FORCE: Final = 1
MAX_OUTSTANDING: Final = 200
"""Demo requests waiting for an answer at most; more are not sent."""
REQUEST_TIMEOUT: Final = 10.0


class PortInUse(Exception):
    """A port the demo needs is taken; the message names it and the option to change it."""


@dataclass(frozen=True)
class DemoOptions:
    """What ``sipha demo`` was asked for."""

    sip_port: int = 5060
    admin_port: int = 8080
    primary_port: int = 5070
    backup_port: int = 5080
    switch_every: float = 0.0
    calls_per_second: float = 1.0


def demo_config(options: DemoOptions) -> Config:
    """The embedded default configuration, on the demo's ports and timers."""
    data: dict[str, Any] = tomllib.loads(default_config_text())
    port = options.sip_port
    data["proxy"]["listen"] = [f"udp:{HOST}:{port}", f"tcp:{HOST}:{port}"]
    data["proxy"]["record-route"] = f"sip:{HOST}:{port};lr"
    data["monitor"]["oos-check"] = DEMO_OOS_CHECK
    data["monitor"]["oos-force"] = DEMO_OOS_FORCE
    data["admin"]["listen"] = f"{HOST}:{options.admin_port}"
    (pair,) = data["pair"]
    pair["primary"] = f"udp:{HOST}:{options.primary_port}"
    pair["backup"] = f"udp:{HOST}:{options.backup_port}"
    return Config.model_validate(data)


def _check_free(port: int, kinds: tuple[int, ...], what: str, option: str) -> None:
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as probe:
            if kind == socket.SOCK_STREAM:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
            try:
                probe.bind((HOST, port))
            except OSError as error:
                name = "TCP" if kind == socket.SOCK_STREAM else "UDP"
                reason = "in use" if error.errno == errno.EADDRINUSE else error.strerror
                raise PortInUse(
                    f"port {port} ({what}, {name} on {HOST}) is {reason}: choose another with {option} PORT"
                ) from None


def check_ports(options: DemoOptions) -> None:
    """Raise :class:`PortInUse` naming the first port the demo cannot bind."""
    both = (socket.SOCK_DGRAM, socket.SOCK_STREAM)
    _check_free(options.sip_port, both, "SIP", "--sip-port")
    _check_free(options.admin_port, (socket.SOCK_STREAM,), "admin HTTP", "--admin-port")
    _check_free(options.primary_port, (socket.SOCK_DGRAM,), "simulated primary", "--primary-port")
    _check_free(options.backup_port, (socket.SOCK_DGRAM,), "simulated backup", "--backup-port")


@dataclass
class Traffic:
    """Demo requests sent through the proxy and how they ended."""

    sent: int = 0
    ok: int = 0
    failed: int = 0
    last_failure: str | None = None
    outstanding: set[asyncio.Task[None]] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        """For /status."""
        return {
            "sent": self.sent,
            "ok": self.ok,
            "failed": self.failed,
            "outstanding": len(self.outstanding),
            "last_failure": self.last_failure,
        }


class Demo:
    """The demo's pair of simulated servers, the switchover, and optional traffic (a DemoControl)."""

    def __init__(self, options: DemoOptions) -> None:
        self.options = options
        self.servers = (
            SimulatedServer([("udp", HOST, options.primary_port)], "primary"),
            SimulatedServer([("udp", HOST, options.backup_port)], "backup"),
        )
        self.switches = 0
        self.traffic: Traffic | None = Traffic() if options.calls_per_second > 0 else None
        self._caller: SimulatedServer | None = None

    # ------------------------------------------------------------------ DemoControl

    def switch(self) -> dict[str, Any]:
        """Swap the modes: the server in primary mode goes to backup mode, the other to primary."""
        first, second = self.servers
        to_primary = second if first.mode == "primary" else first
        for server in self.servers:
            server.set_mode("primary" if server is to_primary else "backup")
        self.switches += 1
        log.info("demo: switchover %d: %s is now in primary mode", self.switches, to_primary.name)
        return {"switched": True, "primary_mode": to_primary.name, "switches": self.switches}

    def status(self) -> dict[str, Any]:
        """The simulators' modes, the switchover settings and the traffic counts."""
        in_primary = [server.name for server in self.servers if server.mode == "primary"]
        return {
            "servers": [{"address": server.name, "mode": server.mode} for server in self.servers],
            "primary_mode": ", ".join(in_primary) or "none",
            "switches": self.switches,
            "switch_every": self.options.switch_every or None,
            "calls_per_second": self.options.calls_per_second,
            "traffic": None if self.traffic is None else self.traffic.as_dict(),
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start both simulated servers and, with traffic, the calling endpoint."""
        for server in self.servers:
            await server.start()
        if self.traffic is not None:
            self._caller = SimulatedServer([("udp", HOST, 0)], "primary", user="demo-caller")
            await self._caller.start()

    async def stop(self) -> None:
        """Stop the traffic, the caller and both servers."""
        if self.traffic is not None:
            for task in list(self.traffic.outstanding):
                task.cancel()
            await asyncio.gather(*self.traffic.outstanding, return_exceptions=True)
        for server in (self._caller, *self.servers):
            if server is not None:
                await server.stop()

    async def switch_periodically(self) -> None:
        """``--switch-every``: one switchover per period, forever."""
        while True:
            await asyncio.sleep(self.options.switch_every)
            self.switch()

    async def send_traffic(self) -> None:
        """``--calls-per-second``: MESSAGE requests through the proxy, forever."""
        traffic, caller = self.traffic, self._caller
        if traffic is None or caller is None:
            return
        proxy = Address("UDP", HOST, self.options.sip_port)
        uri = f"sip:demo@{HOST}:{self.options.sip_port}"
        period = 1.0 / self.options.calls_per_second
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += period
            if len(traffic.outstanding) < MAX_OUTSTANDING:
                task = loop.create_task(self._one_request(caller, proxy, uri, traffic))
                traffic.outstanding.add(task)
                task.add_done_callback(traffic.outstanding.discard)
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    @staticmethod
    async def _one_request(caller: SimulatedServer, proxy: Address, uri: str, traffic: Traffic) -> None:
        traffic.sent += 1
        status = await caller.send_request(proxy, "MESSAGE", uri, timeout=REQUEST_TIMEOUT)
        if status is not None and 200 <= status < 300:  # noqa: PLR2004 - success class
            traffic.ok += 1
        else:
            traffic.failed += 1
            traffic.last_failure = "no answer" if status is None else str(status)


async def run_demo(options: DemoOptions, stop: asyncio.Event | None = None) -> None:
    """Run the demo until ``stop`` is set, or SIGTERM/SIGINT."""
    check_ports(options)
    config = demo_config(options)
    demo = Demo(options)
    app = ProxyApp(config, demo=demo)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    try:
        await demo.start()
        await app.start()
        try:
            for signum in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError):  # pragma: no cover - non-Unix
                    loop.add_signal_handler(signum, stop.set)
            url = app.admin.url if app.admin is not None else f"http://{HOST}:{options.admin_port}/"
            log.info("open %s to watch the pair", url)
            how = "the dashboard's Switch over button"
            if options.switch_every:
                how += f", and every {options.switch_every:g} s"
                tasks.append(loop.create_task(demo.switch_periodically()))
            log.info("demo: switchover by %s; Ctrl-C to stop", how)
            if demo.traffic is not None:
                log.info("demo: sending %g MESSAGE requests/s through the proxy", options.calls_per_second)
                tasks.append(loop.create_task(demo.send_traffic()))
            await stop.wait()
            log.info("demo: stopping")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for signum in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, ValueError, RuntimeError):
                    loop.remove_signal_handler(signum)
            await app.stop()
    finally:
        await demo.stop()
