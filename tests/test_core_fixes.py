"""Regression tests for protocol bugs found in the sans-I/O core.

Each section names the bug, the input that showed it and the rule (RFC
section) it broke; the tests drive the cores through their public API.
"""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import Pair, drain, server_events
from smtpproto import (
    NEED_DATA,
    PAUSED,
    Auth,
    Bdat,
    ClientConfig,
    ClientConnection,
    CommandRejected,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfChunk,
    EndOfMessage,
    Event,
    Helo,
    LocalProtocolError,
    Mail,
    MessageData,
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
)
from smtpproto.extensions import Capabilities, Extension
from smtpproto.testing.strategies import chunkings

EHLO = b"EHLO client.example\r\n"
TRANSACTION = EHLO + b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n"


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """*data* cut at the sorted offsets *points*."""
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def serve(
    chunks: list[bytes], config: ServerConfig | None = None, *, tls: bool = False
) -> tuple[list[Event], bytes, RemoteProtocolError | None]:
    """Feed *chunks* one at a time to a greeted server that answers every
    command with its default reply.  Returns the events, the bytes written
    after the greeting (the last RemoteProtocolError's reply included) and
    that error, if one ended the session."""
    server = ServerConnection(config, tls=tls)
    server.send(server.greeting())
    events: list[Event] = []
    out = bytearray()
    try:
        for chunk in chunks:
            server.receive_data(chunk)
            while True:
                event = server.next_event()
                if event is NEED_DATA:
                    break
                assert event is not PAUSED  # every command is answered at once
                assert isinstance(event, Event)
                events.append(event)
                if isinstance(event, ConnectionClosed):
                    return events, bytes(out), None
                if not isinstance(event, (MessageData, Bdat)):
                    out += server.send(server.default_reply())
    except RemoteProtocolError as error:
        assert error.reply is not None
        out += server.send(error.reply)
        return events, bytes(out), error
    return events, bytes(out), None


def kinds(events: list[Event]) -> list[type[Event]]:
    return [type(event) for event in events]


def reply_lines(wire: bytes) -> list[bytes]:
    assert wire.endswith(b"\r\n")
    return wire.split(b"\r\n")[:-1]


def assert_fit_for_the_wire(wire: bytes) -> None:
    """RFC 5321 §4.2.1 (textstring = 1*(%d09 / %d32-126)) and §4.5.3.1.5
    (a reply line is at most 512 octets, CRLF included)."""
    for line in reply_lines(wire):
        assert len(line) + 2 <= 512, line
        assert all(octet == 9 or 32 <= octet <= 126 for octet in line), line


# =============================================================================
# 1. A bare LF split a command line (RFC 5321 §2.3.8; attack class 5)
# =============================================================================
# b"NOOP\nRCPT TO:<victim@example.net>\r\n" inside a transaction got
# "500 5.5.2 Syntax error" and then Rcpt(victim) and "250 2.1.5": two
# commands here, one line to a front end that splits at CRLF only.

SMUGGLED_RCPT = b"NOOP\nRCPT TO:<victim@example.net>\r\n"


@pytest.mark.parametrize("byte_at_a_time", [False, True])
def test_attack_5_bare_lf_in_a_command_line_is_one_bad_line(byte_at_a_time: bool) -> None:
    data = TRANSACTION + SMUGGLED_RCPT + b"RSET\r\n"
    chunks = [data[i : i + 1] for i in range(len(data))] if byte_at_a_time else [data]
    events, wire, error = serve(chunks)
    assert error is None
    assert kinds(events) == [Ehlo, Mail, Rcpt, CommandRejected, Rset]
    refusal = events[3]
    assert isinstance(refusal, CommandRejected)
    assert (refusal.reply.code, refusal.reply.enhanced, refusal.command) == (500, "5.5.2", None)
    assert not any(isinstance(e, Rcpt) and e.forward_path == "victim@example.net" for e in events)
    assert wire.endswith(b"250 2.1.5 Recipient OK\r\n500 5.5.2 Syntax error\r\n250 2.0.0 Reset OK\r\n")


def test_bare_lf_keeps_the_transaction_as_it_was() -> None:
    server = ServerConnection()
    server.send(server.greeting())
    server.receive_data(TRANSACTION + SMUGGLED_RCPT)
    for _ in range(4):
        event = server.next_event()
        server.send(server.default_reply())
    assert isinstance(event, CommandRejected)
    assert [r.forward_path for r in server.recipients] == ["b@example.org"]
    assert server.state is State.RCPT


def test_lenient_mode_still_ends_command_lines_at_a_bare_lf() -> None:
    # ServerConfig.lenient is documented to take "command lines ended by a
    # bare LF": there, the LF ends the NOOP.
    events, _, error = serve([TRANSACTION + SMUGGLED_RCPT], ServerConfig(lenient=True))
    assert error is None
    assert kinds(events) == [Ehlo, Mail, Rcpt, Noop, Rcpt]


def test_attack_5_bare_lf_in_a_sasl_response_is_one_bad_line() -> None:
    """RFC 4954 §4: one line answers a 334; a bare LF does not end it, so
    the MAIL after it is never a command."""
    config = ServerConfig(auth_mechanisms=("LOGIN",))
    data = EHLO + b"AUTH LOGIN\r\nYm9i\nMAIL FROM:<evil@example.org>\r\nNOOP\r\n"
    events, wire, error = serve([data], config, tls=True)
    assert error is None
    assert kinds(events) == [Ehlo, Auth, CommandRejected, Noop]
    assert b"\r\n500 5.5.2 Syntax error\r\n250 2.0.0 OK\r\n" in wire


def test_a_line_dropped_as_too_long_runs_to_its_crlf() -> None:
    # §4.5.3.1.4 and §2.3.8: the over-long line ends at its CRLF, so the
    # NOOP after a bare LF inside it is part of what is thrown away.
    for chunks in (
        [EHLO + b"NOOP " + b"x" * 13000 + b"\nNOOP\r\nRSET\r\n"],
        [EHLO + b"NOOP " + b"x" * 13000, b"\nNOOP\r\nRSET\r\n"],
    ):
        events, wire, _ = serve(chunks)
        assert kinds(events) == [Ehlo, CommandRejected, Rset]
        assert wire.endswith(b"500 5.5.2 Line too long\r\n250 2.0.0 Reset OK\r\n")
    # Below the bound the same line is refused for its bare LF, as a whole.
    events, wire, _ = serve([EHLO + b"NOOP " + b"x" * 600 + b"\nNOOP\r\nRSET\r\n"])
    assert kinds(events) == [Ehlo, CommandRejected, Rset]
    assert wire.endswith(b"500 5.5.2 Syntax error\r\n250 2.0.0 Reset OK\r\n")


LINE_PIECES = [b"NOOP", b"RSET", b"HELP", b"NOOP now", b"VRFY bob", b"XFOO bar", b""]


@settings(max_examples=60)
@given(
    st.lists(st.tuples(st.sampled_from(LINE_PIECES), st.sampled_from([b"\r\n", b"\n"])), min_size=1, max_size=8),
    st.data(),
)
def test_attack_5_server_commands_are_the_lines_a_crlf_splitter_sees(
    lines: list[tuple[bytes, bytes]], data: st.DataObject
) -> None:
    """Whatever the mix of CRLF and bare LF and however the input is cut,
    the server hands out one event per CRLF-terminated line, and a line
    holding a bare LF is refused as a whole."""
    stream = b"".join(line + end for line, end in lines) + b"\r\n"
    events, _, error = serve(data.draw(chunkings(EHLO + stream)))
    assert error is None
    seen = stream.split(b"\r\n")[:-1]
    assert len(events) == 1 + len(seen)
    for line, event in zip(seen, events[1:]):
        if b"\n" in line:
            assert isinstance(event, CommandRejected) and event.reply.code == 500
        elif line == b"":
            assert isinstance(event, CommandRejected) or isinstance(event, UnknownCommand)
        elif line.startswith(b"XFOO"):
            assert isinstance(event, UnknownCommand)
        else:
            assert not isinstance(event, CommandRejected), (line, event)


# =============================================================================
# 2. The octets of an over-long BDAT line were read as commands (RFC 3030 §2)
# =============================================================================
# After EHLO, MAIL and RCPT: 13000 "X" without a line end, then the bytes
# below.  The core answered "500 command line too long" and handed out Quit:
# it read the verb of the over-long BDAT line while the rest of the earlier
# over-long line was still being dropped, found nothing, and so never knew
# the line was a BDAT whose 13 octets follow it.

ATTACK_HEAD = b"X" * 13000
ATTACK_TAIL = b"tail\n" + b"BDAT 13 LAST" + b" " * 13000 + b"\r\n" + b"QUIT\r\nRSET\r\nx"
# The same with a CRLF after "tail": a BDAT line of its own in every mode.
ATTACK_TAIL_CRLF = ATTACK_TAIL.replace(b"tail\n", b"tail\r\n")


def test_attack_7_over_long_bdat_line_after_over_long_line_lenient() -> None:
    """With bare LF line ends allowed (lenient), "tail" ends the first
    line and the BDAT line is one of its own: it is recognised as BDAT and
    ends the session, since its octets cannot be found (RFC 3030 §2)."""
    events, wire, error = serve([TRANSACTION, ATTACK_HEAD, ATTACK_TAIL], ServerConfig(lenient=True))
    assert kinds(events) == [Ehlo, Mail, Rcpt, CommandRejected]
    assert error is not None and "BDAT" in str(error)
    assert wire.endswith(b"500 5.5.2 Line too long\r\n500 5.5.2 Line too long\r\n")


def test_attack_7_over_long_bdat_line_after_over_long_line_crlf() -> None:
    events, wire, error = serve([TRANSACTION, ATTACK_HEAD, ATTACK_TAIL_CRLF])
    assert kinds(events) == [Ehlo, Mail, Rcpt, CommandRejected]
    assert error is not None and "BDAT" in str(error)


def test_attack_7_over_long_bdat_line_strict_mode_is_part_of_the_first_line() -> None:
    """Without lenient mode the exact input holds no BDAT line at all: a
    bare LF ends no line (RFC 5321 §2.3.8), so "X..." through the CRLF
    after the spaces is one over-long line, refused once, and QUIT is the
    next line, as a peer splitting at CRLF sees it too."""
    events, wire, error = serve([TRANSACTION, ATTACK_HEAD, ATTACK_TAIL])
    assert error is None
    assert kinds(events) == [Ehlo, Mail, Rcpt, CommandRejected, Quit, ConnectionClosed]
    assert wire.endswith(b"250 2.1.5 Recipient OK\r\n500 5.5.2 Line too long\r\n221 2.0.0 Bye\r\n")


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_attack_7_over_long_bdat_line_whatever_the_split_points(data: st.DataObject) -> None:
    """The verdicts above hold however the bytes are cut into reads."""
    for tail, config, fatal in (
        (ATTACK_TAIL, ServerConfig(lenient=True), True),
        (ATTACK_TAIL_CRLF, None, True),
        (ATTACK_TAIL, None, False),
    ):
        stream = ATTACK_HEAD + tail
        points = data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=8, unique=True))
        events, _, error = serve([TRANSACTION, *cut(stream, sorted(points))], config)
        assert not any(isinstance(e, (Rset, Bdat, MessageData)) for e in events)
        refusals = [e for e in events if isinstance(e, CommandRejected)]
        assert [r.reply.code for r in refusals] == [500]
        if fatal:
            assert error is not None and Quit not in kinds(events)
        else:
            assert error is None and kinds(events)[-2:] == [Quit, ConnectionClosed]


# =============================================================================
# 3 and 4. Reply lines over 512 octets, and non-ASCII octets in reply text
# =============================================================================
# RFC 5321 §4.5.3.1.5: "The maximum total length of a reply line including
# the reply code and the <CRLF> is 512 octets."  §4.2.1: textstring =
# 1*(%d09 / %d32-126).  "EHLO -" + 500 "a" got a 544-octet 501 quoting the
# name; "\xff\xfe" got "invalid command verb 'ÿþ'" in UTF-8.

LONG_ARGUMENTS = [
    (b"EHLO -" + b"a" * 500, 501),
    (b"MAIL FROM:<> SIZE=" + b"9" * 490, 501),
    (b"MAIL FROM:<> BODY=" + b"X" * 490, 501),
    (b"MAIL FROM:<> RET=" + b"X" * 490, 501),
    (b"MAIL FROM:<> ENVID=" + b"+00" * 160, 501),
    (b"MAIL FROM:<> X" + b"A" * 490 + b"=1", 555),
    (b"MAIL FROM:<" + b"a" * 200 + b"@" + b"b" * 50 + b">", 501),
]
NON_ASCII = [
    (b"\xff\xfe", 500),
    ("\u00c4\u00d6".encode(), 500),
    (b"\x80", 500),
    ("MAIL FROM:<a@example.org> FOO\u00e9=bar".encode(), 501),
    ("MAIL FROM:<a@example.org> BODY=\u00e9".encode(), 501),
    ("MAIL FROM:<a@example.org> SIZE=\u00e9\u00e9".encode(), 501),
    ("MAIL FROM:<a@example.org> RET=\u00e9".encode(), 501),
    ("MAIL FROM:<\u00e9>".encode(), 501),
    ("RCPT TO:<a@\u00e9\u00e9.example> garbage\u00e9".encode(), 501),
    ("MAIL FROM:<a@[\u00e9]>".encode(), 501),
]


@pytest.mark.parametrize(("line", "code"), LONG_ARGUMENTS + NON_ASCII)
def test_attack_5_refusals_quote_the_peer_in_ascii_within_512_octets(line: bytes, code: int) -> None:
    events, wire = server_events(EHLO + line + b"\r\n")
    assert isinstance(events[-1], CommandRejected)
    last = reply_lines(wire)[-1]
    assert int(last[:3]) == code
    assert_fit_for_the_wire(wire)


def test_a_long_value_is_clipped_and_marked() -> None:
    _, wire = server_events(EHLO + b"MAIL FROM:<> BODY=" + b"X" * 490 + b"\r\n")
    last = reply_lines(wire)[-1].decode()
    assert last.startswith("501 5.5.4 BODY must be 7BIT, 8BITMIME or BINARYMIME, not 'XXX")
    assert last.endswith("'...")


def test_a_non_ascii_verb_is_shown_as_escapes() -> None:
    _, wire = server_events(EHLO + b"\xff\xfe\r\n")
    assert reply_lines(wire)[-1] == b"500 5.5.2 Syntax error: invalid command verb '\\xff\\xfe'"


def test_an_unreadable_bdat_size_gets_an_ascii_reply_before_the_close() -> None:
    events, wire, error = serve([TRANSACTION + "BDAT \u00e9\u00e9\r\n".encode()])
    assert error is not None
    assert_fit_for_the_wire(wire)
    assert reply_lines(wire)[-1].startswith(b"501 5.5.4 Syntax error: invalid BDAT chunk size '\\xe9")


@settings(max_examples=200)
@given(
    st.sampled_from([b"", b"MAIL FROM:<a@example.org> ", b"RCPT TO:", b"EHLO ", b"MAIL FROM:"]),
    st.binary(max_size=600).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
)
def test_attack_5_every_reply_to_any_line_is_ascii_and_short(prefix: bytes, junk: bytes) -> None:
    """Whatever one command line holds, the replies the core suggests for
    it fit RFC 5321 §4.2.1 and §4.5.3.1.5 (the session may end for a BDAT
    line it cannot read; its reply is checked too)."""
    _, wire, _ = serve([TRANSACTION + prefix + junk + b"\r\n"])
    assert_fit_for_the_wire(wire)


class Shouty(Extension):
    """An application's extension whose refusals quote the value whole,
    non-ASCII and all (ServerConfig.extra_extensions)."""

    keyword = "XSHOUT"
    mail_parameters = frozenset({"XSHOUT"})
    mail_line_extra = 500

    @classmethod
    def check_parameter(cls, name: str, value: str | None) -> None:
        from smtpproto._syntax import GrammarError

        raise GrammarError(f"no shouting: {value} {value}", 501, "5.5.4")


@pytest.mark.parametrize("value", ["\u00e9t\u00e9", "Y" * 490])
def test_an_extensions_own_message_is_made_fit_for_a_reply(value: str) -> None:
    config = ServerConfig(extra_extensions=(Shouty(),))
    line = f"MAIL FROM:<a@example.org> XSHOUT={value}\r\n".encode()
    _, wire = server_events(EHLO + line, config)
    last = reply_lines(wire)[-1]
    assert last.startswith(b"501 5.5.4 no shouting: ")
    assert_fit_for_the_wire(wire)
    if value.isascii():
        assert last.endswith(b"...") and len(last) + 2 <= 512
    else:
        assert last == b"501 5.5.4 no shouting: \\xe9t\\xe9 \\xe9t\\xe9"


def greeted_and_ready() -> ServerConnection:
    """A server that has sent its greeting and awaits the reply to NOOP."""
    server = ServerConnection()
    server.send(server.greeting())
    server.receive_data(b"NOOP\r\n")
    assert isinstance(server.next_event(), Noop)
    return server


def test_replies_with_lines_over_512_octets_are_refused_when_sent() -> None:
    server = greeted_and_ready()
    # "250 " + 506 octets + CRLF = 512: the longest line allowed.
    assert server.send(Reply(code=250, text=("a" * 506,))) == b"250 " + b"a" * 506 + b"\r\n"
    server.receive_data(b"NOOP\r\n")
    assert isinstance(server.next_event(), Noop)
    too_long = [
        (Reply(code=250, text=("a" * 507,)), "513 octets"),
        # The enhanced status code and its space count: "250 2.1.0 " is 10.
        (Reply(code=250, text=("a" * 501,), enhanced="2.1.0"), "513 octets"),
        # Octets, not characters: 254 two-octet characters are 508 octets.
        (Reply(code=250, text=("\u00e9" * 254,)), "514 octets"),
        (Reply(code=250, text=("ok", "b" * 600, "ok")), "606 octets"),
    ]
    for reply, size in too_long:
        with pytest.raises(LocalProtocolError, match=f"{size} .* limit of 512 octets"):
            server.send(reply)
        # Refused before anything changed: the NOOP still awaits its reply.
        assert isinstance(server.awaiting_reply, Noop) and server.state is State.GREETED
    # A multiline reply may be longer than 512 octets in all; its lines not.
    wire = server.send(Reply(code=250, text=("a" * 300, "b" * 300), enhanced="2.1.0"))
    assert wire == b"250-2.1.0 " + b"a" * 300 + b"\r\n250 2.1.0 " + b"b" * 300 + b"\r\n"


def test_the_limit_is_on_the_line_as_sent() -> None:
    # Without ENHANCEDSTATUSCODES the enhanced code is left out, and the
    # line with it.
    server = ServerConnection(ServerConfig(enhanced_status_codes=False))
    server.send(server.greeting())
    server.receive_data(b"NOOP\r\n")
    server.next_event()
    assert len(server.send(Reply(code=250, text=("a" * 506,), enhanced="2.0.0"))) == 512


def test_an_unsendable_reply_after_an_error_leaves_the_one_reply_to_send() -> None:
    server = ServerConnection()
    server.send(server.greeting())
    server.receive_data(EHLO + b"BDAT x\r\n")
    assert isinstance(server.next_event(), Ehlo)
    server.send(server.default_reply())
    with pytest.raises(RemoteProtocolError) as caught:
        server.next_event()
    with pytest.raises(LocalProtocolError, match="limit of 512"):
        server.send(Reply(code=421, text=("x" * 600,)))
    assert caught.value.reply is not None
    assert server.send(caught.value.reply).startswith(b"501 5.5.4 ")
    assert server.state is State.CLOSED


def test_reply_text_that_utf8_cannot_carry_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match="cannot be encoded as UTF-8"):
        Reply(code=250, text=("\ud800",))
    # Octets a client could not decode travel as surrogate escapes.
    assert Reply(code=250, text=("\udcff",)).text == ("\udcff",)


def test_a_long_reply_a_client_accepted_is_refused_if_relayed() -> None:
    """ClientConfig.max_reply_line takes lines past 512 octets (real
    servers send them), and the Reply stays buildable from its parts; a
    server relaying it must shorten it, not send it on."""
    client = ClientConnection()
    client.receive_data(b"220-short\r\n220-" + b"x" * 700 + b"\r\n220 end\r\n")
    reply = client.next_event()
    assert isinstance(reply, Reply)
    assert Reply(code=reply.code, text=reply.text, enhanced=reply.enhanced) == reply
    server = ServerConnection()
    with pytest.raises(LocalProtocolError, match="706 octets"):
        server.send(reply)  # as the greeting
    assert server.state is State.CONNECTED
    shortened = Reply(code=220, text=tuple(line[:100] for line in reply.text))
    assert server.send(shortened) == b"220-short\r\n220-" + b"x" * 100 + b"\r\n220 end\r\n"


def test_an_ehlo_reply_with_a_greeting_too_long_is_refused() -> None:
    server = ServerConnection()
    server.send(server.greeting())
    server.receive_data(EHLO)
    assert isinstance(server.next_event(), Ehlo)
    with pytest.raises(LocalProtocolError, match="limit of 512"):
        server.send(server.ehlo_reply("hello " * 100))
    wire = server.send(server.ehlo_reply("hello " * 10))
    assert_fit_for_the_wire(wire)


# =============================================================================
# 5. Domain labels over 63 octets were accepted (RFC 1035 §2.3.4)
# =============================================================================
# "MAIL FROM:<a@" + 64 "b" + ".example>" got 250.

LABEL_63 = "b" * 63
LABEL_64 = "b" * 64


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (f"MAIL FROM:<a@{LABEL_64}.example>", 501),
        (f"MAIL FROM:<a@example.{LABEL_64}>", 501),
        (f"MAIL FROM:<a@{LABEL_63}.example>", 250),
        (f"MAIL FROM:<@{LABEL_64}.example:a@example.org>", 501),  # source route
        # U-labels count their A-label: "xn--9ca" and 56 "a" hold 57 "é".
        ("MAIL FROM:<a@" + "\u00e9" * 57 + ".example> SMTPUTF8", 250),
        ("MAIL FROM:<a@" + "\u00e9" * 58 + ".example> SMTPUTF8", 501),
    ],
)
def test_attack_5_mail_domains_with_labels_over_63_octets_are_refused(line: str, code: int) -> None:
    events, wire = server_events(EHLO + line.encode() + b"\r\n")
    assert replies_code(wire) == code
    if code == 501:
        assert isinstance(events[-1], CommandRejected)
        assert "longer than 63 octets" in events[-1].reason or "source route" in events[-1].reason


def replies_code(wire: bytes) -> int:
    return int(reply_lines(wire)[-1][:3])


def test_ehlo_and_rcpt_domains_with_long_labels_are_refused() -> None:
    _, wire = server_events(f"EHLO {LABEL_64}.example\r\n".encode())
    assert replies_code(wire) == 501
    _, wire = server_events(f"EHLO {LABEL_63}.example\r\n".encode())
    assert replies_code(wire) == 250
    _, wire = server_events(TRANSACTION + f"RCPT TO:<c@{LABEL_64}>\r\n".encode())
    assert replies_code(wire) == 501


@pytest.mark.parametrize(
    "build",
    [
        lambda: Ehlo(domain=f"{LABEL_64}.example"),
        lambda: Helo(domain=f"mail.{LABEL_64}"),
        lambda: Mail(reverse_path=f"a@{LABEL_64}.example"),
        lambda: Rcpt(forward_path=f"a@{LABEL_64}.example"),
        lambda: Rcpt(forward_path="a@" + "\u00fc" * 60 + ".example"),
    ],
)
def test_events_refuse_labels_over_63_octets(build: object) -> None:
    assert callable(build)
    with pytest.raises(LocalProtocolError, match="domain label .* longer than 63 octets"):
        build()


def test_events_and_config_take_labels_of_63_octets() -> None:
    assert Ehlo(domain=f"{LABEL_63}.example").domain == f"{LABEL_63}.example"
    assert Mail(reverse_path="a@b\u00fccher.example").reverse_path == "a@b\u00fccher.example"
    with pytest.raises(ValueError, match="longer than 63 octets"):
        ServerConfig(hostname=f"{LABEL_64}.example")


# =============================================================================
# 6. Client: the 1000-octet line limit was not enforced over BDAT
# =============================================================================
# RFC 3030 §3: only BODY=BINARYMIME lifts the line limit of RFC 5321
# §4.5.3.1.6; a 1500-octet line over BDAT with BODY=8BITMIME went out.

LONG_LINE = b"x" * 1498 + b"\r\n"


def in_transaction(body: str | None = None, config: ClientConfig | None = None) -> Pair:
    pair = Pair(client=ClientConnection(config))
    pair.hello()
    params = {} if body is None else {"BODY": body}
    pair.send(Mail(reverse_path="a@example.org", parameters=params), Rcpt(forward_path="b@example.org"))
    assert pair.client.state is State.RCPT
    return pair


def data_error(content: bytes) -> str:
    pair = in_transaction("8BITMIME")
    pair.send(Data())
    with pytest.raises(LocalProtocolError) as caught:
        pair.client.send(MessageData(data=content))
    return str(caught.value)


@pytest.mark.parametrize("body", [None, "7BIT", "8BITMIME"])
def test_bdat_lines_over_1000_octets_are_refused_as_over_data(body: str | None) -> None:
    pair = in_transaction(body)
    client = pair.client
    client.send(Bdat(size=len(LONG_LINE), last=True))
    with pytest.raises(LocalProtocolError) as caught:
        client.send(MessageData(data=LONG_LINE))
    assert str(caught.value) == data_error(LONG_LINE)
    assert "1500 octets exceeds the limit of 1000" in str(caught.value)
    # Refused before a byte went out: the chunk still wants all its octets.
    with pytest.raises(LocalProtocolError, match=f"{len(LONG_LINE)} octets of the BDAT chunk missing"):
        client.send(EndOfMessage())


def test_bdat_binarymime_lines_may_be_of_any_length() -> None:
    pair = in_transaction("BINARYMIME")
    pair.send(Bdat(size=len(LONG_LINE), last=True), MessageData(data=LONG_LINE), EndOfMessage())
    assert pair.client_events[-1] == Reply(code=250, text=("Message accepted for delivery",), enhanced="2.0.0")
    # The next transaction, not BINARYMIME, has the limit again.
    pair.send(Mail(reverse_path="a@example.org"), Rcpt(forward_path="b@example.org"))
    pair.client.send(Bdat(size=len(LONG_LINE)))
    with pytest.raises(LocalProtocolError, match="exceeds the limit of 1000"):
        pair.client.send(MessageData(data=LONG_LINE))


def test_bdat_line_limit_can_be_lifted_like_data() -> None:
    pair = in_transaction("8BITMIME", ClientConfig(max_line_length=None))
    pair.send(Bdat(size=len(LONG_LINE), last=True), MessageData(data=LONG_LINE), EndOfMessage())
    assert pair.client.state is State.READY


def test_bdat_line_limit_follows_lines_across_chunks_and_commands() -> None:
    pair = in_transaction("8BITMIME")
    client = pair.client
    # 998 octets and CRLF: exactly 1000, split between the CR and the LF,
    # and across two BDAT commands.
    first = b"y" * 998 + b"\r"
    client.send(Bdat(size=len(first)))
    client.send(MessageData(data=b"y" * 500))
    client.send(MessageData(data=b"y" * 498 + b"\r"))
    client.send(EndOfChunk())
    client.send(Bdat(size=1002))
    client.send(MessageData(data=b"\n"))
    # The next line: 999 octets and a CRLF to come make 1001.
    with pytest.raises(LocalProtocolError, match="1001 octets exceeds"):
        client.send(MessageData(data=b"z" * 999))
    client.send(MessageData(data=b"z" * 998 + b"\r\n" + b"."))
    client.send(EndOfChunk())


def crlf_bodies() -> st.SearchStrategy[bytes]:
    """Bodies of CRLF lines (the last may lack it) of 0 to 1100 octets."""
    line = st.tuples(st.integers(0, 1100), st.sampled_from([b"a", b"\xff", b" "]))
    lines = st.lists(line.map(lambda t: t[1] * t[0]), max_size=4)
    return st.tuples(lines, st.booleans()).map(
        lambda t: b"\r\n".join(t[0]) + (b"\r\n" if t[1] and t[0] else b"")
    )


@settings(max_examples=80, deadline=None)
@given(crlf_bodies(), st.data())
def test_bdat_line_limit_is_the_data_limit_whatever_the_chunking(body: bytes, data: st.DataObject) -> None:
    """Over BDAT a body is refused exactly when a line, CRLF included (the
    last line counted with the CRLF it will need), is over 1000 octets,
    however it is cut into MessageData events."""
    lines = body.split(b"\r\n")
    too_long = any(len(line) + 2 > 1000 for line in lines)
    pair = in_transaction("8BITMIME")
    pair.client.send(Bdat(size=len(body), last=True))
    refused = False
    for chunk in data.draw(chunkings(body)):
        try:
            pair.client.send(MessageData(data=chunk))
        except LocalProtocolError:
            refused = True
            break
    assert refused is too_long


# =============================================================================
# 7. State hashing and LIMITS read once
# =============================================================================


def test_states_are_equal_and_hash_alike_however_obtained() -> None:
    for state in State:
        again = State(state.value)
        copied = pickle.loads(pickle.dumps(state))
        assert again is state and copied is state
        assert hash(again) == hash(state) == hash(copied)
    assert {State.READY: 1}[State("READY")] == 1
    assert len({*State, *State}) == len(State)


def test_limits_are_read_once_and_cannot_be_changed() -> None:
    reply = Reply(code=250, text=("mx.example", "LIMITS RCPTMAX=5 MAILMAX=2"))
    caps = Capabilities.from_reply(reply)
    assert caps.limits == {"RCPTMAX": 5, "MAILMAX": 2}
    assert caps.limits is caps.limits
    with pytest.raises(TypeError):
        caps.limits["RCPTMAX"] = 100  # type: ignore[index]
    assert caps == Capabilities.from_reply(reply)


def test_limits_ignore_digits_that_are_not_ascii() -> None:
    # "²".isdigit() is true but int("²") raises: such a value used to
    # crash the client reading the EHLO reply.
    caps = Capabilities.from_reply(Reply(code=250, text=("mx.example", "LIMITS RCPTMAX=\u00b2 MAILMAX=3")))
    assert caps.limits == {"MAILMAX": 3}


def test_client_honours_limits_read_once() -> None:
    pair = Pair(server_config=ServerConfig(max_transactions=1))
    pair.hello()
    assert pair.client.capabilities.limits["MAILMAX"] == 1
    pair.send(Mail(reverse_path="a@example.org"), Rset())
    with pytest.raises(LocalProtocolError, match="MAILMAX=1"):
        pair.client.send(Mail(reverse_path="a@example.org"))
    assert drain(pair.client) == []
