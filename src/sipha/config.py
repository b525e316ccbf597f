"""Configuration (docs/design.md §5): TOML read with tomllib, validated by a typed model.

Every option has a default, a range and a one-line description (the ``description``
of its field).  A bad file is refused as a whole, with one line per problem naming
the key, the value and what is allowed.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sipha.dnsconfig import DnsSection
from sipha.ha.settings import AliveCodes
from sipha.limitsconfig import LimitsSection
from sipha.pairconfig import MODE_FIELD, PairMode, fallback_problems
from sipha.seedoptions import hint as seed_hint
from sipha.sip import SipParseError, SipUri, parse_uri
from sipha.sip.address import is_wildcard

_TRANSPORTS: Final = ("udp", "tcp", "tls")

# RFC 1123 §2.1 host name label: letters, digits and hyphens, 1-63 characters, no hyphen at
# either end (a leading digit allowed).
_LABEL: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_MAX_HOST_NAME: Final = 253


class ConfigError(Exception):
    """A configuration that cannot be used; ``problems`` holds one line per error."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems


class _CrossRules(ValueError):
    """Problems of rules across sections, each line ``key = value: what is allowed``.

    A model validator fails as a whole, located at its model (for :class:`Config`, the
    whole file); this carries the lines so that :func:`load_config_text` lists each problem
    at the option it is about, like the problem of a single option.
    """

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


def is_ip_literal(text: str) -> bool:
    """Whether ``text`` is an IPv4 or IPv6 address (IPv6 with or without brackets)."""
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def is_server_name(text: str) -> bool:
    """A name a TLS peer's certificate can be checked against: a DNS host name or an IP address.

    Host names follow RFC 1123 §2.1, without the trailing dot (RFC 6066 §3: SNI carries
    none); a last label of digits only would read as a truncated IPv4 address.  IP
    addresses are bare (no brackets, no IPv6 zone): they are matched against the
    certificate's IP address SANs (RFC 5280 §4.2.1.6).
    """
    if "%" not in text:
        try:
            ipaddress.ip_address(text)
        except ValueError:
            pass
        else:
            return True
    labels = text.split(".")
    return (
        len(text) <= _MAX_HOST_NAME
        and all(_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()
    )


def _split_address(text: str, *, need_transport: bool) -> tuple[str, str, int]:
    """``[transport:]host:port`` -> (transport, host, port); IPv6 hosts in brackets (RFC 3986 §3.2.2).

    A host with a ``:`` outside brackets is refused rather than guessed at: ``udp:::1``
    would otherwise read as host ``:`` and port 1.
    """
    transport = "udp"
    rest = text
    example = "[::1]:5060"
    head, sep, tail = text.partition(":")
    if sep and head.lower() in _TRANSPORTS:
        transport, rest = head.lower(), tail
        example = f"{transport}:{example}"
    elif need_transport:
        raise ValueError(f"expected transport:host:port with transport one of {', '.join(_TRANSPORTS)}")
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0 or rest[close + 1 : close + 2] != ":":
            raise ValueError(f"expected [IPv6]:port, e.g. {example}")
        host, port_text = rest[1:close], rest[close + 2 :]
        ipaddress.IPv6Address(host)
    else:
        host, sep, port_text = rest.rpartition(":")
        if not sep or not host:
            raise ValueError("expected host:port")
        if ":" in host:
            # "udp:::1" would read as host ":" and port 1: an IPv6 host is only ever bracketed.
            raise ValueError(f"an IPv6 host must be in brackets: expected [IPv6]:port, e.g. {example}")
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:  # noqa: PLR2004 - port range
        raise ValueError("port must be 1-65535")
    return transport, host, int(port_text)


class SipAddress(BaseModel):
    """A transport address such as ``udp:10.0.1.10:5060``."""

    model_config = ConfigDict(frozen=True)

    transport: Literal["udp", "tcp", "tls"]
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


def parse_address(text: str, *, need_transport: bool = True) -> SipAddress:
    """Parse ``transport:host:port`` into a :class:`SipAddress`."""
    transport, host, port = _split_address(text, need_transport=need_transport)
    return SipAddress(transport=transport, host=host, port=port)  # type: ignore[arg-type]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class ProxySection(_Section):
    """[proxy]: how the proxy listens and presents itself."""

    listen: list[str] = Field(
        default=["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"],
        min_length=1,
        description="SIP listen addresses, transport:host:port (udp, tcp, tls)",
    )
    sip_address: str = Field(
        default="", alias="sip-address", description="address put in Via; empty: the listen address"
    )
    resolve_host: bool = Field(
        default=False,
        alias="resolve-host",
        description="put sip-address's IP (resolved at start and on reload) rather than its name in Via",
    )
    record_route: str = Field(
        default="sip:127.0.0.1;lr",
        alias="record-route",
        description="Record-Route URI of the pool (its FQDN), with ;lr",
    )
    overload_ctrl_dialog_rate: int = Field(
        default=0,
        ge=0,
        le=1_000_000,
        alias="overload-ctrl-dialog-rate",
        description="new INVITEs per second before 503; 0 = no limit",
    )

    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description=(
            "worker processes sharing the listen ports (SO_REUSEPORT), each an independent proxy"
            " with its own pair monitor; about one per core"
        ),
    )
    sip_ip_tos: int = Field(
        default=0,
        ge=0,
        le=255,
        strict=True,
        alias="sip-ip-tos",
        description=(
            "IP TOS byte (IPv6 traffic class) of every SIP packet sent, UDP, TCP and TLS: DSCP << 2,"
            " e.g. 0x60 (CS3) or 0x68 (AF31); 0 = the system default"
        ),
    )

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_address(item)
        return value

    @field_validator("sip_ip_tos")
    @classmethod
    def _check_ip_tos(cls, value: int) -> int:
        if value & 0x03:
            # RFC 3168 §5: the two low bits are the ECN field, which the kernel's TCP owns.
            raise ValueError(
                f"0x{value:02x} sets the two low bits of the TOS byte, which are ECN (RFC 3168) and"
                f" the kernel's: use DSCP << 2, e.g. 0x60 (CS3, DSCP 24) or 0x68 (AF31, DSCP 26)"
            )
        return value

    @model_validator(mode="after")
    def _via_address(self) -> ProxySection:
        wildcard = [item for item in self.listen if is_wildcard(parse_address(item).host)]
        if wildcard and not self.sip_address:
            raise ValueError(
                f"sip-address is required when listening on a wildcard address ({', '.join(wildcard)}): "
                "it is the address put in Via and Record-Route for the SIP servers to answer to"
            )
        if self.resolve_host and (not self.sip_address or is_ip_literal(self.sip_address)):
            what = "empty" if not self.sip_address else "an IP address"
            problem = (
                f"proxy.resolve-host = True: it resolves sip-address to the IP put in Via, and "
                f"sip-address = {self.sip_address!r} is {what}: nothing to resolve; set sip-address "
                "to this host's name or remove resolve-host"
            )
            raise _CrossRules([problem])
        return self

    @field_validator("record_route")
    @classmethod
    def _check_record_route(cls, value: str) -> str:
        try:
            uri = parse_uri(value)
        except SipParseError as error:
            raise ValueError(f"expected a SIP URI such as sip:proxy.example.com;lr ({error})") from None
        if not isinstance(uri, SipUri):
            raise ValueError("expected a sip: or sips: URI such as sip:proxy.example.com;lr")  # noqa: TRY004
        if not uri.lr:
            raise ValueError("the Record-Route URI must carry ;lr (loose routing, RFC 3261 §16.6)")
        return value


class MonitorSection(_Section):
    """[monitor]: the classic two-timer OPTIONS algorithm (docs/design.md §2)."""

    oos_check: Annotated[int, Field(ge=0, le=300)] = Field(
        default=5, alias="oos-check", description="OPTIONS period and answer timeout, s; 0 = no OPTIONS"
    )
    oos_force: Annotated[int, Field(ge=1, le=32)] = Field(
        default=5, alias="oos-force", description="period of alternating OPTIONS while no member is active, s"
    )
    alive_codes: list[str] = Field(
        default=["2xx"],
        alias="alive-codes",
        min_length=1,
        description="OPTIONS answers that mean alive: codes (200) or classes (2xx)",
    )
    takeover_timeout: float = Field(
        default=5.0,
        ge=0,
        le=32,
        alias="takeover-timeout",
        description=(
            "s a pair that lost its active member holds its requests (both members probed every 0.25 s) "
            "before 503 and event 40001; 0 = 503 at once"
        ),
    )
    failover_timeout: float = Field(
        default=1.0,
        gt=0,
        le=32,
        alias="failover-timeout",
        description="s without a response (INVITE: provisional) before re-probing and holding the request",
    )

    @field_validator("alive_codes")
    @classmethod
    def _check_codes(cls, value: list[str]) -> list[str]:
        # One definition of what an entry may be: the monitor's own parser (codes and classes,
        # "2xx" or "2XX"), so that the configuration accepts exactly what the monitor reads.
        AliveCodes.parse(value)
        return value


class AdminSection(_Section):
    """[admin]: the HTTP status surface."""

    listen: str = Field(default="127.0.0.1:8080", description="host:port of /healthz, /status, /metrics, /")
    token: str = Field(default="", description="bearer token required by the admin HTTP; empty = none")

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        _split_address(value, need_transport=False)
        return value

    @model_validator(mode="after")
    def _not_exposed(self) -> AdminSection:
        host = _split_address(self.listen, need_transport=False)[1].lower()
        loopback = host == "localhost" or (is_ip_literal(host) and ipaddress.ip_address(host).is_loopback)
        if not loopback and not self.token:
            why = "beyond loopback admin.token is required (whoever reaches it can reload, drain, stop sipha)"
            raise _CrossRules([f"admin.listen = {self.listen!r}: {why}: set a token or listen on 127.0.0.1"])
        return self


class PairMatch(_Section):
    """Routing rules of a pair for endpoint traffic."""

    domain: list[str] = Field(default=[], description="Request-URI hosts served by this pair")


class PairSection(_Section):
    """[[pair]]: one primary/backup SIP server pair."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$", description="pair name")
    primary: str = Field(description="the member configured as primary, transport:host:port")
    backup: str = Field(description="the member configured as backup, transport:host:port")
    primary_server_name: str = Field(
        default="",
        alias="primary-server-name",
        description=(
            "tls: primary only: the name sent as SNI and verified in its certificate; "
            "empty: the host of primary"
        ),
    )
    backup_server_name: str = Field(
        default="",
        alias="backup-server-name",
        description=(
            "tls: backup only: the name sent as SNI and verified in its certificate; "
            "empty: the host of backup"
        ),
    )
    serving: bool = Field(default=False, description="requests from endpoints go to this pair")
    fallback: str = Field(default="", description="pair for its endpoint requests while out of service")
    mode: PairMode = MODE_FIELD
    match: PairMatch = Field(default_factory=PairMatch, description="optional routing rules")

    @field_validator("primary", "backup")
    @classmethod
    def _check_member(cls, value: str) -> str:
        parse_address(value)
        return value

    @field_validator("primary_server_name", "backup_server_name")
    @classmethod
    def _check_server_name(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            return value
        if not is_server_name(value):
            raise ValueError(
                "expected a DNS host name (letters, digits and hyphens, dot-separated labels of 1-63 "
                "characters, RFC 1123) or an IP address"
            )
        member = "primary" if info.field_name == "primary_server_name" else "backup"
        address = info.data.get(member)
        # A member that failed its own validation is absent here: that problem is already listed.
        if address is not None and parse_address(address).transport != "tls":
            raise ValueError(
                f"allowed only when {member} is a tls: address ({member} = {address!r}): "
                "the name is sent as SNI and checked in the member's certificate"
            )
        return value

    @model_validator(mode="after")
    def _distinct(self) -> PairSection:
        if parse_address(self.primary) == parse_address(self.backup):
            raise ValueError(
                f"primary {self.primary!r} and backup {self.backup!r}: "
                "primary and backup must be different addresses"
            )
        return self


class TlsSection(_Section):
    """[tls]: certificates and verification of the tls: transport (RFC 3261 §26.2)."""

    # Only the form here: the files are read, matched and dated by sipha.tlsconfig.

    certificate: str = Field(
        default="",
        description="PEM file: the certificate chain of this instance, leaf first; empty = none",
    )
    private_key: str = Field(
        default="", alias="private-key", description="PEM file: the private key of certificate, unencrypted"
    )
    ca_file: str = Field(
        default="",
        alias="ca-file",
        description="PEM file: trust anchors for peers' certificates; empty = the system trust store",
    )
    verify_members: bool = Field(
        default=True,
        alias="verify-members",
        description="verify the certificates of tls: members (*-server-name) and DNS next hops (SIP domain)",
    )
    verify_clients: Literal["none", "optional", "required"] = Field(
        default="none",
        alias="verify-clients",
        description="client certificates on tls: listens (mutual TLS): not asked, verified if sent, required",
    )
    min_version: Literal["1.2", "1.3"] = Field(
        default="1.2",
        alias="min-version",
        description="oldest TLS version accepted, a string; the newest both sides speak is used",
    )
    handshake_timeout: float = Field(
        default=5.0,
        gt=0,
        le=60,
        alias="handshake-timeout",
        description="s a TLS handshake may take, in either direction, before the connection is dropped",
    )
    keylog_file: str = Field(
        default="",
        alias="keylog-file",
        description=(
            "append TLS secrets to this file (SSLKEYLOGFILE format, to decrypt captures in Wireshark "
            "or sngrep); empty = off; debugging only"
        ),
    )


class TraceSection(_Section):
    """[trace]: a copy of every SIP message received and sent, to a HEP collector or the log."""

    hep: str = Field(default="", description="HEPv3 collector (Homer, sngrep -L), udp:host:port; empty = off")
    hep_capture_id: int = Field(
        default=2001, ge=0, le=0xFFFFFFFF, alias="hep-capture-id", description="HEP capture agent ID"
    )
    hep_password: str = Field(
        default="", max_length=64, alias="hep-password", description="HEP authentication key; empty = none"
    )
    log: bool = Field(default=False, description="log every SIP message, whole, at INFO (logger sipha.trace)")

    @field_validator("hep")
    @classmethod
    def _check_hep(cls, value: str) -> str:
        if value and not value.lower().startswith("udp:"):
            raise ValueError("expected udp:host:port (HEP goes over UDP), e.g. udp:192.0.2.5:9060")
        if value and not is_server_name(_split_address(value, need_transport=True)[1]):
            raise ValueError("expected udp:host:port with host an IP address or a DNS host name")
        return value

    @model_validator(mode="after")
    def _unused(self) -> TraceSection:
        unused = ": unused without trace.hep (HEP export off): set hep or remove it"
        problems = [f"trace.hep-password = (hidden){unused}"] if self.hep_password and not self.hep else []
        if self.hep_capture_id != TraceSection.model_fields["hep_capture_id"].default and not self.hep:
            problems.append(f"trace.hep-capture-id = {self.hep_capture_id}{unused}")
        if problems:
            raise _CrossRules(problems)
        return self


class Config(_Section):
    """The whole configuration file."""

    proxy: ProxySection = Field(default_factory=ProxySection)
    monitor: MonitorSection = Field(default_factory=MonitorSection)
    admin: AdminSection = Field(default_factory=AdminSection)
    tls: TlsSection = Field(default_factory=TlsSection)
    trace: TraceSection = Field(default_factory=TraceSection)
    dns: DnsSection = Field(default_factory=DnsSection)
    limits: LimitsSection = Field(default_factory=LimitsSection)
    pair: list[PairSection] = Field(default=[], description="the SIP server pairs")

    @model_validator(mode="after")
    def _pairs(self) -> Config:
        names = [pair.name for pair in self.pair]
        if len(set(names)) != len(names):
            raise ValueError(f"pair names must be unique, got {names}")
        serving = [pair.name for pair in self.pair if pair.serving]
        if len(serving) > 1:
            raise ValueError(f"at most one pair may have serving = true, got {serving}")
        if problems := fallback_problems(self.pair):  # docs/deployment.md, business continuity
            raise _CrossRules(problems)
        return self

    @model_validator(mode="after")
    def _tls(self) -> Config:
        """The [tls] rules that involve other options: nothing half-configured, nothing ignored."""
        tls = self.tls
        listens = ", ".join(repr(at) for at in self.proxy.listen if parse_address(at).transport == "tls")
        by_listen = f"required by the tls: listen address in proxy.listen ({listens})"
        problems: dict[str, str] = {}
        if not tls.certificate and (listens or tls.private_key):
            problems["certificate"] = (by_listen if listens else "required when tls.private-key is set") + (
                ": the certificate chain this instance presents (RFC 3261 §26.2)"
            )
        if not tls.private_key and (listens or tls.certificate):
            problems["private-key"] = (by_listen if listens else "required when tls.certificate is set") + (
                ": the private key of tls.certificate"
            )
        if tls.verify_clients != "none" and not listens:
            problems["verify-clients"] = (
                "client certificates are asked for on tls: listens only, and proxy.listen has none: "
                'add a tls: listen address or set verify-clients = "none"'
            )
        if tls.ca_file and not tls.verify_members and tls.verify_clients == "none":
            problems["ca-file"] = (
                "unused: it verifies peers' certificates, and verify-members = false with "
                'verify-clients = "none" verifies none; remove it or turn a verification on'
            )
        if problems:
            value = tls.model_dump(by_alias=True)
            raise _CrossRules([f"tls.{key} = {value[key]!r}: {why}" for key, why in problems.items()])
        return self


def _format_error(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"])
    value = error.get("input")
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{key} = {value!r}: unknown option{seed_hint(key)}"
    if error["type"] == "missing":
        return f"{key}: required option is missing"
    if not key or isinstance(value, dict):
        # A rule about a whole section (unique names, one serving pair): its "value" is the
        # section itself, which may hold secrets; the message names what is wrong.
        return f"{key or '(file)'}: {message}"
    if is_secret(key):
        return f"{key} = (hidden): {message}"  # a secret is never logged, even a wrong one
    return f"{key} = {value!r}: {message}"


def is_secret(key: str) -> bool:
    """Whether option ``key`` holds a secret (``admin.token``, ``trace.hep-password``): never shown."""
    return key.endswith(("token", "password"))


def load_config_text(text: str, *, source: str = "<config>") -> Config:
    """Parse and validate TOML text; raise :class:`ConfigError` listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(source, [f"not valid TOML: {error}"]) from error
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        problems: list[str] = []
        for item in error.errors():
            cross = item.get("ctx", {}).get("error")
            problems += cross.lines if isinstance(cross, _CrossRules) else [_format_error(dict(item))]
        raise ConfigError(source, problems) from error


def load_config(path: Path | None) -> Config:
    """Load a configuration file, or the embedded default when ``path`` is None."""
    if path is None:
        return load_config_text(default_config_text(), source="<embedded default>")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(str(path), [f"cannot read: {error.strerror}"]) from error
    return load_config_text(text, source=str(path))


def default_config_text() -> str:
    """The embedded default configuration (loopback, two simulated servers)."""
    return resources.files("sipha").joinpath("default.toml").read_text(encoding="utf-8")
