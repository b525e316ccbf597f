"""Unit tests of sipha.sip.uri: SIP, SIPS, tel and other URIs (RFC 3261 §19.1, §25.1)."""

from __future__ import annotations

import pytest

from sipha.sip import AbsoluteUri, SipParseError, SipUri, TelUri, parse_uri
from sipha.sip.uri import split_hostport

# ---------------------------------------------------------------------------- SIP / SIPS: the parts


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("sip:example.com", ("sip", None, None, "example.com", None)),
        ("sips:example.com", ("sips", None, None, "example.com", None)),
        ("SIP:Example.COM", ("sip", None, None, "Example.COM", None)),
        ("sIpS:host", ("sips", None, None, "host", None)),
        ("sip:alice@atlanta.com", ("sip", "alice", None, "atlanta.com", None)),
        (
            "sip:alice:secretword@atlanta.com;transport=tcp",
            ("sip", "alice", "secretword", "atlanta.com", None),
        ),
        ("sip:alice:@atlanta.com", ("sip", "alice", "", "atlanta.com", None)),
        (
            "sips:alice@atlanta.com?subject=project%20x&priority=urgent",
            ("sips", "alice", None, "atlanta.com", None),
        ),
        (
            "sip:+1-212-555-1212:1234@gateway.com;user=phone",
            ("sip", "+1-212-555-1212", "1234", "gateway.com", None),
        ),
        ("sips:1212@gateway.com", ("sips", "1212", None, "gateway.com", None)),
        ("sip:alice@192.0.2.4", ("sip", "alice", None, "192.0.2.4", None)),
        ("sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com", ("sip", None, None, "atlanta.com", None)),
        ("sip:alice;day=tuesday@atlanta.com", ("sip", "alice;day=tuesday", None, "atlanta.com", None)),
        (
            "sip:user;par=u%40example.net@example.com",
            ("sip", "user;par=u%40example.net", None, "example.com", None),
        ),
        ("sip:alice@atlanta.com:5060", ("sip", "alice", None, "atlanta.com", 5060)),
        ("sip:host:0", ("sip", None, None, "host", 0)),
        ("sip:host:65535", ("sip", None, None, "host", 65535)),
        ("sip:host:00005", ("sip", None, None, "host", 5)),
        ("sip:host.example.com.", ("sip", None, None, "host.example.com.", None)),
        ("sip:1-800-flowers.com", ("sip", None, None, "1-800-flowers.com", None)),
        ("sip:a", ("sip", None, None, "a", None)),
        ("sip:under_score.example", ("sip", None, None, "under_score.example", None)),
        ("sip:[::1]", ("sip", None, None, "[::1]", None)),
        ("sip:[::1]:5060", ("sip", None, None, "[::1]", 5060)),
        ("sip:bob@[2001:db8::10]:5070", ("sip", "bob", None, "[2001:db8::10]", 5070)),
        ("sip:[::ffff:192.0.2.1]", ("sip", None, None, "[::ffff:192.0.2.1]", None)),
        ("sip:a?b@host", ("sip", "a?b", None, "host", None)),
        ("sip:-_.!~*'()&=+$,;?/@host", ("sip", "-_.!~*'()&=+$,;?/", None, "host", None)),
        ("sip:u:-_.!~*'()&=+$,%41@host", ("sip", "u", "-_.!~*'()&=+$,%41", "host", None)),
    ],
)
def test_sip_uri_parts(text: str, parts: tuple[str, str | None, str | None, str, int | None]) -> None:
    """``parts`` is (scheme, user, password, host, port)."""
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == parts
    assert str(uri) == text
    assert repr(uri) == f"SipUri({text!r})"


@pytest.mark.parametrize(
    ("text", "params"),
    [
        ("sip:host", {}),
        ("sip:host;lr", {"lr": None}),
        ("sip:host;LR", {"lr": None}),
        ("sip:host;transport=TCP;lr", {"transport": "TCP", "lr": None}),
        ("sip:host;Maddr=239.255.255.1;ttl=15", {"maddr": "239.255.255.1", "ttl": "15"}),
        ("sip:host;maddr=[::1]", {"maddr": "[::1]"}),
        ("sip:host;x=a/b:c&d+e$f", {"x": "a/b:c&d+e$f"}),
        ("sip:host;%41=%42", {"%41": "%42"}),
        ("sip:host:5060;user=phone;method=INVITE", {"user": "phone", "method": "INVITE"}),
        ("sip:host;a=1;a=2", {"a": "2"}),
    ],
)
def test_sip_uri_params(text: str, params: dict[str, str | None]) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    assert uri.params == params
    assert uri.headers == ""


@pytest.mark.parametrize(
    ("text", "headers"),
    [
        ("sip:host?subject=project%20x&priority=urgent", "subject=project%20x&priority=urgent"),
        ("sip:host;lr?h=v", "h=v"),
        ("sip:a@host:5060;p=1?to=alice%40atlanta.com", "to=alice%40atlanta.com"),
        ("sip:host?a=[b]/c?:d+e$", "a=[b]/c?:d+e$"),
    ],
)
def test_sip_uri_headers(text: str, headers: str) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    assert uri.headers == headers
    assert str(uri) == text


def test_params_and_headers_are_split_correctly() -> None:
    uri = parse_uri("sip:alice@host:5080;transport=udp;lr?subject=hi")
    assert isinstance(uri, SipUri)
    assert uri.port == 5080
    assert uri.params == {"transport": "udp", "lr": None}
    assert uri.headers == "subject=hi"


# ---------------------------------------------------------------------------- escapes


@pytest.mark.parametrize(
    ("text", "unescaped"),
    [
        ("sip:alice@host", "alice"),
        ("sip:%61lice@host", "alice"),
        ("sip:%61%6C%69%63%65@host", "alice"),
        ("sip:sips%3Auser%40example.com@example.net", "sips:user@example.com"),
        ("sip:%00@host", "\x00"),
        ("sip:%ff@host", "\udcff"),
        ("sip:host", None),
    ],
)
def test_user_unescaped(text: str, unescaped: str | None) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    assert uri.user_unescaped == unescaped


def test_user_unescaped_keeps_raw_user() -> None:
    uri = parse_uri("sip:%61lice@host")
    assert isinstance(uri, SipUri)
    assert uri.user == "%61lice"
    assert str(uri) == "sip:%61lice@host"


# ---------------------------------------------------------------------------- bad SIP URIs


@pytest.mark.parametrize(
    "text",
    [
        # not a URI at all
        "",
        ":",
        "host",
        ":host",
        "1sip:host",
        "s p:host",
        "si_p:host",
        # user / password
        "sip:@host",
        "sip:al ice@host",
        "sip:al<ice@host",
        "sip:alice%4@host",
        "sip:alice%zz@host",
        "sip:alice:pass word@host",
        "sip:alice:p;w@host",
        "sip:alice:p?w@host",
        "sip:alice:p%g0@host",
        "sip:alice@@host",
        # host
        "sip:",
        "sip:alice@",
        "sip:-host",
        "sip:host-",
        "sip:ho st",
        "sip:host name.com",
        "sip:ho<st",
        "sip:<host>",
        "sip:host>",
        "sip:ho\tst",
        "sip:exa%41mple.com",
        "sip:host/path",
        "sip: host",
        "sip:host ",
        # ports
        "sip:host:",
        "sip:host:-1",
        "sip:host:+5060",
        "sip:host:65536",
        "sip:host:99999",
        "sip:host:100000",
        "sip:host:000065535",
        "sip:host:50 60",
        "sip:host:5060a",
        "sip:host:0x10",
        "sip:host:5060:5060",
        "sip:host:1e3",
        "sip:host: 5060",
        # IPv6 references
        "sip:[::1",
        "sip:[]",
        "sip:[]:5060",
        "sip:[::g]",
        "sip:[::1]x",
        "sip:[::1]5060",
        "sip:[::1]:",
        "sip:[::1]:65536",
        "sip:[::1]:port",
        "sip:[ ::1]",
        "sip:::1",
        "sip:[[::1]]",
        # parameters
        "sip:host;;lr",
        "sip:host;lr;",
        "sip:host;=udp",
        "sip:host;transport=",
        "sip:host;transport=u dp",
        "sip:host;transport=udp tcp",
        "sip:host ;lr",
        "sip:host;lr ",
        "sip:host;a=b=c",
        "sip:host;a=<b>",
        'sip:host;a="b"',
        "sip:host;a=%4",
        # headers
        "sip:host?a b=c",
        "sip:host?a=<c>",
        "sip:host?a=%zz",
        'sip:host?a="c"',
        "sip:host?a=b;c",
        # angle brackets and white space around or inside (RFC 4475 §3.1.2.7, §3.1.2.8)
        "<sip:host>",
        "sip:user@example.com>",
        "sip:user@example.com; lr",
        "sip:user name@example.com",
        "sip:user@example.com\r\n",
    ],
)
def test_bad_sip_uris(text: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_uri(text)
    assert caught.value.status == 400
    assert caught.value.message is None


def test_error_detail_names_the_uri() -> None:
    with pytest.raises(SipParseError, match="65536"):
        parse_uri("sip:host:65536")
    with pytest.raises(SipParseError, match="bad host"):
        parse_uri("sip:-host")
    with pytest.raises(SipParseError, match="IPv6"):
        parse_uri("sip:[::1")


def test_long_bad_uri_is_truncated_in_detail() -> None:
    text = "sip:" + "a" * 200 + " "
    with pytest.raises(SipParseError) as caught:
        parse_uri(text)
    assert len(caught.value.detail) < 150


def test_superscript_digit_port_raises_sip_parse_error() -> None:
    with pytest.raises(SipParseError):
        parse_uri("sip:host:\u00b2")


@pytest.mark.parametrize("port", ["\u0661\u0662", "\uff15\uff10\uff16\uff10"])
def test_non_ascii_digit_port_is_refused(port: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(f"sip:host:{port}")


@pytest.mark.parametrize("text", ["sip:bob@host?", "sip:bob@host?subject", "sip:bob@host?=x"])
def test_malformed_uri_headers_are_refused(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


def test_trailing_semicolon_is_refused() -> None:
    with pytest.raises(SipParseError):
        parse_uri("sip:bob@host;")


# ---------------------------------------------------------------------------- properties


@pytest.mark.parametrize(
    ("text", "transport", "lr", "maddr"),
    [
        ("sip:host", None, False, None),
        ("sip:host;transport=TCP", "tcp", False, None),
        ("sip:host;transport=tls;lr", "tls", True, None),
        ("sip:host;lr=on", None, True, None),
        ("sip:host;LR", None, True, None),
        ("sip:host;maddr=224.2.0.1", None, False, "224.2.0.1"),
        ("sip:host;MADDR=Example.com;transport=UDP", "udp", False, "Example.com"),
        ("sip:host;transport", None, False, None),
    ],
)
def test_param_properties(text: str, transport: str | None, lr: bool, maddr: str | None) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    assert uri.transport == transport
    assert uri.lr is lr
    assert uri.maddr == maddr


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("sip:Example.COM", "example.com"),
        ("sip:[2001:DB8::1]:5060", "2001:db8::1"),
        ("sip:u@192.0.2.1", "192.0.2.1"),
    ],
)
def test_host_key(text: str, key: str) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    assert uri.host_key == key


# ---------------------------------------------------------------------------- equality and hashing


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("sip:alice@atlanta.com", "sip:alice@atlanta.com"),
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
        ("SIP:carol@chicago.com", "sip:carol@chicago.com"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;newparam=5"),
        ("sip:alice@atlanta.com?subject=x", "sip:alice@atlanta.com"),
        ("sip:[2001:db8::1]:5060", "sip:[2001:DB8::1]:5060"),
        ("sip:host;transport=udp", "sip:HOST;TRANSPORT=UDP"),
    ],
)
def test_equal_uris(left: str, right: str) -> None:
    a = parse_uri(left)
    b = parse_uri(right)
    assert a == b
    assert b == a
    assert hash(a) == hash(b)
    assert len({a, b}) == 1


@pytest.mark.parametrize(
    ("left", "right"),
    [
        # RFC 3261 §19.1.4 examples of non-equivalent URIs
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
        ("sip:carol@chicago.com", "sips:carol@chicago.com"),
        ("sip:alice@host", "sip:bob@host"),
        ("sip:alice@host", "sip:host"),
        ("sip:host;transport=tcp", "sip:host;transport=udp"),
        ("sip:host:5060", "sip:host:5061"),
        ("sip:a.example", "sip:b.example"),
    ],
)
def test_different_uris(left: str, right: str) -> None:
    assert parse_uri(left) != parse_uri(right)


def test_sip_uri_compared_with_other_types() -> None:
    uri = parse_uri("sip:host")
    assert uri != "sip:host"
    assert uri != parse_uri("tel:+1234")
    assert uri != parse_uri("http://host")
    assert uri.__eq__("sip:host") is NotImplemented
    assert uri.__eq__(42) is NotImplemented


def test_uris_as_dict_keys() -> None:
    table = {parse_uri("sip:alice@host"): 1}
    assert table[parse_uri("sip:%61lice@HOST")] == 1
    assert parse_uri("sip:alice@host:5060") not in table


def test_password_is_part_of_equality() -> None:
    assert parse_uri("sip:alice:one@host") != parse_uri("sip:alice:two@host")


def test_escaped_reserved_character_is_not_equivalent() -> None:
    assert parse_uri("sip:a;b@host") != parse_uri("sip:a%3Bb@host")


# ---------------------------------------------------------------------------- building


def test_with_hostport_keeps_everything_else() -> None:
    uri = parse_uri("sips:alice:pw@old.example:5061;transport=tls;lr?subject=hi")
    assert isinstance(uri, SipUri)
    moved = uri.with_hostport("new.example", 5070)
    assert str(moved) == "sips:alice:pw@new.example:5070;transport=tls;lr?subject=hi"
    assert moved.host == "new.example"
    assert moved.port == 5070
    assert (moved.user, moved.password) == ("alice", "pw")
    assert moved.params == {"transport": "tls", "lr": None}
    assert moved.params is not uri.params
    assert moved.headers == "subject=hi"
    # the original is untouched
    assert str(uri) == "sips:alice:pw@old.example:5061;transport=tls;lr?subject=hi"
    assert uri.host == "old.example"


@pytest.mark.parametrize(
    ("text", "host", "port", "expected"),
    [
        ("sip:alice@old:5060", "10.0.0.1", None, "sip:alice@10.0.0.1"),
        ("sip:old", "[::1]", 5060, "sip:[::1]:5060"),
        ("sip:old;lr", "new", None, "sip:new;lr"),
        ("sip:old;maddr=x;ttl=1", "new", 1, "sip:new:1;maddr=x;ttl=1"),
    ],
)
def test_with_hostport_rendering(text: str, host: str, port: int | None, expected: str) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    moved = uri.with_hostport(host, port)
    assert str(moved) == expected
    # the rendering parses back to the same URI
    assert parse_uri(str(moved)) == moved


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, "sip:host"),
        ({"user": "bob"}, "sip:bob@host"),
        ({"user": "bob", "password": "pw"}, "sip:bob:pw@host"),
        ({"password": "ignored-without-user"}, "sip:host"),
        ({"port": 5060}, "sip:host:5060"),
        ({"params": {"lr": None, "transport": "tcp"}}, "sip:host;lr;transport=tcp"),
        ({"headers": "a=b"}, "sip:host?a=b"),
        ({"raw": "SIP:HOST"}, "SIP:HOST"),
    ],
)
def test_sip_uri_constructor_renders(kwargs: dict[str, object], expected: str) -> None:
    uri = SipUri("sip", "host", **kwargs)  # type: ignore[arg-type]
    assert str(uri) == expected


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@atlanta.com",
        "SIP:Alice@AtLanTa.CoM:5060;Transport=UDP;lr?Subject=Hi",
        "sips:a:b@[::1]:1;maddr=x",
        "tel:+1-201-555-0123;phone-context=example.com",
        "mailto:alice@example.com",
        "urn:service:sos",
    ],
)
def test_str_round_trip(text: str) -> None:
    uri = parse_uri(text)
    assert str(uri) == text
    assert str(parse_uri(str(uri))) == text


# ---------------------------------------------------------------------------- tel


@pytest.mark.parametrize(
    ("text", "number", "params"),
    [
        ("tel:+1-201-555-0123", "+1-201-555-0123", {}),
        ("TEL:+358-555-1234567;postd=pp22", "+358-555-1234567", {"postd": "pp22"}),
        ("tel:7042;phone-context=example.com", "7042", {"phone-context": "example.com"}),
        ("tel:863-1234;phone-context=+1-914-555", "863-1234", {"phone-context": "+1-914-555"}),
        ("tel:*67#", "*67#", {}),
        ("tel:+1(201)555.0123", "+1(201)555.0123", {}),
        ("tel:+1234;ISUB=1;ext=22", "+1234", {"isub": "1", "ext": "22"}),
        ("tel:+1234;flag", "+1234", {"flag": None}),
    ],
)
def test_tel_uris(text: str, number: str, params: dict[str, str | None]) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, TelUri)
    assert uri.scheme == "tel"
    assert uri.number == number
    assert uri.params == params
    assert str(uri) == text
    assert repr(uri) == f"TelUri({text!r})"


@pytest.mark.parametrize(
    "text",
    [
        "tel:",
        "tel:;phone-context=x",
        "tel:+1 234",
        "tel:+1234 ",
        "tel:<+1234>",
        "tel:+12@34",
        "tel:+1234;=x",
        "tel:+1234;a=",
        'tel:"+1234"',
        "tel:+1234\t",
        "tel:+12/34",
    ],
)
def test_bad_tel_uris(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


# ---------------------------------------------------------------------------- other schemes


@pytest.mark.parametrize(
    ("text", "scheme", "opaque"),
    [
        ("mailto:alice@example.com", "mailto", "alice@example.com"),
        ("HTTP://www.example.com/path?q=1", "http", "//www.example.com/path?q=1"),
        ("urn:service:sos", "urn", "service:sos"),
        ("im:alice@example.com", "im", "alice@example.com"),
        ("x-custom+scheme.v1:opaque", "x-custom+scheme.v1", "opaque"),
    ],
)
def test_other_schemes(text: str, scheme: str, opaque: str) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, AbsoluteUri)
    assert uri.scheme == scheme
    assert uri.opaque == opaque
    assert str(uri) == text
    assert repr(uri) == f"AbsoluteUri({text!r})"


@pytest.mark.parametrize(
    "text",
    [
        "mailto:",
        "http://example.com/a b",
        "http://example.com/a\tb",
        "http://<example.com>",
        "http://example.com>",
        'urn:"quoted"',
        "im: alice@example.com",
    ],
)
def test_bad_other_scheme_uris(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


# ---------------------------------------------------------------------------- split_hostport


@pytest.mark.parametrize(
    ("hostport", "host", "port"),
    [
        ("host", "host", None),
        ("host:1", "host", 1),
        ("10.0.0.1:5060", "10.0.0.1", 5060),
        ("[::1]", "[::1]", None),
        ("[fe80::1]:5061", "[fe80::1]", 5061),
    ],
)
def test_split_hostport(hostport: str, host: str, port: int | None) -> None:
    assert split_hostport(hostport, what=hostport) == (host, port)


@pytest.mark.parametrize("hostport", ["", ":5060", "host:", "[::1", "[::1]:", "[::1]:x", "[x]", "a b"])
def test_split_hostport_bad(hostport: str) -> None:
    with pytest.raises(SipParseError):
        split_hostport(hostport, what="context")
