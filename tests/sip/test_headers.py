"""Unit tests of sipha.sip.headers and sipha.sip.grammar (RFC 3261 §20, §25)."""

from __future__ import annotations

import pytest

from sipha.sip import (
    CSeq,
    NameAddr,
    SipParseError,
    SipUri,
    TelUri,
    canonical_name,
    parse_name_addr,
    parse_via,
)
from sipha.sip.errors import (
    REASONS,
    MessageTooLarge,
    VersionNotSupported,
)
from sipha.sip.grammar import (
    MAX_CSEQ,
    is_token,
    parse_params,
    parse_uint,
    split_commas,
    split_semis,
    unquote,
)
from sipha.sip.headers import (
    COMPACT_FORMS,
    DISPLAY_NAMES,
    branch_via,
    display_name,
    parse_cseq,
    parse_tokens,
)

# ============================================================================ Via


@pytest.mark.parametrize(
    ("element", "protocol", "transport", "host", "port"),
    [
        ("SIP/2.0/UDP host", "SIP/2.0", "UDP", "host", None),
        ("SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds", "SIP/2.0", "UDP", "pc33.atlanta.com", None),
        ("SIP/2.0/TCP client.biloxi.example.com:5060", "SIP/2.0", "TCP", "client.biloxi.example.com", 5060),
        ("sip/2.0/udp host", "SIP/2.0", "UDP", "host", None),
        ("SIP/2.0/TLS 192.0.2.1:5061", "SIP/2.0", "TLS", "192.0.2.1", 5061),
        ("SIP/2.0/SCTP h", "SIP/2.0", "SCTP", "h", None),
        ("SIP/2.0/WS h", "SIP/2.0", "WS", "h", None),
        ("SIP/2.0/UNKNOWN h", "SIP/2.0", "UNKNOWN", "h", None),
        ("SIP/3.0/UDP h", "SIP/3.0", "UDP", "h", None),
        ("FOO/1/bar h", "FOO/1", "BAR", "h", None),
        # LWS around "/" (SLASH = SWS "/" SWS)
        ("SIP / 2.0 / UDP host", "SIP/2.0", "UDP", "host", None),
        ("SIP/ 2.0 /UDP host", "SIP/2.0", "UDP", "host", None),
        ("SIP\t/\t2.0\t/\tUDP\thost", "SIP/2.0", "UDP", "host", None),
        ("  SIP/2.0/UDP   host  ", "SIP/2.0", "UDP", "host", None),
        # LWS around ":" (COLON = SWS ":" SWS)
        ("SIP/2.0/UDP host : 5060", "SIP/2.0", "UDP", "host", 5060),
        ("SIP/2.0/UDP host:\t5060", "SIP/2.0", "UDP", "host", 5060),
        # IPv6 sent-by
        ("SIP/2.0/UDP [::1]", "SIP/2.0", "UDP", "[::1]", None),
        ("SIP/2.0/UDP [::1]:5060", "SIP/2.0", "UDP", "[::1]", 5060),
        ("SIP/2.0/TCP [2001:db8::9:1]:6050;branch=z9hG4bKas3-111", "SIP/2.0", "TCP", "[2001:db8::9:1]", 6050),
        ("SIP/2.0/UDP [2001:db8::1] : 5070", "SIP/2.0", "UDP", "[2001:db8::1]", 5070),
    ],
)
def test_via_sent_protocol_and_sent_by(
    element: str, protocol: str, transport: str, host: str, port: int | None
) -> None:
    via = parse_via(element)
    assert (via.protocol, via.transport, via.host, via.port) == (protocol, transport, host, port)


@pytest.mark.parametrize(
    ("element", "params"),
    [
        ("SIP/2.0/UDP h", {}),
        ("SIP/2.0/UDP h;branch=z9hG4bK1", {"branch": "z9hG4bK1"}),
        ("SIP/2.0/UDP h ; branch = z9hG4bK1", {"branch": "z9hG4bK1"}),
        ("SIP/2.0/UDP h;\tbranch\t=\tz9hG4bK1\t;\trport", {"branch": "z9hG4bK1", "rport": None}),
        ("SIP/2.0/UDP h:5060 ;rport;branch=z9hG4bKx", {"rport": None, "branch": "z9hG4bKx"}),
        ("SIP/2.0/UDP h;BRANCH=Z9hG4bKAbC", {"branch": "Z9hG4bKAbC"}),
        ("SIP/2.0/UDP h;received=192.0.2.1;rport=5061", {"received": "192.0.2.1", "rport": "5061"}),
        ("SIP/2.0/UDP h;received=2001:db8::1", {"received": "2001:db8::1"}),
        ("SIP/2.0/UDP h;received=[2001:db8::1]", {"received": "[2001:db8::1]"}),
        ("SIP/2.0/UDP h;maddr=224.0.0.1;ttl=16", {"maddr": "224.0.0.1", "ttl": "16"}),
        ('SIP/2.0/UDP h;x="quoted;value"', {"x": '"quoted;value"'}),
        ("SIP/2.0/UDP h;flag;other=1", {"flag": None, "other": "1"}),
    ],
)
def test_via_params(element: str, params: dict[str, str | None]) -> None:
    assert parse_via(element).params == params


@pytest.mark.parametrize(
    ("element", "rport"),
    [
        ("SIP/2.0/UDP h", None),
        ("SIP/2.0/UDP h;rport", ""),
        ("SIP/2.0/UDP h;RPORT", ""),
        ("SIP/2.0/UDP h;rport=5060", "5060"),
        ("SIP/2.0/UDP h;rport = 1", "1"),
    ],
)
def test_via_rport_flag_and_value(element: str, rport: str | None) -> None:
    assert parse_via(element).rport == rport


def test_via_accessors() -> None:
    via = parse_via("SIP/2.0/UDP Host.Example:5070;branch=z9hG4bKabc;received=10.0.0.1;maddr=m;ttl=5")
    assert via.branch == "z9hG4bKabc"
    assert via.received == "10.0.0.1"
    assert via.maddr == "m"
    assert via.ttl == 5
    assert via.sent_by == "Host.Example:5070"
    assert via.host_key == "host.example"
    assert repr(via) == (
        "Via(SIP/2.0/UDP Host.Example:5070 "
        "{'branch': 'z9hG4bKabc', 'received': '10.0.0.1', 'maddr': 'm', 'ttl': '5'})"
    )


def test_via_absent_accessors() -> None:
    via = parse_via("SIP/2.0/UDP [2001:DB8::1]")
    assert via.branch is None
    assert via.received is None
    assert via.maddr is None
    assert via.ttl is None
    assert via.rport is None
    assert via.sent_by == "[2001:DB8::1]"
    assert via.host_key == "2001:db8::1"


@pytest.mark.parametrize(("ttl", "value"), [("0", 0), ("1", 1), ("255", 255), ("007", 7)])
def test_via_ttl(ttl: str, value: int) -> None:
    assert parse_via(f"SIP/2.0/UDP h;ttl={ttl}").ttl == value


@pytest.mark.parametrize("ttl", ["256", "1000", "-1", "x", "1.5", "99999999999999999999"])
def test_via_ttl_out_of_range(ttl: str) -> None:
    via = parse_via(f"SIP/2.0/UDP h;ttl={ttl}")
    with pytest.raises(SipParseError, match="ttl"):
        _ = via.ttl


@pytest.mark.parametrize(
    "element",
    [
        "",
        "SIP/2.0",
        "SIP/2.0/UDP",
        "SIP/2.0/UDP ",
        "SIP/2.0 UDP host",
        "SIP/2.0/UDP/X host",
        "SIP//UDP host",
        "/2.0/UDP host",
        "SIP/2.0/ host",
        "SIP/2.0/U@P host",
        "S;P/2.0/UDP host",
        "SIP/2,0/UDP host",
        "SIP/2.0/UDP host:",
        "SIP/2.0/UDP host:99999",
        "SIP/2.0/UDP host:port",
        "SIP/2.0/UDP -host",
        "SIP/2.0/UDP ho<st",
        "SIP/2.0/UDP [::1",
        "SIP/2.0/UDP [::1]x",
        "SIP/2.0/UDP [zz::1]",
        "SIP/2.0/UDP host;",
        "SIP/2.0/UDP host;;branch=1",
        "SIP/2.0/UDP host;branch=",
        "SIP/2.0/UDP host;bra nch=1",
        "SIP/2.0/UDP host;branch=a b",
        "SIP/2.0/UDP host;branch=<a>",
        'SIP/2.0/UDP host;branch="open',
        'SIP/2.0/UDP host;branch="a"b',
        "SIP/2.0/UDP host;=1",
        "SIP/2.0/UDP h1, SIP/2.0/UDP h2",
    ],
)
def test_bad_vias(element: str) -> None:
    with pytest.raises(SipParseError):
        parse_via(element)


@pytest.mark.parametrize(
    "element",
    [
        "SIP/2.0/UDP 192.0.2.1 5060;branch=z9hG4bK1",  # parsed as host 192.0.2.15060
        "SIP/2.0/UDP exa mple.com;branch=z9hG4bK1",  # parsed as host example.com
        "SIP/2.0/UDP host:50 60;branch=z9hG4bK1",  # parsed as port 5060
    ],
)
def test_via_white_space_inside_sent_by_is_refused(element: str) -> None:
    with pytest.raises(SipParseError):
        parse_via(element)


# ============================================================================ name-addr / addr-spec


@pytest.mark.parametrize(
    ("element", "display", "uri_text", "params"),
    [
        ("<sip:alice@atlanta.com>", None, "sip:alice@atlanta.com", {}),
        ("  <sip:alice@atlanta.com>  ", None, "sip:alice@atlanta.com", {}),
        (
            '"Alice" <sip:alice@atlanta.com>;tag=1928301774',
            '"Alice"',
            "sip:alice@atlanta.com",
            {"tag": "1928301774"},
        ),
        ('"Alice"<sip:alice@atlanta.com>', '"Alice"', "sip:alice@atlanta.com", {}),
        ('""<sip:a@b>', '""', "sip:a@b", {}),
        ('"A \\"quoted\\" name" <sip:a@b>', '"A \\"quoted\\" name"', "sip:a@b", {}),
        ('"A <fake> name, with comma" <sip:a@b>', '"A <fake> name, with comma"', "sip:a@b", {}),
        ('"Alice"\t<sip:a@b>', '"Alice"', "sip:a@b", {}),
        ('"Alice" <sip:a@b> ; tag = 1', '"Alice"', "sip:a@b", {"tag": "1"}),
        ('"A;b" <sip:a@b>;p="q r"', '"A;b"', "sip:a@b", {"p": '"q r"'}),
        ("Bob <sip:bob@biloxi.com>", "Bob", "sip:bob@biloxi.com", {}),
        ("Bob Smith <sip:bob@biloxi.com>", "Bob Smith", "sip:bob@biloxi.com", {}),
        ("Bob\tSmith\t<sip:bob@biloxi.com>", "Bob\tSmith", "sip:bob@biloxi.com", {}),
        # RFC 4475 §3.1.1.6 lwsdisp: no LWS between display name and "<"
        ("caller<sip:caller@example.com>;tag=323", "caller", "sip:caller@example.com", {"tag": "323"}),
        (
            "Anonymous <sip:c8oqz84zk7z@privacy.org>;tag=hyh8",
            "Anonymous",
            "sip:c8oqz84zk7z@privacy.org",
            {"tag": "hyh8"},
        ),
        ("<sip:a@b;lr;transport=tcp>", None, "sip:a@b;lr;transport=tcp", {}),
        ("<sip:a@b?subject=x>;expires=60", None, "sip:a@b?subject=x", {"expires": "60"}),
        ("<sip:a@b> ; tag = x ; q=0.7", None, "sip:a@b", {"tag": "x", "q": "0.7"}),
        ('<sip:a@b>;+sip.instance="<urn:uuid:1>"', None, "sip:a@b", {"+sip.instance": '"<urn:uuid:1>"'}),
        ("<tel:+1234>", None, "tel:+1234", {}),
        # addr-spec form: ";" starts the header parameters
        ("sip:alice@atlanta.com", None, "sip:alice@atlanta.com", {}),
        ("sip:alice@atlanta.com;tag=88sja8x", None, "sip:alice@atlanta.com", {"tag": "88sja8x"}),
        ("sip:alice@atlanta.com ;tag=88sja8x", None, "sip:alice@atlanta.com", {"tag": "88sja8x"}),
        ("sip:alice@atlanta.com;lr", None, "sip:alice@atlanta.com", {"lr": None}),
        ("tel:+1-201-555-0123;tag=x", None, "tel:+1-201-555-0123", {"tag": "x"}),
        ("sip:a@[::1]:5060;tag=1", None, "sip:a@[::1]:5060", {"tag": "1"}),
    ],
)
def test_name_addr(element: str, display: str | None, uri_text: str, params: dict[str, str | None]) -> None:
    name_addr = parse_name_addr(element, what="From")
    assert name_addr.display == display
    assert name_addr.uri_text == uri_text
    assert name_addr.params == params


@pytest.mark.parametrize(
    ("element", "unquoted"),
    [
        ("<sip:a@b>", None),
        ('"Alice" <sip:a@b>', "Alice"),
        ('"" <sip:a@b>', ""),
        ('"A \\"quoted\\" name" <sip:a@b>', 'A "quoted" name'),
        ('"back\\\\slash" <sip:a@b>', "back\\slash"),
        ('"esc\\aped" <sip:a@b>', "escaped"),
        ("Bob Smith <sip:a@b>", "Bob Smith"),
    ],
)
def test_display_unquoted(element: str, unquoted: str | None) -> None:
    assert parse_name_addr(element, what="To").display_unquoted == unquoted


@pytest.mark.parametrize(
    "element",
    [
        "",
        "   ",
        '"unterminated <sip:a@b>',
        '"Alice" sip:a@b',
        '"Alice"',
        '"Alice" x <sip:a@b>',
        "<sip:a@b",
        "<>",
        "< sip:a@b>",
        "<sip:a@b >",
        "<sip:a @b>",
        "<sip:a\t@b>",
        "<sip:<a@b>",
        'Bad"Name <sip:a@b>',
        "Bad@Name <sip:a@b>",
        "Bad;Name <sip:a@b>",
        "<sip:a@b>junk",
        "<sip:a@b>;",
        "<sip:a@b>;tag=",
        "<sip:a@b>;t ag=1",
        '<sip:a@b>;tag="open',
        # addr-spec with characters that need <>
        "sip:a@b?subject=x",
        "sip:a@b,sip:c@d",
        "sip:a b@c",
        'sip:"a"@b',
        "sip:a@b>",
        ";tag=1",
        "sip:a@b;",
    ],
)
def test_bad_name_addrs(element: str) -> None:
    with pytest.raises(SipParseError):
        parse_name_addr(element, what="Contact")


def test_bad_name_addr_detail_names_header() -> None:
    with pytest.raises(SipParseError, match="Record-Route"):
        parse_name_addr("sip:a@b?x=y", what="Record-Route")
    with pytest.raises(SipParseError, match="unterminated"):
        parse_name_addr('"Alice <sip:a@b>', what="From")


def test_name_addr_uri_is_parsed_lazily_and_cached() -> None:
    name_addr = parse_name_addr("<sip:Bob@Biloxi.com:5060;transport=tcp>;tag=abc", what="To")
    assert name_addr._uri is None
    uri = name_addr.uri
    assert isinstance(uri, SipUri)
    assert name_addr.uri is uri
    assert name_addr.sip_uri is uri
    assert uri.port == 5060
    assert name_addr.tag == "abc"
    assert repr(name_addr) == "NameAddr(None, 'sip:Bob@Biloxi.com:5060;transport=tcp', {'tag': 'abc'})"


def test_name_addr_with_non_sip_uri() -> None:
    name_addr = parse_name_addr("<tel:+1234>", what="To")
    assert isinstance(name_addr.uri, TelUri)
    assert name_addr.sip_uri is None
    assert name_addr.tag is None


def test_name_addr_with_bad_uri_fails_on_access() -> None:
    name_addr = parse_name_addr("<not-a-uri>", what="To")
    with pytest.raises(SipParseError):
        _ = name_addr.uri


def test_name_addr_constructor() -> None:
    name_addr = NameAddr('"X"', "sip:x@y", {"tag": "t"})
    assert name_addr.display_unquoted == "X"
    assert name_addr.tag == "t"


# ============================================================================ CSeq


@pytest.mark.parametrize(
    ("value", "seq", "method"),
    [
        ("1 INVITE", 1, "INVITE"),
        ("4711 INVITE", 4711, "INVITE"),
        ("0 ACK", 0, "ACK"),
        ("  314159   BYE  ", 314159, "BYE"),
        ("1\tINVITE", 1, "INVITE"),
        ("1\t \tINVITE", 1, "INVITE"),
        ("1 \tREGISTER", 1, "REGISTER"),
        ("000000000000000000001 OPTIONS", 1, "OPTIONS"),
        (f"{MAX_CSEQ} NEWMETHOD", 2**31 - 1, "NEWMETHOD"),
        ("1 !interesting-Method0123456789_*+`.%'~", 1, "!interesting-Method0123456789_*+`.%'~"),
        ("1 invite", 1, "invite"),
    ],
)
def test_cseq(value: str, seq: int, method: str) -> None:
    cseq = parse_cseq(value)
    assert (cseq.seq, cseq.method) == (seq, method)
    assert str(cseq) == f"{seq} {method}"
    assert repr(cseq) == f"CSeq({seq}, {method!r})"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "1",
        "1 ",
        "INVITE",
        "INVITE 1",
        "-1 INVITE",
        "+1 INVITE",
        "1.0 INVITE",
        "x INVITE",
        "1 INV ITE",
        "1 INVITE extra",
        "1 IN<VITE",
        "1 INVITE;",
        "1 INV@ITE",
        "2147483648 INVITE",  # 2**31: RFC 3261 §8.1.1.5 "MUST be less than 2**31"
        "4294967296 INVITE",
        "9" * 200 + " INVITE",
        "1,INVITE",
    ],
)
def test_bad_cseq(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_cseq(value)


@pytest.mark.parametrize("number", ["\uff11", "\u0661", "\u00b2"])
def test_cseq_non_ascii_digits(number: str) -> None:
    with pytest.raises(SipParseError):
        parse_cseq(f"{number} INVITE")


def test_cseq_object() -> None:
    assert str(CSeq(7, "BYE")) == "7 BYE"


# ============================================================================ option tags


@pytest.mark.parametrize(
    ("value", "tags"),
    [
        ("100rel", ["100rel"]),
        ("100rel, timer", ["100rel", "timer"]),
        ("  a ,\tb,c  ", ["a", "b", "c"]),
        ("foo.bar-baz", ["foo.bar-baz"]),
    ],
)
def test_parse_tokens(value: str, tags: list[str]) -> None:
    assert parse_tokens(value, what="Require") == tags


@pytest.mark.parametrize("value", ["", ",", "a,", ",a", "a b", "a;b", "a,,b", '"a"', "a/b"])
def test_parse_tokens_bad(value: str) -> None:
    with pytest.raises(SipParseError, match="Proxy-Require"):
        parse_tokens(value, what="Proxy-Require")


# ============================================================================ names


@pytest.mark.parametrize(
    ("name", "spelled"),
    [
        ("via", "Via"),
        ("call-id", "Call-ID"),
        ("cseq", "CSeq"),
        ("www-authenticate", "WWW-Authenticate"),
        ("max-forwards", "Max-Forwards"),
        ("record-route", "Record-Route"),
        ("x-custom-header", "X-Custom-Header"),
        ("subject", "Subject"),
        ("p-asserted-identity", "P-Asserted-Identity"),
        ("x", "X"),
    ],
)
def test_display_name(name: str, spelled: str) -> None:
    assert display_name(name) == spelled


def test_display_names_are_spellings_of_their_keys() -> None:
    for name, spelled in DISPLAY_NAMES.items():
        assert spelled.lower() == name
        assert canonical_name(spelled) == name


@pytest.mark.parametrize(("compact", "full"), sorted(COMPACT_FORMS.items()))
def test_compact_forms(compact: str, full: str) -> None:
    assert canonical_name(compact) == full
    assert canonical_name(compact.upper()) == full
    assert canonical_name(compact + " ") == full
    assert canonical_name(full) == full


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("Via", "via"),
        ("VIA", "via"),
        ("Call-ID", "call-id"),
        ("CALL-ID", "call-id"),
        ("Content-Length \t", "content-length"),
        ("X-Unknown", "x-unknown"),
        ("Session-Expires", "session-expires"),
        ("NewFangledHeader", "newfangledheader"),
    ],
)
def test_canonical_name(raw: str, canonical: str) -> None:
    assert canonical_name(raw) == canonical


@pytest.mark.parametrize("raw", ["", " ", " Via", "Bad Name", "Bad@Name", "Via;", "Na\tme", "Ünicode"])
def test_canonical_name_refuses_non_tokens(raw: str) -> None:
    with pytest.raises(SipParseError, match="bad header name"):
        canonical_name(raw)


# ============================================================================ grammar helpers


@pytest.mark.parametrize(
    ("text", "expected"),
    [("abc", True), ("a-b.c!%*_+`'~", True), ("", False), ("a b", False), ("a:b", False), ("é", False)],
)
def test_is_token(text: str, expected: bool) -> None:
    assert is_token(text) is expected


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("a", ["a"]),
        ("a, b ,\tc", ["a", "b", "c"]),
        ("a,,b", ["a", "", "b"]),
        ('"x, y" <sip:a@b>, <sip:c@d>', ['"x, y" <sip:a@b>', "<sip:c@d>"]),
        ("<sip:a@b;x=1,2>, <sip:c@d>", ["<sip:a@b;x=1,2>", "<sip:c@d>"]),
        ('"a \\", b" <sip:a@b>', ['"a \\", b" <sip:a@b>']),
        ('<sip:a@b>;p="1,2", <sip:c@d>', ['<sip:a@b>;p="1,2"', "<sip:c@d>"]),
        ('"quoted"', ['"quoted"']),
        ("<sip:a@b>", ["<sip:a@b>"]),
    ],
)
def test_split_commas(value: str, parts: list[str]) -> None:
    assert split_commas(value) == parts


@pytest.mark.parametrize("value", ['"open, <sip:a@b>', "<sip:a@b, c", '<sip:a@b>, "x'])
def test_split_commas_bad(value: str) -> None:
    with pytest.raises(SipParseError):
        split_commas(value)


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("", [""]),
        (";a;b=1", ["", "a", "b=1"]),
        (';a="x;y";b', ["", 'a="x;y"', "b"]),
        (';a="\\";"', ["", 'a="\\";"']),
    ],
)
def test_split_semis(text: str, parts: list[str]) -> None:
    assert split_semis(text) == parts


def test_split_semis_unterminated_quote() -> None:
    with pytest.raises(SipParseError, match="unterminated"):
        split_semis(';a="x;y')


@pytest.mark.parametrize(
    ("text", "params"),
    [
        ("", {}),
        ("   ", {}),
        (";a", {"a": None}),
        (" ; A = B ", {"a": "B"}),
        (';q="x y"', {"q": '"x y"'}),
        (";received=[::1];maddr=::1", {"received": "[::1]", "maddr": "::1"}),
    ],
)
def test_parse_params(text: str, params: dict[str, str | None]) -> None:
    assert parse_params(text, what="test") == params


@pytest.mark.parametrize("text", ["x;a", ";", ";a=", ";a= ", ';a="x"y', ";a=b c", ";@=1", ';a="open'])
def test_parse_params_bad(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_params(text, what="test")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"abc"', "abc"),
        ('""', ""),
        ('"a\\"b"', 'a"b'),
        ('"a\\\\b"', "a\\b"),
        ("token", "token"),
        ('"', '"'),
        ('"unbalanced', '"unbalanced'),
    ],
)
def test_unquote(text: str, expected: str) -> None:
    assert unquote(text) == expected


@pytest.mark.parametrize(
    ("text", "maximum", "value"),
    [("0", 10, 0), (" 10 ", 10, 10), ("0000000000000000007", 10, 7), ("255", 255, 255)],
)
def test_parse_uint(text: str, maximum: int, value: int) -> None:
    assert parse_uint(text, what="n", maximum=maximum) == value


@pytest.mark.parametrize(
    ("text", "maximum"),
    [("", 10), ("-1", 10), ("1a", 10), ("11", 10), ("256", 255), ("1" * 5000, 255), ("٣", 10), ("1 2", 10)],
)
def test_parse_uint_bad(text: str, maximum: int) -> None:
    with pytest.raises(SipParseError):
        parse_uint(text, what="n", maximum=maximum)


def test_branch_via_is_what_parse_via_reads() -> None:
    text, via = branch_via("SIP/2.0/UDP 192.0.2.1:5060", "z9hG4bKbv1")
    assert text == "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKbv1;rport"
    assert via is not None
    assert parse_via(text) is via  # remembered for the responses that bring the text back
    assert (via.transport, via.host, via.port, via.params) == (
        "UDP",
        "192.0.2.1",
        5060,
        {"branch": "z9hG4bKbv1", "rport": None},
    )
    again_text, again = branch_via("SIP/2.0/UDP 192.0.2.1:5060", "z9hG4bKbv1")
    assert (again_text, again) == (text, via)


@pytest.mark.parametrize(
    ("sent_by", "branch"),
    [
        ("SIP/2.0/UDP bad host", "z9hG4bKbv2"),  # sent-by does not parse
        ("SIP/2.0/UDP h;maddr=x", "z9hG4bKbv3"),  # sent-by with parameters
        ("SIP/2.0/UDP h", "z9hG4bK bv4"),  # the branch is not a token
    ],
)
def test_branch_via_leaves_the_unusual_to_parse_via(sent_by: str, branch: str) -> None:
    text, via = branch_via(sent_by, branch)
    assert text == f"{sent_by};branch={branch};rport"
    assert via is None


# ============================================================================ errors


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (SipParseError, 400),
        (MessageTooLarge, 513),
        (VersionNotSupported, 505),
    ],
)
def test_error_statuses(cls: type[SipParseError], status: int) -> None:
    error = cls("detail")
    assert error.status == status
    assert error.reason == REASONS[status]
    assert error.detail == "detail"
    assert str(error) == "detail"
    assert error.message is None
    assert isinstance(error, ValueError)


def test_error_status_override_and_unknown_reason() -> None:
    error = SipParseError("x", status=501)
    assert error.status == 501
    assert error.reason == "Not Implemented"
    assert SipParseError("x", status=499).reason == "Bad Request"
    # the class attribute is untouched
    assert SipParseError("y").status == 400
