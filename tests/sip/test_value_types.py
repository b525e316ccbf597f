"""The value types of the hot path written as plain classes keep a frozen dataclass's behaviour.

``Address``, ``SendMessage`` and ``Forward`` were frozen dataclasses; they are plain classes so
that mypyc compiles their ``__init__``, ``__eq__`` and ``__hash__`` (a dataclass's are generated
at import and run interpreted).  What code and tests rely on stays: construction by position
and keyword, equality and hash by fields (dictionary keys), inequality with other types, repr.
(Not kept: ``__match_args__``; no code matches them by position.)
These tests run on the interpreted and on the compiled build (CI runs both).
"""

from __future__ import annotations

from sipha.ha import Member
from sipha.proxy.routing import Forward, Locate
from sipha.sip import parse_message
from sipha.sip.address import Address
from sipha.txn import SendMessage

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1\r\n"
    b"From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n"
    b"Call-ID: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


def test_address_equality_hash_and_repr_are_by_fields() -> None:
    address = Address("UDP", "192.0.2.1", 5060)
    same = Address(transport="UDP", host="192.0.2.1", port=5060, domain="")
    assert address == same
    assert not address != same  # noqa: SIM202 - __ne__ itself
    assert hash(address) == hash(same)
    assert {address: 1}[same] == 1
    assert address != Address("UDP", "192.0.2.1", 5061)
    assert address != Address("TLS", "192.0.2.1", 5060, "example.com")
    assert address != ("UDP", "192.0.2.1", 5060)
    assert not address == ("UDP", "192.0.2.1", 5060)  # noqa: SIM201 - __eq__ itself
    assert repr(address) == "Address(transport='UDP', host='192.0.2.1', port=5060, domain='')"
    assert Address("TLS", "h", 1, domain="example.com").domain == "example.com"


def test_send_message_equality_hash_and_repr_are_by_fields() -> None:
    message = parse_message(INVITE)
    destination = Address("UDP", "192.0.2.2", 5060)
    action = SendMessage(message, destination, None)
    assert action == SendMessage(message, Address("UDP", "192.0.2.2", 5060), None)
    assert action != SendMessage(message, Address("UDP", "192.0.2.3", 5060), None)
    assert action != SendMessage(parse_message(INVITE), destination, None)  # messages compare by identity
    assert hash(action) == hash(SendMessage(message, destination, None))
    assert repr(action).startswith("SendMessage(message=")
    assert repr(action).endswith(f"destination={destination!r}, key=None)")


def test_forward_equality_hash_and_repr_are_by_fields() -> None:
    destination = Address("UDP", "192.0.2.2", 5060)
    assert Forward(destination) == Forward(destination, pair=None, locate=None)
    assert Forward(destination, "pair") != Forward(destination)
    locate = Locate("example.com", None, None, secure=False)
    assert Forward(destination, locate=locate) == Forward(
        destination, None, Locate("example.com", None, None, False)
    )
    assert hash(Forward(destination, "pair")) == hash(Forward(destination, "pair"))
    assert Forward(destination) != destination
    assert not Forward(destination) == destination  # noqa: SIM201 - __eq__ itself
    assert (
        repr(Forward(destination, "pair"))
        == f"Forward(destination={destination!r}, pair='pair', locate=None)"
    )


def test_member_equality_hash_and_repr_are_by_fields() -> None:
    """ha.Member too: the pair monitor's and the core's dictionaries are keyed by members."""
    address = Address("UDP", "10.0.1.10", 5060)
    member = Member("site-a", "primary", address)
    same = Member(pair="site-a", role="primary", address=Address("UDP", "10.0.1.10", 5060))
    assert member == same
    assert not member != same  # noqa: SIM202 - __ne__ itself
    assert hash(member) == hash(same)
    assert {member: 1}[same] == 1
    assert member != Member("site-a", "backup", address)
    assert member != Member("site-b", "primary", address)
    assert member != Member("site-a", "primary", Address("UDP", "10.0.1.10", 5061))
    assert member != ("site-a", "primary", address)
    assert repr(member) == f"Member(pair='site-a', role='primary', address={address!r})"
