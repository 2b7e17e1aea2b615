"""The client core's fast paths give what the general ones give.

``ClientConnection.send`` dispatches on the exact event type and makes the
checks of MAIL, RCPT and DATA inline; it keeps the checked line of a MAIL
or RCPT event it has sent (events are immutable) until the capabilities
change; ``ReplyParser`` builds one-line replies without its regular
expression.  Each test pins one of those to the behaviour of the road it
short-cuts: subclasses of event types, a cached line whose check depends
on the transaction, caches that fill up, and formatting and parsing
compared with the general functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import drain
from smtpproto import (
    AuthResponse,
    Bdat,
    ClientConnection,
    Data,
    Ehlo,
    LocalProtocolError,
    Mail,
    MessageData,
    Rcpt,
    Reply,
    Rset,
    State,
    UnknownCommand,
)
from smtpproto._commands import format_command
from smtpproto._replies import ReplyParser, _build_reply, format_reply
from smtpproto.testing import commands, replies


def greeted(*extensions: str) -> ClientConnection:
    client = ClientConnection()
    client.receive_data(b"220 hi\r\n")
    drain(client)
    client.send(Ehlo(domain="client.example"))
    lines = [b"hi", *(e.encode() for e in extensions)]
    client.receive_data(b"".join(b"250-%s\r\n" % line for line in lines[:-1]) + b"250 %s\r\n" % lines[-1])
    drain(client)
    assert client.state is State.READY
    return client


def answer(client: ClientConnection, *codes: int) -> list[int]:
    client.receive_data(b"".join(b"%d ok\r\n" % code for code in codes))
    return [event.code for event in drain(client) if isinstance(event, Reply)]


# -- subclasses take the general road ------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MyData(MessageData):
    """A subclass: not in the dispatch table."""


@dataclass(frozen=True, slots=True, kw_only=True)
class XFoo(UnknownCommand):
    """A command the core does not model, as a subclass."""


def test_a_subclass_of_message_data_is_content() -> None:
    client = greeted("PIPELINING")
    client.send(Mail(reverse_path="a@example.org"))
    client.send(Rcpt(forward_path="b@example.org"))
    client.send(Data())
    answer(client, 250, 250, 354)
    assert client.send(MyData(data=b".dot\nline")) == b"..dot\r\nline"


def test_a_subclass_of_unknown_command_is_sent_and_ends_a_batch() -> None:
    client = greeted("PIPELINING")
    assert client.send(XFoo(name="XFOO", argument="bar")) == b"XFOO bar\r\n"
    with pytest.raises(LocalProtocolError, match="must end a pipelined batch"):
        client.send(Rset())
    assert answer(client, 250) == [250]
    assert client.state is State.READY


def test_a_sasl_response_inside_a_bdat_chunk_is_refused() -> None:
    client = greeted("PIPELINING", "CHUNKING")
    client.send(Mail(reverse_path="a@example.org"))
    client.send(Rcpt(forward_path="b@example.org"))
    client.send(Bdat(size=4, last=True))
    with pytest.raises(LocalProtocolError, match="BDAT chunk still needs 4 octets"):
        client.send(AuthResponse(data=b"x"))
    with pytest.raises(LocalProtocolError, match="BDAT chunk still needs 4 octets"):
        client.send(Rset())


# -- the cached lines of MAIL and RCPT events ------------------------------------------


def test_a_cached_non_ascii_recipient_is_judged_by_each_transaction() -> None:
    client = greeted("PIPELINING", "SMTPUTF8")
    rcpt = Rcpt(forward_path="j\u00fcrgen@example.org")
    client.send(Mail(reverse_path="a@example.org", parameters={"SMTPUTF8": None}))
    assert client.send(rcpt) == "RCPT TO:<j\u00fcrgen@example.org>\r\n".encode()
    client.send(Rset())
    client.send(Mail(reverse_path="a@example.org", parameters={"SMTPUTF8": None}))
    assert client.send(rcpt) == "RCPT TO:<j\u00fcrgen@example.org>\r\n".encode()  # from the cache
    client.send(Rset())
    client.send(Mail(reverse_path="a@example.org"))
    with pytest.raises(LocalProtocolError, match="SMTPUTF8"):
        client.send(rcpt)


def test_cached_lines_are_judged_again_under_new_capabilities() -> None:
    client = greeted("PIPELINING", "DSN")
    rcpt = Rcpt(forward_path="b@example.org", parameters={"NOTIFY": "NEVER"})
    mail = Mail(reverse_path="a@example.org", parameters={"RET": "HDRS"})
    client.send(mail)
    client.send(rcpt)
    client.send(Rset())
    assert answer(client, 250, 250, 250) == [250, 250, 250]
    # A new EHLO reply without DSN: the same events are refused now.
    client.send(Ehlo(domain="client.example"))
    client.receive_data(b"250-hi\r\n250 PIPELINING\r\n")
    drain(client)
    with pytest.raises(LocalProtocolError, match="DSN"):
        client.send(mail)
    client.send(Mail(reverse_path="a@example.org"))
    with pytest.raises(LocalProtocolError, match="DSN"):
        client.send(rcpt)


def test_many_recipients_outgrow_the_line_cache_and_stay_right() -> None:
    client = greeted("PIPELINING")
    client.send(Mail(reverse_path="a@example.org"))
    rcpts = [Rcpt(forward_path=f"user{n}@example.org") for n in range(600)]
    for _ in range(2):
        for rcpt in rcpts[:300]:
            assert client.send(rcpt) == f"RCPT TO:<{rcpt.forward_path}>\r\n".encode()
    assert answer(client, *[250] * 601) == [250] * 601
    assert len(client.accepted_recipients) == 600


def test_many_parameter_values_outgrow_their_cache_and_stay_right() -> None:
    client = greeted("PIPELINING", "SIZE 100000")
    for size in list(range(300)) * 2:
        line = client.send(Mail(reverse_path="a@example.org", parameters={"SIZE": str(size)}))
        assert line == b"MAIL FROM:<a@example.org> SIZE=%d\r\n" % size
        client.send(Rset())
        answer(client, 250, 250)
    with pytest.raises(LocalProtocolError, match="SIZE needs a decimal number"):
        client.send(Mail(reverse_path="a@example.org", parameters={"SIZE": "-1"}))


def test_an_over_long_mail_line_is_refused() -> None:
    client = greeted("PIPELINING")
    # Parameters of an extension the core does not model add nothing to the
    # limit of 512 octets (RFC 5321 §4.5.3.1.4).
    params = {f"X-P{n}": "v" * 40 for n in range(12)}
    with pytest.raises(LocalProtocolError, match="MAIL command line of .* exceeds 512"):
        client.send(Mail(reverse_path="a@example.org", parameters=params))
    assert client.pending == ()


def test_a_mail_answered_after_a_refused_rset_keeps_the_transaction() -> None:
    client = greeted("PIPELINING")
    rcpt = Rcpt(forward_path="b@example.org")
    client.send(Mail(reverse_path="a@example.org"))
    client.send(rcpt)
    assert answer(client, 250, 250) == [250, 250]
    # RSET and a new MAIL pipelined; the RSET is refused, so the MAIL meets
    # the old transaction (503): its recipients still count.
    client.send(Rset())
    client.send(Mail(reverse_path="c@example.org"))
    assert answer(client, 502, 503) == [502, 503]
    assert client.state is State.RCPT
    assert client.accepted_recipients == (rcpt,)


# -- formatting and parsing against the general functions ----------------------------


@settings(max_examples=300, deadline=None)
@given(commands(kinds=[Mail, Rcpt]))
def test_mail_and_rcpt_lines_are_those_of_format_command(command: Mail | Rcpt) -> None:
    client = greeted("PIPELINING", "SIZE 0", "8BITMIME", "SMTPUTF8", "DSN", "REQUIRETLS", "MT-PRIORITY")
    client.tls = True  # REQUIRETLS
    if isinstance(command, Rcpt):
        client.send(Mail(reverse_path="a@example.org", parameters={"SMTPUTF8": None}))
    try:
        line = client.send(command)
    except LocalProtocolError:
        return  # refused by a check (a parameter of an extension not offered, a long line)
    assert line == format_command(command)


@settings(max_examples=300, deadline=None)
@given(replies(max_lines=1), st.booleans())
def test_one_line_replies_parse_as_the_general_path_builds_them(reply: Reply, enhanced_codes: bool) -> None:
    line = format_reply(reply, enhanced_codes=enhanced_codes)[:-2]
    parser = ReplyParser(10)
    parsed = parser.feed(line)
    assert parsed == _build_reply(reply.code, [line[4:].decode("utf-8", "surrogateescape")])
    if enhanced_codes or reply.enhanced is None:
        assert parsed == reply or reply.text[0][:1].isdigit()  # text that looks like a code is read as one
    assert parser.feed(line) is parsed  # the second time, from memory


@pytest.mark.parametrize(
    ("line", "code", "enhanced", "text"),
    [
        (b"250", 250, None, ""),
        (b"250 ", 250, None, ""),
        (b"250 2.1.0", 250, "2.1.0", ""),
        (b"250 2.1.0 ", 250, "2.1.0", ""),
        (b"250 2.1.0 Sender OK", 250, "2.1.0", "Sender OK"),
        (b"250 5.1.0 class differs", 250, None, "5.1.0 class differs"),
        (b"250 2.1.0x not a code", 250, None, "2.1.0x not a code"),
        (b"451 4.3.0 later", 451, "4.3.0", "later"),
        (b"354 go ahead", 354, None, "go ahead"),
        (b"250 \xff\xfe", 250, None, "\udcff\udcfe"),
    ],
)
def test_one_line_reply_fields(line: bytes, code: int, enhanced: str | None, text: str) -> None:
    reply = ReplyParser(10).feed(line)
    assert reply == Reply._trusted(code=code, enhanced=enhanced, text=(text,))
    assert isinstance(reply, Reply) and type(reply.text) is tuple


@pytest.mark.parametrize("line", [b"250 a\rb", b"250 a\x00b", b"250 a\nb"])
def test_one_line_replies_with_control_characters_are_refused(line: bytes) -> None:
    from smtpproto import RemoteProtocolError

    with pytest.raises(RemoteProtocolError, match="control character"):
        ReplyParser(10).feed(line)


def test_a_refused_helo_keeps_what_the_ehlo_offered() -> None:
    from smtpproto import Helo

    client = greeted("PIPELINING")
    client.send(Helo(domain="client.example"))
    assert answer(client, 502) == [502]
    assert client.capabilities.pipelining and client.state is State.READY
    client.send(Helo(domain="client.example"))
    assert answer(client, 250) == [250]
    assert not client.capabilities.pipelining
