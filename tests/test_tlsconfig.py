"""Unit tests of sipha.tlsconfig: the [tls] files made into TLS contexts, and the certificate's dates.

Certificates are made by trustme in tmp_path; handshakes run in memory (ssl.MemoryBIO),
so nothing here touches the network.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from sipha.config import Config, ConfigError, load_config_text
from sipha.net.tls import DEFAULT_HANDSHAKE_TIMEOUT
from sipha.tlsconfig import EXPIRY_WARNING_DAYS, _openssl_problem, build_tls_settings, certificate_status

NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def write_leaf(
    directory: Path,
    ca: trustme.CA,
    *identities: str,
    name: str = "leaf",
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> tuple[Path, Path]:
    """(chain, key) files of a certificate for ``identities`` issued by ``ca``."""
    leaf = ca.issue_cert(*identities, not_before=not_before, not_after=not_after)
    chain, key = directory / f"{name}.pem", directory / f"{name}.key"
    chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    return chain, key


def write_ca(directory: Path, ca: trustme.CA, name: str = "ca.pem") -> Path:
    path = directory / name
    path.write_bytes(ca.cert_pem.bytes())
    return path


def config(tls: str, *, listen: str = '"tls:127.0.0.1:5061"', pairs: str = "") -> Config:
    return load_config_text(f"[proxy]\nlisten = [{listen}]\n[tls]\n{tls}\n{pairs}")


@pytest.fixture
def files(tmp_path: Path, ca: trustme.CA) -> tuple[Path, Path, Path]:
    """(chain, key, ca-file) of a certificate for sip1.test and 127.0.0.1."""
    chain, key = write_leaf(tmp_path, ca, "sip1.test", "127.0.0.1")
    return chain, key, write_ca(tmp_path, ca)


def good_config(files: tuple[Path, Path, Path], extra: str = "", pairs: str = "") -> Config:
    chain, key, anchors = files
    return config(
        f'certificate = "{chain}"\nprivate-key = "{key}"\nca-file = "{anchors}"\n{extra}', pairs=pairs
    )


def problems_of(cfg: Config, now: datetime = NOW) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        build_tls_settings(cfg, source="test.toml", now=now)
    assert caught.value.source == "test.toml"
    return caught.value.problems


def handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """A TLS handshake in memory; raises what either side raises."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(client_in, client_out, server_hostname=server_hostname)
    server_side = server.wrap_bio(to_server, to_client, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, side in (("client", client_side), ("server", server_side)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            to_server.write(client_out.read())
            client_in.write(to_client.read())
        if all(done.values()):
            # TLS 1.3: the server judges the client's certificate after the client is done;
            # one exchange of application data brings its verdict to the client.
            client_side.write(b"OPTIONS")
            to_server.write(client_out.read())
            assert server_side.read(7) == b"OPTIONS"
            return client_side, server_side
    raise AssertionError("handshake did not finish")


# ============================================================================ good files


@pytest.mark.parametrize(
    ("verify_clients", "mode"),
    [("none", ssl.CERT_NONE), ("optional", ssl.CERT_OPTIONAL), ("required", ssl.CERT_REQUIRED)],
)
def test_contexts_of_good_files(files: tuple[Path, Path, Path], verify_clients: str, mode: int) -> None:
    settings = build_tls_settings(good_config(files, f'verify-clients = "{verify_clients}"'), now=NOW)
    assert settings.server is not None
    assert settings.server.verify_mode == mode
    assert settings.server.minimum_version == ssl.TLSVersion.TLSv1_2
    assert settings.server.maximum_version == ssl.TLSVersion.MAXIMUM_SUPPORTED
    assert settings.server.options & ssl.OP_NO_RENEGOTIATION
    assert settings.members.verify_mode == ssl.CERT_REQUIRED
    assert settings.members.check_hostname is True
    assert settings.members.minimum_version == ssl.TLSVersion.TLSv1_2
    assert settings.others.verify_mode == ssl.CERT_NONE
    assert settings.others.check_hostname is False
    assert settings.member_names == {}
    assert settings.handshake_timeout == DEFAULT_HANDSHAKE_TIMEOUT == 5.0


def test_options_reach_the_contexts(files: tuple[Path, Path, Path]) -> None:
    settings = build_tls_settings(
        good_config(
            files,
            'verify-members = false\nverify-clients = "optional"\nmin-version = "1.3"\n'
            "handshake-timeout = 0.5",
        ),
        now=NOW,
    )
    assert settings.server is not None
    for context in (settings.server, settings.members, settings.others):
        assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert settings.members.verify_mode == ssl.CERT_NONE
    assert settings.members.check_hostname is False
    assert settings.handshake_timeout == 0.5


def test_without_a_certificate_there_is_no_server_context() -> None:
    settings = build_tls_settings(load_config_text(""))
    assert settings.server is None
    assert settings.members.verify_mode == ssl.CERT_REQUIRED
    assert settings.others.verify_mode == ssl.CERT_NONE


def test_member_names(files: tuple[Path, Path, Path]) -> None:
    pairs = """
    [[pair]]
    name = "a"
    primary = "tls:10.0.0.1:5061"
    backup = "tls:[2001:DB8::2]:5061"
    primary-server-name = "sip1.test"
    [[pair]]
    name = "b"
    primary = "udp:10.0.0.3:5060"
    backup = "tls:SIP4.Example.COM:5062"
    [[pair]]
    name = "c"
    primary = "tls:10.0.0.1:5061"
    backup = "tls:10.0.0.5:5061"
    primary-server-name = "sip1.test"
    """
    settings = build_tls_settings(good_config(files, pairs=pairs), now=NOW)
    assert settings.member_names == {
        ("10.0.0.1", 5061): "sip1.test",
        ("2001:db8::2", 5061): "2001:db8::2",
        ("sip4.example.com", 5062): "sip4.example.com",
        ("10.0.0.5", 5061): "10.0.0.5",
    }


def test_one_member_in_two_pairs_has_one_name(files: tuple[Path, Path, Path]) -> None:
    pairs = """
    [[pair]]
    name = "a"
    primary = "tls:10.0.0.1:5061"
    backup = "tls:10.0.0.2:5061"
    primary-server-name = "sip1.test"
    [[pair]]
    name = "b"
    primary = "tls:10.0.0.3:5061"
    backup = "tls:10.0.0.1:5061"
    backup-server-name = "sip9.test"
    """
    assert problems_of(good_config(files, pairs=pairs)) == [
        (
            "pair.1.backup-server-name = 'sip9.test': member 'tls:10.0.0.1:5061' is verified as "
            "'sip1.test' in an earlier pair; one member, one name"
        )
    ]


def test_a_member_verifies_the_name_in_the_certificate(files: tuple[Path, Path, Path]) -> None:
    settings = build_tls_settings(good_config(files), now=NOW)
    assert settings.server is not None
    client, _server = handshake(settings.server, settings.members, "sip1.test")
    assert client.version() in {"TLSv1.2", "TLSv1.3"}
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(settings.server, settings.members, "other.test")


def test_a_member_verifies_an_ip_address_against_the_ip_sans(files: tuple[Path, Path, Path]) -> None:
    settings = build_tls_settings(good_config(files), now=NOW)
    assert settings.server is not None
    handshake(settings.server, settings.members, "127.0.0.1")
    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
        handshake(settings.server, settings.members, "127.0.0.2")


def test_a_member_from_another_ca_is_refused(tmp_path: Path, files: tuple[Path, Path, Path]) -> None:
    stranger = trustme.CA()
    chain, key = write_leaf(tmp_path, stranger, "sip1.test", name="stranger")
    theirs = build_tls_settings(config(f'certificate = "{chain}"\nprivate-key = "{key}"'), now=NOW)
    ours = build_tls_settings(good_config(files), now=NOW)
    assert theirs.server is not None
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer certificate"):
        handshake(theirs.server, ours.members, "sip1.test")
    # Without verification the same member is accepted (encrypted, not authenticated).
    unverified = build_tls_settings(
        good_config(files, 'verify-members = false\nverify-clients = "optional"'), now=NOW
    )
    handshake(theirs.server, unverified.members, "sip1.test")
    handshake(theirs.server, ours.others, "anything.test")


def test_latest_version_is_preferred(files: tuple[Path, Path, Path]) -> None:
    settings = build_tls_settings(good_config(files), now=NOW)
    assert settings.server is not None
    client, _server = handshake(settings.server, settings.members, "sip1.test")
    assert client.version() == "TLSv1.3"


def test_min_version_refuses_older_peers(files: tuple[Path, Path, Path]) -> None:
    settings = build_tls_settings(good_config(files, 'min-version = "1.3"'), now=NOW)
    assert settings.server is not None
    old_client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old_client.maximum_version = ssl.TLSVersion.TLSv1_2
    old_client.load_verify_locations(cafile=files[2])
    with pytest.raises(ssl.SSLError):
        handshake(settings.server, old_client, "sip1.test")


def test_mutual_tls(files: tuple[Path, Path, Path]) -> None:
    settings = build_tls_settings(good_config(files, 'verify-clients = "required"'), now=NOW)
    assert settings.server is not None
    # The members context presents our certificate: the server side sees it, verified.
    _client, server = handshake(settings.server, settings.members, "sip1.test")
    peer = server.getpeercert()
    assert peer is not None
    assert ("DNS", "sip1.test") in peer["subjectAltName"]
    # A client without a certificate is refused.
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.load_verify_locations(cafile=files[2])
    with pytest.raises(ssl.SSLError, match=r"CERTIFICATE_REQUIRED|PEER_DID_NOT_RETURN_A_CERTIFICATE"):
        handshake(settings.server, anonymous, "sip1.test")


def test_optional_client_certificates(files: tuple[Path, Path, Path]) -> None:
    settings = build_tls_settings(good_config(files, 'verify-clients = "optional"'), now=NOW)
    assert settings.server is not None
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.load_verify_locations(cafile=files[2])
    _client, server = handshake(settings.server, anonymous, "sip1.test")
    assert server.getpeercert() is None


def test_keylog_file(tmp_path: Path, files: tuple[Path, Path, Path]) -> None:
    keylog = tmp_path / "keys.log"
    settings = build_tls_settings(good_config(files, f'keylog-file = "{keylog}"'), now=NOW)
    assert settings.server is not None
    for context in (settings.server, settings.members, settings.others):
        assert context.keylog_filename == str(keylog)
    handshake(settings.server, settings.members, "sip1.test")
    assert "CLIENT_HANDSHAKE_TRAFFIC_SECRET" in keylog.read_text()


def test_system_trust_store_when_no_ca_file(files: tuple[Path, Path, Path]) -> None:
    chain, key, _anchors = files
    pair = '[[pair]]\nname = "p"\nprimary = "tls:10.0.0.1:5061"\nbackup = "tls:10.0.0.2:5061"\n'
    settings = build_tls_settings(
        config(f'certificate = "{chain}"\nprivate-key = "{key}"', pairs=pair), now=NOW
    )
    assert settings.server is not None
    assert settings.members.verify_mode == ssl.CERT_REQUIRED
    # Our private CA is not in the system store.
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(settings.server, settings.members, "sip1.test")


def test_key_and_certificate_in_one_file(tmp_path: Path, ca: trustme.CA) -> None:
    leaf = ca.issue_cert("sip1.test")
    both = tmp_path / "both.pem"
    both.write_bytes(leaf.private_key_and_cert_chain_pem.bytes())
    settings = build_tls_settings(config(f'certificate = "{both}"\nprivate-key = "{both}"'), now=NOW)
    assert settings.server is not None


# ============================================================================ bad files


def test_missing_files(tmp_path: Path, files: tuple[Path, Path, Path]) -> None:
    absent = tmp_path / "absent.pem"
    text = f'certificate = "{absent}"\nprivate-key = "{absent}"\nca-file = "{absent}"'
    text += '\nverify-clients = "optional"'
    assert problems_of(config(text)) == [
        f"tls.certificate = '{absent}': cannot read: No such file or directory",
        f"tls.private-key = '{absent}': cannot read: No such file or directory",
        f"tls.ca-file = '{absent}': cannot read: No such file or directory",
    ]


def test_a_directory(tmp_path: Path, files: tuple[Path, Path, Path]) -> None:
    _chain, key, _anchors = files
    assert problems_of(config(f'certificate = "{tmp_path}"\nprivate-key = "{key}"')) == [
        f"tls.certificate = '{tmp_path}': cannot read: Is a directory"
    ]


def test_a_nul_in_a_path(files: tuple[Path, Path, Path]) -> None:
    _chain, key, _anchors = files
    assert problems_of(config(f'certificate = "a\\u0000b"\nprivate-key = "{key}"')) == [
        "tls.certificate = 'a\\x00b': cannot read: not a valid file name"
    ]


def test_a_key_that_does_not_match(tmp_path: Path, ca: trustme.CA, files: tuple[Path, Path, Path]) -> None:
    chain, _key, _anchors = files
    _other_chain, other_key = write_leaf(tmp_path, ca, "sip2.test", name="other")
    (line,) = problems_of(config(f'certificate = "{chain}"\nprivate-key = "{other_key}"'))
    assert line == (
        f"tls.private-key = '{other_key}': does not match tls.certificate (not the key of its first "
        "certificate)"
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"hello\n", "no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)"),
        (b"", "no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)"),
        (
            b"-----BEGIN CERTIFICATE-----\nAAAA\n",
            "a certificate in it cannot be read (damaged or truncated PEM)",
        ),
        (
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "a certificate in it cannot be read (damaged or truncated PEM)",
        ),
        (
            b"\x30\x82\x01\x0a",
            "no PEM certificate in it (DER? convert it: openssl x509 -inform der -in FILE)",
        ),
    ],
)
def test_garbage_certificate(
    tmp_path: Path, files: tuple[Path, Path, Path], content: bytes, problem: str
) -> None:
    _chain, key, _anchors = files
    bad = tmp_path / "bad.pem"
    bad.write_bytes(content)
    assert problems_of(config(f'certificate = "{bad}"\nprivate-key = "{key}"')) == [
        f"tls.certificate = '{bad}': {problem}"
    ]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"hello\n", "no private key in it (expected PEM: -----BEGIN PRIVATE KEY-----)"),
        (
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "the key in it cannot be read (damaged PEM or unsupported type)",
        ),
    ],
)
def test_garbage_key(tmp_path: Path, files: tuple[Path, Path, Path], content: bytes, problem: str) -> None:
    chain, _key, _anchors = files
    bad = tmp_path / "bad.key"
    bad.write_bytes(content)
    assert problems_of(config(f'certificate = "{chain}"\nprivate-key = "{bad}"')) == [
        f"tls.private-key = '{bad}': {problem}"
    ]


def test_an_encrypted_key_is_refused_without_a_prompt(tmp_path: Path, files: tuple[Path, Path, Path]) -> None:
    chain, key, _anchors = files
    loaded = serialization.load_pem_private_key(key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        loaded.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    assert problems_of(config(f'certificate = "{chain}"\nprivate-key = "{encrypted}"')) == [
        (
            f"tls.private-key = '{encrypted}': encrypted: sipha cannot ask for a passphrase; "
            "store it unencrypted, readable by sipha's user only"
        )
    ]


def test_an_expired_certificate(tmp_path: Path, ca: trustme.CA) -> None:
    chain, key = write_leaf(
        tmp_path, ca, "sip1.test", not_before=datetime(2025, 1, 1), not_after=datetime(2026, 1, 1)
    )
    cfg = config(f'certificate = "{chain}"\nprivate-key = "{key}"')
    assert problems_of(cfg, now=datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)) == [
        f"tls.certificate = '{chain}': expired on 2026-01-01 (not after)"
    ]
    # valid up to its last second (RFC 5280 §4.1.2.5: the dates are inclusive)
    build_tls_settings(cfg, now=datetime(2026, 1, 1, tzinfo=UTC))
    # the current time by default
    assert problems_of(cfg, now=datetime.now(UTC)) == problems_of(cfg)


def test_a_certificate_not_yet_valid(tmp_path: Path, ca: trustme.CA) -> None:
    chain, key = write_leaf(tmp_path, ca, "sip1.test", not_before=datetime(2031, 6, 1))
    assert problems_of(config(f'certificate = "{chain}"\nprivate-key = "{key}"')) == [
        f"tls.certificate = '{chain}': not valid before 2031-06-01 (not before)"
    ]


def test_an_expired_intermediate(tmp_path: Path, ca: trustme.CA) -> None:
    intermediate = ca.create_child_ca()
    chain, key = write_leaf(tmp_path, intermediate, "sip1.test")
    # trustme's CAs are valid from 2000 to 3000: date the chain after that.
    problems = problems_of(
        config(f'certificate = "{chain}"\nprivate-key = "{key}"'), now=datetime(3000, 6, 1)
    )
    assert problems[0] == f"tls.certificate = '{chain}': expired on 3000-01-01 (not after)"
    assert problems[1].startswith(f"tls.certificate = '{chain}': certificate 2 of the chain (")
    assert problems[1].endswith(") expired on 3000-01-01 (not after)")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"garbage\n", "no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)"),
        (
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "a certificate in it cannot be read (damaged or truncated PEM)",
        ),
    ],
)
def test_bad_ca_file(tmp_path: Path, files: tuple[Path, Path, Path], content: bytes, problem: str) -> None:
    chain, key, _anchors = files
    bad = tmp_path / "bad-ca.pem"
    bad.write_bytes(content)
    assert problems_of(config(f'certificate = "{chain}"\nprivate-key = "{key}"\nca-file = "{bad}"')) == [
        f"tls.ca-file = '{bad}': {problem}"
    ]


def test_keylog_file_that_cannot_be_opened(tmp_path: Path, files: tuple[Path, Path, Path]) -> None:
    keylog = tmp_path / "absent" / "keys.log"
    assert problems_of(good_config(files, f'keylog-file = "{keylog}"')) == [
        f"tls.keylog-file = '{keylog}': cannot open for appending: No such file or directory"
    ]


def test_every_file_problem_is_listed(tmp_path: Path, ca: trustme.CA) -> None:
    chain, _key = write_leaf(tmp_path, ca, "sip1.test", not_after=datetime(2026, 1, 1))
    absent = tmp_path / "absent"
    text = f'certificate = "{chain}"\nprivate-key = "{absent}"\nca-file = "{absent}"'
    assert [line.split(" = ", 1)[0] for line in problems_of(config(text))] == [
        "tls.certificate",
        "tls.private-key",
        "tls.ca-file",
    ]


def test_openssl_reasons_in_plain_words(
    tmp_path: Path, ca: trustme.CA, files: tuple[Path, Path, Path]
) -> None:
    chain, _key, anchors = files
    _other, other_key = write_leaf(tmp_path, ca, "sip2.test", name="other")
    tls = good_config(files).tls.model_copy(update={"private_key": str(other_key)})
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with pytest.raises(ssl.SSLError) as mismatch:
        context.load_cert_chain(chain, other_key)
    assert mismatch.value.reason == "KEY_VALUES_MISMATCH"
    assert _openssl_problem(tls, "certificate", mismatch.value) == (
        f"tls.private-key = '{other_key}': does not match tls.certificate"
    )
    # A reason without plain words is quoted, without OpenSSL's source line.
    with pytest.raises(ssl.SSLError) as pem:
        context.load_cert_chain(anchors, anchors)
    assert _openssl_problem(tls, "certificate", pem.value) == (
        f"tls.certificate = '{chain}': refused by OpenSSL: [SSL] PEM lib"
    )
    small = ssl.SSLError(1, "[SSL: EE_KEY_TOO_SMALL] ee key too small (_ssl.c:3900)")
    small.reason = "EE_KEY_TOO_SMALL"
    assert _openssl_problem(tls, "certificate", small) == (
        f"tls.certificate = '{chain}': its key is too small for OpenSSL's security level "
        "(RSA needs 2048 bits or more)"
    )
    gone = FileNotFoundError(2, "No such file or directory")
    assert (
        _openssl_problem(tls, "ca-file", gone)
        == f"tls.ca-file = '{anchors}': cannot read: No such file or directory"
    )


# ============================================================================ certificate status


def test_no_status_without_a_certificate() -> None:
    assert certificate_status(load_config_text(""), NOW) is None


def test_status_of_a_certificate(files: tuple[Path, Path, Path]) -> None:
    status = certificate_status(good_config(files), NOW)
    assert status is not None
    assert status.path == str(files[0])
    assert status.dns_names == ["sip1.test"]
    assert status.ip_addresses == ["127.0.0.1"]
    assert "trustme" in status.subject
    assert status.not_before == datetime(2000, 1, 1, tzinfo=UTC)
    assert status.not_after == datetime(3000, 1, 1, tzinfo=UTC)
    assert status.days_left == (datetime(3000, 1, 1, tzinfo=UTC) - NOW).days
    assert status.problems == []
    assert status.warnings == []
    summary = status.summary()
    assert summary["not_after"] == "3000-01-01T00:00:00+00:00"
    assert summary["days_left"] == status.days_left
    assert summary["dns_names"] == ["sip1.test"]


@pytest.mark.parametrize(
    ("left", "days", "warned"),
    [
        (timedelta(days=30), 30, False),
        (timedelta(days=30) - timedelta(seconds=1), 29, True),
        (timedelta(days=1, hours=1), 1, True),
        (timedelta(hours=1), 0, True),
    ],
)
def test_status_warns_under_30_days(
    tmp_path: Path, ca: trustme.CA, left: timedelta, days: int, warned: bool
) -> None:
    not_after = datetime(2030, 3, 1)
    chain, key = write_leaf(tmp_path, ca, "sip1.test", not_after=not_after)
    now = not_after.replace(tzinfo=UTC) - left
    cfg = config(f'certificate = "{chain}"\nprivate-key = "{key}"')
    status = certificate_status(cfg, now)
    assert status is not None
    assert status.days_left == days
    assert status.problems == []
    plural = "" if days == 1 else "s"
    assert status.warnings == (
        [f"tls.certificate = '{chain}': expires on 2030-03-01, in {days} day{plural}"] if warned else []
    )
    assert EXPIRY_WARNING_DAYS == 30
    build_tls_settings(cfg, now=now)  # a warning, not a problem


def test_status_of_an_expired_certificate_names_the_problem(tmp_path: Path, ca: trustme.CA) -> None:
    chain, key = write_leaf(tmp_path, ca, "sip1.test", not_after=datetime(2026, 1, 1))
    status = certificate_status(config(f'certificate = "{chain}"\nprivate-key = "{key}"'), NOW)
    assert status is not None
    assert status.days_left < 0
    assert status.problems == [f"tls.certificate = '{chain}': expired on 2026-01-01 (not after)"]
    assert status.warnings == []


def test_status_takes_a_naive_time_as_utc(files: tuple[Path, Path, Path]) -> None:
    naive = certificate_status(good_config(files), NOW.replace(tzinfo=None))
    assert naive == certificate_status(good_config(files), NOW)


def test_status_of_a_certificate_without_alternative_names(tmp_path: Path, ca: trustme.CA) -> None:
    chain, key = write_leaf(tmp_path, ca, "sip1.test")
    # A file holding the CA certificate alone: no subjectAltName.
    chain.write_bytes(ca.cert_pem.bytes())
    status = certificate_status(config(f'certificate = "{chain}"\nprivate-key = "{key}"'), NOW)
    assert status is not None
    assert (status.dns_names, status.ip_addresses) == ([], [])


def test_status_of_an_unreadable_certificate(tmp_path: Path, files: tuple[Path, Path, Path]) -> None:
    cfg = good_config(files)
    files[0].unlink()
    with pytest.raises(ConfigError) as caught:
        certificate_status(cfg, NOW, source="x.toml")
    assert caught.value.problems == [
        f"tls.certificate = '{files[0]}': cannot read: No such file or directory"
    ]
