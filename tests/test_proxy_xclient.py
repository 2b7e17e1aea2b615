"""PROXY protocol headers and XCLIENT: the real client behind a proxy."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from smtpproto import (
    NEED_DATA,
    PAUSED,
    ClientConnection,
    CommandRejected,
    ConnectionClosed,
    Ehlo,
    LocalProtocolError,
    Mail,
    ProxyHeader,
    RemoteProtocolError,
    Reply,
    ServerConfig,
    ServerConnection,
    State,
    Xclient,
)

from helpers import Pair, feed, replies_of, server_events

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(command: int, family: int, block: bytes) -> bytes:
    return SIG + bytes([0x20 | command, family]) + struct.pack("!H", len(block)) + block


def inet4(src: str, dst: str, sport: int, dport: int) -> bytes:
    return ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed + struct.pack("!HH", sport, dport)


inet6 = inet4  # the same layout; ipaddress packs 16 octets for IPv6


PROXY_CASES = [
    (b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 25\r\n",
     ProxyHeader(version=1, command="PROXY", family="TCP4", source="192.0.2.1", source_port=56324,
                 destination="198.51.100.2", destination_port=25)),
    (b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n",
     ProxyHeader(version=1, command="PROXY", family="TCP6", source="2001:db8::1", source_port=1,
                 destination="2001:db8::2", destination_port=2)),
    (b"PROXY UNKNOWN whatever is here\r\n",
     ProxyHeader(version=1, command="PROXY", family="UNKNOWN")),
    (v2(1, 0x11, inet4("192.0.2.1", "198.51.100.2", 4000, 25)),
     ProxyHeader(version=2, command="PROXY", family="TCP4", source="192.0.2.1", source_port=4000,
                 destination="198.51.100.2", destination_port=25)),
    (v2(1, 0x21, inet6("2001:db8::1", "::1", 5, 587) + b"\x03\x00\x04abcd"),
     ProxyHeader(version=2, command="PROXY", family="TCP6", source="2001:db8::1", source_port=5,
                 destination="::1", destination_port=587)),
    (v2(1, 0x31, b"/tmp/a".ljust(108, b"\x00") + b"/tmp/b".ljust(108, b"\x00")),
     ProxyHeader(version=2, command="PROXY", family="UNIX", source="/tmp/a", destination="/tmp/b")),
    (v2(0, 0x00, b""), ProxyHeader(version=2, command="LOCAL", family="UNKNOWN")),
    (v2(1, 0x00, b""), ProxyHeader(version=2, command="PROXY", family="UNKNOWN")),
]


@pytest.mark.parametrize("byte_at_a_time", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("header,expected", PROXY_CASES)
def test_proxy_header_read_before_greeting(header: bytes, expected: ProxyHeader, byte_at_a_time: bool) -> None:
    server = ServerConnection(ServerConfig(proxy_protocol=True))
    with pytest.raises(LocalProtocolError, match="PROXY protocol header"):
        server.send(server.greeting())
    feed(server, header + b"EHLO c.example\r\n", byte_at_a_time)
    assert server.next_event() == expected
    assert server.proxy == expected
    assert server.next_event() is PAUSED  # now the greeting
    server.send(server.greeting())
    assert isinstance(server.next_event(), Ehlo)


BAD_HEADERS = [
    b"EHLO c.example\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",
    b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
    b"PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 25\r\n",
    b"PROXY TCP4 192.0.2.1 198.51.100.2 025 25\r\n",
    b"PROXY TCP4 300.0.2.1 198.51.100.2 1 25\r\n",
    b"PROXY TCP6 fe80::1%eth0 ::1 1 25\r\n",
    b"PROXY SCTP 1 2 3 4\r\n",
    b"PROXY\r\n",
    b"PROXY " + b"9" * 120,
    SIG + b"\x30\x11\x00\x0c" + bytes(12),  # version 3
    SIG + b"\x22\x11\x00\x0c" + bytes(12),  # command 2
    SIG + b"\x21\x41\x00\x00",  # family 4
    SIG + b"\x21\x13\x00\x00",  # protocol 3
    SIG + b"\x21\x11\x00\x04" + bytes(4),  # short TCP4 block
    SIG + b"\x21\x21\x00\x04" + bytes(4),  # short TCP6 block
    SIG + b"\x21\x31\x00\x04" + bytes(4),  # short UNIX block
    SIG + b"\x21\x11\xff\xff",  # longer than allowed
    b"\r\n\r\nnot the signature",
]


@pytest.mark.parametrize("header", BAD_HEADERS)
def test_bad_proxy_header_closes(header: bytes) -> None:
    server = ServerConnection(ServerConfig(proxy_protocol=True))
    server.receive_data(header)
    with pytest.raises(RemoteProtocolError):
        server.next_event()
    assert server.state is State.ERROR


def test_proxy_header_incomplete_then_eof() -> None:
    server = ServerConnection(ServerConfig(proxy_protocol=True))
    server.receive_data(b"PROXY TCP4 192.0.2.1")
    assert server.next_event() is NEED_DATA
    server.receive_data(SIG[:0])
    server.receive_data(b"")
    assert isinstance(server.next_event(), ConnectionClosed)


def test_421_allowed_before_proxy_header() -> None:
    server = ServerConnection(ServerConfig(proxy_protocol=True))
    assert server.send(Reply(code=421, text=("shutting down",), enhanced="4.3.2")).startswith(b"421")
    assert server.state is State.CLOSED


# -- XCLIENT -------------------------------------------------------------


def test_xclient_from_trusted_peer_restarts_session() -> None:
    pair = Pair()
    pair.server = ServerConnection(trusted=True)
    pair.hello()
    assert "XCLIENT" in pair.client.capabilities
    command = Xclient(attributes={"ADDR": "192.0.2.7", "NAME": "mx.example.org", "HELO": "mx+2Eexample"})
    replies = pair.send(command)
    assert replies[0].code == 220  # type: ignore[union-attr]
    assert pair.server_events[-1] == command
    assert command.decoded() == {"ADDR": "192.0.2.7", "NAME": "mx.example.org", "HELO": "mx.example"}
    assert pair.server.state is State.GREETED and pair.client.state is State.GREETED
    assert pair.server.client_name is None and pair.client.capabilities.keywords == {}
    pair.send(Ehlo(domain="c.example"))
    assert pair.server.state is State.READY


def test_xclient_from_untrusted_peer_is_550() -> None:
    events, out = server_events(b"EHLO c\r\nXCLIENT ADDR=192.0.2.7\r\n")
    assert isinstance(events[-1], CommandRejected)
    assert out.endswith(b"550 5.7.0 Insufficient authorization\r\n")
    assert b"XCLIENT" not in out


def test_xclient_syntax_and_sequence() -> None:
    server = ServerConnection(trusted=True)
    server.send(server.greeting())
    server.receive_data(
        b"EHLO c\r\nXCLIENT FOO=1\r\nXCLIENT ADDR\r\nXCLIENT ADDR=1 ADDR=2\r\nXCLIENT ADDR=a+zz\r\n"
        b"MAIL FROM:<a@example.org>\r\nXCLIENT ADDR=192.0.2.1\r\n"
    )
    codes = []
    while True:
        event = server.next_event()
        if event is NEED_DATA:
            break
        codes.append(server.send(server.default_reply())[:3])
    assert codes == [b"250", b"501", b"501", b"501", b"501", b"250", b"503"]


def test_xclient_event_validation() -> None:
    with pytest.raises(LocalProtocolError, match="unknown XCLIENT attribute"):
        Xclient(attributes={"EVIL": "1"})
    with pytest.raises(LocalProtocolError, match="at least one attribute"):
        Xclient()
    with pytest.raises(LocalProtocolError):
        Xclient(attributes={"ADDR": "a+zz"})
    with pytest.raises(LocalProtocolError, match="forbidden"):
        Xclient(attributes={"ADDR": "a\r\nMAIL"})
    assert Xclient(attributes={"addr": "1"}).attributes == {"ADDR": "1"}


def test_client_needs_xclient_offered() -> None:
    pair = Pair()
    pair.hello()
    with pytest.raises(LocalProtocolError, match="did not offer XCLIENT"):
        pair.client.send(Xclient(attributes={"ADDR": "192.0.2.1"}))


def test_xclient_resets_authentication() -> None:
    client = ClientConnection(tls=True)
    client.receive_data(b"220 hi\r\n250-s\r\n250-XCLIENT NAME ADDR\r\n250 AUTH PLAIN\r\n")
    client.next_event()
    client.send(Ehlo(domain="c"))
    client.next_event()
    client.authenticated = True
    client.send(Xclient(attributes={"ADDR": "192.0.2.1"}))
    client.receive_data(b"220 again\r\n")
    client.next_event()
    assert not client.authenticated and client.state is State.GREETED
    with pytest.raises(LocalProtocolError, match="MAIL is not allowed in state GREETED"):
        client.send(Mail(reverse_path="a@example.org"))
    assert replies_of(b"220 again\r\n") == [220]
