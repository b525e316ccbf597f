"""The /status "tls" block of a running instance (read by the admin surface through the app)."""

from __future__ import annotations

import datetime
from typing import Any

from sipha.net.manager import TransportManager
from sipha.sip.address import Address
from sipha.tlsconfig import CertificateStatus


def uses_tls(transports: TransportManager, listen: list[Address]) -> bool:
    """Whether this instance listens on TLS or monitors a TLS member."""
    settings = transports.tls
    listens = any(address.transport == "TLS" for address in listen)
    return listens or bool(settings is not None and settings.member_names)


def tls_block(
    transports: TransportManager, listen: list[Address], certificate: CertificateStatus | None
) -> dict[str, Any] | None:
    """Connections, handshakes by outcome, our certificate's dates; None when TLS is not used."""
    if not uses_tls(transports, listen):
        return None
    block: dict[str, Any] = {
        "connections_open": transports.stats.tls_connections_open,
        "handshakes": dict(transports.tls_outcomes),
        "certificate": None,
    }
    if certificate is not None:
        left = certificate.not_after - datetime.datetime.now(datetime.UTC)
        summary = certificate.summary()
        summary["days_left"] = left.days  # as of now, not as of the start
        summary["not_after_timestamp"] = certificate.not_after.timestamp()
        block["certificate"] = summary
    return block
