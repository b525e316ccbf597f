"""The configuration reference (docs/configuration.md), generated from the model of :mod:`sipha.config`."""

from __future__ import annotations

from typing import Any, Final, Literal, get_args, get_origin

from pydantic import BaseModel

from sipha.config import (
    AdminSection,
    MonitorSection,
    PairSection,
    ProxySection,
    TlsSection,
    TraceSection,
)
from sipha.configtext import toml_value
from sipha.dnsconfig import DnsSection
from sipha.limitsconfig import LimitsSection

_SECTIONS: Final = (
    ("proxy", "[proxy]", ProxySection),
    ("monitor", "[monitor]", MonitorSection),
    ("admin", "[admin]", AdminSection),
    ("tls", "[tls]", TlsSection),
    ("trace", "[trace]", TraceSection),
    ("dns", "[dns]", DnsSection),
    ("limits", "[limits]", LimitsSection),
    ("pair", "[[pair]] (one table per pair)", PairSection),
)


def _type_name(annotation: object) -> str:
    names = {int: "integer", float: "number (seconds)", bool: "boolean", str: "string"}
    if annotation in names:
        return names[annotation]
    if get_origin(annotation) is Literal:
        return "string"
    text = str(annotation).replace("typing.", "")
    if text.startswith("list["):
        return "list of strings"
    if "PairMatch" in text:
        return "table"
    return text


def _allowed(metadata: list[Any], annotation: object) -> str:
    bounds: list[str] = []
    if get_origin(annotation) is Literal:
        bounds.append("one of " + ", ".join(f"`{toml_value(choice)}`" for choice in get_args(annotation)))
    unit = "character(s)" if annotation is str else "item(s)"
    for item in metadata:
        for attribute, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(item, attribute, None)
            if value is not None:
                bounds.append(f"{symbol} {value}")
        min_length = getattr(item, "min_length", None)
        if min_length:
            bounds.append(f"at least {min_length} {unit}")
        max_length = getattr(item, "max_length", None)
        if max_length:
            bounds.append(f"at most {max_length} {unit}")
        pattern = getattr(item, "pattern", None)
        if pattern:
            bounds.append(f"matches `{pattern}`")
    return ", ".join(bounds)


def render_reference() -> str:
    """The configuration reference (docs/configuration.md), generated from the model."""
    lines = [
        "# sipha configuration reference",
        "",
        "Generated from the configuration model (`sipha.config`) by",
        "`python -m sipha config-reference`; a test fails when this file and the model differ.",
        "A configuration is TOML (docs/design.md §5). Every option has a default; a bad file is",
        "refused as a whole, each problem named by key, value and what is allowed",
        "(`sipha check-config FILE`, which then prints the effective configuration: every option",
        "with its value, but for `admin.token` and `trace.hep-password`, which it only says are",
        "set).",
        "",
    ]
    for _name, title, model in _SECTIONS:
        summary = (model.__doc__ or "").strip().split(": ", 1)[-1]
        lines += [f"## {title}", "", summary[:1].upper() + summary[1:], ""]
        lines += ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
        for field_name, info in model.model_fields.items():
            key = info.alias or field_name
            if info.is_required():
                default = "(required)"
            elif info.default_factory is not None:
                produced = info.default_factory()  # type: ignore[call-arg]
                default = "`{}`" if isinstance(produced, BaseModel) else f"`{toml_value(produced)}`"
            else:
                default = f"`{toml_value(info.default)}`"
            allowed = _allowed(list(info.metadata), info.annotation)
            description = (info.description or "").replace("|", "\\|")
            kind = _type_name(info.annotation)
            lines.append(f"| `{key}` | {kind} | {default} | {allowed} | {description} |")
        lines.append("")
    lines += [
        '`match` holds `domain = ["a.example.com", ...]`: Request-URI hosts this pair serves.',
        "",
        "Addresses are `transport:host:port` with transport `udp`, `tcp` or `tls`",
        "(IPv6 hosts in brackets). Rules across options: at most one pair has",
        "`serving = true`; pair names are unique; a pair's primary and backup differ;",
        "`sip-address` is required when a listen address is a wildcard (0.0.0.0, ::); an",
        "`[admin] listen` beyond loopback requires `[admin] token`.",
        "A pair's `fallback` names another pair, not itself, and fallbacks form no cycle",
        "(docs/deployment.md: the fallback's active member gets the pair's endpoint requests,",
        "docs/design.md §3 rule 4, while it is out of service, event 40001).",
        '`mode = "active-active"` (docs/design.md §2.2): both members serve; new Call-IDs from',
        "endpoints spread over the members that answer OPTIONS, by Call-ID; a fallback pair may be",
        "either mode (an active-active fallback spreads what it takes too).",
        "",
        "TLS (RFC 3261 §26.2): a `tls:` listen address requires `tls.certificate` and `tls.private-key`,",
        'and each of these the other; `verify-clients` other than `"none"` requires a `tls:` listen;',
        '`ca-file` requires `verify-members = true` or `verify-clients` other than `"none"`;',
        "`primary-server-name` (`backup-server-name`) requires a `tls:` `primary` (`backup`); without",
        "one, a `tls:` member is verified against its host (a name, or an IP address SAN). With",
        "`verify-members`, a TLS next hop located by DNS (RFC 3263) is verified too, against the",
        "SIP domain of its URI (RFC 5922: a `sip:` URI or DNS subjectAltName, no wildcard; sent as",
        "SNI). Relative",
        "paths are read from the working directory. `sipha check-config` reads the files, checks that",
        "key and certificate match and the certificate's dates, and warns 30 days before expiry.",
        "",
        "Tracing (docs/tracing.md): `hep-password` and a `hep-capture-id` other than the default",
        "require `hep`; a `hep` host name is resolved at start and on reload (a name that does not",
        "resolve refuses them). `sipha run --trace` turns `log` on whatever the file says.",
        "",
        "DNS (docs/design.md §3): `servers` are IP addresses (IPv6 in brackets when a port follows).",
        "Applied on reload: the cached answers and the targets marked failed are dropped.",
        'A pair member may be given by host name (`primary = "udp:sip1.example.com:5060"`): it is',
        "resolved through `[dns]` (A/AAAA, IPv4 first) at start and on reload, and again when its answer",
        "expires (its TTL within `min-ttl`/`max-ttl`, 1 s at least); sipha knows the member by that IP",
        "(its requests, OPTIONS and transport errors). A new address is logged and applied as a reload of",
        "that pair (re-probed); a lookup that fails keeps the last address, logged and counted",
        "(`member_name_failures`). A name that does not resolve at start does not stop sipha: the member",
        "is down, an error names the key and value, `/status` says why, and the name is asked for every",
        "5 s (a negative answer is kept for its TTL, at most 30 s).",
        "",
        'Limits (docs/design.md §3, "Sources and connections"): `source-burst` requires `source-rate`;',
        "the rate and the scanner words apply per worker to every source but the pair members' IPs and",
        "`trusted`; a dropped message gets no answer. Applied on reload (every source's bucket refills);",
        "the connection limits apply to open connections too. `max-transactions` is per worker",
        '(docs/design.md §3, "Overload"): 503 with `Retry-After: 5` and no transaction beyond it, from',
        "half of it for requests outside a dialog from sources neither `trusted` nor pair members.",
        "",
    ]
    return "\n".join(lines)
