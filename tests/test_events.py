"""Event constructors: validation (attack class 4), wire forms, symmetry."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

import smtpproto
from smtpproto import (
    Command,
    CommandRejected,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfMessage,
    Event,
    Expn,
    Helo,
    Help,
    LocalProtocolError,
    Mail,
    MessageData,
    MessageRejected,
    Noop,
    Quit,
    Rcpt,
    Reply,
    Rset,
    UnknownCommand,
    Vrfy,
)
from smtpproto._commands import format_command, parse_command

FORBIDDEN = ["\r", "\n", "\x00", "\r\n"]

# One constructor per string argument of every event; ``{}`` marks where the
# hostile text goes.
STRING_ARGUMENTS: list[tuple[str, Callable[[str], Event]]] = [
    ("Ehlo.domain", lambda s: Ehlo(domain=f"client{s}.example")),
    ("Helo.domain", lambda s: Helo(domain=f"client{s}.example")),
    ("Mail.reverse_path", lambda s: Mail(reverse_path=f"a{s}@b.example")),
    ("Mail.reverse_path quoted", lambda s: Mail(reverse_path=f'"a{s}"@b.example')),
    ("Mail.parameters key", lambda s: Mail(reverse_path="", parameters={f"X{s}": "1"})),
    ("Mail.parameters value", lambda s: Mail(reverse_path="", parameters={"X": f"1{s}2"})),
    ("Rcpt.forward_path", lambda s: Rcpt(forward_path=f"a@b{s}.example")),
    ("Rcpt.forward_path postmaster", lambda s: Rcpt(forward_path=f"Postmaster{s}")),
    ("Rcpt.parameters key", lambda s: Rcpt(forward_path="a@b", parameters={f"X{s}": None})),
    ("Rcpt.parameters value", lambda s: Rcpt(forward_path="a@b", parameters={"NOTIFY": f"NEVER{s}"})),
    ("Noop.text", lambda s: Noop(text=f"x{s}QUIT")),
    ("Vrfy.text", lambda s: Vrfy(text=f"x{s}QUIT")),
    ("Expn.text", lambda s: Expn(text=f"x{s}QUIT")),
    ("Help.topic", lambda s: Help(topic=f"x{s}QUIT")),
    ("UnknownCommand.name", lambda s: UnknownCommand(name=f"X{s}")),
    ("UnknownCommand.argument", lambda s: UnknownCommand(name="XFOO", argument=f"a{s}RSET")),
    ("Reply.text", lambda s: Reply(code=250, text=(f"ok{s}250 forged",))),
    ("Reply.text second line", lambda s: Reply(code=250, text=("ok", f"x{s}y"))),
    ("Reply.text str", lambda s: Reply(code=250, text=f"ok{s}")),  # type: ignore[arg-type]
    ("Reply.enhanced", lambda s: Reply(code=250, text=("ok",), enhanced=f"2.0.0{s}")),
]


@pytest.mark.parametrize("char", FORBIDDEN, ids=repr)
@pytest.mark.parametrize(("what", "build"), STRING_ARGUMENTS, ids=[a[0] for a in STRING_ARGUMENTS])
def test_attack_command_injection_from_caller(
    what: str, build: Callable[[str], Event], char: str
) -> None:
    # Attack class 4: CR, LF and NUL in any argument raise before any byte
    # is produced.
    with pytest.raises(LocalProtocolError):
        build(char)
    build("")  # the same call without the hostile character is fine


def test_injection_error_names_the_field_and_character() -> None:
    with pytest.raises(LocalProtocolError, match=r"NOOP argument.*'\\r'"):
        Noop(text="a\rb")
    with pytest.raises(LocalProtocolError, match=r"parameter X"):
        Mail(reverse_path="", parameters={"X": "a\nb"})


@pytest.mark.parametrize(
    "build",
    [
        lambda: Ehlo(domain=""),
        lambda: Ehlo(domain="bad_name"),
        lambda: Ehlo(domain="[300.0.0.1]"),
        lambda: Helo(domain="a b"),
        lambda: Mail(reverse_path="no-at-sign"),
        lambda: Mail(reverse_path="<a@b>"),
        lambda: Mail(reverse_path="a..b@c"),
        lambda: Mail(reverse_path="Postmaster"),
        lambda: Mail(reverse_path="@route.example:a@b"),
        lambda: Mail(reverse_path="a" * 65 + "@b"),
        lambda: Mail(reverse_path="\udcff@b"),
        lambda: Rcpt(forward_path=""),
        lambda: Rcpt(forward_path="a@b>"),
        lambda: Rcpt(forward_path="@route.example:a@b"),
        lambda: Rcpt(forward_path="a@[IPv6:fe80::1%eth0]"),
        lambda: Mail(reverse_path="a@b", parameters={"": "1"}),
        lambda: Mail(reverse_path="a@b", parameters={"-X": "1"}),
        lambda: Mail(reverse_path="a@b", parameters={"X": ""}),
        lambda: Mail(reverse_path="a@b", parameters={"X": "a b"}),
        lambda: Mail(reverse_path="a@b", parameters={"X": "a=b"}),
        lambda: Mail(reverse_path="a@b", parameters={"SIZE": "1", "size": "2"}),
        lambda: Rcpt(forward_path="a@b", parameters={"notify": "NEVER", "NOTIFY": "NEVER"}),
        lambda: Vrfy(text=""),
        lambda: Expn(text=""),
        lambda: UnknownCommand(name=""),
        lambda: UnknownCommand(name="X FOO"),
        lambda: UnknownCommand(name="-X"),
        lambda: MessageData(data="text"),  # type: ignore[arg-type]
    ],
)
def test_invalid_arguments_raise_local_protocol_error(build: Callable[[], Event]) -> None:
    with pytest.raises(LocalProtocolError):
        build()


def test_path_length_limit_applies_to_constructed_paths() -> None:
    # §4.5.3.1.3: 256 octets for the path, brackets included.  A 64-octet
    # local part and a 255-octet domain are each fine but not together.
    domain = ".".join(["d" * 63, "d" * 63, "d" * 63, "d" * 63])
    mailbox = "l" * 64 + "@" + domain
    for build in (lambda: Mail(reverse_path=mailbox), lambda: Rcpt(forward_path=mailbox)):
        with pytest.raises(LocalProtocolError, match="256"):
            build()
    fits = "l" * 64 + "@" + ".".join(["d" * 63, "d" * 63, "d" * 61])
    assert Mail(reverse_path=fits).reverse_path == fits
    assert Rcpt(forward_path=fits).forward_path == fits


# -- Reply ---------------------------------------------------------------------


@pytest.mark.parametrize("code", [200, 211, 250, 354, 421, 450, 550, 554, 555, 559, 259])
def test_reply_codes_accepted(code: int) -> None:
    assert Reply(code=code).code == code


@pytest.mark.parametrize("code", [0, 199, 100, 160, 260, 299, 360, 560, 600, 999, -250, True])
def test_reply_codes_refused(code: int) -> None:
    # Reply-code = %x32-35 %x30-35 %x30-39 (§4.2)
    with pytest.raises(LocalProtocolError, match="invalid reply code"):
        Reply(code=code)


def test_reply_code_must_be_an_int() -> None:
    with pytest.raises(LocalProtocolError):
        Reply(code="250")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        Reply(code=250.0)  # type: ignore[arg-type]


def test_reply_text() -> None:
    assert Reply(code=250).text == ("",)
    assert Reply(code=250, text="one line").text == ("one line",)  # type: ignore[arg-type]
    reply = Reply(code=250, text=("first", "second"))
    assert reply.message == "first\nsecond"
    with pytest.raises(LocalProtocolError, match="at least one"):
        Reply(code=250, text=())


@pytest.mark.parametrize(
    ("code", "enhanced"),
    [(250, "2.0.0"), (250, "2.1.5"), (452, "4.5.3"), (550, "5.7.1"), (554, "5.999.999"), (354, None)],
)
def test_reply_enhanced_accepted(code: int, enhanced: str | None) -> None:
    assert Reply(code=code, text=("x",), enhanced=enhanced).enhanced == enhanced


@pytest.mark.parametrize(
    ("code", "enhanced", "message"),
    [
        (250, "5.0.0", "does not match"),
        (550, "2.0.0", "does not match"),
        (450, "5.1.1", "does not match"),
        (354, "3.0.0", "invalid enhanced"),
        (250, "2.0", "invalid enhanced"),
        (250, "2.0.0.0", "invalid enhanced"),
        (250, "2.1000.0", "invalid enhanced"),
        (250, "2.0.1000", "invalid enhanced"),
        (250, "2.01.0", "invalid enhanced"),
        (250, "", "invalid enhanced"),
        (250, "2.x.0", "invalid enhanced"),
        (250, "2.1\u0661.0", "invalid enhanced"),  # Unicode digits are not DIGIT
        (250, " 2.0.0", "invalid enhanced"),
    ],
)
def test_reply_enhanced_refused(code: int, enhanced: str, message: str) -> None:
    with pytest.raises(LocalProtocolError, match=message):
        Reply(code=code, text=("x",), enhanced=enhanced)


@pytest.mark.parametrize(
    ("code", "flags"),
    [
        (250, (True, False, False, False)),
        (354, (False, True, False, False)),
        (421, (False, False, True, False)),
        (554, (False, False, False, True)),
    ],
)
def test_reply_classification(code: int, flags: tuple[bool, bool, bool, bool]) -> None:
    reply = Reply(code=code)
    assert (reply.is_success, reply.is_intermediate, reply.is_transient, reply.is_permanent) == flags


# -- shapes and fast path ----------------------------------------------------------


def test_events_are_frozen_slotted_keyword_only() -> None:
    event = Noop(text="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.text = "y"  # type: ignore[misc]
    assert not hasattr(event, "__dict__")
    with pytest.raises(TypeError):
        Noop("x")  # type: ignore[call-arg]


def test_command_verbs_and_arguments() -> None:
    verbs = {
        Ehlo: "EHLO", Helo: "HELO", Mail: "MAIL", Rcpt: "RCPT", Data: "DATA", Rset: "RSET",
        Noop: "NOOP", Vrfy: "VRFY", Expn: "EXPN", Help: "HELP", Quit: "QUIT",
    }
    for cls, verb in verbs.items():
        assert issubclass(cls, Command)
        assert cls.verb == verb
    assert Data()._argument() == ""
    assert Quit()._argument() == ""
    assert Help(topic="x")._argument() == "x"


def test_unknown_command_is_upper_cased() -> None:
    # XCLIENT is a modelled command now (smtpproto.Xclient); XFOO is not.
    event = UnknownCommand(name="xFoo", argument="ADDR=1.2.3.4")
    assert event.name == "XFOO"
    assert event == UnknownCommand(name="XFOO", argument="ADDR=1.2.3.4")
    assert event == parse_command(b"xfoo ADDR=1.2.3.4")


def test_unknown_command_suggested_reply() -> None:
    reply = UnknownCommand(name="XFOO").suggested_reply
    assert (reply.code, reply.enhanced) == (500, "5.5.1")


def test_parameters_are_frozen_and_upper_cased() -> None:
    source = {"size": "10", "SmtpUtf8": None}
    mail = Mail(reverse_path="a@b", parameters=source)
    assert dict(mail.parameters) == {"SIZE": "10", "SMTPUTF8": None}
    source["size"] = "20"
    assert mail.parameters["SIZE"] == "10"
    with pytest.raises(TypeError):
        mail.parameters["SIZE"] = "1"  # type: ignore[index]
    assert dict(Mail(reverse_path="a@b").parameters) == {}
    assert dict(Rcpt(forward_path="a@b", parameters={}).parameters) == {}


def test_wire_forms_are_kept() -> None:
    # Quoted local parts keep their quotes, xtext stays encoded, case is kept.
    mail = Mail(reverse_path='"John Doe"@Example.COM', parameters={"ENVID": "a+2Bb"})
    assert mail.reverse_path == '"John Doe"@Example.COM'
    assert mail.parameters["ENVID"] == "a+2Bb"
    assert Rcpt(forward_path="PostMaster").forward_path == "PostMaster"


def test_trusted_fast_path_fills_defaults() -> None:
    mail = Mail._trusted(reverse_path="")
    assert dict(mail.parameters) == {}
    assert Reply._trusted(code=250) == Reply(code=250)
    assert UnknownCommand._trusted(name="XFOO") == UnknownCommand(name="XFOO")
    # No validation on the fast path: that is the parsers' job.
    assert Ehlo._trusted(domain="bad_name").domain == "bad_name"


def test_server_only_and_marker_events() -> None:
    reply = Reply(code=501, text=("bad",), enhanced="5.5.4")
    rejected = CommandRejected(reply=reply, reason="bad arguments")
    assert rejected.command is None
    assert MessageRejected(reply=reply, reason="r").reply is reply
    assert EndOfMessage() == EndOfMessage()
    assert ConnectionClosed() == ConnectionClosed()
    assert MessageData(data=b"x") == MessageData(data=b"x")
    assert MessageData(data=bytearray(b"x")).data == b"x"  # type: ignore[arg-type]
    assert MessageData(data=memoryview(b"x")).data == b"x"  # type: ignore[arg-type]


SYMMETRIC: list[Command] = [
    Ehlo(domain="client.example"),
    Ehlo(domain="[IPv6:2001:db8::1]"),
    Helo(domain="[192.0.2.1]"),
    Mail(reverse_path=""),
    Mail(reverse_path='"a b\\"c"@example.com', parameters={"size": "100", "body": "8BITMIME"}),
    Mail(reverse_path="josé@exämple.com", parameters={"SMTPUTF8": None}),
    Rcpt(forward_path="Postmaster"),
    Rcpt(forward_path='u@[tag:a>"b@c]'),
    Rcpt(forward_path="u@[tag:content]", parameters={"NOTIFY": "SUCCESS,DELAY", "ORCPT": "rfc822;u+2Bx@y"}),
    Data(),
    Rset(),
    Quit(),
    Noop(),
    Noop(text="ping"),
    Help(topic="RCPT"),
    Vrfy(text="Smith"),
    Expn(text="staff"),
    UnknownCommand(name="xforward", argument="NAME=x"),
]


@pytest.mark.parametrize("event", SYMMETRIC, ids=repr)
def test_constructed_event_equals_parsed_event(event: Command) -> None:
    wire = format_command(event)
    assert wire.endswith(b"\r\n")
    parsed = parse_command(wire[:-2])
    assert parsed == event
    assert type(parsed) is type(event)


def test_public_api_exports_events() -> None:
    for name in ("Mail", "Rcpt", "Reply", "CommandRejected", "MessageRejected", "ConnectionClosed"):
        assert getattr(smtpproto, name) is not None
        assert name in smtpproto.__all__
