"""send_messages() of the three client adapters over loopback sockets:
against our own servers (every client with every server), and against
Postfix, whose stored copies show each message arrived intact.

Each client sends a batch in which one message is refused at RCPT, so the
next group starts with RSET.  The client flow run over a plain socket that
records each write shows message N's content and message N+1's MAIL
leaving in one write (RFC 2920 §3.1).
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from email.message import EmailMessage
from typing import Any, TypeVar

import pytest
import trio

import interop
import peerlib
from smtpproto import Rcpt, Reply
from smtpproto.flows import (
    ClientOptions,
    ClientSession,
    Close,
    Flow,
    Outgoing,
    Receive,
    Send,
    SendResult,
    Session,
    Timeouts,
    TLSMode,
    errors,
    prepare,
    run_sync,
)
from smtpproto.sync import SMTPClient
from test_adapter_matrix import KINDS, Recorder, running

T = TypeVar("T")
SENDER = "alice@example.org"
OPTIONS = ClientOptions(helo_name="client.example", tls=TLSMode.NEVER, timeouts=Timeouts.all(30))


class Refusing(Recorder):
    """Refuses RCPT TO:<nobody@...>; keeps every delivered message."""

    def rcpt(self, session: Session, rcpt: Rcpt) -> Reply | None:
        if rcpt.forward_path.startswith("nobody@"):
            return Reply(code=550, enhanced="5.1.1", text=("no such user",))
        return None


def batch_of(count: int, refused: int | None = None) -> list[Outgoing]:
    messages = []
    for index in range(count):
        to = "nobody@example.org" if index == refused else "carol@example.org"
        content = b"Subject: %d\r\n\r\n.leading dot %d\r\n" % (index, index) + b"line of text\r\n" * 200
        messages.append(prepare(content, SENDER, [to]))
    return messages


def send_messages(kind: str, host: str, port: int, messages: list[Outgoing], options: ClientOptions = OPTIONS) -> list[Any]:
    if kind == "sync":
        with SMTPClient(host, port, options=options) as client:
            return client.send_messages(messages)
    if kind == "asyncio":
        from smtpproto.asyncio import AsyncSMTPClient

        async def main_asyncio() -> list[Any]:
            async with AsyncSMTPClient(host, port, options=options) as client:
                return await client.send_messages(messages)

        return asyncio.run(main_asyncio())
    from smtpproto.trio import TrioSMTPClient

    async def main_trio() -> list[Any]:
        async with TrioSMTPClient(host, port, options=options) as client:
            return await client.send_messages(messages)

    return trio.run(main_trio)


@pytest.mark.parametrize("server_kind", KINDS)
@pytest.mark.parametrize("client_kind", KINDS)
def test_send_messages_every_pair(client_kind: str, server_kind: str) -> None:
    handler = Refusing()
    messages = batch_of(6, refused=2)
    contents = [b"".join(m.chunks) for m in messages]
    with running(server_kind, handler) as (host, port):
        outcomes = send_messages(client_kind, host, port, messages)
    assert [type(o).__name__ for o in outcomes] == ["SendResult"] * 2 + ["RecipientsRefused"] + ["SendResult"] * 3
    assert all(o.pipelined for o in outcomes if isinstance(o, SendResult))
    assert outcomes[2].replies["nobody@example.org"].code == 550
    assert [e.content for e in handler.received] == contents[:2] + contents[3:]


class Recorded:
    """A ClientSession run over a plain socket with ``run_sync`` (the
    public flow API), keeping every write: what any adapter writes, since
    an adapter sends each ``Send`` action whole."""

    def __init__(self, host: str, port: int, options: ClientOptions) -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        self.session = ClientSession(options)
        self.writes: list[bytes] = []
        self.run(self.session.open())

    def _send(self, action: Send) -> None:
        self.writes.append(action.data)
        self.sock.sendall(action.data)

    def run(self, flow: Flow[T]) -> T:
        return run_sync(
            flow,
            {Send: self._send, Receive: lambda action: self.sock.recv(action.size), Close: lambda _: self.sock.close()},
        )


def test_content_and_the_next_mail_leave_in_one_write() -> None:
    handler = Refusing()
    messages = batch_of(4, refused=1)
    with running("sync", handler) as (host, port):
        client = Recorded(host, port, OPTIONS)
        first = len(client.writes)
        outcomes = client.run(client.session.send_many(messages))
        client.run(client.session.quit())
    assert [type(o).__name__ for o in outcomes] == ["SendResult", "RecipientsRefused", "SendResult", "SendResult"]
    writes = client.writes[first:]
    # MAIL..DATA of 0; content 0 + MAIL..DATA of 1 (refused at RCPT: no
    # 354, no content); RSET + MAIL..DATA of 2; content 2 + MAIL..DATA of 3;
    # content 3; QUIT.
    assert len(writes) == 6
    assert b"\r\n.\r\nMAIL FROM:<alice@example.org>" in writes[1]
    assert writes[2].startswith(b"RSET\r\nMAIL FROM:")
    assert writes[3].startswith(b"Subject: 2\r\n") and b"\r\n.\r\nMAIL FROM:" in writes[3]
    assert writes[4].startswith(b"Subject: 3\r\n") and writes[4].endswith(b"\r\n.\r\n")


# -- the sample of docs/sending.rst ---------------------------------------------------


def send_newsletter(host: str, port: int, subscribers: list[str]) -> list[str]:
    """Send one message to each subscriber in one batch; return those to
    try again later."""
    messages = []
    for address in subscribers:
        message = EmailMessage()
        message["From"] = "news@example.org"
        message["To"] = address
        message["Subject"] = "This week"
        message.set_content("Hello!\n")
        messages.append(prepare(message))
    options = ClientOptions(helo_name="client.example", tls=TLSMode.NEVER)
    with SMTPClient(host, port, options=options) as client:
        outcomes = client.send_messages(messages)
    retry = []
    for address, outcome in zip(subscribers, outcomes):
        if isinstance(outcome, errors.SMTPError):
            print(f"{address}: {outcome}")
            if outcome.temporary:
                retry.append(address)
    return retry


class Busy(Recorder):
    """Refuses nobody@ for good and busy@ for now."""

    def rcpt(self, session: Session, rcpt: Rcpt) -> Reply | None:
        if rcpt.forward_path.startswith("nobody@"):
            return Reply(code=550, enhanced="5.1.1", text=("no such user",))
        if rcpt.forward_path.startswith("busy@"):
            return Reply(code=450, enhanced="4.2.1", text=("try later",))
        return None


def test_the_newsletter_sample(capsys: pytest.CaptureFixture[str]) -> None:
    handler = Busy()
    subscribers = ["ann@example.org", "nobody@example.org", "busy@example.org", "bea@example.org"]
    with running("sync", handler) as (host, port):
        retry = send_newsletter(host, port, subscribers)
    assert retry == ["busy@example.org"]
    assert sorted(str(e.recipients[0].forward_path) for e in handler.received) == ["ann@example.org", "bea@example.org"]
    printed = capsys.readouterr().out
    assert "nobody@example.org: every recipient was refused (nobody@example.org: 550)" in printed


# -- against Postfix --------------------------------------------------------------


def unique_message(index: int) -> tuple[bytes, str]:
    message_id = f"<{uuid.uuid4().hex}@client.test.example>"
    content = (
        f"From: <sender@test.example>\r\nTo: <rcpt@test.example>\r\nSubject: batch {index}\r\n"
        f"Date: Sun, 29 Nov 2026 06:00:00 +0000\r\nMessage-ID: {message_id}\r\n\r\n"
        f".leading dot {index}\r\n" + "a line of the body\r\n" * 100
    ).encode()
    return content, message_id


def test_postfix_receives_a_batch_intact(postfix: peerlib.Peer, request: pytest.FixtureRequest) -> None:
    sent = [unique_message(index) for index in range(5)]
    messages = [prepare(content, "sender@test.example", ["rcpt@test.example"]) for content, _ in sent]
    # Relaying is refused to an unauthenticated client: message 2 goes to a
    # domain Postfix does not serve, and is refused at RCPT.
    messages[2] = prepare(sent[2][0], "sender@test.example", ["someone@elsewhere.example"])
    options = ClientOptions(helo_name="client.test.example", tls=TLSMode.NEVER, timeouts=Timeouts.all(30))
    with SMTPClient(postfix.host, postfix.port, options=options) as client:
        outcomes = client.send_messages(messages)
    # The same batch again, over a socket whose writes are kept.
    again = [unique_message(index) for index in range(2)]
    recorded = Recorded(postfix.host, postfix.port, options)
    second = recorded.run(recorded.session.send_many(
        [prepare(content, "sender@test.example", ["rcpt@test.example"]) for content, _ in again]
    ))
    recorded.run(recorded.session.quit())
    assert [type(o).__name__ for o in second] == ["SendResult", "SendResult"]
    assert [type(o).__name__ for o in outcomes] == ["SendResult"] * 2 + ["RecipientsRefused"] + ["SendResult"] * 2
    assert isinstance(outcomes[2], errors.RecipientsRefused)
    assert outcomes[2].replies["someone@elsewhere.example"].code == 554
    # Postfix offered PIPELINING and the batch used it: message 0's content
    # and message 1's MAIL went in one write.
    assert any(b"batch 0\r\n" in w and b"\r\n.\r\nMAIL FROM:<sender@test.example>" in w for w in recorded.writes)
    assert all(o.pipelined for o in outcomes + second if isinstance(o, SendResult))
    for content, message_id in [sent[0], sent[1], sent[3], sent[4], *again]:
        assert peerlib.body_of(postfix.find(message_id)) == peerlib.normalised(content)
    interop.record(
        peer=f"Postfix {_postfix_version()}",
        direction=interop.CLIENT,
        ours="sync",
        scenario="a batch pipelined across messages (send_messages), a refusal inside",
        test=request.node.nodeid,
        tls="",
        auth="",
        pipelining=True,
        chunking=False,
        smtputf8=False,
    )


def _postfix_version() -> str:
    from test_interop_client import postfix_version

    return postfix_version()
