"""Which worker handles a datagram (sipha.proxy.affinity): tagged responses, then Call-ID."""

from __future__ import annotations

import zlib

from hypothesis import given
from hypothesis import strategies as st

from sipha.proxy.affinity import owner, worker_tag

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@example.com>\r\n"
    b"From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def response(top_branch: str, *, call_id: bytes = b"a84b4c76e66710@pc33.example.com") -> bytes:
    return (
        b"SIP/2.0 180 Ringing\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=" + top_branch.encode() + b";rport=5060\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds.w1\r\n"
        b"Call-ID: " + call_id + b"\r\n"
        b"CSeq: 314159 INVITE\r\n\r\n"
    )


def by_call_id(call_id: bytes, workers: int) -> int:
    return zlib.crc32(call_id) % workers


def test_request_goes_by_call_id() -> None:
    assert owner(INVITE, 4) == by_call_id(b"a84b4c76e66710@pc33.example.com", 4)


def test_call_id_compact_form_and_any_case() -> None:
    """RFC 3261 §7.3.1 names are case-insensitive, §7.3.3 ``i`` is Call-ID: the same worker."""
    expected = owner(INVITE, 7)
    for spelling in (b"i:a84b4c76e66710@pc33.example.com", b"CALL-ID :  a84b4c76e66710@pc33.example.com"):
        message = INVITE.replace(b"Call-ID: a84b4c76e66710@pc33.example.com", spelling)
        assert owner(message, 7) == expected


def test_every_message_of_a_call_meets_the_same_worker() -> None:
    """CANCEL and ACK carry the INVITE's Call-ID (§9.1, §17.1.1.3): they are not split up."""
    cancel = INVITE.replace(b"INVITE sip", b"CANCEL sip").replace(b"314159 INVITE", b"314159 CANCEL")
    ack = INVITE.replace(b"INVITE sip", b"ACK sip").replace(b"314159 INVITE", b"314159 ACK")
    assert owner(cancel, 5) == owner(ack, 5) == owner(INVITE, 5)


def test_response_goes_to_the_worker_tagged_in_its_top_via() -> None:
    for index in range(3):
        assert owner(response(f"z9hG4bKabc.0{worker_tag(index)}"), 3) == index
    assert owner(response(f"z9hG4bKtoken.probe{worker_tag(2)}"), 3) == 2


def test_only_the_top_via_counts() -> None:
    """The second Via's tag (another proxy's) is not ours: by Call-ID."""
    message = response("z9hG4bKabc.0")
    assert owner(message, 2) == by_call_id(b"a84b4c76e66710@pc33.example.com", 2)


def test_top_via_of_several_in_one_line() -> None:
    message = (
        b"SIP/2.0 200 OK\r\n"
        b"v: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx.0.w0, SIP/2.0/UDP h;branch=z9hG4bKy.w1\r\n"
        b"i: c\r\n\r\n"
    )
    assert owner(message, 2) == 0


def test_a_tag_beyond_the_worker_count_falls_back_to_call_id() -> None:
    """After a restart with fewer workers, an old tag names no worker."""
    assert owner(response("z9hG4bKabc.0.w9"), 2) == by_call_id(b"a84b4c76e66710@pc33.example.com", 2)


def test_a_tag_must_end_the_branch() -> None:
    assert owner(response("z9hG4bKabc.w1x"), 2) == by_call_id(b"a84b4c76e66710@pc33.example.com", 2)


def test_call_id_in_the_body_is_not_read() -> None:
    message = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 12\r\n\r\n\r\nCall-ID: x\r\n"
    assert owner(message, 2) is None


def test_no_call_id_stays_where_it_landed() -> None:
    assert owner(b"garbage", 2) is None
    assert owner(b"", 2) is None


@given(st.binary(max_size=600), st.integers(min_value=1, max_value=64))
def test_any_bytes_give_a_worker_or_none(data: bytes, workers: int) -> None:
    result = owner(data, workers)
    assert result is None or 0 <= result < workers


@given(st.from_regex(rb"\A[!-~]{1,40}\Z"), st.integers(min_value=2, max_value=16))
def test_call_id_decides_for_any_value(call_id: bytes, workers: int) -> None:
    message = INVITE.replace(b"a84b4c76e66710@pc33.example.com", call_id)
    assert owner(message, workers) == by_call_id(call_id, workers)
