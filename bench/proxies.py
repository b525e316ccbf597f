#!/usr/bin/env python3
"""Side-by-side proxy benchmark: sipha and Kamailio under SIPp's ``uac`` scenario.

One run of this script, everything on 127.0.0.1:

1. for each transport (UDP, and TCP with ``--transport tcp|both``) and each
   proxy (sipha, then Kamailio with ``bench/kamailio/kamailio.cfg``):

   * start the pair: a primary ``sipp -sn uas -aa`` (answers calls and the
     proxy's OPTIONS probes) and an idle backup (a socket that reads and
     discards, so the backup never answers a probe);
   * start the proxy in front of the pair, wait until it routes (a warm-up of
     100 calls must all succeed);
   * run SIPp's built-in ``uac`` scenario towards the proxy at each rate of
     the ladder for ``--duration`` seconds (``-m rate*duration``), measuring
     the proxy's CPU time (utime + stime of all its processes from /proc),
     SIPp's call counts and per-call response times (``-trace_rtt``);
   * stop the ladder after the first step with more than 10% failed calls;

2. (UDP) resident memory: a fresh proxy, baseline RSS after the warm-up, then
   10,000 calls held open (``uac -d 30000`` at 1,000 calls/s) and the RSS again.

It prints a Markdown report (table, summary, machine, command) and writes it
to ``--out``.  Kamailio and SIPp are installed with apt-get when missing (as
root).  Usage::

    .venv/bin/python bench/proxies.py [--quick] [--rates 500,1000] [--duration S]
                                      [--transport udp|tcp|both] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import json
import math
import os
import platform
import re
import resource
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

HOST = "127.0.0.1"
BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
KAMAILIO_CFG = BENCH / "kamailio" / "kamailio.cfg"

DEFAULT_RATES = [500, 1000, 2000, 3000, 4000, 5000, 7000, 10000]
QUICK_RATES = [200, 500, 1000]
QUICK_DURATION = 5
STOP_FAILED_PCT = 10.0  # a step above this ends the proxy's ladder
OK_FAILED_PCT = 1.0  # the criterion: at most this many failed calls
KEEP_UP = 0.95  # "sustained": also answered calls/s >= this share of the offered rate
WARMUP_CALLS = 100
HOLD_CALLS = 10_000
HOLD_RATE = 1_000
HOLD_MS = 30_000
SIPP_BUFFER = 4 * 1024 * 1024  # SIPp -buff_size (socket buffers; net.core.rmem_max here)
RECV_TIMEOUT_MS = 5_000  # a call that waits longer than this for a message fails
KAMAILIO_SHM_MB = 4096  # tm keeps answered transactions 5 s: ~1 GiB at 7,000 calls/s over TCP
KAMAILIO_PKG_MB = 16
SIPHA_WORKERS = 2
COMPILED_PYTHON = REPO / ".venv-compiled" / "bin" / "python"
"""``[proxy] workers`` of sipha: as many as Kamailio's UDP workers (``children=2``); --sipha-workers."""
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# --------------------------------------------------------------------------- setup


def ensure_installed() -> None:
    """SIPp (Debian sip-tester) and Kamailio: install with apt-get when missing."""
    missing = []
    if shutil.which("sipp") is None:
        missing.append("sip-tester")
    if shutil.which("kamailio") is None and not Path("/usr/sbin/kamailio").exists():
        missing.append("kamailio")
    else:
        dpkg = subprocess.run(["dpkg", "-s", "kamailio"], capture_output=True, check=False)
        if dpkg.returncode != 0 and shutil.which("kamailio") is None:
            missing.append("kamailio")
    if not missing:
        log("SIPp and Kamailio are installed")
        return
    if os.geteuid() != 0:
        sys.exit(f"missing Debian packages {missing}: run as root or `apt-get install {' '.join(missing)}`")
    log(f"installing Debian packages {missing} (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env, timeout=600)
    subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", *missing], check=True, env=env, timeout=1200
    )
    # The Debian package enables a system service; this benchmark runs its own
    # Kamailio in the foreground and does not need (or start) the service.


def kamailio_bin() -> str:
    return shutil.which("kamailio") or "/usr/sbin/kamailio"


def check_kamailio_cfg() -> None:
    result = subprocess.run(
        [kamailio_bin(), "-c", "-f", str(KAMAILIO_CFG)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        sys.exit(f"{KAMAILIO_CFG} does not validate:\n{result.stdout}{result.stderr}")
    log(f"kamailio -c -f {KAMAILIO_CFG.relative_to(REPO)}: OK")


_used_ports: set[int] = set()


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1, never handed out twice in a run."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((HOST, 0))
            port = int(tcp.getsockname()[1])
            if port in _used_ports:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((HOST, port))
                except OSError:
                    continue
        _used_ports.add(port)
        return port
    raise RuntimeError("no free port")


# --------------------------------------------------------------------------- /proc


def _proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may hold spaces and parentheses: split after the last ')'
    return text[text.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _proc_stat(int(entry))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if Path(f"/proc/{pid}").exists():
            out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """utime + stime per pid (s)."""
    out = {}
    for pid in pids:
        fields = _proc_stat(pid)
        if fields is not None:  # fields[0] is field 3 (state): utime = 14, stime = 15
            out[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def rss_kib(pids: list[int]) -> tuple[int, int]:
    """(sum of VmRSS, sum of Pss) over ``pids``, KiB."""
    rss = pss = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return rss, pss


def udp_drops() -> tuple[dict[int, int], int]:
    """(datagrams dropped per local UDP port on 127.0.0.1, the kernel's total UdpRcvbufErrors).

    A socket's ``drops`` (/proc/net/udp) counts datagrams lost because its receive
    buffer was full: the reader fell behind.
    """
    per_port: dict[int, int] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
            fields = line.split()
            port = int(fields[1].split(":")[1], 16)
            per_port[port] = per_port.get(port, 0) + int(fields[-1])
    total = 0
    with contextlib.suppress(OSError, ValueError, StopIteration):
        rows = [
            line.split()
            for line in Path("/proc/net/snmp").read_text().splitlines()
            if line.startswith("Udp:")
        ]
        total = int(rows[1][rows[0].index("RcvbufErrors")])
    return per_port, total


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def stop_process(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM to the process group, wait, then SIGKILL the group and any stray descendant."""
    if process.poll() is not None:
        return
    tree = process_tree(process.pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)
    for pid in tree:  # started in its own session: all of these are ours
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def popen(args: list[str], workdir: Path, name: str) -> subprocess.Popen[bytes]:
    """Start ``args`` in its own session (so its whole group can be killed), output to ``name``.log."""
    out = (workdir / f"{name}.log").open("wb")
    try:
        return subprocess.Popen(
            args,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        out.close()


# --------------------------------------------------------------------------- the pair


class IdleMember:
    """The backup: a UDP socket and a TCP listener on one port that read and discard everything."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.selector = selectors.DefaultSelector()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((HOST, port))
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((HOST, port))
        self.tcp.listen(16)
        for sock in (self.udp, self.tcp):
            sock.settimeout(0.0)  # non-blocking
            self.selector.register(sock, selectors.EVENT_READ)
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name=f"idle-{port}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping:
            for key, _ in self.selector.select(0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                with contextlib.suppress(OSError):
                    if sock is self.tcp:
                        conn, _ = sock.accept()
                        conn.settimeout(0.0)
                        self.selector.register(conn, selectors.EVENT_READ)
                    elif sock is self.udp:
                        sock.recv(65535)
                    elif not sock.recv(65535):
                        self.selector.unregister(sock)
                        sock.close()

    def close(self) -> None:
        self.stopping = True
        self.thread.join(2)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.selector.close()


@contextlib.contextmanager
def pair(workdir: Path, transport: str) -> Iterator[tuple[int, int, subprocess.Popen[bytes]]]:
    """(primary port, backup port, primary SIPp process): SIPp uas -aa and an idle backup."""
    primary, backup = free_port(), free_port()
    args = [
        "sipp",
        "-sn",
        "uas",
        "-i",
        HOST,
        "-p",
        str(primary),
        "-aa",
        "-nostdin",
        "-buff_size",
        str(SIPP_BUFFER),
        "-timeout",
        "7200s",  # a safety bound; killed at the end
    ]
    if transport == "tcp":
        args += ["-t", "t1"]
    idle = IdleMember(backup)
    uas = popen(args, workdir, f"uas-{transport}")
    try:
        time.sleep(0.3)
        if uas.poll() is not None:
            raise RuntimeError(f"SIPp uas exited at once: see {workdir}/uas-{transport}.log")
        yield primary, backup, uas
    finally:
        stop_process(uas)
        idle.close()


# --------------------------------------------------------------------------- proxies


class Proxy:
    name = ""

    def __init__(self, workdir: Path, transport: str, primary: int, backup: int) -> None:
        self.workdir = workdir
        self.transport = transport
        self.primary = primary
        self.backup = backup
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        raise NotImplementedError

    def ready(self) -> bool:
        return True

    def pids(self) -> list[int]:
        assert self.process is not None
        return process_tree(self.process.pid)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def log_excerpt(self, lines: int = 15) -> str:
        path = self.workdir / f"{self.name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def log_count(self, *words: str) -> int:
        path = self.workdir / f"{self.name}.log"
        if not path.exists():
            return 0
        return sum(
            1 for line in path.read_text(errors="replace").splitlines() if any(w in line for w in words)
        )


class Sipha(Proxy):
    name = "sipha"
    workers = SIPHA_WORKERS
    python = sys.executable
    """The interpreter that runs sipha: the compiled build's (make compiled) when there is one."""

    def start(self) -> None:
        self.admin = free_port()
        member = "tcp" if self.transport == "tcp" else "udp"
        config = self.workdir / "sipha.toml"
        config.write_text(
            f"""# generated by bench/proxies.py
[proxy]
listen = ["udp:{HOST}:{self.port}", "tcp:{HOST}:{self.port}"]
record-route = "sip:{HOST}:{self.port};lr"

workers = {self.workers}

[monitor]
# A member is counted out after 2 s without an answer, as Kamailio's fr_timer (2 s) does
# with its OPTIONS probes and with a forwarded INVITE that got no provisional response.
oos-check = 2
oos-force = 1
failover-timeout = 2.0

[admin]
listen = "{HOST}:{self.admin}"

[[pair]]
name = "bench"
primary = "{member}:{HOST}:{self.primary}"
backup = "{member}:{HOST}:{self.backup}"
serving = true
"""
        )
        self.process = popen(
            [self.python, "-m", "sipha", "run", "--config", str(config)], self.workdir, self.name
        )

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.admin}/healthz", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False


class Kamailio(Proxy):
    name = "kamailio"

    def start(self) -> None:
        rundir = self.workdir / "kamailio-run"
        rundir.mkdir(exist_ok=True)
        suffix = ";transport=tcp" if self.transport == "tcp" else ""
        dslist = self.workdir / "dispatcher.list"
        dslist.write_text(
            "# set destination flags priority -- generated by bench/proxies.py\n"
            f"1 sip:{HOST}:{self.primary}{suffix} 0 10\n"
            f"1 sip:{HOST}:{self.backup}{suffix} 0 5\n"
        )
        self.process = popen(
            [
                kamailio_bin(),
                "-DD",
                "-E",
                "-f",
                str(KAMAILIO_CFG),
                "-Y",
                str(rundir),
                "-m",
                str(KAMAILIO_SHM_MB),
                "-M",
                str(KAMAILIO_PKG_MB),
                "-A",
                f"SIP_PORT={self.port}",
                "-A",
                f'DS_LIST="{dslist}"',
            ],
            self.workdir,
            self.name,
        )


PROXIES: dict[str, type[Proxy]] = {"sipha": Sipha, "kamailio": Kamailio}


# --------------------------------------------------------------------------- SIPp uac


@dataclass
class UacResult:
    created: int = 0
    successful: int = 0
    failed_sipp: int = 0
    retransmissions: int = 0
    elapsed: float = 0.0
    returncode: int | None = None
    rtts_ms: list[float] = field(default_factory=list)
    answer_times_ms: list[float] = field(default_factory=list)
    sipp_cpu: float = 0.0
    late_provisional: int = 0
    causes: Counter[str] = field(default_factory=Counter)
    stats: dict[str, str] = field(default_factory=dict)


def sipp_uac_args(target_port: int, transport: str, stat_file: Path, *extra: str) -> list[str]:
    args = [
        "sipp",
        "-sn",
        "uac",
        f"{HOST}:{target_port}",
        "-i",
        HOST,
        "-p",
        str(free_port()),
        "-nostdin",
        "-buff_size",
        str(SIPP_BUFFER),
        "-recv_timeout",
        str(RECV_TIMEOUT_MS),
        "-trace_stat",
        "-stf",
        str(stat_file),
        "-trace_err",
        "-error_file",
        str(stat_file.with_suffix(".err")),
        *extra,
    ]
    if transport == "tcp":
        args += ["-t", "t1"]
    return args


def read_stats(stat_file: Path) -> dict[str, str]:
    if not stat_file.exists():
        return {}
    rows = list(csv.reader(stat_file.open(encoding="utf-8", errors="replace"), delimiter=";"))
    return dict(zip(rows[0], rows[-1], strict=False)) if len(rows) > 1 else {}


def run_uac(workdir: Path, port: int, transport: str, *, rate: int, calls: int, duration: float) -> UacResult:
    """SIPp uac: ``calls`` calls at ``rate`` calls/s, bounded by -timeout and a subprocess timeout."""
    workdir.mkdir(parents=True, exist_ok=True)
    stat_file = workdir / "uac_stats.csv"
    bound = int(duration + RECV_TIMEOUT_MS / 1000 * 4 + 10)
    args = sipp_uac_args(
        port,
        transport,
        stat_file,
        "-r",
        str(rate),
        "-rp",
        "1000",
        "-m",
        str(calls),
        "-timeout",
        f"{bound}s",
        "-trace_rtt",
        "-rtt_freq",
        "1000",
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    process = popen(args, workdir, "uac")
    try:
        process.wait(bound + 30)
    except subprocess.TimeoutExpired:
        log(f"  SIPp uac did not end within {bound + 30} s: killed")
    finally:
        stop_process(process)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = UacResult(elapsed=time.monotonic() - start, returncode=process.returncode)
    result.sipp_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    result.stats = read_stats(stat_file)
    result.created = int(result.stats.get("TotalCallCreated", 0) or 0)
    result.successful = int(result.stats.get("SuccessfulCall(C)", 0) or 0)
    result.failed_sipp = int(result.stats.get("FailedCall(C)", 0) or 0)
    result.retransmissions = int(result.stats.get("Retransmissions(C)", 0) or 0)
    errors = stat_file.with_suffix(".err")
    if errors.exists():
        # a call aborted because a 1xx came after its 200 (SIPp is already past the 1xx
        # receives): the proxy reordered the responses of one transaction
        result.causes = failure_causes(errors)
        result.late_provisional = result.causes[LATE_1XX]
    for rtt_file in workdir.glob("uac_*_rtt.csv"):
        with rtt_file.open(encoding="utf-8", errors="replace") as handle:
            next(handle, None)
            for line in handle:
                parts = line.strip().split(";")
                if len(parts) >= 2:
                    with contextlib.suppress(ValueError):
                        result.answer_times_ms.append(float(parts[0]))
                        result.rtts_ms.append(float(parts[1]))
    return result


LATE_1XX = "1xx after the 200"
_UNEXPECTED = re.compile(r"Aborting call on unexpected message .*, received '(SIP/2\.0 (\d+)|\w+)")


def failure_causes(error_file: Path) -> Counter[str]:
    """Why SIPp aborted calls, from its -trace_err file: status code received, 1xx reordered, timeouts."""
    causes: Counter[str] = Counter()
    for line in error_file.read_text(errors="replace").splitlines():
        match = _UNEXPECTED.search(line)
        if match:
            received, code = match.group(1), match.group(2)
            if code and code.startswith("1"):
                # SIPp is past its 1xx receives (in the pause after the INVITE's 200, or waiting
                # for the BYE's 200): the proxy reordered the responses of one transaction
                causes[LATE_1XX] += 1
            else:
                causes[f"{code} received" if code else f"unexpected {received}"] += 1
        elif "Aborting call" in line or "timeout" in line.lower():
            causes["timeout" if "timeout" in line.lower() else line.split(":", 3)[-1].strip()[:60]] += 1
    return causes


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1))  # nearest rank
    return ordered[index]


# --------------------------------------------------------------------------- the steps


@dataclass
class Step:
    proxy: str
    transport: str
    rate: int
    offered_calls: int
    created: int
    successful: int
    achieved_cps: float
    proxy_cpu: float
    uas_cpu: float
    sipp_cpu: float
    wall: float
    load: str
    p50: float | None
    p95: float | None
    p99: float | None
    retransmissions: int
    late_provisional: int
    causes: Counter[str]
    proxy_drops: int
    other_drops: int
    note: str = ""

    @property
    def failed(self) -> int:
        # calls SIPp made that did not complete (failed, or cut by the -timeout bound)
        return max(0, self.created - self.successful) + max(0, self.offered_calls - self.created)

    @property
    def failed_pct(self) -> float:
        return 100.0 * self.failed / self.offered_calls if self.offered_calls else 100.0

    @property
    def cpu_per_1000(self) -> float:
        calls = max(self.created, 1)
        return 1000.0 * self.proxy_cpu / calls


def warm_up(proxy: Proxy, workdir: Path, deadline: float) -> None:
    """Wait for the proxy (and for it to find the primary), then 100 calls that must all succeed."""
    while not proxy.ready():
        if proxy.process is not None and proxy.process.poll() is not None:
            raise RuntimeError(f"{proxy.name} exited:\n{proxy.log_excerpt()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proxy.name} not ready:\n{proxy.log_excerpt()}")
        time.sleep(0.1)
    attempt = 0
    while True:
        attempt += 1
        result = run_uac(
            workdir / f"warmup{attempt}",
            proxy.port,
            proxy.transport,
            rate=100,
            calls=WARMUP_CALLS,
            duration=1,
        )
        if result.successful == WARMUP_CALLS:
            return
        if time.monotonic() > deadline:
            succeeded = f"{result.successful}/{WARMUP_CALLS}"
            raise RuntimeError(f"{proxy.name} warm-up: {succeeded} calls succeeded:\n{proxy.log_excerpt()}")
        time.sleep(1)


def run_ladder(proxy_name: str, transport: str, rates: list[int], duration: float, root: Path) -> list[Step]:
    workdir = root / f"{proxy_name}-{transport}"
    workdir.mkdir()
    steps: list[Step] = []
    with pair(workdir, transport) as (primary, backup, uas):
        proxy = PROXIES[proxy_name](workdir, transport, primary, backup)
        try:
            proxy.start()
            log(f"{proxy_name} {transport}: started on {HOST}:{proxy.port} (pair {primary}/{backup})")
            warm_up(proxy, workdir, time.monotonic() + 30)
            for rate in rates:
                calls = int(rate * duration)
                load = loadavg()
                pids = proxy.pids()
                drops0, all_drops0 = udp_drops()
                cpu0 = cpu_seconds(pids)
                uas0 = cpu_seconds([uas.pid]).get(uas.pid, 0.0)
                result = run_uac(
                    workdir / f"rate{rate}", proxy.port, transport, rate=rate, calls=calls, duration=duration
                )
                pids = sorted(set(pids) | set(proxy.pids()))
                cpu1 = cpu_seconds(pids)
                drops1, all_drops1 = udp_drops()
                proxy_drops = drops1.get(proxy.port, 0) - drops0.get(proxy.port, 0)
                uas1 = cpu_seconds([uas.pid]).get(uas.pid, 0.0)
                proxy_cpu = sum(cpu1.get(pid, 0.0) - cpu0.get(pid, 0.0) for pid in pids)
                times = sorted(result.answer_times_ms)
                span = (times[-1] - times[0]) / 1000 if len(times) > 1 else 0.0
                achieved = (len(times) - 1) / span if span > 0 else 0.0
                rtts = result.rtts_ms
                step = Step(
                    proxy_name,
                    transport,
                    rate,
                    calls,
                    result.created,
                    result.successful,
                    achieved,
                    proxy_cpu,
                    uas1 - uas0,
                    result.sipp_cpu,
                    result.elapsed,
                    load,
                    percentile(rtts, 50) if rtts else None,
                    percentile(rtts, 95) if rtts else None,
                    percentile(rtts, 99) if rtts else None,
                    result.retransmissions,
                    result.late_provisional,
                    result.causes,
                    proxy_drops,
                    all_drops1 - all_drops0 - proxy_drops,
                )
                if proxy.process is not None and proxy.process.poll() is not None:
                    step.note = f"{proxy_name} exited"
                steps.append(step)
                log(
                    f"  {proxy_name} {transport} {rate:>6} cps: achieved {achieved:8.0f},"
                    f" failed {step.failed}"
                    f" ({step.failed_pct:.2f}%; 1xx after 200: {step.late_provisional}),"
                    f" proxy CPU {proxy_cpu:.2f} s ({step.cpu_per_1000:.3f} s/1000),"
                    f" SIPp uac CPU {100 * result.sipp_cpu / max(result.elapsed, 1e-9):.0f}%,"
                    f" RT p50/p95/p99 {fmt_ms(step.p50)}/{fmt_ms(step.p95)}/{fmt_ms(step.p99)} ms,"
                    f" load {load}"
                )
                if step.note or step.failed_pct > STOP_FAILED_PCT:
                    break
        finally:
            proxy.stop()
            errors = proxy.log_count("ERROR", "CRITICAL", "Traceback", " ERROR:", "WARNING")
            if errors:
                log(f"  {proxy_name} {transport}: {errors} warning/error lines in {workdir}/{proxy_name}.log")
    return steps


@dataclass
class Memory:
    proxy: str
    base_rss: int
    held_rss: int
    base_pss: int
    held_pss: int
    calls_up: int
    failed: int
    processes: int

    @property
    def per_call_kib(self) -> float:
        return (self.held_rss - self.base_rss) / max(self.calls_up, 1)

    @property
    def per_call_pss_kib(self) -> float:
        return (self.held_pss - self.base_pss) / max(self.calls_up, 1)


def run_memory(proxy_name: str, root: Path) -> Memory:
    """A fresh proxy over UDP: RSS after the warm-up, then with HOLD_CALLS calls held open."""
    workdir = root / f"{proxy_name}-memory"
    workdir.mkdir()
    with pair(workdir, "udp") as (primary, backup, _uas):
        proxy = PROXIES[proxy_name](workdir, "udp", primary, backup)
        uac: subprocess.Popen[bytes] | None = None
        try:
            proxy.start()
            warm_up(proxy, workdir, time.monotonic() + 30)
            time.sleep(6)  # let the warm-up's transactions end (Kamailio's wait timer: 5 s)
            pids = proxy.pids()
            base_rss, base_pss = rss_kib(pids)
            stat_file = workdir / "hold" / "uac_stats.csv"
            stat_file.parent.mkdir()
            seconds_to_fill = HOLD_CALLS / HOLD_RATE
            args = sipp_uac_args(
                proxy.port,
                "udp",
                stat_file,
                "-r",
                str(HOLD_RATE),
                "-m",
                str(HOLD_CALLS),
                "-l",
                str(HOLD_CALLS),
                "-d",
                str(HOLD_MS),
                "-fd",
                "1",
                "-timeout",
                f"{int(seconds_to_fill + HOLD_MS / 1000 + 30)}s",
            )
            uac = popen(args, stat_file.parent, "uac")
            deadline = time.monotonic() + seconds_to_fill + 15
            up = 0
            stats: dict[str, str] = {}
            while time.monotonic() < deadline and uac.poll() is None:
                time.sleep(0.5)
                stats = read_stats(stat_file)
                # calls that got their 200 and are in the -d pause: created - (still setting up)
                up = int(stats.get("CurrentCall", 0) or 0)
                if int(stats.get("TotalCallCreated", 0) or 0) >= HOLD_CALLS and up >= HOLD_CALLS:
                    break
            time.sleep(2)  # every call answered and ACKed
            stats = read_stats(stat_file)
            up = int(stats.get("CurrentCall", 0) or 0)
            failed = int(stats.get("FailedCall(C)", 0) or 0)
            pids = sorted(set(pids) | set(proxy.pids()))
            held_rss, held_pss = rss_kib(pids)
            memory = Memory(proxy_name, base_rss, held_rss, base_pss, held_pss, up, failed, len(pids))
            log(
                f"{proxy_name} memory: baseline RSS {base_rss} KiB, with {up} calls held {held_rss} KiB"
                f" -> {memory.per_call_kib:.2f} KiB/call (PSS {memory.per_call_pss_kib:.2f} KiB/call,"
                f" {len(pids)} processes), {failed} failed"
            )
            return memory
        finally:
            if uac is not None:
                stop_process(uac)
            proxy.stop()


# --------------------------------------------------------------------------- report


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def sipha_build(python: Path) -> str:
    """Whether ``python`` runs sipha's core compiled (mypyc, setup.py) or interpreted."""
    probe = "import sipha.proxy.core as m; print(m.__file__)"
    found = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=False).stdout
    kind = "compiled with mypyc" if found.strip().endswith(".so") else "interpreted"
    return f"{kind} ({os.path.relpath(python, Path.cwd())})"


def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    kam = subprocess.run([kamailio_bin(), "-v"], capture_output=True, text=True, check=False).stdout
    kam_version = next((line.split(":", 1)[1].strip() for line in kam.splitlines() if "version" in line), "?")
    sipp = subprocess.run(["sipp", "-v"], capture_output=True, text=True, check=False).stdout
    sipp_version = next((line.strip() for line in sipp.splitlines() if "SIPp v" in line), "?")
    try:
        sipha_version = version("sipha")
    except PackageNotFoundError:
        sipha_version = "?"
    mem_kib = next(
        (
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    return (
        f"{os.cpu_count()} CPUs ({model}), {mem_kib // 1024} MiB RAM, Linux {platform.release()};"
        f" Python {platform.python_version()}, sipha {sipha_version}, Kamailio {kam_version}, {sipp_version}"
    )


def passes(step: Step, *, keeps_up: bool) -> bool:
    """<= 1% failed calls; ``keeps_up``: and answered calls at >= 95% of the offered rate."""
    if step.note or step.failed_pct > OK_FAILED_PCT:
        return False
    return not keeps_up or step.achieved_cps >= KEEP_UP * step.rate


def max_ok(steps: list[Step], *, keeps_up: bool) -> Step | None:
    ok = [s for s in steps if passes(s, keeps_up=keeps_up)]
    return max(ok, key=lambda s: s.rate) if ok else None


def report(
    steps: list[Step],
    memories: list[Memory],
    *,
    command: str,
    started: str,
    load_start: str,
    load_end: str,
    machine_text: str,
    sipha_workers: int = 1,
    sipha_build: str = "interpreted",
) -> str:
    lines = [
        "## sipha vs Kamailio: SIPp `uac` through the proxy, 127.0.0.1",
        "",
        f"- run: {started}; load average (1/5/15 min) at start {load_start}, at end {load_end}",
        f"- machine: {machine_text}",
        f"- command: `{command}`",
        (
            f"- sipha: {sipha_build}, `[proxy] workers = {sipha_workers}`;"
            " Kamailio: `children=2` (bench/kamailio/kamailio.cfg)"
        ),
        "",
        (
            "| proxy | transport | offered cps | achieved cps | failed | CPU s / 1000 calls"
            " | RT p50/p95/p99 ms | proxy CPU % | SIPp uac CPU % | UAS CPU % | UDP drops proxy/other"
            " | load 1m |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in steps:
        note = f"; {s.note}" if s.note else ""
        if s.late_provisional:
            note = f"; {s.late_provisional:,} by a 1xx after the 200{note}"
        lines.append(
            f"| {s.proxy} | {s.transport.upper()} | {s.rate:,} | {s.achieved_cps:,.0f} |"
            f" {s.failed:,} ({s.failed_pct:.2f}%{note}) | {s.cpu_per_1000:.3f} |"
            f" {fmt_ms(s.p50)}/{fmt_ms(s.p95)}/{fmt_ms(s.p99)} |"
            f" {100 * s.proxy_cpu / s.wall:.0f} | {100 * s.sipp_cpu / s.wall:.0f} |"
            f" {100 * s.uas_cpu / s.wall:.0f} |"
            f" {s.proxy_drops:,}/{s.other_drops:,} | {s.load.split()[0]} |"
        )
    lines.append("")
    failing = [s for s in steps if s.failed]
    if failing:
        lines.append("Failed calls by cause (SIPp's error file; calls never completed count as failed):")
        lines.append("")
        for s in failing:
            causes = ", ".join(f"{cause}: {count:,}" for cause, count in s.causes.most_common(4)) or "?"
            lines.append(f"- {s.proxy} {s.transport.upper()} {s.rate:,} cps: {s.failed:,} failed; {causes}")
        lines.append("")
    for transport in sorted({s.transport for s in steps}, key=lambda t: t != "udp"):
        for label, keeps_up in (("at <= 1% failed calls", False), ("sustained", True)):
            best: dict[str, Step | None] = {}
            for name in PROXIES:
                mine = [s for s in steps if s.proxy == name and s.transport == transport]
                if not mine:
                    continue
                best[name] = b = max_ok(mine, keeps_up=keeps_up)
                first_bad = next((s for s in mine if not passes(s, keeps_up=keeps_up)), None)
                top = "the highest rate run" if first_bad is None else f"next step: {first_bad.rate:,} cps"
                if b is not None and not keeps_up and b.achieved_cps < KEEP_UP * b.rate:
                    top += f"; achieved < {KEEP_UP:.0%} of offered: answers fall behind"
                lines.append(
                    f"- {transport.upper()} {name}: max rate {label}: "
                    + (
                        f"**{b.rate:,} calls/s** (achieved {b.achieved_cps:,.0f}; {top})"
                        if b
                        else f"none ({top})"
                    )
                )
            s_best, k_best = best.get("sipha"), best.get("kamailio")
            if s_best and k_best:
                lines.append(
                    f"- **{transport.upper()} ratio sipha / Kamailio, max rate {label}:"
                    f" {s_best.rate / k_best.rate:.2f}**"
                )
        common = sorted(
            {
                s.rate
                for s in steps
                if s.transport == transport and s.proxy == "sipha" and s.failed_pct <= OK_FAILED_PCT
            }
            & {
                s.rate
                for s in steps
                if s.transport == transport and s.proxy == "kamailio" and s.failed_pct <= OK_FAILED_PCT
            }
        )
        if common:
            cpu = {
                name: sum(
                    s.proxy_cpu
                    for s in steps
                    if s.proxy == name and s.transport == transport and s.rate in common
                )
                / sum(
                    s.created
                    for s in steps
                    if s.proxy == name and s.transport == transport and s.rate in common
                )
                * 1000
                for name in ("sipha", "kamailio")
            }
            lines.append(
                f"- {transport.upper()} CPU per call at the rates both sustain"
                f" ({', '.join(f'{r:,}' for r in common)} cps): sipha {cpu['sipha']:.3f} s / 1000 calls,"
                f" Kamailio {cpu['kamailio']:.3f};"
                f" **ratio sipha / Kamailio {cpu['sipha'] / cpu['kamailio']:.2f}**"
            )
    lines.extend(
        f"- memory, {m.proxy}: RSS {m.base_rss:,} KiB at rest, {m.held_rss:,} KiB with"
        f" {m.calls_up:,} calls held open ({m.failed} failed): **{m.per_call_kib:.2f} KiB per held call**"
        + (
            f" (sum over its {m.processes} processes; PSS, which counts shared memory once:"
            f" {m.base_pss:,} -> {m.held_pss:,} KiB, {m.per_call_pss_kib:.2f} KiB per call)"
            if m.processes > 1
            else ""
        )
        for m in memories
    )
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"rates {QUICK_RATES}, {QUICK_DURATION} s each")
    parser.add_argument("--rates", help="comma-separated calls/s (default: %(default)s)")
    parser.add_argument("--duration", type=float, help="seconds per step (default 10; --quick: 5)")
    parser.add_argument("--transport", choices=["udp", "tcp", "both"], default="udp")
    parser.add_argument("--proxies", default="sipha,kamailio", help="which proxies (default: %(default)s)")
    parser.add_argument("--no-memory", action="store_true", help="skip the held-calls memory test")
    parser.add_argument(
        "--sipha-python",
        type=Path,
        default=COMPILED_PYTHON if COMPILED_PYTHON.exists() else Path(sys.executable),
        help="the Python that runs sipha (default: %(default)s; `make compiled` builds .venv-compiled)",
    )
    parser.add_argument(
        "--sipha-workers", type=int, default=SIPHA_WORKERS, help="sipha's [proxy] workers (%(default)s)"
    )
    parser.add_argument("--out", type=Path, help="also write the Markdown report here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, SIPp files)")
    parser.add_argument("--json", type=Path, help="also write the raw measurements here (JSON)")
    parser.add_argument("--from-json", type=Path, help="only print the report of a --json file; run nothing")
    options = parser.parse_args()
    if options.from_json:
        data = json.loads(options.from_json.read_text())
        text = report(
            [Step(**{**s, "causes": Counter(s["causes"])}) for s in data["steps"]],
            [Memory(**m) for m in data["memories"]],
            **data["meta"],
        )
        print(text)
        if options.out:
            options.out.write_text(text + "\n")
        return 0

    rates = (
        [int(r) for r in options.rates.split(",")]
        if options.rates
        else (QUICK_RATES if options.quick else DEFAULT_RATES)
    )
    duration = options.duration or (QUICK_DURATION if options.quick else 10)
    transports = ["udp", "tcp"] if options.transport == "both" else [options.transport]
    proxies = [p.strip() for p in options.proxies.split(",") if p.strip()]
    for name in proxies:
        if name not in PROXIES:
            parser.error(f"unknown proxy {name!r}")
    command = shlex.join([os.path.relpath(sys.executable, Path.cwd()), *sys.argv])

    # SIGTERM/SIGHUP: unwind through the finally blocks, which stop every process
    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    Sipha.workers = options.sipha_workers
    Sipha.python = str(options.sipha_python)
    ensure_installed()
    if "kamailio" in proxies:
        check_kamailio_cfg()
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    load_start = loadavg()
    log(
        f"rates {rates} for {duration:g} s each, transports {transports}, proxies {proxies};"
        f" load {load_start}"
    )
    root = Path(tempfile.mkdtemp(prefix="sipha-bench-"))
    steps: list[Step] = []
    memories: list[Memory] = []
    try:
        for transport in transports:
            for name in proxies:
                try:
                    steps += run_ladder(name, transport, rates, duration, root)
                except RuntimeError as error:
                    log(f"{name} {transport}: {error}")
        if not options.no_memory:
            for name in proxies:
                try:
                    memories.append(run_memory(name, root))
                except RuntimeError as error:
                    log(f"{name} memory: {error}")
    except KeyboardInterrupt:
        log("interrupted: reporting what was measured")
    finally:
        if options.keep:
            log(f"work directory kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    meta = {
        "command": command,
        "started": started,
        "load_start": load_start,
        "load_end": loadavg(),
        "machine_text": machine(),
        "sipha_workers": options.sipha_workers,
        "sipha_build": sipha_build(options.sipha_python),
    }
    text = report(steps, memories, **meta)
    print()
    print(text)
    if options.out:
        options.out.write_text(text + "\n")
        log(f"written to {options.out}")
    if options.json:
        raw = {"meta": meta, "steps": [s.__dict__ for s in steps], "memories": [m.__dict__ for m in memories]}
        options.json.write_text(json.dumps(raw, indent=1) + "\n")
        log(f"measurements written to {options.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
