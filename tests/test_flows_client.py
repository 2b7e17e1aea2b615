"""ClientSession's policies, run against the real server flow (in memory
through flowpair.Link, and over loopback with the blocking adapter) and,
for what no real server does, against a scripted one (flowpair.Script)."""

from __future__ import annotations

import base64
import logging
import ssl
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest

from certs import client_context, server_context
from flowpair import AuthRecorder, Link, Recorder, Script
from smtpproto import Ehlo, Helo, LocalProtocolError, Reply, ServerConfig, State, sasl
from smtpproto.flows import (
    ClientOptions,
    ClientSession,
    Close,
    DsnOptions,
    Receive,
    Send,
    SendResult,
    Timeouts,
    TLSMode,
    errors,
    prepare,
)
from smtpproto.flows.server import Reject
from smtpproto.sync import ServerThread, SMTPClient

SENDER = "alice@example.org"
RCPT = "bob@example.org"
MESSAGE = b"Subject: test\r\n\r\nHello.\r\n"


def outgoing(data: bytes = MESSAGE, recipients: list[str] | None = None, **kwargs: Any) -> Any:
    return prepare(data, SENDER, recipients or [RCPT], **kwargs)


def reply(code: int, text: str = "text", enhanced: str | None = None) -> Reply:
    return Reply(code=code, text=(text,), enhanced=enhanced)


def wire(link: Link) -> bytes:
    return b"".join(link.client_writes)


# -- greeting and hello -----------------------------------------------------------


def test_greeting_554_quits_then_raises() -> None:
    link = Link(Recorder(connect=reply(554, "go away", "5.7.1")))
    with pytest.raises(errors.GreetingRefused) as info:
        link.open()
    assert info.value.reply.code == 554 and info.value.step == "greeting"
    assert not info.value.temporary
    assert str(info.value) == "the server refused the session: 554 5.7.1 go away"
    assert link.client_writes == [b"QUIT\r\n"]
    assert link.client_closed and link.server_done
    assert link.server_writes[-1].startswith(b"221")


def test_greeting_421_closes_without_quit() -> None:
    link = Link(Recorder(connect=reply(421, "busy")))
    with pytest.raises(errors.GreetingRefused) as info:
        link.open()
    assert info.value.temporary
    assert link.client_writes == [] and link.client_closed


@pytest.mark.parametrize("code", [500, 502])
def test_ehlo_refused_falls_back_to_helo(code: int) -> None:
    # The hook cannot see the verb; the ServerSession's core can.
    holder: dict[str, Any] = {}

    def ehlo(session: Any, name: str) -> Reply | None:
        if isinstance(holder["link"].server.conn.awaiting_reply, Ehlo):
            return reply(code, "EHLO? never heard of it")
        assert isinstance(holder["link"].server.conn.awaiting_reply, Helo)
        return None

    handler = Recorder(ehlo=ehlo)
    link = Link(handler, options=ClientOptions(helo_name="client.example"))
    holder["link"] = link
    hello = link.open()
    assert link.client_writes == [b"EHLO client.example\r\n", b"HELO client.example\r\n"]
    assert hello.code == 250 and link.client.hello_reply == hello
    assert link.client.conn.capabilities.keywords == {}  # HELO: no extensions
    assert link.server.session.ehlo_name == "client.example"
    # Without PIPELINING the transaction goes one command at a time.
    result = link.run(link.client.send(outgoing()))
    assert result.accepted == (RCPT,)
    assert b"MAIL FROM:<alice@example.org>\r\n" in link.client_writes  # no SIZE: not offered


def test_helo_refused_raises_after_quit() -> None:
    link = Link(Recorder(ehlo=reply(550, "not you", "5.7.1")))
    with pytest.raises(errors.HelloRefused) as info:
        link.open()
    assert info.value.reply.code == 550
    assert link.client_writes == [b"EHLO localhost\r\n", b"QUIT\r\n"]
    assert link.client_closed


def test_caller_error_during_open_closes() -> None:
    link = Link(options=ClientOptions(helo_name="bad name\r\nMAIL FROM:<x>"))
    with pytest.raises(LocalProtocolError):  # attack class 4: nothing is written
        link.open()
    assert link.client_writes == [] and link.client_closed


def test_lmtp_says_lhlo() -> None:
    link = Link(config=ServerConfig(lmtp=True), options=ClientOptions(lmtp=True))
    link.open()
    assert link.client_writes == [b"LHLO localhost\r\n"]


def test_lmtp_option_and_config_must_agree() -> None:
    from smtpproto import ClientConfig

    with pytest.raises(ValueError, match="lmtp"):
        ClientSession(ClientOptions(lmtp=True, config=ClientConfig()))


def test_client_options_check_credentials() -> None:
    with pytest.raises(ValueError, match="not both"):
        ClientOptions(username="u", password="p", token="t")
    with pytest.raises(ValueError, match="username"):
        ClientOptions(password="p")


def test_timeouts_all() -> None:
    assert Timeouts.all(2.5) == Timeouts(
        connect=2.5, greeting=2.5, command=2.5, data_start=2.5, data_block=2.5, data_end=2.5
    )


def test_no_greeting_is_a_timeout_and_closes() -> None:
    flow = ClientSession(ClientOptions(timeouts=Timeouts.all(7))).open()
    assert next(flow) == Receive(7)
    assert flow.throw(TimeoutError()) == Close()
    with pytest.raises(errors.Timeout) as info:
        flow.send(None)
    assert info.value.step == "greeting" and info.value.temporary
    script = Script(lambda line: b"", greeting=b"")
    with pytest.raises(errors.Timeout):
        script.run(ClientSession().open())
    assert script.closed


def test_garbled_greeting_is_a_protocol_failure() -> None:
    script = Script(lambda line: b"", greeting=b"hello there\r\n")
    with pytest.raises(errors.ProtocolFailure) as info:
        script.run(ClientSession().open())
    assert info.value.step == "greeting"
    assert script.closed and script.writes == []


def test_server_hangs_up_during_ehlo() -> None:
    script = Script(lambda line: None)
    with pytest.raises(errors.Disconnected) as info:
        script.run(ClientSession().open())
    assert info.value.step == "EHLO" and script.closed


def test_broken_connection_while_reading_and_writing() -> None:
    session = ClientSession()
    flow = session.open()
    assert isinstance(flow.send(None), Receive)
    assert isinstance(flow.throw(ConnectionResetError("reset")), Close)
    with pytest.raises(errors.Disconnected, match="connection lost during greeting"):
        flow.send(None)
    session = ClientSession()
    flow = session.open()
    flow.send(None)
    assert isinstance(flow.send(b"220 hi\r\n"), Send)
    # A failed write: the flow closes the connection, then raises.
    assert isinstance(flow.throw(BrokenPipeError("pipe")), Close)
    with pytest.raises(errors.Disconnected, match="while sending"):
        flow.send(None)
    session = ClientSession()
    flow = session.open()
    flow.send(None)
    flow.send(b"220 hi\r\n")
    assert isinstance(flow.throw(TimeoutError()), Close)
    with pytest.raises(errors.Timeout, match="timed out sending"):
        flow.send(None)


# -- TLS policy ------------------------------------------------------------------


def test_required_tls_without_starttls_sends_no_mail_or_auth() -> None:
    handler = AuthRecorder()
    link = Link(
        handler,
        ServerConfig(auth_mechanisms=("PLAIN",), auth_plaintext=True),
        options=ClientOptions(tls=TLSMode.REQUIRED, username="user", password="secret pass"),
    )
    with pytest.raises(errors.TLSRequired) as info:
        link.open()
    assert info.value.reply is None and info.value.step == "STARTTLS"
    assert link.client_writes == [b"EHLO localhost\r\n", b"QUIT\r\n"]
    assert "mail" not in handler.names() and "auth" not in handler.names()
    assert link.client_closed and link.server_done


def test_required_tls_with_starttls_refused() -> None:
    answers = {
        b"EHLO localhost": b"250-fake.example\r\n250 STARTTLS\r\n",
        b"STARTTLS": b"454 4.7.0 TLS not available due to temporary reason\r\n",
        b"QUIT": b"221 bye\r\n",
    }
    script = Script(answers.__getitem__)
    options = ClientOptions(tls=TLSMode.REQUIRED, username="u", password="p")
    with pytest.raises(errors.TLSRequired) as info:
        script.run(ClientSession(options).open())
    assert info.value.reply is not None and info.value.reply.code == 454
    assert script.lines == [b"EHLO localhost", b"STARTTLS", b"QUIT"]
    assert script.closed and not script.tls_started


def test_opportunistic_tls_refused_goes_on_in_cleartext() -> None:
    answers = {
        b"EHLO localhost": b"250-fake.example\r\n250 STARTTLS\r\n",
        b"STARTTLS": b"454 4.7.0 not now\r\n",
    }
    script = Script(answers.__getitem__)
    session = ClientSession()
    hello = script.run(session.open())
    assert hello.text == ("fake.example", "STARTTLS")
    assert not session.conn.tls and not script.closed


def test_opportunistic_in_memory_uses_starttls_then_ehlo_again() -> None:
    handler = Recorder()
    link = Link(handler, ServerConfig(starttls=True))
    hello = link.open()
    assert link.client_tls and link.server_tls_started
    assert link.client_writes == [b"EHLO localhost\r\n", b"STARTTLS\r\n", b"EHLO localhost\r\n"]
    assert "STARTTLS" not in hello.text
    assert [seen["tls"] for seen in handler.seen if seen["hook"] == "ehlo"] == [False, True]


def test_never_ignores_starttls() -> None:
    link = Link(config=ServerConfig(starttls=True), options=ClientOptions(tls=TLSMode.NEVER))
    link.open()
    assert link.client_writes == [b"EHLO localhost\r\n"] and not link.client_tls


def test_failed_handshake_is_not_retried_in_cleartext() -> None:
    link = Link(config=ServerConfig(starttls=True), tls_error=ssl.SSLCertVerificationError("bad cert"))
    with pytest.raises(errors.ProtocolFailure) as info:
        link.open()
    assert info.value.step == "STARTTLS"
    assert link.client_writes == [b"EHLO localhost\r\n", b"STARTTLS\r\n"]
    assert link.client_closed


def test_starttls_reply_followed_by_injected_bytes() -> None:
    answers = {
        b"EHLO localhost": b"250-fake.example\r\n250 STARTTLS\r\n",
        b"STARTTLS": b"220 go ahead\r\n250 injected\r\n",
    }
    script = Script(answers.__getitem__)
    with pytest.raises(errors.ProtocolFailure, match="after the 220"):
        script.run(ClientSession().open())
    assert script.closed and not script.tls_started


class TLSServer:
    """A ServerThread with the test certificate, recording its hooks."""

    def __init__(self, **kwargs: Any) -> None:
        self.handler = kwargs.pop("handler", None) or Recorder()
        self.thread = ServerThread(self.handler, ssl_context=server_context(), **kwargs)

    def __enter__(self) -> TLSServer:
        self.thread.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.thread.__exit__(None, None, None)

    def client(self, **options: Any) -> SMTPClient:
        host, port = self.thread.address
        context = options.pop("ssl_context", None) or client_context()
        options.setdefault("timeouts", Timeouts.all(10))
        return SMTPClient(host, port, options=ClientOptions(**options), ssl_context=context)


def test_loopback_opportunistic_uses_tls_when_offered() -> None:
    with TLSServer() as server, server.client() as client:
        client.send_message(MESSAGE, SENDER, [RCPT])
        assert client.session.conn.tls
    mail = [seen for seen in server.handler.seen if seen["hook"] == "mail"]
    assert mail[0]["tls"] is True


def test_loopback_opportunistic_goes_cleartext_when_not_offered() -> None:
    handler = Recorder()
    with ServerThread(handler) as server:
        host, port = server.address
        with SMTPClient(host, port, options=ClientOptions(timeouts=Timeouts.all(10))) as client:
            client.send_message(MESSAGE, SENDER, [RCPT])
            assert not client.session.conn.tls
    assert [seen["tls"] for seen in handler.seen if seen["hook"] == "mail"] == [False]


def test_loopback_required_tls_with_test_ca() -> None:
    with TLSServer() as server, server.client(tls=TLSMode.REQUIRED) as client:
        result = client.send_message(MESSAGE, SENDER, [RCPT])
        assert result.accepted == (RCPT,)
    assert [seen["tls"] for seen in server.handler.seen if seen["hook"] == "message"] == [True]


def test_loopback_never_stays_in_cleartext() -> None:
    with TLSServer() as server, server.client(tls=TLSMode.NEVER) as client:
        client.send_message(MESSAGE, SENDER, [RCPT])
        assert client.ssl_context is not None  # given, and still not used
        assert not client.session.conn.tls
    assert [seen["tls"] for seen in server.handler.seen if seen["hook"] == "mail"] == [False]


def test_loopback_implicit_tls() -> None:
    with TLSServer(implicit_tls=True) as server, server.client(tls=TLSMode.IMPLICIT) as client:
        client.send_message(MESSAGE, SENDER, [RCPT])
        assert "STARTTLS" not in client.session.hello_reply.text  # type: ignore[union-attr]
    assert all(seen["tls"] for seen in server.handler.seen if seen["hook"] != "disconnect")


def test_loopback_failed_verification_aborts_without_plaintext_retry() -> None:
    untrusting = ssl.create_default_context()  # does not know the test CA
    with TLSServer() as server:
        client = server.client(ssl_context=untrusting)
        with pytest.raises(errors.ProtocolFailure) as info:
            client.connect()
        assert info.value.step == "STARTTLS"
        assert "certificate" in str(info.value)
        client.quit()  # nothing left to close
    assert server.handler.names().count("ehlo") == 1
    assert "mail" not in server.handler.names()
    assert server.handler.names()[-1] == "disconnect"


def test_loopback_wrong_hostname_fails_verification() -> None:
    with TLSServer() as server:
        client = server.client(server_hostname="other.example")
        with pytest.raises(errors.ProtocolFailure, match="TLS handshake failed"):
            client.connect()
    assert "mail" not in server.handler.names()


def test_loopback_implicit_tls_verification_failure() -> None:
    with TLSServer(implicit_tls=True) as server:
        client = server.client(tls=TLSMode.IMPLICIT, ssl_context=ssl.create_default_context())
        with pytest.raises(errors.ProtocolFailure) as info:
            client.connect()
        assert info.value.step == "connect"
    assert "connect" not in server.handler.names()


# -- AUTH ------------------------------------------------------------------------


def auth_link(*mechanisms: str, handler: AuthRecorder | None = None, tls: bool = True, **options: Any) -> Link:
    options.setdefault("username", "user")
    options.setdefault("password", "secret pass")
    return Link(
        handler or AuthRecorder(),
        ServerConfig(auth_mechanisms=mechanisms, auth_plaintext=not tls),
        server_tls=tls,
        options=ClientOptions(tls=TLSMode.IMPLICIT if tls else TLSMode.NEVER, **options),
    )


def test_auth_picks_the_strongest_common_mechanism() -> None:
    link = auth_link("PLAIN", "LOGIN", "SCRAM-SHA-256")
    link.open()
    assert link.client_writes[1].startswith(b"AUTH SCRAM-SHA-256 ")
    assert link.client.conn.authenticated
    assert link.server.session.auth_identity == "user"
    requests = link.handler.args("auth")  # type: ignore[attr-defined]
    assert [type(request) for (request,) in requests] == [sasl.LookupScram]


def test_auth_forced_mechanism() -> None:
    link = auth_link("PLAIN", "SCRAM-SHA-256", mechanism="plain")
    link.open()
    assert link.client_writes[1].startswith(b"AUTH PLAIN ")
    (request,) = link.handler.args("auth")[0]  # type: ignore[attr-defined]
    assert isinstance(request, sasl.CheckPassword) and request.password == "secret pass"


def test_auth_forced_mechanism_not_offered() -> None:
    link = auth_link("PLAIN", mechanism="CRAM-MD5")
    with pytest.raises(errors.AuthFailed, match="no usable AUTH mechanism") as info:
        link.open()
    assert info.value.reply is None and not info.value.temporary
    assert link.client_writes[-1] == b"QUIT\r\n" and link.client_closed


def test_no_plain_over_cleartext() -> None:
    link = auth_link("PLAIN", "LOGIN", tls=False)
    with pytest.raises(errors.AuthFailed, match="not encrypted"):
        link.open()
    assert not any(write.startswith(b"AUTH") for write in link.client_writes)


def test_no_auth_offered_at_all() -> None:
    link = Link(options=ClientOptions(username="user", password="pw"))
    with pytest.raises(errors.AuthFailed, match=r"offered: none, and the connection is not encrypted"):
        link.open()


def test_plain_over_cleartext_when_allowed() -> None:
    link = auth_link("PLAIN", tls=False, allow_plaintext_auth=True)
    link.open()
    assert link.client_writes[1] == b"AUTH PLAIN " + base64.b64encode(b"\0user\0secret pass") + b"\r\n"
    assert link.client.conn.authenticated


def test_login_exchange() -> None:
    link = auth_link("LOGIN")
    link.open()
    assert link.client_writes[1:4] == [
        b"AUTH LOGIN\r\n",
        base64.b64encode(b"user") + b"\r\n",
        base64.b64encode(b"secret pass") + b"\r\n",
    ]


def test_bearer_token() -> None:
    handler = AuthRecorder(tokens={"user": "tok"})
    link = auth_link("XOAUTH2", "PLAIN", handler=handler, password=None, token="tok")
    link.open()
    assert link.client_writes[1].startswith(b"AUTH XOAUTH2 ")


def test_auth_failed_on_535() -> None:
    link = auth_link("SCRAM-SHA-256", "PLAIN", password="wrong")
    with pytest.raises(errors.AuthFailed) as info:
        link.open()
    assert info.value.reply is not None and info.value.reply.code == 535
    assert info.value.reply.enhanced == "5.7.8"
    assert not info.value.temporary
    assert link.client_writes[-1] == b"QUIT\r\n" and link.client_closed


def test_auth_temporary_failure_from_the_verifier() -> None:
    handler = AuthRecorder(auth=reply(454, "try later", "4.7.0"))
    link = auth_link("PLAIN", handler=handler)
    with pytest.raises(errors.AuthFailed) as info:
        link.open()
    assert info.value.temporary and info.value.reply == reply(454, "try later", "4.7.0")


def test_forged_scram_challenge_is_cancelled() -> None:
    def answer(line: bytes) -> bytes:
        if line.startswith(b"EHLO"):
            return b"250-fake.example\r\n250 AUTH SCRAM-SHA-256\r\n"
        if line.startswith(b"AUTH"):
            return b"334 " + base64.b64encode(b"r=not-our-nonce,s=c2FsdA==,i=4096") + b"\r\n"
        if line == b"*":
            return b"501 5.7.0 cancelled\r\n"
        return b"221 bye\r\n"

    script = Script(answer)
    options = ClientOptions(tls=TLSMode.NEVER, username="user", password="pw")
    with pytest.raises(errors.AuthFailed, match="challenge was refused"):
        script.run(ClientSession(options).open())
    assert script.lines[-2:] == [b"*", b"QUIT"]


def test_scram_success_without_server_proof_is_refused() -> None:
    def answer(line: bytes) -> bytes:
        if line.startswith(b"EHLO"):
            return b"250-fake.example\r\n250 AUTH SCRAM-SHA-256\r\n"
        if line.startswith(b"AUTH"):
            return b"235 2.7.0 sure\r\n"
        return b"221 bye\r\n"

    script = Script(answer)
    options = ClientOptions(tls=TLSMode.NEVER, username="user", password="pw")
    with pytest.raises(errors.AuthFailed, match="without completing"):
        script.run(ClientSession(options).open())


def test_trace_redacts_auth_secrets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="smtpproto")
    password = "secret pass"
    for mechanism in ("PLAIN", "LOGIN", "SCRAM-SHA-256", "CRAM-MD5"):
        link = auth_link(mechanism, mechanism=mechanism, password=password)
        link.open()
        link.run(link.client.send(outgoing()))
        link.run(link.client.quit())
    text = caplog.text
    assert "C: AUTH PLAIN ****" in text and "C: AUTH LOGIN" in text
    assert "C: MAIL FROM:<alice@example.org>" in text and "S: 250" in text
    assert "C: <message content>" in text and "Hello." not in text
    for secret in (
        password,
        base64.b64encode(password.encode()).decode(),
        base64.b64encode(b"\0user\0" + password.encode()).decode(),
        base64.b64encode(b"user " + password.encode()).decode(),
    ):
        assert secret not in text
    assert {record.name for record in caplog.records} == {"smtpproto"}


# -- the transaction ----------------------------------------------------------------


def test_pipelined_batch_is_one_write() -> None:
    link = Link()
    link.open()
    result = link.run(link.client.send(outgoing(recipients=[RCPT, "carol@example.org"])))
    assert link.client_writes[1] == (
        b"MAIL FROM:<alice@example.org> SIZE=25\r\n"
        b"RCPT TO:<bob@example.org>\r\nRCPT TO:<carol@example.org>\r\nDATA\r\n"
    )
    assert link.client_writes[2] == MESSAGE + b".\r\n"
    assert len(link.client_writes) == 3
    assert result.accepted == (RCPT, "carol@example.org")
    assert result.data_reply is not None and result.data_reply.code == 250
    assert result.replies == {r: result.data_reply for r in result.accepted}
    assert result.refused == {}


@pytest.mark.parametrize(
    ("config", "options"),
    [(ServerConfig(pipelining=False), ClientOptions()), (ServerConfig(), ClientOptions(pipelining=False))],
)
def test_no_pipelining_when_not_offered_or_disabled(config: ServerConfig, options: ClientOptions) -> None:
    link = Link(config=config, options=options)
    link.open()
    link.run(link.client.send(outgoing(recipients=[RCPT, "carol@example.org"])))
    assert link.client_writes[1:] == [
        b"MAIL FROM:<alice@example.org> SIZE=25\r\n",
        b"RCPT TO:<bob@example.org>\r\n",
        b"RCPT TO:<carol@example.org>\r\n",
        b"DATA\r\n",
        MESSAGE + b".\r\n",
    ]


def test_bdat_when_chunking_offered_and_wanted() -> None:
    handler = Recorder()
    link = Link(handler, options=ClientOptions(chunking=True))
    link.open()

    def chunks() -> Iterator[bytes]:
        yield b"Subject: x\r\n\r\n"
        yield b".dot\r\n"
        yield b"bare\nLF\r\n"

    link.run(link.client.send(prepare(chunks(), SENDER, [RCPT])))
    assert link.client_writes[1:] == [
        b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.org>\r\n",
        b"BDAT 14\r\nSubject: x\r\n\r\n",
        b"BDAT 6\r\n.dot\r\n",
        b"BDAT 9 LAST\r\nbare\nLF\r\n",  # raw octets: no stuffing, nothing changed
    ]
    (envelope,) = handler.args("message")[0]
    assert envelope.content == b"Subject: x\r\n\r\n.dot\r\nbare\nLF\r\n"


def test_bdat_not_used_unless_wanted_or_offered() -> None:
    link = Link(config=ServerConfig(chunking=False), options=ClientOptions(chunking=True))
    link.open()
    link.run(link.client.send(outgoing()))
    assert link.client_writes[1].endswith(b"DATA\r\n")


def test_bdat_empty_message_is_bdat_0_last() -> None:
    handler = Recorder()
    link = Link(handler, options=ClientOptions(chunking=True))
    link.open()
    link.run(link.client.send(prepare(b"", SENDER, [RCPT])))
    assert link.client_writes[-1] == b"BDAT 0 LAST\r\n"
    assert handler.args("message")[0][0].content == b""


def test_bdat_without_pipelining_waits_for_each_chunk() -> None:
    link = Link(config=ServerConfig(pipelining=False), options=ClientOptions(chunking=True))
    link.open()
    result = link.run(link.client.send(prepare([b"a\r\n", b"b\r\n", b"c\r\n"], SENDER, [RCPT])))
    assert result.accepted == (RCPT,)
    assert link.client_writes[-3:] == [b"BDAT 3\r\na\r\n", b"BDAT 3\r\nb\r\n", b"BDAT 3 LAST\r\nc\r\n"]


def test_bdat_window_of_pipelined_chunks() -> None:
    handler = Recorder()
    link = Link(handler, options=ClientOptions(chunking=True))
    link.open()
    chunks = [b"%02d\r\n" % index for index in range(40)]
    result = link.run(link.client.send(prepare(iter(chunks), SENDER, [RCPT])))
    assert result.accepted == (RCPT,)
    assert handler.args("message")[0][0].content == b"".join(chunks)


def test_refused_bdat_chunk_is_data_refused_and_resets() -> None:
    big = b"x" * 998 + b"\r\n"
    link = Link(config=ServerConfig(max_message_size=65536), options=ClientOptions(chunking=True))
    link.open()
    chunks = [big * 40, big * 40, big]  # no declared size: the server finds out
    with pytest.raises(errors.DataRefused) as info:
        link.run(link.client.send(prepare(iter(chunks), SENDER, [RCPT])))
    assert info.value.reply.code == 552 and info.value.step == "BDAT"
    assert link.client_writes[-1] == b"RSET\r\n"
    # The session goes on.
    assert link.run(link.client.send(outgoing())).accepted == (RCPT,)


def test_refused_bdat_chunk_in_a_full_window() -> None:
    link = Link(config=ServerConfig(max_message_size=65536), options=ClientOptions(chunking=True))
    link.open()
    chunks = [b"y" * 998 + b"\r\n"] * 100  # the 66th is refused; the window of 16 ends at the 80th
    with pytest.raises(errors.DataRefused):
        link.run(link.client.send(prepare(iter(chunks), SENDER, [RCPT])))
    assert link.client.conn.state is State.READY
    assert link.client_writes[-1] == b"RSET\r\n"
    assert sum(write.startswith(b"BDAT") for write in link.client_writes) == 80


def test_quit_after_an_abandoned_flow_just_closes() -> None:
    # An adapter that cancels a send (a deadline, say) leaves replies
    # outstanding; QUIT cannot follow them without PIPELINING.
    link = Link(config=ServerConfig(pipelining=False))
    link.open()
    flow = link.client.send(outgoing())
    assert isinstance(next(flow), Send)  # MAIL, then the flow waits for its reply
    flow.close()
    link.run(link.client.quit())
    assert b"QUIT" not in wire(link) and link.client_closed


def test_mail_parameters_from_the_message() -> None:
    handler = Recorder()
    link = Link(handler)
    link.open()
    msg = EmailMessage()
    msg["From"] = "jösé@example.org"
    msg["To"] = RCPT
    msg.set_content("héllo\n")
    link.run(link.client.send(prepare(msg)))
    (mail,) = handler.args("mail")[0]
    assert mail.reverse_path == "jösé@example.org"
    assert mail.parameters["BODY"] == "8BITMIME"
    assert "SMTPUTF8" in mail.parameters
    assert int(mail.parameters["SIZE"]) == handler.args("message")[0][0].content.__len__()


def test_binarymime_with_chunking() -> None:
    handler = Recorder()
    link = Link(handler, options=ClientOptions(chunking=True))
    link.open()
    link.run(link.client.send(outgoing("Subject: x\r\n\r\nbïnary\r\n".encode())))
    assert handler.args("mail")[0][0].parameters["BODY"] == "BINARYMIME"


def test_no_size_when_not_offered_or_unknown() -> None:
    link = Link()
    link.open()
    link.run(link.client.send(prepare(iter([MESSAGE]), SENDER, [RCPT])))
    assert link.client_writes[1].startswith(b"MAIL FROM:<alice@example.org>\r\n")


def test_dsn_parameters_when_offered() -> None:
    handler = Recorder()
    link = Link(handler)
    link.open()
    dsn = DsnOptions(ret="HDRS", envid="id+1", notify=("SUCCESS", "FAILURE"))
    link.run(link.client.send(outgoing(dsn=dsn)))
    (mail,) = handler.args("mail")[0]
    (rcpt,) = handler.args("rcpt")[0]
    assert mail.parameters["RET"] == "HDRS" and "ENVID" in mail.parameters
    assert rcpt.parameters["NOTIFY"] == "SUCCESS,FAILURE"


def test_dsn_left_out_when_not_offered() -> None:
    link = Link(config=ServerConfig(dsn=False))
    link.open()
    link.run(link.client.send(outgoing(dsn=DsnOptions(ret="HDRS", notify=("NEVER",)))))
    assert b"RET=" not in wire(link) and b"NOTIFY=" not in wire(link)


def test_requiretls_needs_the_offer() -> None:
    link = Link(server_tls=True, options=ClientOptions(tls=TLSMode.IMPLICIT))
    link.open()
    link.run(link.client.send(outgoing(requiretls=True)))
    assert b" REQUIRETLS" in link.client_writes[1]
    plain = Link()
    plain.open()
    with pytest.raises(errors.NotSupported, match="REQUIRETLS"):
        plain.run(plain.client.send(outgoing(requiretls=True)))


def test_eight_bit_to_a_server_without_8bitmime() -> None:
    handler = Recorder()
    link = Link(handler, ServerConfig(eightbitmime=False))
    link.open()
    with pytest.raises(errors.NotSupported, match="8BITMIME") as info:
        link.run(link.client.send(outgoing("Subject: x\r\n\r\nbödy\r\n".encode())))
    assert info.value.step == "MAIL" and not info.value.temporary
    assert len(link.client_writes) == 1 and "mail" not in handler.names()
    # Nothing was sent: the session goes on.
    assert link.run(link.client.send(outgoing())).accepted == (RCPT,)


def test_smtputf8_needs_to_a_server_without_it() -> None:
    link = Link(config=ServerConfig(smtputf8=False))
    link.open()
    with pytest.raises(errors.NotSupported, match="SMTPUTF8"):
        link.run(link.client.send(prepare(b"x\r\n", "ü@example.org", [RCPT])))
    with pytest.raises(errors.NotSupported, match="SMTPUTF8"):
        link.run(link.client.send(outgoing("Subject: ü\r\n\r\nx\r\n".encode())))
    assert len(link.client_writes) == 1


def test_undeclared_eight_bit_chunk_aborts_by_closing() -> None:
    handler = Recorder()
    link = Link(handler)
    link.open()
    with pytest.raises(Exception, match="8-bit"):
        link.run(link.client.send(prepare(iter(["ü\r\n".encode()]), SENDER, [RCPT])))
    assert link.client_closed and link.server_done
    assert "message" not in handler.names() and handler.names()[-1] == "disconnect"


def test_failing_chunk_source_aborts_by_closing() -> None:
    handler = Recorder()
    link = Link(handler)
    link.open()

    def chunks() -> Iterator[bytes]:
        yield b"Subject: x\r\n\r\nfirst part\r\n"
        raise OSError("the file went away")

    with pytest.raises(OSError, match="went away"):
        link.run(link.client.send(prepare(chunks(), SENDER, [RCPT])))
    assert link.client_closed and link.server_done
    assert "message" not in handler.names() and handler.names()[-1] == "disconnect"
    writes = len(link.client_writes)
    link.run(link.client.quit())  # already closed: nothing more happens
    assert len(link.client_writes) == writes
    with pytest.raises(errors.Disconnected, match="session is over"):
        link.run(link.client.send(outgoing()))


def test_over_long_line_aborts_by_closing() -> None:
    link = Link()
    link.open()
    with pytest.raises(Exception, match="exceeds the limit"):
        link.run(link.client.send(outgoing(b"x" * 2000 + b"\r\n")))
    assert link.client_closed


def test_streamed_content_is_pulled_as_it_is_sent() -> None:
    link = Link()
    link.open()
    block = (b"z" * 998 + b"\r\n") * 40  # 40 000 octets
    pulled_at: list[int] = []

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            pulled_at.append(len(link.client_writes))
            yield block

    result = link.run(link.client.send(prepare(chunks(), SENDER, [RCPT])))
    assert result.accepted == (RCPT,)
    # Writes happen between pulls: the content was never gathered whole.
    assert pulled_at[0] < pulled_at[-1]
    assert max(len(write) for write in link.client_writes) < 3 * len(block)


def test_partial_recipient_refusal() -> None:
    def rcpt(session: Any, command: Any) -> Reply | None:
        if command.forward_path.startswith("x"):
            return reply(550, "no such user", "5.1.1")
        return None

    link = Link(Recorder(rcpt=rcpt))
    link.open()
    result = link.run(link.client.send(outgoing(recipients=["x1@example.org", RCPT, "x2@example.org"])))
    assert result.accepted == (RCPT,)
    assert set(result.refused) == {"x1@example.org", "x2@example.org"}
    assert result.refused["x1@example.org"].code == 550
    assert list(result.replies) == ["x1@example.org", RCPT, "x2@example.org"]
    assert result.replies[RCPT].code == 250


@pytest.mark.parametrize("pipelining", [True, False])
def test_every_recipient_refused(pipelining: bool) -> None:
    handler = Recorder(rcpt=reply(450, "mailbox busy", "4.2.1"))
    link = Link(handler, options=ClientOptions(pipelining=pipelining))
    link.open()
    with pytest.raises(errors.RecipientsRefused) as info:
        link.run(link.client.send(outgoing(recipients=[RCPT, "carol@example.org"])))
    assert info.value.temporary and info.value.step == "RCPT"
    assert set(info.value.replies) == {RCPT, "carol@example.org"}
    assert link.client_writes[-1] == b"RSET\r\n"
    assert "message" not in handler.names()
    assert link.client.conn.state is State.READY


@pytest.mark.parametrize("pipelining", [True, False])
def test_sender_refused(pipelining: bool) -> None:
    handler = Recorder(mail=Reject(reply(553, "not you", "5.7.1")))
    link = Link(handler, options=ClientOptions(pipelining=pipelining))
    link.open()
    with pytest.raises(errors.SenderRefused) as info:
        link.run(link.client.send(outgoing()))
    assert info.value.reply.code == 553 and info.value.step == "MAIL"
    assert "rcpt" not in handler.names()
    assert link.client.conn.state is State.READY


def test_sender_refused_with_421_ends_the_session() -> None:
    link = Link(Recorder(mail=reply(421, "shutting down", "4.3.2")))
    link.open()
    with pytest.raises(errors.SenderRefused) as info:
        link.run(link.client.send(outgoing()))
    assert info.value.temporary
    link.run(link.client.quit())
    assert b"QUIT" not in wire(link) and link.client_closed


@pytest.mark.parametrize("pipelining", [True, False])
def test_data_refused(pipelining: bool) -> None:
    extensions = b"250-fake.example\r\n250 PIPELINING\r\n" if pipelining else b"250 fake.example\r\n"
    answers = {
        b"EHLO localhost": extensions,
        b"MAIL FROM:<alice@example.org>": b"250 ok\r\n",
        b"RCPT TO:<bob@example.org>": b"250 ok\r\n",
        b"DATA": b"451 4.3.0 not now\r\n",
        b"RSET": b"250 reset\r\n",
    }
    script = Script(answers.__getitem__)
    session = ClientSession()
    script.run(session.open())
    with pytest.raises(errors.DataRefused) as info:
        script.run(session.send(outgoing()))
    assert info.value.reply.code == 451 and info.value.temporary and info.value.step == "DATA"
    assert script.lines[-1] == b"RSET"


def test_message_refused() -> None:
    handler = Recorder(message=reply(554, "spam", "5.7.1"))
    link = Link(handler)
    link.open()
    with pytest.raises(errors.MessageRefused) as info:
        link.run(link.client.send(outgoing()))
    assert info.value.reply.code == 554 and info.value.step == "message"
    assert link.client.conn.state is State.READY  # ready for the next message


def test_lmtp_replies_per_recipient() -> None:
    def message(session: Any, envelope: Any) -> list[Reply]:
        return [
            reply(250, "delivered", "2.0.0"),
            reply(452, "over quota", "4.2.2"),
            reply(250, "delivered", "2.0.0"),
        ]

    link = Link(Recorder(message=message), ServerConfig(lmtp=True), options=ClientOptions(lmtp=True))
    link.open()
    recipients = ["a@example.org", "b@example.org", "c@example.org"]
    result = link.run(link.client.send(outgoing(recipients=recipients)))
    assert result.accepted == ("a@example.org", "c@example.org")
    assert result.refused == {"b@example.org": reply(452, "over quota", "4.2.2")}
    assert [r.code for r in result.replies.values()] == [250, 452, 250]
    assert result.data_reply == reply(250, "delivered", "2.0.0")


def test_lmtp_every_recipient_refused_after_data() -> None:
    link = Link(Recorder(message=reply(550, "no")), ServerConfig(lmtp=True), options=ClientOptions(lmtp=True))
    link.open()
    with pytest.raises(errors.MessageRefused):
        link.run(link.client.send(outgoing(recipients=["a@example.org", "b@example.org"])))


def test_lmtp_421_after_data_stands_for_every_recipient() -> None:
    answers = {
        b"LHLO localhost": b"250-fake.example\r\n250 PIPELINING\r\n",
        b"MAIL FROM:<alice@example.org>": b"250 ok\r\n",
        b"RCPT TO:<a@example.org>": b"250 ok\r\n",
        b"RCPT TO:<b@example.org>": b"250 ok\r\n",
        b"DATA": b"354 go\r\n",
        b".": b"421 4.3.2 going down\r\n",
    }
    script = Script(answers.__getitem__)
    session = ClientSession(ClientOptions(lmtp=True))
    script.run(session.open())
    with pytest.raises(errors.MessageRefused) as info:
        script.run(session.send(outgoing(recipients=["a@example.org", "b@example.org"])))
    assert info.value.reply.code == 421


def test_lmtp_over_bdat() -> None:
    def message(session: Any, envelope: Any) -> list[Reply]:
        return [reply(250, "ok"), reply(550, "unknown")]

    link = Link(
        Recorder(message=message), ServerConfig(lmtp=True), options=ClientOptions(lmtp=True, chunking=True)
    )
    link.open()
    result = link.run(link.client.send(outgoing(recipients=["a@example.org", "b@example.org"])))
    assert result.accepted == ("a@example.org",) and result.refused["b@example.org"].code == 550


def recipients(count: int) -> list[str]:
    return [f"user{index}@example.org" for index in range(count)]


def test_rcptmax_splits_into_transactions() -> None:
    handler = Recorder()
    link = Link(handler, ServerConfig(max_recipients=100))
    link.open()
    everyone = recipients(150)
    pulls = []

    def chunks() -> Iterator[bytes]:
        pulls.append(1)
        yield MESSAGE

    result = link.run(link.client.send(prepare(chunks(), SENDER, everyone)))
    assert result.accepted == tuple(everyone)
    assert pulls == [1]  # read once, replayed
    envelopes = [args[0] for args in handler.args("message")]
    assert [len(e.recipients) for e in envelopes] == [100, 50]
    assert all(e.content == MESSAGE for e in envelopes)
    assert wire(link).count(b"MAIL FROM") == 2


def test_rcptmax_group_refusals_do_not_hide_deliveries() -> None:
    def rcpt(session: Any, command: Any) -> Reply | None:
        index = int(command.forward_path[4:].split("@")[0])
        return reply(550, "no", "5.1.1") if index >= 100 or index == 5 else None

    link = Link(Recorder(rcpt=rcpt), ServerConfig(max_recipients=100))
    link.open()
    result = link.run(link.client.send(outgoing(recipients=recipients(150))))
    assert len(result.accepted) == 99 and "user5@example.org" not in result.accepted
    assert len(result.refused) == 51
    assert list(result.replies) == recipients(150)
    assert result.data_reply is not None and result.data_reply.code == 250


def test_rcptmax_message_refused_in_one_group() -> None:
    calls = []

    def message(session: Any, envelope: Any) -> Reply | None:
        calls.append(len(envelope.recipients))
        return reply(552, "too much", "5.3.4") if len(calls) == 2 else None

    link = Link(Recorder(message=message), ServerConfig(max_recipients=100))
    link.open()
    result = link.run(link.client.send(outgoing(recipients=recipients(150))))
    assert len(result.accepted) == 100
    assert {r.code for r in result.refused.values()} == {552} and len(result.refused) == 50


def test_rcptmax_every_group_refused() -> None:
    link = Link(Recorder(rcpt=reply(550, "no")), ServerConfig(max_recipients=100))
    link.open()
    with pytest.raises(errors.RecipientsRefused) as info:
        link.run(link.client.send(outgoing(recipients=recipients(150))))
    assert len(info.value.replies) == 150
    link2 = Link(Recorder(message=reply(554, "no")), ServerConfig(max_recipients=100))
    link2.open()
    with pytest.raises(errors.MessageRefused):
        link2.run(link2.client.send(outgoing(recipients=recipients(150))))


def test_rcptmax_421_stands_for_the_groups_not_tried() -> None:
    calls = []

    def mail(session: Any, command: Any) -> Reply | None:
        calls.append(1)
        return reply(421, "closing", "4.3.2") if len(calls) == 2 else None

    link = Link(Recorder(mail=mail), ServerConfig(max_recipients=100), options=ClientOptions(pipelining=False))
    link.open()
    result = link.run(link.client.send(outgoing(recipients=recipients(250))))
    assert len(result.accepted) == 100
    assert len(result.refused) == 150 and {r.code for r in result.refused.values()} == {421}
    assert len(calls) == 2


def test_many_messages_over_one_connection() -> None:
    handler = Recorder()
    link = Link(handler)
    link.open()
    for index in range(5):
        result = link.run(link.client.send(outgoing(b"Subject: %d\r\n\r\nbody\r\n" % index)))
        assert isinstance(result, SendResult) and result.accepted == (RCPT,)
    link.run(link.client.quit())
    assert [args[0].content[:10] for args in handler.args("message")] == [
        b"Subject: %d" % index for index in range(5)
    ]
    assert link.client_writes[-1] == b"QUIT\r\n" and link.client_closed and link.server_done


def test_send_needs_recipients() -> None:
    link = Link()
    link.open()
    bare = outgoing()
    bare.recipients = []
    with pytest.raises(ValueError, match="at least one recipient"):
        link.run(link.client.send(bare))


def test_server_gone_during_the_transaction_closes() -> None:
    answers = {
        b"EHLO localhost": b"250-fake.example\r\n250 PIPELINING\r\n",
    }
    script = Script(lambda line: answers.get(line))
    session = ClientSession()
    script.run(session.open())
    with pytest.raises(errors.Disconnected) as info:
        script.run(session.send(outgoing()))
    assert info.value.step == "MAIL" and script.closed


def test_quit_tolerates_a_server_that_hangs_up() -> None:
    answers = {b"EHLO localhost": b"250 fake.example\r\n"}
    script = Script(lambda line: answers.get(line))
    session = ClientSession()
    script.run(session.open())
    script.run(session.quit())
    assert script.lines == [b"EHLO localhost", b"QUIT"] and script.closed
