"""docs/monitoring: the Prometheus alerting rules and the Grafana dashboard, checked by real tools.

* ``promtool check rules`` on docs/monitoring/sipha-alerts.yml, and ``promtool test rules`` on
  its unit tests (sipha-alerts.test.yml: the alerts fire on the series that should fire them,
  with their labels and rendered annotations, and stay quiet on healthy ones);
* the dashboard is an importable Grafana dashboard (one ``${DS_PROMETHEUS}`` input, unique
  ids, panels within the grid and not overlapping) whose PromQL promtool parses;
* against a **running sipha** (``python -m sipha run``: UDP and TLS listens, a bearer token,
  a pair whose primary is a simulated SIP server), every metric name used by an alert or a
  dashboard query is in its /metrics exposition (read with prometheus_client's parser);
* a real Prometheus (Debian package ``prometheus``) scrapes that sipha with the token and
  loads the rules: every dashboard query returns data, the only alert pending on the healthy
  instance is the certificate one (its certificate expires in 10 days), and the pair alert
  goes pending once the pair's members are gone.

promtool and prometheus come from the Debian package ``prometheus`` (``make deb-deps``); the
tests that need them are skipped, saying so, when they are missing.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.support import HOST, START_TIMEOUT, free_port, stop_process

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "docs" / "monitoring"
ALERTS = MONITORING / "sipha-alerts.yml"
ALERT_TESTS = MONITORING / "sipha-alerts.test.yml"
DASHBOARD = MONITORING / "sipha-dashboard.json"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
NO_PROMTOOL = "promtool is not installed (Debian package prometheus: make deb-deps)"
NO_PROMETHEUS = "prometheus is not installed (Debian package prometheus: make deb-deps)"
TOKEN = "monitoring-test-token"  # noqa: S105 - a test value for [admin] token
TOOL_TIMEOUT = 20.0

# Grafana's variables, as the live checks substitute them (the Prometheus here scrapes every second).
GRAFANA_VARIABLES = {
    "$__rate_interval": "15s",
    "$__interval": "5s",
    "$__range": "5m",
    "$instance": ".*",
    "$pair": ".*",
}


# ---------------------------------------------------------------------------- the files


@dataclass(frozen=True)
class Rule:
    """One alerting rule of sipha-alerts.yml: what the tests look at."""

    alert: str
    expr: str
    duration: str
    labels: dict[str, str]
    annotations: dict[str, str]


_KEY = re.compile(r"^(?P<indent> *)(?P<dash>- )?(?P<key>[A-Za-z_]+):(?: (?P<value>.*))?$")


def _scalar(text: str) -> str:
    """A YAML plain or quoted one-line scalar (the forms sipha-alerts.yml uses)."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return str(json.loads(text))
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    return text


def read_rules(path: Path = ALERTS) -> list[Rule]:
    """The alerting rules of ``path``.

    PyYAML is not a dependency, so this reads the subset of YAML the rules file is written in
    (``key: value``, quoted scalars, ``>-`` folded blocks) and fails on anything else;
    ``test_promtool_check_rules`` (the rule count) and the live Prometheus test (names, labels,
    annotations) check that it finds what Prometheus finds.
    """
    lines = path.read_text(encoding="utf-8").splitlines()
    rules: list[dict[str, Any]] = []
    section = ""
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _KEY.match(line)
        if match is None:
            raise AssertionError(f"{path.name}: line {index} is not in the expected form: {line!r}")
        indent = len(match["indent"]) + (2 if match["dash"] else 0)
        key, value = match["key"], _scalar(match["value"] or "")
        if value in (">-", ">", "|", "|-"):
            block: list[str] = []
            while index < len(lines) and (
                not lines[index].strip() or len(lines[index]) - len(lines[index].lstrip()) > indent
            ):
                block.append(lines[index].strip())
                index += 1
            value = ("\n" if value.startswith("|") else " ").join(part for part in block if part)
        if key == "alert":
            rules.append({"alert": value, "labels": {}, "annotations": {}})
            section = ""
        elif key in ("labels", "annotations") and rules and not value:
            section = key
        elif key in ("expr", "for") and rules:
            rules[-1][key] = value
            section = ""
        elif section and rules and indent > 8:
            rules[-1][section][key] = value
        elif key in ("groups", "name", "rules"):
            section = ""
        else:
            raise AssertionError(f"{path.name}: unexpected key {key!r} at line {index}")
    return [
        Rule(rule["alert"], rule["expr"].strip(), rule.get("for", "0s"), rule["labels"], rule["annotations"])
        for rule in rules
    ]


def load_dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return document


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included (collapsed rows keep theirs inside)."""
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.*),\s*(?P<label>\w+)\s*\)\s*$", re.DOTALL)


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target, annotation and variable of the dashboard.

    A variable's ``label_values(SELECTOR, LABEL)`` (Grafana's, not PromQL) gives SELECTOR.
    """
    queries = [
        (f"panel {panel['title']!r} target {target['refId']}", str(target["expr"]))
        for panel in dashboard_panels(dashboard)
        for target in panel.get("targets", [])
    ]
    queries += [
        (f"annotation {annotation['name']!r}", str(annotation["expr"]))
        for annotation in dashboard["annotations"]["list"]
        if "expr" in annotation
    ]
    for variable in dashboard["templating"]["list"]:
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(text)
        queries.append((f"variable ${variable['name']}", match["selector"] if match else text))
    return queries


def alert_queries() -> list[tuple[str, str]]:
    return [(f"alert {rule.alert}", rule.expr) for rule in read_rules()]


def substitute_grafana_variables(expr: str) -> str:
    for name, value in sorted(GRAFANA_VARIABLES.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(name, value)
    if "$" in expr:
        raise AssertionError(f"a Grafana variable this test does not know: {expr}")
    return expr


# ---------------------------------------------------------------------------- metric names in PromQL

_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|`[^`]*`')
_VARIABLE = re.compile(r"\$\{[^}]*\}|\[\[[^\]]*\]\]|\$\w+")
_COMMENT = re.compile(r"#[^\n]*")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_METRIC = re.compile(r"(?<![\w:$.])(sipha_[A-Za-z0-9_:]*)(?![\w:])(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """The sipha metric names an expression selects (PromQL, or Grafana's with its variables).

    String literals (label values such as ``job="sipha"``), Grafana variables, comments, label
    matchers ``{...}`` and the label lists of ``by``/``without``/``on``/``ignoring``/
    ``group_left``/``group_right`` are removed first; what is left that starts with ``sipha_``
    and is not a function call (followed by ``(``) is a metric name.
    """
    expr = _STRING.sub('""', expr)
    expr = _VARIABLE.sub(" ", expr)
    expr = _COMMENT.sub(" ", expr)
    expr = _MATCHERS.sub(" ", expr)
    expr = _GROUPING.sub(" ", expr)
    return set(_METRIC.findall(expr))


def test_metric_names_finds_metrics_not_labels_functions_or_strings() -> None:
    cases = {
        'sum by (sipha_label) (rate(sipha_a_total{job="sipha_nope", x=~"$sipha_var"}[$__rate_interval]))': {
            "sipha_a_total"
        },
        "histogram_quantile(0.99, sum by (le, pair) (rate(sipha_b_bucket[5m]))) > 0.5": {"sipha_b_bucket"},
        "sipha_c - time() < 14 * 86400": {"sipha_c"},
        'label_values(sipha_d{instance=~"$instance"}, pair)': {"sipha_d"},
        "sipha_e*2 or on(sipha_f) group_left(sipha_g) sipha_h": {"sipha_e", "sipha_h"},
        "sum(sipha_i) without (sipha_j) / ignoring(sipha_k) sipha_l\n# sipha_m in a comment": {
            "sipha_i",
            "sipha_l",
        },
        'up{job="sipha"} == 0': set(),
        "sipha_function(x) + my_sipha_n + ${sipha_var} + [[sipha_old]]": set(),
        "max_over_time(sipha_o:recorded[1h:1m])": {"sipha_o:recorded"},
    }
    for expr, names in cases.items():
        assert metric_names(expr) == names, expr


# ---------------------------------------------------------------------------- the rules


REQUIRED_ALERTS = {
    # alert: a metric (or `up`) its expression must use
    "SiphaDown": "up",
    "SiphaPairOutOfService": "sipha_pair_up",
    "SiphaPairStuckUnknownOrTakeover": "sipha_pair_state",
    "SiphaPairSplitBrain": "sipha_pair_split_brain",
    "SiphaPairSwitchover": "sipha_pair_switchovers_total",
    "SiphaOptionsRttHigh": "sipha_pair_options_rtt_seconds_bucket",
    "SiphaOverloadRejections": "sipha_overload_rejections_total",
    "SiphaOverloaded": "sipha_overload_sheds_total",
    "SiphaPairMemberUnreachableTls": "sipha_pair_member_transport_error",
    "SiphaTlsCertificateExpiringSoon": "sipha_tls_certificate_expiry_timestamp_seconds",
    "SiphaTlsHandshakeFailures": "sipha_tls_handshakes_total",
}


def test_rules_say_what_to_do() -> None:
    rules = read_rules()
    names = [rule.alert for rule in rules]
    assert len(names) == len(set(names)), f"an alert name is used twice: {names}"
    missing = set(REQUIRED_ALERTS) - set(names)
    assert not missing, f"alerts missing from {ALERTS.name}: {sorted(missing)}"
    for rule in rules:
        assert REQUIRED_ALERTS.get(rule.alert, "") in rule.expr, rule
        assert re.fullmatch(r"\d+[smh]", rule.duration), f"{rule.alert}: for: {rule.duration!r}"
        assert rule.labels.get("severity") in {"critical", "warning", "info"}, rule
        assert rule.annotations.get("summary"), f"{rule.alert}: no summary"
        description = rule.annotations.get("description", "")
        # what to check, with the README section (or design document) that explains it
        assert re.search(r'README\.md "[^"]+"|docs/design\.md', description), (
            f"{rule.alert}: the description names no README section: {description}"
        )
        assert rule.expr.count("(") == rule.expr.count(")"), rule


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_promtool_check_rules() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(ALERTS)],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # the reader of these tests finds the rules promtool finds
    found = re.search(r"SUCCESS: (\d+) rules found", result.stdout)
    assert found is not None, result.stdout
    assert int(found[1]) == len(read_rules()), result.stdout


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_promtool_unit_tests_of_the_rules() -> None:
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "test", "rules", ALERT_TESTS.name],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        cwd=MONITORING,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout
    # every alert is exercised, and both the firing and the quiet side of the required ones
    tests = ALERT_TESTS.read_text(encoding="utf-8")
    for rule in read_rules():
        assert f"alertname: {rule.alert}\n" in tests, f"{rule.alert} has no case in {ALERT_TESTS.name}"
    for alert in ("SiphaPairOutOfService", "SiphaTlsCertificateExpiringSoon"):
        quiet = re.search(rf"alertname: {alert}\n\s+exp_alerts: \[\]", tests)
        firing = re.search(rf"alertname: {alert}\n\s+exp_alerts:\n", tests)
        assert quiet, f"{alert}: no case in which it does not fire"
        assert firing, f"{alert}: no case in which it fires"


# ---------------------------------------------------------------------------- the dashboard

REQUIRED_PANELS = {
    "Pair has an active member",
    "Pair members",
    "Pair state",
    "Active member",
    "Switchovers",
    "OPTIONS round trip (p50 / p99)",
    "Transactions by response class",
    "Requests forwarded / refused",
    "Overload and drain rejections",
    "Datagrams and stream messages",
    "Transport errors and drops",
    "TLS handshakes by outcome",
    "TLS connections open",
    "Certificate expires in",
}


def test_dashboard_is_importable() -> None:
    dashboard = load_dashboard()
    assert dashboard["schemaVersion"] >= 36
    assert dashboard["uid"]
    assert dashboard["title"]
    (source,) = dashboard["__inputs"]
    assert (source["name"], source["type"], source["pluginId"]) == (
        "DS_PROMETHEUS",
        "datasource",
        "prometheus",
    )
    datasource = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    panels = dashboard_panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"panel ids used twice: {ids}"
    cells: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] < grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[x, y]!r}"
                cells[x, y] = panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == datasource, panel["title"]
        assert panel.get("description"), f"{panel['title']!r} has no description"
        targets = panel["targets"]
        assert targets, panel["title"]
        assert len({target["refId"] for target in targets}) == len(targets), panel["title"]
        for target in targets:
            assert target["datasource"] == datasource, panel["title"]
            assert target["expr"].strip(), panel["title"]
    missing = REQUIRED_PANELS - {panel["title"] for panel in panels}
    assert not missing, f"panels missing from the dashboard: {sorted(missing)}"
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"] == datasource, variable["name"]
    for where, expr in dashboard_queries(dashboard):
        assert metric_names(expr) or "up{" in expr, f"{where}: no sipha metric in {expr!r}"


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each query (Grafana variables replaced) as a recording rule: promtool parses it."""
    assert PROMTOOL is not None
    queries = dashboard_queries(load_dashboard())
    lines = ["groups:", "  - name: sipha-dashboard", "    rules:"]
    for number, (where, expr) in enumerate(queries):
        lines.append(f"      # {where}")
        lines.append(f"      - record: sipha_dashboard:query_{number}")
        lines.append(f"        expr: {json.dumps(substitute_grafana_variables(expr))}")
    rules = tmp_path / "dashboard-queries.yml"
    rules.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = subprocess.run(
        [PROMTOOL, "check", "rules", str(rules)],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr + "\n" + rules.read_text(encoding="utf-8")
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout, result.stdout


@pytest.mark.skipif(PROMTOOL is None, reason=NO_PROMTOOL)
def test_readme_scrape_configuration_is_valid(tmp_path: Path) -> None:
    """The prometheus.yml extract of docs/monitoring/README.md, with the rules: promtool accepts it."""
    assert PROMTOOL is not None
    readme = (MONITORING / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n# prometheus\.yml\n(?P<config>.*?)```", readme, re.DOTALL)
    assert block is not None, "README.md: no prometheus.yml example"
    token = tmp_path / "token"
    token.write_text(TOKEN, encoding="utf-8")
    config = block["config"].replace("/etc/prometheus/sipha-admin-token", str(token))
    assert str(token) in config, "the example reads the token from /etc/prometheus/sipha-admin-token"
    assert "job_name: sipha\n" in config
    path = tmp_path / "prometheus.yml"
    path.write_text(f"rule_files: [{json.dumps(str(ALERTS))}]\n{config}", encoding="utf-8")
    result = subprocess.run(
        [PROMTOOL, "check", "config", str(path)],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------- a running sipha


@dataclass
class LiveSipha:
    """A ``sipha run`` process with a TLS listen and a token, and the simulated primary of its pair."""

    admin: str
    admin_port: int
    udp_port: int
    tls_port: int
    ca: Path
    log: Path
    process: subprocess.Popen[bytes]
    primary: subprocess.Popen[bytes]
    exposition: str = ""
    """/metrics once the pair was active and the transaction and handshake done."""

    def get(self, path: str) -> str:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        request = urllib.request.Request(self.admin + path, headers=headers)  # noqa: S310 - loopback
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - loopback
            text: str = answer.read().decode()
        return text

    def pair_state(self) -> str:
        (pair,) = json.loads(self.get("/status"))["pairs"]
        return str(pair["state"])


def wait_for(condition: Callable[[], object], what: str, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tail = "" if log is None else "\n" + log.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise AssertionError(f"timed out ({timeout} s) waiting for {what}{tail}")
        time.sleep(0.1)


def write_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and sipha's certificate (``sipha.test``, 127.0.0.1) that expires in 10 days."""
    trustme = pytest.importorskip("trustme", reason="trustme is not installed (pip install 'trustme>=1.1')")
    ca = trustme.CA(organization_name="sipha monitoring tests")
    now = datetime.datetime.now(datetime.UTC)
    leaf = ca.issue_cert("sipha.test", HOST, not_after=now + datetime.timedelta(days=10))
    paths = directory / "ca.pem", directory / "sipha.pem", directory / "sipha.key"
    ca.cert_pem.write_to_path(str(paths[0]))
    paths[1].write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    paths[2].write_bytes(leaf.private_key_pem.bytes())
    paths[2].chmod(0o600)
    return paths


def sip_request(udp_port: int) -> str:
    """One OPTIONS to a user, through sipha to the pair's primary: a transaction to count."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        request = (
            f"OPTIONS sip:service@{HOST}:{udp_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bKmonitoring1;rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:monitoring@{HOST}>;tag=monitoring\r\n"
            f"To: <sip:service@{HOST}>\r\n"
            f"Call-ID: monitoring-1@{HOST}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(request.encode(), (HOST, udp_port))
        return sock.recv(65535).decode(errors="replace").split("\r\n", 1)[0]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveSipha]:
    """sipha with a ``tls:`` listen (so /metrics has the TLS families), a token, and a pair whose
    primary (a simulated SIP server) answers and whose backup is not running; one SIP transaction
    and one TLS handshake done, so that every metric family has samples."""
    directory = tmp_path_factory.mktemp("monitoring")
    ca, certificate, key = write_certificates(directory)
    primary_port, backup_port = free_port(), free_port()
    udp_port, tls_port, admin_port = free_port(), free_port(), free_port()
    config = directory / "sipha.toml"
    config.write_text(
        "\n".join(
            [
                "[proxy]",
                f'listen = ["udp:{HOST}:{udp_port}", "tls:{HOST}:{tls_port}"]',
                f'record-route = "sip:{HOST}:{udp_port};lr"',
                "[monitor]",
                "oos-check = 1",
                "oos-force = 1",
                "takeover-timeout = 1",
                "[admin]",
                f'listen = "{HOST}:{admin_port}"',
                f'token = "{TOKEN}"',
                "[tls]",
                f'certificate = "{certificate}"',
                f'private-key = "{key}"',
                f'ca-file = "{ca}"',
                "[[pair]]",
                'name = "site"',
                f'primary = "udp:{HOST}:{primary_port}"',
                f'backup = "udp:{HOST}:{backup_port}"',
                "serving = true",
                "",
            ]
        ),
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = directory / "sipha.log"
    with (directory / "primary.log").open("wb") as primary_log:
        primary = subprocess.Popen(
            [sys.executable, "-m", "sipha", "simulate-server", "--listen", f"udp:{HOST}:{primary_port}"],
            stdout=primary_log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        # the primary first, so that sipha's first probe finds it alive
        primary_log_path = directory / "primary.log"
        wait_for(
            lambda: "simulated server listening" in primary_log_path.read_text(errors="replace"),
            "the simulated primary to listen",
            START_TIMEOUT,
            primary_log_path,
        )
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "sipha", "run", "--config", str(config)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
            )
        try:
            running = LiveSipha(
                f"http://{HOST}:{admin_port}", admin_port, udp_port, tls_port, ca, log, process, primary
            )

            def listening() -> bool:
                if process.poll() is not None:
                    raise AssertionError(
                        f"sipha exited:\n{log.read_text(encoding='utf-8', errors='replace')}"
                    )
                return "listening on tls" in log.read_text(encoding="utf-8", errors="replace")

            wait_for(listening, "sipha to listen on TLS", START_TIMEOUT, log)
            wait_for(lambda: running.pair_state() == "active", "the pair to be active", START_TIMEOUT, log)
            assert sip_request(udp_port) == "SIP/2.0 200 OK"
            context = ssl.create_default_context(cafile=str(ca))
            with (
                socket.create_connection((HOST, tls_port), timeout=5) as raw,
                context.wrap_socket(raw, server_hostname="sipha.test") as tls,
            ):
                assert tls.version() in {"TLSv1.2", "TLSv1.3"}
            running.exposition = running.get("/metrics")
            yield running
        finally:
            stop_process(process)
    finally:
        stop_process(primary)


def exposed_names(exposition: str) -> set[str]:
    """The names of the samples of an exposition (``_total``, ``_bucket``... as Prometheus stores them)."""
    return {sample.name for family in text_string_to_metric_families(exposition) for sample in family.samples}


@pytest.mark.integration
def test_every_metric_used_is_exposed_by_a_running_sipha(live: LiveSipha) -> None:
    # the token is required (as the scrape configuration of docs/monitoring/README.md says)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{live.admin}/metrics", timeout=5)  # noqa: S310 - loopback
    assert refused.value.code == 401
    exposition = live.exposition  # read while healthy (the Prometheus test stops the primary)
    exposed = exposed_names(exposition)
    assert "sipha_tls_certificate_expiry_timestamp_seconds" in exposed, exposition
    used = alert_queries() + dashboard_queries(load_dashboard())
    problems = [
        f"{name} (used by {where}: {' '.join(expr.split())})"
        for where, expr in used
        for name in sorted(metric_names(expr) - exposed)
    ]
    assert not problems, "metrics not in a running sipha's /metrics:\n" + "\n".join(problems)
    # and the other way round: the dashboard shows every sipha metric family
    shown = set().union(*(metric_names(expr) for _, expr in dashboard_queries(load_dashboard())))
    hidden = [
        family.name
        for family in text_string_to_metric_families(exposition)
        if not {sample.name for sample in family.samples} & shown
    ]
    assert not hidden, f"metric families no dashboard panel shows: {hidden}"


# ---------------------------------------------------------------------------- a real Prometheus


class Prometheus:
    """A ``prometheus`` server on loopback scraping ``live`` every second with the rules loaded."""

    def __init__(self, directory: Path, live: LiveSipha) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        token = directory / "sipha-admin-token"
        token.write_text(TOKEN, encoding="utf-8")
        config = directory / "prometheus.yml"
        config.write_text(
            "\n".join(
                [
                    "global:",
                    "  scrape_interval: 1s",
                    "  scrape_timeout: 1s",
                    "  evaluation_interval: 1s",
                    "rule_files:",
                    f"  - {json.dumps(str(ALERTS))}",
                    "scrape_configs:",
                    "  - job_name: sipha",
                    "    metrics_path: /metrics",
                    "    authorization:",
                    "      type: Bearer",
                    f"      credentials_file: {json.dumps(str(token))}",
                    "    static_configs:",
                    f'      - targets: ["{HOST}:{live.admin_port}"]',
                    "",
                ]
            ),
            encoding="utf-8",
        )
        self.log = directory / "prometheus.log"
        assert PROMETHEUS is not None
        with self.log.open("wb") as log_file:
            self.process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={directory / 'data'}",
                    f"--web.listen-address={HOST}:{self.port}",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=directory,
            )

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=5) as answer:  # noqa: S310
            document: dict[str, Any] = json.load(answer)
        assert document["status"] == "success", document
        return document["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{self.log.read_text(errors='replace')}")
        try:
            return bool(self.query('count_over_time(up{job="sipha"}[1m]) >= 3'))
        except (urllib.error.URLError, OSError):
            return False

    def alerts(self) -> dict[str, dict[str, Any]]:
        """alertname -> the alert (pending or firing) as Prometheus reports it."""
        return {alert["labels"]["alertname"]: alert for alert in self.api("alerts")["alerts"]}


@pytest.mark.integration
@pytest.mark.skipif(PROMETHEUS is None, reason=NO_PROMETHEUS)
def test_prometheus_scrapes_sipha_and_evaluates_rules_and_dashboard(live: LiveSipha, tmp_path: Path) -> None:
    prometheus = Prometheus(tmp_path, live)
    try:
        wait_for(prometheus.ready, "Prometheus to scrape sipha 3 times", 15.0, prometheus.log)
        (up,) = prometheus.query('up{job="sipha"}')
        assert up["value"][1] == "1", up
        # the rules Prometheus loaded are the ones this test reads
        loaded = {
            rule["name"]: rule
            for group in prometheus.api("rules")["groups"]
            for rule in group["rules"]
            if rule["type"] == "alerting"
        }
        rules = {rule.alert: rule for rule in read_rules()}
        assert set(loaded) == set(rules)
        for name, rule in rules.items():
            assert loaded[name]["labels"] == rule.labels, name
            assert loaded[name]["annotations"] == rule.annotations, name
        # every dashboard query runs on real data; the panels' queries return series
        empty: list[str] = []
        for where, expr in dashboard_queries(load_dashboard()):
            if not prometheus.query(substitute_grafana_variables(expr)) and not where.startswith(
                "annotation"
            ):
                empty.append(f"{where}: {expr}")
        assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
        # healthy but for its certificate (10 days left): only that alert, pending (for: 1h)
        wait_for(
            lambda: "SiphaTlsCertificateExpiringSoon" in prometheus.alerts(),
            "SiphaTlsCertificateExpiringSoon to be pending",
            5.0,
        )
        alerts = prometheus.alerts()
        assert set(alerts) == {"SiphaTlsCertificateExpiringSoon"}, alerts
        certificate = alerts["SiphaTlsCertificateExpiringSoon"]
        assert certificate["state"] == "pending"
        assert 9 * 86400 < float(certificate["value"]) <= 10 * 86400
        # the primary dies and the backup is not there: the pair goes out of service
        stop_process(live.primary)
        wait_for(
            lambda: live.pair_state() == "out-of-service", "the pair to be out of service", 8.0, live.log
        )
        wait_for(
            lambda: "SiphaPairOutOfService" in prometheus.alerts(), "SiphaPairOutOfService to be pending", 5.0
        )
        alerts = prometheus.alerts()
        pair_down = alerts["SiphaPairOutOfService"]
        assert pair_down["state"] == "pending"  # for: 30s
        assert pair_down["labels"]["pair"] == "site"
        assert pair_down["labels"]["severity"] == "critical"
        assert "its calls are answered 503" in pair_down["annotations"]["description"]
        expected = {
            "SiphaPairOutOfService",
            "SiphaTlsCertificateExpiringSoon",
            # may be pending by now too: few samples, the last ones without an active member
            "SiphaPairUnstable",
            "SiphaPairStuckUnknownOrTakeover",
        }
        assert set(alerts) <= expected, alerts
    finally:
        stop_process(prometheus.process)
