"""ClientConnection.stuff_content: DATA content stuffed ahead of its 354,
and the batch (send_many) that uses it while the replies are on their way."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowpair import Link, Recorder
from test_send_many import Behaviour, batch
from smtpproto import (
    NEED_DATA,
    Bdat,
    ClientConfig,
    ClientConnection,
    Data,
    Ehlo,
    EndOfMessage,
    LocalProtocolError,
    Mail,
    MessageData,
    Rcpt,
    Reply,
    ServerConfig,
    ServerConnection,
    State,
    StuffedContent,
)
from smtpproto.flows import ClientOptions, TLSMode, prepare

EHLO_REPLY = b"250-server.example\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 8BITMIME\r\n"


def _reply(client: ClientConnection, data: bytes) -> Reply:
    client.receive_data(data)
    event = client.next_event()
    assert isinstance(event, Reply), event
    return event


def _ready(config: ClientConfig | None = None, ehlo_reply: bytes = EHLO_REPLY) -> ClientConnection:
    client = ClientConnection(config)
    _reply(client, b"220 server.example ESMTP\r\n")
    client.send(Ehlo(domain="client.example"))
    _reply(client, ehlo_reply)
    return client


def _in_data(config: ClientConfig | None = None, mail: Mail | None = None) -> ClientConnection:
    client = _ready(config)
    client.send(mail or Mail(reverse_path="a@example.org"))
    client.send(Rcpt(forward_path="b@example.org"))
    client.send(Data())
    for answer in (b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"):
        _reply(client, answer)
    assert client.state is State.DATA
    return client


content_chunks = st.lists(
    st.binary(max_size=40).map(lambda b: b.replace(b"\x00", b".")) | st.sampled_from([b".", b"\r", b"\n", b"\r\n."]),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(content_chunks, st.sampled_from([None, 30, 1000]))
def test_stuffed_ahead_is_what_the_chunks_would_have_sent(chunks: list[bytes], max_line: int | None) -> None:
    # Same bytes, or the same refusal, whether the content is stuffed ahead
    # (as chunks or joined) or sent as MessageData chunks after the 354.
    config = ClientConfig(max_line_length=max_line)
    streamed = _in_data(config, Mail(reverse_path="a@example.org", parameters={"BODY": "8BITMIME"}))
    try:
        expected: bytes | None = b"".join(streamed.send(MessageData(data=c)) for c in chunks)
        expected += streamed.send(EndOfMessage())  # type: ignore[operator]
    except LocalProtocolError:
        expected = None
    ahead = _ready(config)
    for content in (chunks, b"".join(chunks)):
        if expected is None:
            with pytest.raises(LocalProtocolError, match="exceeds the limit"):
                ahead.stuff_content(content)
        else:
            stuffed = ahead.stuff_content(content)
            assert stuffed.wire == expected
            assert stuffed.eight_bit is not b"".join(chunks).isascii()
    # Stuffing ahead touched nothing: the connection is still where it was.
    assert ahead.state is State.READY and not ahead.pending


@settings(max_examples=100, deadline=None)
@given(content_chunks)
def test_a_server_gets_the_content_back(chunks: list[bytes]) -> None:
    client = _in_data(mail=Mail(reverse_path="a@example.org", parameters={"BODY": "8BITMIME"}))
    server = ServerConnection(ServerConfig())
    wire = b"EHLO c.example\r\nMAIL FROM:<a@example.org> BODY=8BITMIME\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
    server.send(server.greeting())
    server.receive_data(wire + client.send(client.stuff_content(chunks)))
    received = b""
    while True:
        event = server.next_event()
        if event is NEED_DATA:
            break
        if isinstance(event, MessageData):
            received += event.data
        elif isinstance(event, EndOfMessage):
            break
        elif server.awaiting_reply is not None:
            server.send(server.default_reply())
    assert isinstance(event, EndOfMessage)
    raw = b"".join(chunks)
    normalised = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if normalised and not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    assert received == normalised


def test_it_stands_for_the_chunks_and_the_end_of_message() -> None:
    client = _in_data()
    stuffed = client.stuff_content(b".first\nsecond")
    assert repr(stuffed) == "StuffedContent(<20 octets>)"
    assert client.send(stuffed) == b"..first\r\nsecond\r\n.\r\n"
    assert client.pending == (EndOfMessage(),)
    _reply(client, b"250 queued\r\n")
    assert client.state is State.READY and client.last_command == EndOfMessage()
    # The next message may be stuffed ahead and sent the same way.
    client.send(Mail(reverse_path="a@example.org"))
    client.send(Rcpt(forward_path="b@example.org"))
    client.send(Data())
    for answer in (b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"):
        _reply(client, answer)
    assert client.send(client.stuff_content([b"x", b"\r", b"\ny"])) == b"x\r\ny\r\n.\r\n"


def test_it_waits_for_the_354_like_content() -> None:
    client = _ready()
    stuffed = client.stuff_content(b"hello\r\n")
    with pytest.raises(LocalProtocolError, match="StuffedContent may only be sent"):
        client.send(stuffed)
    client.send(Mail(reverse_path="a@example.org"))
    client.send(Rcpt(forward_path="b@example.org"))
    client.send(Data())
    with pytest.raises(LocalProtocolError, match="StuffedContent may only be sent"):
        client.send(stuffed)  # DATA sent, its 354 not come


def test_it_is_a_whole_message_not_the_rest_of_one() -> None:
    client = _in_data()
    client.send(MessageData(data=b"\r"))  # a CR held back counts as begun
    with pytest.raises(LocalProtocolError, match="MessageData of this message was sent already"):
        client.send(client.stuff_content(b"x"))
    client.send(EndOfMessage())
    assert client.pending == (EndOfMessage(),)


def test_it_is_checked_against_the_line_limit_it_is_sent_under() -> None:
    loose = ClientConnection(ClientConfig(max_line_length=None))
    stuffed = loose.stuff_content(b"x" * 2000)
    client = _in_data()
    with pytest.raises(LocalProtocolError, match="line limit of None, not this connection's 1000"):
        client.send(stuffed)
    with pytest.raises(LocalProtocolError, match="message line of 2002 octets exceeds the limit of 1000"):
        client.stuff_content(b"x" * 2000)


def test_eight_bit_content_needs_8bitmime() -> None:
    client = _in_data()
    stuffed = client.stuff_content("café\r\n".encode())
    assert stuffed.eight_bit
    with pytest.raises(LocalProtocolError, match="BODY=8BITMIME"):
        client.send(stuffed)
    client = _in_data(mail=Mail(reverse_path="a@example.org", parameters={"BODY": "8BITMIME"}))
    assert client.send(stuffed) == "café\r\n.\r\n".encode()


def test_it_is_no_bdat_content() -> None:
    client = _ready()
    client.send(Mail(reverse_path="a@example.org"))
    client.send(Rcpt(forward_path="b@example.org"))
    client.send(Bdat(size=3, last=True))
    with pytest.raises(LocalProtocolError, match="a BDAT chunk takes MessageData"):
        client.send(client.stuff_content(b"abc"))


def test_it_cannot_be_made_or_changed_by_hand() -> None:
    # Its wire bytes are trusted to end the data once, at their end: a
    # hand-made one could smuggle a second message (attack class 2).
    with pytest.raises(TypeError, match=r"made by ClientConnection.stuff_content\(\)"):
        StuffedContent(b"x\r\n.\r\nMAIL FROM:<evil@example.org>\r\n", False, 1000)
    stuffed = ClientConnection().stuff_content(b"x")
    with pytest.raises(AttributeError, match="immutable: cannot set wire"):
        stuffed.wire = b"y"  # type: ignore[misc]


def test_chunks_must_be_bytes() -> None:
    with pytest.raises(LocalProtocolError, match="message data must be bytes, not str"):
        ClientConnection().stuff_content([b"ok", "text"])  # type: ignore[list-item]


# -- in a batch -------------------------------------------------------------

OPTIONS = ClientOptions(helo_name="client.example", tls=TLSMode.NEVER)


def _opened_and_watched(monkeypatch: pytest.MonkeyPatch) -> tuple[Link, list[tuple[int, int]]]:
    """A link with an open session, and the list that gets (writes made
    since, commands awaiting replies) at each ``stuff_content`` call."""
    link = Link(Recorder(), options=OPTIONS)
    link.open()
    made: list[tuple[int, int]] = []
    real = ClientConnection.stuff_content
    before = len(link.client_writes)

    def recording(self: ClientConnection, content: Any) -> StuffedContent:
        made.append((len(link.client_writes) - before, len(self.pending)))
        return real(self, content)

    monkeypatch.setattr(ClientConnection, "stuff_content", recording)
    return link, made


def test_a_batch_stuffs_each_content_while_its_replies_are_on_the_way(monkeypatch: pytest.MonkeyPatch) -> None:
    link, made = _opened_and_watched(monkeypatch)
    messages = [prepare(b"Subject: %d\r\n\r\n.dot\r\n" % i, "a@example.org", ["b@example.org"]) for i in range(3)]
    outcomes = link.run(link.client.send_many(messages))
    assert [type(outcome).__name__ for outcome in outcomes] == ["SendResult"] * 3
    # Message 0's content is stuffed behind its MAIL, RCPT, DATA; each later
    # one behind the write with the content before it and its own envelope.
    assert made == [(1, 3), (2, 4), (3, 4)]
    assert [env[0].content for env in link.handler.args("message")] == [
        b"Subject: %d\r\n\r\n.dot\r\n" % i for i in range(3)
    ]


def test_a_batch_reads_streamed_content_only_after_its_354() -> None:
    link = Link(Recorder(), options=OPTIONS)
    link.open()
    read_at: list[int] = []

    def chunks(index: int) -> Any:
        read_at.append(len(link.client.conn.pending))
        yield b"Subject: %d\r\n\r\nbody\r\n" % index

    messages = [prepare(chunks(i), "a@example.org", ["b@example.org"]) for i in range(2)]
    outcomes = link.run(link.client.send_many(messages))
    assert [type(outcome).__name__ for outcome in outcomes] == ["SendResult"] * 2
    # Nothing awaits a reply when a generator's content is read: its 354 came.
    assert read_at == [0, 0]


def test_a_batch_drops_what_it_stuffed_for_a_refused_data() -> None:
    messages = [prepare(b"Subject: %d\r\n\r\nbody %d\r\n" % (i, i), "a@example.org", ["b@example.org"]) for i in range(3)]
    outcomes, script = batch(Behaviour(codes={(1, "DATA"): 451}), messages)
    assert [type(outcome).__name__ for outcome in outcomes] == ["SendResult", "DataRefused", "SendResult"]
    sent = b"".join(script.writes)
    assert b"body 0" in sent and b"body 2" in sent and b"body 1" not in sent
    assert sent.count(b"\r\n.\r\n") == 2


# -- in send() ----------------------------------------------------------------


def test_send_stuffs_the_content_while_the_envelope_replies_are_on_the_way(monkeypatch: pytest.MonkeyPatch) -> None:
    link, made = _opened_and_watched(monkeypatch)
    before = len(link.client_writes)
    result = link.run(link.client.send(prepare(b"Subject: x\r\n\r\n.dot\r\n", "a@example.org", ["b@example.org"])))
    assert result.accepted == ("b@example.org",)
    # Behind the write of MAIL, RCPT and DATA, before their replies.
    assert made == [(1, 3)]
    writes = link.client_writes[before:]
    assert writes[1] == b"Subject: x\r\n\r\n..dot\r\n.\r\n"
    assert [env[0].content for env in link.handler.args("message")] == [b"Subject: x\r\n\r\n.dot\r\n"]


def test_send_of_content_that_fails_ahead_fails_after_the_354_and_closes() -> None:
    link = Link(Recorder(), options=OPTIONS)
    link.open()
    outgoing = prepare(b"Subject: long\r\n\r\n" + b"x" * 1200 + b"\r\n", "a@example.org", ["b@example.org"])
    with pytest.raises(LocalProtocolError, match="message line of 1202 octets"):
        link.run(link.client.send(outgoing))
    # The 354 came, so the only way out that delivers nothing is to close;
    # no byte of the content went out.
    assert link.client_closed
    assert not any(b"xxxx" in write for write in link.client_writes)
    assert link.handler.args("message") == []
