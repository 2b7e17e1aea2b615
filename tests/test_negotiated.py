"""What the client records as negotiated: ``ClientSession.tls_method``,
``ClientSession.auth_mechanism`` and ``SendResult.pipelined`` /
``.chunked`` / ``.smtputf8``.

Each value is checked against what the other side observed on its own:
the server flow's ``Session.tls`` and ``Session.auth_mechanism`` and its
``Envelope.pipelined`` / ``.chunked`` / ``.smtputf8``, which it records
from the commands it received, and against the bytes on the wire.  In
memory (flowpair.Link) for the combinations of options and offers; over
loopback with real TLS for each client adapter, reading the record through
the adapter's ``session``.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import trio  # type: ignore[import-untyped, unused-ignore]

from certs import client_context, server_context
from flowpair import AuthRecorder, Link, Recorder, Script
from smtpproto import ServerConfig, sasl
from smtpproto.flows import (
    ClientOptions,
    ClientSession,
    Envelope,
    Handler,
    SendResult,
    Session,
    Timeouts,
    TLSMode,
    errors,
    prepare,
)
from smtpproto.sync import ServerThread, SMTPClient

SENDER = "alice@example.org"
MESSAGE = b"Subject: negotiated\r\n\r\nHello.\r\n"
UTF8_RCPT = "j\u00fcrgen@example.org"
KINDS = ["sync", "asyncio", "trio"]


def envelopes(handler: Recorder) -> list[Envelope]:
    return [args[0] for args in handler.args("message")]


# -- per transaction: pipelined, chunked, smtputf8 ---------------------------------


@pytest.mark.parametrize("server_pipelining", [True, False])
@pytest.mark.parametrize("client_pipelining", [True, False])
@pytest.mark.parametrize("server_chunking", [True, False])
@pytest.mark.parametrize("client_chunking", [True, False])
def test_send_result_says_what_the_transaction_did(
    server_pipelining: bool, client_pipelining: bool, server_chunking: bool, client_chunking: bool
) -> None:
    handler = Recorder()
    link = Link(
        handler,
        ServerConfig(pipelining=server_pipelining, chunking=server_chunking),
        options=ClientOptions(pipelining=client_pipelining, chunking=client_chunking),
    )
    link.open()
    before = len(link.client_writes)
    result = link.run(link.client.send(prepare(MESSAGE, SENDER, ["bob@example.org", "carol@example.org"])))
    pipelined = server_pipelining and client_pipelining
    chunked = server_chunking and client_chunking
    assert (result.pipelined, result.chunked, result.smtputf8) == (pipelined, chunked, False)
    # The server's own observation agrees (RFC 2920 §3.1, RFC 3030 §2).
    (envelope,) = envelopes(handler)
    assert (envelope.pipelined, envelope.chunked, envelope.smtputf8) == (pipelined, chunked, False)
    # And so do the bytes: one write held MAIL and the RCPTs, or none did.
    writes = link.client_writes[before:]
    assert any(b"MAIL FROM" in w and b"RCPT TO" in w for w in writes) == pipelined
    assert any(w.startswith(b"BDAT ") for w in writes) == chunked
    assert any(w.startswith(b"DATA") or b"\r\nDATA\r\n" in w for w in writes) == (not chunked)


@pytest.mark.parametrize("chunking", [True, False])
def test_smtputf8_is_what_mail_carried(chunking: bool) -> None:
    handler = Recorder()
    link = Link(handler, options=ClientOptions(chunking=chunking))
    link.open()
    utf8 = link.run(link.client.send(prepare(MESSAGE, SENDER, [UTF8_RCPT])))
    ascii_only = link.run(link.client.send(prepare(MESSAGE, SENDER, ["bob@example.org"])))
    assert (utf8.smtputf8, ascii_only.smtputf8) == (True, False)
    assert [e.smtputf8 for e in envelopes(handler)] == [True, False]
    mails = [w for w in link.client_writes if w.startswith(b"MAIL FROM")]
    assert [b" SMTPUTF8" in w.split(b"\r\n")[0] for w in mails] == [True, False]
    assert utf8.chunked == ascii_only.chunked == chunking


def test_utf8_headers_alone_need_smtputf8() -> None:
    # RFC 6532: UTF-8 in a header field needs SMTPUTF8 as much as an address.
    handler = Recorder()
    link = Link(handler)
    link.open()
    content = "Subject: gr\u00fc\u00dfe\r\n\r\nHello.\r\n".encode()
    result = link.run(link.client.send(prepare(content, SENDER, ["bob@example.org"])))
    assert result.smtputf8 and envelopes(handler)[0].smtputf8


def test_groups_report_what_their_transactions_did() -> None:
    # LIMITS RCPTMAX=100 (RFC 9422): 201 recipients go in three transactions.
    handler = Recorder()
    link = Link(handler, ServerConfig(max_recipients=100), options=ClientOptions(chunking=True))
    link.open()
    everyone = [f"user{i}@example.org" for i in range(200)]
    result = link.run(link.client.send(prepare(MESSAGE, SENDER, everyone + [UTF8_RCPT])))
    assert result.accepted == (*everyone, UTF8_RCPT)
    assert (result.pipelined, result.chunked, result.smtputf8) == (True, True, True)
    seen = envelopes(handler)
    assert [len(e.recipients) for e in seen] == [100, 100, 1]
    assert all(e.pipelined and e.chunked and e.smtputf8 for e in seen)


def test_groups_without_pipelining() -> None:
    handler = Recorder()
    link = Link(handler, ServerConfig(max_recipients=100, pipelining=False))
    link.open()
    everyone = [f"user{i}@example.org" for i in range(101)]
    result = link.run(link.client.send(prepare(MESSAGE, SENDER, everyone)))
    assert (result.pipelined, result.chunked, result.smtputf8) == (False, False, False)
    assert [e.pipelined for e in envelopes(handler)] == [False, False]


def test_lmtp_result_records_the_transaction() -> None:
    handler = Recorder()
    link = Link(handler, ServerConfig(lmtp=True), options=ClientOptions(lmtp=True, chunking=True))
    link.open()
    result = link.run(link.client.send(prepare(MESSAGE, SENDER, ["bob@example.org", UTF8_RCPT])))
    assert len(result.replies) == 2
    assert (result.pipelined, result.chunked, result.smtputf8) == (True, True, True)


# -- per session: auth_mechanism ---------------------------------------------------


def auth_link(*mechanisms: str, **options: Any) -> Link:
    options.setdefault("username", "user")
    options.setdefault("password", "secret pass")
    return Link(
        AuthRecorder(),
        ServerConfig(auth_mechanisms=mechanisms),
        server_tls=True,
        options=ClientOptions(tls=TLSMode.IMPLICIT, **options),
    )


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"])
def test_auth_mechanism_is_the_one_that_got_235(mechanism: str) -> None:
    link = auth_link("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256", mechanism=mechanism.lower())
    assert link.client.auth_mechanism is None
    link.open()
    assert link.client.auth_mechanism == mechanism
    assert link.server.session.auth_mechanism == mechanism  # what the server saw
    assert any(w.startswith(b"AUTH " + mechanism.encode()) for w in link.client_writes)
    link.run(link.client.quit())
    assert link.client.auth_mechanism == mechanism  # still there after the session


def test_auth_mechanism_chosen_by_strength() -> None:
    link = auth_link("PLAIN", "LOGIN", "CRAM-MD5")
    link.open()
    assert link.client.auth_mechanism == "CRAM-MD5" == link.server.session.auth_mechanism


def test_no_credentials_no_mechanism() -> None:
    link = auth_link("PLAIN", username=None, password=None)
    link.open()
    assert link.client.auth_mechanism is None and not link.client.conn.authenticated


def test_failed_auth_records_no_mechanism() -> None:
    link = auth_link("PLAIN", password="wrong")
    with pytest.raises(errors.AuthFailed) as info:
        link.open()
    assert info.value.reply is not None and info.value.reply.code == 535
    assert link.client.auth_mechanism is None


def test_success_without_235_records_no_mechanism() -> None:
    # A 250 is not the 235 of RFC 4954 §4 (smtp-sink answers AUTH so).
    answers = {
        b"EHLO localhost": b"250-fake.example\r\n250 AUTH PLAIN\r\n",
        b"QUIT": b"221 bye\r\n",
    }
    script = Script(lambda line: answers.get(line, b"250 2.0.0 Ok\r\n"))
    session = ClientSession(ClientOptions(username="u", password="p", allow_plaintext_auth=True))
    with pytest.raises(errors.AuthFailed) as info:
        script.run(session.open())
    assert info.value.reply is not None and info.value.reply.code == 250
    assert session.auth_mechanism is None


# -- per session: tls_method -------------------------------------------------------


def test_tls_method_starttls_in_memory() -> None:
    handler = Recorder()
    link = Link(handler, ServerConfig(starttls=True))
    assert link.client.tls_method is None
    link.open()
    assert link.client.tls_method == "STARTTLS"
    assert link.server.session.tls


def test_tls_method_implicit_once_the_greeting_came() -> None:
    link = Link(server_tls=True, options=ClientOptions(tls=TLSMode.IMPLICIT))
    assert link.client.tls_method is None  # nothing came over TLS yet
    link.open()
    assert link.client.tls_method == "implicit"
    assert link.client_writes == [b"EHLO localhost\r\n"]  # no STARTTLS inside TLS


def test_tls_method_none_in_cleartext() -> None:
    link = Link(config=ServerConfig(starttls=True), options=ClientOptions(tls=TLSMode.NEVER))
    link.open()
    assert link.client.tls_method is None and not link.server.session.tls


def test_tls_method_none_when_starttls_refused() -> None:
    answers = {b"EHLO localhost": b"250-fake.example\r\n250 STARTTLS\r\n", b"STARTTLS": b"454 4.7.0 not now\r\n"}
    script = Script(answers.__getitem__)
    session = ClientSession()
    script.run(session.open())
    assert session.tls_method is None and not script.tls_started


def test_tls_method_none_when_the_handshake_failed() -> None:
    link = Link(config=ServerConfig(starttls=True), tls_error=ssl.SSLCertVerificationError("bad cert"))
    with pytest.raises(errors.ProtocolFailure):
        link.open()
    assert link.client.tls_method is None


# -- through each adapter, over loopback with real TLS --------------------------------


class Users(Handler):
    """Checks one password; keeps each envelope with the session it came in."""

    def __init__(self) -> None:
        self.received: list[tuple[Envelope, bool, str | None]] = []
        self.lock = threading.Lock()

    def auth(self, session: Session, request: object) -> object:
        if isinstance(request, sasl.CheckPassword):
            return request.authcid == "bob" and request.password == "secret"
        if isinstance(request, sasl.LookupPassword):
            return "secret" if request.authcid == "bob" else None
        return None

    def message(self, session: Session, envelope: Envelope) -> None:
        with self.lock:
            self.received.append((envelope, session.tls, session.auth_mechanism))


def run_client(kind: str, address: tuple[str, int], options: ClientOptions) -> tuple[ClientSession, list[SendResult]]:
    """Send a UTF-8 message and an ASCII one over one connection; return
    the adapter's session (read after QUIT) and the results."""
    host, port = address
    messages = [(MESSAGE, [UTF8_RCPT]), (MESSAGE, ["bob@example.org", "carol@example.org"])]
    context = client_context()
    if kind == "sync":
        with SMTPClient(host, port, options=options, ssl_context=context) as client:
            results = [client.send_message(m, SENDER, r) for m, r in messages]
        return client.session, results
    if kind == "asyncio":
        from smtpproto.asyncio import AsyncSMTPClient

        async def main_asyncio() -> tuple[ClientSession, list[SendResult]]:
            async with AsyncSMTPClient(host, port, options=options, ssl_context=context) as client:
                results = [await client.send_message(m, SENDER, r) for m, r in messages]
            return client.session, results

        return asyncio.run(main_asyncio())
    from smtpproto.trio import TrioSMTPClient

    async def main_trio() -> tuple[ClientSession, list[SendResult]]:
        async with TrioSMTPClient(host, port, options=options, ssl_context=context) as client:
            results = [await client.send_message(m, SENDER, r) for m, r in messages]
        return client.session, results

    outcome: tuple[ClientSession, list[SendResult]] = trio.run(main_trio)
    return outcome


@pytest.fixture
def users() -> Iterator[Users]:
    yield Users()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mechanism", ["PLAIN", "CRAM-MD5"])
def test_adapters_expose_starttls_auth_and_transactions(kind: str, mechanism: str, users: Users) -> None:
    config = ServerConfig(starttls=True, auth_mechanisms=("PLAIN", "CRAM-MD5"), pipelining=True, chunking=True)
    options = ClientOptions(
        helo_name="client.example",
        tls=TLSMode.REQUIRED,
        server_hostname="localhost",
        username="bob",
        password="secret",
        mechanism=mechanism,
        chunking=mechanism == "PLAIN",  # one of each
        timeouts=Timeouts.all(30),
    )
    with ServerThread(users, config=config, ssl_context=server_context()) as server:
        session, results = run_client(kind, server.address, options)
    assert session.tls_method == "STARTTLS"
    assert session.auth_mechanism == mechanism
    chunked = mechanism == "PLAIN"
    assert [(r.pipelined, r.chunked, r.smtputf8) for r in results] == [(True, chunked, True), (True, chunked, False)]
    seen = [(e.pipelined, e.chunked, e.smtputf8, tls, mech) for e, tls, mech in users.received]
    assert seen == [(True, chunked, True, True, mechanism), (True, chunked, False, True, mechanism)]


@pytest.mark.parametrize("kind", KINDS)
def test_adapters_expose_implicit_tls(kind: str, users: Users) -> None:
    options = ClientOptions(
        helo_name="client.example", tls=TLSMode.IMPLICIT, server_hostname="localhost", timeouts=Timeouts.all(30)
    )
    config = ServerConfig(pipelining=False)
    with ServerThread(users, config=config, ssl_context=server_context(), implicit_tls=True) as server:
        session, results = run_client(kind, server.address, options)
    assert session.tls_method == "implicit" and session.auth_mechanism is None
    assert [(r.pipelined, r.chunked, r.smtputf8) for r in results] == [(False, False, True), (False, False, False)]
    assert [(e.pipelined, tls) for e, tls, _ in users.received] == [(False, True), (False, True)]


@pytest.mark.parametrize("kind", KINDS)
def test_adapters_expose_cleartext(kind: str, users: Users) -> None:
    options = ClientOptions(helo_name="client.example", timeouts=Timeouts.all(30))  # opportunistic
    with ServerThread(users) as server:  # no certificate: no STARTTLS offered
        session, results = run_client(kind, server.address, options)
    assert session.tls_method is None and session.auth_mechanism is None
    assert all(r.pipelined and not r.chunked for r in results)
    assert [tls for _, tls, _ in users.received] == [False, False]
