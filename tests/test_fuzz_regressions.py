"""Regression tests for what the stateful tests and the fuzzers found.

Theory of operation
-------------------
Each finding of ``tests/test_stateful.py`` or of a ``fuzz/`` target is
replayed here as its minimal input, through the public API only, so that
it stays fixed whatever becomes of the generators that found it.  A
finding that is not fixed yet is marked ``xfail(strict=True)`` with the
reason: the test fails loudly (XPASS) the day the core is fixed, and the
marker is then removed.  ``docs/fuzzing.rst`` says how to turn a crash into
a test here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from smtpproto import (
    NEED_DATA,
    PAUSED,
    Bdat,
    ClientConnection,
    CommandRejected,
    ConnectionClosed,
    Ehlo,
    EndOfMessage,
    Event,
    LocalProtocolError,
    MessageData,
    RemoteProtocolError,
    Reply,
    ServerConfig,
    ServerConnection,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fuzz"))

import client_core  # noqa: E402
import server_core  # noqa: E402


def serve(server: ServerConnection, *pieces: bytes) -> list[Event]:
    """Feed *pieces* as separate ``receive_data()`` calls, reading and
    answering (with the core's default reply) after each."""
    events: list[Event] = []
    for piece in pieces:
        server.receive_data(piece)
        while True:
            event = server.next_event()
            if event is NEED_DATA:
                break
            if event is PAUSED:
                server.send(server.default_reply())
                continue
            assert isinstance(event, Event)
            events.append(event)
            if isinstance(event, ConnectionClosed):
                return events
    return events


def ready_server(config: ServerConfig) -> ServerConnection:
    server = ServerConnection(config)
    server.send(server.greeting())
    serve(server, b"EHLO client.example\r\n")
    return server


_TRANSACTION = b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
_CHUNK = b"x" * 2000


@pytest.mark.parametrize("pipelined", [False, True], ids=["after RCPT", "with MAIL and RCPT"])
def test_pipelined_bdat_chunk_over_the_input_bound_is_not_a_flood(pipelined: bool) -> None:
    # RFC 3030 §2: the chunk's octets follow the BDAT line at once, and BDAT
    # may be pipelined (§4.2); the design drains message content as it comes
    # and bounds only unread *commands* (PROTOCOL.md attack class 7).  The
    # same bytes cut after the BDAT line are delivered; in one read (here,
    # 2000 octets against max_receive_buffer=1024; with the defaults, any
    # read of over 256 KiB) they were a 421.
    config = ServerConfig(max_receive_buffer=1024)
    bdat = b"BDAT 2000 LAST\r\n"
    split = ready_server(config)
    serve(split, _TRANSACTION, bdat, _CHUNK)
    whole = ready_server(config)
    if pipelined:
        events = serve(whole, _TRANSACTION + bdat + _CHUNK)
    else:
        events = serve(whole, _TRANSACTION) + serve(whole, bdat + _CHUNK)
    assert Bdat(size=2000, last=True) in events
    content = b"".join(event.data for event in events if isinstance(event, MessageData))
    assert content == _CHUNK
    assert isinstance(events[-1], EndOfMessage)
    assert whole.state is split.state


@pytest.mark.parametrize(
    "after_chunk",
    [b"NOOP\r\n" * 300, b"NOOP\r\n" + b"X" * 1500],
    ids=["commands", "an unfinished line"],
)
def test_commands_piled_up_behind_a_bdat_chunk_are_still_a_flood(after_chunk: bytes) -> None:
    # The chunk's octets are content, but the commands (or the unfinished
    # line) that follow it in the same read are unread input like any
    # other: past max_receive_buffer they are a flood (attack class 7).
    server = ready_server(ServerConfig(max_receive_buffer=1024))
    with pytest.raises(RemoteProtocolError) as caught:
        serve(server, _TRANSACTION + b"BDAT 2000 LAST\r\n" + _CHUNK + after_chunk)
    assert caught.value.reply is not None and caught.value.reply.code == 421


def test_lenient_server_hands_out_any_hello_word_as_sent() -> None:
    # Found by fuzz/server_core.py (mode 1, lenient), minimised: the oracle
    # rebuilt every event with its public constructor, and Ehlo's refuses
    # this name.  ServerConfig.lenient takes "any word as the EHLO/HELO
    # name", so the event carries the word as sent; only a strict server
    # holds the name to RFC 5321 §4.1.1.1 (Domain / address-literal).
    word = "client[IPv6:2001:db8::1]"
    line = f"ehlo {word}\r\n".encode()
    lenient = ServerConnection(ServerConfig(lenient=True))
    lenient.send(lenient.greeting())
    (hello,) = serve(lenient, line)
    assert isinstance(hello, Ehlo) and hello.domain == word
    assert lenient.client_name == word
    with pytest.raises(LocalProtocolError):
        Ehlo(domain=word)
    strict = ServerConnection()
    strict.send(strict.greeting())
    (refused,) = serve(strict, line)
    assert isinstance(refused, CommandRejected) and refused.reply.code == 501
    # The minimised input replays clean through its target.
    server_core.test_one_input(b"1" + b"0" + line)


def test_a_reply_the_client_accepts_is_a_reply_it_could_build() -> None:
    # Found by fuzz/client_core.py, minimised: a greeting of 606 octets.
    # ClientConfig.max_reply_line accepts lines past RFC 5321 §4.5.3.1.5's
    # 512 octets ("real servers exceed it", 2048 by default), so the Reply
    # handed out must be one the public constructor builds too (events are
    # symmetric: DESIGN practice 3), or an application cannot rebuild,
    # copy or relay what it received.
    line = b"220 " + b"y" * 600 + b"\r\n"
    client = ClientConnection()
    client.receive_data(line)
    greeting = client.next_event()
    assert isinstance(greeting, Reply) and greeting.text == ("y" * 600,)
    assert Reply(code=greeting.code, text=greeting.text, enhanced=greeting.enhanced) == greeting
    client_core.test_one_input(b"00" + line)
