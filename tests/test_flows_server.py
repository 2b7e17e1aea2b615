"""ServerSession: the handler hooks, their replies and failures, and how a
session ends (in memory through flowpair.Link, over loopback where the
adapter's timers and threads matter)."""

from __future__ import annotations

import base64
import socket
from typing import Any

import pytest

from flowpair import AuthRecorder, Link, Recorder
from smtpproto import Mail, Rcpt, Reply, ServerConfig, sasl
from smtpproto.flows import (
    Call,
    ClientOptions,
    Close,
    Envelope,
    Handler,
    Receive,
    Reject,
    Send,
    ServerSession,
    ServerTimeouts,
    Session,
    Shutdown,
    StartTLS,
    TLSMode,
    prepare,
    run_sync,
)
from smtpproto.flows._handler import HOOKS, overridden_hooks
from smtpproto.sync import ServerThread

MESSAGE = b"Subject: test\r\n\r\nHello.\r\n"


def reply(code: int, text: str = "text", enhanced: str | None = None) -> Reply:
    return Reply(code=code, text=(text,), enhanced=enhanced)


def talk(link: Link, *lines: bytes) -> list[bytes]:
    """Write each line and collect the server's answer to it."""
    answers = []
    for line in lines:
        link.write(line)
        answers.append(link.read())
    return answers


def session_through(link: Link) -> None:
    link.read()  # the greeting
    talk(link, b"EHLO client.example\r\n", b"MAIL FROM:<a@example.org>\r\n", b"RCPT TO:<b@example.org>\r\n")


# -- every hook, its arguments and its reply -------------------------------------


def test_every_hook_with_its_arguments_and_reply() -> None:
    handler = AuthRecorder(
        connect=reply(220, "custom greeting"),
        mail=reply(250, "sender fine", "2.1.0"),
        rcpt=reply(251, "will forward", "2.1.5"),
        message=reply(250, "queued as 42", "2.0.0"),
        vrfy=reply(250, "Bob <bob@example.org>", "2.1.5"),
    )
    link = Link(handler, ServerConfig(auth_mechanisms=("PLAIN",)), server_tls=True, peer=("198.51.100.1", 2525))
    assert link.read() == b"220 custom greeting\r\n"
    ehlo, auth, vrfy, mail, rcpt, data, end, rset, quit = talk(
        link,
        b"EHLO client.example\r\n",
        b"AUTH PLAIN " + base64.b64encode(b"\0user\0secret pass") + b"\r\n",
        b"VRFY bob\r\n",
        b"MAIL FROM:<a@example.org> SIZE=26\r\n",
        b"RCPT TO:<b@example.org> NOTIFY=NEVER\r\n",
        b"DATA\r\n",
        MESSAGE + b".\r\n",
        b"RSET\r\n",
        b"QUIT\r\n",
    )
    assert ehlo.startswith(b"250-localhost\r\n") and b"AUTH PLAIN" in ehlo
    assert auth.startswith(b"235 ")
    assert vrfy == b"250 2.1.5 Bob <bob@example.org>\r\n"
    assert mail == b"250 2.1.0 sender fine\r\n"
    assert rcpt == b"251 2.1.5 will forward\r\n"
    assert data.startswith(b"354")
    assert end == b"250 2.0.0 queued as 42\r\n"
    assert rset.startswith(b"250") and quit.startswith(b"221")
    assert handler.names() == [
        "connect", "ehlo", "auth", "vrfy", "mail", "rcpt", "message", "rset", "quit", "disconnect",
    ]
    assert handler.args("ehlo") == [("client.example",)]
    (request,) = handler.args("auth")[0]
    assert request == sasl.CheckPassword(authcid="user", password="secret pass")
    assert handler.args("vrfy") == [("bob",)]
    (mail_cmd,) = handler.args("mail")[0]
    assert isinstance(mail_cmd, Mail) and mail_cmd.reverse_path == "a@example.org"
    assert mail_cmd.parameters == {"SIZE": "26"}
    (rcpt_cmd,) = handler.args("rcpt")[0]
    assert isinstance(rcpt_cmd, Rcpt) and rcpt_cmd.parameters == {"NOTIFY": "NEVER"}
    (envelope,) = handler.args("message")[0]
    assert isinstance(envelope, Envelope)
    assert envelope.sender == "a@example.org"
    assert envelope.recipient_addresses == ["b@example.org"]
    assert envelope.mail == mail_cmd and envelope.recipients == [rcpt_cmd]
    assert envelope.content == MESSAGE
    sessions = {id(seen["session"]) for seen in handler.seen}
    assert len(sessions) == 1  # one Session object throughout
    assert all(seen["peer"] == ("198.51.100.1", 2525) for seen in handler.seen)
    assert link.server.delivered == 1
    assert link.server_done and link.server_closed


def test_none_gives_the_usual_replies() -> None:
    handler = Recorder()
    link = Link(handler)
    assert link.read() == b"220 localhost ESMTP smtpproto\r\n"
    answers = talk(
        link,
        b"HELO client.example\r\n",
        b"VRFY bob\r\n",
        b"MAIL FROM:<>\r\n",
        b"RCPT TO:<Postmaster>\r\n",
        b"DATA\r\n",
        b".\r\n",
    )
    assert answers == [
        b"250 localhost\r\n",
        b"252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n",
        b"250 2.1.0 Sender OK\r\n",
        b"250 2.1.5 Recipient OK\r\n",
        b"354 End data with <CR><LF>.<CR><LF>\r\n",
        b"250 2.0.0 Message accepted for delivery\r\n",
    ]
    (envelope,) = handler.args("message")[0]
    assert envelope.sender == "" and envelope.content == b""


def test_the_default_handler() -> None:
    handler = Handler()
    link = Link(handler, ServerConfig(auth_mechanisms=("PLAIN",), auth_plaintext=True))
    link.read()
    ehlo, vrfy, *rest = talk(
        link,
        b"EHLO c.example\r\n",
        b"VRFY x\r\n",
        b"MAIL FROM:<a@example.org>\r\n",
        b"RCPT TO:<b@example.org>\r\n",
        b"DATA\r\n",
        b"x\r\n.\r\n",
        b"RSET\r\n",
        b"QUIT\r\n",
    )
    assert b"AUTH" not in ehlo  # no verifier, no AUTH
    assert vrfy.startswith(b"252")
    assert [answer[:3] for answer in rest] == [b"250", b"250", b"354", b"250", b"250", b"221"]
    assert handler.auth(Session(), None) is None
    assert link.server_done


def test_reject_from_each_hook() -> None:
    refusal = reply(550, "refused here", "5.7.1")
    for hook, line in [
        ("ehlo", b"EHLO c.example\r\n"),
        ("vrfy", b"VRFY x\r\n"),
        ("mail", b"MAIL FROM:<a@example.org>\r\n"),
    ]:
        link = Link(Recorder(**{hook: Reject(refusal)}))
        link.read()
        if hook != "ehlo":
            talk(link, b"EHLO c.example\r\n")
        assert talk(link, line) == [b"550 5.7.1 refused here\r\n"]
    link = Link(Recorder(rcpt=Reject(refusal), message=Reject(reply(554, "no thanks", "5.6.0"))))
    link.read()
    answers = talk(
        link,
        b"EHLO c.example\r\n",
        b"MAIL FROM:<a@example.org>\r\n",
        b"RCPT TO:<b@example.org>\r\n",
        b"RSET\r\n",
    )
    assert answers[2] == b"550 5.7.1 refused here\r\n"
    assert str(Reject(refusal)) == "550 refused here"
    link = Link(Recorder(message=Reject(reply(554, "no thanks", "5.6.0"))))
    session_through(link)
    assert talk(link, b"DATA\r\n", b"x\r\n.\r\n")[1] == b"554 5.6.0 no thanks\r\n"
    assert link.server.delivered == 0


def test_connect_reject_refuses_the_session() -> None:
    link = Link(Recorder(connect=Reject(reply(554, "no service", "5.3.2"))))
    assert link.read() == b"554 5.3.2 no service\r\n"
    assert talk(link, b"EHLO c.example\r\n", b"QUIT\r\n")[0].startswith(b"503")
    assert link.server_done


def test_hook_exception_is_451_and_the_session_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    boom = RuntimeError("database down")
    handler = Recorder(mail=boom, vrfy=boom, rset=boom, quit=boom)
    link = Link(handler)
    link.read()
    answers = talk(
        link,
        b"EHLO c.example\r\n",
        b"MAIL FROM:<a@example.org>\r\n",
        b"VRFY x\r\n",
        b"RSET\r\n",
        b"NOOP\r\n",
        b"QUIT\r\n",
    )
    assert answers[1] == b"451 4.3.0 Local error in processing, try again later\r\n"
    assert answers[2] == answers[1]
    assert answers[3].startswith(b"250") and answers[4].startswith(b"250")  # RSET, NOOP: usual
    assert answers[5].startswith(b"221")
    assert "the mail hook failed" in caplog.text and "database down" in caplog.text


def test_connect_exception_still_greets_with_451() -> None:
    link = Link(Recorder(connect=RuntimeError("no")))
    assert link.read() == b"451 4.3.0 Local error in processing, try again later\r\n"
    assert link.server_done


def test_auth_hook_failures() -> None:
    config = ServerConfig(auth_mechanisms=("PLAIN",))
    plain = b"AUTH PLAIN " + base64.b64encode(b"\0user\0secret pass") + b"\r\n"
    for answer, expected in [
        (RuntimeError("ldap down"), b"451 4.3.0"),
        (Reject(reply(454, "try later", "4.7.0")), b"454 4.7.0"),
        (reply(454, "temporary", "4.7.0"), b"454 4.7.0"),
    ]:
        link = Link(AuthRecorder(auth=answer), config, server_tls=True)
        link.read()
        assert talk(link, b"EHLO c\r\n", plain)[1].startswith(expected)
        assert link.server.session.auth_identity is None


def test_auth_offered_only_with_a_verifier() -> None:
    config = ServerConfig(auth_mechanisms=("PLAIN", "SCRAM-SHA-256"), require_auth=True)
    without = Link(Recorder(), config, server_tls=True)
    without.read()
    ehlo, mail = talk(without, b"EHLO c\r\n", b"MAIL FROM:<a@example.org>\r\n")
    assert b"AUTH" not in ehlo
    assert mail.startswith(b"250")  # require_auth went with the AUTH offer
    with_auth = Link(AuthRecorder(), config, server_tls=True)
    with_auth.read()
    ehlo, mail = talk(with_auth, b"EHLO c\r\n", b"MAIL FROM:<a@example.org>\r\n")
    assert b"250-AUTH PLAIN SCRAM-SHA-256\r\n" in ehlo
    assert mail.startswith(b"530")


def test_session_values_seen_by_hooks() -> None:
    handler = AuthRecorder()

    def mail(session: Session, command: Mail) -> None:
        session.data["mails"] = session.data.get("mails", 0) + 1

    handler.answers["mail"] = mail
    handler.answers["connect"] = lambda session: session.data.update(started=True)
    link = Link(
        handler,
        ServerConfig(starttls=True, auth_mechanisms=("SCRAM-SHA-256",)),
        options=ClientOptions(username="user", password="secret pass"),
    )
    link.open()
    for _ in range(2):
        link.run(link.client.send(prepare(MESSAGE, "a@example.org", ["b@example.org"])))
    link.run(link.client.quit())
    seen = [(s["hook"], s["tls"], s["ehlo_name"], s["auth_identity"]) for s in handler.seen]
    assert seen[:4] == [
        ("connect", False, None, None),
        ("ehlo", False, None, None),
        ("ehlo", True, None, None),  # STARTTLS forgot the name
        ("auth", True, "localhost", None),
    ]
    assert ("mail", True, "localhost", "user") in seen
    assert seen[-1] == ("disconnect", True, "localhost", "user")
    data = handler.seen[-1]["session"].data
    assert data == {"started": True, "mails": 2}


def test_auth_identity_is_the_authzid_when_given() -> None:
    link = Link(AuthRecorder(), ServerConfig(auth_mechanisms=("PLAIN",)), server_tls=True)
    link.read()
    answers = talk(link, b"EHLO c\r\n", b"AUTH PLAIN " + base64.b64encode(b"boss\0user\0secret pass") + b"\r\n")
    assert answers[1].startswith(b"235")
    assert link.server.session.auth_identity == "boss"


# -- streaming and message replies -------------------------------------------------------


class Streaming(Recorder):
    streaming = True


def test_streaming_handler_gets_the_content_in_chunks() -> None:
    handler = Streaming()
    link = Link(handler)
    session_through(link)
    body = b"".join(b"line %05d with a .dot\r\n.leading dot\r\n" % index for index in range(3000))
    stuffed = body.replace(b"\r\n.", b"\r\n..")
    link.write(b"DATA\r\n")
    link.read()
    for start in range(0, len(stuffed), 7001):
        link.write(stuffed[start : start + 7001])
    assert talk(link, b".\r\n")[0].startswith(b"250")
    chunks = [args[0] for args in handler.args("message_data")]
    assert len(chunks) > 1
    assert b"".join(chunks) == body
    (envelope,) = handler.args("message")[0]
    assert envelope.content is None


def test_streaming_handler_over_bdat() -> None:
    handler = Streaming()
    link = Link(handler)
    session_through(link)
    answers = talk(link, b"BDAT 5\r\nhello", b"BDAT 7 LAST\r\n world\n")
    assert [a[:3] for a in answers] == [b"250", b"250"]
    assert b"".join(args[0] for args in handler.args("message_data")) == b"hello world\n"


def test_streaming_failure_refuses_the_message() -> None:
    calls = []

    def chunk(session: Session, data: bytes) -> None:
        calls.append(data)
        raise OSError("disk full")

    handler = Streaming(message_data=chunk)
    link = Link(handler)
    session_through(link)
    link.write(b"DATA\r\n")
    link.read()
    link.write(b"first\r\n")
    link.write(b"second\r\n")
    assert talk(link, b".\r\n") == [b"451 4.3.0 Local error in processing, try again later\r\n"]
    assert len(calls) == 1  # the rest skipped the hook
    assert "message" not in handler.names()
    assert link.server.delivered == 0
    # The next message starts afresh.
    handler.answers.pop("message_data")
    talk(link, b"MAIL FROM:<a@example.org>\r\n", b"RCPT TO:<b@example.org>\r\n", b"DATA\r\n")
    assert talk(link, b"ok\r\n.\r\n")[0].startswith(b"250")
    assert link.server.delivered == 1


def test_streaming_hook_may_return_its_refusal() -> None:
    handler = Streaming(message_data=reply(452, "no room", "4.3.1"))
    link = Link(handler)
    session_through(link)
    assert talk(link, b"DATA\r\n", b"x\r\n.\r\n")[1] == b"452 4.3.1 no room\r\n"
    assert "message" not in handler.names()


def test_streaming_reject_gives_its_reply() -> None:
    handler = Streaming(message_data=Reject(reply(552, "quota", "5.2.2")))
    link = Link(handler, ServerConfig(lmtp=True))
    link.read()
    talk(link, b"LHLO c\r\n", b"MAIL FROM:<a@example.org>\r\n", b"RCPT TO:<b@example.org>\r\n")
    talk(link, b"RCPT TO:<c@example.org>\r\n", b"DATA\r\n")
    assert talk(link, b"x\r\n.\r\n") == [b"552 5.2.2 quota\r\n552 5.2.2 quota\r\n"]


def test_streaming_refusal_forgotten_after_rset_and_rejection() -> None:
    handler = Streaming(message_data=RuntimeError("no"))
    link = Link(handler, ServerConfig(max_message_size=65536))
    session_through(link)
    link.write(b"BDAT 3\r\nabc")
    assert link.read().startswith(b"250")
    assert talk(link, b"RSET\r\n")[0].startswith(b"250")
    handler.answers.pop("message_data")
    talk(link, b"MAIL FROM:<a@example.org>\r\n", b"RCPT TO:<b@example.org>\r\n")
    assert talk(link, b"BDAT 3 LAST\r\nabc")[0].startswith(b"250")
    handler.answers["message_data"] = RuntimeError("no")
    talk(link, b"MAIL FROM:<a@example.org>\r\n", b"RCPT TO:<b@example.org>\r\n", b"DATA\r\n")
    link.write(b"x" * 70000 + b"\r\n")
    assert talk(link, b".\r\n")[0].startswith(b"552")  # the core's refusal: too big
    handler.answers.pop("message_data")
    talk(link, b"MAIL FROM:<a@example.org>\r\n", b"RCPT TO:<b@example.org>\r\n")
    assert talk(link, b"BDAT 2 LAST\r\nok")[0].startswith(b"250")
    assert link.server.delivered == 2


def test_lmtp_message_hook_returns_a_reply_per_recipient() -> None:
    answers = [reply(250, "ok a", "2.0.0"), reply(452, "full b", "4.2.2")]
    handler = Recorder(message=lambda session, envelope: answers)
    link = Link(handler, ServerConfig(lmtp=True))
    link.read()
    talk(link, b"LHLO c\r\n", b"MAIL FROM:<x@example.org>\r\n")
    talk(link, b"RCPT TO:<a@example.org>\r\n", b"RCPT TO:<b@example.org>\r\n", b"DATA\r\n")
    assert talk(link, b"body\r\n.\r\n") == [b"250 2.0.0 ok a\r\n452 4.2.2 full b\r\n"]
    assert link.server.delivered == 1


@pytest.mark.parametrize("count", [1, 3])
def test_lmtp_wrong_number_of_replies_is_451_each(count: int, caplog: pytest.LogCaptureFixture) -> None:
    handler = Recorder(message=lambda session, envelope: [reply(250, "ok")] * count)
    link = Link(handler, ServerConfig(lmtp=True))
    link.read()
    talk(link, b"LHLO c\r\n", b"MAIL FROM:<x@example.org>\r\n")
    talk(link, b"RCPT TO:<a@example.org>\r\n", b"RCPT TO:<b@example.org>\r\n", b"DATA\r\n")
    local = b"451 4.3.0 Local error in processing, try again later\r\n"
    assert talk(link, b"body\r\n.\r\n") == [local * 2]
    assert "gave %d replies for 2 recipients" % count in caplog.text
    assert link.server.delivered == 0


def test_a_reply_the_protocol_forbids_is_logged_and_replaced(caplog: pytest.LogCaptureFixture) -> None:
    handler = Recorder(rcpt=reply(354, "go on"), message=reply(334, "what"), connect=reply(354, "hi"))
    link = Link(handler)
    local = b"451 4.3.0 Local error in processing, try again later\r\n"
    assert link.read() == local  # a 451 greeting: the session is over
    assert link.server_done
    handler.answers.pop("connect")
    link = Link(handler)
    session_through(link)
    link.write(b"RCPT TO:<c@example.org>\r\n")
    assert link.read() == local
    assert "the rcpt hook's reply 354 is not allowed here" in caplog.text


def test_hook_replying_421_ends_the_session() -> None:
    handler = Recorder(mail=reply(421, "going down", "4.3.2"))
    link = Link(handler)
    link.read()
    assert talk(link, b"EHLO c\r\n", b"MAIL FROM:<a@example.org>\r\n")[1] == b"421 4.3.2 going down\r\n"
    assert link.server_done and link.server_closed and handler.names()[-1] == "disconnect"


# -- how sessions end ----------------------------------------------------------------------


def test_cut_mid_data_calls_no_message_hook() -> None:
    for streaming in (False, True):
        handler = Streaming() if streaming else Recorder()
        link = Link(handler)
        session_through(link)
        talk(link, b"DATA\r\n", b"Subject: half a message\r\n")
        link.close_client()
        assert "message" not in handler.names()
        assert handler.names()[-1] == "disconnect" and link.server_done
        assert link.server.delivered == 0


def test_cut_mid_bdat_calls_no_message_hook() -> None:
    handler = Recorder()
    link = Link(handler)
    session_through(link)
    link.write(b"BDAT 100 LAST\r\nonly part")
    link.close_client()
    assert "message" not in handler.names() and handler.names()[-1] == "disconnect"


def test_timeouts_handed_to_the_adapter() -> None:
    link = Link(timeouts=ServerTimeouts(command=11, data=22))
    session_through(link)
    talk(link, b"DATA\r\n", b"partial\r\n")
    assert link.server_receive_timeouts[0] == 11
    assert link.server_receive_timeouts[-1] == 22
    assert ServerTimeouts() == ServerTimeouts(command=300.0, data=300.0)


def test_timeout_is_421_4_4_2() -> None:
    handler = Recorder()
    link = Link(handler)
    link.read()
    link.throw_into_server(TimeoutError())
    assert link.read() == b"421 4.4.2 Timeout, closing connection\r\n"
    assert link.server_done and handler.names() == ["connect", "disconnect"]


def test_timeout_mid_data_delivers_nothing() -> None:
    handler = Recorder()
    link = Link(handler)
    session_through(link)
    talk(link, b"DATA\r\n", b"partial\r\n")
    link.throw_into_server(TimeoutError())
    assert link.read().startswith(b"421 4.4.2")
    assert "message" not in handler.names()


def test_timeout_when_the_client_is_gone_too() -> None:
    handler = Recorder()
    link = Link(handler)
    link.read()
    link.client_closed = True  # the 421 cannot be written
    link.throw_into_server(TimeoutError())
    assert link.read() == b"" and link.server_done and handler.names()[-1] == "disconnect"


def test_shutdown_is_421_4_3_2() -> None:
    link = Link()
    link.read()
    link.throw_into_server(Shutdown())
    assert link.read() == b"421 4.3.2 Service shutting down, closing connection\r\n"
    assert link.server_done and link.server_closed


def test_connection_lost_while_waiting() -> None:
    handler = Recorder()
    link = Link(handler)
    link.read()
    link.throw_into_server(ConnectionResetError("reset by peer"))
    assert link.read() == b"" and handler.names() == ["connect", "disconnect"]


def test_client_gone_when_replies_are_written() -> None:
    handler = Recorder()
    link = Link(handler)
    link.read()
    link.client_closed = True  # the next write fails; the read sees the rest
    link.write(b"EHLO c\r\n")
    assert handler.names() == ["connect", "ehlo", "disconnect"] and link.server_done


def test_remote_protocol_error_gets_its_reply_then_close() -> None:
    link = Link(config=ServerConfig(starttls=True))
    link.read()
    talk(link, b"EHLO c\r\n")
    # Cleartext pipelined after STARTTLS (attack class 3).
    link.write(b"STARTTLS\r\nMAIL FROM:<evil@example.org>\r\n")
    assert link.read() == b"554 5.5.1 Command pipelined after STARTTLS\r\n"
    assert not link.server_tls_started
    assert link.server_done and link.server_closed


def test_input_flood_is_answered_then_closed() -> None:
    handler = Recorder()
    link = Link(handler, ServerConfig(max_receive_buffer=1024))
    link.read()
    link.write(b"x" * 5000)
    assert link.read().startswith(b"500") or link.server_done
    link.write(b"y" * 300000)
    assert link.server_done and handler.names()[-1] == "disconnect"


def test_disconnect_hook_failure_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    link = Link(Recorder(disconnect=RuntimeError("cleanup failed")))
    link.read()
    link.close_client()
    assert link.server_done and link.server_closed
    assert "the disconnect hook failed" in caplog.text


# -- trusted peers: XCLIENT and the PROXY protocol -------------------------------------------


def test_xclient_from_a_trusted_peer_changes_the_peer() -> None:
    handler = Recorder()
    link = Link(handler, trusted=True, peer=("10.0.0.1", 1))
    link.read()
    ehlo, xclient, _, mail = talk(
        link,
        b"EHLO proxy\r\n",
        b"XCLIENT ADDR=203.0.113.9 PORT=4567\r\n",
        b"EHLO real-client\r\n",
        b"MAIL FROM:<a@example.org>\r\n",
    )
    assert b"XCLIENT" in ehlo
    assert xclient.startswith(b"220")
    assert mail.startswith(b"250")
    assert [s["peer"] for s in handler.seen if s["hook"] == "mail"] == [("203.0.113.9", "4567")]


def test_xclient_without_addr_keeps_the_peer() -> None:
    handler = Recorder()
    link = Link(handler, trusted=True, peer=("10.0.0.1", 1))
    link.read()
    talk(link, b"EHLO proxy\r\n", b"XCLIENT NAME=client.example\r\n", b"EHLO c\r\n")
    assert handler.seen[-1]["peer"] == ("10.0.0.1", 1)


def test_xclient_from_an_untrusted_peer_is_refused() -> None:
    handler = Recorder()
    link = Link(handler, peer=("10.0.0.1", 1))
    link.read()
    ehlo, xclient = talk(link, b"EHLO c\r\n", b"XCLIENT ADDR=203.0.113.9\r\n")
    assert b"XCLIENT" not in ehlo and xclient[:1] == b"5"
    assert link.server.session.peer == ("10.0.0.1", 1)


def test_proxy_header_before_the_greeting() -> None:
    handler = Recorder()
    link = Link(handler, ServerConfig(proxy_protocol=True), peer=("10.0.0.1", 1))
    assert link.read() == b""  # no greeting before the header
    link.write(b"PROXY TCP4 203.0.113.5 192.0.2.1 40001 25\r\n")
    assert link.read().startswith(b"220")
    assert handler.seen[0]["peer"] == ("203.0.113.5", 40001)
    proxy = handler.seen[0]["session"].proxy
    assert proxy.version == 1 and proxy.destination_port == 25


def test_proxy_header_without_addresses_keeps_the_peer() -> None:
    handler = Recorder()
    link = Link(handler, ServerConfig(proxy_protocol=True), peer=("10.0.0.1", 1))
    link.write(b"PROXY UNKNOWN\r\n")
    assert link.read().startswith(b"220")
    assert handler.seen[0]["peer"] == ("10.0.0.1", 1)


def test_bad_or_missing_proxy_header() -> None:
    handler = Recorder()
    link = Link(handler, ServerConfig(proxy_protocol=True))
    link.write(b"EHLO c\r\n")
    assert link.server_done and "connect" not in handler.names()
    handler = Recorder()
    link = Link(handler, ServerConfig(proxy_protocol=True))
    link.close_client()
    assert link.server_done and handler.names() == ["disconnect"]


# -- the flow's own actions ------------------------------------------------------------------


class Greeter(Handler):
    def connect(self, session: Session) -> Reply | None:
        return None

    def disconnect(self, session: Session) -> None:
        pass


def test_actions_of_a_session() -> None:
    flow = ServerSession(Greeter()).run()
    assert flow.send(None) == Call("connect", (flow.gi_frame.f_locals["self"].session,))
    assert flow.send(None) == Send(b"220 localhost ESMTP smtpproto\r\n", 300.0)
    assert flow.send(None) == Receive(300.0)
    assert isinstance(flow.send(b""), Call)  # EOF: the disconnect hook
    assert flow.send(None) == Close()
    with pytest.raises(StopIteration):
        flow.send(None)


def test_hooks_left_as_handler_has_them_are_not_called() -> None:
    # Handler's own hooks do nothing and return None: the flow makes no
    # Call for them, and the replies are the same as when they are called.
    def actions(handler: Handler) -> tuple[list[str], bytes]:
        flow = ServerSession(handler).run()
        hooks: list[str] = []
        wire = b""
        inputs = [
            b"EHLO c\r\n", b"MAIL FROM:<a@x.example>\r\n", b"RCPT TO:<b@y.example>\r\n",
            b"DATA\r\n", b"hi\r\n.\r\n", b"VRFY b\r\n", b"RSET\r\n", b"QUIT\r\n", b"",
        ]
        action = flow.send(None)
        while not isinstance(action, Close):
            if isinstance(action, Call):
                hooks.append(action.hook)
                action = flow.send(getattr(handler, action.hook)(*action.args))
            elif isinstance(action, Send):
                wire += action.data
                action = flow.send(None)
            else:
                assert isinstance(action, Receive)
                action = flow.send(inputs.pop(0))
        return hooks, wire

    class Everything(Handler):
        pass

    every = sorted(HOOKS - {"auth", "message_data"})
    for name in every:
        setattr(Everything, name, lambda self, *args: None)
    plain_hooks, plain_wire = actions(Handler())
    all_hooks, all_wire = actions(Everything())
    assert plain_hooks == [] and plain_wire == all_wire
    assert sorted(set(all_hooks)) == every
    # An instance's own attribute counts as an override too.
    handler = Handler()
    seen: list[str] = []
    handler.mail = lambda session, mail: seen.append(mail.reverse_path)  # type: ignore[method-assign]
    assert actions(handler)[0] == ["mail"] and seen == ["a@x.example"]
    assert overridden_hooks(Greeter()) == {"connect", "disconnect"}


def test_run_sync_drives_a_server_flow() -> None:
    sent: list[bytes] = []
    incoming = [b"EHLO c\r\nQUIT\r\n", b""]
    handler = Recorder()

    def call(action: Call) -> Any:
        return getattr(handler, action.hook)(*action.args)

    def starttls(action: StartTLS) -> None:
        raise AssertionError("not used")

    run_sync(
        ServerSession(handler).run(),
        {
            Send: lambda action: sent.append(action.data),
            Receive: lambda action: incoming.pop(0),
            Call: call,
            StartTLS: starttls,
            Close: lambda action: None,
        },
    )
    assert sent[0].startswith(b"220") and sent[-1].endswith(b"221 2.0.0 Bye\r\n")
    assert handler.names() == ["connect", "ehlo", "quit", "disconnect"]


def test_run_sync_throws_handler_failures_into_the_flow() -> None:
    handler = Recorder()

    def receive(action: Receive) -> bytes:
        raise TimeoutError

    sent: list[bytes] = []
    run_sync(
        ServerSession(handler).run(),
        {
            Send: lambda action: sent.append(action.data),
            Receive: receive,
            Call: lambda action: getattr(handler, action.hook)(*action.args),
            Close: lambda action: None,
        },
    )
    assert sent[-1] == b"421 4.4.2 Timeout, closing connection\r\n"


# -- over loopback: the adapter's timers, shutdown and connection limit ------------------------


def recv_line(sock: socket.socket, end: bytes = b"\r\n") -> bytes:
    """Read until the data ends with *end* (or EOF)."""
    data = b""
    while not data.endswith(end):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_loopback_command_timeout() -> None:
    handler = Recorder()
    with ServerThread(handler, timeouts=ServerTimeouts(command=0.5)) as server:
        with socket.create_connection(server.address, timeout=10) as sock:
            assert recv_line(sock).startswith(b"220")
            assert recv_line(sock) == b"421 4.4.2 Timeout, closing connection\r\n"
            assert sock.recv(100) == b""
    assert handler.names() == ["connect", "disconnect"]


def test_loopback_shutdown_gives_idle_sessions_421() -> None:
    handler = Recorder()
    thread = ServerThread(handler)
    with thread:
        with socket.create_connection(thread.address, timeout=10) as sock:
            assert recv_line(sock).startswith(b"220")
            sock.sendall(b"EHLO c\r\n")
            assert recv_line(sock, b"250 HELP\r\n").startswith(b"250-")
            thread.server.shutdown()
            assert recv_line(sock) == b"421 4.3.2 Service shutting down, closing connection\r\n"
            assert sock.recv(100) == b""
    assert handler.names()[-1] == "disconnect"


def test_loopback_max_connections() -> None:
    with ServerThread(max_connections=1) as server:
        with socket.create_connection(server.address, timeout=10) as first:
            assert recv_line(first).startswith(b"220")
            with socket.create_connection(server.address, timeout=10) as second:
                assert recv_line(second) == b"421 4.3.2 Too many connections, try again later\r\n"
                assert second.recv(100) == b""
            first.sendall(b"NOOP\r\n")
            assert recv_line(first).startswith(b"250")


def test_loopback_trusted_peer_gets_xclient() -> None:
    seen: list[Any] = []
    with ServerThread(trusted=lambda peer: seen.append(peer) or peer[0] == "127.0.0.1") as server:
        with socket.create_connection(server.address, timeout=10) as sock:
            recv_line(sock)
            sock.sendall(b"EHLO c\r\n")
            assert b"250-XCLIENT" in recv_line(sock, b"250 HELP\r\n")
    assert seen and seen[0][0] == "127.0.0.1"


def test_loopback_starttls_session_values() -> None:
    from certs import client_context, server_context
    from smtpproto.sync import SMTPClient

    handler = AuthRecorder()
    config = ServerConfig(starttls=True, auth_mechanisms=("SCRAM-SHA-256", "PLAIN"))
    with ServerThread(handler, config=config, ssl_context=server_context()) as server:
        options = ClientOptions(tls=TLSMode.REQUIRED, username="user", password="secret pass")
        with SMTPClient(*server.address, options=options, ssl_context=client_context()) as client:
            client.send_message(MESSAGE, "a@example.org", ["b@example.org"])
    message = [s for s in handler.seen if s["hook"] == "message"][0]
    assert (message["tls"], message["auth_identity"], message["ehlo_name"]) == (True, "user", "localhost")
