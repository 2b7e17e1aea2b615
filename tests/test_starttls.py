"""STARTTLS (RFC 3207) and implicit TLS (RFC 8314) in both cores."""

from __future__ import annotations

import pytest

from smtpproto import (
    PAUSED,
    ClientConnection,
    CommandRejected,
    ConnectionClosed,
    Ehlo,
    LocalProtocolError,
    Mail,
    Noop,
    RemoteProtocolError,
    Reply,
    ServerConfig,
    ServerConnection,
    StartTLS,
    State,
)

from helpers import Pair, drain, server_events

TLS_CONFIG = ServerConfig(starttls=True, auth_mechanisms=("PLAIN",))


def tls_pair(**config: object) -> Pair:
    pair = Pair(ServerConfig(starttls=True, auth_mechanisms=("PLAIN",), **config))  # type: ignore[arg-type]
    pair.hello()
    return pair


def test_starttls_switch_and_reset() -> None:
    pair = tls_pair()
    caps = pair.client.capabilities
    assert caps.starttls and "AUTH" not in caps  # no AUTH over cleartext
    assert pair.send(StartTLS()) == [Reply(code=220, text=("Ready to start TLS",), enhanced="2.0.0")]
    assert pair.server.state is State.TLS and pair.client.state is State.TLS
    assert pair.server.next_event() is PAUSED and pair.client.next_event() is PAUSED
    pair.server.tls_established()
    pair.client.tls_established()
    assert pair.server.tls and pair.client.tls
    # RFC 3207 §4.2: both forget the EHLO and the capabilities.
    assert pair.server.state is State.GREETED and pair.client.state is State.GREETED
    assert pair.server.client_name is None
    assert pair.client.capabilities.keywords == {}
    with pytest.raises(LocalProtocolError, match="MAIL is not allowed in state GREETED"):
        pair.client.send(Mail(reverse_path="a@example.org"))
    pair.send(Ehlo(domain="client.example"))
    caps = pair.client.capabilities
    assert not caps.starttls  # no longer offered
    assert caps.auth_mechanisms == ("PLAIN",) and caps.requiretls


def rejection(data: bytes, config: ServerConfig = TLS_CONFIG, tls: bool = False) -> Reply:
    """The reply the server suggests for the last line of *data*."""
    events, _ = server_events(data, config, tls=tls)
    event = events[-1]
    assert isinstance(event, CommandRejected), events
    return event.reply


def test_second_starttls_is_503() -> None:
    reply = rejection(b"EHLO c.example\r\nSTARTTLS\r\n", tls=True)
    assert (reply.code, reply.enhanced) == (503, "5.5.1")
    assert "STARTTLS" not in ServerConnection(TLS_CONFIG, tls=True).ehlo_reply().text


def test_starttls_with_argument_is_501() -> None:
    assert rejection(b"EHLO c.example\r\nSTARTTLS now\r\n").code == 501


def test_starttls_not_available_is_502() -> None:
    assert rejection(b"EHLO c.example\r\nSTARTTLS\r\n", ServerConfig()).code == 502
    pair = Pair()
    pair.hello()
    with pytest.raises(LocalProtocolError, match="did not offer STARTTLS"):
        pair.client.send(StartTLS())


def test_starttls_needs_ehlo_first() -> None:
    server = ServerConnection(TLS_CONFIG)
    server.send(server.greeting())
    server.receive_data(b"STARTTLS\r\n")
    event = server.next_event()
    assert isinstance(event, CommandRejected) and event.reply.code == 503


def test_attack_starttls_injection_server_pipelined() -> None:
    """Attack class 3: commands pipelined after STARTTLS are never run."""
    server = ServerConnection(TLS_CONFIG)
    server.send(server.greeting())
    server.receive_data(b"EHLO c.example\r\n")
    drain(server)
    server.send(server.default_reply())
    server.receive_data(b"STARTTLS\r\nMAIL FROM:<evil@example.org>\r\n")
    with pytest.raises(RemoteProtocolError, match="pipelined after STARTTLS") as info:
        server.next_event()
    assert info.value.reply is not None and info.value.reply.code == 554
    assert server.state is State.ERROR
    assert server.send(info.value.reply).startswith(b"554 5.5.1")


def test_attack_starttls_injection_server_before_handshake() -> None:
    """Bytes arriving after the 220 and before the handshake are refused."""
    pair = tls_pair()
    pair.send(StartTLS())
    pair.server.receive_data(b"MAIL FROM:<evil@example.org>\r\n")
    with pytest.raises(RemoteProtocolError, match="cleartext data received after STARTTLS"):
        pair.server.tls_established()
    assert pair.server.state is State.ERROR


def test_attack_starttls_injection_server_next_event() -> None:
    pair = tls_pair()
    pair.send(StartTLS())
    pair.server.receive_data(b"NOOP\r\n")
    with pytest.raises(RemoteProtocolError, match="after STARTTLS"):
        pair.server.next_event()


def test_attack_starttls_injection_client_same_read() -> None:
    """A reply injected behind the 220 aborts the client."""
    pair = tls_pair()
    pair.client.send(StartTLS())
    pair.client.receive_data(b"220 go ahead\r\n250 injected\r\n")
    with pytest.raises(RemoteProtocolError, match="after the 220 to STARTTLS"):
        pair.client.next_event()
    assert pair.client.state is State.ERROR


def test_attack_starttls_injection_client_later_read() -> None:
    pair = tls_pair()
    pair.client.send(StartTLS())
    pair.client.receive_data(b"220 go ahead\r\n")
    assert isinstance(pair.client.next_event(), Reply)
    pair.client.receive_data(b"250 injected\r\n")
    with pytest.raises(RemoteProtocolError, match="after the 220 to STARTTLS"):
        pair.client.next_event()


def test_attack_starttls_injection_client_at_handshake() -> None:
    pair = tls_pair()
    pair.client.send(StartTLS())
    pair.client.receive_data(b"220 go ahead\r\n")
    pair.client.next_event()
    pair.client.receive_data(b"250 injected\r\n")
    with pytest.raises(RemoteProtocolError, match="cleartext data"):
        pair.client.tls_established()


def test_refused_starttls_leaves_client_in_cleartext() -> None:
    """Downgrade (attack class 8) is the caller's policy: the core reports
    the refusal and stays in READY without TLS."""
    pair = tls_pair()
    pair.client.send(StartTLS())
    pair.client.receive_data(b"454 4.7.0 TLS not available\r\n")
    reply = pair.client.next_event()
    assert isinstance(reply, Reply) and reply.code == 454
    assert pair.client.state is State.READY and not pair.client.tls


def test_tls_established_out_of_place() -> None:
    pair = tls_pair()
    with pytest.raises(LocalProtocolError, match="tls_established"):
        pair.server.tls_established()
    with pytest.raises(LocalProtocolError, match="tls_established"):
        pair.client.tls_established()


def test_starttls_ends_a_pipelined_batch() -> None:
    pair = tls_pair()
    pair.client.send(StartTLS())
    with pytest.raises(LocalProtocolError, match="STARTTLS must end a pipelined batch"):
        pair.client.send(Noop())


def test_client_refuses_starttls_twice() -> None:
    client = ClientConnection(tls=True)
    client.receive_data(b"220 hi\r\n250-s\r\n250 STARTTLS\r\n")
    client.next_event()
    client.send(Ehlo(domain="c.example"))
    client.next_event()
    with pytest.raises(LocalProtocolError, match="already TLS"):
        client.send(StartTLS())


def test_require_tls_refuses_mail_with_530() -> None:
    config = ServerConfig(starttls=True, require_tls=True)
    reply = rejection(b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\n", config)
    assert (reply.code, reply.enhanced) == (530, "5.7.0")
    _, out = server_events(b"EHLO c.example\r\nNOOP\r\nVRFY bob\r\n", config)
    assert out.endswith(b"250 2.0.0 OK\r\n530 5.7.0 Must issue a STARTTLS command first\r\n")


def test_require_tls_satisfied_by_implicit_tls() -> None:
    server = ServerConnection(ServerConfig(starttls=True, require_tls=True), tls=True)
    server.send(server.greeting())
    server.receive_data(b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\n")
    server.next_event()
    server.send(server.default_reply())
    assert isinstance(server.next_event(), Mail)


def test_require_tls_needs_starttls() -> None:
    with pytest.raises(ValueError, match="require_tls"):
        ServerConfig(require_tls=True)


def test_implicit_tls_offers_auth_not_starttls() -> None:
    server = ServerConnection(TLS_CONFIG, tls=True)
    lines = server.ehlo_reply().text
    assert "STARTTLS" not in lines and "AUTH PLAIN" in lines and "REQUIRETLS" in lines


def test_requiretls_only_under_tls() -> None:
    assert rejection(b"EHLO c.example\r\nMAIL FROM:<a@example.org> REQUIRETLS\r\n").code == 555
    events, _ = server_events(b"EHLO c.example\r\nMAIL FROM:<a@example.org> REQUIRETLS\r\n",
                              TLS_CONFIG, tls=True)
    assert events[-1] == Mail(reverse_path="a@example.org", parameters={"REQUIRETLS": None})
    pair = tls_pair()
    with pytest.raises(LocalProtocolError, match="REQUIRETLS extension"):
        pair.client.send(Mail(reverse_path="a@example.org", parameters={"REQUIRETLS": None}))


def test_eof_while_waiting_for_the_handshake() -> None:
    """A peer that hangs up after the 220 ends the session; it is not
    mistaken for injected data."""
    pair = tls_pair()
    pair.send(StartTLS())
    pair.server.receive_data(b"")
    assert isinstance(pair.server.next_event(), ConnectionClosed)
    pair.client.receive_data(b"")
    assert isinstance(pair.client.next_event(), ConnectionClosed)
    server_side, client_side = tls_pair(), tls_pair()
    server_side.send(StartTLS())
    server_side.server.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="closed before the TLS handshake"):
        server_side.server.tls_established()
    client_side.send(StartTLS())
    client_side.client.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="closed before the TLS handshake"):
        client_side.client.tls_established()
