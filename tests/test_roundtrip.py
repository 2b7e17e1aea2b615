"""Symmetry: what one core sends, the other receives as an equal event.

Every command a client core sends comes out of a server core equal, and
every reply a server core sends comes out of a client core equal; message
content is compared as the concatenation of its chunks.  Each case runs
with the bytes fed whole and one byte at a time.
"""

from __future__ import annotations

import pytest

from smtpproto import (
    Command,
    Data,
    Ehlo,
    EndOfMessage,
    Event,
    Expn,
    Helo,
    Help,
    Mail,
    MessageData,
    Noop,
    Quit,
    Rcpt,
    Reply,
    Rset,
    ServerConnection,
    State,
    UnknownCommand,
    Vrfy,
)
from smtpproto.extensions import dsn

from helpers import Pair, default_responder, merge_data

BYTE_MODES = pytest.mark.parametrize("byte_at_a_time", [False, True], ids=["whole", "bytewise"])

SESSION_COMMANDS: list[Command] = [
    Noop(),
    Noop(text="hello there"),
    Help(),
    Help(topic="MAIL"),
    Vrfy(text="postmaster"),
    Expn(text="staff"),
    Rset(),
    Mail(reverse_path=""),
    Rset(),
    Mail(reverse_path="a@example.org"),
    Rset(),
    Mail(
        reverse_path='"john q. public"@example.org',
        parameters={"SIZE": "12345", "BODY": "8BITMIME", "RET": "HDRS", "ENVID": "QQ314159"},
    ),
    Rcpt(forward_path="b@[192.0.2.1]"),
    Rcpt(forward_path="c@[IPv6:2001:db8::1]"),
    Rcpt(forward_path="Postmaster"),
    Rcpt(forward_path="d@example.org", parameters={"NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;d+40example.org"}),
    Rset(),
    Mail(reverse_path="jøran@bücher.example", parameters={"SMTPUTF8": None}),
    Rcpt(forward_path="用户@例子.广告"),
    Rset(),
    UnknownCommand(name="XFOO", argument="bar baz"),
]


@BYTE_MODES
def test_every_command_arrives_equal(byte_at_a_time: bool) -> None:
    pair = Pair(byte_at_a_time=byte_at_a_time)
    pair.hello()
    assert pair.server_events == [Ehlo(domain="client.example")]
    for command in SESSION_COMMANDS:
        before = len(pair.server_events)
        pair.send(command)
        assert pair.server_events[before:] == [command]
    assert pair.client.last_command == SESSION_COMMANDS[-1]


@BYTE_MODES
def test_helo_and_quit_arrive_equal(byte_at_a_time: bool) -> None:
    pair = Pair(byte_at_a_time=byte_at_a_time)
    pair.greet()
    pair.send(Helo(domain="[127.0.0.1]"))
    pair.send(Quit())
    assert pair.server_events[:2] == [Helo(domain="[127.0.0.1]"), Quit()]
    assert pair.server.state is State.CLOSED
    assert pair.client.state is State.CLOSED


@BYTE_MODES
def test_pipelined_transaction_and_content(byte_at_a_time: bool) -> None:
    pair = Pair(byte_at_a_time=byte_at_a_time)
    pair.hello()
    mail = Mail(reverse_path="a@example.org", parameters=dsn.mail_parameters(ret="FULL", envid="id+1=2"))
    rcpts = [
        Rcpt(forward_path=f"r{i}@example.org", parameters=dsn.rcpt_parameters(notify=("NEVER",)))
        for i in range(5)
    ]
    replies = pair.send(mail, *rcpts, Data())
    assert [r.code for r in replies if isinstance(r, Reply)] == [250] * 6 + [354]
    body = b".leading dot\r\nbare lf\nbare cr\rend without newline"
    chunks = [body[:3], body[3:17], body[17:30], body[30:]]
    pair.send(*(MessageData(data=c) for c in chunks), EndOfMessage())
    received = merge_data(pair.server_events)
    assert received[1:] == [
        mail,
        *rcpts,
        Data(),
        MessageData(data=b".leading dot\r\nbare lf\r\nbare cr\r\nend without newline\r\n"),
        EndOfMessage(),
    ]
    assert dsn.envid(mail) == "id+1=2"
    assert pair.client.state is State.READY


REPLIES = [
    Reply(code=250),
    Reply(code=250, text=("OK",)),
    Reply(code=250, text=("OK",), enhanced="2.0.0"),
    Reply(code=250, text=("",), enhanced="2.1.5"),
    Reply(code=550, text=("first", "second", "", "last"), enhanced="5.1.1"),
    Reply(code=451, text=("try again", "later")),
    Reply(code=252, text=("Cannot VRFY user",), enhanced="2.5.0"),
    Reply(code=214, text=("help line 1", "help line 2")),
    Reply(code=500, text=("ünïcödé text",)),
]


@BYTE_MODES
@pytest.mark.parametrize("reply", REPLIES, ids=[f"{r.code}-{len(r.text)}" for r in REPLIES])
def test_every_reply_arrives_equal(reply: Reply, byte_at_a_time: bool) -> None:
    def responder(server: ServerConnection, event: Event) -> Reply | None:
        if isinstance(event, Noop):
            return reply
        return default_responder(server, event)

    pair = Pair(responder=responder, byte_at_a_time=byte_at_a_time)
    pair.hello()
    assert pair.send(Noop()) == [reply]


@BYTE_MODES
def test_greeting_and_ehlo_reply_arrive_equal(byte_at_a_time: bool) -> None:
    pair = Pair(byte_at_a_time=byte_at_a_time)
    greeting = pair.server.greeting("smtp.example ready")
    assert pair.greet(greeting) == [greeting]
    assert pair.send(Ehlo(domain="client.example")) == [pair.server.ehlo_reply()]
