"""A pool of sipha instances behind DNS, a pair, and real user agents, all on 127.0.0.0/8.

The deployment of docs/design.md §1, on loopback (the whole of 127.0.0.0/8 is local on
``lo``, so each party has an address of its own)::

    baresip (127.0.0.31, .32) --\\                               /-- primary  127.0.0.21 (simulated)
                                  >-- pool.test: sipha a .11 --<
    dnsmasq (127.0.0.1) ...     /               sipha b .12     \\-- backup   127.0.0.22 (silent)
                                                sipha c .13

* :class:`PoolBed` starts it all and stops it all: dnsmasq (tests/net/dns_support.py)
  publishing ``pool.test`` as SRV records (``_sip._udp`` and ``_sip._tcp``, one per
  instance, priorities 10, 20, 30: a deterministic order for every client) and as A
  records (.11, .12, .13); three ``sipha run`` processes, each with its own
  configuration and address, the same ``record-route = "sip:pool.test;lr"``, the same
  pair; the pair's primary (``tests/pool/member.py``: ``sipha simulate-server``
  with ``sip:pool.test;transport=udp`` as outbound proxy, located by SRV) and its
  backup (``sipha simulate-server --mode backup``); two baresip user agents whose
  outbound proxy is ``sip:pool.test;transport=TRANSPORT`` and whose DNS server is the
  dnsmasq (baresip's ``dns_server``).
* :class:`Instance`: one sipha process: SIGKILL, SIGSTOP/SIGCONT, its /metrics.
* :class:`UserAgent`: one baresip driven through ``ctrl_tcp``: calls, hang-ups, and
  its SIP trace (``-s``) read back as :class:`Traced` messages (who carried what).

Every process runs in its own session and is stopped with its group when the bed
closes (a stopped instance gets SIGCONT first); every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.net.dns_support import Dnsmasq
from tests.tls.support import BARESIP, baresip_modules_dir, read_text, start_process, stop_group

POOL = "pool.test"
INSTANCES = {"a": "127.0.0.11", "b": "127.0.0.12", "c": "127.0.0.13"}
PRIORITIES = {"a": 10, "b": 20, "c": 30}
PRIMARY_IP = "127.0.0.21"
BACKUP_IP = "127.0.0.22"
DNS_IP = "127.0.0.1"
START_TIMEOUT = 40.0  # three sipha processes importing at once on a busy 2-core machine
READY_LINE = "listening on"
HTTP_OK = 200
MEMBER = Path(__file__).with_name("member.py")


def free_port_on(ip: str, span: int = 1) -> int:
    """A port P such that P .. P + span - 1 are free for UDP and TCP on ``ip``."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((ip, 0))
            port = int(probe.getsockname()[1])
        if port + span > 65536:
            continue
        with contextlib.ExitStack() as held:
            try:
                for offset in range(span):
                    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                        sock = held.enter_context(socket.socket(socket.AF_INET, kind))
                        sock.bind((ip, port + offset))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port on {ip}")


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``predicate()`` until it is true; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------------------- sipha instances


@dataclass
class Instance:
    """One sipha process of the pool, on ``ip``:``port`` (UDP and TCP), admin on ``ip``:``admin_port``."""

    name: str
    ip: str
    port: int
    admin_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    stopped: bool = False
    killed: bool = False

    @property
    def log(self) -> Path:
        return self.directory / f"sipha-{self.name}.log"

    def log_text(self) -> str:
        return read_text(self.log)

    def write_config(self, dns_port: int, primary: int, backup: int) -> Path:
        config = self.directory / f"sipha-{self.name}.toml"
        config.write_text(
            "\n".join(
                [
                    "[proxy]",
                    f'listen = ["udp:{self.ip}:{self.port}", "tcp:{self.ip}:{self.port}"]',
                    # The same on every instance: the pool's FQDN, no port (found by SRV).
                    f'record-route = "sip:{POOL};lr"',
                    "",
                    "[dns]",
                    f'servers = ["{DNS_IP}:{dns_port}"]',
                    "timeout = 1.0",
                    "",
                    "[monitor]",
                    "oos-check = 1",
                    "oos-force = 1",
                    "failover-timeout = 1.0",
                    "",
                    "[admin]",
                    f'listen = "{self.ip}:{self.admin_port}"',
                    "",
                    "[[pair]]",
                    'name = "pair"',
                    f'primary = "udp:{PRIMARY_IP}:{primary}"',
                    f'backup = "udp:{BACKUP_IP}:{backup}"',
                    "serving = true",
                    "",
                ]
            ),
            encoding="utf-8",
        )
        return config

    def start(self, config: Path) -> None:
        self.process = start_process(
            [sys.executable, "-m", "sipha", "run", "--config", str(config)],
            self.directory,
            f"sipha-{self.name}",
        )

    def healthy(self) -> bool:
        """/healthz answers 200 (the pair has an active member); False while starting."""
        try:
            with urllib.request.urlopen(f"http://{self.ip}:{self.admin_port}/healthz", timeout=1) as answer:
                return int(answer.status) == HTTP_OK
        except (OSError, urllib.error.URLError):
            return False

    def transactions(self, method: str, klass: str = "2xx") -> float:
        """``sipha_transactions_total{method,class}`` of this instance (0 when absent)."""
        with urllib.request.urlopen(f"http://{self.ip}:{self.admin_port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        labels = rf'(?=[^}}]*class="{klass}")(?=[^}}]*method="{method}")'
        pattern = rf"^sipha_transactions_total\{{{labels}[^}}]*\}} (\S+)$"
        match = re.search(pattern, text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    def signal_group(self, signum: int) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def kill(self) -> None:
        """SIGKILL: the instance is gone (its ports closed: ICMP for UDP, refused for TCP)."""
        self.signal_group(signal.SIGKILL)
        assert self.process is not None
        self.process.wait(5)
        self.killed = True

    def stop(self) -> None:
        """SIGSTOP: the instance hangs (its sockets stay open and silent)."""
        self.signal_group(signal.SIGSTOP)
        self.stopped = True

    def resume(self) -> None:
        if self.stopped:
            self.signal_group(signal.SIGCONT)
            self.stopped = False

    def close(self) -> None:
        """SIGCONT if stopped, then SIGKILL: a drain (SIGTERM) would wait for the calls still up."""
        if self.process is None:
            return
        self.resume()
        self.signal_group(signal.SIGKILL)
        stop_group(self.process, timeout=5.0)  # reaps it; kills anything left in its group


# ---------------------------------------------------------------------------- baresip


# baresip -s: each message sent or received is "#", then "TRANSPORT SRC -> DST", then the
# message, between colour escapes.
_TRACE = re.compile(r"#\n(UDP|TCP|TLS) (\S+) -> (\S+)\n(.*?)\x1b\[;m", re.S)


@dataclass(frozen=True)
class Traced:
    """One SIP message in a baresip trace: who sent it to whom, and the text."""

    transport: str
    source: str
    destination: str
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    @property
    def status(self) -> int | None:
        line = self.first_line
        return int(line.split()[1]) if line.startswith("SIP/2.0 ") else None

    @property
    def method(self) -> str:
        """The request's method, or the CSeq method of a response."""
        match = re.search(r"^CSeq:\s*\d+\s+(\S+)", self.text, re.M | re.I)
        return match.group(1).upper() if match else self.first_line.split(" ", 1)[0]

    def header(self, name: str) -> str | None:
        match = re.search(rf"^{name}:\s*(.*?)\s*$", self.text, re.M | re.I)
        return match.group(1) if match else None

    @property
    def call_id(self) -> str | None:
        return self.header("Call-ID")


@dataclass
class CallResult:
    """One call placed by :meth:`UserAgent.call`: answered or not, after how long, its Call-ID."""

    established: bool
    seconds: float
    call_id: str | None
    closed_reason: str = ""


class UserAgent:
    """One baresip process: account ``<sip:USER@IP>`` with ``outbound``, DNS from ``dns_server``.

    Driven through ``ctrl_tcp`` (JSON in netstrings): :meth:`call` dials and waits for
    the answer, :meth:`hangup` hangs the current call up.  ``-s`` traces every SIP
    message into its log, read back by :meth:`trace`.  One call at a time.
    """

    def __init__(self, directory: Path, name: str, *, user: str, ip: str, outbound: str, dns: str) -> None:
        self.directory = directory / name
        self.name = name
        self.user = user
        self.ip = ip
        self.outbound = outbound
        self.dns = dns
        self.sip_port = free_port_on(ip, span=2)  # P: UDP and TCP; P + 1: TLS (baresip's choice)
        self.ctrl_port = free_port_on(DNS_IP)
        self.process: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.buffer = b""
        self.events: list[dict[str, Any]] = []

    @property
    def contact(self) -> str:
        """Where requests to this user agent go (its UDP listen address)."""
        return f"sip:{self.user}@{self.ip}:{self.sip_port}"

    @property
    def log(self) -> Path:
        return self.directory.parent / f"{self.name}.log"

    def start(self) -> None:
        assert BARESIP is not None
        self.directory.mkdir(parents=True, exist_ok=True)
        config = [
            "poll_method\t\tepoll",
            f"net_interface\t\t{DNS_IP}",
            f"sip_listen\t\t{self.ip}:{self.sip_port}",
            f"dns_server\t\t{self.dns}",  # only this one: baresip asks /etc/resolv.conf's otherwise
            "call_max_calls\t\t1",
            "audio_player\t\taubridge,nowhere",
            "audio_source\t\tausine,440",
            "ausrc_srate\t\t48000",
            "ausrc_channels\t\t2",
            "audio_alert\t\taubridge,nowhere",
            "audio_level\t\tno",
            "rtp_stats\t\tno",
            f"module_path\t\t{baresip_modules_dir()}",
            "module\t\t\tg711.so",
            "module\t\t\tausine.so",
            "module\t\t\taubridge.so",
            "module\t\t\tctrl_tcp.so",
            "module_tmp\t\taccount.so",
            "module_app\t\tmenu.so",
            f"ctrl_tcp_listen\t\t{DNS_IP}:{self.ctrl_port}",
            "",
        ]
        (self.directory / "config").write_text("\n".join(config), encoding="utf-8")
        account = (
            f'<sip:{self.user}@{self.ip}>;regint=0;answermode=manual;outbound="{self.outbound}"'
            ";audio_codecs=pcmu"
        )
        (self.directory / "accounts").write_text(account + "\n", encoding="utf-8")
        (self.directory / "contacts").write_text("", encoding="utf-8")
        self.process = start_process(
            [BARESIP, "-4", "-s", "-f", str(self.directory), "-t", "600"], self.directory.parent, self.name
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.sock = socket.create_connection((DNS_IP, self.ctrl_port), timeout=0.5)
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"baresip {self.name} did not start:\n{read_text(self.log)}") from None
                time.sleep(0.1)

    def send(self, command: str, params: str = "") -> None:
        assert self.sock is not None
        data = json.dumps({"command": command, "params": params, "token": uuid.uuid4().hex[:8]}).encode()
        self.sock.sendall(str(len(data)).encode() + b":" + data + b",")

    def _read_events(self) -> Iterator[dict[str, Any]]:
        while True:
            length, colon, rest = self.buffer.partition(b":")
            if not colon or not length.isdigit() or len(rest) < int(length) + 1:
                return
            payload, self.buffer = rest[: int(length)], rest[int(length) + 1 :]
            message: dict[str, Any] = json.loads(payload)
            if message.get("event"):
                self.events.append(message)
                yield message

    def until(self, types: set[str], timeout: float) -> dict[str, Any] | None:
        """The next event of one of ``types`` (others are kept in :attr:`events`), or None."""
        assert self.sock is not None
        deadline = time.monotonic() + timeout
        while True:
            for event in self._read_events():
                if event.get("type") in types:
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65535)
            except TimeoutError:
                return None
            if not chunk:
                return None
            self.buffer += chunk

    def call(self, target: str, timeout: float) -> CallResult:
        """Dial ``target``; wait (at most ``timeout`` s) for the answer or the end of the attempt."""
        start = time.monotonic()
        self.send("dial", target)
        event = self.until({"CALL_ESTABLISHED", "CALL_CLOSED"}, timeout)
        seconds = time.monotonic() - start
        if event is None:
            return CallResult(False, seconds, None, "no answer within the test's bound")
        established = event.get("type") == "CALL_ESTABLISHED"
        return CallResult(
            established, seconds, event.get("id"), "" if established else str(event.get("param"))
        )

    def hangup(self, timeout: float = 5.0) -> bool:
        """Hang the current call up (baresip sends the BYE); whether baresip closed the call."""
        self.send("hangup")
        return self.until({"CALL_CLOSED"}, timeout) is not None

    def trace(self) -> list[Traced]:
        """Every SIP message baresip sent or received so far, in order."""
        return [Traced(*match) for match in _TRACE.findall(read_text(self.log).replace("\r\n", "\n"))]

    def quit(self) -> None:
        """Ask baresip to quit (it ends its calls and transactions first)."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.send("quit")
            self.sock.close()
            self.sock = None

    def close(self) -> None:
        self.quit()
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(2.0)
            stop_group(self.process, timeout=3.0)


def sent_to(trace: list[Traced], call_id: str, method: str) -> list[str]:
    """The destinations of each ``method`` request of the call, in order (every attempt)."""
    return [
        message.destination
        for message in trace
        if message.status is None and message.method == method and message.call_id == call_id
    ]


def answered_by(trace: list[Traced], call_id: str, method: str, status: int = 200) -> list[str]:
    """Who sent the ``status`` responses to the call's ``method`` requests (each carrier once)."""
    return list(
        dict.fromkeys(
            message.source
            for message in trace
            if message.status == status and message.method == method and message.call_id == call_id
        )
    )


# ---------------------------------------------------------------------------- the bed


@dataclass
class PoolBed:
    """The pool, its DNS, the pair and two user agents (``ua_transport``: ``udp`` or ``tcp``)."""

    directory: Path
    ua_transport: str
    member_failover_timeout: float = 1.0
    dns: Dnsmasq = field(default_factory=Dnsmasq)
    instances: dict[str, Instance] = field(default_factory=dict)
    members: list[subprocess.Popen[bytes]] = field(default_factory=list)
    caller: UserAgent | None = None
    holder: UserAgent | None = None
    primary_port: int = 0
    backup_port: int = 0
    primary: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PoolBed:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def records(self) -> list[str]:
        """The pool in DNS: SRV per transport and instance (priorities 10, 20, 30), A records."""
        records = []
        for name, instance in self.instances.items():
            target = f"sipha-{name}.{POOL}"
            records += [
                f"--srv-host={service}.{POOL},{target},{instance.port},{PRIORITIES[name]},10"
                for service in ("_sip._udp", "_sip._tcp")
            ]
            records += [f"--host-record={target},{instance.ip}", f"--host-record={POOL},{instance.ip}"]
        return records

    def _start(self) -> None:
        directory = self.directory
        self.primary_port, self.backup_port = free_port_on(PRIMARY_IP), free_port_on(BACKUP_IP)
        for name, ip in INSTANCES.items():
            self.instances[name] = Instance(name, ip, free_port_on(ip), free_port_on(ip), directory)
        self.dns.start(self.records(), ttl=30)
        resolver = f"{DNS_IP}:{self.dns.port}"
        outbound = f"sip:{POOL};transport={self.ua_transport}"
        self.caller = UserAgent(
            directory, "ua-caller", user="alice", ip="127.0.0.31", outbound=outbound, dns=resolver
        )
        self.holder = UserAgent(
            directory, "ua-holder", user="carol", ip="127.0.0.32", outbound=outbound, dns=resolver
        )
        # The pair: the primary sends its requests through the pool (SRV of _sip._udp.pool.test).
        self.primary = start_process(
            [
                sys.executable,
                str(MEMBER),
                "--listen",
                f"udp:{PRIMARY_IP}:{self.primary_port}",
                "--outbound",
                f"sip:{POOL};transport=udp",
                "--dns-server",
                resolver,
                "--request-uri",
                self.caller.contact,
                "--failover-timeout",
                str(self.member_failover_timeout),
            ],
            directory,
            "member-primary",
        )
        self.members.append(self.primary)
        self.members.append(
            start_process(
                [
                    sys.executable,
                    "-m",
                    "sipha",
                    "simulate-server",
                    "--listen",
                    f"udp:{BACKUP_IP}:{self.backup_port}",
                    "--mode",
                    "backup",
                ],
                directory,
                "member-backup",
            )
        )
        for instance in self.instances.values():
            instance.start(instance.write_config(self.dns.port, self.primary_port, self.backup_port))
        wait_for(self._members_ready, START_TIMEOUT, "the pair's simulated servers")
        for instance in self.instances.values():
            wait_for(
                lambda instance=instance: self._healthy(instance),
                START_TIMEOUT,
                f"sipha {instance.name} to find the pair active",
                interval=0.2,
            )
        self.caller.start()
        self.holder.start()

    def _healthy(self, instance: Instance) -> bool:
        assert instance.process is not None
        if instance.process.poll() is not None:
            raise AssertionError(f"sipha {instance.name} exited:\n{instance.log_text()}")
        return instance.healthy()

    def _members_ready(self) -> bool:
        for member, name in zip(self.members, ("member-primary", "member-backup"), strict=True):
            log = read_text(self.directory / f"{name}.log")
            if member.poll() is not None:
                raise AssertionError(f"{name} exited:\n{log}")
            if READY_LINE not in log:
                return False
        return True

    def member_log(self) -> str:
        return read_text(self.directory / "member-primary.log")

    def member_request(self, timeout: float) -> str:
        """SIGHUP the primary: one OPTIONS to the caller through the pool; its outcome line."""
        assert self.primary is not None
        before = self.member_log().count(" via sip:")
        os.kill(self.primary.pid, signal.SIGHUP)
        wait_for(
            lambda: self.member_log().count(" via sip:") > before, timeout, "the member's request outcome"
        )
        return [line for line in self.member_log().splitlines() if " via sip:" in line][before]

    def carrier(self, address: str) -> str:
        """The instance name of ``IP:PORT`` (a trace's source or destination), else the address."""
        for name, instance in self.instances.items():
            if address == f"{instance.ip}:{instance.port}":
                return name
        return address

    def close(self) -> None:
        agents = [agent for agent in (self.caller, self.holder) if agent is not None]
        for agent in agents:
            agent.quit()
        for agent in agents:
            agent.close()
        for instance in self.instances.values():
            instance.close()  # SIGCONT first when stopped
        for member in self.members:
            stop_group(member, timeout=5.0)
        self.dns.stop()
