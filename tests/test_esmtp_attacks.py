"""PROTOCOL.md §3 attack classes 3 (STARTTLS injection), 6 (AUTH abuse),
7 (resource exhaustion, for BDAT and replies), 8 (downgrade) and 9 (abrupt
disconnects during BDAT and AUTH), for each role where the class applies.

The feature files (test_starttls, test_auth, test_chunking, test_lmtp) hold
the first tests of each class; this file adds the other role, the
byte-at-a-time variants and the hostile-peer cases they leave out.
"""

from __future__ import annotations

import base64

import pytest

from smtpproto import (
    NEED_DATA,
    PAUSED,
    Auth,
    AuthCancel,
    AuthResponse,
    Bdat,
    ClientConfig,
    ClientConnection,
    CommandRejected,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfChunk,
    EndOfMessage,
    Event,
    Lhlo,
    LocalProtocolError,
    Mail,
    MessageData,
    Noop,
    Quit,
    Rcpt,
    RemoteProtocolError,
    Reply,
    Rset,
    ServerConfig,
    ServerConnection,
    StartTLS,
    State,
    Vrfy,
)
from smtpproto import sasl

from helpers import Pair, default_responder, drain, replies_of, server_events

START = b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n"
PLAIN_OK = b"AUTH PLAIN " + base64.b64encode(b"\0bob\0secret") + b"\r\n"


def client_after_ehlo(
    capabilities: bytes, config: ClientConfig | None = None, tls: bool = False
) -> ClientConnection:
    """A client core that read the greeting and an EHLO reply offering
    *capabilities* (``250-...`` lines, the last ending ``250 ...``)."""
    client = ClientConnection(config, tls=tls)
    client.receive_data(b"220 mx.example ESMTP\r\n")
    assert isinstance(client.next_event(), Reply)
    client.send(Lhlo(domain="c.example") if client.config.lmtp else Ehlo(domain="c.example"))
    client.receive_data(b"250-mx.example\r\n" + capabilities)
    reply = client.next_event()
    assert isinstance(reply, Reply) and reply.code == 250
    return client


def replies(client: ClientConnection, data: bytes) -> list[Reply]:
    """Feed *data* and take every reply it completes."""
    client.receive_data(data)
    out = []
    while True:
        event = client.next_event()
        if not isinstance(event, Reply):
            return out
        out.append(event)


def verifier(server: ServerConnection, event: Event) -> Reply | None:
    if isinstance(event, (Auth, AuthResponse)):
        request = server.auth_request
        if isinstance(request, sasl.CheckPassword):
            return server.auth_reply(request.authcid == "bob" and request.password == "secret")
        return server.auth_reply()
    return default_responder(server, event)


def auth_server(**settings: object) -> ServerConnection:
    config = ServerConfig(auth_mechanisms=("PLAIN", "LOGIN"), auth_plaintext=True, **settings)  # type: ignore[arg-type]
    server = ServerConnection(config)
    server.send(server.greeting())
    server.receive_data(b"EHLO c.example\r\n")
    server.next_event()
    server.send(server.default_reply())
    return server


def answer(server: ServerConnection, data: bytes) -> list[tuple[Event, Reply]]:
    """Feed *data*, answer every event with ``verifier``."""
    server.receive_data(data)
    out = []
    while True:
        event = server.next_event()
        if not isinstance(event, Event) or isinstance(event, ConnectionClosed):
            return out
        reply = verifier(server, event)
        assert reply is not None
        server.send(reply)
        out.append((event, reply))


def codes(pairs: list[tuple[Event, Reply]]) -> list[tuple[int, str | None]]:
    return [(reply.code, reply.enhanced) for _, reply in pairs]


# =============================================================================
# Class 3: STARTTLS injection
# =============================================================================


def starttls_server() -> ServerConnection:
    server = ServerConnection(ServerConfig(starttls=True))
    server.send(server.greeting())
    server.receive_data(b"EHLO c.example\r\n")
    server.next_event()
    server.send(server.default_reply())
    return server


def test_attack_starttls_injection_server_byte_at_a_time() -> None:
    """However the injected bytes are split, the command after STARTTLS is
    never handed out: the server fails before the handshake, or at it."""
    server = starttls_server()
    events: list[Event] = []
    error: RemoteProtocolError | None = None
    for octet in b"STARTTLS\r\nMAIL FROM:<evil@example.org>\r\n":
        server.receive_data(bytes([octet]))
        try:
            event = server.next_event()
        except RemoteProtocolError as exc:
            error = exc
            break
        if isinstance(event, StartTLS):
            assert server.send(server.default_reply()).startswith(b"220")
        elif isinstance(event, Event):
            events.append(event)
    assert error is not None and "after STARTTLS" in str(error)
    assert events == [] and server.state is State.ERROR
    with pytest.raises(LocalProtocolError, match="after the connection failed"):
        server.next_event()


def test_attack_starttls_injection_server_bytes_during_handshake() -> None:
    """Bytes that arrive after the 220 but before ``tls_established()``
    (the adapter read them off the plaintext socket) are refused."""
    server = starttls_server()
    server.receive_data(b"STARTTLS\r\n")
    assert isinstance(server.next_event(), StartTLS)
    server.send(server.default_reply())
    assert server.next_event() is PAUSED
    server.receive_data(b"RSET\r\n")
    with pytest.raises(RemoteProtocolError, match="cleartext data received after STARTTLS"):
        server.tls_established()
    assert server.state is State.ERROR and not server.tls


def test_attack_starttls_server_sends_nothing_but_421_before_handshake() -> None:
    server = starttls_server()
    server.receive_data(b"STARTTLS\r\n")
    server.next_event()
    server.send(server.default_reply())
    with pytest.raises(LocalProtocolError, match="no command awaits a reply in state TLS"):
        server.send(Reply(code=250, text=("ok",)))
    assert server.send(Reply(code=421, text=("bye",))) == b"421 bye\r\n"
    assert server.state is State.CLOSED


def test_attack_starttls_injection_client_byte_at_a_time() -> None:
    client = client_after_ehlo(b"250 STARTTLS\r\n")
    client.send(StartTLS())
    seen: list[Reply] = []
    error: RemoteProtocolError | None = None
    for octet in b"220 2.0.0 go ahead\r\n250 injected\r\n":
        client.receive_data(bytes([octet]))
        try:
            event = client.next_event()
        except RemoteProtocolError as exc:
            error = exc
            break
        if isinstance(event, Reply):
            seen.append(event)
    assert [r.code for r in seen] == [220]
    assert error is not None and "after the 220 to STARTTLS" in str(error)
    assert client.state is State.ERROR
    with pytest.raises(LocalProtocolError, match="ERROR"):
        client.send(Ehlo(domain="c.example"))


@pytest.mark.parametrize(
    "command",
    [Ehlo(domain="c.example"), Noop(), Quit(), Mail(reverse_path="a@example.org"),
     Auth(mechanism="SCRAM-SHA-256")],
    ids=lambda c: type(c).__name__,
)
def test_attack_starttls_client_never_falls_back_to_cleartext(command: object) -> None:
    """After the 220 nothing may be written until the handshake is done."""
    client = client_after_ehlo(b"250-AUTH SCRAM-SHA-256\r\n250 STARTTLS\r\n")
    client.send(StartTLS())
    assert replies(client, b"220 go ahead\r\n")[0].code == 220
    assert client.state is State.TLS and client.next_event() is PAUSED
    with pytest.raises(LocalProtocolError):
        client.send(command)  # type: ignore[arg-type]
    client.tls_established()
    assert client.tls and client.state is State.GREETED


# =============================================================================
# Class 6: AUTH abuse
# =============================================================================

# -- client role ----------------------------------------------------------------


@pytest.mark.parametrize(
    "challenge",
    [b"334 %%%\r\n", b"334 QUE\r\n", b"334 QU FB\r\n", b"334 QUFB====\r\n", b"334 \xc3\xa9\r\n"],
    ids=["symbols", "unpadded", "space", "over-padded", "non-ascii"],
)
def test_attack_auth_client_garbage_challenge(challenge: bytes) -> None:
    """A 334 whose text is not strict base64 ends the session: the client
    cannot know what the server asked."""
    client = client_after_ehlo(b"250 AUTH LOGIN\r\n", tls=True)
    client.send(Auth(mechanism="LOGIN"))
    client.receive_data(challenge)
    with pytest.raises(RemoteProtocolError, match="334 challenge is not valid base64"):
        client.next_event()
    assert client.state is State.ERROR and not client.authenticated
    with pytest.raises(LocalProtocolError):
        client.send(AuthResponse(data=b"bob"))


def test_attack_auth_client_334_to_another_command() -> None:
    client = client_after_ehlo(b"250 PIPELINING\r\n")
    client.send(Mail(reverse_path="a@example.org"))
    client.receive_data(b"334 VXNlcm5hbWU6\r\n")
    with pytest.raises(RemoteProtocolError, match="unexpected 334 reply to MAIL"):
        client.next_event()


@pytest.mark.parametrize("reply", [b"354 go ahead\r\n", b"334\r\n334 again\r\n"], ids=["354", "two-334"])
def test_attack_auth_client_bad_reply_to_sasl_response(reply: bytes) -> None:
    """A 354 answering a SASL line, or a 334 nobody asked for, is a
    protocol error; a SASL line also ends any pipelined batch."""
    client = client_after_ehlo(b"250-PIPELINING\r\n250 AUTH LOGIN\r\n", tls=True)
    client.send(Auth(mechanism="LOGIN"))
    replies(client, b"334 VXNlcm5hbWU6\r\n")
    client.send(AuthResponse(data=b"bob"))
    with pytest.raises(LocalProtocolError, match="the SASL response must end a pipelined batch"):
        client.send(Noop())
    client.receive_data(reply)
    with pytest.raises(RemoteProtocolError, match="to the SASL response|no command outstanding"):
        for _ in range(2):
            assert isinstance(client.next_event(), Reply)
    assert client.state is State.ERROR


def test_attack_auth_client_354_to_auth() -> None:
    client = client_after_ehlo(b"250 AUTH LOGIN\r\n", tls=True)
    client.send(Auth(mechanism="LOGIN"))
    client.receive_data(b"354 go ahead\r\n")
    with pytest.raises(RemoteProtocolError, match="unexpected 354 reply to AUTH"):
        client.next_event()


def test_attack_auth_client_early_235_before_scram_completes() -> None:
    """The core cannot know the mechanism, so it reports the 235 as it came;
    the SASL client mechanism says the exchange is not complete, which is
    what the code driving the exchange must check (``mechanism.complete``:
    the server never proved it knows the password)."""
    client = client_after_ehlo(b"250 AUTH SCRAM-SHA-256\r\n")
    mechanism = sasl.ScramSha256Client("bob", "secret", nonce="clientnonce")
    client.send(Auth(mechanism=mechanism.name, initial_response=mechanism.initial_response()))
    assert [r.code for r in replies(client, b"235 2.7.0 welcome\r\n")] == [235]
    assert client.authenticated and client.state is State.READY
    assert not mechanism.complete


def test_attack_auth_client_235_without_server_proof_mid_exchange() -> None:
    credentials = sasl.ScramCredentials.from_password("secret", salt=b"salt" * 4)
    server = sasl.ScramSha256Server(nonce="servernonce")
    client = client_after_ehlo(b"250 AUTH SCRAM-SHA-256\r\n")
    mechanism = sasl.ScramSha256Client("bob", "secret", nonce="clientnonce")
    first = mechanism.initial_response()
    client.send(Auth(mechanism=mechanism.name, initial_response=first))
    step = server.start(first)
    assert isinstance(step, sasl.LookupScram)
    step = server.resume(credentials)
    assert isinstance(step, sasl.Challenge)
    wire = b"334 " + base64.b64encode(step.data) + b"\r\n"
    assert [r.code for r in replies(client, wire)] == [334]
    client.send(AuthResponse(data=mechanism.respond(client.challenge or b"")))
    # A hostile server skips the v= proof and claims success.
    assert [r.code for r in replies(client, b"235 2.7.0 ok\r\n")] == [235]
    assert not mechanism.complete


def test_attack_auth_client_forged_server_proof_is_refused() -> None:
    client = client_after_ehlo(b"250 AUTH SCRAM-SHA-256\r\n")
    mechanism = sasl.ScramSha256Client("bob", "secret", nonce="clientnonce")
    client.send(Auth(mechanism=mechanism.name, initial_response=mechanism.initial_response()))
    server_first = b"r=clientnonceSERVER,s=" + base64.b64encode(b"salt" * 4) + b",i=4096"
    replies(client, b"334 " + base64.b64encode(server_first) + b"\r\n")
    client.send(AuthResponse(data=mechanism.respond(client.challenge or b"")))
    forged = b"v=" + base64.b64encode(b"\0" * 32)
    replies(client, b"334 " + base64.b64encode(forged) + b"\r\n")
    with pytest.raises(sasl.SASLError):
        mechanism.respond(client.challenge or b"")
    # The driving code cancels; the core sends "*" and reads the 501.
    assert client.send(AuthCancel()) == b"*\r\n"
    assert [r.code for r in replies(client, b"501 5.7.0 cancelled\r\n")] == [501]
    assert client.state is State.READY and not client.authenticated


def test_attack_auth_client_switching_mechanism_mid_exchange() -> None:
    client = client_after_ehlo(b"250 AUTH LOGIN PLAIN\r\n", tls=True)
    client.send(Auth(mechanism="LOGIN"))
    replies(client, b"334 VXNlcm5hbWU6\r\n")
    with pytest.raises(LocalProtocolError, match="AUTH is not allowed in state AUTH"):
        client.send(Auth(mechanism="PLAIN", initial_response=b"\0bob\0secret"))
    with pytest.raises(LocalProtocolError, match="MAIL is not allowed in state AUTH"):
        client.send(Mail(reverse_path="a@example.org"))


def test_attack_auth_client_before_ehlo_twice_and_in_transaction() -> None:
    client = ClientConnection(tls=True)
    client.receive_data(b"220 hi\r\n")
    client.next_event()
    with pytest.raises(LocalProtocolError, match="AUTH is not allowed in state GREETED"):
        client.send(Auth(mechanism="PLAIN", initial_response=b"\0bob\0secret"))
    client = client_after_ehlo(b"250-PIPELINING\r\n250 AUTH PLAIN\r\n", tls=True)
    client.send(Mail(reverse_path="a@example.org"))
    with pytest.raises(LocalProtocolError, match="AUTH is not allowed in state MAIL"):
        client.send(Auth(mechanism="PLAIN", initial_response=b"\0bob\0secret"))
    replies(client, b"250 ok\r\n")
    client.send(Rset())
    replies(client, b"250 ok\r\n")
    client.send(Auth(mechanism="PLAIN", initial_response=b"\0bob\0secret"))
    replies(client, b"235 2.7.0 ok\r\n")
    with pytest.raises(LocalProtocolError, match="already authenticated"):
        client.send(Auth(mechanism="PLAIN", initial_response=b"\0bob\0secret"))


def test_attack_auth_client_data_cannot_inject_lines() -> None:
    """SASL data travels as base64: CR, LF and NUL in it stay on one line;
    a mechanism name cannot carry them at all."""
    client = client_after_ehlo(b"250 AUTH PLAIN\r\n", tls=True)
    with pytest.raises(LocalProtocolError):
        Auth(mechanism="PLAIN\r\nMAIL")
    line = client.send(Auth(mechanism="PLAIN", initial_response=b"\0bob\0x\r\nQUIT\r\n"))
    assert line.count(b"\r\n") == 1 and line.endswith(b"\r\n")
    assert base64.b64decode(line.split()[2]) == b"\0bob\0x\r\nQUIT\r\n"


def test_attack_auth_client_oversized_response_is_refused_before_sending() -> None:
    """RFC 4954 §4: up to 12288 octets of base64 go out; more would be
    refused by the server (500 5.5.6), so the client does not send it."""
    client = client_after_ehlo(b"250 AUTH XOAUTH2\r\n", tls=True)
    fits = b"x" * 9216  # 12288 octets of base64
    assert len(client.send(Auth(mechanism="XOAUTH2", initial_response=fits))) < 12328
    client = client_after_ehlo(b"250 AUTH XOAUTH2\r\n", tls=True)
    with pytest.raises(LocalProtocolError, match="exceeds"):
        client.send(Auth(mechanism="XOAUTH2", initial_response=b"x" * 9300))


def test_attack_auth_client_eof_mid_exchange() -> None:
    client = client_after_ehlo(b"250 AUTH LOGIN\r\n", tls=True)
    client.send(Auth(mechanism="LOGIN"))
    replies(client, b"334 VXNlcm5hbWU6\r\n")
    client.send(AuthResponse(data=b"bob"))
    client.receive_data(b"334 UGFzc3")  # half a challenge, then the server vanishes
    assert client.next_event() is NEED_DATA
    client.receive_data(b"")
    assert isinstance(client.next_event(), ConnectionClosed)
    assert client.state is State.CLOSED and not client.authenticated
    assert client.pending == (AuthResponse(data=b"bob"),)  # never answered
    with pytest.raises(LocalProtocolError, match="CLOSED"):
        client.send(AuthResponse(data=b"secret"))


# -- server role ----------------------------------------------------------------


def test_attack_auth_server_eof_mid_exchange() -> None:
    server = auth_server()
    assert codes(answer(server, b"AUTH LOGIN\r\n")) == [(334, None)]
    server.receive_data(base64.b64encode(b"bob")[:2])  # half a response
    assert server.next_event() is NEED_DATA
    server.receive_data(b"")
    assert isinstance(server.next_event(), ConnectionClosed)
    assert not server.authenticated and server.auth_identity is None
    assert server.state is State.CLOSED


def test_attack_auth_server_eof_while_verdict_pending() -> None:
    """The client vanished after sending credentials; the verdict may still
    be given, and the session then reports the close."""
    server = auth_server()
    server.receive_data(PLAIN_OK)
    server.receive_data(b"")
    assert isinstance(server.next_event(), Auth)
    assert server.next_event() is PAUSED
    server.send(server.auth_reply(True))
    assert isinstance(server.next_event(), ConnectionClosed)


def test_attack_auth_server_repeated_cancels_close() -> None:
    """Cancelling counts as a failure; the cancel that reaches the limit is
    answered 421 and closes, like a wrong password would be."""
    server = auth_server(max_auth_failures=3)
    result = answer(server, b"AUTH LOGIN\r\n*\r\nAUTH LOGIN\r\n*\r\n")
    assert codes(result) == [(334, None), (501, "5.7.0"), (334, None), (501, "5.7.0")]
    result = answer(server, b"AUTH LOGIN\r\n*\r\nNOOP\r\n")
    assert codes(result) == [(334, None), (421, "4.7.0")]
    assert server.state is State.CLOSED


def test_attack_auth_server_repeated_garbage_responses_close() -> None:
    server = auth_server(max_auth_failures=2)
    assert codes(answer(server, b"AUTH LOGIN\r\n%%%\r\n")) == [(334, None), (501, "5.5.2")]
    result = answer(server, b"AUTH LOGIN\r\n" + b"QUFB" * 3100 + b"\r\nNOOP\r\n")
    assert codes(result) == [(334, None), (421, "4.7.0")]
    assert server.state is State.CLOSED


def test_attack_auth_server_oversized_initial_response_is_500_5_5_6() -> None:
    """RFC 4954 §4/§6: a response over the limit gets 500 5.5.6, on the AUTH
    line as on a continuation line; the session goes on."""
    server = auth_server(max_auth_failures=5)
    line = b"AUTH PLAIN " + b"QUFB" * 3100 + b"\r\n"
    result = answer(server, line + b"NOOP\r\n")
    assert codes(result) == [(500, "5.5.6"), (250, "2.0.0")]
    assert isinstance(result[0][0], CommandRejected)
    assert server.state is State.READY


def test_attack_auth_server_response_line_with_bare_lf() -> None:
    server = auth_server(max_auth_failures=5)
    # RFC 5321 §2.3.8: the bare LF ends no line; the response line runs to
    # the CRLF, NOOP and all, and is refused once.
    result = answer(server, b"AUTH LOGIN\r\n" + base64.b64encode(b"bob") + b"\nNOOP\r\nNOOP\r\n")
    assert codes(result) == [(334, None), (500, "5.5.2"), (250, "2.0.0")]
    assert not server.authenticated


def test_attack_auth_server_byte_at_a_time() -> None:
    """The exchange parses the same fed one octet at a time."""
    server = auth_server()
    data = b"AUTH LOGIN\r\n" + base64.b64encode(b"bob") + b"\r\n" + base64.b64encode(b"secret") + b"\r\n"
    seen: list[tuple[int, str | None]] = []
    for octet in data:
        seen += codes(answer(server, bytes([octet])))
    assert seen == [(334, None), (334, None), (235, "2.7.0")]
    assert server.authenticated and server.auth_identity == "bob"


# =============================================================================
# Class 7: resource exhaustion (BDAT, replies)
# =============================================================================

# -- server role ----------------------------------------------------------------


def test_attack_bdat_huge_size_closes_without_reading() -> None:
    """A refused chunk over the discard cap ends the session at once: its
    octets are not read (they stay in the buffer, unprocessed)."""
    server = ServerConnection(ServerConfig(max_bdat_discard=1000))
    server.send(server.greeting())
    server.receive_data(b"EHLO c.example\r\nBDAT 999999999999999999\r\n" + b"x" * 5000)
    server.next_event()
    server.send(server.default_reply())
    with pytest.raises(RemoteProtocolError, match="over the discard cap") as info:
        server.next_event()
    assert server.trailing_data[0] == b"x" * 5000
    assert info.value.reply is not None
    assert server.send(info.value.reply).startswith(b"552 5.3.4")
    assert server.state is State.CLOSED


def test_attack_bdat_chunks_adding_up_over_the_size_limit() -> None:
    """Each chunk is under the limit; their sum is not: the chunk that
    crosses it is refused (552) and discarded, and the transaction fails."""
    config = ServerConfig(max_message_size=65536)
    data = START + b"BDAT 40000\r\n" + b"a" * 40000 + b"BDAT 30000 LAST\r\n" + b"b" * 30000 + b"RSET\r\n"
    events, out = server_events(data, config)
    assert replies_of(out)[-3:] == [250, 552, 250]
    received = b"".join(e.data for e in events if isinstance(e, MessageData))
    assert received == b"a" * 40000
    assert not any(isinstance(e, EndOfMessage) for e in events)


@pytest.mark.parametrize("byte_at_a_time", [False, True], ids=["whole", "bytewise"])
def test_attack_bdat_pipelined_after_refused_chunk_server(byte_at_a_time: bool) -> None:
    """RFC 3030 §2: after a refused chunk more BDATs are refused (503) but
    their octets are still consumed, never read as commands."""
    config = ServerConfig(max_message_size=65536)
    evil = b"MAIL FROM:<evil@example.org>\r\n"
    data = (
        START + b"BDAT 70000\r\n" + b"x" * 70000
        + b"BDAT %d\r\n" % len(evil) + evil
        + b"BDAT %d LAST\r\n" % len(evil) + evil
        + b"RSET\r\n"
    )
    events, out = server_events(data, config, byte_at_a_time=byte_at_a_time)
    assert replies_of(out)[-4:] == [552, 503, 503, 250]
    assert not any(isinstance(e, (Mail, MessageData, EndOfMessage)) for e in events[2:])


@pytest.mark.parametrize(
    "line,code",
    [
        (b"BDAT 30 LAST\n", 500),
        (b"BDAT 30 LAST\x00\r\n", 500),
        (b"BDAT 30 \xff\r\n", 501),
        (b"BDAT 30" + b" " * 600 + b"\r\n", 500),
        (b"bdat 30 " + b"x" * 13000 + b"\r\n", 500),
    ],
    ids=["bare-lf", "nul", "bad-utf8", "long", "over-buffer"],
)
def test_attack_bdat_unreadable_line_closes(line: bytes, code: int) -> None:
    """A BDAT line the server cannot read leaves the chunk's octets
    unknowable; reading them as commands would let message content run as
    commands, so the session ends instead."""
    body = b"MAIL FROM:<evil@example.org>\r\n"
    server = ServerConnection()
    server.send(server.greeting())
    server.receive_data(START + line + body)
    for _ in range(3):
        server.next_event()
        server.send(server.default_reply())
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.reply is not None and info.value.reply.code == code
    assert "unreadable BDAT line" in str(info.value)
    assert server.state is State.ERROR


def test_attack_bdat_flood_while_awaiting_reply_is_bounded() -> None:
    """Input piling up while a chunk's reply is awaited is bounded."""
    server = ServerConnection(ServerConfig(max_receive_buffer=1024))
    server.send(server.greeting())
    server.receive_data(START + b"BDAT 3\r\nabc")
    for _ in range(3):
        server.next_event()
        server.send(server.default_reply())
    assert server.next_event() == Bdat(size=3)
    assert server.next_event() == MessageData(data=b"abc")
    assert server.next_event() == EndOfChunk() and server.awaiting_reply == EndOfChunk()
    server.receive_data(b"BDAT 1\r\nx" * 200)
    with pytest.raises(RemoteProtocolError, match="unprocessed input") as info:
        server.next_event()
    assert info.value.reply is not None and info.value.reply.code == 421


def test_attack_bdat_large_chunk_streams_without_buffering() -> None:
    """An accepted chunk is handed out as it arrives, not held until its
    end, so its size does not decide the server's memory."""
    server = ServerConnection(ServerConfig(max_receive_buffer=1024))
    server.send(server.greeting())
    server.receive_data(START + b"BDAT 100000 LAST\r\n")
    for _ in range(3):
        server.next_event()
        server.send(server.default_reply())
    assert server.next_event() == Bdat(size=100000, last=True)
    total = 0
    for _ in range(50):
        server.receive_data(b"z" * 2000)
        event = server.next_event()
        assert isinstance(event, MessageData) and len(event.data) == 2000
        total += len(event.data)
        assert len(server.trailing_data[0]) == 0
    assert total == 100000 and server.next_event() == EndOfMessage()


# -- client role ----------------------------------------------------------------


def test_attack_bdat_client_pipelined_after_refused_chunk() -> None:
    """The client pipelined two chunks; the first is refused.  The second's
    refusal leaves the client where the server is (no transaction to
    continue), and it will not send more chunks until RSET."""
    client = client_after_ehlo(b"250-PIPELINING\r\n250 CHUNKING\r\n")
    client.send(Mail(reverse_path="a@example.org"))
    client.send(Rcpt(forward_path="b@example.org"))
    for chunk in (Bdat(size=3), MessageData(data=b"abc"), EndOfChunk(),
                  Bdat(size=2, last=True), MessageData(data=b"de"), EndOfMessage()):
        client.send(chunk)
    got = replies(client, b"250 ok\r\n250 ok\r\n552 5.3.4 too big\r\n503 5.5.1 bad sequence\r\n")
    assert [r.code for r in got] == [250, 250, 552, 503]
    assert client.state is State.BDAT_FAILED and client.pending == ()
    with pytest.raises(LocalProtocolError, match="BDAT is not allowed in state BDAT_FAILED"):
        client.send(Bdat(size=1, last=True))
    client.send(Rset())
    replies(client, b"250 ok\r\n")
    assert client.state is State.READY


def test_attack_bdat_client_pipelined_after_refused_chunk_round_trip() -> None:
    pair = Pair(ServerConfig(max_message_size=65536))
    pair.hello()
    got = pair.send(
        Mail(reverse_path="a@example.org"), Rcpt(forward_path="b@example.org"),
        Bdat(size=70000), MessageData(data=(b"x" * 998 + b"\r\n") * 70), EndOfChunk(),
        Bdat(size=1, last=True), MessageData(data=b"y"), EndOfMessage(),
    )
    assert [r.code for r in got if isinstance(r, Reply)] == [250, 250, 552, 503]
    assert pair.client.state is pair.server.state is State.BDAT_FAILED
    assert pair.send(Rset())[0].code == 250  # type: ignore[union-attr]
    assert pair.client.state is pair.server.state is State.READY


def test_attack_client_server_never_completes_multiline_reply() -> None:
    """A reply that keeps going is cut at ``max_reply_lines``."""
    client = client_after_ehlo(b"250 CHUNKING\r\n", ClientConfig(max_reply_lines=50))
    client.send(Mail(reverse_path="a@example.org"))
    client.receive_data(b"250-more\r\n" * 49)
    assert client.next_event() is NEED_DATA
    client.receive_data(b"250-more\r\n")
    with pytest.raises(RemoteProtocolError, match="longer than 50 lines"):
        client.next_event()


def test_attack_client_endless_reply_line_raises() -> None:
    client = client_after_ehlo(b"250 CHUNKING\r\n")
    client.send(Mail(reverse_path="a@example.org"))
    client.receive_data(b"250 " + b"a" * 3000)
    with pytest.raises(RemoteProtocolError, match="reply line longer than 2048"):
        client.next_event()


# =============================================================================
# Class 8: downgrade
# =============================================================================

# -- client role ----------------------------------------------------------------

CLEARTEXT_SECRETS = ("PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER")


@pytest.mark.parametrize("name", CLEARTEXT_SECRETS)
def test_attack_downgrade_client_starttls_stripped(name: str) -> None:
    """A man in the middle removed STARTTLS from the EHLO reply: the core
    cannot start TLS and still refuses to send a reusable secret."""
    client = client_after_ehlo(b"250 AUTH " + " ".join(CLEARTEXT_SECRETS).encode() + b"\r\n")
    with pytest.raises(LocalProtocolError, match="did not offer STARTTLS"):
        client.send(StartTLS())
    with pytest.raises(LocalProtocolError, match="cleartext"):
        client.send(Auth(mechanism=name, initial_response=b"secret"))


@pytest.mark.parametrize("refusal", [b"454 4.7.0 TLS not available\r\n", b"502 5.5.1 no\r\n",
                                     b"554 5.7.0 no\r\n"])
def test_attack_downgrade_client_starttls_refused(refusal: bytes) -> None:
    client = client_after_ehlo(b"250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n")
    client.send(StartTLS())
    assert replies(client, refusal)[0].code == int(refusal[:3])
    assert client.state is State.READY and not client.tls
    with pytest.raises(LocalProtocolError, match="cleartext"):
        client.send(Auth(mechanism="PLAIN", initial_response=b"\0bob\0secret"))


@pytest.mark.parametrize("garbage", [b"22O ready\r\n", b"220\n", b"354 go\r\n", b"\x00\x01\x02\r\n"])
def test_attack_downgrade_client_garbled_starttls_reply(garbage: bytes) -> None:
    """A reply the client cannot read ends the session: no AUTH or MAIL can
    follow in cleartext."""
    client = client_after_ehlo(b"250-STARTTLS\r\n250 AUTH SCRAM-SHA-256\r\n")
    client.send(StartTLS())
    client.receive_data(garbage)
    with pytest.raises(RemoteProtocolError):
        client.next_event()
    assert client.state is State.ERROR and not client.tls
    for command in (Auth(mechanism="SCRAM-SHA-256"), Mail(reverse_path="a@example.org")):
        with pytest.raises(LocalProtocolError, match="ERROR"):
            client.send(command)


def test_attack_downgrade_client_capabilities_forgotten_after_tls() -> None:
    """What the server offered in cleartext (possibly forged) does not
    carry over: after the handshake only the new EHLO counts."""
    client = client_after_ehlo(b"250-STARTTLS\r\n250 AUTH PLAIN\r\n")
    client.send(StartTLS())
    replies(client, b"220 go\r\n")
    client.tls_established()
    assert client.capabilities.auth_mechanisms == ()
    with pytest.raises(LocalProtocolError, match="AUTH is not allowed in state GREETED"):
        client.send(Auth(mechanism="PLAIN", initial_response=b"\0bob\0secret"))


# -- server role ----------------------------------------------------------------


def test_attack_downgrade_server_require_tls_refuses_mail_commands() -> None:
    config = ServerConfig(starttls=True, require_tls=True, auth_mechanisms=("PLAIN",))
    data = (
        b"EHLO c.example\r\n" + PLAIN_OK + b"MAIL FROM:<a@example.org>\r\n"
        b"VRFY bob\r\nBDAT 3 LAST\r\nabcNOOP\r\nSTARTTLS\r\n"
    )
    events, out = server_events(data, config)
    # BDAT outside a transaction is out of sequence first (503); its octets
    # are consumed all the same.
    assert replies_of(out) == [250, 530, 530, 530, 503, 250, 220]
    ehlo = out.split(b"\r\n530")[0]
    assert b"STARTTLS" in ehlo and b"AUTH" not in ehlo
    assert isinstance(events[-1], StartTLS)


def test_attack_downgrade_server_offers_nothing_secret_in_cleartext() -> None:
    config = ServerConfig(starttls=True, auth_mechanisms=("PLAIN", "LOGIN"))
    server = ServerConnection(config)
    lines = server.ehlo_reply().text
    assert "STARTTLS" in lines and not any(line.startswith(("AUTH", "REQUIRETLS")) for line in lines)
    secure = ServerConnection(config, tls=True)
    lines = secure.ehlo_reply().text
    assert "STARTTLS" not in lines and "AUTH PLAIN LOGIN" in lines and "REQUIRETLS" in lines


# =============================================================================
# Class 9: abrupt disconnects (BDAT, LMTP)
# =============================================================================

# -- server role ----------------------------------------------------------------


@pytest.mark.parametrize(
    "tail",
    [b"BDAT 5", b"BDAT 5 LAST\r\n", b"BDAT 5 LAST\r\nabcd", b"BDAT 2\r\nab",
     b"BDAT 2\r\nabBDAT 3 LAST\r\nxy"],
    ids=["mid-line", "after-line", "mid-chunk", "between-chunks", "mid-last-chunk"],
)
@pytest.mark.parametrize("byte_at_a_time", [False, True], ids=["whole", "bytewise"])
def test_attack_disconnect_during_bdat_delivers_nothing(tail: bytes, byte_at_a_time: bool) -> None:
    server = ServerConnection()
    server.send(server.greeting())
    data = START + tail
    for piece in [bytes([b]) for b in data] if byte_at_a_time else [data]:
        server.receive_data(piece)
    server.receive_data(b"")
    seen = []
    while True:
        event = server.next_event()
        if event is PAUSED:
            server.send(server.default_reply())
            continue
        assert isinstance(event, Event)
        seen.append(event)
        if isinstance(event, ConnectionClosed):
            break
    assert not any(isinstance(e, EndOfMessage) for e in seen)
    assert server.state is State.CLOSED


def test_attack_disconnect_while_refused_chunk_is_discarded() -> None:
    server = ServerConnection(ServerConfig(max_message_size=65536))
    server.send(server.greeting())
    server.receive_data(START + b"BDAT 70000 LAST\r\n" + b"x" * 1000)
    for _ in range(3):
        server.next_event()
        server.send(server.default_reply())
    assert server.next_event() is NEED_DATA
    server.receive_data(b"")
    assert isinstance(server.next_event(), ConnectionClosed)


def test_attack_disconnect_lmtp_server_after_last_chunk() -> None:
    """The LMTP client left after the last chunk: the per-recipient replies
    can still be sent, then the close is reported."""
    server = ServerConnection(ServerConfig(lmtp=True))
    server.send(server.greeting())
    server.receive_data(
        b"LHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<x@example.org>\r\n"
        b"RCPT TO:<y@example.org>\r\nBDAT 2 LAST\r\nhi"
    )
    server.receive_data(b"")
    events = []
    while True:
        event = server.next_event()
        if event is PAUSED:
            server.send(server.default_reply())
            continue
        assert isinstance(event, Event)
        events.append(event)
        if isinstance(event, ConnectionClosed):
            break
    assert [type(e).__name__ for e in events[-3:]] == ["MessageData", "EndOfMessage", "ConnectionClosed"]


# -- client role ----------------------------------------------------------------


def test_attack_disconnect_client_before_final_bdat_reply() -> None:
    """No final reply, no delivery: the chunk stays pending when the
    connection drops, so the caller treats it as a temporary failure."""
    client = client_after_ehlo(b"250-PIPELINING\r\n250 CHUNKING\r\n")
    client.send(Mail(reverse_path="a@example.org"))
    client.send(Rcpt(forward_path="b@example.org"))
    client.send(Bdat(size=2, last=True))
    client.send(MessageData(data=b"hi"))
    client.send(EndOfMessage())
    got = replies(client, b"250 ok\r\n250 ok\r\n250 2.0.0 queu")  # cut mid-line
    assert [r.code for r in got] == [250, 250]
    client.receive_data(b"")
    assert isinstance(client.next_event(), ConnectionClosed)
    assert client.pending == (Bdat(size=2, last=True),)
    assert client.state is State.CLOSED


def test_attack_disconnect_client_mid_multiline_reply() -> None:
    client = client_after_ehlo(b"250 CHUNKING\r\n")
    client.send(Vrfy(text="bob"))
    client.receive_data(b"250-first line\r\n250-second")
    assert client.next_event() is NEED_DATA
    client.receive_data(b"")
    assert isinstance(client.next_event(), ConnectionClosed)
    assert client.pending == (Vrfy(text="bob"),)


# =============================================================================
# LMTP: hostile and refusing servers
# =============================================================================


def lmtp_client() -> ClientConnection:
    client = client_after_ehlo(b"250-PIPELINING\r\n250 CHUNKING\r\n", ClientConfig(lmtp=True))
    client.send(Mail(reverse_path="a@example.org"))
    client.send(Rcpt(forward_path="x@example.org"))
    client.send(Rcpt(forward_path="y@example.org"))
    client.send(Rcpt(forward_path="z@example.org"))
    assert [r.code for r in replies(client, b"250 ok\r\n" * 4)] == [250] * 4
    return client


def test_attack_lmtp_client_421_in_the_middle_of_replies() -> None:
    client = lmtp_client()
    client.send(Bdat(size=2, last=True))
    client.send(MessageData(data=b"hi"))
    client.send(EndOfMessage())
    client.receive_data(b"250 2.0.0 x delivered\r\n")
    reply = client.next_event()
    assert isinstance(reply, Reply) and reply.code == 250
    assert client.lmtp_recipient == Rcpt(forward_path="x@example.org")
    client.receive_data(b"421 4.3.2 shutting down\r\n250 2.0.0 z delivered\r\n")
    reply = client.next_event()
    assert isinstance(reply, Reply) and reply.code == 421
    assert client.state is State.CLOSED
    assert client.lmtp_recipient is None  # the 421 is about the session, not y
    assert isinstance(client.next_event(), ConnectionClosed)
    with pytest.raises(LocalProtocolError, match="CLOSED"):
        client.send(Quit())


def test_attack_lmtp_server_421_in_the_middle_of_replies() -> None:
    server = ServerConnection(ServerConfig(lmtp=True))
    server.send(server.greeting())
    server.receive_data(
        b"LHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<x@example.org>\r\n"
        b"RCPT TO:<y@example.org>\r\nRCPT TO:<z@example.org>\r\nDATA\r\n"
    )
    for _ in range(6):
        server.next_event()
        server.send(server.default_reply())
    server.receive_data(b"hi\r\n.\r\nQUIT\r\n")
    assert isinstance(server.next_event(), MessageData)
    assert isinstance(server.next_event(), EndOfMessage)
    assert server.replies_due == 3
    server.send(Reply(code=250, text=("x ok",), enhanced="2.0.0"))
    assert server.replies_due == 2
    server.send(Reply(code=421, text=("bye",), enhanced="4.3.2"))
    assert server.state is State.CLOSED and server.replies_due == 0
    assert isinstance(server.next_event(), ConnectionClosed)


def test_attack_lmtp_refused_last_chunk_gets_a_reply_per_recipient() -> None:
    """RFC 2033 §4.3: BDAT LAST takes one reply per accepted recipient, a
    refusal included; the client counts the same, so the next reply is
    matched to the right command."""
    pair = Pair(ServerConfig(lmtp=True, max_message_size=65536),
                client=ClientConnection(ClientConfig(lmtp=True)))
    pair.greet()
    pair.send(Lhlo(domain="c.example"))
    got = pair.send(
        Mail(reverse_path="a@example.org"), Rcpt(forward_path="x@example.org"),
        Rcpt(forward_path="y@example.org"), Bdat(size=70000, last=True),
        MessageData(data=(b"m" * 998 + b"\r\n") * 70), EndOfMessage(),
    )
    assert [r.code for r in got if isinstance(r, Reply)] == [250, 250, 250, 552, 552]
    assert pair.client.pending == () and pair.client.state is State.READY
    assert pair.server.state is State.READY
    assert pair.send(Noop()) == [Reply(code=250, text=("OK",), enhanced="2.0.0")]


def test_attack_lmtp_refused_mail_forgets_the_last_transaction() -> None:
    """After a delivered transaction, a refused MAIL leaves no recipients:
    a pipelined BDAT LAST then takes a single reply, on both sides."""
    pair = Pair(ServerConfig(lmtp=True), client=ClientConnection(ClientConfig(lmtp=True)))
    pair.greet()
    pair.send(Lhlo(domain="c.example"))
    pair.send(Mail(reverse_path="a@example.org"), Rcpt(forward_path="x@example.org"),
              Rcpt(forward_path="y@example.org"), Bdat(size=1, last=True),
              MessageData(data=b"m"), EndOfMessage())
    assert pair.client.state is State.READY
    got = pair.send(
        Mail(reverse_path="a@example.org", parameters={"SIZE": "999999999999"}),
        Rcpt(forward_path="z@example.org"), Bdat(size=1, last=True),
        MessageData(data=b"m"), EndOfMessage(),
    )
    assert [r.code for r in got if isinstance(r, Reply)] == [552, 503, 503]
    assert pair.client.pending == () and pair.client.accepted_recipients == ()
    assert pair.send(Noop()) == [Reply(code=250, text=("OK",), enhanced="2.0.0")]


def test_attack_lmtp_refused_chunk_then_last_chunk() -> None:
    """A chunk is refused, the pipelined BDAT LAST after it too: the LAST
    still owes a reply per accepted recipient, and both sides agree."""
    pair = Pair(ServerConfig(lmtp=True, max_message_size=65536),
                client=ClientConnection(ClientConfig(lmtp=True)))
    pair.greet()
    pair.send(Lhlo(domain="c.example"))
    got = pair.send(
        Mail(reverse_path="a@example.org"), Rcpt(forward_path="x@example.org"),
        Rcpt(forward_path="y@example.org"), Bdat(size=70000),
        MessageData(data=(b"m" * 998 + b"\r\n") * 70), EndOfChunk(), Bdat(size=1, last=True),
        MessageData(data=b"m"), EndOfMessage(),
    )
    assert [r.code for r in got if isinstance(r, Reply)] == [250, 250, 250, 552, 503, 503]
    assert pair.client.pending == ()
    assert pair.client.state is pair.server.state is State.BDAT_FAILED
    assert pair.send(Rset())[0].code == 250  # type: ignore[union-attr]
