"""The admin API's changing requests and the event stream: POST /reload, POST /drain, GET /events.

A real ProxyApp with two in-process simulated servers (tests/admin/support.py); every wait is
bounded (oos-check 1, oos-force 1: a switchover settles within a few seconds).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from sipha.admin import server as admin_server
from sipha.admin.control import DrainResult
from sipha.admin.server import FOLLOW_BACKLOG, _Follower, build_app, local_host
from sipha.admin.telemetry import ReloadResult, Telemetry, without_secret
from sipha.ha import PairUnknown
from tests.admin.support import Running, eventually, running_proxy

JSON = {"Content-Type": "application/json"}
LINE_WAIT = 8.0


async def healthy(running: Running) -> bool:
    return (await running.get("/healthz"))[0] == 200


async def post(running: Running, path: str, **kwargs: Any) -> tuple[int, Any]:
    kwargs.setdefault("headers", JSON)
    async with running.http.post(running.base + path, data=b"{}", **kwargs) as response:
        body = await response.text()
        if response.content_type == "application/json":
            return response.status, json.loads(body)
        return response.status, body


async def read_line(stream: aiohttp.StreamReader) -> dict[str, Any]:
    """The next JSON line of an NDJSON stream, heartbeats (blank lines) skipped."""
    while True:
        line = await asyncio.wait_for(stream.readline(), LINE_WAIT)
        assert line, "the stream ended"
        if line.strip():
            entry: dict[str, Any] = json.loads(line)
            return entry


# ---------------------------------------------------------------------------- POST /reload


async def test_reload_applied_then_refused_with_the_problems(tmp_path: Path) -> None:
    path = tmp_path / "sipha.toml"
    async with running_proxy(config_file=path) as running:
        path.write_text(path.read_text().replace("oos-check = 1", "oos-check = 2"))
        status, document = await post(running, "/reload")
        assert status == 200, document
        assert document == {
            "applied": True,
            "configuration": str(path),
            "changes": ["monitor.oos-check 1 -> 2"],
            "problems": [],
        }
        assert running.app.config.monitor.oos_check == 2

        path.write_text(path.read_text().replace("oos-check = 2", "oos-check = -1"))
        status, document = await post(running, "/reload")
        assert status == 422
        assert document["applied"] is False
        assert document["configuration"] == str(path)
        assert document["problems"] == ["monitor.oos-check = -1: Input should be greater than or equal to 0"]
        assert running.app.config.monitor.oos_check == 2  # the running one kept


async def test_reload_with_no_known_file_is_refused() -> None:
    async with running_proxy() as running:
        status, document = await post(running, "/reload")
        assert status == 422
        assert document["problems"] == ["configuration file not known"]


async def test_a_reload_problem_never_shows_the_token(tmp_path: Path) -> None:
    path = tmp_path / "sipha.toml"
    async with running_proxy(config_file=path) as running:
        # Not a string: the configuration's problem line quotes the value.
        path.write_text(path.read_text().replace('token = ""', "token = 987654321"))
        status, body = await post(running, "/reload")
        assert status == 422
        assert "987654321" not in json.dumps(body)
        assert body["problems"] == ["admin.token: not valid (value not shown here; see the log of sipha)"]


def test_reload_result_document_and_secrets() -> None:
    result = ReloadResult(applied=False, source="f.toml", problems=("admin.token = 'abc': bad", "x = 1: bad"))
    assert result.document()["problems"] == [
        "admin.token: not valid (value not shown here; see the log of sipha)",
        "x = 1: bad",
    ]
    assert without_secret("admin.tokens = 1: unknown option") == "admin.tokens = 1: unknown option"
    telemetry = Telemetry()
    assert telemetry.reloaded("f.toml", ["a -> b"], applied=True) is True
    assert telemetry.last_reload == ReloadResult(applied=True, source="f.toml", changes=("a -> b",))
    assert telemetry.reloads == 1
    assert telemetry.worker_parent is None


# ---------------------------------------------------------------------------- POST /drain


async def test_drain_starts_once_and_the_app_stops() -> None:
    async with running_proxy() as running:
        await eventually(lambda: healthy(running), "/healthz 200 at start")
        assert (await running.status())["draining"] is False
        status, document = await post(running, "/drain")
        assert status == 202
        assert document == {"draining": True, "started": True, "transactions_under_way": 0, "calls_up": 0}
        assert running.app.core is not None
        assert running.app.core.draining  # at once: the next new request gets 503
        # Nothing under way: the app stops by itself (the admin HTTP with it).
        await asyncio.wait_for(running.app._stopped.wait(), 5)  # the app's end
        assert running.app.admin is None


async def test_drain_asked_again_does_not_stop_at_once(tmp_path: Path) -> None:
    del tmp_path
    async with running_proxy() as running:
        await eventually(lambda: healthy(running), "/healthz 200 at start")
        core = running.app.core
        assert core is not None
        core.start_draining()  # as if a drain were under way (a call up keeps it going)
        status, document = await post(running, "/drain")
        assert status == 200
        assert document["started"] is False
        assert (await running.status())["draining"] is True
        assert running.app.admin is not None  # still serving


def test_drain_result_document() -> None:
    result = DrainResult(started=True, transactions_under_way=3, calls_up=2)
    assert result.document() == {
        "draining": True,
        "started": True,
        "transactions_under_way": 3,
        "calls_up": 2,
    }


# ---------------------------------------------------------------------------- CSRF, token


@pytest.mark.parametrize(
    "headers",
    [{}, {"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}],
    ids=["none", "text", "form"],
)
async def test_a_post_that_is_not_json_is_refused(headers: dict[str, str]) -> None:
    async with running_proxy() as running:
        for path in ("/reload", "/drain", "/demo/switch"):
            status, body = await post(running, path, headers=headers)
            assert status == 415, (path, body)
        assert running.app.core is not None
        assert not running.app.core.draining


async def test_no_cors_and_no_get_for_changes() -> None:
    async with running_proxy() as running:
        async with running.http.options(
            running.base + "/drain",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        ) as response:
            assert response.status == 405
            assert "Access-Control-Allow-Origin" not in response.headers
        assert (await running.get("/drain"))[0] == 405
        assert (await running.get("/reload"))[0] == 405


async def test_without_token_a_post_must_name_a_local_host() -> None:
    async with running_proxy() as running:
        status, body = await post(running, "/drain", headers={**JSON, "Host": "rebound.example:8080"})
        assert status == 403
        assert "[admin] token" in body
        assert running.app.core is not None
        assert not running.app.core.draining


async def test_with_a_token_any_host_name_is_fine() -> None:
    async with running_proxy(token="s3cret") as running:  # noqa: S106 - a test value
        auth = {**JSON, "Host": "sipha1.example:8080", "Authorization": "Bearer s3cret"}
        status, _ = await post(running, "/reload", headers=auth)
        assert status == 422  # got through: no file to reload


def test_local_host_names() -> None:
    assert local_host("127.0.0.1:8080")
    assert local_host("[::1]:8080")
    assert local_host("::1")
    assert local_host("localhost:8080")
    assert local_host("LOCALHOST.")
    assert local_host("10.0.0.5")
    assert local_host("admin.internal:8080", "admin.internal")
    assert not local_host("rebound.example:8080")
    assert not local_host("admin.internal:8080")
    assert not local_host("")


async def test_the_new_endpoints_want_the_token() -> None:
    async with running_proxy(token="s3cret") as running:  # noqa: S106 - a test value
        for method, path in (
            ("GET", "/events"),
            ("GET", "/events?follow=1"),
            ("POST", "/reload"),
            ("POST", "/member"),
        ):
            for given in ({}, {"Authorization": "Bearer wrong"}):
                async with running.http.request(
                    method, running.base + path, headers={**JSON, **given}, data=b"{}"
                ) as response:
                    body = await response.text()
                    assert response.status == 401, (method, path)
                    assert "s3cret" not in body
                    assert "s3cret" not in str(response.headers)
        status, _ = await post(running, "/drain", headers={**JSON, "Authorization": "Bearer wrong"})
        assert status == 401
        assert running.app.core is not None
        assert not running.app.core.draining


# ---------------------------------------------------------------------------- POST /member


async def member(running: Running, body: object) -> tuple[int, Any]:
    async with running.http.post(running.base + "/member", json=body) as response:
        text = await response.text()
        return response.status, json.loads(text) if response.content_type == "application/json" else text


async def test_member_maintenance_and_back_with_precise_refusals() -> None:
    """docs/design.md §2, maintenance: the pair's status back; 400 for a bad body, 404 for no such."""
    async with running_proxy() as running:
        await eventually(lambda: healthy(running), "/healthz 200 at start")
        status, document = await member(running, {"pair": "site", "member": "backup", "mode": "maintenance"})
        assert status == 200, document
        assert document["maintenance"] == ["backup"]
        assert [m["maintenance"] for m in document["members"]] == [False, True]
        status, document = await member(running, {"pair": "site", "member": "backup", "mode": "auto"})
        assert (status, document["maintenance"]) == (200, [])
        for body in ({}, {"pair": "site", "member": "backup"}, {"mode": "off"}, [1], "maintenance"):
            status, text = await member(running, body)
            assert status == 400, body
            assert '"mode": "maintenance" or "auto"' in text
        status, text = await member(running, {"pair": "nope", "member": "primary", "mode": "auto"})
        assert (status, text) == (404, "404: no pair 'nope'\n")
        status, text = await member(running, {"pair": "site", "member": "tertiary", "mode": "auto"})
        assert status == 404
        assert "no member 'tertiary'" in text


# ---------------------------------------------------------------------------- GET /events


async def test_events_lists_the_recent_ones_as_json_lines() -> None:
    async with running_proxy() as running:
        await eventually(lambda: healthy(running), "/healthz 200 at start")
        async with running.http.get(running.base + "/events") as response:
            assert response.status == 200
            assert response.content_type == "application/x-ndjson"
            lines = (await response.text()).splitlines()
        assert [json.loads(line) for line in lines] == (await running.status())["events"]
        assert [json.loads(line)["kind"] for line in lines] == ["unknown", "active"]


async def test_events_follow_sees_a_switchover() -> None:
    async with running_proxy() as running:
        await eventually(lambda: healthy(running), "/healthz 200 at start")
        timeout = aiohttp.ClientTimeout(total=None, sock_read=LINE_WAIT)
        async with running.http.get(running.base + "/events?follow=1", timeout=timeout) as response:
            assert response.status == 200
            assert response.content_type == "application/x-ndjson"
            assert [(await read_line(response.content))["kind"] for _ in range(2)] == ["unknown", "active"]
            running.primary.set_mode("backup")
            running.backup.set_mode("primary")
            lost = await read_line(response.content)
            assert (lost["kind"], lost["pair"]) == ("unknown", "site")
            taken = await read_line(response.content)
            assert (taken["kind"], taken["role"]) == ("active", "backup")
            assert taken["member"] == f"backup {running.backup.name}"


async def test_a_follower_gets_heartbeats_then_the_end_at_the_limit() -> None:
    async with running_proxy() as running:
        app = build_app(running.app, follow_limit=0.6, heartbeat=0.2)
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/events?follow=yes")
            assert response.status == 200
            body = await asyncio.wait_for(response.read(), 5)  # the server ends it
        lines = body.decode().split("\n")
        assert "" in lines[:-1]  # at least one heartbeat
        entries = [json.loads(line) for line in lines if line.strip()]
        assert entries[-1] == {"end": "follow limit of 0.6 s reached: ask again to go on"}


async def test_followers_are_ended_when_sipha_stops() -> None:
    async with running_proxy() as running:
        await eventually(lambda: healthy(running), "/healthz 200 at start")
        async with running.http.get(running.base + "/events?follow=1") as response:
            for _ in range(2):
                await read_line(response.content)
            await running.app.stop()
            assert await read_line(response.content) == {"end": "sipha is stopping"}
            assert await asyncio.wait_for(response.content.read(), 5) == b""


async def test_followers_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin_server, "MAX_FOLLOWERS", 2)
    async with running_proxy() as running:
        streams = [await running.http.get(running.base + "/events?follow=1") for _ in range(2)]
        try:
            assert [stream.status for stream in streams] == [200, 200]
            status, body = await running.get("/events?follow=1")
            assert status == 503
            assert "2 followers already" in body
        finally:
            for stream in streams:
                stream.close()


async def test_a_follower_that_falls_behind_is_ended() -> None:
    follower = _Follower()
    for index in range(FOLLOW_BACKLOG + 5):
        follower.put({"kind": "active", "index": index})
    assert follower.ending.startswith(f"this follower fell behind ({FOLLOW_BACKLOG} events waiting)")
    assert follower.queue.qsize() == FOLLOW_BACKLOG
    follower.end("another reason")
    assert follower.ending.startswith("this follower fell behind")  # the first reason stays


def test_telemetry_listeners() -> None:
    telemetry = Telemetry()
    seen: list[dict[str, Any]] = []
    unsubscribe = telemetry.subscribe(seen.append)
    telemetry.record_event(PairUnknown("p", 0.0, "start", None))
    unsubscribe()
    unsubscribe()  # twice: harmless
    telemetry.record_event(PairUnknown("p", 0.0, "start", None))
    assert [entry["kind"] for entry in seen] == ["unknown"]
    assert len(telemetry.events) == 2
