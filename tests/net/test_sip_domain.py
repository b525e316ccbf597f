"""RFC 5922: a TLS next hop located by DNS proves the SIP domain; its connections per identity.

The identity rules (§7.1: which names of a certificate are SIP domain identities;
§7.2: how they compare, no suffix and no wildcard) on certificates as
``getpeercert()`` decodes them; then real handshakes on loopback between two
transport managers (trustme CA, leaf certificates with ``sip:`` URI and DNS
subjectAltNames made with ``cryptography``): the domain is sent as SNI and checked,
a failure is a transport error for that destination (RFC 3263 §4.3 moves on), and
a connection verified for one domain carries another only if its certificate
proves that one too.
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sipha.config import load_config_text
from sipha.net import TransportManager
from sipha.net.sipdomain import names_sip_domain, sip_domain_identities
from sipha.net.tls import NextHopContext, TlsSettings
from sipha.sip.address import Address
from sipha.tlsconfig import build_tls_settings
from tests.net.support import Sink, sip_request

HOST = "127.0.0.1"

# ---------------------------------------------------------------------------- §7.1, §7.2


def decoded(*names: tuple[str, str], common_name: str | None = None) -> dict[str, object]:
    """A certificate as getpeercert() decodes it; no ``names``: no subjectAltName extension."""
    certificate: dict[str, object] = {}
    if common_name is not None:
        certificate["subject"] = ((("commonName", common_name),),)
    if names:
        certificate["subjectAltName"] = names
    return certificate


@pytest.mark.parametrize(
    ("names", "domain", "proves"),
    [
        # §7.1: a sip: URI without user part names its host part; compared as a DNS name (§7.2).
        ((("URI", "sip:carrier.test"),), "carrier.test", True),
        ((("URI", "SIP:Carrier.TEST"),), "carrier.test", True),
        ((("URI", "sip:carrier.test:5061;transport=tls"),), "carrier.test", True),
        ((("URI", "sip:carrier.test."),), "carrier.test", True),
        # §7.1: a user part, or another scheme (sips: included), is no identity.
        ((("URI", "sip:alice@carrier.test"),), "carrier.test", False),
        ((("URI", "sips:carrier.test"),), "carrier.test", False),
        ((("URI", "https://carrier.test/"),), "carrier.test", False),
        # §7.1: DNS names count "if and only if" no sip: URI identity is found.
        ((("DNS", "carrier.test"),), "carrier.test", True),
        ((("URI", "sip:other.test"), ("DNS", "carrier.test")), "carrier.test", False),
        ((("URI", "sip:alice@other.test"), ("DNS", "carrier.test")), "carrier.test", True),
        # §7.2: no suffix, no wildcard, no leading dot; a literal wildcard matches only itself.
        ((("DNS", "*.carrier.test"),), "sip.carrier.test", False),
        ((("DNS", "*.carrier.test"),), "carrier.test", False),
        ((("DNS", ".carrier.test"),), "sip.carrier.test", False),
        ((("DNS", "sip.carrier.test"),), "carrier.test", False),
        ((("DNS", "carrier.test"),), "sip.carrier.test", False),
        ((("URI", "sip:*.carrier.test"),), "sip.carrier.test", False),
        # An IP address is no SIP domain.
        ((("IP Address", "192.0.2.1"),), "192.0.2.1", False),
    ],
)
def test_sip_domain_identities_are_compared_whole(
    names: tuple[tuple[str, str], ...], domain: str, proves: bool
) -> None:
    assert names_sip_domain(decoded(*names), domain) is proves


def test_the_common_name_counts_only_without_a_subject_alt_name() -> None:
    # §7.1: "If and only if the subjectAltName does not appear in the certificate".
    assert sip_domain_identities(decoded(common_name="Carrier.test")) == ["carrier.test"]
    assert names_sip_domain(decoded(common_name="carrier.test"), "carrier.test")
    with_ip = decoded(("IP Address", "192.0.2.1"), common_name="carrier.test")
    assert sip_domain_identities(with_ip) == []
    assert not names_sip_domain(with_ip, "carrier.test")


def test_no_certificate_or_an_unverified_one_proves_nothing() -> None:
    assert not names_sip_domain(None, "carrier.test")
    assert not names_sip_domain({}, "carrier.test")  # getpeercert() of a CERT_NONE handshake
    assert not names_sip_domain(decoded(("DNS", "carrier.test")), "")


def test_the_identities_are_listed_uris_first() -> None:
    names = (("DNS", "tls.carrier.test"), ("URI", "sip:carrier.test"), ("URI", "sip:Secure.Test:5061"))
    assert sip_domain_identities(decoded(*names)) == ["carrier.test", "secure.test"]
    assert sip_domain_identities(decoded(("DNS", "A.test"), ("DNS", "b.test."))) == ["a.test", "b.test"]


# ---------------------------------------------------------------------------- real handshakes


def leaf_context(
    ca: trustme.CA, directory: Path, *, uris: tuple[str, ...], dns: tuple[str, ...]
) -> ssl.SSLContext:
    """A server context whose certificate (from ``ca``) has these URI and DNS subjectAltNames."""
    issuer_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    issuer = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri) for uri in uris]
    names += [x509.DNSName(name) for name in dns]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sip peer")]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    directory.mkdir(parents=True, exist_ok=True)
    name = "-".join(uris + dns).replace(":", "_").replace("*", "star")
    cert_file, key_file = directory / f"{name}.pem", directory / f"{name}.key"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


class Peer:
    """A TLS listen of a transport manager (the next hop): the SNI of each handshake it saw.

    ``by_name``: the certificate (context) it presents per SNI name (RFC 6066 §3, a
    server with one certificate per SIP domain); else the one it was made with.
    """

    def __init__(self, context: ssl.SSLContext, by_name: dict[str, ssl.SSLContext] | None = None) -> None:
        self.sink = Sink()
        self.names: list[str | None] = []
        self.by_name = by_name or {}
        context.sni_callback = self._sni
        for other in self.by_name.values():
            other.sni_callback = self._sni
        self.settings = TlsSettings(server=context, members=unverified(), others=unverified())
        self.manager = self.sink.manager(tls=self.settings)

    def _sni(self, connection: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: ssl.SSLContext) -> None:
        self.names.append(name)
        chosen = self.by_name.get(name or "")
        if chosen is not None:
            connection.context = chosen

    @property
    def port(self) -> int:
        return self.manager.listen_addresses[0].port

    async def messages(self, count: int) -> list[tuple[bytes, Address]]:
        got = [await self.sink.message() for _ in range(count)]
        return [(data, source) for data, source, _ in got]


def unverified() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def next_hops(ca: trustme.CA) -> NextHopContext:
    """What tlsconfig builds with verify-members = true: the chain verified, not the host name."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    ca.configure_trust(context)
    return NextHopContext(context, system_store=False)


class Client:
    """sipha's transports, sending to next hops; the handshake outcomes they reported."""

    def __init__(self, verifying: NextHopContext | None) -> None:
        self.sink = Sink()
        self.outcomes: list[tuple[str, str]] = []
        settings = TlsSettings(server=None, members=unverified(), others=unverified(), next_hops=verifying)
        self.manager = self.sink.manager(
            tls=settings, on_tls=lambda _peer, _out, outcome, text: self.outcomes.append((outcome, text))
        )

    def send(self, number: int, port: int, domain: str) -> None:
        self.manager.send(sip_request(number), Address("TLS", HOST, port, domain))


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def running() -> AsyncIterator[list[TransportManager]]:
    managers: list[TransportManager] = []
    yield managers
    for manager in managers:
        await manager.stop()


async def serve(peer: Peer, client: Client, running: list[TransportManager]) -> None:
    running += [peer.manager, client.manager]
    await peer.manager.start([("tls", HOST, 0)])
    await client.manager.start([])


async def test_the_sip_domain_is_sent_as_sni_and_proven_by_a_sip_uri(
    ca: trustme.CA, tmp_path: Path, running: list[TransportManager]
) -> None:
    peer = Peer(leaf_context(ca, tmp_path, uris=("sip:carrier.test",), dns=("tls.carrier.test",)))
    client = Client(next_hops(ca))
    await serve(peer, client, running)
    client.send(1, peer.port, "carrier.test")
    [(data, _)] = await peer.messages(1)
    assert data == sip_request(1)
    assert peer.names == ["carrier.test"]  # RFC 6066: the domain, not the SRV target, not the IP
    assert client.outcomes == [("ok", client.outcomes[0][1])]


@pytest.mark.parametrize(
    ("uris", "dns"),
    [
        (("sip:other.test",), ("carrier.test",)),  # a sip: URI present: DNS names do not count
        ((), ("*.test",)),  # no wildcard (§7.2)
        ((), ("tls.carrier.test",)),  # the SRV target's name is not the domain (§4)
        (("sip:alice@carrier.test",), ()),  # a user part: no identity (§7.1)
    ],
)
async def test_a_next_hop_that_does_not_prove_the_domain_is_a_transport_error(
    ca: trustme.CA,
    tmp_path: Path,
    running: list[TransportManager],
    uris: tuple[str, ...],
    dns: tuple[str, ...],
) -> None:
    peer = Peer(leaf_context(ca, tmp_path, uris=uris, dns=dns))
    client = Client(next_hops(ca))
    await serve(peer, client, running)
    client.send(1, peer.port, "carrier.test")
    destination, error = await client.sink.error()
    # The destination as the core sent to it, domain included: only that branch fails (§4.3).
    assert destination == Address("TLS", HOST, peer.port, "carrier.test")
    assert "does not name the SIP domain 'carrier.test'" in str(error), error
    assert [outcome for outcome, _ in client.outcomes] == ["verify_failed"]
    assert client.manager.tls_outcomes["verify_failed"] == 1
    assert client.manager.stats.tls_handshake_failures == 1
    await asyncio.sleep(0.05)
    assert peer.sink.messages.empty()  # nothing was sent to it


async def test_a_certificate_from_an_unknown_ca_fails_for_the_domain(
    ca: trustme.CA, tmp_path: Path, running: list[TransportManager]
) -> None:
    peer = Peer(leaf_context(trustme.CA(), tmp_path, uris=("sip:carrier.test",), dns=()))
    client = Client(next_hops(ca))
    await serve(peer, client, running)
    client.send(1, peer.port, "carrier.test")
    destination, error = await client.sink.error()
    assert destination.domain == "carrier.test"
    assert "certificate verify failed" in str(error)
    assert "SIP domain 'carrier.test'" in str(error)  # which next hop, in the log line
    assert [outcome for outcome, _ in client.outcomes] == ["verify_failed"]


async def test_without_verification_the_domain_is_still_sent_as_sni(
    ca: trustme.CA, tmp_path: Path, running: list[TransportManager]
) -> None:
    # verify-members = false: next hops are encrypted, not verified (docs/configuration.md).
    peer = Peer(leaf_context(ca, tmp_path, uris=(), dns=("wrong.test",)))
    client = Client(None)
    await serve(peer, client, running)
    client.send(1, peer.port, "carrier.test")
    client.send(2, peer.port, "secure.test")
    assert [data for data, _ in await peer.messages(2)] == [sip_request(1), sip_request(2)]
    assert peer.names == ["carrier.test"]  # one connection: nothing to prove, nothing to separate


async def test_a_connection_is_reused_for_a_domain_its_certificate_also_proves(
    ca: trustme.CA, tmp_path: Path, running: list[TransportManager]
) -> None:
    peer = Peer(leaf_context(ca, tmp_path, uris=("sip:carrier.test", "sip:secure.test"), dns=()))
    client = Client(next_hops(ca))
    await serve(peer, client, running)
    client.send(1, peer.port, "carrier.test")
    await peer.messages(1)
    client.send(2, peer.port, "secure.test")
    client.send(3, peer.port, "carrier.test")
    received = await peer.messages(2)
    assert len({source for _, source in received}) == 1  # one connection carried all three
    assert peer.names == ["carrier.test"]


async def test_a_connection_is_not_reused_for_a_domain_its_certificate_does_not_prove(
    ca: trustme.CA, tmp_path: Path, running: list[TransportManager]
) -> None:
    peer = Peer(leaf_context(ca, tmp_path, uris=("sip:carrier.test",), dns=()))
    client = Client(next_hops(ca))
    await serve(peer, client, running)
    client.send(1, peer.port, "carrier.test")
    [(_, first)] = await peer.messages(1)
    client.send(2, peer.port, "other.test")  # same IP and port, another domain
    destination, error = await client.sink.error()
    assert destination == Address("TLS", HOST, peer.port, "other.test")
    assert "does not name the SIP domain 'other.test'" in str(error)
    assert peer.names == ["carrier.test", "other.test"]  # a connection of its own, its own SNI
    # carrier.test's connection was neither used for other.test nor disturbed by its failure.
    client.send(3, peer.port, "carrier.test")
    [(data, source)] = await peer.messages(1)
    assert (data, source) == (sip_request(3), first)
    assert peer.names == ["carrier.test", "other.test"]


async def test_one_connection_per_domain_when_the_server_has_a_certificate_per_domain(
    ca: trustme.CA, tmp_path: Path, running: list[TransportManager]
) -> None:
    # RFC 5922 §7.7 (virtual SIP servers): one IP and port, the certificate chosen by SNI.
    carrier = leaf_context(ca, tmp_path, uris=("sip:carrier.test",), dns=())
    secure = leaf_context(ca, tmp_path, uris=("sip:secure.test",), dns=())
    peer = Peer(carrier, by_name={"carrier.test": carrier, "secure.test": secure})
    client = Client(next_hops(ca))
    await serve(peer, client, running)
    for number, domain in enumerate(["carrier.test", "secure.test"] * 3, start=1):
        client.send(number, peer.port, domain)
        [(data, _)] = await peer.messages(1)
        assert data == sip_request(number)
    # Two connections, each kept for its domain: not opened and closed in turn.
    assert sorted(name or "" for name in peer.names) == ["carrier.test", "secure.test"]
    assert client.sink.errors.empty()
    assert client.manager.stats.tls_handshakes == 2


async def test_a_response_finds_a_next_hops_connection_of_its_own(
    ca: trustme.CA, tmp_path: Path, running: list[TransportManager]
) -> None:
    # A request the next hop sends back on the connection opened for secure.test (not the one
    # in the peer's (IP, port) entry, opened for carrier.test) is answered on that connection.
    carrier = leaf_context(ca, tmp_path, uris=("sip:carrier.test",), dns=())
    secure = leaf_context(ca, tmp_path, uris=("sip:secure.test",), dns=())
    peer = Peer(carrier, by_name={"carrier.test": carrier, "secure.test": secure})
    client = Client(next_hops(ca))
    await serve(peer, client, running)
    client.send(1, peer.port, "carrier.test")
    client.send(2, peer.port, "secure.test")
    sources = dict(await peer.messages(2))
    peer.manager.send(sip_request(9), sources[sip_request(2)])
    data, source, _ = await client.sink.message()
    assert data == sip_request(9)
    assert source == Address("TLS", HOST, peer.port, "secure.test")
    assert client.manager.has_connection(source)
    client.manager.send(sip_request(10), source)  # the answer's way back
    assert await peer.messages(1) == [(sip_request(10), sources[sip_request(2)])]


# ---------------------------------------------------------------------------- [tls] -> the policy


def test_next_hops_are_verified_against_ca_file_with_verify_members(ca: trustme.CA, tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    settings = build_tls_settings(load_config_text(f'[tls]\nca-file = "{ca_file}"\n'))
    assert settings.next_hops is not None
    context = settings.next_hops.context()
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is False  # the SIP domain is checked by sipha (§7.2), not OpenSSL
    assert context.cert_store_stats()["x509_ca"] == 1  # ca-file, and nothing else
    assert build_tls_settings(load_config_text("[tls]\nverify-members = false\n")).next_hops is None


def test_without_ca_file_the_system_store_is_read_at_the_first_use() -> None:
    settings = build_tls_settings(load_config_text(""))
    assert settings.next_hops is not None
    assert settings.next_hops._context.cert_store_stats()["x509_ca"] == 0  # not at start or reload
    system = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    system.load_default_certs(ssl.Purpose.SERVER_AUTH)
    context = settings.next_hops.context()
    assert context.cert_store_stats() == system.cert_store_stats()
    assert settings.next_hops.context() is context


async def test_the_configured_context_verifies_a_next_hop_end_to_end(
    ca: trustme.CA, tmp_path: Path, running: list[TransportManager]
) -> None:
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    verifying = build_tls_settings(load_config_text(f'[tls]\nca-file = "{ca_file}"\n')).next_hops
    good = Peer(leaf_context(ca, tmp_path, uris=(), dns=("carrier.test",)))
    client = Client(verifying)
    await serve(good, client, running)
    client.send(1, good.port, "carrier.test")
    assert [data for data, _ in await good.messages(1)] == [sip_request(1)]
    client.send(2, good.port, "sip.carrier.test")  # a name the certificate does not carry
    destination, _ = await client.sink.error()
    assert destination.domain == "sip.carrier.test"
