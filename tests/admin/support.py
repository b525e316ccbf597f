"""A real ProxyApp with its admin HTTP and two in-process simulated servers, on free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from sipha.app import ProxyApp
from sipha.config import Config, load_config, load_config_text
from sipha.sim.server import SimulatedServer
from tests.integration.support import free_port

HOST = "127.0.0.1"
WAIT = 8.0
"""Bound of every wait for a state change (oos-check 1 + oos-force 1, with slack)."""


def config_for(sip: int, admin: int, primary: int, backup: int, *, token: str = "") -> Config:
    return load_config_text(config_text(sip, admin, primary, backup, token=token))


def config_text(
    sip: int, admin: int, primary: int, backup: int, *, token: str = "", oos_check: int = 1
) -> str:
    return f"""
[proxy]
listen = ["udp:{HOST}:{sip}"]
record-route = "sip:{HOST}:{sip};lr"
[monitor]
oos-check = {oos_check}
oos-force = 1
[admin]
listen = "{HOST}:{admin}"
token = "{token}"
[[pair]]
name = "site"
primary = "udp:{HOST}:{primary}"
backup = "udp:{HOST}:{backup}"
serving = true
"""


@dataclass
class Running:
    app: ProxyApp
    primary: SimulatedServer
    backup: SimulatedServer
    base: str
    http: aiohttp.ClientSession
    sip_port: int

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str]:
        async with self.http.get(self.base + path, **kwargs) as response:
            return response.status, await response.text()

    async def status(self) -> dict[str, Any]:
        async with self.http.get(self.base + "/status") as response:
            assert response.status == 200
            document: dict[str, Any] = await response.json()
            return document


@asynccontextmanager
async def running_proxy(*, token: str = "", config_file: Path | None = None) -> AsyncIterator[Running]:
    """The app with its pair; ``config_file``: written there and read from it (reloads re-read it)."""
    primary = SimulatedServer([("udp", HOST, 0)], "primary")
    backup = SimulatedServer([("udp", HOST, 0)], "backup")
    await primary.start()
    await backup.start()
    admin = free_port()
    sip = free_port()
    text = config_text(sip, admin, primary.address().port, backup.address().port, token=token)
    if config_file is None:
        app = ProxyApp(load_config_text(text))
    else:
        config_file.write_text(text, encoding="utf-8")
        app = ProxyApp(load_config(config_file), config_path=config_file)
    try:
        await app.start()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            yield Running(app, primary, backup, f"http://{HOST}:{admin}", http, sip)
    finally:
        await app.stop()
        await primary.stop()
        await backup.stop()


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = WAIT) -> float:
    """Poll ``check`` every 50 ms until it is true; the time it took. Fails after ``timeout``."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


# ---------------------------------------------------------------------------- `sipha demo` process


@dataclass
class DemoProcess:
    process: subprocess.Popen[bytes]
    log: Path
    sip: int
    admin: int
    primary: int
    backup: int

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.admin}"

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def get(self, path: str, method: str = "GET") -> tuple[int, bytes]:
        # A POST says it is JSON: the admin HTTP refuses other POSTs (415, cross-site forms).
        data, headers = (b"{}", {"Content-Type": "application/json"}) if method == "POST" else (None, {})
        request = urllib.request.Request(  # noqa: S310 - loopback http
            self.base + path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def status(self) -> dict[str, Any]:
        code, body = self.get("/status")
        assert code == 200
        document: dict[str, Any] = json.loads(body)
        return document


def wait_until(check: Callable[[], bool], what: str, timeout: float = WAIT) -> float:
    start = time.monotonic()
    while True:
        with contextlib.suppress(OSError):
            if check():
                return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def demo_process(directory: Path, *extra: str) -> Iterator[DemoProcess]:
    """``sipha demo`` on free ports, stopped (SIGTERM, then SIGKILL) at the end."""
    sip, admin, primary, backup = free_port(), free_port(), free_port(), free_port()
    log = directory / "demo.log"
    args = [
        sys.executable,
        "-m",
        "sipha",
        "demo",
        "--sip-port",
        str(sip),
        "--admin-port",
        str(admin),
        "--primary-port",
        str(primary),
        "--backup-port",
        str(backup),
        *extra,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    demo = DemoProcess(process, log, sip, admin, primary, backup)
    try:
        wait_until(lambda: demo.get("/healthz")[0] == 200 or process.poll() is not None, "the demo to start")
        assert process.poll() is None, demo.log_text()
        yield demo
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
