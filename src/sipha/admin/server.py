"""The admin HTTP server (aiohttp, in the proxy's event loop).

========================  =============================================================
``GET /healthz``          200 ``ok`` when every pair has an active member, else 503 with
                          a JSON body naming the pairs without one.  Never needs a token.
``GET /status``           JSON: pairs, members, active member, state, RTTs, last change,
                          split brain, counters, events (the last 100), listen, version.
``GET /metrics``          Prometheus text exposition.
                          Both report the instance: with ``[proxy] workers``, worker 0 sums
                          the counters of every worker (:mod:`sipha.admin.instance`).
``GET /``                 the dashboard (one self-contained page; polls /status).
``GET /events``           the recent HA events, one JSON object per line (NDJSON);
                          ``?follow=1``: then the new ones as they happen (see below).
``POST /reload``          what SIGHUP does; 200 with the changes, 422 with the problems.
``POST /drain``           what SIGTERM does; 202 with the transactions and calls under way.
``POST /member``          ``{"pair", "member", "mode": "maintenance"|"auto"}``: a member in
                          maintenance (docs/design.md §2), every worker; the pair's status.
``POST /demo/switch``     ``sipha demo`` only: swap the simulated servers' modes.
========================  =============================================================

With ``[admin] token`` set, every endpoint but /healthz wants ``Authorization:
Bearer <token>``, else 401.  The dashboard page also takes ``?token=`` so that a
browser can open it; its script then sends the header itself.

Cross-site requests cannot change anything: a POST must say ``Content-Type:
application/json`` (else 415), which a form of another site cannot send, and a script of
another site could only after a CORS preflight, which this server never grants.  Without a
token, a POST must also name this server by an IP address, ``localhost`` or the listen host
in its Host header (else 403): a page whose name an attacker re-points at 127.0.0.1 (DNS
rebinding) is then refused too.

A follower of ``/events?follow=1`` gets a blank line every :data:`HEARTBEAT` s when nothing
happens (so that either side notices a dead connection), and a last line ``{"end": "<why>"}``
when the server ends the stream: after :data:`FOLLOW_LIMIT` s, when sipha stops, or when the
follower reads too slowly to keep up.  At most :data:`MAX_FOLLOWERS` at once (else 503).

Requests are not logged (the dashboard polls every second); POST /reload and /drain log
what they do, like the signals.  Neither a response nor a log line shows the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import os
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sipha.admin.control import Drainer, request_reload
from sipha.admin.instance import gather_instance
from sipha.admin.metrics import build_registry
from sipha.admin.status import AdminSource, DemoControl, build_status, health, pairs_status
from sipha.config import parse_address

log = logging.getLogger("sipha.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_OPEN_PATHS: Final = frozenset({"/healthz"})
MEMBER_MODES: Final = ("maintenance", "auto")
"""``POST /member`` modes: new transactions stop going to the member, or the algorithm decides."""
_NO_STORE: Final = {"Cache-Control": "no-store"}
NDJSON: Final = "application/x-ndjson"

FOLLOW_LIMIT: Final = 3600.0
"""s: the server ends an ``/events?follow=1`` stream after this long (the client asks again)."""
HEARTBEAT: Final = 15.0
"""s: a blank line to a follower when no event came for this long."""
MAX_FOLLOWERS: Final = 16
"""Streams of ``/events?follow=1`` at once; more get 503."""
FOLLOW_BACKLOG: Final = 1000
"""Events waiting for one follower; a follower that falls further behind is ended."""


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


def _line(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode() + b"\n"


def local_host(host_header: str, listen_host: str = "") -> bool:
    """Whether a Host header names this server by an IP address, ``localhost`` or ``listen_host``.

    What DNS rebinding cannot fake: the attacker's page is loaded under a name of the attacker's.
    """
    name = host_header.strip().lower()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    name = name.rstrip(".")
    if name in {"localhost", listen_host.lower().strip("[]")} and name:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class _Follower:
    """One ``/events?follow=1`` stream: the HA events waiting to be written to it."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(FOLLOW_BACKLOG)
        self.ending = ""

    def put(self, entry: dict[str, Any]) -> None:
        """A new event (a :class:`~sipha.admin.telemetry.Telemetry` listener: never blocks)."""
        if self.ending:
            return
        try:
            self.queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.end(f"this follower fell behind ({FOLLOW_BACKLOG} events waiting): ask again")

    def end(self, reason: str) -> None:
        """End the stream after the events already waiting, with ``reason`` as its last line."""
        if not self.ending:
            self.ending = reason
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(None)


def build_app(
    source: AdminSource,
    *,
    token: str = "",
    demo: DemoControl | None = None,
    listen_host: str = "",
    follow_limit: float = FOLLOW_LIMIT,
    heartbeat: float = HEARTBEAT,
) -> web.Application:
    """The aiohttp application over ``source`` (the running :class:`sipha.app.ProxyApp`).

    ``listen_host``: a name that the Host header of a POST may carry besides IP addresses and
    ``localhost`` when there is no token.  ``follow_limit`` and ``heartbeat``: see the module.
    """
    page = dashboard_html()
    expected = f"Bearer {token}".encode()
    drainer = Drainer(source)
    followers: set[_Follower] = set()

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

    @web.middleware
    async def guard_changes(request: web.Request, handler: Handler) -> web.StreamResponse:
        """A changing request (POST) must be JSON, and without a token name a local host: see the module."""
        if request.method == "POST":
            if request.content_type != "application/json":
                return web.Response(
                    status=415,
                    text="415: a POST to the sipha admin surface must be Content-Type: application/json\n",
                )
            if not token and not local_host(request.host, listen_host):
                return web.Response(
                    status=403,
                    text="403: without [admin] token, a POST must name this server by its IP address or"
                    " localhost in the URL\n",
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
        return _json(build_status(source, demo, await gather_instance(source)))

    async def metrics(request: web.Request) -> web.Response:
        del request
        registry = build_registry(source, await gather_instance(source))  # the workers' sums
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

    async def reload(request: web.Request) -> web.Response:
        del request
        result = await request_reload(source)
        return _json(result.document(), 200 if result.applied else 422)

    async def drain(request: web.Request) -> web.Response:
        del request
        result = drainer.request()
        return _json(result.document(), 202 if result.started else 200)

    async def member(request: web.Request) -> web.Response:
        """``{"pair": P, "member": "primary"|"backup", "mode": "maintenance"|"auto"}`` (docs/design.md §2)."""
        try:
            body = await request.json()
        except ValueError:
            body = None
        mode = body.get("mode") if isinstance(body, dict) else None
        if not isinstance(body, dict) or mode not in MEMBER_MODES:
            return web.Response(
                status=400,
                text='400: the body must be {"pair": NAME, "member": "primary" or "backup", '
                '"mode": "maintenance" or "auto"}\n',
            )
        pair, role = str(body.get("pair", "")), str(body.get("member", ""))
        try:
            source.set_maintenance(pair, role, mode == "maintenance")
        except ValueError as error:
            return web.Response(status=404, text=f"404: {error}\n")
        found = [entry for entry in pairs_status(source) if entry["name"] == pair]
        return _json(found[0] if found else {"name": pair})

    async def events(request: web.Request) -> web.StreamResponse:
        if request.query.get("follow", "0").lower() not in {"", "1", "true", "yes"}:
            body = b"".join(_line(entry) for entry in source.telemetry.events)
            return web.Response(body=body, content_type=NDJSON, headers=_NO_STORE)
        if len(followers) >= MAX_FOLLOWERS:
            return web.Response(status=503, text=f"503: {MAX_FOLLOWERS} followers already\n")
        follower = _Follower()
        # Subscribed and the history copied in one step of the loop: no event is missed or doubled.
        unsubscribe = source.telemetry.subscribe(follower.put)
        history = list(source.telemetry.events)
        followers.add(follower)
        response = web.StreamResponse(headers={**_NO_STORE, "X-Accel-Buffering": "no"})
        response.content_type = NDJSON
        try:
            await response.prepare(request)
            await response.write(b"".join(_line(entry) for entry in history))
            await _follow(response, follower, follow_limit, heartbeat)
            await response.write(_line({"end": follower.ending}))
            await response.write_eof()
        except ConnectionError:
            pass  # the follower went away
        finally:
            unsubscribe()
            followers.discard(follower)
        return response

    async def end_followers(app: web.Application) -> None:
        del app
        for follower in followers:
            follower.end("sipha is stopping")

    app = web.Application(middlewares=[authorize, guard_changes])
    app.on_shutdown.append(end_followers)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/events", events)
    app.router.add_get("/", dashboard)
    app.router.add_post("/reload", reload)
    app.router.add_post("/drain", drain)
    app.router.add_post("/member", member)
    app.router.add_post("/demo/switch", demo_switch)
    return app


async def _follow(response: web.StreamResponse, follower: _Follower, limit: float, heartbeat: float) -> None:
    """Write the follower's events as they come, until it is ended or ``limit`` s have passed.

    A blank line when no event came for ``heartbeat`` s; :attr:`_Follower.ending` then says why it ended.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        if follower.ending and follower.queue.empty():
            return
        remaining = deadline - loop.time()
        if remaining <= 0:
            follower.end(f"follow limit of {limit:g} s reached: ask again to go on")
            return
        try:
            entry = await asyncio.wait_for(follower.queue.get(), min(heartbeat, remaining))
        except TimeoutError:
            await response.write(b"\n")
            continue
        if entry is None:
            return
        await response.write(_line(entry))


class AdminServer:
    """The admin HTTP server bound to ``listen`` (``host:port``), started and stopped by the app."""

    def __init__(
        self, source: AdminSource, listen: str, *, token: str = "", demo: DemoControl | None = None
    ) -> None:
        parsed = parse_address(listen, need_transport=False)
        self.host = parsed.host
        self.port = parsed.port
        self.listen = listen
        self.app = build_app(source, token=token, demo=demo, listen_host=self.host)
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
        log.info("admin HTTP on %s (dashboard; /status, /metrics, /healthz, /events)", self.url)

    async def stop(self) -> None:
        """Close the listening socket and open connections."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
