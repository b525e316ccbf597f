"""The byte-level test for a new INVITE (sipha.proxy.overload), against the parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipha.proxy.overload import is_new_invite
from sipha.sip import Request, SipParseError, parse_message
from tests.proxy.support import invite


def test_a_new_invite_is_recognised() -> None:
    assert is_new_invite(invite())


@pytest.mark.parametrize(
    "data",
    [
        invite(to_tag="srv1"),  # a re-INVITE
        invite(method="BYE", to_tag="srv1", body=b""),
        invite(method="OPTIONS", body=b""),
        invite().replace(b"To: <sip:service@127.0.0.1>", b"t: <sip:service@127.0.0.1> ; TAG = x"),
        invite().replace(b"To: <sip:service@127.0.0.1>", b"TO :<sip:service@127.0.0.1>;tag=x"),
        # Folded over two lines (§7.3.1): unsure, left to the parser.
        invite().replace(b"To: <sip:service@127.0.0.1>", b"To: <sip:service@127.0.0.1>\r\n ;tag=x"),
        invite().replace(b"To: <sip:service@127.0.0.1>\r\n", b""),  # no To: the parser answers 400
        b"SIP/2.0 200 OK\r\n\r\n",
        b"",
    ],
)
def test_anything_else_is_not(data: bytes) -> None:
    assert not is_new_invite(data)


def test_compact_form_and_case() -> None:
    assert is_new_invite(invite().replace(b"To: <sip:service@127.0.0.1>", b"t:<sip:service@127.0.0.1>"))
    assert is_new_invite(invite().replace(b"To: ", b"tO  : "))


@given(tag=st.sampled_from(["", "a1", "x-y.z"]), name=st.sampled_from(["To", "t", "TO", "to"]))
def test_never_a_dialog_request_taken_for_a_new_one(tag: str, name: str) -> None:
    """What the byte test drops, the parser reads as an INVITE without a To tag."""
    data = invite(to_tag=tag).replace(b"\r\nTo: ", f"\r\n{name}: ".encode())
    try:
        message = parse_message(data)
    except SipParseError:
        return
    assert isinstance(message, Request)
    assert is_new_invite(data) == (message.method == "INVITE" and message.to.tag is None)
