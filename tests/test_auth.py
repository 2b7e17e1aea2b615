"""AUTH (RFC 4954) in both cores, with every SASL mechanism."""

from __future__ import annotations

import base64

import pytest

from smtpproto import (
    Auth,
    AuthCancel,
    AuthResponse,
    ClientConfig,
    ClientConnection,
    CommandRejected,
    ConnectionClosed,
    Ehlo,
    Event,
    LocalProtocolError,
    Mail,
    RemoteProtocolError,
    Reply,
    ServerConfig,
    ServerConnection,
    State,
)
from smtpproto import sasl
from smtpproto.extensions import auth as auth_ext

from helpers import Pair, default_responder, server_events

USERS = {"bob": "secret", "jøran": "pässwörd"}
TOKENS = {"bob": "tok-123"}
ALL = ("SCRAM-SHA-256", "CRAM-MD5", "OAUTHBEARER", "XOAUTH2", "PLAIN", "LOGIN")


def verifier(server: ServerConnection, event: Event) -> Reply | None:
    """An application answering the core's verification requests."""
    if isinstance(event, (Auth, AuthResponse)):
        request = server.auth_request
        if isinstance(request, sasl.CheckPassword):
            return server.auth_reply(USERS.get(request.authcid) == request.password)
        if isinstance(request, sasl.LookupPassword):
            return server.auth_reply(USERS.get(request.authcid))
        if isinstance(request, sasl.LookupScram):
            password = USERS.get(request.authcid)
            creds = None if password is None else sasl.ScramCredentials.from_password(password)
            return server.auth_reply(creds)
        if isinstance(request, sasl.CheckToken):
            return server.auth_reply(TOKENS.get(request.user) == request.token)
        assert request is None
        return server.auth_reply()
    return default_responder(server, event)


def auth_pair(tls: bool = True, **config: object) -> Pair:
    settings: dict[str, object] = {"auth_mechanisms": ALL, "starttls": True, **config}
    pair = Pair(
        ServerConfig(**settings),  # type: ignore[arg-type]
        client=ClientConnection(tls=tls),
        responder=verifier,
    )
    pair.server = ServerConnection(pair.server.config, tls=tls)
    pair.hello()
    return pair


def client_mechanism(name: str, user: str, secret: str) -> sasl.ClientMechanism:
    if name in ("XOAUTH2", "OAUTHBEARER"):
        return sasl.choose_client_mechanism([name], username=user, token=secret, allow_plaintext=True, host="h", port=25)  # type: ignore[return-value]
    return sasl.choose_client_mechanism([name], username=user, password=secret, allow_plaintext=True)  # type: ignore[return-value]


def run_auth(pair: Pair, mechanism: sasl.ClientMechanism, initial: bool = True) -> Reply:
    """Drive a whole exchange; return the final reply."""
    first = mechanism.initial_response() if initial else None
    replies = pair.send(Auth(mechanism=mechanism.name, initial_response=first))
    while True:
        reply = replies[-1]
        assert isinstance(reply, Reply)
        if reply.code != 334:
            return reply
        assert pair.client.state is State.AUTH
        assert pair.client.challenge is not None
        replies = pair.send(AuthResponse(data=mechanism.respond(pair.client.challenge)))


# LOGIN and CRAM-MD5 are server-first: they never have an initial response.
CASES = [(name, True) for name in ALL if name not in ("LOGIN", "CRAM-MD5")] + [
    (name, False) for name in ALL
]


@pytest.mark.parametrize("name,initial", CASES)
def test_every_mechanism_succeeds(name: str, initial: bool) -> None:
    pair = auth_pair()
    user, secret = ("bob", TOKENS["bob"]) if "OAUTH" in name else ("bob", "secret")
    mechanism = client_mechanism(name, user, secret)
    reply = run_auth(pair, mechanism, initial)
    assert (reply.code, reply.enhanced) == (235, "2.7.0")
    assert mechanism.complete
    assert pair.server.authenticated and pair.client.authenticated
    assert pair.server.auth_identity == "bob"
    assert pair.server.state is State.READY and pair.client.state is State.READY
    # RFC 4954 §4: AUTH only once per session.
    with pytest.raises(LocalProtocolError, match="already authenticated"):
        pair.client.send(Auth(mechanism="PLAIN", initial_response=b"\0bob\0secret"))


@pytest.mark.parametrize("name", ALL)
def test_every_mechanism_fails_with_wrong_secret(name: str) -> None:
    pair = auth_pair()
    mechanism = client_mechanism(name, "bob", "wrong")
    reply = run_auth(pair, mechanism, initial=name not in ("LOGIN", "CRAM-MD5"))
    assert (reply.code, reply.enhanced) == (535, "5.7.8")
    assert not pair.server.authenticated and not pair.client.authenticated
    assert pair.server.state is State.READY and pair.client.state is State.READY


def test_utf8_credentials() -> None:
    pair = auth_pair()
    reply = run_auth(pair, client_mechanism("PLAIN", "jøran", "pässwörd"))
    assert reply.code == 235 and pair.server.auth_identity == "jøran"


def test_wire_form_of_auth_lines() -> None:
    client = ClientConnection(tls=True)
    client.receive_data(b"220 hi\r\n250-s\r\n250 AUTH PLAIN LOGIN\r\n")
    client.next_event()
    client.send(Ehlo(domain="c.example"))
    client.next_event()
    assert client.send(Auth(mechanism="plain", initial_response=b"\0a\0b")) == (
        b"AUTH PLAIN " + base64.b64encode(b"\0a\0b") + b"\r\n"
    )
    client.receive_data(b"535 5.7.8 no\r\n")
    client.next_event()
    assert client.send(Auth(mechanism="PLAIN", initial_response=b"")) == b"AUTH PLAIN =\r\n"
    client.receive_data(b"334 \r\n")
    reply = client.next_event()
    assert isinstance(reply, Reply) and reply.code == 334 and client.challenge == b""
    assert client.send(AuthResponse(data=b"\0a\0b")) == base64.b64encode(b"\0a\0b") + b"\r\n"
    client.receive_data(b"334 \r\n")
    client.next_event()
    assert client.send(AuthCancel()) == b"*\r\n"
    client.receive_data(b"501 5.7.0 cancelled\r\n")
    client.next_event()
    assert client.state is State.READY


def test_empty_challenge_has_a_space() -> None:
    """RFC 4954 §4: continue-req = "334" SP [base64] CRLF."""
    _, out = server_events(b"EHLO c\r\nAUTH PLAIN\r\n", ServerConfig(auth_mechanisms=("PLAIN",), auth_plaintext=True), responder=verifier)
    assert out.endswith(b"\r\n334 \r\n")


def raw_server(**config: object) -> ServerConnection:
    settings: dict[str, object] = {"auth_mechanisms": ALL, "auth_plaintext": True, **config}
    server = ServerConnection(ServerConfig(**settings))  # type: ignore[arg-type]
    server.send(server.greeting())
    server.receive_data(b"EHLO c.example\r\n")
    server.next_event()
    server.send(server.default_reply())
    return server


def answer(server: ServerConnection, data: bytes) -> list[tuple[Event, Reply]]:
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


def test_attack_auth_cancel_is_501() -> None:
    server = raw_server()
    result = answer(server, b"AUTH LOGIN\r\n*\r\n")
    assert codes(result) == [(334, None), (501, "5.7.0")]
    assert isinstance(result[1][0], AuthCancel)
    assert server.state is State.READY


def test_attack_auth_invalid_base64() -> None:
    server = raw_server()
    assert codes(answer(server, b"AUTH PLAIN not*base64\r\n")) == [(501, "5.5.2")]
    assert codes(answer(server, b"AUTH PLAIN AGJvYgBzZWNyZXQ\r\n")) == [(501, "5.5.2")]  # unpadded
    assert codes(answer(server, b"AUTH LOGIN\r\n%%%\r\n")) == [(334, None), (501, "5.5.2")]
    assert server.state is State.READY


def test_attack_auth_empty_and_equals_initial_response() -> None:
    server = raw_server(max_auth_failures=10)
    assert codes(answer(server, b"AUTH PLAIN =\r\n")) == [(501, "5.5.2")]
    result = answer(server, b"AUTH LOGIN =\r\n")  # an empty user name
    assert result[0][1].code in (334, 501)


def test_attack_auth_plain_wrong_number_of_nuls() -> None:
    server = raw_server(max_auth_failures=10)
    for data in (b"bob\0secret", b"\0\0bob\0secret", b"a\0b\0c\0d"):
        line = b"AUTH PLAIN " + base64.b64encode(data) + b"\r\n"
        assert codes(answer(server, line)) == [(501, "5.5.2")], data


def test_attack_auth_unknown_mechanism_is_504() -> None:
    server = raw_server()
    assert codes(answer(server, b"AUTH DIGEST-MD5\r\n")) == [(504, "5.5.4")]
    assert codes(answer(server, b"AUTH NOT_A*MECH\r\n")) == [(501, "5.5.4")]


def test_attack_auth_before_ehlo_is_503() -> None:
    events, out = server_events(b"AUTH PLAIN =\r\n", ServerConfig(auth_mechanisms=("PLAIN",), auth_plaintext=True))
    assert isinstance(events[-1], CommandRejected) and out.startswith(b"503 5.5.1")


def test_attack_auth_after_helo_is_503() -> None:
    config = ServerConfig(auth_mechanisms=("PLAIN",), auth_plaintext=True)
    _, out = server_events(b"HELO c.example\r\nAUTH PLAIN =\r\n", config)
    assert out.split(b"\r\n")[1].startswith(b"503 5.5.1")


def test_attack_auth_twice_is_503() -> None:
    server = raw_server()
    line = b"AUTH PLAIN " + base64.b64encode(b"\0bob\0secret") + b"\r\n"
    assert codes(answer(server, line)) == [(235, "2.7.0")]
    assert codes(answer(server, line)) == [(503, "5.5.1")]


def test_attack_auth_in_transaction_is_503() -> None:
    server = raw_server()
    line = b"AUTH PLAIN " + base64.b64encode(b"\0bob\0secret") + b"\r\n"
    result = answer(server, b"MAIL FROM:<a@example.org>\r\n" + line)
    assert codes(result)[1] == (503, "5.5.1")


def test_attack_auth_over_cleartext_is_538() -> None:
    _, out = server_events(b"EHLO c\r\nAUTH PLAIN =\r\n", ServerConfig(auth_mechanisms=("PLAIN",)))
    assert b"AUTH" not in out.split(b"\r\n554")[0].split(b"\r\n250 ")[0]
    assert out.endswith(b"538 5.7.11 Encryption required for requested authentication mechanism\r\n")


def test_auth_not_configured_is_502() -> None:
    _, out = server_events(b"EHLO c\r\nAUTH PLAIN =\r\n")
    assert out.endswith(b"502 5.5.1 AUTH not available\r\n")


def test_attack_auth_long_responses() -> None:
    """RFC 4954 §4: accept responses of at least 12288 octets; longer get
    500 5.5.6."""
    server = raw_server(max_auth_failures=10)
    token = "t" * 9000
    data = f"user=bob\x01auth=Bearer {token}\x01\x01".encode()
    line = base64.b64encode(data)
    assert 12000 < len(line) <= 12288
    result = answer(server, b"AUTH XOAUTH2 " + line + b"\r\n")
    assert codes(result)[0][0] == 334  # accepted, judged (wrong token: error challenge)
    answer(server, b"\r\n")
    result = answer(server, b"AUTH LOGIN\r\n" + b"QUFB" * 3100 + b"\r\n")
    assert codes(result) == [(334, None), (500, "5.5.6")]
    assert server.state is State.READY
    assert codes(answer(server, b"NOOP\r\n")) == [(250, "2.0.0")]


def test_attack_auth_repeated_failures_close() -> None:
    server = raw_server(max_auth_failures=3)
    bad = b"AUTH PLAIN " + base64.b64encode(b"\0bob\0wrong") + b"\r\n"
    assert codes(answer(server, bad + bad)) == [(535, "5.7.8"), (535, "5.7.8")]
    result = answer(server, bad)
    assert codes(result) == [(421, "4.7.0")]
    assert server.state is State.CLOSED


def test_attack_auth_switching_mechanism_mid_exchange() -> None:
    """A new AUTH line inside an exchange is just a (bad) response."""
    server = raw_server(max_auth_failures=10)
    result = answer(server, b"AUTH LOGIN\r\nAUTH PLAIN =\r\n")
    assert codes(result) == [(334, None), (501, "5.5.2")]
    assert server.state is State.READY


def test_fresh_mechanism_state_per_attempt() -> None:
    server = raw_server(max_auth_failures=10)
    user = base64.b64encode(b"bob")
    assert codes(answer(server, b"AUTH LOGIN " + user + b"\r\n*\r\n")) == [(334, None), (501, "5.7.0")]
    # The second attempt starts from the user name again.
    result = answer(server, b"AUTH LOGIN\r\n" + user + b"\r\n" + base64.b64encode(b"secret") + b"\r\n")
    assert codes(result) == [(334, None), (334, None), (235, "2.7.0")]


@pytest.mark.parametrize(
    "reply",
    [
        Reply(code=534, text=("Authentication mechanism is too weak",), enhanced="5.7.9"),
        Reply(code=538, text=("Encryption required",), enhanced="5.7.11"),
        Reply(code=454, text=("Temporary authentication failure",), enhanced="4.7.0"),
    ],
)
def test_application_chosen_results(reply: Reply) -> None:
    server = raw_server()
    server.receive_data(b"AUTH PLAIN " + base64.b64encode(b"\0bob\0secret") + b"\r\n")
    assert isinstance(server.next_event(), Auth)
    assert isinstance(server.auth_request, sasl.CheckPassword)
    assert server.send(reply).startswith(str(reply.code).encode())
    assert not server.authenticated and server.state is State.READY
    client = ClientConnection(tls=True)
    client.receive_data(b"220 hi\r\n250-s\r\n250 AUTH PLAIN\r\n")
    client.next_event()
    client.send(Ehlo(domain="c"))
    client.next_event()
    client.send(Auth(mechanism="PLAIN", initial_response=b"\0bob\0secret"))
    client.receive_data(server._format(reply))
    assert client.next_event() == reply and not client.authenticated


def test_default_reply_refuses_unverified() -> None:
    """Without an answer from the application, the default is refusal."""
    server = raw_server()
    server.receive_data(b"AUTH PLAIN " + base64.b64encode(b"\0bob\0secret") + b"\r\n")
    server.next_event()
    reply = server.default_reply()
    assert (reply.code, reply.enhanced) == (535, "5.7.8")


def test_auth_reply_needs_an_auth_step() -> None:
    server = raw_server()
    with pytest.raises(LocalProtocolError, match="no AUTH step"):
        server.auth_reply(True)
    assert server.auth_request is None


def test_mail_auth_parameter() -> None:
    config = ServerConfig(auth_mechanisms=("PLAIN",), auth_plaintext=True)
    events, _ = server_events(b"EHLO c\r\nMAIL FROM:<a@example.org> AUTH=bob+40example.org\r\n", config)
    mail = events[-1]
    assert isinstance(mail, Mail) and auth_ext.mail_auth(mail) == "bob@example.org"
    events, _ = server_events(b"EHLO c\r\nMAIL FROM:<a@example.org> AUTH=<>\r\n", config)
    assert isinstance(events[-1], Mail) and auth_ext.mail_auth(events[-1]) == ""
    events, out = server_events(b"EHLO c\r\nMAIL FROM:<a@example.org> AUTH\r\n", config)
    assert isinstance(events[-1], CommandRejected) and out.endswith(b"AUTH= needs a mailbox or <>\r\n")
    assert auth_ext.mail_auth(Mail(reverse_path="a@example.org")) is None


def test_require_auth() -> None:
    config = ServerConfig(auth_mechanisms=("PLAIN",), auth_plaintext=True, require_auth=True)
    line = b"AUTH PLAIN " + base64.b64encode(b"\0bob\0secret") + b"\r\n"
    _, out = server_events(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\n" + line + b"MAIL FROM:<a@example.org>\r\n", config, responder=verifier)
    lines = out.split(b"\r\n")
    assert b"530 5.7.0 Authentication required" in lines
    assert lines[-2] == b"250 2.1.0 Sender OK"
    with pytest.raises(ValueError, match="require_auth"):
        ServerConfig(require_auth=True)


def test_client_refuses_plaintext_secrets_over_cleartext() -> None:
    client = ClientConnection()
    client.receive_data(b"220 hi\r\n250-s\r\n250 AUTH PLAIN LOGIN SCRAM-SHA-256\r\n")
    client.next_event()
    client.send(Ehlo(domain="c"))
    client.next_event()
    for name in ("PLAIN", "LOGIN"):
        with pytest.raises(LocalProtocolError, match="cleartext"):
            client.send(Auth(mechanism=name))
    with pytest.raises(LocalProtocolError, match="did not offer AUTH CRAM-MD5"):
        client.send(Auth(mechanism="CRAM-MD5"))
    client.send(Auth(mechanism="SCRAM-SHA-256", initial_response=b"n,,n=bob,r=abc"))
    allowed = ClientConnection(ClientConfig(allow_plaintext_auth=True))
    allowed.receive_data(b"220 hi\r\n250-s\r\n250 AUTH PLAIN\r\n")
    allowed.next_event()
    allowed.send(Ehlo(domain="c"))
    allowed.next_event()
    assert allowed.send(Auth(mechanism="PLAIN")) == b"AUTH PLAIN\r\n"


def test_client_sasl_lines_only_after_334() -> None:
    pair = auth_pair()
    with pytest.raises(LocalProtocolError, match="only answer a 334"):
        pair.client.send(AuthResponse(data=b"x"))
    with pytest.raises(LocalProtocolError, match="only answer a 334"):
        pair.client.send(AuthCancel())


def test_client_rejects_non_base64_challenge() -> None:
    pair = auth_pair()
    pair.client.send(Auth(mechanism="LOGIN"))
    pair.client.receive_data(b"334 %%%\r\n")
    with pytest.raises(RemoteProtocolError, match="not valid base64"):
        pair.client.next_event()


def test_auth_pipelining_rules() -> None:
    """RFC 4954 §4: only AUTH PLAIN with an initial response may be
    followed by more commands in the same batch."""
    pair = auth_pair()
    pair.client.send(Auth(mechanism="PLAIN", initial_response=b"\0bob\0secret"))
    pair.client.send(Mail(reverse_path="a@example.org"))
    pair = auth_pair()
    pair.client.send(Auth(mechanism="LOGIN"))
    with pytest.raises(LocalProtocolError, match="AUTH must end a pipelined batch"):
        pair.client.send(Mail(reverse_path="a@example.org"))


def test_auth_reset_by_starttls() -> None:
    pair = auth_pair(tls=False, auth_plaintext=True)
    reply = run_auth(pair, client_mechanism("SCRAM-SHA-256", "bob", "secret"))
    assert reply.code == 235
    from smtpproto import StartTLS

    pair.send(StartTLS())
    pair.server.tls_established()
    pair.client.tls_established()
    assert not pair.server.authenticated and not pair.client.authenticated
    assert pair.server.auth_identity is None


def test_auth_round_trip_events_equal() -> None:
    pair = auth_pair()
    mechanism = client_mechanism("LOGIN", "bob", "secret")
    run_auth(pair, mechanism, initial=False)
    sent = [e for e in pair.server_events if isinstance(e, (Auth, AuthResponse))]
    assert sent == [
        Auth(mechanism="LOGIN"),
        AuthResponse(data=b"bob"),
        AuthResponse(data=b"secret"),
    ]


def test_attack_auth_multiline_challenge_is_refused() -> None:
    """RFC 4954 §4: a challenge is one "334 SP base64" line; a client does
    not pick one line out of several."""
    pair = auth_pair()
    pair.client.send(Auth(mechanism="LOGIN"))
    pair.client.receive_data(b"334-VXNlcm5hbWU6\r\n334 UGFzc3dvcmQ6\r\n")
    with pytest.raises(RemoteProtocolError, match="spans several lines"):
        pair.client.next_event()
