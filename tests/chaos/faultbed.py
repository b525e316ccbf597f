"""A fault bed: sipha, the pair's simulated servers and SIPp in a network namespace of their own.

Everything runs on the namespace's loopback, each role on an address of its own
(the whole 127.0.0.0/8 is local on ``lo``; no address needs adding):

* sipha on 127.0.0.1:5060, the pair's primary on 127.0.0.2:5060, its backup on
  127.0.0.3:5060, SIPp's ``uac`` on 127.0.0.10:5060.  Inside the namespace every
  port is free, so several beds can run side by side.
* Faults are nftables rules in the namespace, on the **input** hook only: a drop
  on the output hook makes ``sendto`` fail with EPERM, which a sender takes for
  an ICMP error, not for a partition.  :meth:`Namespace.partition` drops what
  comes from (``"from"``), goes to (``"to"``) or both (``"both"``) an address;
  :meth:`Namespace.loss` drops a share of datagrams at random; :meth:`Namespace.heal`
  removes every fault.  Dropped packets are counted (counter ``dropped``), and
  :meth:`Namespace.watch` counts packets that match a rule (e.g. forged datagrams).
* Processes start with ``ip netns exec NS argv`` (``ip`` execs the command, so the
  Popen is the process itself and signals reach it directly).  Python code of the
  test itself (a UDP caller) runs in the namespace with :meth:`Namespace.call` /
  :meth:`Namespace.spawn`: a new thread that enters it with setns(2) (the network
  namespace is per thread) and ends with the call.

Nothing leaks: :meth:`Namespace.close` (the ``with`` block's end, a pytest
finalizer, or atexit for whatever is still open) sends SIGCONT, SIGTERM and then
SIGKILL to every process it started, SIGKILL to any other process still in the
namespace (e.g. worker processes orphaned by a killed parent), deletes the
nftables table and the namespace.  A namespace whose creator died without closing
it (SIGKILL) is reaped by the next bed that opens (its owner file names a dead pid).
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import pytest

from tests.integration.support import SIPP, RunningProxy, SippResult
from tests.integration.test_failover import Traced, log_lines, sipp_trace, wait_for

IP = shutil.which("ip")
NFT = shutil.which("nft")

SIPHA_IP = "127.0.0.1"
PRIMARY_IP = "127.0.0.2"
BACKUP_IP = "127.0.0.3"
CALLER_IP = "127.0.0.10"
SIP_PORT = 5060
PAIR = "ha"

LONG = os.environ.get("SIPHA_CHAOS_LONG") == "1"
"""The long runs the issue asks for (SIPHA_CHAOS_LONG=1); CI runs the short ones."""
REPEATS = 5 if LONG else 1
"""How many times each scenario of a module with ``REPEATED = True`` runs (conftest.py)."""

START_TIMEOUT = 15.0
STOP_GRACE = 3.0
TERM_AGAIN = 0.3
"""When Namespace.close sends its second SIGTERM, in s after the first (within STOP_GRACE)."""
TABLE = "sipha_chaos"
OWNERS = Path("/run/sipha-chaos")
"""One file per open namespace, named after it, holding the pid of the process that opened it."""

Direction = Literal["both", "to", "from"]
T = TypeVar("T")

_CLONE_NEWNET = 0x40000000
_LOG_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ", re.M)


# ---------------------------------------------------------------------------- can we?


_usable: list[str | None] = []


def unusable() -> str | None:
    """Why the fault bed cannot run here (a skip reason), or None: root, ``ip netns``, nft, sipp."""
    if _usable:
        return _usable[0]
    reason: str | None = None
    if os.geteuid() != 0:
        reason = "the fault bed needs root (network namespaces, nftables)"
    elif IP is None or NFT is None or SIPP is None:
        reason = "the fault bed needs ip (iproute2), nft (nftables) and sipp (sip-tester)"
    else:
        name = f"sipha-probe{secrets.token_hex(3)}"
        made = subprocess.run([IP, "netns", "add", name], capture_output=True, text=True, check=False)
        if made.returncode != 0:
            reason = f"ip netns add failed: {made.stderr.strip()}"
        else:
            listed = subprocess.run(
                [IP, "netns", "exec", name, NFT, "list", "tables"],
                capture_output=True,
                text=True,
                check=False,
            )
            subprocess.run([IP, "netns", "del", name], capture_output=True, check=False)
            if listed.returncode != 0:
                reason = f"nft does not work in a namespace: {listed.stderr.strip()}"
    _usable.append(reason)
    return reason


# ---------------------------------------------------------------------------- the namespace


def chaos_marks() -> list[pytest.MarkDecorator]:
    """The ``pytestmark`` of a fault-bed test module: integration, chaos, skipped where unusable."""
    reason = unusable()
    return [
        pytest.mark.integration,
        pytest.mark.chaos,
        pytest.mark.skipif(reason is not None, reason=str(reason)),
    ]


def _ip(*args: str, check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    assert IP is not None, "ip (iproute2) is not installed"
    return subprocess.run([IP, *args], capture_output=True, text=True, check=check, timeout=timeout)


def _pids_in(name: str) -> list[int]:
    listed = _ip("netns", "pids", name, check=False)
    return [int(pid) for pid in listed.stdout.split() if pid.isdigit()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_all_in(name: str) -> None:
    """SIGKILL every process left in namespace ``name``; wait (bounded) until they are gone."""
    deadline = time.monotonic() + STOP_GRACE
    while (pids := _pids_in(name)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _delete_namespace(name: str) -> None:
    _kill_all_in(name)
    _ip("netns", "exec", name, NFT or "nft", "delete", "table", "inet", TABLE, check=False)
    _ip("netns", "del", name, check=False)
    with contextlib.suppress(FileNotFoundError):
        (OWNERS / name).unlink()


def reap_stale() -> list[str]:
    """Delete the namespaces whose creator died without closing them; their names."""
    reaped = []
    for owner in sorted(OWNERS.glob("sipha-*")) if OWNERS.is_dir() else []:
        try:
            pid = int(owner.read_text().strip() or "0")
        except (OSError, ValueError):
            pid = 0
        if pid and _alive(pid):
            continue
        _delete_namespace(owner.name)
        reaped.append(owner.name)
    return reaped


_libc = ctypes.CDLL(None, use_errno=True)


def _enter(path: str) -> None:
    """setns(2) this thread into the network namespace at ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns {path}: {os.strerror(errno)}")
    finally:
        os.close(fd)


class InNamespace(Generic[T]):
    """A function running in a thread of its own inside a namespace; :meth:`result` waits for it."""

    def __init__(self, path: str, function: Callable[..., T], args: tuple[object, ...]) -> None:
        self._function = function
        self._args = args
        self._path = path
        self._value: list[T] = []
        self._error: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, name=f"netns {path}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            _enter(self._path)
            self._value.append(self._function(*self._args))
        except BaseException as error:  # noqa: BLE001 - handed to result()
            self._error.append(error)

    def result(self, timeout: float = 60.0) -> T:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError(f"{self._function.__name__} still running after {timeout} s")
        if self._error:
            raise self._error[0]
        return self._value[0]


_open: dict[str, Namespace] = {}


def _close_all() -> None:
    for namespace in list(_open.values()):
        namespace.close()


atexit.register(_close_all)


class Namespace:
    """A network namespace ``sipha-<random8>`` with ``lo`` up and an nftables table for faults.

    ``directory``: where the processes' logs and files go.  Use it as a context
    manager (or call :meth:`open` and :meth:`close`); :meth:`close` is idempotent.
    """

    def __init__(self, directory: Path) -> None:
        self.name = f"sipha-{secrets.token_hex(4)}"
        self.directory = directory
        self.processes: list[subprocess.Popen[bytes]] = []
        self._threads: list[InNamespace[Any]] = []
        self._opened = False
        self._closed = False

    @property
    def path(self) -> str:
        """The namespace's file (``ip netns`` keeps it under /run/netns)."""
        return f"/run/netns/{self.name}"

    def open(self) -> Namespace:
        reap_stale()
        _ip("netns", "add", self.name)
        self._opened = True
        _open[self.name] = self
        OWNERS.mkdir(parents=True, exist_ok=True)
        (OWNERS / self.name).write_text(f"{os.getpid()}\n")
        try:
            self.run("ip", "link", "set", "lo", "up")
            self.nft(
                f"""
                table inet {TABLE} {{
                    counter dropped {{ }}
                    chain watch {{ }}
                    chain faults {{ }}
                    chain input {{
                        type filter hook input priority 0; policy accept;
                        jump watch
                        jump faults
                    }}
                }}
                """
            )
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop every process (SIGCONT, SIGTERM, SIGKILL), then delete the rules and the namespace."""
        if self._closed or not self._opened:
            return
        self._closed = True
        try:
            running = [p for p in self.processes if p.poll() is None]
            for process in running:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGCONT)  # a SIGSTOPped process would not see SIGTERM
                    process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE
            # A sipha with a transaction or a call still under way drains (up to 32 s) on the
            # first SIGTERM and stops at once on a second one (sipha.app): sent to whatever
            # is still running a moment later, rather than waiting out STOP_GRACE.
            again = time.monotonic() + TERM_AGAIN
            for process in running:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(max(0.0, again - time.monotonic()))
            for process in running:
                if process.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.send_signal(signal.SIGTERM)
            for process in running:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(max(0.0, deadline - time.monotonic()))
                if process.poll() is None:
                    process.kill()
                    process.wait(STOP_GRACE)
            for thread in self._threads:
                thread.thread.join(STOP_GRACE)  # bounded by their own deadlines
        finally:
            _delete_namespace(self.name)
            _open.pop(self.name, None)

    def __enter__(self) -> Namespace:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ processes

    def argv(self, *args: str) -> list[str]:
        """``args`` run inside the namespace."""
        assert IP is not None
        return [IP, "netns", "exec", self.name, *args]

    def run(self, *args: str, stdin: str | None = None, timeout: float = 10.0) -> str:
        """Run ``args`` in the namespace to completion; its stdout (raises on a non-zero exit)."""
        done = subprocess.run(
            self.argv(*args), input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} in {self.name} failed ({done.returncode}): {done.stderr}")
        return done.stdout

    def popen(self, *args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``args`` in the namespace (stdout and stderr to ``log``); stopped by :meth:`close`."""
        if self._closed:
            raise RuntimeError(f"namespace {self.name} is closed")
        output = subprocess.DEVNULL if log is None else log.open("wb")
        try:
            process = subprocess.Popen(
                self.argv(*args),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        finally:
            if log is not None and not isinstance(output, int):
                output.close()
        self.processes.append(process)
        return process

    def call(self, function: Callable[..., T], *args: object, timeout: float = 60.0) -> T:
        """``function(*args)`` inside the namespace (its sockets live there); its result."""
        return self.spawn(function, *args).result(timeout)

    def spawn(self, function: Callable[..., T], *args: object) -> InNamespace[T]:
        """``function(*args)`` inside the namespace, in the background; ``.result()`` waits for it."""
        if self._closed:
            raise RuntimeError(f"namespace {self.name} is closed")
        running: InNamespace[T] = InNamespace(self.path, function, args)
        self._threads.append(running)
        return running

    # ------------------------------------------------------------------ faults (nftables, input hook)

    def nft(self, script: str) -> None:
        """Apply an nft script in the namespace (``nft -f -``)."""
        assert NFT is not None
        self.run(NFT, "-f", "-", stdin=script)

    def _drop(self, *matches: str) -> None:
        self.nft(
            "".join(f"add rule inet {TABLE} faults {match} counter name dropped drop\n" for match in matches)
        )

    def partition(self, ip: str, direction: Direction = "both") -> None:
        """Cut ``ip`` off: ``"both"``; ``"to"``: nothing reaches it; ``"from"``: nothing is heard from it.

        On the input hook: what is sent still leaves its socket without an error,
        and the dropped packet makes no ICMP error (a silent network, not a dead host).
        """
        matches = {
            "both": [f"ip saddr {ip}", f"ip daddr {ip}"],
            "to": [f"ip daddr {ip}"],
            "from": [f"ip saddr {ip}"],
        }[direction]
        self._drop(*matches)

    def loss(self, percent: int, ip: str | None = None) -> None:
        """Drop ``percent`` % of the packets at random (those from or to ``ip``, or all)."""
        if not 0 <= percent <= 100:
            raise ValueError(f"loss {percent}%: 0 to 100")
        chance = f"numgen random mod 100 < {percent}"
        self._drop(*([chance] if ip is None else [f"ip saddr {ip} {chance}", f"ip daddr {ip} {chance}"]))

    def heal(self) -> None:
        """Remove every fault (partitions and losses); the counters stay."""
        self.nft(f"flush chain inet {TABLE} faults\n")

    def watch(self, name: str, match: str) -> None:
        """Count the packets that match ``match`` (an nft expression) in counter ``name``."""
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"counter name {name!r}")
        self.nft(
            f"add counter inet {TABLE} {name}\nadd rule inet {TABLE} watch {match} counter name {name}\n"
        )

    def counter(self, name: str = "dropped") -> int:
        """Packets counted by counter ``name`` (``dropped``: every packet a fault dropped)."""
        assert NFT is not None
        listed = json.loads(self.run(NFT, "-j", "list", "counter", "inet", TABLE, name))
        for item in listed["nftables"]:
            if "counter" in item:
                return int(item["counter"]["packets"])
        raise LookupError(name)


# ---------------------------------------------------------------------------- logs


def log_time(line_start: str) -> datetime:
    """The time of a Python logging line (``2026-12-02 20:31:14,604 ...``; local wall clock)."""
    match = _LOG_STAMP.match(line_start)
    assert match is not None, line_start
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")


def count_lines(proxy: RunningProxy, needle: str, after: datetime | None = None) -> int:
    return sum(
        1 for line in log_lines(proxy) if needle in line.message and (after is None or line.at >= after)
    )


def wait_count(
    proxy: RunningProxy, needle: str, count: int, *, after: datetime | None = None, timeout: float = 10.0
) -> None:
    """Wait until ``count`` sipha.log lines (at or after ``after``) contain ``needle``."""
    try:
        wait_for(lambda: count_lines(proxy, needle, after) >= count, repr(needle), proxy.process, timeout)
    except AssertionError as error:
        raise AssertionError(f"{error} x{count}; sipha.log:\n{proxy.log_text()[-4000:]}") from None


# ---------------------------------------------------------------------------- sipha and the pair


def member_address(ip: str) -> str:
    return f"udp:{ip}:{SIP_PORT}"


def active_line(role: str, ip: str) -> str:
    """The log line sipha writes when ``role`` (primary/backup) ``ip`` becomes active."""
    return f"pair {PAIR}: {role} {member_address(ip)} is active"


def write_sipha_config(path: Path, *, workers: int = 1, monitor: Mapping[str, object]) -> Path:
    """sipha on SIPHA_IP:SIP_PORT (UDP), pair ``ha`` = PRIMARY_IP / BACKUP_IP, ``[monitor]`` as given."""
    lines = [
        "[proxy]",
        f'listen = ["udp:{SIPHA_IP}:{SIP_PORT}"]',
        f'record-route = "sip:{SIPHA_IP}:{SIP_PORT};lr"',
        *([f"workers = {workers}"] if workers > 1 else []),
        "",
        "[admin]",
        f'listen = "{SIPHA_IP}:8080"',
        "",
        "[monitor]",
        *(f"{key} = {value}" for key, value in monitor.items()),
        "",
        "[[pair]]",
        f'name = "{PAIR}"',
        f'primary = "{member_address(PRIMARY_IP)}"',
        f'backup = "{member_address(BACKUP_IP)}"',
        "serving = true",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def start_sipha(ns: Namespace, *, workers: int = 1, monitor: Mapping[str, object]) -> RunningProxy:
    """``sipha run`` in ``ns``; returns once every worker listens on UDP (raises with its log if it fails)."""
    config = write_sipha_config(ns.directory / "sipha.toml", workers=workers, monitor=monitor)
    log = ns.directory / "sipha.log"
    process = ns.popen(sys.executable, "-m", "sipha", "run", "--config", str(config), log=log)
    proxy = RunningProxy(SIP_PORT, config, log, process, [])
    listening = f"listening on udp:{SIPHA_IP}:{SIP_PORT}"
    deadline = time.monotonic() + START_TIMEOUT
    while proxy.log_text().count(listening) < workers:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"sipha did not start (exit {process.poll()}):\n{proxy.log_text()[-4000:]}")
        time.sleep(0.05)
    return proxy


@dataclass
class Member:
    """A ``sipha simulate-server`` process in the namespace: one member of the pair."""

    name: str
    ip: str
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return member_address(self.ip)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def logged_at(self, needle: str) -> datetime | None:
        """When it first logged a line containing ``needle`` (None: not yet)."""
        for line in self.log_text().splitlines():
            if needle in line:
                return log_time(line)
        return None

    def listening_at(self) -> datetime | None:
        """When it bound its port (its log), or None if it has not."""
        return self.logged_at("simulated server listening on")


def start_member(ns: Namespace, name: str, ip: str, mode: str, *args: str, wait: bool = True) -> Member:
    """``sipha simulate-server`` on ``ip``:SIP_PORT in ``mode``; with ``wait``, once it listens."""
    log = ns.directory / f"{name}.log"
    process = ns.popen(
        sys.executable,
        "-m",
        "sipha",
        "simulate-server",
        "--listen",
        member_address(ip),
        "--mode",
        mode,
        *args,
        log=log,
    )
    member = Member(name, ip, log, process)
    needle = "simulated server listening" if wait else "simulated server"
    wait_for(lambda: needle in member.log_text(), f"{name} simulator to start", process, START_TIMEOUT)
    return member


# ---------------------------------------------------------------------------- SIPp


@dataclass
class SippRun:
    """A SIPp client running in the namespace, towards sipha; :meth:`wait` reads its statistics."""

    process: subprocess.Popen[bytes]
    name: str
    directory: Path
    timeout: float
    started: datetime = field(default_factory=datetime.now)

    @property
    def messages(self) -> Path:
        return self.directory / f"{self.name}_messages.log"

    def wait(self) -> SippResult:
        """Wait for SIPp to finish (bounded by its -timeout plus a margin); its counters."""
        try:
            returncode = self.process.wait(self.timeout + 15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            returncode = self.process.wait(STOP_GRACE)
        stats_file = self.directory / f"{self.name}_stats.csv"
        errors_file = self.directory / f"{self.name}_errors.log"
        rows = (
            list(csv.reader(stats_file.open(encoding="utf-8"), delimiter=";")) if stats_file.exists() else []
        )
        stats = dict(zip(rows[0], rows[-1], strict=False)) if len(rows) > 1 else {}
        errors = errors_file.read_text(encoding="utf-8", errors="replace") if errors_file.exists() else ""
        return SippResult(
            returncode,
            int(stats.get("SuccessfulCall(C)", "0")),
            int(stats.get("FailedCall(C)", "0")),
            int(stats.get("TotalCallCreated", "0")),
            stats,
            errors,
        )

    def trace(self) -> list[Traced]:
        return sipp_trace(self.messages)


def start_uac(
    ns: Namespace,
    calls: int,
    rate: float,
    *args: str,
    scenario: str = "uac",
    name: str = "uac",
    timeout: float = 60.0,
) -> SippRun:
    """SIPp (built-in ``uac`` or an XML scenario) on CALLER_IP towards sipha: ``calls`` at ``rate``/s.

    Traced (``-trace_msg``: which member answered is in the Contact of the 200)
    and with statistics (``-trace_stat``); bounded by ``-timeout``.
    """
    assert SIPP is not None
    scenario_args = ["-sf", scenario] if scenario.endswith(".xml") else ["-sn", scenario]
    directory = ns.directory
    process = ns.popen(
        SIPP,
        *scenario_args,
        f"{SIPHA_IP}:{SIP_PORT}",
        "-i",
        CALLER_IP,
        "-p",
        str(SIP_PORT),
        "-m",
        str(calls),
        "-r",
        f"{rate:g}",
        "-nostdin",
        "-timeout",
        f"{int(timeout)}s",
        "-trace_stat",
        "-stf",
        str(directory / f"{name}_stats.csv"),
        "-trace_err",
        "-error_file",
        str(directory / f"{name}_errors.log"),
        "-trace_msg",
        "-message_file",
        str(directory / f"{name}_messages.log"),
        *args,
    )
    return SippRun(process, name, directory, timeout)


# ---------------------------------------------------------------------------- calls, from SIPp's trace


_CONTACT_HOST = re.compile(r"@([^:>;\s]+)")


@dataclass
class Call:
    """One SIPp call as its message trace shows it (times: SIPp's clock, local wall time)."""

    call_id: str
    invited: datetime
    """When SIPp sent the INVITE (the first time)."""
    rang_from: list[str] = field(default_factory=list)
    """The hosts (Contact) of the 180s it got, in order."""
    final: int | None = None
    """The first final status to its INVITE."""
    answered: datetime | None = None
    """When the first 200 to its INVITE arrived."""
    answered_by: str | None = None
    """The host in that 200's Contact: the member that answered."""
    bye: int | None = None
    """The final status to its BYE."""

    @property
    def ok(self) -> bool:
        return self.final == 200 and self.bye == 200

    @property
    def post_dial_delay(self) -> float | None:
        """INVITE sent -> 200 received, seconds."""
        return None if self.answered is None else (self.answered - self.invited).total_seconds()


def _status(message: Traced) -> int | None:
    line = message.first_line
    return int(line.split(" ", 2)[1]) if line.startswith("SIP/2.0 ") else None


def _contact_host(message: Traced) -> str | None:
    match = _CONTACT_HOST.search(message.header("Contact"))
    return None if match is None else match.group(1)


def calls_of(trace: Iterable[Traced]) -> dict[str, Call]:
    """The calls of a SIPp ``uac`` trace, by Call-ID."""
    calls: dict[str, Call] = {}
    for message in trace:
        call_id = message.header("Call-ID")
        if message.direction == "sent":
            if message.first_line.startswith("INVITE ") and call_id not in calls:
                calls[call_id] = Call(call_id, message.at)
            continue
        call = calls.get(call_id)
        status = _status(message)
        if call is None or status is None:
            continue
        method = message.header("CSeq").split()[-1].upper()
        if method == "INVITE":
            if status == 180:
                call.rang_from.append(_contact_host(message) or "?")
            elif status >= 200 and call.final is None:
                call.final = status
                if status == 200:
                    call.answered, call.answered_by = message.at, _contact_host(message)
        elif method == "BYE" and status >= 200 and call.bye is None:
            call.bye = status
    return calls


def answered_by(calls: Iterable[Call], ip: str) -> list[datetime]:
    """When the calls answered by ``ip`` got their 200, in order."""
    return sorted(c.answered for c in calls if c.answered is not None and c.answered_by == ip)


def longest_post_dial_delay(calls: Iterable[Call]) -> float:
    return max((d for c in calls if (d := c.post_dial_delay) is not None), default=0.0)


# ---------------------------------------------------------------------------- time


def sleep_until(deadline: float) -> None:
    """Sleep until ``time.monotonic()`` reaches ``deadline``."""
    time.sleep(max(0.0, deadline - time.monotonic()))


def seconds(later: datetime | None, earlier: datetime) -> float:
    """``later - earlier`` in seconds (inf when ``later`` is None)."""
    return float("inf") if later is None else (later - earlier).total_seconds()
