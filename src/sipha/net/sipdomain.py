"""SIP domain identities in a certificate (RFC 5922 §7.1) and their comparison (§7.2).

A TLS next hop that sipha located by DNS (RFC 3263) from a SIP domain must prove
that domain, not the SRV target's host name nor its IP (RFC 5922 §4; docs/design.md
§3 rule 3).  OpenSSL's host name check cannot do it: it ignores subjectAltName URIs
and matches wildcards, which §7.2 forbids for SIP domains.  So the chain is verified
by OpenSSL against the trust anchors, and the identity here, on the certificate as
``ssl.SSLObject.getpeercert()`` decodes it.  No I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def _dns_name(text: str) -> str:
    """A DNS name as compared (RFC 4343: case-insensitive; the root's final dot dropped)."""
    return text.strip().lower().removesuffix(".")


def _uri_domain(uri: str) -> str | None:
    """The host part of a ``sip:`` URI without user part, else None (RFC 5922 §7.1).

    §7.1: "If the scheme of the URI is not "sip", then the implementation MUST NOT
    accept the value as an identity"; "If the scheme of the URI value is "sip", and
    the URI value that contains a userpart (there is an '@'), the implementation MUST
    NOT accept the value as an identity"; otherwise "the implementation MUST accept
    the hostpart as a SIP domain identity".  §7.2: "Implementations MUST compare only
    the DNS name component of each SIP domain identifier": port and parameters go.
    """
    scheme, colon, rest = uri.strip().partition(":")
    if not colon or scheme.lower() != "sip" or "@" in rest:
        return None
    host = rest.split(";", 1)[0].split("?", 1)[0]
    if host.startswith("["):  # an IPv6 reference is no domain
        return None
    host = host.split(":", 1)[0]
    return _dns_name(host) or None


def _pairs(value: object) -> Iterable[tuple[str, str]]:
    """The (type, value) pairs of a decoded subjectAltName (anything else is skipped)."""
    if isinstance(value, tuple | list):
        for item in value:
            if isinstance(item, tuple | list) and len(item) == 2:  # noqa: PLR2004 - (type, value)
                yield str(item[0]), str(item[1])


def _common_names(subject: object) -> list[str]:
    """The commonName values of a decoded subject (a tuple of RDNs of (key, value) pairs)."""
    names: list[str] = []
    if isinstance(subject, tuple | list):
        for rdn in subject:
            names += [value for key, value in _pairs(rdn) if key == "commonName"]
    return names


def sip_domain_identities(certificate: Mapping[str, object]) -> list[str]:
    """The SIP domain identities of a certificate, per RFC 5922 §7.1, normalised for §7.2.

    ``certificate`` is the peer's certificate decoded by ``getpeercert()``.  The
    ``sip:`` URIs of the subjectAltName; only when there is none, its DNS names
    ("An implementation MUST accept a domain name system (DNS) name as a SIP domain
    identity if and only if no other identity is found that matches the "sip" URI
    type"); only when the certificate has no subjectAltName at all, the subject's
    commonName ("If and only if the subjectAltName does not appear in the
    certificate, the implementation MAY examine the CN field").
    """
    alternative = certificate.get("subjectAltName")
    if alternative is None:
        return [name for name in map(_dns_name, _common_names(certificate.get("subject"))) if name]
    pairs = list(_pairs(alternative))
    uris = [domain for kind, value in pairs if kind == "URI" and (domain := _uri_domain(value))]
    if uris:
        return uris
    return [name for kind, value in pairs if kind == "DNS" and (name := _dns_name(value))]


def names_sip_domain(certificate: Mapping[str, object] | None, domain: str) -> bool:
    """Whether ``certificate`` (decoded, verified) carries the SIP domain ``domain`` (RFC 5922 §7.2).

    The values are compared "in their entirety": "Implementations MUST NOT match
    suffixes" and "MUST NOT match any form of wildcard, such as a leading "." or "*."
    with any other DNS label or sequence of labels" (``*.example.com`` names only
    ``*.example.com``).  None or an empty dict (no certificate, or one not verified)
    names nothing.
    """
    if not certificate:
        return False
    wanted = _dns_name(domain)
    return bool(wanted) and wanted in sip_domain_identities(certificate)
