"""ESMTP extension objects and the client's reading of an EHLO reply."""

from __future__ import annotations

import pytest

from smtpproto import Mail, Rcpt, Reply
from smtpproto._syntax import GrammarError
from smtpproto.extensions import (
    KNOWN_EXTENSIONS,
    Capabilities,
    Dsn,
    EightBitMime,
    EnhancedStatusCodes,
    AuthExtension,
    BinaryMime,
    Chunking,
    DeliverBy,
    Extension,
    FutureRelease,
    HelpExtension,
    Limits,
    MtPriority,
    Pipelining,
    RequireTls,
    Size,
    SmtpUtf8,
    StartTls,
    XclientExtension,
    owner_of,
)
from smtpproto.extensions import dsn
from smtpproto.extensions.eightbitmime import body_type
from smtpproto.extensions.size import declared_size
from smtpproto.extensions.smtputf8 import requests_smtputf8


def refused(ext: type[Extension] | Extension, name: str, value: str | None) -> GrammarError:
    with pytest.raises(GrammarError) as info:
        ext.check_parameter(name, value)
    return info.value


# -- the extension objects ------------------------------------------------------


@pytest.mark.parametrize(
    ("ext", "line", "mail", "rcpt"),
    [
        (Pipelining(), "PIPELINING", set(), set()),
        (Size(1000), "SIZE 1000", {"SIZE"}, set()),
        (Size(), "SIZE 0", {"SIZE"}, set()),
        (EightBitMime(), "8BITMIME", {"BODY"}, set()),
        (SmtpUtf8(), "SMTPUTF8", {"SMTPUTF8"}, set()),
        (Dsn(), "DSN", {"RET", "ENVID"}, {"NOTIFY", "ORCPT"}),
        (EnhancedStatusCodes(), "ENHANCEDSTATUSCODES", set(), set()),
        (HelpExtension(), "HELP", set(), set()),
    ],
)
def test_extension_shapes(ext: Extension, line: str, mail: set[str], rcpt: set[str]) -> None:
    assert ext.ehlo_line() == line
    assert ext.mail_parameters == mail
    assert ext.rcpt_parameters == rcpt
    assert ext.keyword == line.split()[0]
    assert ext.check_mail(Mail(reverse_path="a@b")) is None


def test_line_allowances() -> None:
    # RFC 1870 §3: SIZE adds 26; RFC 3461 §5: DSN adds 110 to MAIL, 500 to RCPT.
    assert Size.mail_line_extra == 26
    assert (Dsn.mail_line_extra, Dsn.rcpt_line_extra) == (110, 500)
    assert Pipelining.mail_line_extra == Pipelining.rcpt_line_extra == 0


def test_reprs() -> None:
    assert repr(Pipelining()) == "Pipelining()"
    assert repr(Dsn()) == "Dsn()"
    assert repr(Size(5)) == "Size(5)"


def test_known_extensions_and_owner_of() -> None:
    assert set(KNOWN_EXTENSIONS) == {
        Pipelining, Size, EightBitMime, SmtpUtf8, Dsn, EnhancedStatusCodes, HelpExtension,
        StartTls, AuthExtension, Chunking, BinaryMime, RequireTls, Limits, MtPriority,
        DeliverBy, FutureRelease, XclientExtension,
    }
    assert owner_of("SIZE") is Size
    assert owner_of("auth") is AuthExtension
    assert owner_of("REQUIRETLS") is RequireTls
    assert owner_of("MT-PRIORITY") is MtPriority
    assert owner_of("BY") is DeliverBy
    assert owner_of("HOLDFOR") is owner_of("holduntil") is FutureRelease
    assert owner_of("XFOO") is None
    assert owner_of("body") is EightBitMime
    assert owner_of("SmtpUtf8") is SmtpUtf8
    assert owner_of("ret") is Dsn
    assert owner_of("NOTIFY") is Dsn
    assert owner_of("ORCPT") is Dsn
    assert owner_of("XFOO") is None


def test_value_less_parameters() -> None:
    # The base rule: a parameter without a value (SMTPUTF8) takes none.
    SmtpUtf8.check_parameter("SMTPUTF8", None)
    exc = refused(SmtpUtf8, "SMTPUTF8", "yes")
    assert (exc.code, exc.enhanced) == (501, "5.5.4")
    assert requests_smtputf8(Mail(reverse_path="a@b", parameters={"SMTPUTF8": None}))
    assert not requests_smtputf8(Mail(reverse_path="a@b"))


# -- SIZE (RFC 1870) --------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "1", "1000", "9" * 20])
def test_size_values(value: str) -> None:
    Size.check_parameter("SIZE", value)


@pytest.mark.parametrize("value", [None, "", "-1", "1e3", "1.5", "9" * 21, "\u0661\u0662", " 1"])
def test_size_bad_values(value: str | None) -> None:
    assert refused(Size, "SIZE", value).code == 501


def test_size_limit() -> None:
    with pytest.raises(ValueError):
        Size(-1)
    limit = Size(1000)
    assert limit.check_mail(Mail(reverse_path="a@b", parameters={"SIZE": "1000"})) is None
    assert limit.check_mail(Mail(reverse_path="a@b")) is None
    too_big = limit.check_mail(Mail(reverse_path="a@b", parameters={"SIZE": "1001"}))
    assert too_big is not None
    assert (too_big.code, too_big.enhanced) == (552, "5.3.4")
    # 0 means no fixed limit (RFC 1870 §4).
    assert Size(0).check_mail(Mail(reverse_path="a@b", parameters={"SIZE": "9" * 20})) is None


def test_declared_size() -> None:
    assert declared_size(Mail(reverse_path="", parameters={"SIZE": "0042"})) == 42
    assert declared_size(Mail(reverse_path="")) is None


# -- 8BITMIME (RFC 6152) ------------------------------------------------------------


@pytest.mark.parametrize("value", ["7BIT", "8BITMIME", "8bitmime", "7bit"])
def test_body_values(value: str) -> None:
    EightBitMime.check_parameter("BODY", value)


@pytest.mark.parametrize("value", [None, "", "BINARY", "8BIT", "7BIT8BITMIME"])
def test_body_bad_values(value: str | None) -> None:
    exc = refused(EightBitMime, "BODY", value)
    assert (exc.code, exc.enhanced) == (501, "5.5.4")


@pytest.mark.parametrize("value", ["BINARYMIME", "binarymime"])
def test_body_binarymime_only_where_offered(value: str) -> None:
    # RFC 3030 §3: BODY=BINARYMIME is a valid BODY value, but a server that
    # does not offer BINARYMIME (with CHUNKING) refuses it: 501 5.5.4.
    EightBitMime.check_parameter("BODY", value)
    mail = Mail(reverse_path="a@b", parameters={"BODY": value})
    refusal = EightBitMime().check_mail(mail)
    assert refusal is not None and (refusal.code, refusal.enhanced) == (501, "5.5.4")
    assert EightBitMime(binarymime=True).check_mail(mail) is None
    assert EightBitMime.requirements("BODY", value) == ("8BITMIME", "BINARYMIME", "CHUNKING")
    assert EightBitMime.requirements("BODY", "8BITMIME") == ("8BITMIME",)


def test_body_type() -> None:
    assert body_type(Mail(reverse_path="", parameters={"BODY": "8bitmime"})) == "8BITMIME"
    assert body_type(Mail(reverse_path="")) is None


# -- DSN (RFC 3461) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RET", "FULL"),
        ("RET", "hdrs"),
        ("ENVID", "QQ314159"),
        ("ENVID", "a+2Bb+3Dc"),
        ("ENVID", "x" * 100),
        ("ENVID", "+41" * 100),  # the limit is on the decoded id
        ("NOTIFY", "NEVER"),
        ("NOTIFY", "never"),
        ("NOTIFY", "SUCCESS"),
        ("NOTIFY", "SUCCESS,FAILURE"),
        ("NOTIFY", "delay,failure,success"),
        ("ORCPT", "rfc822;user@example.com"),
        ("ORCPT", "rfc822;a+2Bb@c"),
        ("ORCPT", "utf-8;user+40example.com"),
        ("ORCPT", "rfc822;" + "x" * 493),  # 500 characters in all
    ],
)
def test_dsn_valid_parameters(name: str, value: str) -> None:
    Dsn.check_parameter(name, value)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("RET", None, "needs a value"),
        ("NOTIFY", None, "needs a value"),
        ("RET", "NONE", "FULL or HDRS"),
        ("RET", "", "FULL or HDRS"),
        ("ENVID", "x" * 101, "at most 100"),
        ("ENVID", "+C3+A9", "ASCII"),
        ("ENVID", "a+0Db", "control"),
        ("ENVID", "a+2b", "invalid xtext"),
        ("NOTIFY", "", "NEVER or a list"),
        ("NOTIFY", "NEVER,SUCCESS", "NEVER or a list"),
        ("NOTIFY", "SUCCESS,NEVER", "NEVER or a list"),
        ("NOTIFY", "NEVER,NEVER", "NEVER or a list"),
        ("NOTIFY", "SUCCESS,SUCCESS", "NEVER or a list"),
        ("NOTIFY", "SUCCESS,", "NEVER or a list"),
        ("NOTIFY", "ALWAYS", "NEVER or a list"),
        ("ORCPT", "user@example.com", "addr-type;xtext"),
        ("ORCPT", ";user@example.com", "addr-type;xtext"),
        ("ORCPT", "rfc822;", "addr-type;xtext"),
        ("ORCPT", "rfc 822;a@b", "addr-type;xtext"),
        ("ORCPT", "rfc822;" + "x" * 494, "longer than 500"),
        ("ORCPT", "rfc822;a+0Ab", "control"),
        ("ORCPT", "rfc822;a+zz", "invalid xtext"),
    ],
)
def test_dsn_invalid_parameters(name: str, value: str | None, message: str) -> None:
    exc = refused(Dsn, name, value)
    assert exc.code == 501
    assert message in str(exc)


def test_dsn_builders() -> None:
    assert dsn.mail_parameters() == {}
    assert dsn.mail_parameters(ret="hdrs", envid="id+1=2") == {"RET": "HDRS", "ENVID": "id+2B1+3D2"}
    assert dsn.rcpt_parameters() == {}
    assert dsn.rcpt_parameters(notify=("success", "delay"), orcpt=("rfc822", "a+b@c")) == {
        "NOTIFY": "SUCCESS,DELAY",
        "ORCPT": "rfc822;a+2Bb@c",
    }
    with pytest.raises(GrammarError):
        dsn.mail_parameters(ret="ALL")
    with pytest.raises(GrammarError):
        dsn.mail_parameters(envid="x" * 101)
    with pytest.raises(GrammarError):
        dsn.rcpt_parameters(notify=("NEVER", "SUCCESS"))
    with pytest.raises(GrammarError):
        dsn.rcpt_parameters(orcpt=("rfc822", "a\r\nb"))  # encodes to controls


def test_dsn_accessors() -> None:
    mail = Mail(reverse_path="a@b", parameters=dsn.mail_parameters(ret="full", envid="x y"))
    assert dsn.ret(mail) == "FULL"
    assert dsn.envid(mail) == "x y"
    assert mail.parameters["ENVID"] == "x+20y"  # the event keeps the wire form
    rcpt = Rcpt(
        forward_path="a@b",
        parameters=dsn.rcpt_parameters(notify=("failure", "delay"), orcpt=("rfc822", "a+b@c")),
    )
    assert dsn.notify(rcpt) == frozenset({"FAILURE", "DELAY"})
    assert dsn.orcpt(rcpt) == ("rfc822", "a+b@c")
    plain_mail = Mail(reverse_path="a@b")
    plain_rcpt = Rcpt(forward_path="a@b")
    assert dsn.ret(plain_mail) is None
    assert dsn.envid(plain_mail) is None
    assert dsn.notify(plain_rcpt) is None
    assert dsn.orcpt(plain_rcpt) is None
    assert dsn.notify(Rcpt(forward_path="a@b", parameters={"NOTIFY": "never"})) == frozenset({"NEVER"})


# -- Capabilities --------------------------------------------------------------------


def ehlo(*lines: str) -> Reply:
    return Reply(code=250, text=lines)


def test_capabilities_from_reply() -> None:
    caps = Capabilities.from_reply(
        ehlo(
            "mail.example greets you",
            "PIPELINING",
            "size 1000",
            "8BITMIME",
            "SMTPUTF8",
            "DSN",
            "ENHANCEDSTATUSCODES",
            "HELP",
            "AUTH PLAIN LOGIN",
            "AUTH=LOGIN",  # old form: kept in raw only
            "",
            "AUTH CRAM-MD5",  # the first offer of a keyword wins
        )
    )
    assert caps.domain == "mail.example"
    assert caps.pipelining and caps.eightbitmime and caps.smtputf8 and caps.dsn
    assert caps.enhanced_status_codes and caps.help
    assert caps.size == 1000
    assert caps.params("auth") == ("PLAIN", "LOGIN")
    assert caps.params("STARTTLS") == ()
    assert "auth" in caps and "Size" in caps
    assert "STARTTLS" not in caps
    assert 42 not in caps
    assert "AUTH=LOGIN" not in caps.keywords
    assert "AUTH=LOGIN" in caps.raw
    assert len(caps.raw) == 11


def test_capabilities_single_line_reply() -> None:
    caps = Capabilities.from_reply(ehlo("mail.example"))
    assert caps.domain == "mail.example"
    assert dict(caps.keywords) == {}
    assert caps.raw == ()
    assert caps.size is None
    assert not (caps.pipelining or caps.eightbitmime or caps.smtputf8 or caps.dsn)
    assert not (caps.enhanced_status_codes or caps.help)


@pytest.mark.parametrize(
    ("line", "size"),
    [
        ("SIZE", 0),
        ("SIZE 0", 0),
        ("SIZE 52428800", 52428800),
        ("SIZE unlimited", 0),
        ("SIZE -5", 0),
        # A hostile server must not crash the client with Unicode "digits".
        ("SIZE \u00b2", 0),
        ("SIZE \u0661\u0662", 0),
    ],
)
def test_capabilities_size(line: str, size: int) -> None:
    assert Capabilities.from_reply(ehlo("x", line)).size == size


def test_capabilities_none() -> None:
    caps = Capabilities.none()
    assert caps.domain == ""
    assert dict(caps.keywords) == {}
    assert caps.size is None
    assert "PIPELINING" not in caps


def test_capabilities_of_a_server_offer() -> None:
    # What the server core offers is what the client reads.
    from smtpproto import ServerConfig, ServerConnection

    server = ServerConnection(ServerConfig(hostname="mx.example", max_message_size=100_000))
    caps = Capabilities.from_reply(server.ehlo_reply("hello"))
    assert caps.domain == "mx.example"
    assert caps.size == 100_000
    assert set(caps.keywords) == {
        "PIPELINING", "SIZE", "8BITMIME", "CHUNKING", "BINARYMIME", "SMTPUTF8", "DSN",
        "ENHANCEDSTATUSCODES", "LIMITS", "HELP",
    }
    assert caps.chunking and caps.binarymime
    assert caps.limits == {"RCPTMAX": 1000}
    assert not caps.starttls and caps.auth_mechanisms == ()
