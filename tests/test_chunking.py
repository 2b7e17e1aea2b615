"""CHUNKING and BINARYMIME (RFC 3030) in both cores."""

from __future__ import annotations

import pytest

from smtpproto import (
    Bdat,
    ClientConnection,
    CommandRejected,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfChunk,
    EndOfMessage,
    Event,
    LocalProtocolError,
    Mail,
    MessageData,
    Quit,
    Rcpt,
    RemoteProtocolError,
    Reply,
    Rset,
    ServerConfig,
    ServerConnection,
    State,
)

from helpers import Pair, merge_data, replies_of, server_events

BYTE_MODES = pytest.mark.parametrize("byte_at_a_time", [False, True], ids=["whole", "bytewise"])
START = b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n"


@BYTE_MODES
def test_chunks_round_trip_pipelined(byte_at_a_time: bool) -> None:
    pair = Pair(byte_at_a_time=byte_at_a_time)
    pair.hello()
    content = b"Subject: x\r\n\r\n.\r\n..dots stay\r\n\x00binary\xff\n"
    events: list[Event] = [
        Mail(reverse_path="a@example.org", parameters={"BODY": "BINARYMIME"}),
        Rcpt(forward_path="b@example.org"),
        Bdat(size=10),
        MessageData(data=content[:4]),
        MessageData(data=content[4:10]),
        EndOfChunk(),
        Bdat(size=len(content) - 10, last=True),
        MessageData(data=content[10:]),
        EndOfMessage(),
    ]
    replies = pair.send(*events)
    assert [r.code for r in replies if isinstance(r, Reply)] == [250, 250, 250, 250]
    received = merge_data(pair.server_events[1:])
    assert received == merge_data(events)
    assert pair.client.state is State.READY and pair.server.state is State.READY
    assert isinstance(pair.client.last_command, Bdat) and pair.client.last_command.last


def test_bdat_zero_last_is_legal() -> None:
    pair = Pair()
    pair.hello()
    replies = pair.send(
        Mail(reverse_path="a@example.org"), Rcpt(forward_path="b@example.org"),
        Bdat(size=3), MessageData(data=b"abc"), EndOfChunk(), Bdat(size=0, last=True), EndOfMessage(),
    )
    assert [r.code for r in replies if isinstance(r, Reply)] == [250] * 4
    assert pair.server_events[-2:] == [Bdat(size=0, last=True), EndOfMessage()]


def test_data_after_bdat_is_503() -> None:
    events, out = server_events(START + b"BDAT 2\r\nabDATA\r\n")
    assert isinstance(events[-1], CommandRejected)
    assert replies_of(out)[-1] == 503
    pair = Pair()
    pair.hello()
    pair.send(Mail(reverse_path="a@example.org"), Rcpt(forward_path="b@example.org"),
              Bdat(size=1), MessageData(data=b"x"), EndOfChunk())
    with pytest.raises(LocalProtocolError, match="DATA is not allowed in state BDAT"):
        pair.client.send(Data())


def test_bdat_octets_are_raw() -> None:
    """No dot handling inside a chunk: CRLF.CRLF is just data."""
    events, _ = server_events(START + b"BDAT 11 LAST\r\nhi\r\n.\r\n..\r\nQUIT\r\n")
    data = b"".join(e.data for e in events if isinstance(e, MessageData))
    assert data == b"hi\r\n.\r\n..\r\n"
    assert [type(e) for e in events[-3:]] == [EndOfMessage, Quit, ConnectionClosed]


def test_attack_bdat_unparseable_size_closes() -> None:
    for line in (b"BDAT -5\r\n", b"BDAT abc\r\n", b"BDAT\r\n", b"BDAT 5 LAST extra\r\n",
                 b"BDAT 99999999999999999999999\r\n"):
        server = ServerConnection()
        server.send(server.greeting())
        server.receive_data(START + line)
        for _ in range(3):
            server.next_event()
            server.send(server.default_reply())
        with pytest.raises(RemoteProtocolError) as info:
            server.next_event()
        assert info.value.reply is not None and info.value.reply.code == 501, line
        assert server.send(info.value.reply).startswith(b"501 5.5.4")
        assert server.state is State.CLOSED


def test_attack_bdat_over_size_is_552_and_discarded() -> None:
    config = ServerConfig(max_message_size=65536)
    chunk = b"X" * 70000
    events, out = server_events(START + b"BDAT 70000 LAST\r\n" + chunk + b"NOOP\r\n", config)
    rejected = [e for e in events if isinstance(e, CommandRejected)]
    assert len(rejected) == 1 and rejected[0].reply.code == 552
    assert not any(isinstance(e, MessageData) for e in events)
    assert replies_of(out)[-1] == 250  # the NOOP after the discarded octets


def test_attack_bdat_over_discard_cap_closes() -> None:
    config = ServerConfig(max_message_size=65536, max_bdat_discard=100000)
    server = ServerConnection(config)
    server.send(server.greeting())
    server.receive_data(START + b"BDAT 200000\r\n")
    for _ in range(3):
        server.next_event()
        server.send(server.default_reply())
    with pytest.raises(RemoteProtocolError, match="discard cap") as info:
        server.next_event()
    assert info.value.reply is not None and info.value.reply.code == 552


@BYTE_MODES
def test_refused_chunk_fails_the_transaction(byte_at_a_time: bool) -> None:
    """RFC 3030 §2: after a refused chunk no more BDAT is taken until RSET;
    the octets of every chunk are consumed all the same."""
    config = ServerConfig(max_message_size=65536)
    data = (
        START + b"BDAT 70000\r\n" + b"x" * 70000 + b"BDAT 3\r\nabcBDAT 2 LAST\r\nzzRSET\r\nNOOP\r\n"
    )
    events, out = server_events(data, config, byte_at_a_time=byte_at_a_time)
    codes = replies_of(out)
    assert codes[-5:] == [552, 503, 503, 250, 250]
    assert not any(isinstance(e, MessageData) for e in events)


def test_bdat_without_recipients_is_554_and_consumed() -> None:
    events, out = server_events(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nBDAT 4 LAST\r\nNOOPNOOP\r\n")
    assert replies_of(out)[-2:] == [554, 250]


def test_bdat_before_mail_is_503_and_consumed() -> None:
    _, out = server_events(b"EHLO c\r\nBDAT 6\r\nQUIT\r\nNOOP\r\n")
    assert replies_of(out)[-2:] == [503, 250]


def test_bdat_when_chunking_is_off() -> None:
    _, out = server_events(START + b"BDAT 4\r\nNOOPNOOP\r\n", ServerConfig(chunking=False))
    assert replies_of(out)[-2:] == [502, 250]


def test_binarymime_needs_bdat() -> None:
    data = b"EHLO c\r\nMAIL FROM:<a@example.org> BODY=BINARYMIME\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
    _, out = server_events(data)
    assert replies_of(out)[-1] == 503
    _, out = server_events(data, ServerConfig(binarymime=False))
    assert replies_of(out)[-3] == 501  # BODY=BINARYMIME not offered
    pair = Pair()
    pair.hello()
    pair.send(Mail(reverse_path="a@example.org", parameters={"BODY": "BINARYMIME"}),
              Rcpt(forward_path="b@example.org"))
    with pytest.raises(LocalProtocolError, match="must be sent with BDAT"):
        pair.client.send(Data())


def test_eof_inside_a_chunk_delivers_nothing() -> None:
    server = ServerConnection()
    server.send(server.greeting())
    server.receive_data(START + b"BDAT 10 LAST\r\nhalf")
    events = []
    while True:
        event = server.next_event()
        if not isinstance(event, Event):
            if server.awaiting_reply is not None:
                server.send(server.default_reply())
                continue
            break
        events.append(event)
    server.receive_data(b"")
    assert isinstance(server.next_event(), ConnectionClosed)
    assert not any(isinstance(e, EndOfMessage) for e in events)


def test_eof_while_discarding() -> None:
    server = ServerConnection(ServerConfig(max_message_size=65536))
    server.send(server.greeting())
    server.receive_data(START + b"BDAT 70000\r\nxx")
    for _ in range(3):
        server.next_event()
        server.send(server.default_reply())
    assert server.next_event() is not None
    server.receive_data(b"")
    assert isinstance(server.next_event(), ConnectionClosed)


def client_with_chunking() -> ClientConnection:
    client = ClientConnection()
    client.receive_data(b"220 hi\r\n250-s\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 BINARYMIME\r\n")
    client.next_event()
    client.send(Ehlo(domain="c.example"))
    client.next_event()
    client.send(Mail(reverse_path="a@example.org"))
    client.send(Rcpt(forward_path="b@example.org"))
    return client


def test_client_counts_chunk_octets() -> None:
    client = client_with_chunking()
    assert client.send(Bdat(size=4)) == b"BDAT 4\r\n"
    with pytest.raises(LocalProtocolError, match="only 4 left"):
        client.send(MessageData(data=b"12345"))
    assert client.send(MessageData(data=b"12")) == b"12"
    with pytest.raises(LocalProtocolError, match="2 octets of the BDAT chunk missing"):
        client.send(EndOfChunk())
    with pytest.raises(LocalProtocolError, match="still needs 2 octets"):
        client.send(Rset())
    client.send(MessageData(data=b"34"))
    with pytest.raises(LocalProtocolError, match="ends with EndOfChunk, not EndOfMessage"):
        client.send(EndOfMessage())
    assert client.send(EndOfChunk()) == b""
    assert client.send(Bdat(size=0, last=True)) == b"BDAT 0 LAST\r\n"
    with pytest.raises(LocalProtocolError, match="ends with EndOfMessage, not EndOfChunk"):
        client.send(EndOfChunk())
    assert client.send(EndOfMessage()) == b""
    with pytest.raises(LocalProtocolError, match="EndOfChunk without a BDAT chunk"):
        client.send(EndOfChunk())


def test_client_8bit_in_chunks_needs_body() -> None:
    client = client_with_chunking()
    client.send(Bdat(size=1, last=True))
    with pytest.raises(LocalProtocolError, match="BODY=8BITMIME"):
        client.send(MessageData(data=b"\xff"))


def test_client_needs_chunking_offered() -> None:
    client = ClientConnection()
    client.receive_data(b"220 hi\r\n250-s\r\n250 PIPELINING\r\n")
    client.next_event()
    client.send(Ehlo(domain="c.example"))
    client.next_event()
    client.send(Mail(reverse_path="a@example.org"))
    client.send(Rcpt(forward_path="b@example.org"))
    with pytest.raises(LocalProtocolError, match="did not offer CHUNKING"):
        client.send(Bdat(size=1))
    client.send(Rset())
    client.receive_data(b"250 ok\r\n250 ok\r\n250 ok\r\n")
    for _ in range(3):
        client.next_event()
    with pytest.raises(LocalProtocolError, match="needs the 8BITMIME extension"):
        client.send(Mail(reverse_path="a@example.org", parameters={"BODY": "BINARYMIME"}))


def test_bdat_event_validation() -> None:
    for size in (-1, 1.5, True, "3"):
        with pytest.raises(LocalProtocolError, match="BDAT size"):
            Bdat(size=size)  # type: ignore[arg-type]
