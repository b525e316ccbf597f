"""ProxyApp in-process: what a reload keeps and what it re-derives (worker tag, resolve-host)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from sipha.app import ProxyApp
from sipha.assembly import WorkerPlan
from sipha.config import ConfigError, load_config
from sipha.net.workers import handoff_pairs
from sipha.sip.address import Address
from sipha.supervisor import bind_worker_sockets
from tests.net.support import free_port

PAIR = '[[pair]]\nname = "p"\nprimary = "udp:127.0.0.1:{a}"\nbackup = "udp:127.0.0.1:{b}"\nserving = true\n'


def write(path: Path, proxy: str) -> Path:
    text = f"[proxy]\n{proxy}\n[monitor]\noos-check = 0\n" + PAIR.format(a=free_port(), b=free_port())
    path.write_text(text, encoding="utf-8")
    return path


async def test_a_worker_keeps_its_branch_tag_across_a_reload(tmp_path: Path) -> None:
    """Responses find the worker holding their transaction by the tag in our branch: a
    SIGHUP in worker 1 must not drop its ``.w1`` (it did: the reload rebuilt the settings
    as for a single process)."""
    path = write(tmp_path / "sipha.toml", f'listen = ["udp:127.0.0.1:{free_port()}"]\nworkers = 2')
    config = load_config(path)
    sockets = bind_worker_sockets(config, 2)
    plan = WorkerPlan(index=1, count=2, sockets=sockets[1], handoff=handoff_pairs(2))
    app = ProxyApp(config, admin=False, config_path=path, worker=plan)
    await app.start()
    try:
        assert app.core is not None
        assert app.core.settings.branch_tag == ".w1"
        assert await app.reload()
        assert app.core.settings.branch_tag == ".w1"
    finally:
        await app.stop()
        for plan_sockets in sockets:
            for bound in plan_sockets.values():
                for sock, _ in bound:
                    sock.close()


async def test_resolve_host_puts_the_resolved_ip_in_via(tmp_path: Path) -> None:
    port = free_port()
    path = write(
        tmp_path / "sipha.toml",
        f'listen = ["udp:0.0.0.0:{port}"]\nsip-address = "localhost"\nresolve-host = true',
    )
    app = ProxyApp(load_config(path), admin=False, config_path=path)
    await app.start()
    try:
        assert app.core is not None
        assert app.core.settings.via["UDP"] in {("127.0.0.1", port), ("[::1]", port)}
        assert await app.reload()
        assert app.core.settings.via["UDP"][0] in {"127.0.0.1", "[::1]"}
    finally:
        await app.stop()


async def test_without_resolve_host_the_name_stays_in_via(tmp_path: Path) -> None:
    port = free_port()
    path = write(tmp_path / "sipha.toml", f'listen = ["udp:0.0.0.0:{port}"]\nsip-address = "localhost"')
    app = ProxyApp(load_config(path), admin=False, config_path=path)
    await app.start()
    try:
        assert app.core is not None
        assert app.core.settings.via["UDP"] == ("localhost", port)
    finally:
        await app.stop()


async def test_resolve_host_with_a_name_that_does_not_resolve_refuses_to_start(tmp_path: Path) -> None:
    path = write(
        tmp_path / "sipha.toml",
        f'listen = ["udp:0.0.0.0:{free_port()}"]\nsip-address = "no-such-host.invalid"\nresolve-host = true',
    )
    app = ProxyApp(load_config(path), admin=False, config_path=path)
    with pytest.raises(ConfigError, match=r"proxy.sip-address = 'no-such-host.invalid': does not resolve"):
        await app.start()


@pytest.mark.parametrize(
    "proxy",
    [
        'listen = ["udp:127.0.0.1:5060"]\nresolve-host = true',
        'sip-address = "192.0.2.1"\nresolve-host = true',
    ],
    ids=["no-sip-address", "ip-sip-address"],
)
def test_resolve_host_without_a_name_to_resolve_is_refused(tmp_path: Path, proxy: str) -> None:
    with pytest.raises(ConfigError, match=r"proxy.resolve-host = True: .*nothing to resolve"):
        load_config(write(tmp_path / "sipha.toml", proxy))


async def test_sighup_is_handled_from_the_moment_sipha_says_it_listens(tmp_path: Path) -> None:
    """ "listening on" is what operators and tests wait for before they signal: a SIGHUP sent
    then must reload, not kill the process (it did, once, in CI: the handlers were installed
    only after start() had logged it, and SIGHUP's default action is to terminate)."""
    path = write(tmp_path / "sipha.toml", f'listen = ["udp:127.0.0.1:{free_port()}"]')
    handlers_when_listening: list[object] = []

    class WatchListening(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("listening on"):
                handlers_when_listening.append(signal.getsignal(signal.SIGHUP))

    watch = WatchListening()
    logger = logging.getLogger("sipha")
    level = logger.level
    logger.addHandler(watch)
    logger.setLevel(logging.INFO)
    app = ProxyApp(load_config(path), admin=False, config_path=path)
    running = asyncio.create_task(app.run())
    try:
        for _ in range(200):
            if handlers_when_listening or running.done():
                break
            await asyncio.sleep(0.01)
        assert handlers_when_listening, "sipha never said it listens"
        assert handlers_when_listening[0] not in (signal.SIG_DFL, signal.SIG_IGN, None)
        os.kill(os.getpid(), signal.SIGHUP)  # safe: the handler is in place (asserted above)
        for _ in range(200):
            if app.telemetry.reloads:
                break
            await asyncio.sleep(0.01)
        assert app.telemetry.reloads, "the SIGHUP did not reload"
    finally:
        logger.removeHandler(watch)
        logger.setLevel(level)
        await app.stop()
        await asyncio.wait_for(running, 5)


async def test_sigterm_while_starting_drains_once_started(tmp_path: Path) -> None:
    """A SIGTERM that arrives before start() is done is kept, not lost: once started,
    sipha drains (nothing under way here) and run() returns."""
    path = write(tmp_path / "sipha.toml", f'listen = ["udp:127.0.0.1:{free_port()}"]')
    app = ProxyApp(load_config(path), admin=False, config_path=path)
    app._on_stop_signal(signal.SIGTERM)  # as the loop would call it, before the core exists
    await asyncio.wait_for(app.run(), 10)
    assert app.core is not None
    assert app.core.under_way == 0


async def test_the_idle_garbage_collection_waits_for_the_transactions_not_only_the_contexts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full collection scans every live object: with a call's transactions still alive (Timers J
    and L: 32 s after each call) it stopped the loop long enough to shed calls under steady load
    (two 10-minute soaks at 1,250 calls/s shed 696 and 739 new INVITEs, at 60 s and 210 s, each
    time a moment with no response context open).  "Idle" is no transaction alive."""
    seen: list[Callable[[], int]] = []

    async def capture(alive: Callable[[], int], clock: Callable[[], float]) -> None:
        seen.append(alive)

    monkeypatch.setattr("sipha.app.collect_garbage_when_idle", capture)
    path = write(tmp_path / "sipha.toml", f'listen = ["udp:127.0.0.1:{free_port()}"]')
    app = ProxyApp(load_config(path), admin=False, config_path=path)
    await app.start()
    try:
        core = app.core
        assert core is not None
        await asyncio.sleep(0)  # the collector's task starts
        (alive,) = seen
        assert alive() == 0
        # A request answered at once (483: Max-Forwards 0): its server transaction stays in
        # Completed for Timer J, with no response context.
        hop_limit = (
            b"OPTIONS sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-idle-1\r\n"
            b"Max-Forwards: 0\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:bob@127.0.0.1>\r\n"
            b"Call-ID: idle-1@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        core.receive(hop_limit, Address("UDP", "127.0.0.1", 5999), app._now())
        core.drain()
        assert core.contexts == 0
        assert len(core.txn) == 1
        assert alive() == 1
    finally:
        await app.stop()
