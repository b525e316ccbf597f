"""The admin HTTP as an attacker sees it: where it listens, what it does without the token, what leaks.

* It never listens beyond loopback by default, and a configuration that would make it
  listen beyond loopback without a token is refused (whoever reached it could reload,
  drain or stop sipha, or put a member in maintenance).
* With a token, no changing request (every POST route of the server, the dashboard's
  buttons included) does anything without it: 401, and nothing changed.
* No secret (the admin token, the HEP password) is in a response, whatever its status,
  nor in a log line, through reloads that change them or refuse them.

The other tests of the token (GET routes, ``?token=`` for the dashboard, a refused reload
naming ``admin.token`` without its value) are in test_admin_http.py and test_admin_control.py.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import shutil
import socket
import subprocess
from pathlib import Path

import aiohttp
import pytest

from sipha.app import ProxyApp
from sipha.config import ConfigError, load_config, load_config_text, parse_address
from tests.admin.support import HOST, Running, eventually, running_proxy
from tests.integration.support import free_port

REPO = Path(__file__).resolve().parents[2]
TOKEN = "tok-8f2c7e1a9b44"  # noqa: S105 - a test value
NEW_TOKEN = "tok-new-71c0d5e2"  # noqa: S105 - a test value
HEP_PASSWORD = "hep-pw-5d3a90"  # noqa: S105 - a test value
JSON = {"Content-Type": "application/json"}


# ---------------------------------------------------------------------------- where it listens


def admin_host(listen: str) -> str:
    return parse_address(f"tcp:{listen}").host


@pytest.mark.parametrize(
    "source", [None, *sorted((REPO / "examples").glob("*.toml"))], ids=lambda p: p.name if p else "default"
)
def test_every_shipped_configuration_keeps_the_admin_http_on_loopback(source: Path | None) -> None:
    config = load_config(source)
    assert ipaddress.ip_address(admin_host(config.admin.listen)).is_loopback, config.admin.listen


@pytest.mark.parametrize("listen", ["0.0.0.0:8080", "[::]:8080", "192.0.2.7:8080", "admin.example.com:8080"])
def test_beyond_loopback_without_a_token_is_refused(listen: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(f'[admin]\nlisten = "{listen}"\n')
    assert caught.value.problems == [
        (
            f"admin.listen = {listen!r}: beyond loopback admin.token is required (whoever reaches it can "
            "reload, drain, stop sipha): set a token or listen on 127.0.0.1"
        )
    ]
    assert load_config_text(f'[admin]\nlisten = "{listen}"\ntoken = "{TOKEN}"\n').admin.listen == listen


@pytest.mark.parametrize("listen", ["127.0.0.1:8080", "127.0.0.2:8080", "[::1]:8080", "localhost:8080"])
def test_loopback_needs_no_token(listen: str) -> None:
    assert load_config_text(f'[admin]\nlisten = "{listen}"\n').admin.listen == listen


async def test_the_admin_socket_is_bound_to_loopback_only() -> None:
    async with running_proxy() as running:
        admin = running.app.admin
        assert admin is not None
        runner = admin._runner  # the bound addresses are the point
        assert runner is not None
        bound = [address[0] for address in runner.addresses]
        assert bound == [HOST]
        # Nothing answers on the machine's other addresses (`ip -4 addr`: those it has).
        for other in machine_addresses():
            with socket.socket() as probe:
                probe.settimeout(1.0)
                with pytest.raises(ConnectionRefusedError):
                    probe.connect((other, admin.port))


def machine_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback (none when ``ip`` is missing)."""
    ip = shutil.which("ip")
    if ip is None:
        return []
    listed = subprocess.run(
        [ip, "-j", "-4", "addr", "show"], capture_output=True, text=True, check=True, timeout=10
    )
    return [
        info["local"]
        for link in json.loads(listed.stdout)
        for info in link.get("addr_info", [])
        if not ipaddress.ip_address(info["local"]).is_loopback
    ]


# ---------------------------------------------------------------------------- no change without the token


async def test_with_a_token_no_changing_request_does_anything_without_it() -> None:
    async with running_proxy(token=TOKEN) as running:
        await eventually(lambda: healthy(running), "/healthz 200 at start")
        admin = running.app.admin
        assert admin is not None
        posts = sorted(
            {
                route.resource.canonical
                for route in admin.app.router.routes()
                if route.method == "POST" and route.resource is not None
            }
        )
        assert {"/reload", "/drain", "/member", "/demo/switch"} <= set(posts)  # the dashboard's buttons too
        core = running.app.core
        assert core is not None
        body = {"pair": "site", "member": "primary", "mode": "maintenance"}
        for path in posts:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
                for url in (running.base + path, f"{running.base}{path}?token={TOKEN}"):
                    async with running.http.post(url, json=body, headers=headers) as response:
                        text = await response.text()
                        assert response.status == 401, (path, headers, url)
                        assert TOKEN not in text
                        assert TOKEN not in str(response.headers)
        assert running.app.telemetry.reloads == 0
        assert not core.draining
        async with running.http.get(
            running.base + "/status", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as got:
            assert (await got.json())["pairs"][0]["maintenance"] == []
        # A positive control: with the token the same request is served.
        async with running.http.post(
            running.base + "/member", json=body, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as response:
            assert response.status == 200, await response.text()


async def healthy(running: Running) -> bool:
    return (await running.get("/healthz"))[0] == 200


# ---------------------------------------------------------------------------- no secret anywhere


def secret_config(
    admin: int, sip: int, primary: int, backup: int, hep: int, *, token: str, password: str
) -> str:
    return f"""
[proxy]
listen = ["udp:{HOST}:{sip}"]
record-route = "sip:{HOST}:{sip};lr"
[monitor]
oos-check = 1
oos-force = 1
[admin]
listen = "{HOST}:{admin}"
token = "{token}"
[trace]
hep = "udp:{HOST}:{hep}"
hep-password = "{password}"
[[pair]]
name = "site"
primary = "udp:{HOST}:{primary}"
backup = "udp:{HOST}:{backup}"
serving = true
"""


async def test_no_secret_in_any_response_or_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "sipha.toml"
    admin, sip, hep = free_port(), free_port(), free_port()
    ports = (admin, sip, free_port(), free_port(), hep)
    path.write_text(secret_config(*ports, token=TOKEN, password=HEP_PASSWORD), encoding="utf-8")
    seen: list[str] = []
    caplog.set_level(logging.DEBUG)
    app = ProxyApp(load_config(path), config_path=path)
    await app.start()
    base = f"http://{HOST}:{admin}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:

            async def ask(
                method: str, where: str, token: str = TOKEN, data: object = None, **kind: str
            ) -> int:
                headers = {"Content-Type": kind.get("content_type", "application/json")}
                if token:
                    headers["Authorization"] = f"Bearer {token}"
                async with http.request(method, base + where, headers=headers, data=data) as response:
                    seen.append(f"{response.status} {response.headers}\n{await response.text()}")
                    return response.status

            assert await ask("GET", "/status") == 200
            assert await ask("GET", "/metrics") == 200
            assert await ask("GET", "/events") == 200
            assert await ask("GET", "/healthz") in {200, 503}
            assert await ask("GET", "/") == 200
            assert await ask("GET", "/status", token="") == 401
            assert await ask("GET", "/status", token="not-it") == 401  # noqa: S106 - a wrong one
            assert await ask("GET", "/nowhere") == 404
            assert await ask("GET", "/reload") == 405
            assert await ask("POST", "/reload", data=b"x", content_type="text/plain") == 415
            assert await ask("POST", "/member", data=b"not json") == 400
            assert (
                await ask("POST", "/member", data=b'{"pair": "nope", "member": "primary", "mode": "auto"}')
                == 404
            )
            # A reload refused: the secrets' new values are wrong (not strings; the limit of 64).
            path.write_text(
                secret_config(*ports, token=TOKEN, password="x" * 65).replace(
                    f'token = "{TOKEN}"', "token = 12345"
                ),
                encoding="utf-8",
            )
            assert await ask("POST", "/reload", data=b"{}") == 422
            # A reload applied: both secrets change; the new token is needed from now on.
            new = secret_config(*ports, token=NEW_TOKEN, password="hep-new-pw")  # noqa: S106 - a test value
            path.write_text(new, encoding="utf-8")
            assert await ask("POST", "/reload", data=b"{}") == 200
            assert await ask("GET", "/status") == 200  # the old one still works: [admin] applies at restart
    finally:
        await app.stop()
    everything = "\n".join(seen)
    logged = "\n".join(f"{record.getMessage()} {record.exc_text or ''}" for record in caplog.records)
    assert "admin.token (changed)" in everything
    assert "trace.hep-password (changed)" in everything
    for secret in (TOKEN, NEW_TOKEN, HEP_PASSWORD, "hep-new-pw", "12345", "x" * 65):
        assert secret not in everything, secret
        assert secret not in logged, secret
    assert "admin.token" in logged  # the refused reload was logged, naming the key only
