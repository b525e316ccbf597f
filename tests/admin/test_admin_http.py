"""The admin HTTP of a real ProxyApp: /healthz, /status, /metrics, token, the dashboard page.

Two in-process simulated servers form the pair; the monitor runs with oos-check 1 and
oos-force 1, so every switchover below settles within a few seconds (each wait is bounded).
"""

from __future__ import annotations

import socket
from datetime import datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from sipha import __version__
from sipha.admin.server import build_app
from sipha.app import ProxyApp
from sipha.sim.server import SimulatedServer
from sipha.sip.address import Address
from tests.admin.support import HOST, Running, config_for, eventually, running_proxy
from tests.integration.support import free_port


async def metric_samples(running: Running) -> dict[str, list[tuple[dict[str, str], float]]]:
    status, text = await running.get("/metrics")
    assert status == 200
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples


def active_gauge(samples: dict[str, list[tuple[dict[str, str], float]]]) -> dict[str, float]:
    return {labels["member"]: value for labels, value in samples["sipha_pair_active_member"]}


async def healthy(running: Running) -> bool:
    status, _ = await running.get("/healthz")
    return status == 200


async def test_healthz_status_and_metrics_follow_a_switchover() -> None:
    async with running_proxy() as running:
        await eventually(lambda: healthy(running), "/healthz 200 at start")
        status, body = await running.get("/healthz")
        assert (status, body) == (200, "ok\n")
        assert active_gauge(await metric_samples(running)) == {"primary": 1.0, "backup": 0.0}

        # Both members in backup mode: the pair loses its active member; /healthz says which.
        running.primary.set_mode("backup")

        async def unhealthy() -> bool:
            return not await healthy(running)

        await eventually(unhealthy, "/healthz 503 once the primary stops answering")
        async with running.http.get(running.base + "/healthz") as response:
            assert response.status == 503
            document = await response.json()
        assert document["pairs_without_active_member"] == ["site"]
        samples = await metric_samples(running)
        assert active_gauge(samples) == {"primary": 0.0, "backup": 0.0}
        assert {labels["pair"]: value for labels, value in samples["sipha_pair_up"]} == {"site": 0.0}

        # The backup takes over: healthy again, on the backup.
        running.backup.set_mode("primary")
        await eventually(lambda: healthy(running), "/healthz 200 once the backup answers")
        samples = await metric_samples(running)
        assert active_gauge(samples) == {"primary": 0.0, "backup": 1.0}
        assert samples["sipha_pair_switchovers_total"] == [({"pair": "site"}, 1.0)]
        document = await running.status()
        (pair,) = document["pairs"]
        assert pair["active"] == "backup"
        assert [m["active"] for m in pair["members"]] == [False, True]
        kinds = [(event["kind"], event.get("role")) for event in document["events"]]
        assert kinds[-2:] == [("unknown", "primary"), ("active", "backup")]


async def test_status_document() -> None:
    async with running_proxy() as running:
        await eventually(lambda: healthy(running), "/healthz 200 at start")
        # Traffic through the proxy: one request routed to the pair, one malformed datagram.
        caller = SimulatedServer([("udp", HOST, 0)], "primary")
        await caller.start()
        try:
            proxy = Address("UDP", HOST, running.sip_port)
            assert (
                await caller.send_request(proxy, "MESSAGE", f"sip:someone@{HOST}:{running.sip_port}") == 200
            )
        finally:
            await caller.stop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as garbage:
            garbage.sendto(b"NOT SIP AT ALL\r\n\r\n", (HOST, running.sip_port))

        async def counted() -> bool:
            return bool((await running.status())["counters"]["parse_errors"] == 1)

        await eventually(counted, "the malformed datagram to be counted")
        document = await running.status()
        assert document["version"] == __version__
        assert document["healthy"] is True
        assert document["pairs_without_active_member"] == []
        assert document["listen"] == [f"udp:{HOST}:{running.sip_port}"]
        assert document["uptime"] > 0
        assert isinstance(document["transactions_in_flight"], int)
        assert document["counters"]["requests_forwarded"] >= 1
        assert document["counters"]["overload_rejections"] == 0
        assert {"method": "MESSAGE", "class": "2xx", "count": 1} in document["transactions"]
        assert document["demo"] is None
        (pair,) = document["pairs"]
        assert pair["name"] == "site"
        assert pair["state"] == "active"
        assert pair["active"] == "primary"
        assert pair["active_address"] == str(running.primary.name)
        assert pair["split_brain"] is False
        assert pair["monitoring"] is True
        primary, backup = pair["members"]
        assert (primary["role"], primary["active"]) == ("primary", True)
        assert (backup["role"], backup["active"]) == ("backup", False)
        assert primary["address"] == running.primary.name
        assert primary["last_rtt_ms"] is not None
        assert primary["last_rtt_ms"] >= 0
        assert backup["last_rtt_ms"] is None
        assert pair["counters"]["options_sent"] >= 1
        assert pair["counters"]["switchovers"] == 0
        # wall-clock ISO 8601, close to now
        changed = datetime.fromisoformat(pair["last_change"])
        now = datetime.fromisoformat(document["time"])
        assert 0 <= (now - changed).total_seconds() < 10
        events: list[dict[str, Any]] = document["events"]
        assert [event["kind"] for event in events] == ["unknown", "active"]
        assert events[-1]["pair"] == "site"
        assert events[-1]["member"] == f"primary {running.primary.name}"
        assert events[-1]["message"].startswith("pair site: primary ")
        datetime.fromisoformat(events[-1]["time"])


async def test_metrics_exposition() -> None:
    async with running_proxy() as running:
        await eventually(lambda: healthy(running), "/healthz 200 at start")
        async with running.http.get(running.base + "/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=")
            text = await response.text()
        families = {family.name: family for family in text_string_to_metric_families(text)}
        expected = {
            "sipha_build_info": "gauge",
            "sipha_transactions": "counter",
            "sipha_transactions_in_flight": "gauge",
            "sipha_parse_errors": "counter",
            "sipha_overload_rejections": "counter",
            "sipha_transport_events": "counter",
            "sipha_transport_connections_open": "gauge",
            "sipha_pair_active_member": "gauge",
            "sipha_pair_switchovers": "counter",
            "sipha_pair_options_rtt_seconds": "histogram",
            "sipha_pair_options_last_rtt_seconds": "gauge",
            "sipha_pair_state": "gauge",
            "sipha_pair_split_brain": "gauge",
        }
        assert {name: families[name].type for name in expected} == expected
        histogram = {
            (sample.name, sample.labels.get("le")): sample.value
            for sample in families["sipha_pair_options_rtt_seconds"].samples
            if sample.labels["member"] == "primary"
        }
        assert histogram[("sipha_pair_options_rtt_seconds_count", None)] >= 1
        assert (
            histogram[("sipha_pair_options_rtt_seconds_bucket", "+Inf")]
            == histogram[("sipha_pair_options_rtt_seconds_count", None)]
        )
        (overload,) = families["sipha_overload_rejections"].samples
        assert overload.value == 0
        states = {s.labels["state"]: s.value for s in families["sipha_pair_state"].samples}
        assert states == {"active": 1.0, "takeover": 0.0, "unknown": 0.0, "out-of-service": 0.0}
        transport = {s.labels["counter"]: s.value for s in families["sipha_transport_events"].samples}
        # The OPTIONS probes that made the pair active went out and were answered over UDP.
        assert transport["datagrams_out"] >= 1
        assert transport["datagrams_in"] >= 1
        assert transport["icmp_errors"] == 0
        assert "handoff_out" not in transport  # one process: nothing handed over


async def test_bearer_token() -> None:
    async with running_proxy(token="s3cret") as running:  # noqa: S106 - a test value
        await eventually(lambda: healthy(running), "/healthz 200 at start (no token needed)")
        for path in ("/status", "/metrics", "/"):
            status, _ = await running.get(path)
            assert status == 401, path
            status, _ = await running.get(path, headers={"Authorization": "Bearer wrong"})
            assert status == 401, path
            status, _ = await running.get(path, headers={"Authorization": "Bearer s3cret"})
            assert status == 200, path
        async with running.http.post(running.base + "/demo/switch") as response:
            assert response.status == 401
        # A browser opens the dashboard with ?token=; the page then sends the header itself.
        assert (await running.get("/?token=s3cret"))[0] == 200
        assert (await running.get("/status?token=s3cret"))[0] == 401


async def test_dashboard_page_and_no_demo_switch_outside_the_demo() -> None:
    async with running_proxy() as running:
        async with running.http.get(running.base + "/") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            page = await response.text()
        assert "<title>sipha dashboard</title>" in page
        # self-contained: no CDN, nothing fetched from elsewhere
        assert "http://" not in page
        assert "https://" not in page
        async with running.http.post(running.base + "/demo/switch", json={}) as response:
            assert response.status == 404


async def test_admin_port_in_use_is_refused_and_nothing_stays_bound() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((HOST, 0))
        taken.listen()
        admin = int(taken.getsockname()[1])
        sip = free_port()
        app = ProxyApp(config_for(sip, admin, free_port(), free_port()))
        with pytest.raises(OSError, match=rf"admin HTTP {HOST}:{admin}: .*\[admin\] listen"):
            await app.start()
    assert app.admin is None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind((HOST, sip))  # the SIP socket was closed


async def test_admin_can_be_left_out() -> None:
    app = ProxyApp(config_for(free_port(), free_port(), free_port(), free_port()), admin=False)
    await app.start()
    try:
        assert app.admin is None
    finally:
        await app.stop()


@pytest.mark.parametrize("path", ["/healthz", "/status"])
async def test_before_start_nothing_is_healthy(path: str) -> None:

    app = ProxyApp(config_for(free_port(), free_port(), free_port(), free_port()))
    async with TestClient(TestServer(build_app(app))) as client:
        response = await client.get(path)
        if path == "/healthz":
            assert response.status == 503
            assert (await response.json())["reason"] == "starting"
        else:
            document = await response.json()
            assert document["pairs"] == []
            assert document["healthy"] is False
