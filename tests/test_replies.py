"""Replies on the wire (RFC 5321 §4.2, RFC 2034, RFC 3463)."""

from __future__ import annotations

import pytest

from smtpproto import LocalProtocolError, RemoteProtocolError, Reply
from smtpproto import _replies as R
from smtpproto._replies import ReplyParser, check_enhanced, format_reply, rejection

# -- format_reply ---------------------------------------------------------------

FORMATTED = [
    (Reply(code=250, text=("OK",)), b"250 OK\r\n"),
    (Reply(code=250, text=("OK",), enhanced="2.0.0"), b"250 2.0.0 OK\r\n"),
    (Reply(code=250), b"250\r\n"),  # a line of only the code is valid (§4.2)
    (Reply(code=250, enhanced="2.0.0"), b"250 2.0.0\r\n"),
    (Reply(code=250, text=("a", "b", "c")), b"250-a\r\n250-b\r\n250 c\r\n"),
    (
        Reply(code=550, text=("a", "b"), enhanced="5.1.1"),
        b"550-5.1.1 a\r\n550 5.1.1 b\r\n",  # RFC 2034 §4: on every line
    ),
    (Reply(code=250, text=("", "x", "")), b"250-\r\n250-x\r\n250\r\n"),
    (Reply(code=250, text=("", ""), enhanced="2.0.0"), b"250-2.0.0\r\n250 2.0.0\r\n"),
    (Reply(code=354, text=("Go ahead",)), b"354 Go ahead\r\n"),
    (Reply(code=250, text=("héllo",)), "250 héllo\r\n".encode()),
]


@pytest.mark.parametrize(("reply", "wire"), FORMATTED)
def test_format_reply(reply: Reply, wire: bytes) -> None:
    assert format_reply(reply) == wire


@pytest.mark.parametrize(("reply", "wire"), FORMATTED)
def test_format_then_parse_roundtrip(reply: Reply, wire: bytes) -> None:
    parser = ReplyParser(max_lines=100)
    lines = wire.split(b"\r\n")[:-1]
    results = [parser.feed(line) for line in lines]
    assert results[:-1] == [None] * (len(lines) - 1)
    assert results[-1] == reply
    assert not parser.in_progress


def test_format_reply_without_enhanced_codes() -> None:
    reply = Reply(code=550, text=("a", "b"), enhanced="5.1.1")
    assert format_reply(reply, enhanced_codes=False) == b"550-a\r\n550 b\r\n"
    assert format_reply(Reply(code=250, enhanced="2.0.0"), enhanced_codes=False) == b"250\r\n"


def test_format_reply_keeps_undecodable_bytes() -> None:
    # A text line parsed from a non-UTF-8 reply goes back out unchanged.
    parsed = ReplyParser(10).feed(b"250 caf\xe9")
    assert parsed is not None
    assert format_reply(parsed) == b"250 caf\xe9\r\n"


# -- ReplyParser ----------------------------------------------------------------


def feed_all(lines: list[bytes], max_lines: int = 100) -> list[Reply | None]:
    parser = ReplyParser(max_lines)
    return [parser.feed(line) for line in lines]


@pytest.mark.parametrize(
    ("lines", "reply"),
    [
        ([b"250 OK"], Reply(code=250, text=("OK",))),
        ([b"250"], Reply(code=250, text=("",))),
        ([b"220 mail.example ESMTP"], Reply(code=220, text=("mail.example ESMTP",))),
        ([b"250-first", b"250 last"], Reply(code=250, text=("first", "last"))),
        ([b"250-first", b"250-", b"250"], Reply(code=250, text=("first", "", ""))),
        ([b"250 2.1.0 Sender OK"], Reply(code=250, text=("Sender OK",), enhanced="2.1.0")),
        ([b"250 2.1.0"], Reply(code=250, text=("",), enhanced="2.1.0")),
        (
            [b"550-5.1.1 no such", b"550 5.1.1 user"],
            Reply(code=550, text=("no such", "user"), enhanced="5.1.1"),
        ),
        # Only lines carrying the same code are stripped.
        (
            [b"550-5.1.1 a", b"550-5.1.2 b", b"550 c"],
            Reply(code=550, text=("a", "5.1.2 b", "c"), enhanced="5.1.1"),
        ),
        (
            [b"250-2.0.0 a", b"250 2.0.00 b"],
            Reply(code=250, text=("a", "2.0.00 b"), enhanced="2.0.0"),
        ),
        # The class must match the first digit of the code: not enhanced.
        ([b"250 5.1.1 x"], Reply(code=250, text=("5.1.1 x",))),
        ([b"550 2.0.0 x"], Reply(code=550, text=("2.0.0 x",))),
        ([b"354 3.0.0 go"], Reply(code=354, text=("3.0.0 go",))),
        # Not an enhanced code at all.
        ([b"250 2.0.0x"], Reply(code=250, text=("2.0.0x",))),
        ([b"250 2.01.0 x"], Reply(code=250, text=("2.01.0 x",))),
        # Unicode digits are not DIGIT: not an enhanced code.
        (["250 2.1\u0661.0 x".encode()], Reply(code=250, text=("2.1\u0661.0 x",))),
        ([b"250 2.0"], Reply(code=250, text=("2.0",))),
        ([b"250 caf\xe9"], Reply._trusted(code=250, text=("caf\udce9",), enhanced=None)),
        ([b"250 tab\there"], Reply(code=250, text=("tab\there",))),
    ],
)
def test_reply_parser(lines: list[bytes], reply: Reply) -> None:
    results = feed_all(lines)
    assert results[-1] == reply
    assert all(result is None for result in results[:-1])


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"25",
        b"2500",
        b"250x",
        b"250x OK",
        b"250\tOK",
        b"600 too high",
        b"190 too low",
        b"100 OK",
        b"260 bad second digit",
        b"25a OK",
        b" 250 OK",
        b"OK 250",
    ],
)
def test_reply_parser_refuses_malformed_lines(line: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="malformed reply line") as info:
        ReplyParser(10).feed(line)
    assert info.value.reply is None


@pytest.mark.parametrize("line", [b"250 a\rb", b"250 a\x00b", b"250-a\nb", b"250 ok\r"])
def test_reply_parser_refuses_line_end_and_nul_inside_a_line(line: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="control character"):
        ReplyParser(10).feed(line)


def test_reply_parser_refuses_code_change_in_multiline() -> None:
    parser = ReplyParser(10)
    assert parser.feed(b"250-first") is None
    assert parser.in_progress
    with pytest.raises(RemoteProtocolError, match="changed from 250 to 251"):
        parser.feed(b"251 second")


def test_reply_parser_line_bound() -> None:
    # Exactly max_lines lines are accepted ...
    parser = ReplyParser(max_lines=3)
    assert parser.feed(b"250-a") is None
    assert parser.feed(b"250-b") is None
    assert parser.feed(b"250 c") == Reply(code=250, text=("a", "b", "c"))
    # ... one more is a reply bomb (attack class 7).
    parser = ReplyParser(max_lines=3)
    parser.feed(b"250-a")
    parser.feed(b"250-b")
    with pytest.raises(RemoteProtocolError, match="longer than 3 lines"):
        parser.feed(b"250-c")


def test_reply_parser_is_reusable() -> None:
    parser = ReplyParser(10)
    assert not parser.in_progress
    assert parser.feed(b"250-a") is None
    assert parser.feed(b"250 b") == Reply(code=250, text=("a", "b"))
    assert not parser.in_progress
    assert parser.feed(b"354 go") == Reply(code=354, text=("go",))
    assert parser.feed(bytearray(b"221 2.0.0 bye")) == Reply(code=221, text=("bye",), enhanced="2.0.0")


# -- check_enhanced and the catalogue --------------------------------------------


def test_check_enhanced() -> None:
    check_enhanced(250, "2.0.0")
    check_enhanced(451, "4.999.999")
    with pytest.raises(LocalProtocolError, match="does not match"):
        check_enhanced(250, "4.0.0")
    with pytest.raises(LocalProtocolError, match="invalid"):
        check_enhanced(250, "2.0.0 ")


def test_rejection_builds_a_one_line_reply() -> None:
    reply = rejection(501, "5.5.4", "Syntax error")
    assert reply == Reply(code=501, text=("Syntax error",), enhanced="5.5.4")


CATALOGUE = {
    "OK": (250, "2.0.0"),
    "SENDER_OK": (250, "2.1.0"),
    "RECIPIENT_OK": (250, "2.1.5"),
    "START_DATA": (354, None),
    "MESSAGE_ACCEPTED": (250, "2.0.0"),
    "RESET_OK": (250, "2.0.0"),
    "CLOSING": (221, "2.0.0"),
    "VRFY_CANNOT": (252, "2.5.0"),
    "HELP_TEXT": (214, "2.0.0"),
    "EXPN_DISABLED": (502, "5.5.1"),
    "UNRECOGNIZED": (500, "5.5.1"),
    "LINE_TOO_LONG": (500, "5.5.2"),
    "BAD_LINE": (500, "5.5.2"),
    "NOT_IMPLEMENTED": (502, "5.5.1"),
    "BAD_SEQUENCE": (503, "5.5.1"),
    "NEED_EHLO": (503, "5.5.1"),
    "NEED_MAIL": (503, "5.5.1"),
    "NESTED_MAIL": (503, "5.5.1"),
    "NEED_QUIT": (503, "5.5.1"),
    "NO_VALID_RECIPIENTS": (554, "5.5.1"),
    "TOO_MANY_RECIPIENTS": (452, "4.5.3"),
    "MESSAGE_TOO_BIG": (552, "5.3.4"),
    "BARE_LINE_ENDING": (554, "5.6.0"),
    "NEEDS_SMTPUTF8": (553, "5.6.7"),
    "TOO_MANY_ERRORS": (421, "4.7.0"),
    "INPUT_OVERFLOW": (421, "4.7.0"),
    "SHUTTING_DOWN": (421, "4.3.2"),
}


@pytest.mark.parametrize(("name", "expected"), CATALOGUE.items())
def test_ready_replies(name: str, expected: tuple[int, str | None]) -> None:
    reply = getattr(R, name)
    assert isinstance(reply, Reply)
    assert (reply.code, reply.enhanced) == expected
    assert len(reply.text) == 1 and reply.text[0]
