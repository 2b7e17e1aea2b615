"""The RFC 5321 grammar (§4.1.2, §4.1.3), RFC 6531 UTF-8, RFC 3461 xtext,
and the command-line parser built on it."""

from __future__ import annotations

import pytest

from smtpproto import Data, Ehlo, Expn, Helo, Help, Mail, Noop, Quit, Rcpt, Rset, UnknownCommand, Vrfy
from smtpproto._commands import format_command, parse_command, split_verb
from smtpproto._syntax import (
    MAX_DOMAIN,
    MAX_LABEL,
    MAX_LOCAL_PART,
    MAX_PATH,
    QUOTE_LIMIT,
    GrammarError,
    check_text,
    is_ascii,
    octets,
    parse_domain_or_literal,
    parse_forward_path,
    parse_mailbox,
    parse_parameters,
    parse_reverse_path,
    quoted,
    validate_keyword,
    validate_param_value,
    xtext_decode,
    xtext_encode,
)


def grammar_error(call: object, *args: object, **kwargs: object) -> GrammarError:
    assert callable(call)
    with pytest.raises(GrammarError) as info:
        call(*args, **kwargs)
    return info.value


# -- limits -------------------------------------------------------------------


def test_limits_are_the_rfc_minimums() -> None:
    # §4.5.3.1.1-3
    assert (MAX_LOCAL_PART, MAX_DOMAIN, MAX_PATH) == (64, 255, 256)


def test_grammar_error_is_a_value_error_with_a_reply() -> None:
    exc = GrammarError("bad")
    assert isinstance(exc, ValueError)
    assert (exc.code, exc.enhanced, str(exc)) == (501, "5.5.4", "bad")
    exc = GrammarError("worse", 553, "5.1.3")
    assert (exc.code, exc.enhanced) == (553, "5.1.3")


def test_octets_counts_utf8() -> None:
    assert octets("abc") == 3
    assert octets("é") == 2
    assert octets("日本") == 6
    assert octets("\udcff") == 1  # surrogate-escaped raw byte counts as one octet


def test_is_ascii() -> None:
    assert is_ascii("user@example.com")
    assert not is_ascii("usér@example.com")


@pytest.mark.parametrize("char", ["\r", "\n", "\x00"])
def test_check_text_refuses_line_end_and_nul(char: str) -> None:
    exc = grammar_error(check_text, "thing", f"a{char}b")
    assert "thing" in str(exc)
    assert repr(char) in str(exc)


def test_check_text_allows_other_text() -> None:
    check_text("thing", "tab\tand unicode é and \x7f")


# -- domains and address literals ---------------------------------------------

VALID_DOMAINS = [
    "example.com",
    "a",
    "x-y.example",
    "1.example",
    "123",
    "EXAMPLE.COM",
    "bücher.example",
    "例え.テスト",
    "[192.0.2.1]",
    "[0.0.0.0]",
    "[255.255.255.255]",
    "[001.002.003.004]",  # Snum = 1*3DIGIT: leading zeros are grammatical
    "[IPv6:2001:db8::1]",
    "[ipv6:2001:DB8::1]",  # ABNF literal strings are case-insensitive
    "[IPv6:::1]",
    "[IPv6:2001:db8:0:0:0:0:0:1]",
    "[IPv6:::ffff:192.0.2.1]",  # IPv6v4-comp
    "[IPv6:0:0:0:0:0:ffff:192.0.2.1]",  # IPv6v4-full
    "[x-tag:some-content]",
    "[tag:a!b~c]",
    "[IPv4:192.0.2.1]",  # an unknown standardized tag is a general literal
    "[-tag:content]",  # Standardized-tag = Ldh-str, which may start with '-'
]


@pytest.mark.parametrize("domain", VALID_DOMAINS)
def test_valid_domains_and_literals(domain: str) -> None:
    assert parse_domain_or_literal(domain) == domain


INVALID_DOMAINS = [
    ("", "invalid domain"),
    ("-example.com", "invalid domain"),
    ("example-.com", "invalid domain"),
    ("example..com", "invalid domain"),
    ("example.com.", "invalid domain"),
    (".example.com", "invalid domain"),
    ("exa_mple.com", "invalid domain"),
    ("exa mple.com", "invalid domain"),
    ("[", "invalid address literal"),
    ("[]", "invalid address literal"),
    ("[192.0.2.1", "invalid address literal"),
    ("[192.0.2]", "invalid address literal"),
    ("[192.0.2.1.5]", "invalid address literal"),
    ("[256.0.0.1]", "out of range"),
    ("[192.0.2.256]", "out of range"),
    ("[999.1.1.1]", "out of range"),
    ("[1234.1.1.1]", "invalid address literal"),
    ("[١٩٢.0.2.1]", "invalid address literal"),  # DIGIT is %x30-39, not any Unicode digit
    ("[IPv6:2001:db8::zz]", "invalid IPv6"),
    ("[IPv6:1::2::3]", "invalid IPv6"),
    ("[IPv6:fe80::1%eth0]", "invalid IPv6"),  # zone index is not RFC 5321 syntax
    ("[IPv6:::ffff:256.0.0.1]", "invalid IPv6"),
    # §4.1.3 IPv6-comp: "No more than 6 groups in addition to the '::'".
    ("[IPv6:1:2:3:4:5:6::7]", "invalid IPv6"),
    ("[IPv6:1:2:3:4:5::6.7.8.9]", "invalid IPv6"),
    ("[IPv6:]", "invalid address literal"),
    ("[tag:]", "invalid address literal"),
    (":content]", "invalid domain"),
    ("[tag-:content]", "invalid address literal"),
    ("[tag:a b]", "invalid address literal"),
    ("[tag:a[b]", "invalid address literal"),
    ("[tag:a\\b]", "invalid address literal"),
    ("[tag:a]b]", "invalid address literal"),
    ("[tag:é]", "invalid address literal"),
]


@pytest.mark.parametrize(("domain", "message"), INVALID_DOMAINS)
def test_invalid_domains_and_literals(domain: str, message: str) -> None:
    exc = grammar_error(parse_domain_or_literal, domain)
    assert (exc.code, exc.enhanced) == (501, "5.5.4")
    assert message in str(exc)


def test_domain_length_counts_octets() -> None:
    label = "a" * 63
    exactly = ".".join([label, label, label, "a" * 63])  # 4*63 + 3 = 255
    assert len(exactly) == MAX_DOMAIN
    assert parse_domain_or_literal(exactly) == exactly
    exc = grammar_error(parse_domain_or_literal, exactly[:-1] + ".a")  # 256 octets
    assert "255" in str(exc)
    # 128 two-octet characters and 2 dots: 130 characters but 258 octets.
    # (57 is the most "é" a label holds: its A-label "xn--9ca" + 56 "a" is 63.)
    utf8 = ".".join(["é" * 57, "é" * 57, "é" * 14])
    assert len(utf8) < MAX_DOMAIN < octets(utf8)
    assert "255" in str(grammar_error(parse_domain_or_literal, utf8))


# -- mailboxes ------------------------------------------------------------------

VALID_MAILBOXES = [
    "user@example.com",
    "John.Doe@Example.COM",
    "a@b",
    "!#$%&'*+-/=?^_`{|}~@example.com",
    "first.last+tag@example.com",
    '"john doe"@example.com',
    '"a\\"b"@example.com',  # quoted-pairSMTP: backslash + any %d32-126
    '"a\\\\b"@example.com',
    '"a\\ b"@example.com',
    '"user@host"@example.com',  # '@' inside quotes
    '"a>b"@example.com',  # '>' inside quotes
    '""@example.com',
    '"a.b"@example.com',
    "user@[192.0.2.1]",
    "user@[IPv6:2001:db8::1]",
    "user@[tag:content]",
    "user@[tag:a@b]",  # dcontent may hold '@'
    '"x@[y"@[tag:a@b]',
    "user@[tag:a>b\"c]",  # ... and '>' and '"'
    "用户@例子.广告",  # RFC 6531
    "josé@bücher.example",
    '"josé"@example.com',
]


@pytest.mark.parametrize("mailbox", VALID_MAILBOXES)
def test_valid_mailboxes(mailbox: str) -> None:
    assert parse_mailbox(mailbox) == mailbox


INVALID_MAILBOXES = [
    ("", "no local part"),
    ("user", "no local part"),
    ("@example.com", "no local part"),
    ("user@", "invalid domain"),
    ("a..b@example.com", "invalid local part"),
    (".a@example.com", "invalid local part"),
    ("a.@example.com", "invalid local part"),
    ("a b@example.com", "invalid local part"),
    ("a(b)@example.com", "invalid local part"),
    ("a,b@example.com", "invalid local part"),
    ('a"b@example.com', "invalid local part"),
    ('"unbalanced@example.com', "invalid local part"),
    ('"a"b"@example.com', "invalid local part"),
    ('"a\\"@example.com', "invalid local part"),  # the escape eats the closing quote
    ('"a\tb"@example.com', "invalid local part"),  # controls never in qtext
    ('"a\\\tb"@example.com', "invalid local part"),  # nor escaped (%d32-126 only)
    ('"a\x7fb"@example.com', "invalid local part"),
    ('"a\\\x01b"@example.com', "invalid local part"),
    ("user@exa mple.com", "invalid domain"),
    ("user@[256.1.1.1]", "out of range"),
    ("user@[IPv6:fe80::1%1]", "invalid IPv6"),
    ("user@host@example.com", "invalid local part"),
]


@pytest.mark.parametrize(("mailbox", "message"), INVALID_MAILBOXES)
def test_invalid_mailboxes(mailbox: str, message: str) -> None:
    exc = grammar_error(parse_mailbox, mailbox)
    assert (exc.code, exc.enhanced) == (501, "5.1.3")
    assert message in str(exc)


def test_local_part_length_counts_octets() -> None:
    assert parse_mailbox("a" * 64 + "@example.com")
    assert "64" in str(grammar_error(parse_mailbox, "a" * 65 + "@example.com"))
    assert parse_mailbox("é" * 32 + "@example.com")  # 64 octets
    exc = grammar_error(parse_mailbox, "é" * 33 + "@example.com")  # 33 chars, 66 octets
    assert "64" in str(exc)
    assert (exc.code, exc.enhanced) == (501, "5.1.3")


def test_mailbox_keeps_case() -> None:
    assert parse_mailbox("MiXeD@Example.Com") == "MiXeD@Example.Com"


@pytest.mark.parametrize(
    "mailbox", ["\udcff@example.com", "user@\udcffexample.com", '"\udcff"@example.com']
)
def test_lone_surrogates_are_not_utf8(mailbox: str) -> None:
    # A str that cannot be encoded as UTF-8 cannot go on the wire.
    grammar_error(parse_mailbox, mailbox)


# -- paths --------------------------------------------------------------------


def test_null_reverse_path() -> None:
    assert parse_reverse_path("<>") == ""


def test_paths_return_the_mailbox() -> None:
    assert parse_reverse_path("<user@example.com>") == "user@example.com"
    assert parse_forward_path("<user@example.com>") == "user@example.com"
    assert parse_forward_path('<"a>b"@example.com>') == '"a>b"@example.com'


@pytest.mark.parametrize("parse", [parse_reverse_path, parse_forward_path])
def test_source_route_is_accepted_and_dropped(parse: object) -> None:
    assert callable(parse)
    assert parse("<@a.example:user@c.example>") == "user@c.example"
    assert parse("<@a.example,@b.example:user@c.example>") == "user@c.example"


@pytest.mark.parametrize(
    "path",
    [
        "<@a.example user@c.example>",  # no ':'
        "<@a.example,b.example:user@c.example>",  # hop without '@'
        "<@:user@c.example>",  # empty hop domain
        "<@a..example:user@c.example>",
        "<@a.example,:user@c.example>",
        "<@a.example:>",  # a route to nothing is not the null path
    ],
)
def test_invalid_source_routes(path: str) -> None:
    for parse in (parse_reverse_path, parse_forward_path):
        exc = grammar_error(parse, path)
        assert exc.code == 501


@pytest.mark.parametrize("path", ["<Postmaster>", "<postmaster>", "<POSTMASTER>", "<PostMaster>"])
def test_postmaster_forward_path(path: str) -> None:
    assert parse_forward_path(path) == path[1:-1]


def test_postmaster_is_not_a_reverse_path() -> None:
    # Reverse-path = Path / "<>": a bare Postmaster is only special for RCPT.
    grammar_error(parse_reverse_path, "<Postmaster>")


@pytest.mark.parametrize(
    "path", ["user@example.com", "<user@example.com", "user@example.com>", "", "<>x", "x<>"]
)
def test_path_without_brackets_is_refused_when_strict(path: str) -> None:
    exc = grammar_error(parse_reverse_path, path)
    assert exc.code == 501


def test_lenient_bare_mailbox() -> None:
    assert parse_reverse_path("user@example.com", lenient=True) == "user@example.com"
    assert parse_forward_path("user@example.com", lenient=True) == "user@example.com"
    assert parse_forward_path("Postmaster", lenient=True) == "Postmaster"
    # Lenient is not lawless: half a bracket or nothing at all is still wrong.
    for path in ("", "<user@example.com", "user@example.com>", "a<b@c"):
        grammar_error(parse_reverse_path, path, lenient=True)


def test_forward_path_needs_a_mailbox() -> None:
    grammar_error(parse_forward_path, "<>")
    grammar_error(parse_forward_path, "<user>")


def test_path_length_counts_octets_and_brackets() -> None:
    domain = ".".join(["d" * 63, "d" * 63, "d" * 61])  # 189 octets
    mailbox = "l" * 64 + "@" + domain  # 254 octets: the largest path is 256
    assert len(f"<{mailbox}>") == MAX_PATH
    assert parse_forward_path(f"<{mailbox}>") == mailbox
    longer = "l" * 64 + "@" + domain + "d"
    exc = grammar_error(parse_forward_path, f"<{longer}>")
    assert "256" in str(exc)
    # The same length in characters, but over in octets.
    utf8 = "é" + "l" * 63 + "@" + domain
    assert len(f"<{utf8}>") == MAX_PATH
    assert "256" in str(grammar_error(parse_reverse_path, f"<{utf8}>"))


# -- esmtp parameters -----------------------------------------------------------


def test_parse_parameters() -> None:
    assert parse_parameters("") == {}
    assert parse_parameters("SIZE=1000 BODY=8BITMIME SMTPUTF8") == {
        "SIZE": "1000",
        "BODY": "8BITMIME",
        "SMTPUTF8": None,
    }
    # Keywords are case-insensitive and upper-cased; values keep their case.
    assert parse_parameters("body=8bitmime x-Foo=Bar") == {"BODY": "8bitmime", "X-FOO": "Bar"}
    # RFC 6531 §3.3: UTF-8 in esmtp-value.
    assert parse_parameters("X-NAME=josé") == {"X-NAME": "josé"}
    # Every char %d33-60 / %d62-126 is a value char.
    chars = "".join(chr(c) for c in range(33, 127) if c != 61)
    assert parse_parameters(f"X={chars}") == {"X": chars}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SIZE=1000 size=2000", "more than once"),
        ("SMTPUTF8 SmtpUtf8", "more than once"),
        ("SIZE=", "invalid value"),
        ("SIZE==1", "invalid value"),
        ("X=a=b", "invalid value"),
        ("=1", "invalid parameter keyword"),
        ("-X=1", "invalid parameter keyword"),
        ("X_Y=1", "invalid parameter keyword"),
        ("SIZE=1  BODY=7BIT", "invalid parameter keyword"),  # two spaces: empty keyword
        ("SIZE=1 ", "invalid parameter keyword"),
        ("X=a\tb", "invalid value"),
        ("X=a\x7fb", "invalid value"),
        ("ké=1", "invalid parameter keyword"),
    ],
)
def test_invalid_parameters(text: str, message: str) -> None:
    exc = grammar_error(parse_parameters, text)
    assert exc.code == 501
    assert message in str(exc)


def test_validate_keyword_and_value() -> None:
    assert validate_keyword("X-FOO-1") == "X-FOO-1"
    assert validate_keyword("8BITMIME") == "8BITMIME"
    for bad in ("", "-A", "A B", "A=B", "A.B"):
        grammar_error(validate_keyword, bad)
    assert validate_param_value("X", "!<>~") == "!<>~"
    for bad in ("", "a b", "a=b", "a\rb"):
        exc = grammar_error(validate_param_value, "X", bad)
        assert "X" in str(exc)


# -- xtext (RFC 3461 §4) --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("", ""),
        ("plain!~", "plain!~"),
        ("a+b=c", "a+2Bb+3Dc"),
        ("a b", "a+20b"),
        ("é", "+C3+A9"),
        ("\x7f", "+7F"),
    ],
)
def test_xtext_encode(text: str, encoded: str) -> None:
    assert xtext_encode(text) == encoded


@pytest.mark.parametrize("text", ["", "user@example.com", "a+b=c d", "josé", "<x;y>"])
def test_xtext_roundtrip(text: str) -> None:
    assert xtext_decode(xtext_encode(text)) == text


def test_xtext_decode() -> None:
    assert xtext_decode("a+2Bb+3D") == "a+b="
    assert xtext_decode("+C3+A9") == "é"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a+2b", "invalid xtext"),  # hexchar is upper case only
        ("a+2", "invalid xtext"),
        ("a+", "invalid xtext"),
        ("a+GG", "invalid xtext"),
        ("a=b", "invalid xtext"),
        ("a b", "invalid xtext"),
        ("é", "invalid xtext"),
        ("+C3", "not UTF-8"),
        ("+FF", "not UTF-8"),
        ("a+0Db", "control"),
        ("a+0Ab", "control"),
        ("a+00b", "control"),
        ("+7F", "control"),
        ("+1B[31m", "control"),
    ],
)
def test_xtext_decode_refuses(text: str, message: str) -> None:
    exc = grammar_error(xtext_decode, text)
    assert exc.code == 501
    assert message in str(exc)


# -- command lines (parse_command / format_command) ---------------------------


def test_split_verb() -> None:
    assert split_verb(b"mail FROM:<a@b> SIZE=1") == ("MAIL", b"FROM:<a@b> SIZE=1")
    assert split_verb(b"QUIT") == ("QUIT", b"")
    assert split_verb(b"\xff\xfe x")[0] == "\ufffd\ufffd"


PARSED = [
    (b"EHLO client.example", Ehlo(domain="client.example")),
    (b"ehlo [192.0.2.1]", Ehlo(domain="[192.0.2.1]")),
    (b"HELO client.example", Helo(domain="client.example")),
    (b"MAIL FROM:<>", Mail(reverse_path="")),
    (b"mail from:<User@Example.com>", Mail(reverse_path="User@Example.com")),
    (b"MAIL FROM:<a@b> SIZE=10 body=8BITMIME", Mail(reverse_path="a@b", parameters={"SIZE": "10", "BODY": "8BITMIME"})),
    (b'MAIL FROM:<"a> b"@c> SMTPUTF8', Mail(reverse_path='"a> b"@c', parameters={"SMTPUTF8": None})),
    (b'MAIL FROM:<"a\\"> b"@c>', Mail(reverse_path='"a\\"> b"@c')),
    (b"MAIL FROM:<@r.example:a@b>", Mail(reverse_path="a@b")),
    (b"RCPT TO:<a@b>", Rcpt(forward_path="a@b")),
    (b"RCPT TO:<postmaster>", Rcpt(forward_path="postmaster")),
    (b"RCPT TO:<u@[tag:a>b]> NOTIFY=NEVER", Rcpt(forward_path="u@[tag:a>b]", parameters={"NOTIFY": "NEVER"})),
    (b'RCPT TO:<u@[tag:a"b@c]>', Rcpt(forward_path='u@[tag:a"b@c]')),
    (b'RCPT TO:<"a[b>"@c>', Rcpt(forward_path='"a[b>"@c')),
    (b"rcpt to:<a@b> NOTIFY=NEVER", Rcpt(forward_path="a@b", parameters={"NOTIFY": "NEVER"})),
    ("RCPT TO:<用户@例子.广告>".encode(), Rcpt(forward_path="用户@例子.广告")),
    (b"DATA", Data()),
    (b"RSET", Rset()),
    (b"QUIT", Quit()),
    (b"NOOP", Noop()),
    (b"NOOP anything at all", Noop(text="anything at all")),
    (b"HELP", Help()),
    (b"HELP MAIL", Help(topic="MAIL")),
    (b"VRFY someone", Vrfy(text="someone")),
    (b"EXPN list", Expn(text="list")),
    (b"XFOO", UnknownCommand(name="XFOO")),
    (b"xfoo ADDR=192.0.2.1", UnknownCommand(name="XFOO", argument="ADDR=192.0.2.1")),
]


@pytest.mark.parametrize(("line", "event"), PARSED)
def test_parse_command(line: bytes, event: object) -> None:
    assert parse_command(line) == event
    assert parse_command(line, lenient=True) == event


@pytest.mark.parametrize(("line", "event"), PARSED)
def test_format_then_parse_is_identity(line: bytes, event: object) -> None:
    assert isinstance(event, (Ehlo, Helo, Mail, Rcpt, Data, Rset, Quit, Noop, Help, Vrfy, Expn, UnknownCommand))
    wire = format_command(event)
    assert wire.endswith(b"\r\n") and wire.count(b"\r\n") == 1
    assert parse_command(wire[:-2]) == event


def test_format_command_shapes() -> None:
    assert format_command(Data()) == b"DATA\r\n"
    assert format_command(Noop()) == b"NOOP\r\n"
    assert format_command(Mail(reverse_path="")) == b"MAIL FROM:<>\r\n"
    assert format_command(Mail(reverse_path="a@b", parameters={"SMTPUTF8": None, "size": "5"})) == (
        b"MAIL FROM:<a@b> SMTPUTF8 SIZE=5\r\n"
    )
    assert format_command(UnknownCommand(name="xfoo", argument="a b")) == b"XFOO a b\r\n"
    assert format_command(Rcpt(forward_path="josé@b")) == "RCPT TO:<josé@b>\r\n".encode()


REFUSED_LINES = [
    # (line, code, enhanced, lenient also refuses)
    (b"", 500, "5.5.2", True),
    (b" NOOP", 500, "5.5.2", True),
    (b"NO-OP!", 500, "5.5.2", True),
    (b"-NOOP", 500, "5.5.2", True),
    (b"NOOP a\rb", 500, "5.5.2", True),  # bare CR inside a command
    (b"NO\x00OP", 500, "5.5.2", True),
    (b"NOOP \x1b[2J", 500, "5.5.2", True),
    (b"NOOP\t", 500, "5.5.2", True),
    (b"NOOP \x7f", 500, "5.5.2", True),
    (b"NOOP \xff", 501, "5.5.2", True),  # invalid UTF-8
    (b"MAIL FROM:<\xc3@b>", 501, "5.5.2", True),  # truncated UTF-8
    (b"MAIL FROM:<\xed\xa0\x80@b>", 501, "5.5.2", True),  # encoded surrogate
    (b"EHLO", 501, "5.5.4", True),
    (b"EHLO a b", 501, "5.5.4", True),
    (b"HELO ", 501, "5.5.4", True),
    (b"EHLO bad_name", 501, "5.5.4", False),
    (b"EHLO  client.example", 501, "5.5.4", False),
    (b"DATA x", 501, "5.5.4", True),
    (b"RSET x", 501, "5.5.4", True),
    (b"QUIT now", 501, "5.5.4", True),
    (b"VRFY", 501, "5.5.4", True),
    (b"VRFY ", 501, "5.5.4", True),
    (b"EXPN", 501, "5.5.4", True),
    (b"EXPN   ", 501, "5.5.4", True),
    (b"MAIL", 501, "5.5.4", True),
    (b"MAIL TO:<a@b>", 501, "5.5.4", True),
    (b"MAIL FROM", 501, "5.5.4", True),
    (b"MAIL FROM:a@b", 501, "5.1.7", False),
    (b"MAIL FROM: <a@b>", 501, "5.1.7", False),
    (b"MAIL FROM :<a@b>", 501, "5.5.4", True),
    (b"MAIL  FROM:<a@b>", 501, "5.5.4", False),
    (b"MAIL FROM:<a@b", 501, "5.5.4", True),
    (b'MAIL FROM:<"a>@b>', 501, "5.5.4", True),  # unbalanced quote swallows the '>'
    (b"MAIL FROM:<a@b>SIZE=1", 501, "5.5.4", True),
    (b"MAIL FROM:<a@[1.2.3.4>", 501, "5.5.4", True),  # unclosed literal swallows the '>'
    (b"MAIL FROM:<a@[tag:x]>y]>", 501, "5.5.4", True),
    (b"MAIL FROM:<a..b@c>", 501, "5.1.7", True),
    (b"MAIL FROM:<a@b> SIZE=1 SIZE=2", 501, "5.5.4", True),
    (b"MAIL FROM:<a@b> =1", 501, "5.5.4", True),
    (b"MAIL FROM:<Postmaster>", 501, "5.1.7", True),
    (b"RCPT TO:<>", 501, "5.1.3", True),
    (b"RCPT TO:a@b", 501, "5.5.4", False),
    (b"RCPT TO:<a@[300.1.1.1]>", 501, "5.1.3", True),
    (b"RCPT TO:<a@b> NOTIFY=NEVER notify=NEVER", 501, "5.5.4", True),
    (b"RCPT FROM:<a@b>", 501, "5.5.4", True),
]


@pytest.mark.parametrize(("line", "code", "enhanced", "lenient_too"), REFUSED_LINES)
def test_parse_command_refuses(line: bytes, code: int, enhanced: str, lenient_too: bool) -> None:
    exc = grammar_error(parse_command, line)
    assert (exc.code, exc.enhanced) == (code, enhanced)
    if lenient_too:
        exc = grammar_error(parse_command, line, lenient=True)
        assert exc.code == code
    else:
        parse_command(line, lenient=True)


LENIENT = [
    (b"MAIL FROM: <a@b>", Mail(reverse_path="a@b")),
    (b"MAIL FROM:a@b", Mail(reverse_path="a@b")),
    (b"MAIL FROM:   <a@b>    SIZE=1     BODY=7BIT   ", Mail(reverse_path="a@b", parameters={"SIZE": "1", "BODY": "7BIT"})),
    (b"MAIL FROM: a@b SIZE=1", Mail(reverse_path="a@b", parameters={"SIZE": "1"})),
    (b"RCPT TO: <a@b>", Rcpt(forward_path="a@b")),
    (b"RCPT TO: Postmaster", Rcpt(forward_path="Postmaster")),
    (b"EHLO bad_name", Ehlo._trusted(domain="bad_name")),
    (b"EHLO   client.example   ", Ehlo(domain="client.example")),
    (b"DATA   ", Data()),
    (b"NOOP   x  ", Noop(text="x")),
    (b"VRFY  x ", Vrfy(text="x")),
    # Lenient white-space handling must never touch a quoted local part:
    # '"a  b"' and '"a b"' are different mailboxes.
    (b'MAIL FROM: <"a  b"@c>  SIZE=1', Mail(reverse_path='"a  b"@c', parameters={"SIZE": "1"})),
    ('RCPT TO:<a@b> X-N=a\u00a0b'.encode(), Rcpt(forward_path="a@b", parameters={"X-N": "a\u00a0b"})),
]


@pytest.mark.parametrize(("line", "event"), LENIENT)
def test_lenient_parse(line: bytes, event: object) -> None:
    assert parse_command(line, lenient=True) == event


def test_strict_keeps_trailing_noop_text() -> None:
    assert parse_command(b"NOOP  x ") == Noop(text=" x ")
    assert parse_command(b"VRFY  x ") == Vrfy(text=" x ")


# -- domain labels (RFC 1035 §2.3.4) -------------------------------------------


@pytest.mark.parametrize(
    ("domain", "ok"),
    [
        ("a" * 63 + ".example", True),
        ("a" * 64 + ".example", False),
        ("example." + "a" * 64, False),
        ("x." + "a" * 64 + ".y", False),
        (".".join(["a" * 63] * 3), True),  # long domain, every label within
        ("b\u00fccher.example", True),  # A-label xn--bcher-kva
        ("\u00e9" * 57, True),  # xn--9ca + 56 "a": 63 octets
        ("\u00e9" * 58, False),
        ("a" * 62 + "\u00e9", False),  # 62 ASCII + one U: an A-label of 70
    ],
)
def test_domain_labels_are_at_most_63_octets(domain: str, ok: bool) -> None:
    assert MAX_LABEL == 63
    if ok:
        assert parse_domain_or_literal(domain) == domain
    else:
        exc = grammar_error(parse_domain_or_literal, domain)
        assert "longer than 63 octets" in str(exc) and (exc.code, exc.enhanced) == (501, "5.5.4")


def test_mailbox_domain_labels_are_checked_too() -> None:
    exc = grammar_error(parse_mailbox, "a@" + "b" * 64 + ".example")
    assert "longer than 63 octets" in str(exc) and exc.enhanced == "5.1.3"
    assert parse_mailbox("a@" + "b" * 63 + ".example")


# -- quoting a value for a reply (RFC 5321 §4.2.1, §4.5.3.1.5) -----------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("BODY", "'BODY'"),
        ("\u00ff\u00fe", "'\\xff\\xfe'"),
        ("it's", "\"it's\""),
        ("", "''"),
        (None, "(no value)"),
        ("x" * QUOTE_LIMIT, "'" + "x" * QUOTE_LIMIT + "'"),
        ("x" * (QUOTE_LIMIT + 1), "'" + "x" * QUOTE_LIMIT + "'..."),
    ],
)
def test_quoted(value: str | None, shown: str) -> None:
    assert quoted(value) == shown


def test_quoted_clips_what_escapes_make_long() -> None:
    # Each "\U0001f600" is ten characters escaped: only six fit in 64.
    shown = quoted("\U0001f600" * 10)
    assert shown == "'" + "\\U0001f600" * 6 + "'..."
    assert quoted("\u00e9" * 40, 20).startswith("'\\xe9")
    for value in ("\u00e9" * 200, "\x00\x7f" * 50, "a\u20ac" * 70, "\U0001f600" * 7):
        shown = quoted(value)
        assert shown.isascii() and shown.isprintable()
        assert len(shown) <= QUOTE_LIMIT + 5
