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

With ``--transport tls`` (or ``all``) the proxy under test speaks TLS on both
sides, between two Kamailios that do the UDP <-> TLS conversion (certificates
from a trustme CA made for the run)::

    SIPp uac --UDP--> edge (tls-edge.cfg) --TLS--> proxy --TLS--> member (tls-member.cfg) --UDP--> SIPp uas

the pair being that member (primary, ``sip1.test``, OPTIONS answered 200) and
a second one in backup mode (``sip2.test``, 503); Kamailio as the proxy under
test runs ``bench/kamailio/tls-proxy.cfg``.  Only the proxy's CPU counts per
call; the edge's and the member's are reported beside it.  ``--proxies ...,direct``
adds a ladder without proxy (SIPp, or the edge, straight to the primary): the
ceiling of the rest.  ``--interleave`` keeps every proxy's test bed up and has the
proxies take turns at each rate, so that other work on a shared machine weighs on
them alike.

It prints a Markdown report (table, summary, machine, command) and writes it
to ``--out``; ``--json`` writes the raw measurements (with the commit measured),
``--plot`` draws them (bench/plot.py: failed % and CPU per call against offered
calls/s, a PNG).  ``--from-json A.json [B.json ...]`` runs nothing: it prints
the report of each file and, with ``--plot``, draws them in one figure (e.g. the
per-core run beside the 2-core run).  Kamailio and SIPp are installed with
apt-get when missing (as root).  Usage::

    .venv/bin/python bench/proxies.py [--quick] [--rates 500,1000] [--duration S]
                                      [--transport udp|tcp|tls|both|all] [--out FILE.md]
                                      [--json FILE.json] [--plot FILE.png]
    .venv/bin/python bench/proxies.py --from-json PIN.json RUN.json --plot FILE.png
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
from typing import Any, ClassVar

from plot import RunDocumentError, plot_runs

HOST = "127.0.0.1"
BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
KAMAILIO_CFG = BENCH / "kamailio" / "kamailio.cfg"
KAMAILIO_TLS_CFG = BENCH / "kamailio" / "tls-proxy.cfg"  # Kamailio under test, TLS on both sides
EDGE_CFG = BENCH / "kamailio" / "tls-edge.cfg"  # TLS ladder: SIPp uac --UDP--> edge --TLS--> proxy
MEMBER_CFG = BENCH / "kamailio" / "tls-member.cfg"  # and proxy --TLS--> member --UDP--> SIPp uas
TRANSPORT_ORDER = ["udp", "tcp", "tls"]
TRANSPORTS = {
    "udp": ["udp"],
    "tcp": ["tcp"],
    "tls": ["tls"],
    "both": ["udp", "tcp"],
    "all": ["udp", "tcp", "tls"],
}

DEFAULT_RATES = [500, 1000, 2000, 3000, 4000, 5000, 7000, 10000]
QUICK_RATES = [200, 500, 1000]
QUICK_DURATION = 5
STOP_FAILED_PCT = 10.0  # a step above this ends the proxy's ladder
OK_FAILED_PCT = 1.0  # the issue's criterion: at most this many failed calls
KEEP_UP = 0.95  # "sustained": also answered calls/s >= this share of the offered rate
WARMUP_CALLS = 100
HOLD_CALLS = 10_000
HOLD_RATE = 1_000
HOLD_MS = 30_000
SIPP_BUFFER = 4 * 1024 * 1024  # SIPp -buff_size (socket buffers; net.core.rmem_max here)
RTT_FREQ = 100  # SIPp writes its response times every this many calls: the last < 100 calls are not seen
RECV_TIMEOUT_MS = 5_000  # a call that waits longer than this for a message fails
KAMAILIO_SHM_MB = 4096  # tm keeps answered transactions 5 s: ~1 GiB at 7,000 calls/s over TCP
KAMAILIO_PKG_MB = 16
PEER_SHM_MB = 1024  # the edge's and the members' Kamailio (tm keeps 5 s of transactions, plus TLS buffers)
PEER_START_TIMEOUT = 15.0
PEER_CHILDREN = 2  # worker processes per transport of the edge and the members (CHILDREN); --peer-children
PROXY_SNI = "sipha.test"  # the name the edge sends and the proxy under test's certificate holds
SIPHA_WORKERS = 2
KAMAILIO_CHILDREN = 2
"""Kamailio's UDP and TCP worker processes (``children``, ``tcp_children``); 1 with --pin."""
PROXY_CPU: list[str] = []
"""With --pin: ``taskset -c 0`` before each proxy's command (the bench, SIPp and the members
run on the other core: the bench process pins itself there and they inherit it)."""
COMPILED_PYTHON = REPO / ".venv-compiled" / "bin" / "python"
"""``[proxy] workers`` of sipha: as many as Kamailio's UDP workers (``children=2``); --sipha-workers."""
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# --------------------------------------------------------------------------- setup


def kamailio_tls_module() -> Path | None:
    """Kamailio's tls.so (Debian: kamailio-tls-modules), or None."""
    for pattern in ("/usr/lib/*/kamailio/modules/tls.so", "/usr/lib*/kamailio/modules/tls.so"):
        found = sorted(Path("/").glob(pattern.lstrip("/")))
        if found:
            return found[0]
    return None


def ensure_installed(*, tls: bool = False) -> None:
    """SIPp (Debian sip-tester) and Kamailio (and its tls module for ``tls``): apt-get when missing."""
    missing = []
    if shutil.which("sipp") is None:
        missing.append("sip-tester")
    if shutil.which("kamailio") is None and not Path("/usr/sbin/kamailio").exists():
        missing.append("kamailio")
    else:
        dpkg = subprocess.run(["dpkg", "-s", "kamailio"], capture_output=True, check=False)
        if dpkg.returncode != 0 and shutil.which("kamailio") is None:
            missing.append("kamailio")
    if tls and kamailio_tls_module() is None:
        missing.append("kamailio-tls-modules")
    if not missing:
        log("SIPp and Kamailio are installed" + (" (and Kamailio's tls module)" if tls else ""))
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


def check_kamailio_cfg(cfg: Path = KAMAILIO_CFG, defines: dict[str, str] | None = None) -> None:
    args = [kamailio_bin(), "-c", "-f", str(cfg)]
    for key, value in (defines or {}).items():
        args += ["-A", f"{key}={value}"]
    result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=60)
    if result.returncode != 0:
        sys.exit(f"{cfg} does not validate:\n{result.stdout}{result.stderr}")
    log(f"kamailio -c -f {cfg.relative_to(REPO)}: OK")


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


def machine_ticks() -> tuple[int, int, int]:
    """(busy, steal, total) CPU ticks of the whole machine, all CPUs, from /proc/stat: busy is
    user, nice, system, irq and softirq; steal is time the hypervisor gave to another guest
    (a virtual machine's CPUs are not all ours when the host is oversubscribed)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]  # guest time is inside user
    return (
        user + nice + system + irq + softirq,
        steal,
        user + nice + system + idle + iowait + irq + softirq + steal,
    )


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


def start_uas(workdir: Path, port: int, transport: str) -> subprocess.Popen[bytes]:
    """``sipp -sn uas -aa`` on ``port`` (answers calls, and OPTIONS with 200); raises if it exits at once."""
    args = [
        "sipp",
        "-sn",
        "uas",
        "-i",
        HOST,
        "-p",
        str(port),
        "-aa",
        "-nostdin",
        "-buff_size",
        str(SIPP_BUFFER),
        "-timeout",
        "7200s",  # a safety bound; killed at the end
    ]
    if transport == "tcp":
        args += ["-t", "t1"]
    uas = popen(args, workdir, f"uas-{transport}")
    time.sleep(0.3)
    if uas.poll() is not None:
        raise RuntimeError(f"SIPp uas exited at once: see {workdir}/uas-{transport}.log")
    return uas


@contextlib.contextmanager
def pair(workdir: Path, transport: str) -> Iterator[tuple[int, int, subprocess.Popen[bytes]]]:
    """(primary port, backup port, primary SIPp process): SIPp uas -aa and an idle backup."""
    primary, backup = free_port(), free_port()
    idle = IdleMember(backup)
    uas: subprocess.Popen[bytes] | None = None
    try:
        uas = start_uas(workdir, primary, transport)
        yield primary, backup, uas
    finally:
        if uas is not None:
            stop_process(uas)
        idle.close()


# --------------------------------------------------------------------------- TLS: certificates and peers


@dataclass(frozen=True)
class Pki:
    """PEM files of a trustme CA made for the run (``directory``); each leaf: (chain, key).

    ``proxy``: the proxy under test's (sipha's, and Kamailio's in its place): sipha.test
    + 127.0.0.1; ``sip1``/``sip2``: the primary's and the backup's (sip1.test / sip2.test
    + 127.0.0.1); ``edge``: the edge's server certificate; ``client``: the client
    certificate the edge presents to the proxy.  Every peer trusts ``ca``.
    """

    directory: Path
    ca: Path
    proxy: tuple[Path, Path]
    sip1: tuple[Path, Path]
    sip2: tuple[Path, Path]
    edge: tuple[Path, Path]
    client: tuple[Path, Path]


def write_pki(directory: Path) -> Pki:
    """A trustme CA and the certificates of :class:`Pki` (ECDSA P-256, as trustme issues them)."""
    import trustme  # noqa: PLC0415 - only the TLS ladder needs it (a dev dependency, in .venv)

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="sipha bench")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))

    def issue(name: str, *identities: str) -> tuple[Path, Path]:
        leaf = ca.issue_cert(*identities)
        cert, key = directory / f"{name}.pem", directory / f"{name}.key"
        cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        key.write_bytes(leaf.private_key_pem.bytes())
        key.chmod(0o600)
        return cert, key

    return Pki(
        directory,
        directory / "ca.pem",
        proxy=issue("proxy", PROXY_SNI, HOST),
        sip1=issue("sip1", "sip1.test", HOST),
        sip2=issue("sip2", "sip2.test", HOST),
        edge=issue("edge", "edge.test", HOST),
        client=issue("client", "client.test", HOST),
    )


def write_kamailio_tls_cfg(
    path: Path, pki: Pki, certificate: tuple[Path, Path], client: tuple[Path, Path] | None = None
) -> Path:
    """The tls.cfg of Kamailio's tls module: ``certificate`` presented on its TLS port, ``client``
    (default: the same) on the connections it opens, which verify the peer's chain against
    the CA (Kamailio 5.6 checks chain and dates, not the name); clients are not asked for a
    certificate.  TLS 1.2 and later (tests/tls/support.py writes the same)."""
    cert, key = certificate
    client_cert, client_key = client or certificate
    path.write_text(
        "# written by bench/proxies.py\n"
        "[server:default]\n"
        "method = TLSv1.2+\n"
        "verify_certificate = no\n"
        "require_certificate = no\n"
        f"certificate = {cert}\n"
        f"private_key = {key}\n"
        f"ca_list = {pki.ca}\n"
        "\n"
        "[client:default]\n"
        "method = TLSv1.2+\n"
        "verify_certificate = yes\n"
        "require_certificate = yes\n"
        f"ca_list = {pki.ca}\n"
        f"certificate = {client_cert}\n"
        f"private_key = {client_key}\n"
    )
    return path


def tls_uri(port: int) -> str:
    return f"sip:{HOST}:{port};transport=tls"


def options_answered(port: int, timeout: float) -> bool:
    """One OPTIONS (no user part) over UDP to ``HOST:port``: did a final response come?"""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind((HOST, 0))
        local = int(udp.getsockname()[1])
        request = (
            f"OPTIONS sip:{HOST}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{local};branch=z9hG4bK{os.urandom(8).hex()};rport\r\n"
            f"From: <sip:bench@{HOST}>;tag={os.urandom(4).hex()}\r\n"
            f"To: <sip:{HOST}:{port}>\r\n"
            f"Call-ID: {os.urandom(8).hex()}@{HOST}\r\n"
            "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        deadline = time.monotonic() + timeout
        try:
            udp.sendto(request.encode(), (HOST, port))
            while (left := deadline - time.monotonic()) > 0:
                udp.settimeout(left)
                answer = udp.recv(65535)
                if answer.startswith(b"SIP/2.0 ") and not answer.startswith(b"SIP/2.0 1"):
                    return True
        except OSError:
            return False
    return False


@dataclass
class Peer:
    """A Kamailio of the TLS ladder: the edge or a member (its UDP and TLS ports)."""

    children: ClassVar[int] = PEER_CHILDREN
    """Its CHILDREN define: worker processes per transport (--peer-children)."""
    name: str
    udp_port: int
    tls_port: int
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def kamailio_peer(
    workdir: Path,
    name: str,
    cfg: Path,
    *,
    pki: Pki,
    certificate: tuple[Path, Path],
    defines: dict[str, str | None],
    udp_port: int,
    tls_port: int,
    client: tuple[Path, Path] | None = None,
) -> Iterator[Peer]:
    """Kamailio with ``cfg`` (tls-edge.cfg or tls-member.cfg) in the foreground; ready when it
    answers an OPTIONS on ``udp_port`` and accepts TCP on ``tls_port``; stopped at the end."""
    rundir = workdir / f"{name}-run"
    rundir.mkdir(exist_ok=True)
    tls_cfg = write_kamailio_tls_cfg(workdir / f"{name}-tls.cfg", pki, certificate, client)
    args = [kamailio_bin(), "-DD", "-E", "-f", str(cfg), "-Y", str(rundir)]
    args += ["-m", str(PEER_SHM_MB), "-M", str(KAMAILIO_PKG_MB)]
    for key, value in {**defines, "TLS_CFG": f'"{tls_cfg}"', "CHILDREN": str(Peer.children)}.items():
        args += ["-A", key if value is None else f"{key}={value}"]
    process = popen(args, workdir, name)
    try:
        deadline = time.monotonic() + PEER_START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name}: kamailio exited with {process.returncode}: see {workdir}/{name}.log"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{name}: kamailio not ready in {PEER_START_TIMEOUT:g} s: see {workdir}/{name}.log"
                )
            if options_answered(udp_port, 0.3):
                with contextlib.suppress(OSError), socket.create_connection((HOST, tls_port), timeout=0.3):
                    break
            time.sleep(0.1)
        yield Peer(name, udp_port, tls_port, process)
    finally:
        stop_process(process)


@contextlib.contextmanager
def tls_members(workdir: Path, pki: Pki) -> Iterator[tuple[Peer, Peer, subprocess.Popen[bytes]]]:
    """(primary, backup, SIPp uas): two tls-member.cfg Kamailios in front of one SIPp uas over UDP.

    The primary (sip1.test) answers OPTIONS 200; the backup (sip2.test, ``BACKUP``) 503:
    a member in backup mode, never active, never sent a call.
    """
    uas_port = free_port()
    with contextlib.ExitStack() as stack:
        uas = start_uas(workdir, uas_port, "udp")
        stack.callback(stop_process, uas)
        members = []
        for name, certificate, extra in (("member", pki.sip1, {}), ("backup", pki.sip2, {"BACKUP": None})):
            udp_port, tls_port = free_port(), free_port()
            defines: dict[str, str | None] = {
                "MEMBER_TLS_PORT": str(tls_port),
                "MEMBER_UDP_PORT": str(udp_port),
                "UAS": f'"sip:{HOST}:{uas_port}"',
                **extra,
            }
            members.append(
                stack.enter_context(
                    kamailio_peer(
                        workdir,
                        name,
                        MEMBER_CFG,
                        pki=pki,
                        certificate=certificate,
                        defines=defines,
                        udp_port=udp_port,
                        tls_port=tls_port,
                    )
                )
            )
        yield members[0], members[1], uas


@contextlib.contextmanager
def tls_edge(workdir: Path, pki: Pki, proxy_port: int) -> Iterator[Peer]:
    """tls-edge.cfg: UDP from SIPp's uac, TLS to ``proxy_port`` (SNI sipha.test, chain verified,
    the client certificate presented)."""
    udp_port, tls_port = free_port(), free_port()
    defines: dict[str, str | None] = {
        "EDGE_UDP_PORT": str(udp_port),
        "EDGE_TLS_PORT": str(tls_port),
        "NEXT_HOP": f'"{tls_uri(proxy_port)}"',
        "TLS_SNI": f'"{PROXY_SNI}"',
    }
    with kamailio_peer(
        workdir,
        "edge",
        EDGE_CFG,
        pki=pki,
        certificate=pki.edge,
        defines=defines,
        udp_port=udp_port,
        tls_port=tls_port,
        client=pki.client,
    ) as edge:
        yield edge


def tls_session(port: int, pki: Pki) -> str:
    """What ``openssl s_client`` (SNI sipha.test, the run's CA) negotiates with ``port``:
    protocol, cipher suite, verification; '' when openssl is missing or says nothing."""
    if shutil.which("openssl") is None:
        return ""
    args = ["openssl", "s_client", "-connect", f"{HOST}:{port}", "-servername", PROXY_SNI]
    args += ["-CAfile", str(pki.ca), "-verify_hostname", PROXY_SNI, "-brief"]
    try:
        result = subprocess.run(args, input=b"", capture_output=True, timeout=10, check=False)
    except subprocess.TimeoutExpired:
        return ""
    text = (result.stdout + result.stderr).decode(errors="replace")
    found = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("Protocol version", "Ciphersuite", "Verification", "Peer signature type"):
            found[key.strip()] = value.strip()
    return ", ".join(f"{key} {value}" for key, value in found.items())


# --------------------------------------------------------------------------- proxies


class Proxy:
    name = ""

    def __init__(
        self, workdir: Path, transport: str, primary: int, backup: int, pki: Pki | None = None
    ) -> None:
        self.workdir = workdir
        self.transport = transport
        self.primary = primary
        self.backup = backup
        self.pki = pki
        """The run's certificates: the TLS ladder (``transport`` tls: TLS in and out)."""
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


PROBLEMS = ("ERROR", "CRITICAL", "Traceback", " ERROR:", "WARNING")
TLS_START_WARNING = "openssl bug #1491"
LOGGED_PEERS = ("edge", "member", "backup")


def log_size(path: Path) -> int | None:
    return path.stat().st_size if path.exists() else None


def log_count(path: Path, *words: str, end: int | None = None) -> int:
    """Lines of the log ``path`` (its first ``end`` bytes) holding any of ``words`` (0: no such file)."""
    if not path.exists():
        return 0
    text = path.read_bytes()[:end].decode(errors="replace")
    return sum(1 for line in text.splitlines() if any(w in line for w in words))


class Sipha(Proxy):
    name = "sipha"
    workers = SIPHA_WORKERS
    python = sys.executable
    """The interpreter that runs sipha: the compiled build's (make compiled) when there is one."""

    def start(self) -> None:
        self.admin = free_port()
        member = "tcp" if self.transport == "tcp" else "udp"
        listen = f'"udp:{HOST}:{self.port}", "tcp:{HOST}:{self.port}"'
        record_route = f"sip:{HOST}:{self.port};lr"
        tls = names = ""
        if self.transport == "tls":
            # TLS only, in and out: the edge connects to the TLS listen, the pair's members are
            # tls: and verified by name (their certificates: sip1.test, sip2.test) against the CA
            assert self.pki is not None
            member, listen = "tls", f'"tls:{HOST}:{self.port}"'
            record_route = f"sip:{HOST}:{self.port};transport=tls;lr"
            tls = (
                "\n[tls]\n"
                f'certificate = "{self.pki.proxy[0]}"\n'
                f'private-key = "{self.pki.proxy[1]}"\n'
                f'ca-file = "{self.pki.ca}"\n'
                "verify-members = true\n"
            )
            names = 'primary-server-name = "sip1.test"\nbackup-server-name = "sip2.test"\n'
        config = self.workdir / "sipha.toml"
        config.write_text(
            f"""# generated by bench/proxies.py
[proxy]
listen = [{listen}]
record-route = "{record_route}"

workers = {self.workers}

[monitor]
# A member is counted out after 2 s without an answer, as Kamailio's fr_timer (2 s) does
# with its OPTIONS probes and with a forwarded INVITE that got no provisional response.
oos-check = 2
oos-force = 1
failover-timeout = 2.0

[admin]
listen = "{HOST}:{self.admin}"
{tls}
[[pair]]
name = "bench"
primary = "{member}:{HOST}:{self.primary}"
backup = "{member}:{HOST}:{self.backup}"
{names}serving = true
"""
        )
        self.process = popen(
            [*PROXY_CPU, self.python, "-m", "sipha", "run", "--config", str(config)], self.workdir, self.name
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
        suffix = {"tcp": ";transport=tcp", "tls": ";transport=tls"}.get(self.transport, "")
        primary, backup = f"sip:{HOST}:{self.primary}{suffix}", f"sip:{HOST}:{self.backup}{suffix}"
        dslist = self.workdir / "dispatcher.list"
        dslist.write_text(
            "# set destination flags priority -- generated by bench/proxies.py\n"
            f"1 {primary} 0 10\n"
            f"1 {backup} 0 5\n"
        )
        cfg = KAMAILIO_CFG
        defines = [f"SIP_PORT={self.port}", f'DS_LIST="{dslist}"', f"CHILDREN={KAMAILIO_CHILDREN}"]
        if self.transport == "tls":
            # tls-proxy.cfg: TLS in and out, sipha's certificate, the members' chain verified
            assert self.pki is not None
            tls_cfg = write_kamailio_tls_cfg(self.workdir / "kamailio-tls.cfg", self.pki, self.pki.proxy)
            cfg = KAMAILIO_TLS_CFG
            defines += [
                f'TLS_CFG="{tls_cfg}"',
                f'PRIMARY_URI="{primary}"',
                'PRIMARY_SNI="sip1.test"',
                f'BACKUP_URI="{backup}"',
                'BACKUP_SNI="sip2.test"',
            ]
        args = [*PROXY_CPU, kamailio_bin(), "-DD", "-E", "-f", str(cfg), "-Y", str(rundir)]
        args += ["-m", str(KAMAILIO_SHM_MB), "-M", str(KAMAILIO_PKG_MB)]
        for define in defines:
            args += ["-A", define]
        self.process = popen(args, self.workdir, self.name)


class Direct(Proxy):
    """No proxy: SIPp (TLS ladder: the edge) straight to the primary.  The ceiling of everything
    but the proxy on this machine (``--proxies sipha,kamailio,direct``); no CPU of its own."""

    name = "direct"

    def __init__(
        self, workdir: Path, transport: str, primary: int, backup: int, pki: Pki | None = None
    ) -> None:
        super().__init__(workdir, transport, primary, backup, pki)
        self.port = primary

    def start(self) -> None:
        pass

    def pids(self) -> list[int]:
        return []


PROXIES: dict[str, type[Proxy]] = {"sipha": Sipha, "kamailio": Kamailio, "direct": Direct}


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
        str(RTT_FREQ),
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
    edge_cpu: float = 0.0
    """TLS ladder: CPU time of the edge Kamailio (UDP -> TLS) and of the primary member (TLS -> UDP)."""
    member_cpu: float = 0.0
    proxy_top: float = 0.0
    """CPU time of the busiest single process of the proxy, the edge, the member."""
    edge_top: float = 0.0
    member_top: float = 0.0
    machine_busy: float = -1.0
    """Share of the machine's CPU time (all CPUs) busy during the step, %; -1: not measured."""
    machine_steal: float = -1.0
    """Share of it stolen by the hypervisor (another guest ran on our virtual CPUs), %."""

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


@dataclass
class Bed:
    """What a ladder runs against: the proxy, its pair, and where SIPp's uac sends its calls."""

    proxy: Proxy
    uas: subprocess.Popen[bytes]
    target: int
    """The port SIPp's uac calls: the proxy's, or (TLS) the edge's UDP port."""
    sipp_transport: str
    """What SIPp speaks: udp or tcp (TLS ladder: udp, to the edge)."""
    peers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    """TLS ladder: the edge and the primary member, whose CPU is measured apart."""


@contextlib.contextmanager
def bench_bed(proxy_name: str, transport: str, workdir: Path, pki: Pki | None) -> Iterator[Bed]:
    """The proxy started in front of its pair; for ``tls``, between the edge and the TLS members.

    Everything it started is stopped when the block ends, also on error.
    """
    with contextlib.ExitStack() as stack:
        if transport == "tls":
            assert pki is not None
            member, backup, uas = stack.enter_context(tls_members(workdir, pki))
            proxy = PROXIES[proxy_name](workdir, transport, member.tls_port, backup.tls_port, pki)
            stack.callback(proxy.stop)
            proxy.start()
            edge = stack.enter_context(tls_edge(workdir, pki, proxy.port))
            log(
                f"{proxy_name} tls: started on {HOST}:{proxy.port} (members {member.tls_port}/"
                f"{backup.tls_port}, edge UDP {edge.udp_port})"
            )
            yield Bed(proxy, uas, edge.udp_port, "udp", {"edge": edge.process, "member": member.process})
        else:
            primary, backup_port, uas = stack.enter_context(pair(workdir, transport))
            proxy = PROXIES[proxy_name](workdir, transport, primary, backup_port)
            stack.callback(proxy.stop)
            proxy.start()
            log(f"{proxy_name} {transport}: started on {HOST}:{proxy.port} (pair {primary}/{backup_port})")
            yield Bed(proxy, uas, proxy.port, transport)


def warm_up(bed: Bed, workdir: Path, deadline: float) -> None:
    """Wait for the proxy (and for it to find the primary), then 100 calls that must all succeed."""
    proxy = bed.proxy
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
            bed.target,
            bed.sipp_transport,
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


def tree_cpu(root: subprocess.Popen[bytes]) -> dict[int, float]:
    """CPU seconds per process of ``root``'s tree."""
    return cpu_seconds(process_tree(root.pid))


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> tuple[float, float]:
    """(CPU spent between two :func:`tree_cpu` readings, the most one process of them spent);
    processes that ended in between are left out."""
    spent = [value - before.get(pid, 0.0) for pid, value in after.items()]
    return sum(spent), max(spent, default=0.0)


def measure_step(bed: Bed, workdir: Path, rate: int, duration: float) -> Step:
    """One step of a ladder: SIPp's uac at ``rate`` for ``duration`` s against ``bed``, measured."""
    proxy = bed.proxy
    calls = int(rate * duration)
    load = loadavg()
    pids = proxy.pids()
    busy0, steal0, total0 = machine_ticks()
    drops0, all_drops0 = udp_drops()
    cpu0 = cpu_seconds(pids)
    uas0 = cpu_seconds([bed.uas.pid]).get(bed.uas.pid, 0.0)
    peers0 = {name: tree_cpu(process) for name, process in bed.peers.items()}
    result = run_uac(
        workdir / f"rate{rate}", bed.target, bed.sipp_transport, rate=rate, calls=calls, duration=duration
    )
    pids = sorted(set(pids) | set(proxy.pids()))
    cpu1 = cpu_seconds(pids)
    drops1, all_drops1 = udp_drops()
    busy1, steal1, total1 = machine_ticks()
    peers = {name: cpu_delta(peers0[name], tree_cpu(process)) for name, process in bed.peers.items()}
    proxy_drops = drops1.get(proxy.port, 0) - drops0.get(proxy.port, 0)
    uas1 = cpu_seconds([bed.uas.pid]).get(bed.uas.pid, 0.0)
    proxy_cpu, proxy_top = cpu_delta({pid: cpu0.get(pid, 0.0) for pid in pids}, cpu1)
    times = sorted(result.answer_times_ms)
    span = (times[-1] - times[0]) / 1000 if len(times) > 1 else 0.0
    achieved = (len(times) - 1) / span if span > 0 else 0.0
    rtts = result.rtts_ms
    step = Step(
        proxy.name,
        proxy.transport,
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
        edge_cpu=peers.get("edge", (0.0, 0.0))[0],
        member_cpu=peers.get("member", (0.0, 0.0))[0],
        proxy_top=proxy_top,
        edge_top=peers.get("edge", (0.0, 0.0))[1],
        member_top=peers.get("member", (0.0, 0.0))[1],
        machine_busy=100 * (busy1 - busy0) / max(total1 - total0, 1),
        machine_steal=100 * (steal1 - steal0) / max(total1 - total0, 1),
    )
    if proxy.process is not None and proxy.process.poll() is not None:
        step.note = f"{proxy.name} exited"
    elapsed = max(result.elapsed, 1e-9)
    peer_text = "".join(
        f", {name} CPU {100 * cpu / elapsed:.0f}% (busiest process {100 * top / elapsed:.0f}%)"
        for name, (cpu, top) in peers.items()
    )
    log(
        f"  {proxy.name} {proxy.transport} {rate:>6} cps: achieved {achieved:8.0f},"
        f" failed {step.failed} ({step.failed_pct:.2f}%; 1xx after 200: {step.late_provisional}),"
        f" proxy CPU {proxy_cpu:.2f} s ({step.cpu_per_1000:.3f} s/1000),"
        f" SIPp uac CPU {100 * result.sipp_cpu / elapsed:.0f}%{peer_text},"
        f" RT p50/p95/p99 {fmt_ms(step.p50)}/{fmt_ms(step.p95)}/{fmt_ms(step.p99)} ms,"
        f" machine CPU busy {step.machine_busy:.0f}% (steal {step.machine_steal:.0f}%), load {load}"
    )
    return step


def run_ladders(
    names: list[str],
    transport: str,
    rates: list[int],
    duration: float,
    root: Path,
    *,
    pki: Pki | None = None,
    sessions: dict[str, str] | None = None,
    interleave: bool = False,
) -> list[Step]:
    """The ladder of each proxy of ``names`` over ``transport``: one after the other, or with
    ``interleave`` all test beds up at once and the proxies taking turns at each rate (so that
    other work on the machine, coming and going, weighs on both alike).  A proxy's ladder
    ends after a step with more than 10% failed calls.  ``sessions`` (TLS): gets what
    openssl negotiates with each proxy's TLS listen."""
    steps: list[Step] = []
    ends: dict[Path, dict[str, int | None]] = {}
    groups = [names] if interleave else [[name] for name in names]
    for group in groups:
        with contextlib.ExitStack() as stack:
            beds: dict[str, tuple[Bed, Path]] = {}
            for name in group:
                workdir = root / f"{name}-{transport}"
                workdir.mkdir()
                # runs after the test bed's teardown: the logs are complete
                stack.callback(report_log_problems, name, transport, workdir, ends)
                try:
                    bed = stack.enter_context(bench_bed(name, transport, workdir, pki))
                    warm_up(bed, workdir, time.monotonic() + 30)
                except RuntimeError as error:
                    log(f"{name} {transport}: {error}")
                    continue
                if sessions is not None and pki is not None and not isinstance(bed.proxy, Direct):
                    sessions[name] = tls_session(bed.proxy.port, pki)
                    log(f"  {name} TLS listen: {sessions[name] or '?'}")
                beds[name] = (bed, workdir)
            running = list(beds)
            for rate in rates:
                for name in list(running):
                    bed, workdir = beds[name]
                    step = measure_step(bed, workdir, rate, duration)
                    steps.append(step)
                    if step.note or step.failed_pct > STOP_FAILED_PCT:
                        running.remove(name)
            # what the logs say up to here; the rest is the teardown's (e.g. a member's retransmitted
            # response to a proxy already stopped: connection refused)
            for name, (_bed, workdir) in beds.items():
                ends[workdir] = {peer: log_size(workdir / f"{peer}.log") for peer in (name, *LOGGED_PEERS)}
    return steps


def report_log_problems(
    name: str, transport: str, workdir: Path, ends: dict[Path, dict[str, int | None]]
) -> None:
    """Say how many warning/error lines the proxy's and the peers' logs hold, up to the end of
    the ladder (``ends``: the size of each log then) when known."""
    sizes = ends.get(workdir, {})
    for log_name in (name, *LOGGED_PEERS):
        path = workdir / f"{log_name}.log"
        # Kamailio's tls module warns once per process at start (its OpenSSL low-memory workaround)
        errors = log_count(path, *PROBLEMS, end=sizes.get(log_name)) - log_count(path, TLS_START_WARNING)
        if errors:
            log(f"  {name} {transport}: {errors} warning/error lines in {path}")


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
    with bench_bed(proxy_name, "udp", workdir, None) as bed:
        proxy = bed.proxy
        uac: subprocess.Popen[bytes] | None = None
        try:
            warm_up(bed, workdir, time.monotonic() + 30)
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


# --------------------------------------------------------------------------- report


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def interpreter_path(python: Path) -> str:
    """``--sipha-python`` as sipha is started with it: absolute (sipha runs in its own work
    directory), symbolic links kept (a venv's ``bin/python`` links to the base Python)."""
    return str(python.absolute())


def sipha_build(python: Path) -> str:
    """Whether ``python`` runs sipha's core compiled (mypyc, setup.py) or interpreted."""
    probe = "import sipha.proxy.core as m; print(m.__file__)"
    found = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=False).stdout
    kind = "compiled with mypyc" if found.strip().endswith(".so") else "interpreted"
    shown = os.path.relpath(python, Path.cwd())
    return f"{kind} ({python if shown.startswith('..') else shown})"


def git_commit() -> str:
    """The commit of the tree measured, ``+`` when it had changes not committed; "?" outside git."""
    args = ["git", "-C", str(REPO), "describe", "--always", "--dirty=+"]
    found = subprocess.run(args, capture_output=True, text=True, check=False)
    return found.stdout.strip() if found.returncode == 0 else "?"


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


def step_row(s: Step) -> str:
    """One table row; TLS steps have the edge's and the member's CPU and one drop count."""
    note = f"; {s.note}" if s.note else ""
    if s.late_provisional:
        note = f"; {s.late_provisional:,} by a 1xx after the 200{note}"

    def pct(cpu: float, top: float) -> str:
        return f"{100 * cpu / s.wall:.0f} ({100 * top / s.wall:.0f})"

    tls = s.transport == "tls"
    proxy = pct(s.proxy_cpu, s.proxy_top) if tls else f"{100 * s.proxy_cpu / s.wall:.0f}"
    peers = f" {pct(s.edge_cpu, s.edge_top)} | {pct(s.member_cpu, s.member_top)} |" if tls else ""
    drops = (
        f"{s.proxy_drops + s.other_drops:,}"
        if s.transport == "tls"
        else f"{s.proxy_drops:,}/{s.other_drops:,}"
    )
    return (
        f"| {s.proxy} | {s.transport.upper()} | {s.rate:,} | {s.achieved_cps:,.0f} |"
        f" {s.failed:,} ({s.failed_pct:.2f}%{note}) | {s.cpu_per_1000:.3f} |"
        f" {fmt_ms(s.p50)}/{fmt_ms(s.p95)}/{fmt_ms(s.p99)} |"
        f" {proxy} |{peers} {100 * s.sipp_cpu / s.wall:.0f} |"
        f" {100 * s.uas_cpu / s.wall:.0f} | {drops} |"
        + (f" {s.machine_busy:.0f}/{s.machine_steal:.0f} |" if tls else "")
        + f" {s.load.split()[0]} |"
    )


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
    tls_sessions: dict[str, str] | None = None,
    pinned: bool = False,
) -> str:
    has_tls = any(s.transport == "tls" for s in steps)
    # rows by transport, proxy (in the order of the run), rate: --interleave measured them by rate
    first = {name: index for index, name in enumerate(dict.fromkeys(s.proxy for s in steps))}
    steps = sorted(steps, key=lambda s: (TRANSPORT_ORDER.index(s.transport), first[s.proxy], s.rate))
    lines = [
        "## sipha vs Kamailio: SIPp `uac` through the proxy, 127.0.0.1",
        "",
        f"- run: {started}; load average (1/5/15 min) at start {load_start}, at end {load_end}",
        f"- machine: {machine_text}",
        f"- command: `{command}`",
        (
            f"- sipha: {sipha_build}, `[proxy] workers = {sipha_workers}`; Kamailio:"
            + (
                f" `children={1 if pinned else 2}` (bench/kamailio/kamailio.cfg)"
                if any(s.transport != "tls" for s in steps)
                else ""
            )
            + (";" if has_tls and any(s.transport != "tls" for s in steps) else "")
            + (" TLS `tcp_children=2` (bench/kamailio/tls-proxy.cfg)" if has_tls else "")
        ),
    ]
    if pinned:
        lines.append(
            "- **per core** (`--pin`): each proxy and all its processes on core 0 (`taskset -c 0`);"
            " SIPp, the members and the harness on core 1"
        )
    if has_tls:
        lines.append(
            "- TLS: SIPp uac --UDP--> Kamailio edge (tls-edge.cfg) --TLS--> proxy --TLS--> Kamailio member"
            " (tls-member.cfg) --UDP--> SIPp uas; backup: a second member in backup mode (503);"
            " certificates from a trustme CA; the edge and the proxy verify the chain (sipha also"
            " the member's name), members do not ask for a client certificate"
        )
        lines.extend(
            f"- TLS listen of {name} (openssl s_client): {text}"
            for name, text in (tls_sessions or {}).items()
            if text
        )
    lines.append("")
    plain = [s for s in steps if s.transport != "tls"]
    if plain:
        lines += [
            (
                "| proxy | transport | offered cps | achieved cps | failed | CPU s / 1000 calls"
                " | RT p50/p95/p99 ms | proxy CPU % | SIPp uac CPU % | UAS CPU % | UDP drops proxy/other"
                " | load 1m |"
            ),
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        lines.extend(step_row(s) for s in plain)
        lines.append("")
    if has_tls:
        lines += [
            (
                "| proxy | transport | offered cps | achieved cps | failed | CPU s / 1000 calls"
                " | RT p50/p95/p99 ms | proxy CPU % (busiest process) | edge CPU % (busiest) | member CPU %"
                " (busiest) | SIPp uac CPU % | UAS CPU % | UDP drops | machine CPU busy/steal % | load 1m |"
            ),
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        lines.extend(step_row(s) for s in steps if s.transport == "tls")
        lines.append("")
    failing = [s for s in steps if s.failed]
    if failing:
        lines.append("Failed calls by cause (SIPp's error file; calls never completed count as failed):")
        lines.append("")
        for s in failing:
            causes = ", ".join(f"{cause}: {count:,}" for cause, count in s.causes.most_common(4)) or "?"
            lines.append(f"- {s.proxy} {s.transport.upper()} {s.rate:,} cps: {s.failed:,} failed; {causes}")
        lines.append("")
    for transport in sorted({s.transport for s in steps}, key=TRANSPORT_ORDER.index):
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
    parser.add_argument(
        "--transport",
        choices=list(TRANSPORTS),
        default="udp",
        help="udp, tcp, tls, both (udp and tcp) or all (udp, tcp, tls); default %(default)s",
    )
    parser.add_argument(
        "--proxies",
        default="sipha,kamailio",
        help="which, in this order: sipha, kamailio, direct (no proxy: the ceiling of the rest); %(default)s",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the held-calls memory test")
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="all proxies up at once, taking turns at each rate (else one whole ladder after the other)",
    )
    parser.add_argument(
        "--sipha-python",
        type=Path,
        default=COMPILED_PYTHON if COMPILED_PYTHON.exists() else Path(sys.executable),
        help="the Python that runs sipha (default: %(default)s; `make compiled` builds .venv-compiled)",
    )
    parser.add_argument(
        "--sipha-workers", type=int, default=SIPHA_WORKERS, help="sipha's [proxy] workers (%(default)s)"
    )
    parser.add_argument(
        "--peer-children",
        type=int,
        default=PEER_CHILDREN,
        help="TLS ladder: worker processes per transport of the edge and member Kamailios (%(default)s)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="per core: each proxy on core 0 (sipha 1 worker, Kamailio 1 child per transport and its"
        " helper processes), SIPp and the members on core 1",
    )
    parser.add_argument("--out", type=Path, help="also write the Markdown report here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, SIPp files)")
    parser.add_argument("--json", type=Path, help="also write the raw measurements here (JSON)")
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="only print the report of each --json file (and --plot them together); run nothing",
    )
    parser.add_argument(
        "--plot", type=Path, metavar="FILE.png", help="also draw failed %% and CPU per call (bench/plot.py)"
    )
    options = parser.parse_args()
    if options.from_json:
        documents = [json.loads(path.read_text()) for path in options.from_json]
        if options.plot:  # first: it names a missing field (the report would raise a TypeError)
            sources = [str(path) for path in options.from_json]
            try:
                plot_runs(documents, options.plot, sources=sources, ok_failed_pct=OK_FAILED_PCT)
            except RunDocumentError as error:
                sys.exit(f"--plot: {error}")
            log(f"drawn to {options.plot}")
        text = "\n".join(
            report(
                [Step(**{**s, "causes": Counter(s["causes"])}) for s in data["steps"]],
                [Memory(**m) for m in data["memories"]],
                **data["meta"],
            )
            for data in documents
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
    transports = TRANSPORTS[options.transport]
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
    if options.pin:
        global KAMAILIO_CHILDREN  # noqa: PLW0603 - a run-wide setting, like Sipha.workers
        if os.cpu_count() is None or os.cpu_count() < 2:  # type: ignore[operator]
            parser.error("--pin needs two cores")
        Sipha.workers = 1
        KAMAILIO_CHILDREN = 1
        PROXY_CPU[:] = ["taskset", "-c", "0"]
        os.sched_setaffinity(0, {1})  # this process, SIPp and the members: inherited
    Peer.children = options.peer_children
    Sipha.python = interpreter_path(options.sipha_python)
    ensure_installed(tls="tls" in transports)
    root = Path(tempfile.mkdtemp(prefix="sipha-bench-"))
    pki = write_pki(root / "pki") if "tls" in transports else None
    if "kamailio" in proxies and transports != ["tls"]:
        check_kamailio_cfg()
    if pki is not None:
        tls_cfg = write_kamailio_tls_cfg(root / "check-tls.cfg", pki, pki.proxy)
        for cfg in (EDGE_CFG, MEMBER_CFG, *([KAMAILIO_TLS_CFG] if "kamailio" in proxies else [])):
            check_kamailio_cfg(cfg, {"TLS_CFG": f'"{tls_cfg}"'})
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    load_start = loadavg()
    log(
        f"rates {rates} for {duration:g} s each, transports {transports}, proxies {proxies};"
        f" load {load_start}"
    )
    steps: list[Step] = []
    memories: list[Memory] = []
    tls_sessions: dict[str, str] = {}
    try:
        for transport in transports:
            steps += run_ladders(
                proxies,
                transport,
                rates,
                duration,
                root,
                pki=pki,
                sessions=tls_sessions if transport == "tls" else None,
                interleave=options.interleave,
            )
        # memory per held call is a UDP measurement: run with the UDP and TCP ladders
        if not options.no_memory and transports != ["tls"]:
            for name in proxies:
                if name == "direct":
                    continue
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
    meta: dict[str, Any] = {
        "command": command,
        "started": started,
        "load_start": load_start,
        "load_end": loadavg(),
        "machine_text": machine(),
        "sipha_workers": Sipha.workers,
        "pinned": bool(options.pin),
        "sipha_build": sipha_build(options.sipha_python),
        "tls_sessions": tls_sessions,
    }
    text = report(steps, memories, **meta)
    print()
    print(text)
    if options.out:
        options.out.write_text(text + "\n")
        log(f"written to {options.out}")
    raw = {
        "meta": meta,
        "commit": git_commit(),  # beside meta, which is report()'s keyword arguments
        "steps": [s.__dict__ for s in steps],
        "memories": [m.__dict__ for m in memories],
    }
    if options.json:
        options.json.write_text(json.dumps(raw, indent=1) + "\n")
        log(f"measurements written to {options.json}")
    if options.plot and steps:
        plot_runs([raw], options.plot, ok_failed_pct=OK_FAILED_PCT)
        log(f"drawn to {options.plot}")
    elif options.plot:
        log(f"no step measured: {options.plot} not drawn")
    return 0


if __name__ == "__main__":
    sys.exit(main())
