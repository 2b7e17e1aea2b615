"""Properties of the cores over generated input (smtpproto.testing):
content survives the trip, the unstuffer is split-invariant, valid sessions
arrive equal, garbage only ever raises RemoteProtocolError, and every
(state, command) pair is either accepted or cleanly rejected."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import fields

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpproto import (
    NEED_DATA,
    PAUSED,
    TRANSITIONS,
    ClientConnection,
    Command,
    CommandRejected,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfMessage,
    Event,
    Expn,
    Helo,
    Help,
    LocalProtocolError,
    Mail,
    MessageData,
    MessageRejected,
    Noop,
    Quit,
    Rcpt,
    RemoteProtocolError,
    Reply,
    Rset,
    ServerConfig,
    ServerConnection,
    State,
    UnknownCommand,
    Vrfy,
)
from smtpproto._commands import format_command
from smtpproto._data import END_OF_DATA, DotUnstuffer
from smtpproto._replies import format_reply
from smtpproto._state import is_allowed, next_state
from smtpproto.testing import (
    COMMAND_TYPES,
    chunkings,
    commands,
    message_bodies,
    mutated_bytes,
    replies,
    session_transcripts,
    sessions,
    split_points,
)

from helpers import Pair, drain, feed, merge_data

PROPERTY = settings(deadline=None, max_examples=60)


def split(data: bytes, points: Sequence[int]) -> list[bytes]:
    bounds = [0, *points, len(data)]
    return [data[start:end] for start, end in zip(bounds, bounds[1:])]


def normalise(body: bytes) -> bytes:
    """What a server must receive for *body*: CRLF stays, bare CR and bare
    LF become CRLF, and a final CRLF is added to a non-empty body."""
    out = re.sub(rb"\r\n|\r|\n", b"\r\n", body)
    if out and not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out


def revalidate(event: Event) -> None:
    """An event a parser built with ``_trusted`` passes its public
    constructor's validation and comes out equal."""
    if isinstance(event, (Command, Reply)):
        values = {f.name: getattr(event, f.name) for f in fields(event)}  # type: ignore[arg-type]
        assert type(event)(**values) == event
    elif isinstance(event, (CommandRejected, MessageRejected)):
        revalidate(event.reply)
        if isinstance(event, CommandRejected) and event.command is not None:
            revalidate(event.command)


# -- (a) content end to end ---------------------------------------------------


def open_data(pair: Pair) -> None:
    pair.hello()
    pair.send(Mail(reverse_path="a@example.org", parameters={"BODY": "8BITMIME"}))
    pair.send(Rcpt(forward_path="b@example.org"))
    pair.send(Data())
    assert pair.client.state is State.DATA and pair.server.state is State.DATA


@settings(deadline=None, max_examples=50)
@given(message_bodies(), st.data())
def test_content_arrives_normalised_whatever_the_chunking(body: bytes, data: st.DataObject) -> None:
    pair = Pair()
    open_data(pair)
    client_chunks = data.draw(chunkings(body), label="client chunks")
    wire = b"".join(pair.client.send(MessageData(data=chunk)) for chunk in client_chunks)
    wire += pair.client.send(EndOfMessage())
    # §2.3.8: never a bare CR or LF on the wire; §4.1.1.4: the data ends
    # only at the final CRLF.CRLF (the DATA line's CRLF precedes the wire).
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", wire) is None
    assert (b"\r\n" + wire).find(b"\r\n.\r\n") == len(wire) - 3
    events: list[Event] = []
    for piece in split(wire, data.draw(split_points(len(wire)), label="server splits")):
        pair.server.receive_data(piece)
        events += drain(pair.server)
    assert isinstance(events[-1], EndOfMessage)
    content = events[:-1]
    assert all(isinstance(event, MessageData) and event.data for event in content)
    received = b"".join(event.data for event in content if isinstance(event, MessageData))
    assert received == normalise(body)
    assert pair.server.trailing_data == (b"", False)
    reply = pair.to_client(pair.server.send(pair.server.default_reply()))
    assert isinstance(reply[0], Reply) and reply[0].code == 250


# -- (b) the unstuffer --------------------------------------------------------


def unstuff(
    data: bytes, points: Sequence[int], max_line: int | None = 1000
) -> tuple[bytes, int | None, DotUnstuffer]:
    """Feed *data* in pieces; return the content, the offset just past the
    terminator (None if not found) and the unstuffer."""
    unstuffer = DotUnstuffer(max_line)
    buf = bytearray()
    out = bytearray()
    fed = 0
    for piece in split(data, points):
        buf += piece
        fed += len(piece)
        while True:
            result = unstuffer.extract(buf)
            if result is None:
                break
            if result is END_OF_DATA:
                return bytes(out), fed - len(buf), unstuffer
            assert isinstance(result, bytes) and result
            out += result
            assert len(out) <= fed
    return bytes(out), None, unstuffer


def reference_unstuff(data: bytes) -> tuple[bytes, int | None]:
    """RFC 5321 §4.5.2 read literally: the data ends at the first line that
    is only "." (lines end at CRLF), and one leading dot is removed from
    every other line."""
    stream = b"\r\n" + data
    at = stream.find(b"\r\n.\r\n")
    body = stream[2 : at + 2] if at >= 0 else data
    lines = [line[1:] if line.startswith(b".") else line for line in body.split(b"\r\n")]
    return b"\r\n".join(lines), (at + 3 if at >= 0 else None)


DOTTY = st.lists(
    st.sampled_from([b"\r", b"\n", b".", b"a", b"\r\n", b"\x00", b"\r\n.\r\n", b"\r\n.", b".\r\n"]),
    max_size=40,
).map(b"".join)


@settings(deadline=None, max_examples=200)
@given(st.one_of(DOTTY, st.binary(max_size=80), message_bodies(max_line_length=None)), st.data())
def test_unstuffer_is_split_invariant(data: bytes, draw: st.DataObject) -> None:
    whole, whole_end, whole_unstuffer = unstuff(data, [])
    points = draw.draw(split_points(len(data)))
    content, end, unstuffer = unstuff(data, points)
    assert (content, end) == (whole, whole_end)
    assert len(content) <= (len(data) if end is None else end)
    assert unstuffer.size == len(content)
    assert unstuffer.bare_line_ending == whole_unstuffer.bare_line_ending
    assert unstuffer.longest_line == whole_unstuffer.longest_line
    expected, expected_end = reference_unstuff(data)
    assert end == expected_end
    if end is None:
        # Up to four octets (a partial terminator) may still be held back.
        assert expected.startswith(content) and len(expected) - len(content) <= 4
    else:
        assert content == expected
        body = data[: end - 3]
        assert unstuffer.bare_line_ending == (re.search(rb"\r(?!\n)|(?<!\r)\n", body) is not None)


# -- (c) valid sessions arrive equal ------------------------------------------


def run_session(session: Sequence[Event], byte_at_a_time: bool) -> Pair:
    """Send *session* event by event, each after the previous one's reply.

    Message content goes straight to the server: it gets no reply (and
    Pair.to_client would take an empty answer for the end of the stream).
    """
    pair = Pair(byte_at_a_time=byte_at_a_time)
    pair.greet()
    for event in session:
        data = pair.client.send(event)
        if isinstance(event, MessageData):
            if data:
                pair.wire_to_server += data
                feed(pair.server, data, byte_at_a_time)
                pair.server_events += drain(pair.server)
        else:
            pair.to_server(data)
    return pair


def expected_server_events(session: Sequence[Event]) -> list[Event]:
    expected: list[Event] = []
    body = b""
    for event in session:
        if isinstance(event, MessageData):
            body += event.data
            continue
        if isinstance(event, EndOfMessage) and normalise(body):
            expected.append(MessageData(data=normalise(body)))
        if isinstance(event, Data):
            body = b""
        expected.append(event)
    if isinstance(session[-1], Quit):
        expected.append(ConnectionClosed())
    return expected


@PROPERTY
@given(sessions(utf8=True), st.booleans())
def test_valid_sessions_arrive_equal(session: list[Event], byte_at_a_time: bool) -> None:
    pair = run_session(session, byte_at_a_time)
    assert merge_data(pair.server_events) == expected_server_events(session)
    replies_ = [event for event in pair.client_events if isinstance(event, Reply)]
    assert all(reply.code < 400 for reply in replies_)
    assert len(replies_) == 1 + sum(not isinstance(e, MessageData) for e in session)
    assert pair.client.state is pair.server.state


@pytest.mark.parametrize("mailbox", ["a@[x:>]", 'a@[x:"]', 'a@[x:">]', '"]>"@[x:>"]'])
def test_server_reads_a_path_whose_address_literal_holds_gt_or_quote(mailbox: str) -> None:
    # dcontent (§4.1.3, %d33-90 / %d94-126) includes '>' and '"': found by
    # test_valid_sessions_arrive_equal (the server used to answer 501).
    pair = Pair()
    pair.hello()
    mail = Mail(reverse_path=mailbox, parameters={"SIZE": "10"})
    rcpt = Rcpt(forward_path=mailbox)
    pair.send(mail)
    pair.send(rcpt)
    assert pair.server_events[-2:] == [mail, rcpt]


# -- (d) mutated transcripts only ever raise RemoteProtocolError ------------------


def pump(server: ServerConnection, budget: int) -> bool:
    """Answer every event with the default reply until the server needs
    data (False) or the session closed (True); fail if it never settles."""
    for _ in range(budget):
        event = server.next_event()
        if event is NEED_DATA:
            return False
        assert event is not PAUSED, "every event was answered"
        if isinstance(event, ConnectionClosed):
            return True
        assert isinstance(event, Event)
        revalidate(event)
        if not isinstance(event, MessageData):
            server.send(server.default_reply())
    raise AssertionError(f"the server produced more than {budget} events")


@settings(deadline=None, max_examples=70)
@given(mutated_bytes(session_transcripts(utf8=True), max_mutations=6), st.data())
def test_mutated_sessions_only_raise_remote_errors(data: bytes, draw: st.DataObject) -> None:
    server = ServerConnection(ServerConfig(max_errors=5))
    server.send(server.greeting())
    budget = 2 * len(data) + 10
    closed = False
    try:
        for piece in split(data, draw.draw(split_points(len(data)))):
            server.receive_data(piece)
            if pump(server, budget):
                closed = True
                break
        if not closed:
            server.receive_data(b"")
            assert pump(server, budget), "after EOF the session must close"
    except RemoteProtocolError as exc:
        assert server.state is State.ERROR
        assert exc.reply is None or isinstance(exc.reply, Reply)


@settings(deadline=None, max_examples=80)
@given(st.lists(st.binary(max_size=30), max_size=8), st.booleans())
def test_random_bytes_only_raise_remote_errors(pieces: list[bytes], lenient: bool) -> None:
    server = ServerConnection(ServerConfig(lenient=lenient, max_errors=3))
    server.send(server.greeting())
    try:
        for piece in [*pieces, b""]:
            server.receive_data(piece)
            if pump(server, 10 + 2 * len(piece)):
                break
    except RemoteProtocolError:
        assert server.state is State.ERROR


# -- (e) random replies to a client --------------------------------------------


REPLY_BYTES = st.lists(replies(), min_size=1, max_size=3).map(
    lambda items: b"".join(format_reply(reply) for reply in items)
)


@settings(deadline=None, max_examples=100)
@given(
    st.one_of(st.binary(max_size=200), REPLY_BYTES, mutated_bytes(REPLY_BYTES)),
    st.data(),
)
def test_client_fed_random_replies_only_raises_remote_errors(
    data: bytes, draw: st.DataObject
) -> None:
    client = ClientConnection()
    client.receive_data(b"220 server.example ESMTP\r\n")
    assert isinstance(client.next_event(), Reply)
    client.send(Ehlo(domain="client.example"))
    closed = False
    try:
        for piece in [*split(data, draw.draw(split_points(len(data)))), b""]:
            client.receive_data(piece)
            for _ in range(len(data) + 5):
                event = client.next_event()
                if event is NEED_DATA:
                    break
                if isinstance(event, ConnectionClosed):
                    closed = True
                    break
                assert isinstance(event, Reply)
                revalidate(event)
                if not client.pending and client.state in (State.GREETED, State.READY):
                    client.send(Noop())  # keep a command outstanding
            else:
                raise AssertionError("the client never settled")
            if closed:
                break
        assert closed
    except RemoteProtocolError:
        assert client.state is State.ERROR


# -- (f) every (state, command) pair --------------------------------------------

SAMPLES: dict[type[Command], Command] = {
    Ehlo: Ehlo(domain="client.example"),
    Helo: Helo(domain="client.example"),
    Mail: Mail(reverse_path="a@example.org"),
    Rcpt: Rcpt(forward_path="b@example.org"),
    Data: Data(),
    Rset: Rset(),
    Noop: Noop(text="ping"),
    Vrfy: Vrfy(text="postmaster"),
    Expn: Expn(text="staff"),
    Help: Help(topic="MAIL"),
    Quit: Quit(),
    UnknownCommand: UnknownCommand(name="XFOO", argument="bar"),
}

_SCRIPTS: dict[State, list[Command]] = {
    State.GREETED: [],
    State.READY: [SAMPLES[Ehlo]],
    State.MAIL: [SAMPLES[Ehlo], SAMPLES[Mail]],
    State.RCPT: [SAMPLES[Ehlo], SAMPLES[Mail], SAMPLES[Rcpt]],
    State.DATA: [SAMPLES[Ehlo], SAMPLES[Mail], SAMPLES[Rcpt], Data()],
    State.CLOSED: [Quit()],
}


def server_in(state: State) -> ServerConnection:
    """A server driven into *state* by a real command sequence."""
    if state is State.ERROR:
        server = ServerConnection(ServerConfig(max_receive_buffer=1024))
        server.send(server.greeting())
        server.receive_data(b"x" * 2000)
        with pytest.raises(RemoteProtocolError):
            server.next_event()
    else:
        server = ServerConnection()
        if state is State.REFUSED:
            server.send(Reply(code=554, text=("no service here",)))
        elif state is not State.CONNECTED:
            server.send(server.greeting())
            for command in _SCRIPTS[state]:
                server.receive_data(format_command(command))
                assert server.next_event() == command
                server.send(server.default_reply())
    assert server.state is state
    return server


def check_command_in_state(state: State, command: Command) -> None:
    server = server_in(state)
    line = format_command(command)
    server.receive_data(line)
    if state is State.ERROR:
        with pytest.raises(LocalProtocolError, match="after the connection failed"):
            server.next_event()
        return
    event = server.next_event()
    if state is State.CONNECTED:
        assert event is PAUSED  # nothing is read before the greeting
        return
    if state is State.CLOSED:
        assert isinstance(event, ConnectionClosed)
        return
    if state is State.DATA:
        assert event == MessageData(data=line[:-2])  # content, not a command
        return
    kind = type(command)
    allowed = is_allowed(state, kind)
    if event == command:
        assert allowed or kind is UnknownCommand
    else:
        assert isinstance(event, CommandRejected), event
        assert event.command == command
        if allowed:
            # Allowed here but refused on its arguments (555, 553...).
            assert event.reply.code not in (503, 554)
        else:
            assert event.reply.code in (503, 554) or kind is UnknownCommand
    reply = server.default_reply()
    assert 200 <= reply.code < 600
    server.send(reply)
    if event == command and kind is not UnknownCommand:
        assert server.state is next_state(state, kind, reply.code)
    else:
        assert server.state is state
    if server.state is State.CLOSED:
        assert isinstance(server.next_event(), ConnectionClosed)
    else:
        assert server.next_event() is NEED_DATA


@pytest.mark.parametrize("kind", COMMAND_TYPES, ids=lambda kind: kind.__name__)
@pytest.mark.parametrize("state", list(TRANSITIONS), ids=lambda state: state.name)
def test_every_state_and_command(state: State, kind: type[Command]) -> None:
    check_command_in_state(state, SAMPLES[kind])


def test_every_command_type_is_covered() -> None:
    assert set(SAMPLES) == set(COMMAND_TYPES)
    for row in TRANSITIONS.values():
        assert {kind for kind in row if issubclass(kind, Command)} <= set(COMMAND_TYPES)


@settings(deadline=None, max_examples=120)
@given(st.sampled_from(list(TRANSITIONS)), commands())
def test_every_state_and_generated_command(state: State, command: Command) -> None:
    check_command_in_state(state, command)


def test_refused_session_answers_unknown_commands_with_503() -> None:
    server = server_in(State.REFUSED)
    server.receive_data(b"XFOO bar\r\n")
    server.next_event()
    assert server.default_reply().code == 503
