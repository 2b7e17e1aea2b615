"""LMTP (RFC 2033) in both cores."""

from __future__ import annotations

import pytest

from smtpproto import (
    Bdat,
    ClientConfig,
    ClientConnection,
    CommandRejected,
    Data,
    Ehlo,
    EndOfMessage,
    Event,
    Helo,
    Lhlo,
    LocalProtocolError,
    Mail,
    MessageData,
    MessageRejected,
    Quit,
    Rcpt,
    Reply,
    ServerConfig,
    ServerConnection,
    State,
)

from helpers import Pair, default_responder, replies_of, server_events

LMTP = ServerConfig(lmtp=True)


def per_recipient(server: ServerConnection, event: Event) -> Reply | None:
    """Deliver to x@, refuse everybody else, one reply each."""
    if isinstance(event, (EndOfMessage, MessageRejected)):
        index = len(server.recipients) - server.replies_due
        rcpt = server.recipients[index]
        if rcpt.forward_path.startswith("x"):
            return Reply(code=250, text=(f"<{rcpt.forward_path}> delivered",), enhanced="2.0.0")
        return Reply(code=550, text=(f"<{rcpt.forward_path}> no mailbox",), enhanced="5.1.1")
    return default_responder(server, event)


def lmtp_pair(responder: object = per_recipient) -> Pair:
    pair = Pair(LMTP, client=ClientConnection(ClientConfig(lmtp=True)), responder=responder)  # type: ignore[arg-type]
    pair.greet()
    pair.send(Lhlo(domain="c.example"))
    return pair


@pytest.mark.parametrize("use_bdat", [False, True], ids=["DATA", "BDAT"])
def test_one_reply_per_accepted_recipient(use_bdat: bool) -> None:
    pair = lmtp_pair()
    assert pair.server.greeting().text[0].endswith("LMTP smtpproto")
    replies = pair.send(
        Mail(reverse_path="a@example.org"),
        Rcpt(forward_path="x@example.org"),
        Rcpt(forward_path="y@example.org"),
        Rcpt(forward_path="x2@example.org"),
        *([] if use_bdat else [Data()]),
    )
    if use_bdat:
        replies += pair.send(Bdat(size=4, last=True), MessageData(data=b"hi\r\n"), EndOfMessage())
    else:
        replies += pair.send(MessageData(data=b"hi\n"), EndOfMessage())
    final = replies[-3:]
    assert [r.code for r in final if isinstance(r, Reply)] == [250, 550, 250]
    assert pair.client.state is State.READY and pair.server.state is State.READY
    # The client names the recipient each reply is about.
    assert pair.client.lmtp_recipient == Rcpt(forward_path="x2@example.org")
    assert pair.client.accepted_recipients == (
        Rcpt(forward_path="x@example.org"),
        Rcpt(forward_path="y@example.org"),
        Rcpt(forward_path="x2@example.org"),
    )


def test_client_reports_each_recipient_in_order() -> None:
    client = ClientConnection(ClientConfig(lmtp=True))
    client.receive_data(b"220 lmtp\r\n250-s\r\n250 PIPELINING\r\n")
    client.next_event()
    client.send(Lhlo(domain="c.example"))
    client.next_event()
    client.send(Mail(reverse_path="a@example.org"))
    client.send(Rcpt(forward_path="one@example.org"))
    client.send(Rcpt(forward_path="bad@example.org"))
    client.send(Rcpt(forward_path="two@example.org"))
    client.send(Data())
    client.receive_data(b"250 ok\r\n250 ok\r\n550 no\r\n250 ok\r\n354 go\r\n")
    for _ in range(5):
        client.next_event()
    client.send(MessageData(data=b"x\n"))
    client.send(EndOfMessage())
    client.receive_data(b"250 2.0.0 one ok\r\n452 4.2.2 two full\r\n")
    seen = []
    for _ in range(2):
        reply = client.next_event()
        assert isinstance(reply, Reply)
        assert client.lmtp_recipient is not None
        seen.append((client.lmtp_recipient.forward_path, reply.code))
        assert isinstance(client.last_command, EndOfMessage)
    assert seen == [("one@example.org", 250), ("two@example.org", 452)]
    assert client.state is State.READY


def test_lmtp_server_refuses_ehlo_and_helo() -> None:
    for line in (b"EHLO c.example\r\n", b"HELO c.example\r\n"):
        events, out = server_events(line, LMTP)
        assert isinstance(events[-1], CommandRejected)
        assert out.startswith(b"500 5.5.1 This is an LMTP server: use LHLO")


def test_smtp_server_does_not_know_lhlo() -> None:
    events, out = server_events(b"LHLO c.example\r\n")
    assert isinstance(events[-1], CommandRejected) and out.startswith(b"500 5.5.1")


def test_lmtp_client_sends_only_lhlo() -> None:
    client = ClientConnection(ClientConfig(lmtp=True))
    client.receive_data(b"220 lmtp\r\n")
    client.next_event()
    for command in (Ehlo(domain="c"), Helo(domain="c")):
        with pytest.raises(LocalProtocolError, match="sends LHLO"):
            client.send(command)
    smtp = ClientConnection()
    smtp.receive_data(b"220 smtp\r\n")
    smtp.next_event()
    with pytest.raises(LocalProtocolError, match="LHLO is for LMTP"):
        smtp.send(Lhlo(domain="c"))


def test_lmtp_rejected_message_gets_a_reply_per_recipient() -> None:
    data = (
        b"LHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<x@example.org>\r\n"
        b"RCPT TO:<y@example.org>\r\nDATA\r\nbare\nlf\r\n.\r\nQUIT\r\n"
    )
    events, out = server_events(data, LMTP)
    assert replies_of(out)[-3:] == [554, 554, 221]
    assert any(isinstance(e, MessageRejected) for e in events)


def test_421_ends_lmtp_replies_early() -> None:
    def shutdown(server: ServerConnection, event: Event) -> Reply | None:
        if isinstance(event, EndOfMessage):
            return Reply(code=421, text=("bye",), enhanced="4.3.2")
        return default_responder(server, event)

    pair = lmtp_pair(shutdown)
    pair.send(Mail(reverse_path="a@example.org"), Rcpt(forward_path="x@example.org"),
              Rcpt(forward_path="y@example.org"), Data())
    replies = pair.send(MessageData(data=b"m\n"), EndOfMessage())
    assert [r.code for r in replies if isinstance(r, Reply)] == [421]
    assert pair.server.state is State.CLOSED and pair.client.state is State.CLOSED
    assert pair.server.replies_due == 0


def test_quit_after_lmtp_delivery() -> None:
    pair = lmtp_pair()
    pair.send(Mail(reverse_path="a@example.org"), Rcpt(forward_path="x@example.org"), Data())
    pair.send(MessageData(data=b"m\n"), EndOfMessage())
    assert pair.send(Quit())[0] == Reply(code=221, text=("Bye",), enhanced="2.0.0")


def test_refused_lmtp_session_answers_hello_with_503() -> None:
    """RFC 5321 §3.1: after a 554 greeting, 503 to anything but QUIT, the
    LMTP server's "use LHLO" included."""
    server = ServerConnection(LMTP)
    server.send(Reply(code=554, text=("no service",), enhanced="5.3.2"))
    for line in (b"EHLO c\r\n", b"HELO c\r\n", b"LHLO c\r\n"):
        server.receive_data(line)
        event = server.next_event()
        assert isinstance(event, CommandRejected) and event.reply.code == 503, line
        server.send(event.reply)
