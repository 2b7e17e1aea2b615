"""The server's fast paths and shared state (issue 7): the command fast path
gives what the full parser gives, offers are shared per configuration, the
per-session objects are slotted and lazy, and the flow keeps its
behaviour while using one generator frame.

The fast path is checked against the reference (``parse_command``) on
generated lines: whenever ``parse_common`` gives an event, it must be the
event the full parser gives for the same line and mode."""

from __future__ import annotations

import string

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flowpair import Link, Recorder
from helpers import Pair, drain, server_events
from smtpproto import (
    Auth,
    Bdat,
    CommandRejected,
    Data,
    Ehlo,
    EndOfChunk,
    LocalProtocolError,
    Mail,
    MessageData,
    Noop,
    PAUSED,
    Quit,
    Rcpt,
    Reply,
    Rset,
    ServerConfig,
    ServerConnection,
    State,
    StartTLS,
    Xclient,
)
from smtpproto._commands import parse_command, parse_common
from smtpproto._state import next_state
from smtpproto._syntax import GrammarError
from smtpproto.extensions import Extension
from smtpproto.flows import Handler, ServerSession, ServerTimeouts, Session

# -- the command fast path against the reference parser --------------------------

# Mostly well-formed parts (so the fast path is taken often), lengths around
# the limits (64 for a local part, 63 for a label), and characters around
# the edges of the fast path's grammar: what it leaves to the full parser
# (quotes, brackets, spaces, controls, UTF-8, the punctuation of a path).
_EDGE = string.ascii_letters[:6] + string.digits[:3] + ".-_+=!#~{}'" + '"[]<>@: \\\x00\x7fé'
_ATOM = st.from_regex(r"[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,12}", fullmatch=True)
# Dots where a Dot-string may not have them (first, last, doubled).
_BAD_DOTS = st.sampled_from([lambda x: x, lambda x: "." + x, lambda x: x + ".", lambda x: x.replace(".", "..")])
_LOCAL = st.one_of(
    st.lists(_ATOM, min_size=1, max_size=4).map(".".join),
    st.tuples(st.lists(_ATOM, min_size=1, max_size=4).map(".".join), _BAD_DOTS).map(lambda t: t[1](t[0])),
    st.integers(min_value=60, max_value=68).map(lambda n: "l" * n),
    st.text(alphabet=_EDGE, max_size=12),
    st.just("Postmaster"),
)
_LABEL = st.one_of(
    st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?", fullmatch=True),
    st.integers(min_value=60, max_value=66).map(lambda n: "d" * n),
    st.text(alphabet="ab9-", max_size=4),
)
_DOMAIN = st.one_of(
    st.lists(_LABEL, min_size=1, max_size=5).map(".".join),
    st.tuples(st.lists(_LABEL, min_size=1, max_size=5).map(".".join), _BAD_DOTS).map(lambda t: t[1](t[0])),
    st.text(alphabet=_EDGE, max_size=12),
    st.just("[192.0.2.1]"),
)


@st.composite
def command_lines(draw: st.DrawFn) -> bytes:
    verb = draw(
        st.sampled_from(
            ["MAIL FROM:", "mail from:", "Mail From: ", "RCPT TO:", "rcpt to:", "RCPT TO: ",
             "DATA", "data", "RSET", "QUIT", "NOOP", "HELP", "NOOP x", "DATA ", "EHLO", "MAIL", "XYZW"]
        )
    )
    if not verb.endswith((":", ": ")):
        return verb.encode()
    local, domain = draw(_LOCAL), draw(_DOMAIN)
    path = draw(
        st.sampled_from(
            ["<{l}@{d}>"] * 6 + ["<>", "<{l}>", "{l}@{d}", "<{l}@{d}", "<@r.example:{l}@{d}>"]
        )
    ).format(l=local, d=domain)
    params = draw(
        st.one_of(
            st.just(""),
            st.lists(
                st.sampled_from(["SIZE=10", "BODY=8BITMIME", "X", "A=b", "size=1", "=x", "A==", "é=1", ""]),
                max_size=3,
            ).map(lambda items: " " + " ".join(items)),
            st.text(alphabet=" =aZ9\t", max_size=6),
        )
    )
    return (verb + path + params).encode("utf-8")


def reference(line: bytes, lenient: bool) -> object:
    try:
        return parse_command(line, lenient=lenient)
    except GrammarError as exc:
        return exc


@settings(max_examples=1000, deadline=None)
@given(line=command_lines(), lenient=st.booleans())
@example(line=b"MAIL FROM:<a@b> ", lenient=False)
@example(line=b"MAIL FROM:<a@b>   ", lenient=True)
@example(line=b"MAIL FROM:<a@b>  SIZE=1", lenient=True)
@example(line=b"RCPT TO:<" + b"a" * 64 + b"@" + b"b" * 63 + b">", lenient=False)
def test_fast_path_gives_what_the_full_parser_gives(line: bytes, lenient: bool) -> None:
    fast = parse_common(line, lenient)
    if fast is not None:
        assert fast == reference(line, lenient)


@settings(max_examples=300, deadline=None)
@given(line=st.binary(max_size=40), lenient=st.booleans())
def test_fast_path_on_any_bytes(line: bytes, lenient: bool) -> None:
    fast = parse_common(line, lenient)
    if fast is not None:
        assert fast == reference(line, lenient)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"DATA", Data()),
        (b"rset", Rset()),
        (b"Quit", Quit()),
        (b"NOOP", Noop()),
        (b"MAIL FROM:<>", Mail(reverse_path="")),
        (b"mail from:<a.b@c-d.example> SIZE=10", Mail(reverse_path="a.b@c-d.example", parameters={"SIZE": "10"})),
        (b"RCPT TO:<x+y@z.example>", Rcpt(forward_path="x+y@z.example")),
    ],
)
def test_fast_path_takes_the_plain_forms(line: bytes, expected: object) -> None:
    assert parse_common(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        b"RCPT TO:<>",  # no null forward-path (§4.1.1.3): the full parser refuses it
        b"RCPT TO:<Postmaster>",  # legal, but the full parser's business
        b"MAIL FROM:<" + b"a" * 65 + b"@b.example>",  # local part over 64 octets
        b"MAIL FROM:<a@" + b"b" * 64 + b">",  # a label over 63 octets
        b"MAIL FROM:<a@" + b"b." * 32 + b"c>",  # a long domain: the full parser counts its labels
        b"MAIL FROM:<a@b>  SIZE=1",  # an empty parameter (strict)
        b"MAIL FROM:<a..b@c>",
        b"MAIL FROM:<.a@c>",
        b"MAIL FROM:<a.@c>",
        b"MAIL FROM:<a@-c>",
        b"MAIL FROM:<a@c->",
        b"MAIL FROM:<a@b..c>",
        b"MAIL FROM:<a@.c>",
        b"MAIL FROM:<a@c.>",
        b"MAIL FROM:<a@b.-c>",
        b'MAIL FROM:<"a b"@c>',
        b"MAIL FROM:<a@[192.0.2.1]>",
        b"MAIL FROM: <a@b>",
        b"DATA x",
        b"VRFY",
    ],
)
def test_fast_path_leaves_the_rest_to_the_full_parser(line: bytes) -> None:
    assert parse_common(line) is None


def test_lenient_parameters_collapse_as_in_the_full_parser() -> None:
    line = b"MAIL FROM:<a@b>  SIZE=1   BODY=7BIT  "
    assert parse_common(line, lenient=True) == parse_command(line, lenient=True)
    assert parse_common(b"MAIL FROM:<a@b>   ", lenient=True) == Mail(reverse_path="a@b")


def test_a_fast_line_over_its_verbs_limit_is_refused() -> None:
    # The fast parser takes any printable parameters; the MAIL line limit
    # (§4.5.3.1.4, plus what the extensions add) still holds.
    server = ServerConnection()
    limit = 512 + sum(ext.mail_line_extra for ext in server.extensions)
    line = b"MAIL FROM:<a@b.example> X-LONG=" + b"v" * limit + b"\r\n"
    events, _ = server_events(b"EHLO c.example\r\n" + line)
    assert isinstance(events[-1], CommandRejected)
    assert events[-1].reply.code == 500 and "MAIL line longer" in events[-1].reason


def test_fast_commands_are_still_judged() -> None:
    # Sequence (§4.1.4), the transaction limit, SMTPUTF8 (RFC 6531 §3.5),
    # too many recipients (§4.5.3.1.10) and an extension's MAIL policy.
    class NoBounces(Extension):
        keyword = "X-NO-BOUNCES"

        def check_mail(self, mail: Mail) -> Reply | None:
            return Reply(code=550, text=("no bounces",)) if not mail.reverse_path else None

    config = ServerConfig(max_transactions=1, max_recipients=100, extra_extensions=(NoBounces(),))
    data = (
        b"RCPT TO:<a@b>\r\nEHLO c.example\r\nMAIL FROM:<>\r\nMAIL FROM:<a@b>\r\n"
        b"RCPT TO:<p\xc3\xa9@b>\r\n" + b"".join(b"RCPT TO:<r%d@b>\r\n" % n for n in range(101))
        + b"DATA\r\n.\r\nMAIL FROM:<a@b>\r\n"
    )
    events, _ = server_events(data, config)
    replies = [e.reply.code if isinstance(e, CommandRejected) else type(e).__name__ for e in events]
    assert replies[:5] == [503, "Ehlo", 550, "Mail", 553]
    assert replies[5:105] == ["Rcpt"] * 100
    assert replies[105:] == [452, "Data", "EndOfMessage", 452]


# -- shared offers ------------------------------------------------------------------


def test_connections_of_one_configuration_share_their_offer() -> None:
    config = ServerConfig(starttls=True)
    first, second = ServerConnection(config), ServerConnection(config)
    assert first.extensions is second.extensions
    assert first.ehlo_reply() is second.ehlo_reply()
    assert ServerConnection(ServerConfig(starttls=True)).extensions is not first.extensions
    assert ServerConnection(config, trusted=True).extensions is not first.extensions
    # After STARTTLS the connection offers what a TLS connection offers.
    pair = Pair(config)
    pair.hello()
    pair.send(StartTLS())
    pair.server.tls_established()
    assert pair.server.extensions is ServerConnection(config, tls=True).extensions
    assert "STARTTLS" not in {ext.keyword for ext in pair.server.extensions}


def test_default_configuration_is_one_object() -> None:
    assert ServerConnection().config is ServerConnection().config
    assert ServerConnection().config == ServerConfig()


def test_ehlo_reply_with_a_greeting_keeps_the_extensions() -> None:
    server = ServerConnection(ServerConfig(hostname="mx.example"))
    plain, greeted = server.ehlo_reply(), server.ehlo_reply("hello there")
    assert greeted.text == ("mx.example hello there", *plain.text[1:])
    server.send(server.greeting())
    server.receive_data(b"EHLO c.example\r\n")
    drain(server)
    assert server.send(greeted).startswith(b"250-mx.example hello there\r\n")


def test_an_ehlo_reply_with_an_over_long_line_cannot_be_sent() -> None:
    class Wordy(Extension):
        keyword = "X-WORDY"

        def ehlo_line(self) -> str:
            return "X-WORDY " + "w" * 600

    server = ServerConnection(ServerConfig(extra_extensions=(Wordy(),)))
    server.send(server.greeting())
    server.receive_data(b"EHLO c.example\r\n")
    drain(server)
    with pytest.raises(LocalProtocolError, match="512"):
        server.send(server.default_reply())
    assert server.send(Reply(code=250, text=("ok",)))  # nothing changed; another reply goes


def test_a_handler_without_auth_shares_one_reduced_configuration() -> None:
    config = ServerConfig(auth_mechanisms=("PLAIN",), auth_plaintext=True, require_auth=True)
    first, second = ServerSession(Handler(), config), ServerSession(Handler(), config)
    assert first.conn.config is second.conn.config
    assert first.conn.config.auth_mechanisms == () and not first.conn.config.require_auth
    assert "AUTH" not in {ext.keyword for ext in first.conn.extensions}


# -- lazily made and slotted per-session objects -----------------------------------


def test_per_session_objects_have_no_instance_dictionary() -> None:
    session = ServerSession(Handler())
    for obj in (session, session.conn, session.session):
        assert not hasattr(obj, "__dict__"), type(obj).__name__


def test_session_data_is_made_on_first_use() -> None:
    session = Session(("192.0.2.1", 25))
    assert session == Session(peer=("192.0.2.1", 25), data={})
    session.data["seen"] = 1
    assert session.data == {"seen": 1} and session != Session(("192.0.2.1", 25))
    session.data = {"replaced": True}
    assert session.data == {"replaced": True}
    assert Session(data={"a": 1}).data == {"a": 1}
    assert repr(Session(tls=True)) == (
        "Session(peer=None, tls=True, auth_identity=None, auth_mechanism=None, "
        "ehlo_name=None, proxy=None, data={})"
    )
    assert Session() != "Session()"
    with pytest.raises(TypeError):
        hash(Session())


def test_timeouts_default_and_receive_actions() -> None:
    assert ServerSession(Handler()).timeouts == ServerTimeouts()
    link = Link(Recorder(), timeouts=ServerTimeouts(command=7, data=9))
    link.read()
    link.write(b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n")
    link.read()
    assert link.server_receive_timeouts[-1] == 9


# -- the core's reading modes ------------------------------------------------------


def test_an_empty_chunk_ends_without_input() -> None:
    # BDAT 0 (RFC 3030 §2): the chunk ends with no octets, so "no input" is
    # not "no event" for it.
    server = ServerConnection()
    server.send(server.greeting())
    server.receive_data(b"EHLO c.example\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n")
    for _ in range(3):
        drain(server)
        server.send(server.default_reply())
    server.receive_data(b"BDAT 0\r\n")
    assert drain(server) == [Bdat(size=0), EndOfChunk()]


def test_after_starttls_no_input_pauses() -> None:
    server = ServerConnection(ServerConfig(starttls=True))
    server.send(server.greeting())
    server.receive_data(b"EHLO c.example\r\n")
    drain(server)
    server.send(server.default_reply())
    server.receive_data(b"STARTTLS\r\n")
    assert drain(server) == [StartTLS()]
    server.send(server.default_reply())
    assert server.state is State.TLS and server.next_event() is PAUSED


def test_next_state_closes_on_421_and_refuses_a_stray_3xx() -> None:
    # The server core applies these rules inline; the helper keeps them too.
    assert next_state(State.READY, Mail, 421) is State.CLOSED
    assert next_state(State.READY, Mail, 250) is State.MAIL
    assert next_state(State.READY, Mail, 550) is State.READY
    with pytest.raises(ValueError, match="354"):
        next_state(State.READY, Mail, 354)


def test_xclient_refused_by_the_application_changes_nothing() -> None:
    server = ServerConnection(ServerConfig(auth_mechanisms=("PLAIN",), auth_plaintext=True), trusted=True)
    server.send(server.greeting())
    server.receive_data(b"EHLO c.example\r\nXCLIENT ADDR=192.0.2.9\r\n")
    assert drain(server) == [Ehlo(domain="c.example")]
    server.send(server.default_reply())
    assert drain(server) == [Xclient(attributes={"ADDR": "192.0.2.9"})]
    server.send(Reply(code=550, text=("not now",)))
    assert server.client_name == "c.example" and server.state is State.READY


def test_xclient_after_authentication_forgets_it() -> None:
    server = ServerConnection(ServerConfig(auth_mechanisms=("PLAIN",), auth_plaintext=True), trusted=True)
    server.send(server.greeting())
    server.receive_data(b"EHLO c.example\r\nAUTH PLAIN AHVzZXIAcGFzcw==\r\n")
    drain(server)
    server.send(server.default_reply())
    assert drain(server) == [Auth(mechanism="PLAIN", initial_response=b"\0user\0pass")]
    server.send(server.auth_reply(True))
    assert server.authenticated and server.auth_identity == "user"
    server.receive_data(b"XCLIENT ADDR=192.0.2.9\r\n")
    drain(server)
    server.send(server.default_reply())
    assert not server.authenticated and server.auth_identity is None
    assert server.state is State.GREETED and server.client_name is None


# -- the flow ---------------------------------------------------------------------


def test_replies_of_a_pipelined_batch_go_out_in_one_write() -> None:
    # RFC 2920 §3.2: replies gathered while input remains, written when it
    # is drained; three or more replies are joined as they come.
    link = Link(Recorder())
    link.read()
    link.write(b"EHLO c.example\r\n")
    link.read()
    writes = len(link.server_writes)
    link.write(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nRCPT TO:<e@d.example>\r\nNOOP\r\n")
    answer = link.read()
    assert len(link.server_writes) == writes + 1
    assert answer.count(b"\r\n") == 4 and answer.startswith(b"250 2.1.0") and answer.endswith(b"250 2.0.0 OK\r\n")


def test_the_flow_keeps_nothing_of_the_last_event_while_parked() -> None:
    # One frame while waiting for input: no generator per command, and the
    # last hook's Call and answer are not kept alive by it.
    session = ServerSession(Handler(), peer=("192.0.2.1", 1))
    flow = session.run()
    action = flow.send(None)
    while type(action).__name__ != "Receive":
        action = flow.send(None)
    action = flow.send(b"EHLO c.example\r\n")
    while type(action).__name__ != "Receive":
        action = flow.send(None)
    frame = flow.gi_frame
    assert frame is not None and flow.gi_yieldfrom is None
    assert frame.f_locals["call"] is None and frame.f_locals["answer"] is None
    assert session.session.ehlo_name == "c.example"


def test_message_data_reaches_a_streaming_handler_after_chunks_and_rset() -> None:
    class Streaming(Recorder):
        streaming = True

    link = Link(Streaming())
    link.read()
    for line in (b"EHLO c.example\r\n", b"MAIL FROM:<a@b.example>\r\n", b"RCPT TO:<c@d.example>\r\n", b"DATA\r\n"):
        link.write(line)
        link.read()
    link.write(b"one\r\n")
    link.write(b"two\r\n.\r\n")
    assert link.read().startswith(b"250")
    handler = link.handler
    assert isinstance(handler, Streaming)
    assert b"".join(args[0] for args in handler.args("message_data")) == b"one\r\ntwo\r\n"
