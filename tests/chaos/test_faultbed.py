"""The fault bed itself: namespaces come and go with their processes, faults drop what they say.

These run before the scenarios (test_takeover.py) trust the bed: a partition
that did not drop, a loss that dropped everything, a forged datagram that never
arrived, or a process left behind would make every scenario meaningless.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.chaos.faultbed import (
    BACKUP_IP,
    IP,
    OWNERS,
    PRIMARY_IP,
    SIP_PORT,
    SIPHA_IP,
    Namespace,
    chaos_marks,
    reap_stale,
)

pytestmark = chaos_marks()

FORGE = Path(__file__).resolve().parent / "forge.py"


def _listed() -> str:
    assert IP is not None
    return subprocess.run([IP, "netns", "list"], capture_output=True, text=True, check=True).stdout


def _gone(pid: int) -> bool:
    """No such process, or a zombie (dead, waiting for its parent to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


def test_namespace_and_its_processes_go_away(tmp_path: Path) -> None:
    """Close: a plain process, one ignoring SIGTERM, a stopped one and an orphan all die; no netns left."""
    with Namespace(tmp_path) as ns:
        name = ns.name
        assert name in _listed()
        assert (OWNERS / name).exists()
        plain = ns.popen("sleep", "60")
        # ip netns exec execs the command: the Popen is the process itself (signals reach it).
        deadline = time.monotonic() + 5
        while Path(f"/proc/{plain.pid}/comm").read_text().strip() != "sleep":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        stubborn = ns.popen("sh", "-c", "trap '' TERM; sleep 60 & wait")
        stopped = ns.popen("sleep", "61")
        orphan_log = tmp_path / "orphan.pid"
        ns.popen("sh", "-c", f"sleep 62 & echo $! > {orphan_log}")
        deadline = time.monotonic() + 5
        while not orphan_log.exists() or not orphan_log.read_text().strip():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        orphan = int(orphan_log.read_text())
        stopped.send_signal(19)  # SIGSTOP
        assert ns.run("ip", "-brief", "link").split()[:2] == ["lo", "UNKNOWN"]  # up; lo's state
        started = time.monotonic()
    took = time.monotonic() - started
    assert plain.returncode is not None
    assert stubborn.returncode is not None
    assert stopped.returncode is not None
    assert _gone(orphan)
    assert name not in _listed()
    assert not (OWNERS / name).exists()
    assert took < 10, took
    ns.close()  # idempotent


def test_a_namespace_left_by_a_dead_creator_is_reaped(tmp_path: Path) -> None:
    ns = Namespace(tmp_path).open()
    try:
        straggler = ns.popen("sleep", "60")
        dead = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True)
        (OWNERS / ns.name).write_text(dead.stdout)  # as if its creator had been SIGKILLed
        assert ns.name in reap_stale()
        assert ns.name not in _listed()
        assert straggler.wait(5) == -9
    finally:
        ns.close()


def test_partitions_drop_on_input_only(netns: Namespace) -> None:
    """both / to / from drop what they say, silently (no EPERM, no ICMP error); heal restores."""

    def exchange() -> tuple[bool, bool]:
        """(sipha -> primary arrived, primary -> sipha arrived); sendto must never fail."""
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sipha,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as primary,
        ):
            sipha.bind((SIPHA_IP, SIP_PORT))
            primary.bind((PRIMARY_IP, SIP_PORT))
            for sock in (sipha, primary):
                sock.settimeout(0.2)
            sipha.sendto(b"to primary", (PRIMARY_IP, SIP_PORT))
            primary.sendto(b"to sipha", (SIPHA_IP, SIP_PORT))
            arrived = []
            for sock in (primary, sipha):
                try:
                    sock.recv(100)
                except TimeoutError:
                    arrived.append(False)
                else:
                    arrived.append(True)
            return arrived[0], arrived[1]

    assert netns.call(exchange) == (True, True)
    seen = {}
    for direction in ("both", "to", "from"):
        netns.partition(PRIMARY_IP, direction)
        seen[direction] = netns.call(exchange)
        netns.heal()
    assert seen == {"both": (False, False), "to": (False, True), "from": (True, False)}
    assert netns.call(exchange) == (True, True)
    assert netns.counter("dropped") == 4


def test_dead_port_gets_icmp_but_a_partitioned_one_does_not(netns: Namespace) -> None:
    """Nothing on BACKUP_IP:5060: ICMP port unreachable (ECONNREFUSED); partitioned: silence."""

    def probe() -> str:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((SIPHA_IP, 0))
            sock.connect((BACKUP_IP, SIP_PORT))
            sock.settimeout(0.3)
            sock.send(b"anyone?")
            try:
                sock.recv(100)
            except ConnectionRefusedError:
                return "refused"
            except TimeoutError:
                return "silence"
            return "answer"

    assert netns.call(probe) == "refused"
    netns.partition(BACKUP_IP, "to")
    assert netns.call(probe) == "silence"


def test_loss_drops_about_the_share_asked(netns: Namespace) -> None:
    netns.loss(30)

    def send(count: int) -> int:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
        ):
            receiver.bind((PRIMARY_IP, SIP_PORT))
            receiver.setblocking(False)
            received = 0
            for index in range(count):
                sender.sendto(b"x", (PRIMARY_IP, SIP_PORT))
                if index % 50 == 49:  # drain now and then: the socket buffer must not be what drops
                    time.sleep(0.005)
                    while True:
                        try:
                            receiver.recv(10)
                        except BlockingIOError:
                            break
                        received += 1
            time.sleep(0.05)
            while True:
                try:
                    receiver.recv(10)
                except BlockingIOError:
                    break
                received += 1
            return received

    received = netns.call(send, 2000)
    lost = 2000 - received
    # Binomial(2000, 0.3): mean 600, sd 20.5; +-5 sd.
    assert 500 <= lost <= 700, lost
    assert netns.counter("dropped") == lost


def test_forged_datagrams_arrive_from_the_members_address(netns: Namespace) -> None:
    netns.watch(
        "forged", f"ip saddr {BACKUP_IP} udp sport {SIP_PORT} ip daddr {SIPHA_IP} udp dport {SIP_PORT}"
    )

    def receive(count: int) -> list[tuple[bytes, tuple[str, int]]]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((SIPHA_IP, SIP_PORT))
            sock.settimeout(5.0)
            ready.append(True)
            return [sock.recvfrom(65535) for _ in range(count)]

    ready: list[bool] = []
    receiving = netns.spawn(receive, 6)
    deadline = time.monotonic() + 5
    while not ready:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    forger = netns.popen(
        sys.executable,
        str(FORGE),
        "--source",
        f"{BACKUP_IP}:{SIP_PORT}",
        "--target",
        f"{SIPHA_IP}:{SIP_PORT}",
        "--rate",
        "100",
        "--count",
        "6",
        log=netns.directory / "forge.log",
    )
    assert forger.wait(10) == 0
    datagrams = receiving.result(10)
    assert [source for _, source in datagrams] == [(BACKUP_IP, SIP_PORT)] * 6
    assert [data.split(b" ", 1)[0] for data, _ in datagrams] == [b"OPTIONS", b"INVITE"] * 3
    assert all(b"\r\nVia: SIP/2.0/UDP 127.0.0.3:5060;branch=z9hG4bK" in data for data, _ in datagrams)
    assert netns.counter("forged") == 6
    assert "forged 6 datagrams from 127.0.0.3:5060" in (netns.directory / "forge.log").read_text()


def test_output_hook_drop_would_look_like_an_icmp_error(netns: Namespace) -> None:
    """Why faults are on the input hook: an output drop fails sendto (EPERM) like a local error."""
    netns.nft(
        "add chain inet sipha_chaos output { type filter hook output priority 0; policy accept; }\n"
        f"add rule inet sipha_chaos output ip daddr {PRIMARY_IP} drop\n"
    )

    def send() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto(b"x", (PRIMARY_IP, SIP_PORT))
            except OSError as error:
                return error.errno or 0
            return 0

    assert netns.call(send) == errno.EPERM


def test_a_test_thread_stays_out_of_the_namespace(netns: Namespace) -> None:
    """Only the spawned thread enters the namespace: this one still sees the host's interfaces."""

    def here() -> tuple[str, list[str]]:
        return os.readlink("/proc/thread-self/ns/net"), [name for _, name in socket.if_nameindex()]

    inside, interfaces = netns.call(here)
    assert interfaces == ["lo"]
    assert inside != here()[0]
    assert inside == f"net:[{os.stat(netns.path).st_ino}]"
