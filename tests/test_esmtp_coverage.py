"""Behaviour of the ESMTP core that the feature tests leave out: event
validation, PROXY headers read a byte at a time, the application's own AUTH
replies, configuration checks and the small helpers of the extensions."""

from __future__ import annotations

import base64
import ipaddress
import struct

import pytest

from smtpproto import (
    NEED_DATA,
    PAUSED,
    Auth,
    AuthResponse,
    Bdat,
    ClientConnection,
    CommandRejected,
    Data,
    Ehlo,
    EndOfMessage,
    Lhlo,
    LocalProtocolError,
    Mail,
    MessageData,
    ProxyHeader,
    Rcpt,
    Reply,
    ServerConfig,
    ServerConnection,
    State,
)
from smtpproto import sasl
from smtpproto.extensions import AuthExtension, EightBitMime
from smtpproto.extensions.requiretls import requires_tls

from helpers import Pair, drain, replies_of, server_events

PLAIN_OK = b"AUTH PLAIN " + base64.b64encode(b"\0bob\0secret") + b"\r\n"


def ehlo_server(config: ServerConfig, tls: bool = False) -> ServerConnection:
    """A server that greeted and accepted EHLO."""
    server = ServerConnection(config, tls=tls)
    server.send(server.greeting())
    server.receive_data(b"EHLO c.example\r\n")
    assert isinstance(server.next_event(), Ehlo)
    server.send(server.default_reply())
    return server


def auth_server(**settings: object) -> ServerConnection:
    config = ServerConfig(auth_mechanisms=("PLAIN", "LOGIN"), auth_plaintext=True, **settings)  # type: ignore[arg-type]
    return ehlo_server(config)


# -- events -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["NOT A MECH", "PLAIN!", "X" * 21, ""])
def test_auth_refuses_invalid_mechanism_names(name: str) -> None:
    """RFC 4422 §3.1: sasl-mech = 1*20mech-char."""
    with pytest.raises(LocalProtocolError):
        Auth(mechanism=name)


def test_auth_mechanism_is_upper_cased_and_data_must_be_bytes() -> None:
    assert Auth(mechanism="scram-sha-256").mechanism == "SCRAM-SHA-256"
    with pytest.raises(LocalProtocolError, match="initial response must be bytes"):
        Auth(mechanism="PLAIN", initial_response="\0bob\0secret")  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="AuthResponse data must be bytes"):
        AuthResponse(data="bob")  # type: ignore[arg-type]


@pytest.mark.parametrize("domain", ["not a domain", "-bad.example", "a..b", "[300.1.1.1]"])
def test_lhlo_refuses_bad_domains(domain: str) -> None:
    with pytest.raises(LocalProtocolError):
        Lhlo(domain=domain)


def test_lhlo_takes_domains_and_address_literals() -> None:
    assert Lhlo(domain="[192.0.2.1]").domain == "[192.0.2.1]"
    assert Lhlo(domain="lmtp.example").domain == "lmtp.example"


# -- message content given as memoryview ------------------------------------


def test_memoryview_content_is_checked_for_8bit_and_stuffed() -> None:
    pair = Pair()
    pair.hello()
    pair.send(Mail(reverse_path="a@example.org"), Rcpt(forward_path="b@example.org"), Data())
    with pytest.raises(LocalProtocolError, match="BODY=8BITMIME"):
        pair.client.send(MessageData(data=memoryview(b"caf\xc3\xa9\r\n")))
    assert pair.client.send(MessageData(data=memoryview(b".dot\r\n"))) == b"..dot\r\n"


def test_memoryview_chunk_is_checked_for_8bit() -> None:
    pair = Pair()
    pair.hello()
    pair.send(Mail(reverse_path="a@example.org"), Rcpt(forward_path="b@example.org"))
    pair.client.send(Bdat(size=2, last=True))
    with pytest.raises(LocalProtocolError, match="BODY=8BITMIME"):
        pair.client.send(MessageData(data=memoryview(b"\xff\xfe")))
    assert pair.client.send(MessageData(data=memoryview(b"ok"))) == b"ok"


# -- PROXY headers, one byte at a time ---------------------------------------

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
V2_TCP4 = (
    SIG
    + b"\x21\x11"
    + struct.pack("!H", 12)
    + ipaddress.ip_address("192.0.2.1").packed
    + ipaddress.ip_address("198.51.100.2").packed
    + struct.pack("!HH", 4000, 25)
)


@pytest.mark.parametrize(
    "header",
    [V2_TCP4, b"PROXY TCP4 192.0.2.1 198.51.100.2 4000 25\r\n"],
    ids=["v2", "v1"],
)
def test_proxy_header_fed_byte_at_a_time(header: bytes) -> None:
    """The header comes out exactly when its last octet arrives, never
    before, and nothing after it is taken."""
    server = ServerConnection(ServerConfig(proxy_protocol=True))
    for octet in header[:-1]:
        server.receive_data(bytes([octet]))
        assert server.next_event() is NEED_DATA
    server.receive_data(header[-1:] + b"EHLO")
    event = server.next_event()
    assert event == ProxyHeader(
        version=2 if header.startswith(SIG) else 1,
        command="PROXY",
        family="TCP4",
        source="192.0.2.1",
        source_port=4000,
        destination="198.51.100.2",
        destination_port=25,
    )
    assert server.trailing_data == (b"EHLO", False)
    assert server.next_event() is PAUSED  # the greeting is due now


# -- the application's own AUTH replies --------------------------------------


def test_bad_answer_to_a_verification_request_is_local_and_recoverable() -> None:
    server = auth_server()
    server.receive_data(PLAIN_OK)
    assert isinstance(server.next_event(), Auth)
    assert isinstance(server.auth_request, sasl.CheckPassword)
    with pytest.raises(LocalProtocolError, match="bad answer to CheckPassword"):
        server.auth_reply("yes")  # CheckPassword takes a bool
    # Nothing was consumed: the right answer still works.
    reply = server.auth_reply(True)
    assert (reply.code, reply.enhanced) == (235, "2.7.0")
    server.send(reply)
    assert server.authenticated and server.auth_identity == "bob"


def test_application_may_grant_auth_itself() -> None:
    """A 235 the application sends on its own authority (it verified the
    client some other way) authenticates, but names no SASL identity."""
    server = auth_server()
    server.receive_data(PLAIN_OK)
    server.next_event()
    server.send(Reply(code=235, text=("ok",), enhanced="2.7.0"))
    assert server.authenticated and server.auth_identity is None
    assert server.state is State.READY


def test_own_334_after_the_mechanism_ended_fails_the_next_response() -> None:
    """The application asked the mechanism (which succeeded) but sent a 334
    of its own: the client's next line cannot continue anything."""
    server = auth_server()
    server.receive_data(PLAIN_OK)
    server.next_event()
    assert server.auth_reply(True).code == 235
    assert server.send(Reply(code=334, text=("",))) == b"334 \r\n"
    assert server.state is State.AUTH
    server.receive_data(base64.b64encode(b"more") + b"\r\n")
    event = server.next_event()
    assert event == AuthResponse(data=b"more")
    reply = server.default_reply()
    assert (reply.code, reply.enhanced, reply.text) == (501, "5.5.2", ("Unexpected SASL response",))
    server.send(reply)
    assert server.state is State.READY and not server.authenticated


def test_own_334_while_a_verification_request_is_pending_is_refused() -> None:
    """The mechanism waits for the application's verdict; a 334 cannot be
    sent then (it used to crash the next ``next_event()`` with SASLError)."""
    server = auth_server()
    server.receive_data(PLAIN_OK)
    server.next_event()
    assert isinstance(server.auth_request, sasl.CheckPassword)
    with pytest.raises(LocalProtocolError, match="verification request"):
        server.send(Reply(code=334, text=("",)))
    assert server.state is State.READY  # nothing changed
    server.send(server.auth_reply(False))
    assert server.auth_request is None and not server.authenticated


def test_only_334_continues_an_auth_exchange() -> None:
    server = auth_server()
    server.receive_data(b"AUTH LOGIN\r\n")
    server.next_event()
    with pytest.raises(LocalProtocolError, match="only 334 continues"):
        server.send(Reply(code=354, text=("go ahead",)))
    assert server.send(server.auth_reply()) == b"334 VXNlcm5hbWU6\r\n"
    assert server.state is State.AUTH


def test_auth_after_failures_ran_out_gets_421() -> None:
    """The application overrode the suggested 421 at the last allowed
    failure; the next AUTH is refused with 421 all the same."""
    server = auth_server(max_auth_failures=2)
    bad = b"AUTH PLAIN " + base64.b64encode(b"\0bob\0wrong") + b"\r\n"
    server.receive_data(bad)
    server.next_event()
    assert server.send(server.auth_reply(False)).startswith(b"535 5.7.8")
    server.receive_data(bad)
    server.next_event()
    assert server.auth_reply(False).code == 421  # suggested ...
    server.send(Reply(code=535, text=("no",), enhanced="5.7.8"))  # ... but not sent
    assert server.state is State.READY
    server.receive_data(PLAIN_OK)
    event = server.next_event()
    assert isinstance(event, CommandRejected) and event.reply.code == 421
    server.send(event.reply)
    assert server.state is State.CLOSED


# -- configuration ------------------------------------------------------------


def test_unknown_sasl_mechanism_in_config() -> None:
    with pytest.raises(ValueError, match="unknown mechanism 'DIGEST-MD5'"):
        ServerConfig(auth_mechanisms=("PLAIN", "digest-md5"))
    assert ServerConfig(auth_mechanisms=("plain", "Login")).auth_mechanisms == ("PLAIN", "LOGIN")


def test_limits_can_be_left_out() -> None:
    pair = Pair(ServerConfig(limits=False))
    pair.hello()
    assert "LIMITS" not in pair.client.capabilities and pair.client.capabilities.limits == {}
    pair = Pair(ServerConfig(max_recipients=150, max_transactions=3))
    pair.hello()
    assert pair.client.capabilities.limits == {"RCPTMAX": 150, "MAILMAX": 3}


# -- capabilities and extension helpers --------------------------------------


@pytest.mark.parametrize("binarymime", [True, False])
def test_client_sees_binarymime_offer(binarymime: bool) -> None:
    pair = Pair(ServerConfig(binarymime=binarymime))
    pair.hello()
    caps = pair.client.capabilities
    assert caps.chunking and caps.binarymime is binarymime


def test_extension_reprs() -> None:
    assert repr(AuthExtension(("plain", "LOGIN"))) == "AuthExtension(('PLAIN', 'LOGIN'))"
    assert repr(EightBitMime(binarymime=True)) == "EightBitMime(binarymime=True)"
    assert repr(EightBitMime()) == "EightBitMime(binarymime=False)"


def test_requires_tls_reads_the_mail_parameter() -> None:
    config = ServerConfig(starttls=True)
    events, out = server_events(
        b"EHLO c.example\r\nMAIL FROM:<a@example.org> REQUIRETLS\r\nRSET\r\n"
        b"MAIL FROM:<a@example.org>\r\n",
        config,
        tls=True,
    )
    mails = [e for e in events if isinstance(e, Mail)]
    assert [requires_tls(m) for m in mails] == [True, False]
    assert replies_of(out) == [250, 250, 250, 250]


def test_lmtp_server_lhlo_reply_lists_extensions() -> None:
    server = ServerConnection(ServerConfig(lmtp=True))
    server.send(server.greeting())
    server.receive_data(b"LHLO c.example\r\n")
    assert drain(server) == [Lhlo(domain="c.example")]
    assert server.send(server.default_reply()).startswith(b"250-localhost\r\n250-PIPELINING")
    assert server.client_name == "c.example"


def test_end_of_message_after_memoryview_chunk_round_trip() -> None:
    pair = Pair()
    pair.hello()
    replies = pair.send(
        Mail(reverse_path="a@example.org"),
        Rcpt(forward_path="b@example.org"),
        Bdat(size=3, last=True),
        MessageData(data=memoryview(b"abc")),
        EndOfMessage(),
    )
    assert [r.code for r in replies if isinstance(r, Reply)] == [250, 250, 250]
    assert MessageData(data=b"abc") in pair.server_events


def test_client_refuses_bdat_outside_a_transaction() -> None:
    client = ClientConnection()
    client.receive_data(b"220 hi\r\n250-s\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
    client.next_event()
    client.send(Ehlo(domain="c.example"))
    client.next_event()
    with pytest.raises(LocalProtocolError, match="BDAT is not allowed in state READY"):
        client.send(Bdat(size=1))
