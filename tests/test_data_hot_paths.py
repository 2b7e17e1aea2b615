"""The hot paths around a mail transaction, held to the behaviour of the
straightforward code they replaced: replies parsed once per connection and
formatted once per program (``_replies``), events built without
``dataclasses.fields`` (``_events``), the client's projected state kept up
to date instead of recomputed (``_client``), its LIMITS read once per
capabilities, and the path splitter's shortcut (``_commands``).

Each cache is tested where it could go stale: a cached line inside a
multiline reply, the projection across refused commands, LMTP's repeated
end-of-data replies and the ERROR state, and LIMITS after a second EHLO.
"""

from __future__ import annotations

import array
from collections.abc import Callable
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpproto import (
    Bdat,
    ClientConnection,
    ClientConfig,
    Command,
    CommandRejected,
    Data,
    Ehlo,
    EndOfChunk,
    EndOfMessage,
    Event,
    LocalProtocolError,
    Lhlo,
    Mail,
    MessageData,
    Rcpt,
    RemoteProtocolError,
    Reply,
    Rset,
    ServerConfig,
    ServerConnection,
    State,
)
from smtpproto import _replies as R
from smtpproto._commands import _split_path
from smtpproto._replies import ReplyParser, format_reply
from smtpproto._state import Key, expected_digit, is_allowed, key_of, next_state
from smtpproto._syntax import GrammarError

from helpers import Pair, Responder, drain

# -- replies ------------------------------------------------------------------


class TestReplyParserRemembers:
    def test_the_same_line_gives_an_equal_reply(self) -> None:
        parser = ReplyParser(10)
        first = parser.feed(b"250 2.1.0 Sender OK")
        again = parser.feed(b"250 2.1.0 Sender OK")
        assert first == again == Reply(code=250, enhanced="2.1.0", text=("Sender OK",))

    def test_a_bytearray_line(self) -> None:
        parser = ReplyParser(10)
        expected = Reply(code=250, text=("OK",))
        assert parser.feed(bytearray(b"250 OK")) == parser.feed(b"250 OK") == expected

    def test_a_known_line_ending_a_multiline_reply_is_not_taken_alone(self) -> None:
        parser = ReplyParser(10)
        assert parser.feed(b"250 OK") == Reply(code=250, text=("OK",))
        assert parser.feed(b"250-first") is None
        assert parser.feed(b"250 OK") == Reply(code=250, text=("first", "OK"))
        assert parser.feed(b"250 OK") == Reply(code=250, text=("OK",))

    def test_a_known_line_inside_another_code_is_still_refused(self) -> None:
        parser = ReplyParser(10)
        parser.feed(b"250 OK")
        parser.feed(b"451-wait")
        with pytest.raises(RemoteProtocolError, match="changed from 451 to 250"):
            parser.feed(b"250 OK")

    def test_a_bad_line_is_refused_every_time(self) -> None:
        parser = ReplyParser(10)
        for _ in range(2):
            with pytest.raises(RemoteProtocolError, match="malformed"):
                parser.feed(b"2x0 nope")

    def test_memory_is_bounded(self) -> None:
        # Attack class 7: a server sending ever new lines.
        parser = ReplyParser(10)
        for index in range(1000):
            assert parser.feed(b"250 line %d" % index) == Reply(code=250, text=(f"line {index}",))
        assert len(parser._seen) <= R._SEEN_LIMIT


CATALOGUE = [value for value in vars(R).values() if isinstance(value, Reply)]


class TestPreformattedReplies:
    def test_the_catalogue_is_preformatted(self) -> None:
        assert len(CATALOGUE) > 20
        assert all(id(reply) in R._WIRE for reply in CATALOGUE)

    @pytest.mark.parametrize("enhanced_codes", [True, False])
    @pytest.mark.parametrize("reply", CATALOGUE, ids=lambda reply: f"{reply.code}-{reply.text[0]}")
    def test_same_bytes_as_an_equal_reply_built_anew(
        self, reply: Reply, enhanced_codes: bool
    ) -> None:
        fresh = Reply(code=reply.code, text=reply.text, enhanced=reply.enhanced)
        assert fresh is not reply and id(fresh) not in R._WIRE
        assert format_reply(reply, enhanced_codes=enhanced_codes) == format_reply(
            fresh, enhanced_codes=enhanced_codes
        )

    def test_what_the_server_sends(self) -> None:
        for enhanced in (True, False):
            server = ServerConnection(ServerConfig(enhanced_status_codes=enhanced))
            server.send(server.greeting())
            server.receive_data(b"NOOP\r\n")
            drain(server)
            expected = b"250 2.0.0 OK\r\n" if enhanced else b"250 OK\r\n"
            assert server.send(server.default_reply()) == expected


# -- events --------------------------------------------------------------------


class TestTrustedEvents:
    def test_defaults_and_default_factories(self) -> None:
        mail = Mail._trusted(reverse_path="a@b.example")
        assert mail == Mail(reverse_path="a@b.example")
        assert dict(mail.parameters) == {}
        reply = Reply._trusted(code=250)
        assert reply == Reply(code=250)

    def test_given_values_win(self) -> None:
        rcpt = Rcpt._trusted(forward_path="c@d.example", parameters={"NOTIFY": "NEVER"})
        assert rcpt == Rcpt(forward_path="c@d.example", parameters={"NOTIFY": "NEVER"})


# -- the client's projected state -----------------------------------------------


def fresh_projection(client: ClientConnection) -> State:
    """projected_state() worked out from scratch, from public attributes."""
    state = client.state
    keys: list[Key] = [Reply] if state is State.CONNECTED else []  # the greeting
    keys += [key_of(item) for item in client.pending]
    for key in keys:
        if is_allowed(state, key):
            state = next_state(state, key, expected_digit(key) * 100)
    return state


def check(client: ClientConnection) -> None:
    assert client.projected_state() is fresh_projection(client)


def answer(server: ServerConnection, refuse: bool) -> bytes:
    """The server's reply to the event awaiting one, or a refusal."""
    event = server.awaiting_reply
    if refuse and isinstance(event, Mail):
        return server.send(Reply(code=451, text=("try later",)))
    if refuse and isinstance(event, (Rcpt, EndOfMessage)):
        return server.send(Reply(code=550, text=("no",)))
    return server.send(server.default_reply())


@settings(deadline=None, max_examples=150)
@given(
    st.lists(
        st.tuples(st.integers(1, 4), st.lists(st.booleans(), min_size=7, max_size=7)),
        min_size=1,
        max_size=5,
    )
)
def test_projection_through_pipelined_transactions(
    transactions: list[tuple[int, list[bool]]]
) -> None:
    """After every command sent and every reply read (one at a time), the
    kept projection equals a fresh walk of the queue."""
    server = ServerConnection(ServerConfig(max_errors=1000))
    client = ClientConnection()
    check(client)
    client.receive_data(server.send(server.greeting()))
    client.next_event()
    check(client)
    server.receive_data(client.send(Ehlo(domain="client.example")))
    check(client)
    drain(server)
    client.receive_data(server.send(server.default_reply()))
    client.next_event()
    for recipients, refusals in transactions:
        batch: list[Command] = [Mail(reverse_path="a@b.example")]
        batch += [Rcpt(forward_path=f"r{index}@b.example") for index in range(recipients)]
        batch.append(Data())
        for command in batch:
            server.receive_data(client.send(command))
            check(client)
        answers = iter(refusals)
        while client.pending:
            events = drain(server)
            assert events, "the server owes a reply"
            refuse = next(answers, False) and not isinstance(events[-1], CommandRejected)
            client.receive_data(answer(server, refuse))
            assert isinstance(client.next_event(), Reply)
            check(client)
            if client.state is State.DATA:
                server.receive_data(client.send(MessageData(data=b"hi\r\n")))
                server.receive_data(client.send(EndOfMessage()))
                check(client)
        if client.state is not State.READY:
            server.receive_data(client.send(Rset()))
            check(client)
            drain(server)
            client.receive_data(server.send(server.default_reply()))
            client.next_event()
            check(client)
        assert client.state is State.READY


def test_projection_while_lmtp_replies_come_one_by_one() -> None:
    # RFC 2033 §4.2: the end of data stays outstanding until every accepted
    # recipient got its reply; the projection must not run ahead of that.
    pair = Pair(ServerConfig(lmtp=True), client=ClientConnection(ClientConfig(lmtp=True)))
    pair.greet()
    pair.send(Lhlo(domain="client.example"))
    pair.send(Mail(reverse_path="a@b.example"), Rcpt(forward_path="c@b.example"),
              Rcpt(forward_path="d@b.example"), Data())
    client = pair.client
    assert client.state is State.DATA
    server = pair.server
    server.receive_data(client.send(MessageData(data=b"hi\r\n")) + client.send(EndOfMessage()))
    drain(server)
    first = server.send(server.default_reply())
    second = server.send(server.default_reply())
    check(client)
    client.receive_data(first)
    assert isinstance(client.next_event(), Reply)
    assert client.pending == (EndOfMessage(),)
    check(client)
    assert client.projected_state() is State.READY
    client.receive_data(second)
    assert isinstance(client.next_event(), Reply)
    check(client)
    assert client.projected_state() is State.READY


def test_projection_after_the_connection_failed() -> None:
    pair = Pair()
    pair.hello()
    client = pair.client
    client.send(Mail(reverse_path="a@b.example"))
    assert client.projected_state() is State.MAIL
    client.receive_data(b"garbage\r\n")
    with pytest.raises(RemoteProtocolError):
        client.next_event()
    assert client.state is State.ERROR
    check(client)


# -- LIMITS --------------------------------------------------------------------


def limits_responder(rcptmax: list[int]) -> Responder:
    def respond(server: ServerConnection, event: Event) -> Reply | None:
        if isinstance(event, Ehlo):
            lines = ("server.example", "PIPELINING", f"LIMITS RCPTMAX={rcptmax[0]}")
            return Reply(code=250, text=lines)
        if isinstance(event, MessageData):
            return None
        return server.default_reply()

    return respond


def test_limits_follow_a_new_ehlo_reply() -> None:
    rcptmax = [2]
    pair = Pair(responder=limits_responder(rcptmax))
    pair.hello()
    client = pair.client
    pair.send(Mail(reverse_path="a@b.example"), Rcpt(forward_path="c@b.example"),
              Rcpt(forward_path="d@b.example"))
    with pytest.raises(LocalProtocolError, match="RCPTMAX=2"):
        client.send(Rcpt(forward_path="e@b.example"))
    # A second EHLO: new capabilities, new limits.
    rcptmax[0] = 3
    pair.send(Ehlo(domain="client.example"))
    assert client.capabilities.limits == {"RCPTMAX": 3}
    recipients = [Rcpt(forward_path=f"r{index}@b.example") for index in range(3)]
    pair.send(Mail(reverse_path="a@b.example"), *recipients)
    with pytest.raises(LocalProtocolError, match="RCPTMAX=3"):
        client.send(Rcpt(forward_path="e@b.example"))


# -- the path splitter ---------------------------------------------------------


def reference_split_path(text: str) -> tuple[str, str]:
    """The character walk, for every path (quotes and literals included)."""
    if not text.startswith("<"):
        path, _, rest = text.partition(" ")
        return path, rest
    quoted = escaped = literal = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif literal:
            literal = char != "]"
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "[" and not quoted:
            literal = True
        elif char == ">" and not quoted:
            rest = text[index + 1 :]
            if rest and not rest.startswith(" "):
                raise GrammarError(f"garbage after path: {rest!r}", 501, "5.5.4")
            return text[: index + 1], rest[1:]
    raise GrammarError("path is not closed with '>'", 501, "5.5.4")


def outcome(split: Callable[[str], tuple[str, str]], text: str) -> object:
    try:
        return split(text)
    except GrammarError as exc:
        return ("error", str(exc), exc.code, exc.enhanced)


@pytest.mark.parametrize(
    "text",
    [
        "<a@b.example>",
        "<a@b.example> SIZE=10 BODY=8BITMIME",
        "<a@b.example",  # not closed
        "<a@b.example>x",  # garbage after the path
        "<a@b.example>> X",
        "<>",
        "<> SIZE=1",
        '<"a>b"@c.example> X=1',  # quoted: the walk
        "<a@[1.2.3.4]> X=1",  # a literal: the walk
        "<a@[tag:x>y]>",
        "a@b.example SIZE=1",  # no angle brackets (lenient mode)
    ],
)
def test_split_path_cases(text: str) -> None:
    assert outcome(_split_path, text) == outcome(reference_split_path, text)


@settings(max_examples=300)
@given(st.text(alphabet='<>"[]\\ @a=.', max_size=16).map(lambda text: "<" + text))
def test_split_path_agrees_with_the_walk(text: str) -> None:
    assert outcome(_split_path, text) == outcome(reference_split_path, text)


def test_commands_in_a_batch_still_arrive_equal() -> None:
    # The end-to-end check: what the client sends comes out of the server
    # equal, through every path above.
    pair = Pair()
    pair.hello()
    sent: list[Command] = [
        Mail(reverse_path="a@b.example", parameters={"BODY": "8BITMIME"}),
        Rcpt(forward_path='"x>y"@b.example'),
        Rcpt(forward_path="c@[192.0.2.1]"),
        Data(),
    ]
    pair.send(*sent)
    received = [event for event in pair.server_events if isinstance(event, Command)]
    assert received[-4:] == sent


# -- content as any buffer ---------------------------------------------------------


def test_bdat_counts_octets_of_a_wide_memoryview() -> None:
    # A memoryview of 16-bit items has half as many items as octets; BDAT
    # (RFC 3030 §2) counts octets.  Counting items let a client send more
    # octets than the chunk declared, which the server would then read as
    # commands.
    pair = Pair(ServerConfig(chunking=True))
    pair.hello()
    pair.send(Mail(reverse_path="a@b.example"), Rcpt(forward_path="c@b.example"))
    client = pair.client
    wide = memoryview(array.array("H", [0x4141] * 5))
    assert len(wide) == 5 and wide.nbytes == 10
    client.send(Bdat(size=10))
    assert client.send(MessageData(data=cast(bytes, wide))) == b"A" * 10
    with pytest.raises(LocalProtocolError, match="only 0 left"):
        client.send(MessageData(data=b"x"))
    assert client.send(EndOfChunk()) == b""


def test_data_accepts_any_buffer() -> None:
    pair = Pair()
    pair.hello()
    pair.send(Mail(reverse_path="a@b.example"), Rcpt(forward_path="c@b.example"), Data())
    client = pair.client
    pieces = [bytearray(b".a\r"), memoryview(b"\n.b"), memoryview(array.array("H", [0x4242]))]
    wire = b"".join(client.send(MessageData(data=cast(bytes, piece))) for piece in pieces)
    assert wire + client.send(EndOfMessage()) == b"..a\r\n..bBB\r\n.\r\n"
