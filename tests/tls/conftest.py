"""Fixtures of the TLS tests: the certificates, and the ``tls`` marker (registered here).

``pki``: one trustme CA and its PEM files for the whole session
(tests/tls/support.py :class:`~tests.tls.support.Pki`): sipha's certificate
(``sipha.test``), the members' (``sip1.test``, ``sip2.test``), the edge's, a client
certificate, and the bad ones (wrong host, expired, unknown CA).
"""

from __future__ import annotations

import pytest

from tests.tls.support import Pki, write_pki


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "tls: TLS peers on loopback (Kamailio with its tls module, openssl, baresip, SIPp)"
    )


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The session's CA and certificates as PEM files (see :func:`tests.tls.support.write_pki`);
    skips when trustme is not installed."""
    pytest.importorskip("trustme", reason="trustme is not installed (pip install 'trustme>=1.1')")
    return write_pki(tmp_path_factory.mktemp("pki"))
