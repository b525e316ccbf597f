"""The admin HTTP server (aiohttp, in the proxy's event loop).

========================  =============================================================
``GET /healthz``          200 ``ok`` when every pair has an active member, else 503 with
                          a JSON body naming the pairs without one.  Never needs a token.
``GET /status``           JSON: pairs, members, active member, state, RTTs, last change,
                          split brain, counters, events (the last 100), listen, version.
``GET /metrics``          Prometheus text exposition.
``GET /``                 the dashboard (one self-contained page; polls /status).
``POST /demo/switch``     ``sipha demo`` only: swap the simulated servers' modes.
========================  =============================================================

With ``[admin] token`` set, every endpoint but /healthz wants ``Authorization:
Bearer <token>``, else 401.  The dashboard page also takes ``?token=`` so that a
browser can open it; its script then sends the header itself.

Requests are not logged (the dashboard polls every second).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sipha.admin.metrics import build_registry
from sipha.admin.status import AdminSource, DemoControl, build_status, health
from sipha.config import parse_address

log = logging.getLogger("sipha.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_OPEN_PATHS: Final = frozenset({"/healthz"})
_NO_STORE: Final = {"Cache-Control": "no-store"}


def dashboard_html() -> str:
    """The dashboard page (package data next to this module)."""
    return resources.files("sipha.admin").joinpath("dashboard.html").read_text(encoding="utf-8")


def _json(document: object, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(document, indent=1) + "\n",
        status=status,
        content_type="application/json",
        headers=_NO_STORE,
    )


def build_app(source: AdminSource, *, token: str = "", demo: DemoControl | None = None) -> web.Application:
    """The aiohttp application over ``source`` (the running :class:`sipha.app.ProxyApp`)."""
    registry = build_registry(source)
    page = dashboard_html()
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def authorize(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token and request.path not in _OPEN_PATHS:
            given = request.headers.get("Authorization", "").encode()
            if request.path == "/" and "token" in request.query:
                given = f"Bearer {request.query['token']}".encode()
            if not hmac.compare_digest(given, expected):
                return web.Response(
                    status=401,
                    text="401: this sipha admin surface needs Authorization: Bearer <token>\n",
                    headers={"WWW-Authenticate": 'Bearer realm="sipha"'},
                )
        return await handler(request)

    async def healthz(request: web.Request) -> web.Response:
        del request
        healthy, down = health(source)
        if healthy:
            return web.Response(text="ok\n", headers=_NO_STORE)
        reason = "no active member" if source.core is not None else "starting"
        return _json({"status": "unavailable", "reason": reason, "pairs_without_active_member": down}, 503)

    async def status(request: web.Request) -> web.Response:
        del request
        return _json(build_status(source, demo))

    async def metrics(request: web.Request) -> web.Response:
        del request
        response = web.Response(body=generate_latest(registry), headers=_NO_STORE)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def dashboard(request: web.Request) -> web.Response:
        del request
        return web.Response(
            text=page,
            content_type="text/html",
            headers={**_NO_STORE, "Content-Security-Policy": "default-src 'self' 'unsafe-inline'"},
        )

    async def demo_switch(request: web.Request) -> web.Response:
        del request
        if demo is None:
            raise web.HTTPNotFound(text="404: /demo/switch exists only under `sipha demo`\n")
        return _json(demo.switch())

    app = web.Application(middlewares=[authorize])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/", dashboard)
    app.router.add_post("/demo/switch", demo_switch)
    return app


class AdminServer:
    """The admin HTTP server bound to ``listen`` (``host:port``), started and stopped by the app."""

    def __init__(
        self, source: AdminSource, listen: str, *, token: str = "", demo: DemoControl | None = None
    ) -> None:
        parsed = parse_address(listen, need_transport=False)
        self.host = parsed.host
        self.port = parsed.port
        self.listen = listen
        self.app = build_app(source, token=token, demo=demo)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:8080/`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def start(self) -> None:
        """Bind and serve; OSError names the address and the option when it cannot bind."""
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as error:
            await runner.cleanup()
            reason = os.strerror(error.errno) if error.errno else str(error)
            refused = OSError(f"admin HTTP {self.listen}: {reason} (set [admin] listen to another address)")
            refused.errno = error.errno
            raise refused from error
        self._runner = runner
        log.info("admin HTTP on %s (dashboard; /status, /metrics, /healthz)", self.url)

    async def stop(self) -> None:
        """Close the listening socket and open connections."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
