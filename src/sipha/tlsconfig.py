"""The ``[tls]`` files made into the transports' TLS contexts (RFC 3261 §26.2), and their dates.

:mod:`sipha.config` checks the form of ``[tls]``; this module reads what it names: the
certificate chain, the private key, the trust anchors and the key log file.  Every
failure is a :class:`~sipha.config.ConfigError` whose lines name the key, the file and
the problem in plain words (``tls.private-key = '/k.pem': does not match
tls.certificate``), so that ``sipha check-config``, the start and a reload (SIGHUP)
refuse a bad file the same way as a bad option (docs/design.md §5).

The files are parsed with ``cryptography`` before ``ssl`` loads them: OpenSSL reports
most failures as ``[SSL] PEM lib`` without saying which file is wrong, and would prompt
on the terminal for the passphrase of an encrypted key.
"""

from __future__ import annotations

import ipaddress
import re
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from sipha.config import Config, ConfigError, TlsSection, parse_address
from sipha.net.tls import NextHopContext, TlsSettings
from sipha.sip.address import Address

EXPIRY_WARNING_DAYS: Final = 30
"""A certificate expiring in fewer days than this is warned about (check-config, /status)."""

_VERSIONS: Final = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_CLIENT_CERTIFICATES: Final = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}

# OpenSSL's reasons (SSLError.reason) in plain words, with the key each one is about.  The
# files are checked with cryptography first, so these are the rules only OpenSSL applies
# (its security level) and a safety net; any other reason is quoted as OpenSSL gives it.
_OPENSSL_REASONS: Final = {
    "KEY_VALUES_MISMATCH": ("private-key", "does not match tls.certificate"),
    "EE_KEY_TOO_SMALL": (
        "certificate",
        "its key is too small for OpenSSL's security level (RSA needs 2048 bits or more)",
    ),
    "CA_KEY_TOO_SMALL": (
        "certificate",
        "a CA certificate's key is too small for OpenSSL's security level (RSA needs 2048 bits or more)",
    ),
    "CA_MD_TOO_WEAK": ("certificate", "signed with a digest OpenSSL refuses (MD5 or SHA-1)"),
    "NO_CERTIFICATE_OR_CRL_FOUND": ("ca-file", "no certificate in it"),
    "BAD_DECRYPT": ("private-key", "encrypted: sipha cannot ask for a passphrase"),
}
_SOURCE_LINE: Final = re.compile(r"\s*\(_ssl\.c:\d+\)$")
_PEM_CERTIFICATE: Final = b"-----BEGIN CERTIFICATE-----"
_ASN1_SEQUENCE: Final = 0x30  # the first byte of a DER certificate


class _Encrypted(Exception):
    """Raised by the passphrase callback: sipha runs unattended and never prompts for one."""


def _no_passphrase() -> bytes:
    raise _Encrypted


def _line(key: str, path: str, text: str) -> str:
    return f"tls.{key} = {path!r}: {text}"


def _openssl_problem(tls: TlsSection, default_key: str, error: OSError) -> str:
    """One problem line for an error of ``ssl`` loading a file: OpenSSL's reason in plain words."""
    key, text = _OPENSSL_REASONS.get(str(getattr(error, "reason", None)), (default_key, ""))
    if not isinstance(error, ssl.SSLError):  # the file went away after it was checked
        text = f"cannot read: {error.strerror or error}"
    elif not text:
        said = str(error.args[1]) if len(error.args) > 1 else str(error)
        text = f"refused by OpenSSL: {_SOURCE_LINE.sub('', said)}"
    path = {"certificate": tls.certificate, "private-key": tls.private_key, "ca-file": tls.ca_file}[key]
    return _line(key, path, text)


# ---------------------------------------------------------------------------- reading the files


def _read(key: str, path: str, problems: list[str]) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        problems.append(_line(key, path, f"cannot read: {error.strerror or error}"))
    except ValueError:  # a NUL in the path, which a TOML string can hold
        problems.append(_line(key, path, "cannot read: not a valid file name"))
    return None


def _certificates(key: str, path: str, data: bytes, problems: list[str]) -> list[x509.Certificate]:
    """Every certificate of a PEM file, in file order; [] with a problem when there is none."""
    if _PEM_CERTIFICATE not in data:
        if data[:1] == bytes([_ASN1_SEQUENCE]):
            text = "no PEM certificate in it (DER? convert it: openssl x509 -inform der -in FILE)"
        else:
            text = f"no certificate in it (expected PEM: {_PEM_CERTIFICATE.decode()})"
        problems.append(_line(key, path, text))
        return []
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        problems.append(_line(key, path, "a certificate in it cannot be read (damaged or truncated PEM)"))
    return []


def _check_key(path: str, data: bytes, leaf: x509.Certificate | None, problems: list[str]) -> None:
    """The private key must be readable, unencrypted, and the key of the leaf certificate."""
    if b"PRIVATE KEY-----" not in data:
        problems.append(
            _line("private-key", path, "no private key in it (expected PEM: -----BEGIN PRIVATE KEY-----)")
        )
        return
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        problems.append(
            _line(
                "private-key",
                path,
                "encrypted: sipha cannot ask for a passphrase; store it unencrypted, "
                "readable by sipha's user only",
            )
        )
        return
    except (ValueError, UnsupportedAlgorithm):
        problems.append(
            _line("private-key", path, "the key in it cannot be read (damaged PEM or unsupported type)")
        )
        return
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if leaf is not None and key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        problems.append(
            _line(
                "private-key", path, "does not match tls.certificate (not the key of its first certificate)"
            )
        )


def _subject(certificate: x509.Certificate) -> str:
    return certificate.subject.rfc4514_string() or "(empty subject)"


def _day(moment: datetime) -> str:
    return moment.date().isoformat()


def _days_left(certificate: x509.Certificate, now: datetime) -> int:
    return (certificate.not_valid_after_utc - now) // timedelta(days=1)


def _dates(path: str, chain: list[x509.Certificate], now: datetime) -> tuple[list[str], list[str]]:
    """(problems, warnings) about the validity dates of every certificate of the chain.

    A certificate out of its dates fails every peer that verifies it (RFC 5280 §6.1.3
    (a)(2)), so it is a problem; one that expires within :data:`EXPIRY_WARNING_DAYS` is
    a warning, there to be seen before it becomes a problem.
    """
    problems: list[str] = []
    warnings: list[str] = []
    for index, certificate in enumerate(chain):
        which = "" if index == 0 else f"certificate {index + 1} of the chain ({_subject(certificate)}) "
        not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
        if now > not_after:
            problems.append(_line("certificate", path, f"{which}expired on {_day(not_after)} (not after)"))
        elif now < not_before:
            problems.append(
                _line("certificate", path, f"{which}not valid before {_day(not_before)} (not before)")
            )
        elif (days := _days_left(certificate, now)) < EXPIRY_WARNING_DAYS:
            plural = "" if days == 1 else "s"
            warnings.append(
                _line("certificate", path, f"{which}expires on {_day(not_after)}, in {days} day{plural}")
            )
    return problems, warnings


def _aware(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now if now.tzinfo is not None else now.replace(tzinfo=UTC)


def _chain(tls: TlsSection, source: str) -> list[x509.Certificate]:
    problems: list[str] = []
    data = _read("certificate", tls.certificate, problems)
    chain = [] if data is None else _certificates("certificate", tls.certificate, data, problems)
    if problems:
        raise ConfigError(source, problems)
    return chain


# ---------------------------------------------------------------------------- certificate status


@dataclass(frozen=True, slots=True)
class CertificateStatus:
    """The certificate of this instance (the leaf of ``tls.certificate``) and its dates.

    ``problems`` (a certificate of the chain out of its dates) refuse the configuration;
    ``warnings`` (one expiring within :data:`EXPIRY_WARNING_DAYS`) are printed by
    ``sipha check-config`` and shown by ``/status``, weeks before peers start failing.
    """

    path: str
    subject: str
    dns_names: list[str]
    ip_addresses: list[str]
    not_before: datetime
    not_after: datetime
    days_left: int
    problems: list[str]
    warnings: list[str]

    def summary(self) -> dict[str, object]:
        """The status as JSON-ready values, dates in ISO 8601 (for ``/status``)."""
        return {
            "path": self.path,
            "subject": self.subject,
            "dns_names": list(self.dns_names),
            "ip_addresses": list(self.ip_addresses),
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "days_left": self.days_left,
            "problems": list(self.problems),
            "warnings": list(self.warnings),
        }


def _alternative_names(certificate: x509.Certificate) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) of the subjectAltName: what peers verify (RFC 6125 §6.4.4)."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return [], []
    return names.get_values_for_type(x509.DNSName), [
        str(ip) for ip in names.get_values_for_type(x509.IPAddress)
    ]


def certificate_status(
    config: Config, now: datetime, *, source: str = "<config>"
) -> CertificateStatus | None:
    """The status of ``tls.certificate`` at ``now`` (UTC when naive); None when none is configured.

    Reads the file at each call: call it when the contexts are built (start, reload) to
    describe the certificate in use.  Raises :class:`ConfigError` when the file cannot be
    read or holds no certificate.
    """
    tls = config.tls
    if not tls.certificate:
        return None
    now = _aware(now)
    chain = _chain(tls, source)
    leaf = chain[0]
    problems, warnings = _dates(tls.certificate, chain, now)
    dns_names, ip_addresses = _alternative_names(leaf)
    return CertificateStatus(
        path=tls.certificate,
        subject=_subject(leaf),
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        days_left=_days_left(leaf, now),
        problems=problems,
        warnings=warnings,
    )


# ---------------------------------------------------------------------------- the contexts


def _check_files(tls: TlsSection, now: datetime) -> list[str]:
    """Every problem of the files ``[tls]`` names, before OpenSSL sees them."""
    problems: list[str] = []
    if tls.certificate:
        data = _read("certificate", tls.certificate, problems)
        chain = [] if data is None else _certificates("certificate", tls.certificate, data, problems)
        problems += _dates(tls.certificate, chain, now)[0]
        key_data = _read("private-key", tls.private_key, problems)
        if key_data is not None:
            _check_key(tls.private_key, key_data, chain[0] if chain else None, problems)
    if tls.ca_file:
        data = _read("ca-file", tls.ca_file, problems)
        if data is not None:
            _certificates("ca-file", tls.ca_file, data, problems)
    return problems


def _member_names(config: Config, source: str) -> dict[tuple[str, int], str]:
    """(host, port) of every ``tls:`` pair member -> the name sent as SNI and verified.

    Hosts are normalised as the transports compare them: IP addresses in their compressed
    form, names in lower case.  One member (host, port) in two pairs must have one name.
    """
    names: dict[tuple[str, int], str] = {}
    for index, pair in enumerate(config.pair):
        for role, text, server_name in (
            ("primary", pair.primary, pair.primary_server_name),
            ("backup", pair.backup, pair.backup_server_name),
        ):
            address = parse_address(text)
            if address.transport != "tls":
                continue
            try:
                host = str(ipaddress.ip_address(address.host))
            except ValueError:
                host = address.host.lower()
            name = server_name or host
            known = names.setdefault((host, address.port), name)
            if known != name:
                raise ConfigError(
                    source,
                    [
                        (
                            f"pair.{index}.{role}-server-name = {server_name!r}: member {text!r} is "
                            f"verified as {known!r} in an earlier pair; one member, one name"
                        )
                    ],
                )
    return names


def _client_context(tls: TlsSection, *, verify: bool, trust: bool) -> ssl.SSLContext:
    """A client context; ``verify``: certificate and name checked against the trust anchors.

    The anchors are ``ca-file``, else the system store, loaded only when ``trust`` (when some
    connection will use the context: loading the system store takes tens of milliseconds).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = _VERSIONS[tls.min_version]
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif tls.ca_file:
        context.load_verify_locations(cafile=tls.ca_file)
    elif trust:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return context


def _server_context(tls: TlsSection) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[tls.min_version]
    # A client may not renegotiate a TLS 1.2 session: each renegotiation costs the server a
    # handshake, for free to the client (TLS 1.3 has no renegotiation).
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.verify_mode = _CLIENT_CERTIFICATES[tls.verify_clients]
    if tls.verify_clients != "none":
        if tls.ca_file:
            context.load_verify_locations(cafile=tls.ca_file)
        else:
            context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    return context


def build_tls_settings(
    config: Config, *, source: str = "<config>", now: datetime | None = None
) -> TlsSettings:
    """The TLS contexts of ``config``'s ``[tls]`` for the transports; :class:`ConfigError` if not usable.

    - ``server`` (``tls:`` listens): our chain and key, client certificates per
      ``verify-clients`` against ``ca-file`` or the system store; None without a certificate.
    - ``members``: verifies the members' certificates and names when ``verify-members``
      (RFC 3261 §26.2: the name is the member's ``*-server-name`` or host); presents our
      chain when there is one, for members that ask for mutual TLS.
    - ``next_hops``: with ``verify-members``, for next hops located by DNS from a SIP
      domain (RFC 5922 §4): the chain verified against the same anchors (the system store
      read at the first use), the domain checked by sipha (§7.2: no wildcards, a ``sip:``
      URI or DNS subjectAltName); None without ``verify-members``: ``others``, with SNI.
    - ``others``: encrypts without verifying, for endpoints a Request-URI names.

    ``min-version`` bounds all three from below only, so TLS 1.3 is used whenever the peer
    speaks it.  ``now`` (default: the current time) dates the certificate: one out of its
    dates is refused, since every verifying peer would fail the handshake.
    """
    tls = config.tls
    problems = _check_files(tls, _aware(now))
    if problems:
        raise ConfigError(source, problems)
    member_names = _member_names(config, source)
    try:
        server = _server_context(tls) if tls.certificate else None
        members = _client_context(tls, verify=tls.verify_members, trust=bool(member_names))
        next_hops = _client_context(tls, verify=True, trust=False) if tls.verify_members else None
        others = _client_context(tls, verify=False, trust=False)
    except OSError as error:  # only loading the trust anchors can fail here
        raise ConfigError(source, [_openssl_problem(tls, "ca-file", error)]) from error
    if next_hops is not None:
        next_hops.check_hostname = False  # the SIP domain is checked by sipha (RFC 5922 §7.2)
    contexts = [context for context in (server, members, next_hops, others) if context is not None]
    if tls.certificate:
        try:
            for context in contexts:
                context.load_cert_chain(tls.certificate, tls.private_key, password=_no_passphrase)
        except OSError as error:
            raise ConfigError(source, [_openssl_problem(tls, "certificate", error)]) from error
        except _Encrypted as error:
            text = "encrypted: sipha cannot ask for a passphrase"
            raise ConfigError(source, [_line("private-key", tls.private_key, text)]) from error
    if tls.keylog_file:
        try:
            for context in contexts:
                context.keylog_filename = tls.keylog_file
        except (OSError, ValueError) as error:
            text = f"cannot open for appending: {getattr(error, 'strerror', None) or error}"
            raise ConfigError(source, [_line("keylog-file", tls.keylog_file, text)]) from error
    return TlsSettings(
        server=server,
        members=members,
        others=others,
        next_hops=None if next_hops is None else NextHopContext(next_hops, system_store=not tls.ca_file),
        member_names=member_names,
        handshake_timeout=tls.handshake_timeout,
    )


class TlsLogLimiter:
    """When a TLS failure is worth a log line (a flood of bad handshakes is not a flood of lines).

    A destination we connect to (a pair member probed every few seconds) is logged when
    its failure starts or changes, and again every :data:`TLS_LOG_REPEAT` s while it lasts;
    a source of failed inbound handshakes is logged once per :data:`TLS_LOG_REPEAT` s per IP.
    The counters (/metrics) see every one.
    """

    def __init__(self) -> None:
        self._last: dict[tuple[str, int] | str, tuple[str, float]] = {}

    def should_log(self, peer: Address, text: str, now: float, *, outbound: bool) -> bool:
        """Whether this failure gets a log line now (inbound ones: keyed by the source IP)."""
        key: tuple[str, int] | str = (peer.host, peer.port) if outbound else peer.host
        last = self._last.get(key)
        if last is not None and last[0] == text and now - last[1] < TLS_LOG_REPEAT:
            return False
        if len(self._last) >= TLS_LOG_KEPT and key not in self._last:
            self._last.pop(next(iter(self._last)))
        self._last[key] = (text, now)
        return True

    def succeeded(self, peer: Address) -> None:
        """A handshake with ``peer`` succeeded: its next failure is news again."""
        self._last.pop((peer.host, peer.port), None)


TLS_LOG_REPEAT: Final = 60.0
"""s between two log lines for the same TLS failure of the same peer."""
TLS_LOG_KEPT: Final = 4096
