"""Properties of the cores over generated input (smtpproto.testing):
content survives the trip, the unstuffer is split-invariant, valid sessions
(DATA and BDAT, AUTH, LMTP) and the ESMTP commands arrive equal, garbage
only ever raises RemoteProtocolError, and every (state, command) pair of
every state in the transition table is either accepted or cleanly
rejected."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Sequence
from dataclasses import fields

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from smtpproto import (
    NEED_DATA,
    PAUSED,
    TRANSITIONS,
    Auth,
    AuthCancel,
    AuthResponse,
    Bdat,
    BdatLast,
    ClientConfig,
    ClientConnection,
    Command,
    CommandRejected,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfChunk,
    EndOfMessage,
    Event,
    Expn,
    Helo,
    Help,
    Lhlo,
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
    StartTLS,
    State,
    UnknownCommand,
    Vrfy,
    Xclient,
)
from smtpproto import sasl
from smtpproto._commands import format_command
from smtpproto._data import END_OF_DATA, DotUnstuffer
from smtpproto._replies import format_reply
from smtpproto._server_config import SERVER_SASL
from smtpproto._state import Key, is_allowed, key_of, next_state
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

from helpers import Pair, default_responder, drain, merge_data

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
    if isinstance(event, (CommandRejected, MessageRejected)):
        revalidate(event.reply)
        if isinstance(event, CommandRejected) and event.command is not None:
            revalidate(event.command)
    else:
        values = {f.name: getattr(event, f.name) for f in fields(event)}  # type: ignore[arg-type]
        assert type(event)(**values) == event


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

#: The kinds of session sessions() draws, with the server and client
#: configurations that accept them.
SESSION_KINDS = ["smtp", "auth", "lmtp"]
SERVER_CONFIGS = {
    "smtp": ServerConfig(),
    "auth": ServerConfig(auth_mechanisms=("PLAIN",), auth_plaintext=True),
    "lmtp": ServerConfig(lmtp=True),
}
CLIENT_CONFIGS = {
    "smtp": ClientConfig(),
    "auth": ClientConfig(allow_plaintext_auth=True),
    "lmtp": ClientConfig(lmtp=True),
}


def session_of(kind: str, utf8: bool = True) -> st.SearchStrategy[list[Event]]:
    return sessions(utf8=utf8, auth=kind == "auth", lmtp=kind == "lmtp")


KIND_AND_SESSION = st.sampled_from(SESSION_KINDS).flatmap(
    lambda kind: st.tuples(st.just(kind), session_of(kind))
)


def plain_credentials(session: Sequence[Event]) -> sasl.CheckPassword | None:
    """The CheckPassword request the server must make for the PLAIN message
    in *session* (RFC 4616: ``[authzid] NUL authcid NUL passwd``)."""
    for event in session:
        message = None
        if isinstance(event, Auth) and event.initial_response is not None:
            message = event.initial_response
        elif isinstance(event, AuthResponse):
            message = event.data
        if message is not None:
            authzid, authcid, password = (part.decode("utf-8") for part in message.split(b"\0"))
            return sasl.CheckPassword(authcid=authcid, password=password, authzid=authzid or None)
    return None


def verifying_responder(expected: sasl.CheckPassword | None) -> object:
    """Answer the server's verification request through auth_reply: yes to
    exactly the credentials the session holds."""

    def respond(server: ServerConnection, event: Event) -> Reply | None:
        if isinstance(event, (Auth, AuthResponse)):
            request = server.auth_request
            if request is None:
                return server.auth_reply()  # PLAIN's empty first challenge
            assert request == expected
            return server.auth_reply(True)
        return default_responder(server, event)

    return respond


def deliver(pair: Pair, data: bytes) -> None:
    """Bytes to the server, whole or one byte at a time, answering its
    events after every piece; the replies go to the client the same way."""
    pieces = [data[i : i + 1] for i in range(len(data))] if pair.byte_at_a_time else [data]
    out = bytearray()
    for piece in pieces:
        pair.wire_to_server += piece
        pair.server.receive_data(piece)
        out += pair.serve()
    pair.to_client(bytes(out))


def run_session(
    session: Sequence[Event], byte_at_a_time: bool, kind: str = "smtp"
) -> Pair:
    """Send *session* event by event, each after the previous one's reply.

    Events that put no byte on the wire (the end of a BDAT chunk) only let
    the server answer what it has: b"" would mean end of file.
    """
    pair = Pair(
        SERVER_CONFIGS[kind],
        client=ClientConnection(CLIENT_CONFIGS[kind]),
        responder=verifying_responder(plain_credentials(session)),  # type: ignore[arg-type]
        byte_at_a_time=byte_at_a_time,
    )
    pair.greet()
    for event in session:
        data = pair.client.send(event)
        if data:
            deliver(pair, data)
        else:
            pair.to_client(pair.serve())
    return pair


def expected_server_events(session: Sequence[Event]) -> list[Event]:
    """What the server must hand out: the client's events, with DATA content
    normalised and joined (dot-stuffing is the wire's business) and BDAT
    octets as they were sent (RFC 3030: raw)."""
    expected: list[Event] = []
    body = b""
    in_data = False
    for event in session:
        if isinstance(event, MessageData):
            if in_data:
                body += event.data
            else:
                expected.append(event)
            continue
        if isinstance(event, EndOfMessage) and in_data:
            if normalise(body):
                expected.append(MessageData(data=normalise(body)))
            in_data = False
        if isinstance(event, Data):
            body, in_data = b"", True
        expected.append(event)
    if isinstance(session[-1], Quit):
        expected.append(ConnectionClosed())
    return merge_data(expected)


def expected_reply_count(session: Sequence[Event], lmtp: bool) -> int:
    """The greeting, one reply per command, SASL line and end of data; a
    BDAT chunk's reply comes once its octets are in (EndOfChunk and the
    EndOfMessage after BDAT LAST add none); LMTP answers the end of a
    message once per accepted recipient (RFC 2033 §4.2)."""
    count, recipients, chunked = 1, 0, False
    for event in session:
        if isinstance(event, Mail):
            recipients = 0
        elif isinstance(event, Rcpt):
            recipients += 1
        elif isinstance(event, Bdat):
            chunked = True
        if isinstance(event, (MessageData, EndOfChunk)):
            continue
        if isinstance(event, EndOfMessage) and chunked:
            chunked = False
            continue
        ends = isinstance(event, EndOfMessage) or (isinstance(event, Bdat) and event.last)
        count += recipients if lmtp and ends else 1
    return count


@PROPERTY
@given(KIND_AND_SESSION, st.booleans())
def test_valid_sessions_arrive_equal(kind_and_session: tuple[str, list[Event]], byte_at_a_time: bool) -> None:
    kind, session = kind_and_session
    pair = run_session(session, byte_at_a_time, kind)
    assert merge_data(pair.server_events) == expected_server_events(session)
    replies_ = [event for event in pair.client_events if isinstance(event, Reply)]
    assert all(reply.code < 400 for reply in replies_)
    assert len(replies_) == expected_reply_count(session, lmtp=kind == "lmtp")
    assert pair.client.state is pair.server.state
    credentials = plain_credentials(session)
    assert pair.server.authenticated is pair.client.authenticated is (credentials is not None)
    if credentials is not None:
        assert pair.server.auth_identity == (credentials.authzid or credentials.authcid)


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


@st.composite
def steered_sessions(draw: st.DrawFn, shape: str) -> tuple[str, list[Event]]:
    """A session of sessions() followed by one transaction of *shape*:
    BDAT in two or more chunks, or an LMTP delivery by DATA or BDAT; for
    AUTH the session itself holds the exchange."""
    kind = {"AUTH": "auth", "LMTP DATA": "lmtp", "LMTP BDAT": "lmtp"}.get(shape, "smtp")
    session = draw(session_of(kind, utf8=False), label="session")
    quit_ = isinstance(session[-1], Quit)
    if quit_:
        session.pop()
    if shape != "AUTH":
        body = draw(message_bodies(), label="body")
        recipients = draw(st.integers(1, 3), label="recipients")
        body_type = "8BITMIME" if shape == "LMTP DATA" else "BINARYMIME"
        session.append(Mail(reverse_path="a@example.org", parameters={"BODY": body_type}))
        session.extend(Rcpt(forward_path=f"r{n}@example.org") for n in range(recipients))
        if shape == "LMTP DATA":
            session.append(Data())
            session.extend(MessageData(data=chunk) for chunk in draw(chunkings(body)))
            session.append(EndOfMessage())
        else:
            pieces = split(body, draw(split_points(len(body)), label="chunk boundaries"))
            if len(pieces) < 2:
                pieces.append(b"")  # BDAT n, then BDAT 0 LAST
            for index, piece in enumerate(pieces):
                last = index == len(pieces) - 1
                session.append(Bdat(size=len(piece), last=last))
                session.extend(MessageData(data=chunk) for chunk in draw(chunkings(piece)))
                session.append(EndOfMessage() if last else EndOfChunk())
    if quit_:
        session.append(Quit())
    return kind, session


@PROPERTY
@given(
    st.sampled_from(["BDAT", "AUTH", "LMTP DATA", "LMTP BDAT"]).flatmap(steered_sessions),
    st.booleans(),
)
def test_sessions_with_each_extension_arrive_equal(
    kind_and_session: tuple[str, list[Event]], byte_at_a_time: bool
) -> None:
    """The property above, steered so that every run sends multi-chunk BDAT,
    AUTH and LMTP deliveries."""
    kind, session = kind_and_session
    pair = run_session(session, byte_at_a_time, kind)
    assert merge_data(pair.server_events) == expected_server_events(session)
    replies_ = [event for event in pair.client_events if isinstance(event, Reply)]
    assert all(reply.code < 400 for reply in replies_)
    assert len(replies_) == expected_reply_count(session, lmtp=kind == "lmtp")
    assert pair.client.state is pair.server.state


ESMTP_KINDS = [StartTLS, Auth, Bdat, Lhlo, Xclient]


def esmtp_pair(command: Command, byte_at_a_time: bool) -> Pair:
    """A pair ready to send *command*: an LMTP pair for LHLO, a trusted
    server for XCLIENT, STARTTLS and every server SASL mechanism offered,
    and an open transaction with a recipient for BDAT."""
    lmtp = isinstance(command, Lhlo)
    config = ServerConfig(
        starttls=True, auth_mechanisms=SERVER_SASL, auth_plaintext=True, lmtp=lmtp
    )
    pair = Pair(
        config,
        client=ClientConnection(ClientConfig(lmtp=lmtp, allow_plaintext_auth=True)),
        byte_at_a_time=byte_at_a_time,
    )
    pair.server = ServerConnection(config, trusted=True)
    pair.greet()
    if not lmtp:
        pair.send(Ehlo(domain="client.example"))
    if isinstance(command, Bdat):
        pair.send(Mail(reverse_path="a@example.org", parameters={"BODY": "BINARYMIME"}))
        pair.send(Rcpt(forward_path="b@example.org"))
    return pair


@PROPERTY
@given(commands(ESMTP_KINDS), st.data(), st.booleans())
def test_esmtp_commands_arrive_equal(command: Command, data: st.DataObject, byte_at_a_time: bool) -> None:
    if isinstance(command, Auth):
        # The client sends only a mechanism the server offered.
        mechanism = data.draw(st.sampled_from(SERVER_SASL), label="mechanism")
        command = Auth(mechanism=mechanism, initial_response=command.initial_response)
    if isinstance(command, Bdat) and byte_at_a_time:
        assume(command.size <= 4096)
    pair = esmtp_pair(command, byte_at_a_time)
    before = len(pair.server_events)
    sent: list[Event] = [command]
    deliver(pair, pair.client.send(command))
    if isinstance(command, Bdat):
        if command.size <= 4096:
            octets = data.draw(st.binary(min_size=command.size, max_size=command.size), label="octets")
        else:
            octets = bytes(range(256)) * (command.size // 256) + b"x" * (command.size % 256)
        for chunk in data.draw(chunkings(octets), label="chunks") if len(octets) <= 4096 else [octets]:
            sent.append(MessageData(data=chunk))
            deliver(pair, pair.client.send(sent[-1]))
        sent.append(EndOfMessage() if command.last else EndOfChunk())
        assert pair.client.send(sent[-1]) == b""
        pair.to_client(pair.serve())
    while pair.client.state is State.AUTH:
        # RFC 4954 §4: each 334 gets one line, a response or "*".
        line: Event = data.draw(
            st.one_of(st.builds(AuthResponse, data=st.binary(max_size=64)), st.just(AuthCancel())),
            label="SASL line",
        )
        sent.append(line)
        deliver(pair, pair.client.send(line))
    assert merge_data(pair.server_events[before:]) == merge_data(sent)
    assert pair.client.state is pair.server.state
    reply = pair.client_events[-1]
    assert isinstance(reply, Reply)
    if isinstance(command, StartTLS):
        assert reply.code == 220 and pair.server.state is State.TLS
        pair.server.tls_established()
        pair.client.tls_established()
        assert pair.server.state is pair.client.state is State.GREETED
    elif isinstance(command, Xclient):
        # Postfix: XCLIENT starts the session over with a 220 greeting.
        assert reply.code == 220 and pair.server.state is State.GREETED
    elif isinstance(command, Lhlo):
        assert reply.code == 250 and pair.server.client_name == command.domain


# -- (d) mutated transcripts only ever raise RemoteProtocolError ------------------


def pump(server: ServerConnection, budget: int) -> bool:
    """Answer every event with the default reply (as many as it takes:
    LMTP) until the server needs data (False) or the session closed (True);
    complete the TLS handshake when STARTTLS was accepted; fail if the
    server never settles."""
    for _ in range(budget):
        event = server.next_event()
        if event is NEED_DATA:
            return False
        if event is PAUSED:
            # Nothing is awaited, so the transport is switching to TLS; the
            # handshake refuses cleartext that came before it (attack class 3).
            assert server.state is State.TLS and server.replies_due == 0
            server.tls_established()
            continue
        if isinstance(event, ConnectionClosed):
            return True
        assert isinstance(event, Event)
        revalidate(event)
        while server.replies_due:
            server.send(server.default_reply())
    raise AssertionError(f"the server produced more than {budget} events")


#: Server settings the garbage is fed to: the default, and every ESMTP
#: extension on (STARTTLS, AUTH over cleartext, LMTP, a trusted peer).
GARBAGE_SERVERS = {
    "smtp": (ServerConfig(max_errors=5), False),
    "auth": (
        ServerConfig(max_errors=5, starttls=True, auth_mechanisms=SERVER_SASL, auth_plaintext=True),
        True,
    ),
    "lmtp": (ServerConfig(max_errors=5, lmtp=True, starttls=True), True),
}


def garbage_server(kind: str, lenient: bool = False) -> ServerConnection:
    config, trusted = GARBAGE_SERVERS[kind]
    server = ServerConnection(dataclasses.replace(config, lenient=lenient), trusted=trusted)
    server.send(server.greeting())
    return server


def feed_garbage(server: ServerConnection, pieces: Sequence[bytes]) -> None:
    """Feed *pieces* then EOF, answering everything: the session must close,
    or fail with RemoteProtocolError and nothing else."""
    budget = 2 * sum(map(len, pieces)) + 10
    try:
        for piece in pieces:
            server.receive_data(piece)
            if pump(server, budget):
                return
        server.receive_data(b"")
        assert pump(server, budget), "after EOF the session must close"
    except RemoteProtocolError as exc:
        assert server.state is State.ERROR
        assert exc.reply is None or isinstance(exc.reply, Reply)


@settings(deadline=None, max_examples=70)
@given(
    st.sampled_from(SESSION_KINDS).flatmap(
        lambda kind: st.tuples(
            st.just(kind),
            mutated_bytes(
                session_transcripts(utf8=True, auth=kind == "auth", lmtp=kind == "lmtp"),
                max_mutations=6,
            ),
        )
    ),
    st.data(),
)
def test_mutated_sessions_only_raise_remote_errors(
    kind_and_data: tuple[str, bytes], draw: st.DataObject
) -> None:
    kind, data = kind_and_data
    server = garbage_server(kind)
    feed_garbage(server, split(data, draw.draw(split_points(len(data)))))


@settings(deadline=None, max_examples=80)
@given(
    st.lists(st.binary(max_size=30), max_size=8),
    st.booleans(),
    st.sampled_from(list(GARBAGE_SERVERS)),
)
def test_random_bytes_only_raise_remote_errors(pieces: list[bytes], lenient: bool, kind: str) -> None:
    feed_garbage(garbage_server(kind, lenient), pieces)


ESMTP_LINES = st.one_of(
    commands().map(format_command),
    st.sampled_from([b"*\r\n", b"=\r\n", b"\r\n", b"AUTH LOGIN\r\n", b"STARTTLS\r\n", b"BDAT 3\r\n"]),
    st.binary(max_size=12).map(lambda data: base64.b64encode(data) + b"\r\n"),
)


@settings(deadline=None, max_examples=60)
@given(st.lists(ESMTP_LINES, min_size=1, max_size=10), st.sampled_from(["auth", "lmtp"]), st.data())
def test_esmtp_command_soup_only_raises_remote_errors(
    lines: list[bytes], kind: str, draw: st.DataObject
) -> None:
    """Valid ESMTP lines in any order (AUTH exchanges, STARTTLS, BDAT with
    whatever follows as its octets, XCLIENT, SASL lines out of place),
    mutated or not, fed in arbitrary pieces."""
    data = b"".join(lines)
    if draw.draw(st.booleans()):
        data = draw.draw(mutated_bytes(data))
    feed_garbage(garbage_server(kind), split(data, draw.draw(split_points(len(data)))))


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

#: One client event per key of the transition table (BdatLast is BDAT n
#: LAST), plus every command type of smtpproto.testing.COMMAND_TYPES.
SAMPLES: dict[Key, Event] = {
    Ehlo: Ehlo(domain="client.example"),
    Helo: Helo(domain="client.example"),
    Lhlo: Lhlo(domain="client.example"),
    Mail: Mail(reverse_path="a@example.org"),
    Rcpt: Rcpt(forward_path="b@example.org"),
    Data: Data(),
    Rset: Rset(),
    Noop: Noop(text="ping"),
    Vrfy: Vrfy(text="postmaster"),
    Expn: Expn(text="staff"),
    Help: Help(topic="MAIL"),
    Quit: Quit(),
    StartTLS: StartTLS(),
    Auth: Auth(mechanism="PLAIN", initial_response=b"\0bob\0secret"),
    Bdat: Bdat(size=6),
    BdatLast: Bdat(size=6, last=True),
    Xclient: Xclient(attributes={"ADDR": "192.0.2.1"}),
    UnknownCommand: UnknownCommand(name="XFOO", argument="bar"),
    AuthResponse: AuthResponse(data=b"bob"),
    AuthCancel: AuthCancel(),
    EndOfMessage: EndOfMessage(),
}


def octets_for(size: int) -> bytes:
    """A BDAT chunk's octets: command lines that must never be executed
    (RFC 3030 §2: the octets are data, even when the chunk is refused); no
    dot and no bare CR or LF, so in DATA they are plain lines too."""
    data = (b"QUIT\r\n" * (size // 6 + 1))[:size]
    return data[:-1] + b"x" if data.endswith(b"\r") else data


def wire_of(event: Event) -> bytes:
    """What a client puts on the wire for *event* (a BDAT chunk with its
    octets; ``.`` CRLF ends DATA content, which starts after a CRLF)."""
    if isinstance(event, AuthResponse):
        return base64.b64encode(event.data) + b"\r\n"
    if isinstance(event, AuthCancel):
        return b"*\r\n"
    if isinstance(event, EndOfMessage):
        return b".\r\n"
    assert isinstance(event, Command)
    line = format_command(event)
    return line + octets_for(event.size) if isinstance(event, Bdat) else line


def key_for(event: Event) -> Key:
    return key_of(event) if isinstance(event, Command) else type(event)


#: Two servers: SMTP with STARTTLS and AUTH offered over cleartext to an
#: untrusted peer, and LMTP to a trusted peer (XCLIENT accepted).  Both
#: refuse messages over 64 KB, which is how a real BDAT chunk fails.
PROFILES = ["smtp", "lmtp"]


def profile_config(profile: str) -> ServerConfig:
    return ServerConfig(
        starttls=True,
        auth_mechanisms=("PLAIN", "LOGIN"),
        auth_plaintext=True,
        max_message_size=65536,
        lmtp=profile == "lmtp",
    )


def answer_all(server: ServerConnection, data: bytes) -> list[Event]:
    """Feed *data*, answering every event that awaits a reply with the
    default one, until the server needs data, pauses or closes."""
    if data:  # b"" would mean end of file
        server.receive_data(data)
    events: list[Event] = []
    while True:
        event = server.next_event()
        if isinstance(event, Event):
            events.append(event)
        while server.replies_due:
            server.send(server.default_reply())
        if not isinstance(event, Event) or isinstance(event, ConnectionClosed):
            return events


def server_in(profile: str, state: State) -> ServerConnection:
    """A server of *profile* driven into *state* by real input."""
    config = profile_config(profile)
    hello = SAMPLES[Lhlo if profile == "lmtp" else Ehlo]
    transaction = [hello, SAMPLES[Mail], SAMPLES[Rcpt]]
    scripts: dict[State, list[Event]] = {
        State.GREETED: [],
        State.READY: [hello],
        State.MAIL: transaction[:2],
        State.RCPT: transaction,
        State.DATA: [*transaction, Data()],
        State.BDAT: [*transaction, Bdat(size=3)],
        # RFC 3030 §2: a refused chunk (552: over the 64 KB limit) fails
        # the transaction.
        State.BDAT_FAILED: [*transaction, Bdat(size=65537)],
        # AUTH LOGIN gets 334 "Username:" (RFC 4954 §4).
        State.AUTH: [hello, Auth(mechanism="LOGIN")],
        # RFC 3207 §4: 220, and the transport switches to TLS.
        State.TLS: [hello, StartTLS()],
        State.CLOSED: [Quit()],
    }
    if state is State.ERROR:
        config = dataclasses.replace(config, max_receive_buffer=1024)
    server = ServerConnection(config, trusted=profile == "lmtp")
    if state is State.ERROR:
        server.send(server.greeting())
        server.receive_data(b"x" * 2000)
        with pytest.raises(RemoteProtocolError):
            server.next_event()
    elif state is State.REFUSED:
        server.send(Reply(code=554, text=("no service here",)))
    elif state is not State.CONNECTED:
        server.send(server.greeting())
        events = answer_all(server, b"".join(map(wire_of, scripts[state])))
        if state is State.BDAT_FAILED:
            rejected = events[-1]
            assert isinstance(rejected, CommandRejected) and rejected.reply.code == 552
    assert server.state is state
    return server


def sasl_decode(line: bytes) -> bytes | None:
    """RFC 4954 §4 base64, strictly (canonical, RFC 4648 §3.5); None when
    *line* is not base64."""
    if line == b"=":
        return b""  # as for an initial response
    try:
        data = base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if base64.b64encode(data) == line else None


def check_event_in_state(profile: str, state: State, event: Event) -> None:
    server = server_in(profile, state)
    wire = wire_of(event)
    key = key_for(event)
    if state is State.TLS:
        # Not one byte before the handshake (RFC 3207 §5, attack class 3).
        server.receive_data(wire[:1])
        with pytest.raises(RemoteProtocolError, match="cleartext data received after STARTTLS"):
            server.next_event()
        assert server.state is State.ERROR
        return
    server.receive_data(wire)
    if state is State.ERROR:
        with pytest.raises(LocalProtocolError, match="after the connection failed"):
            server.next_event()
        return
    got = server.next_event()
    if state is State.CONNECTED:
        assert got is PAUSED  # nothing is read before the greeting
        return
    if state is State.CLOSED:
        assert isinstance(got, ConnectionClosed)
        return
    if state is State.DATA:
        check_in_data(server, wire, key, got)
    elif state is State.AUTH:
        check_in_auth(server, wire, got)
    else:
        check_command(server, state, event, key, got)


def check_in_data(server: ServerConnection, wire: bytes, key: Key, got: object) -> None:
    """In DATA every line is content; only CRLF.CRLF ends it."""
    events = [got, *drain(server)] if isinstance(got, Event) else []
    if key is EndOfMessage:
        assert events == [EndOfMessage()]
    else:
        assert all(isinstance(e, MessageData) for e in events)
        server.receive_data(b"\r\n.\r\n")
        events += drain(server)
        assert events[-1] == EndOfMessage()
        content = b"".join(e.data for e in events[:-1] if isinstance(e, MessageData))
        assert content == wire + b"\r\n"
    server.send(server.default_reply())
    assert server.state is State.READY


def check_in_auth(server: ServerConnection, wire: bytes, got: object) -> None:
    """During a SASL exchange every line is a SASL response (RFC 4954 §4):
    "*" cancels, base64 is data, anything else is a 501; never a command."""
    line = wire.split(b"\r\n", 1)[0]
    data = sasl_decode(line)
    if line == b"*":
        assert got == AuthCancel()
    elif data is not None:
        assert got == AuthResponse(data=data)
    else:
        assert isinstance(got, CommandRejected) and got.command is None
        assert (got.reply.code, got.reply.enhanced) == (501, "5.5.2")
    reply = server.default_reply()
    server.send(reply)
    if isinstance(got, (AuthResponse, AuthCancel)):
        assert server.state is next_state(State.AUTH, type(got), reply.code)
    else:
        assert server.state is State.READY  # the exchange failed: 501 ends it


def check_command(server: ServerConnection, state: State, event: Event, key: Key, got: object) -> None:
    allowed = is_allowed(state, key)
    if not isinstance(event, Command):
        # A SASL line or a lone "." outside its state: an unknown or
        # malformed command, refused without a change of state.
        assert not allowed
        assert isinstance(got, (UnknownCommand, CommandRejected)), got
        if isinstance(got, CommandRejected):
            assert got.command is None or isinstance(got.command, UnknownCommand)
        reply = server.default_reply()
        assert reply.code >= 500
        server.send(reply)
        assert server.state is state
        assert server.next_event() is NEED_DATA
        return
    kind = type(event)
    if got == event:
        assert allowed or kind is UnknownCommand
    else:
        assert isinstance(got, CommandRejected), got
        assert got.command == event
        if allowed:
            # Allowed here but refused on its arguments or by policy (555,
            # 553, 550 XCLIENT from an untrusted peer, 500 EHLO to LMTP...).
            assert got.reply.code not in (503, 554)
        else:
            assert got.reply.code in (503, 554)
    if isinstance(event, Bdat) and got == event:
        # The chunk's octets, then its end, which awaits the reply.
        events = drain(server)
        assert merge_data(events[:-1]) == ([MessageData(data=octets_for(event.size))] if event.size else [])
        assert events[-1] == (EndOfMessage() if event.last else EndOfChunk())
    reply = server.default_reply()
    assert 200 <= reply.code < 600
    server.send(reply)
    if got == event and kind is not UnknownCommand:
        assert server.state is next_state(state, key, reply.code)
    elif isinstance(event, Bdat) and allowed:
        # RFC 3030 §2: a refused chunk fails the transaction.
        assert server.state is next_state(state, key, reply.code)
    else:
        assert server.state is state
    after = server.next_event()
    if server.state is State.CLOSED:
        assert isinstance(after, ConnectionClosed)
    elif server.state is State.TLS:
        assert after is PAUSED
    else:
        assert after is NEED_DATA  # a refused chunk's octets were read and dropped


@pytest.mark.parametrize("key", list(SAMPLES), ids=lambda key: key.__name__)
@pytest.mark.parametrize("state", list(TRANSITIONS), ids=lambda state: state.name)
@pytest.mark.parametrize("profile", PROFILES)
def test_every_state_and_command(profile: str, state: State, key: Key) -> None:
    check_event_in_state(profile, state, SAMPLES[key])


def test_every_state_and_command_type_is_covered() -> None:
    assert set(COMMAND_TYPES) <= set(SAMPLES)
    keys = {key for row in TRANSITIONS.values() for key in row} - {Reply}  # Reply: the greeting
    assert keys <= set(SAMPLES)
    for key, event in SAMPLES.items():
        assert key_for(event) is key
    # Every state is reachable by real input (server_in asserts it).
    for profile in PROFILES:
        for state in TRANSITIONS:
            assert server_in(profile, state).state is state


SASL_LINES: st.SearchStrategy[Event] = st.one_of(
    st.builds(AuthResponse, data=st.binary(max_size=40)),
    st.just(AuthCancel()),
    st.just(EndOfMessage()),
)


def smaller_chunks(command: Command) -> Command:
    # Keep BDAT octets within what a property can push through quickly.
    if isinstance(command, Bdat) and command.size > 70_000:
        return Bdat(size=65_537 + command.size % 4000, last=command.last)
    return command


@settings(deadline=None, max_examples=150)
@given(
    st.sampled_from(PROFILES),
    st.sampled_from(list(TRANSITIONS)),
    st.one_of(commands().map(smaller_chunks), SASL_LINES),
)
def test_every_state_and_generated_command(profile: str, state: State, event: Event) -> None:
    check_event_in_state(profile, state, event)


def test_refused_session_answers_unknown_commands_with_503() -> None:
    server = server_in("smtp", State.REFUSED)
    server.receive_data(b"XFOO bar\r\n")
    server.next_event()
    assert server.default_reply().code == 503


def test_tls_state_refuses_every_first_byte() -> None:
    # Attack class 3: whatever byte follows the 220 to STARTTLS before the
    # handshake, the session fails; nothing is ever read as a command.
    for byte in range(256):
        server = server_in("smtp", State.TLS)
        server.receive_data(bytes([byte]))
        with pytest.raises(RemoteProtocolError):
            server.next_event()
        assert server.state is State.ERROR
        with pytest.raises(LocalProtocolError):
            server.next_event()
    # A peer that hangs up instead has closed the session: no handshake.
    server = server_in("smtp", State.TLS)
    server.receive_data(b"")
    assert isinstance(server.next_event(), ConnectionClosed)
    with pytest.raises(LocalProtocolError):
        server.tls_established()
