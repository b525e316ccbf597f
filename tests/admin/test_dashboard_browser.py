"""The dashboard in a real headless Chromium, driven over the DevTools protocol.

``sipha demo`` runs as a process; Chromium opens the dashboard once, then the test
presses the page's own "Switch over" button and watches the page (never reloaded)
follow: the backup's tile becomes the active one and the timeline gets the
switchover.  A screenshot is kept in tests/artifacts/ (gitignored).  Skipped when
Chromium is not installed (``make deb-deps`` installs the Debian ``chromium``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.admin.support import HOST, WAIT, demo_process

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian package chromium)")


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[int]:
    """Headless Chromium with the DevTools protocol on a free port; yields the port."""
    assert CHROMIUM is not None
    process = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--window-size=1200,800",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        active_port = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 15
        while not (active_port.exists() and active_port.read_text().strip()):
            assert process.poll() is None, "chromium exited at start"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.05)
        yield int(active_port.read_text().split()[0])
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Page:
    """One page target over the DevTools protocol (just what this test needs)."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket
        self.ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self.ids)
        await self.socket.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads((await self.socket.receive(timeout=10)).data)
            if message.get("id") == ident:
                assert "error" not in message, message
                result: dict[str, Any] = message["result"]
                return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def until(self, expression: str, what: str, timeout: float = WAIT) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting for the page to show {what}"
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def open_page(http: aiohttp.ClientSession, devtools: int) -> AsyncIterator[Page]:
    async with http.get(f"http://127.0.0.1:{devtools}/json/list") as response:
        targets = await response.json()
    (target,) = [t for t in targets if t["type"] == "page"]
    async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as socket:
        yield Page(socket)


ACTIVE = "document.querySelector('[data-pair=demo]')?.dataset.active"
TIMELINE = (
    "[...document.querySelectorAll('#timeline li.event')].map(li => li.dataset.kind + ' ' + li.textContent)"
)


async def test_dashboard_follows_a_switchover_live(tmp_path: Path) -> None:
    with (
        demo_process(tmp_path, "--calls-per-second", "2") as demo,
        chromium(tmp_path / "profile") as devtools,
    ):
        async with aiohttp.ClientSession() as http, open_page(http, devtools) as page:
            await page.call("Page.enable")
            await page.call(
                "Emulation.setDeviceMetricsOverride",
                width=1200,
                height=800,
                deviceScaleFactor=1,
                mobile=False,
            )
            await page.call("Page.navigate", url=f"{demo.base}/")
            assert await page.until(ACTIVE, "the primary active") == "primary"
            assert await page.evaluate("document.querySelector('#health').textContent") == "all pairs served"
            assert await page.evaluate("document.querySelector('#demo').hidden") is False
            tile = "document.querySelector('[data-pair=demo] .member.active').dataset.role"
            assert await page.evaluate(tile) == "primary"

            # The page's own button (POST /demo/switch); the page is not reloaded.
            await page.evaluate("document.querySelector('#switch').click()")
            assert await page.until(f"{ACTIVE} === 'backup' && {ACTIVE}", "the backup active") == "backup"
            assert await page.evaluate(tile) == "backup"
            timeline: list[str] = await page.until(
                f"{TIMELINE}.length >= 4 && {TIMELINE}", "the switchover in the timeline"
            )
            newest, before = timeline[0], timeline[1]
            assert newest.startswith("active ")
            assert f"backup udp:{HOST}:{demo.backup} is active" in newest
            assert before.startswith("unknown ")
            assert "switchovers 1" in await page.evaluate(
                "document.querySelector('[data-pair=demo]').textContent"
            )
            await asyncio.sleep(1.2)  # let the button come back and the traffic counters tick
            shot = await page.call("Page.captureScreenshot", format="png")
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "dashboard-switchover.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.stat().st_size > 10_000
