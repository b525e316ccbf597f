"""ProxyApp in-process: what a reload keeps and what it re-derives (worker tag, resolve-host)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipha.app import ProxyApp
from sipha.assembly import WorkerPlan
from sipha.config import ConfigError, load_config
from sipha.net.workers import handoff_pairs
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
