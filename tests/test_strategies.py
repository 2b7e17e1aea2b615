"""The strategies of smtpproto.testing produce what they promise: valid
values are accepted by the parsers and the server core, invalid ones are
refused, perturbations keep their shape."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import TypeVar

import pytest
from hypothesis import Phase, assume, given, settings
from hypothesis import find as _find
from hypothesis import strategies as st

from smtpproto import (
    NEED_DATA,
    Auth,
    AuthResponse,
    Bdat,
    Command,
    CommandRejected,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfChunk,
    EndOfMessage,
    Event,
    Lhlo,
    LocalProtocolError,
    Mail,
    MessageData,
    MessageRejected,
    Quit,
    Rcpt,
    RemoteProtocolError,
    Reply,
    Rset,
    ServerConfig,
    ServerConnection,
    State,
)
from smtpproto import sasl
from smtpproto._commands import format_command, parse_command
from smtpproto._syntax import (
    GrammarError,
    octets,
    parse_domain_or_literal,
    parse_forward_path,
    parse_mailbox,
    parse_parameters,
    parse_reverse_path,
)
from smtpproto.testing import (
    COMMAND_TYPES,
    address_literals,
    chunkings,
    command_lines,
    commands,
    domains,
    esmtp_parameters,
    invalid_mailboxes,
    local_parts,
    mail_parameters,
    mailboxes,
    message_bodies,
    mutated_bytes,
    rcpt_parameters,
    replies,
    session_transcripts,
    sessions,
    split_points,
    transcribe,
)

from helpers import Pair, default_responder, replies_of, server_events

FEW = settings(deadline=None, max_examples=25)
SOME = settings(deadline=None, max_examples=60)


T = TypeVar("T")


def find(strategy: st.SearchStrategy[T], predicate: Callable[[T], object]) -> T:
    """The first example satisfying *predicate* (no shrinking: fast)."""
    quick = settings(phases=[Phase.generate], max_examples=3000, database=None)
    return _find(strategy, predicate, settings=quick)


def ready_server() -> ServerConnection:
    server = ServerConnection()
    server.send(server.greeting())
    server.receive_data(b"EHLO client.example\r\n")
    assert isinstance(server.next_event(), Ehlo)
    server.send(server.default_reply())
    return server


# -- grammar values --------------------------------------------------------------


@SOME
@given(st.booleans(), st.data())
def test_domains_are_valid_and_within_budget(utf8: bool, data: st.DataObject) -> None:
    budget = data.draw(st.one_of(st.just(255), st.integers(1, 255)))
    domain = data.draw(domains(utf8=utf8, max_octets=budget))
    assert parse_domain_or_literal(domain) == domain
    assert 1 <= octets(domain) <= budget
    if not utf8:
        assert domain.isascii()


@SOME
@given(address_literals())
def test_address_literals_are_valid(literal: str) -> None:
    assert literal.startswith("[") and literal.endswith("]")
    assert parse_domain_or_literal(literal) == literal
    assert parse_mailbox(f"user@{literal}") == f"user@{literal}"


def test_address_literals_use_all_of_dcontent() -> None:
    # dcontent = %d33-90 / %d94-126 takes '"', '>' and '@' too.
    for char in '">@':
        assert char in find(address_literals(), lambda lit, c=char: c in lit)


@pytest.mark.parametrize("mailbox", ["a@[x:@]", '"a@[b"@[x:@y]', '"a@b"@c.example'])
def test_general_literal_holding_an_at_sign(mailbox: str) -> None:
    # dcontent (%d33-90 / %d94-126, RFC 5321 §4.1.3) includes "@": found by
    # test_mailboxes_are_valid_everywhere (parse_mailbox split at the last "@").
    assert parse_mailbox(mailbox) == mailbox
    assert Mail(reverse_path=mailbox).reverse_path == mailbox


@SOME
@given(local_parts(utf8=True), local_parts())
def test_local_parts_are_valid(utf8_local: str, ascii_local: str) -> None:
    for local in (utf8_local, ascii_local):
        assert parse_mailbox(f"{local}@example.org")
        assert octets(local) <= 64
    assert ascii_local.isascii()


@SOME
@given(st.booleans(), st.data())
def test_mailboxes_are_valid_everywhere(utf8: bool, data: st.DataObject) -> None:
    mailbox = data.draw(mailboxes(utf8=utf8))
    assert parse_mailbox(mailbox) == mailbox
    assert parse_reverse_path(f"<{mailbox}>") == mailbox
    assert parse_forward_path(f"<{mailbox}>") == mailbox
    assert octets(f"<{mailbox}>") <= 256
    assert Mail(reverse_path=mailbox).reverse_path == mailbox
    assert Rcpt(forward_path=mailbox).forward_path == mailbox
    if not utf8:
        assert mailbox.isascii()


def test_mailboxes_reach_the_length_limits() -> None:
    long_local = find(local_parts(), lambda lp: octets(lp) >= 60)
    assert parse_mailbox(f"{long_local}@x")
    long_domain = find(domains(), lambda d: octets(d) >= 250)
    assert parse_domain_or_literal(long_domain)
    quoted = find(local_parts(), lambda lp: lp.startswith('"') and "\\" in lp)
    assert parse_mailbox(f"{quoted}@x")


@SOME
@given(invalid_mailboxes())
def test_invalid_mailboxes_are_refused(mailbox: str) -> None:
    with pytest.raises(GrammarError):
        parse_reverse_path(f"<{mailbox}>")
    with pytest.raises(GrammarError):
        parse_forward_path(f"<{mailbox}>")
    with pytest.raises(LocalProtocolError):
        Mail(reverse_path=mailbox)
    with pytest.raises(LocalProtocolError):
        Rcpt(forward_path=mailbox)
    if octets(mailbox) <= 254:  # all but the over-long path break parse_mailbox
        with pytest.raises(GrammarError):
            parse_mailbox(mailbox)


@pytest.mark.parametrize("mailbox", ["a@[1.2.3.\u0664]", "a@[\uff11.2.3.4]"])
def test_ipv4_literal_with_non_ascii_digits_is_refused(mailbox: str) -> None:
    # Snum = 1*3DIGIT, and DIGIT is %x30-39 (RFC 5234 B.1), not any Unicode
    # digit such as ARABIC-INDIC FOUR or FULLWIDTH ONE.
    with pytest.raises(GrammarError):
        parse_mailbox(mailbox)


@pytest.mark.parametrize("mailbox", ["a@[IPv6:1:2:3:4:5:6:7::]", "a@[IPv6:1:2:3:4:5::1.2.3.4]"])
def test_ipv6_literal_with_double_colon_for_one_group_is_refused(mailbox: str) -> None:
    with pytest.raises(GrammarError):
        parse_mailbox(mailbox)


def test_invalid_mailboxes_cover_every_kind() -> None:
    patterns = {
        "no @": lambda m: "@" not in m,
        "control": lambda m: re.search(r"[\x00-\x1f\x7f]", m) is not None,
        "long local part": lambda m: len(m.rpartition("@")[0]) > 64,
        "long path": lambda m: octets(m) > 254 and len(m.rpartition("@")[0]) <= 64,
        "IPv4 range": lambda m: re.search(r"[\[.](25[6-9]|2[6-9]\d|[3-9]\d\d)[.\]]", m) is not None,
        "IPv6": lambda m: "[IPv6:" in m,
        "quote": lambda m: m.count('"') % 2 == 1,
    }
    for name, predicate in patterns.items():
        found = find(invalid_mailboxes(), predicate)
        assert predicate(found), name


@SOME
@given(esmtp_parameters())
def test_esmtp_parameters_are_valid(params: dict[str, str | None]) -> None:
    text = " ".join(key if value is None else f"{key}={value}" for key, value in params.items())
    parsed = parse_parameters(text)
    assert parsed == {key.upper(): value for key, value in params.items()}
    assert Mail(reverse_path="", parameters=params).parameters == parsed


@FEW
@given(mail_parameters(max_size=1000), rcpt_parameters())
def test_known_parameters_are_accepted_by_the_server(
    mail_params: dict[str, str | None], rcpt_params: dict[str, str | None]
) -> None:
    server = ready_server()
    mail = Mail(reverse_path="a@example.org", parameters=mail_params)
    server.receive_data(format_command(mail))
    assert server.next_event() == mail
    server.send(server.default_reply())
    rcpt = Rcpt(forward_path="b@example.org", parameters=rcpt_params)
    server.receive_data(format_command(rcpt))
    assert server.next_event() == rcpt
    if "SIZE" in mail.parameters:
        assert int(mail.parameters["SIZE"] or "") <= 1000


# -- protocol values ----------------------------------------------------------------


@SOME
@given(commands())
def test_commands_parse_back_equal(command: Command) -> None:
    line = format_command(command)
    assert line.endswith(b"\r\n") and len(line) <= 512
    assert b"\r" not in line[:-2] and b"\n" not in line[:-2]
    assert parse_command(line[:-2]) == command


@SOME
@given(
    st.sampled_from(COMMAND_TYPES).flatmap(
        lambda kind: st.tuples(st.just(kind), commands([kind]))
    )
)
def test_commands_of_the_kinds_asked_for(kind_and_command: tuple[type, Command]) -> None:
    kind, command = kind_and_command
    assert type(command) is kind


@pytest.mark.parametrize("kind", COMMAND_TYPES, ids=lambda kind: kind.__name__)
def test_commands_draw_every_kind(kind: type) -> None:
    assert type(find(commands(), lambda command: type(command) is kind)) is kind


def test_command_lines_are_valid_and_mangled() -> None:
    def parses(line: bytes) -> bool:
        try:
            parse_command(line[:-2])
        except GrammarError:
            return False
        return line.endswith(b"\r\n") and line.count(b"\n") == 1

    assert parses(find(command_lines(), parses))
    assert not parses(find(command_lines(), lambda line: not parses(line)))
    assert b"\x00" in find(command_lines(), lambda line: b"\x00" in line)


@SOME
@given(command_lines())
def test_command_lines_give_a_server_events_or_remote_errors(line: bytes) -> None:
    server = ready_server()
    server.receive_data(line)
    try:
        event = server.next_event()
    except RemoteProtocolError:
        return
    assert event is NEED_DATA or isinstance(event, (Command, CommandRejected))


@SOME
@given(replies())
def test_replies_are_valid_and_read_back_equal(reply: Reply) -> None:
    assert Reply(code=reply.code, text=reply.text, enhanced=reply.enhanced) == reply
    assert 200 <= reply.code <= 559 and (reply.code // 10) % 10 <= 5
    if reply.enhanced is not None:
        assert reply.enhanced[0] == str(reply.code)[0]
    for line in reply.text:
        assert not set("\r\n\x00") & set(line)
    # Through the wire: as a greeting (2xx/4xx/5xx) or as DATA's answer (3xx).
    pair = Pair(
        responder=lambda server, event: (
            reply if isinstance(event, Data) else server.default_reply()
        )
    )
    if reply.is_intermediate:
        pair.hello()
        pair.send(Mail(reverse_path=""))
        pair.send(Rcpt(forward_path="b@example.org"))
        assert pair.send(Data()) == [reply]
    else:
        # A 4xx greeting also closes the session (ConnectionClosed follows).
        assert pair.greet(reply)[0] == reply


def test_334_answering_data_is_not_a_sasl_challenge() -> None:
    # RFC 5321 §4.2.1: the client acts on the first digit; the table takes
    # any 3xx after DATA as the go-ahead, and the client's own rule about
    # strict base64 in a 334 is about AUTH exchanges (RFC 4954 §4).
    pair = Pair(
        responder=lambda server, event: (
            Reply(code=334, text=("00000",)) if isinstance(event, Data) else server.default_reply()
        )
    )
    pair.hello()
    pair.send(Mail(reverse_path=""))
    pair.send(Rcpt(forward_path="b@example.org"))
    assert pair.send(Data()) == [Reply(code=334, text=("00000",))]
    assert pair.client.state is State.DATA


@SOME
@given(message_bodies(eight_bit=False, max_line_length=80))
def test_message_bodies_respect_their_options(body: bytes) -> None:
    assert body.isascii()
    for line in re.split(rb"\r\n|\r|\n", body):
        assert len(line) <= 78


def test_message_bodies_are_hostile() -> None:
    features = [
        lambda b: b == b"",
        lambda b: re.search(rb"\r(?!\n)", b) is not None,  # bare CR
        lambda b: re.search(rb"(?<!\r)\n", b) is not None,  # bare LF
        lambda b: b"\r\n.\r\n" in b,
        lambda b: b.startswith(b"."),
        lambda b: b"\x00" in b,
        lambda b: not b.isascii(),
        lambda b: b != b"" and not b.endswith((b"\r", b"\n")),
        lambda b: b"\n.\n" in b,
        lambda b: len(max(re.split(rb"\r\n|\r|\n", b), key=len)) == 998,
    ]
    for feature in features:
        assert feature(find(message_bodies(), feature))


@SOME
@given(st.binary(max_size=50), st.data())
def test_chunkings_join_back(data: bytes, draw: st.DataObject) -> None:
    chunks = draw.draw(chunkings(data))
    assert b"".join(chunks) == data
    assert all(chunks)
    points = draw.draw(split_points(len(data)))
    assert points == sorted(set(points))
    assert all(0 < point < len(data) for point in points)


def test_chunkings_include_one_byte_at_a_time() -> None:
    chunks = find(chunkings(b"abcdef"), lambda chunks: len(chunks) == 6)
    assert chunks == [b"a", b"b", b"c", b"d", b"e", b"f"]


SESSION_KINDS = st.sampled_from(["smtp", "auth", "lmtp", "no-chunking"])


def session_options(kind: str) -> dict[str, bool]:
    return {
        "auth": kind == "auth",
        "lmtp": kind == "lmtp",
        "chunking": kind != "no-chunking",
    }


@FEW
@given(SESSION_KINDS.flatmap(lambda kind: st.tuples(st.just(kind), sessions(utf8=True, **session_options(kind)))))
def test_sessions_are_well_formed(kind_and_session: tuple[str, list[object]]) -> None:
    kind, session = kind_and_session
    hello = Lhlo if kind == "lmtp" else Ehlo
    assert isinstance(session[0], hello)
    assert not any(isinstance(e, Ehlo if kind == "lmtp" else Lhlo) for e in session)
    quits = [index for index, event in enumerate(session) if isinstance(event, Quit)]
    assert quits in ([], [len(session) - 1])
    auths = [index for index, event in enumerate(session) if isinstance(event, Auth)]
    assert len(auths) == (1 if kind == "auth" else 0)
    if kind == "no-chunking":
        assert not any(isinstance(e, (Bdat, EndOfChunk)) for e in session)
    state = "ready"
    chunk_left = 0
    last_chunk = False
    for event in session:
        if state == "data":
            if isinstance(event, EndOfMessage):
                state = "ready"
            else:
                assert isinstance(event, MessageData)
            continue
        if state == "chunk":
            # RFC 3030 §2: exactly the declared octets, then the chunk's end.
            if isinstance(event, MessageData):
                chunk_left -= len(event.data)
                assert chunk_left >= 0
                continue
            assert chunk_left == 0
            assert isinstance(event, EndOfMessage if last_chunk else EndOfChunk)
            state = "ready" if last_chunk else "bdat"
            continue
        if state == "auth":
            # AUTH PLAIN without an initial response: the message answers the 334.
            assert isinstance(event, AuthResponse) and event.data.count(b"\0") == 2
            state = "ready"
            continue
        if isinstance(event, Mail):
            assert state == "ready"
            state = "mail"
            mail = event
        elif isinstance(event, Rcpt):
            assert state in ("mail", "rcpt")
            state = "rcpt"
        elif isinstance(event, Data):
            assert state == "rcpt"
            assert (mail.parameters.get("BODY") or "").upper() != "BINARYMIME"
            state = "data"
        elif isinstance(event, Bdat):
            assert state in ("rcpt", "bdat")
            state, chunk_left, last_chunk = "chunk", event.size, event.last
        elif isinstance(event, Auth):
            assert state == "ready" and event.mechanism == "PLAIN"
            if event.initial_response is None:
                state = "auth"
            else:
                assert event.initial_response.count(b"\0") == 2
        elif isinstance(event, Rset):
            state = "ready"
        elif isinstance(event, (Ehlo, Lhlo)):
            assert state == "ready"
        else:
            assert not isinstance(event, (MessageData, EndOfMessage, EndOfChunk, AuthResponse))
        if isinstance(event, (Mail, Rcpt)):
            path = event.reverse_path if isinstance(event, Mail) else event.forward_path
            if not path.isascii():
                assert "SMTPUTF8" in mail.parameters
    assert state == "ready"


def plain_verifier(server: ServerConnection, event: Event) -> Reply | None:
    """Accept any PLAIN credentials, through the application's answer."""
    if isinstance(event, (Auth, AuthResponse)):
        request = server.auth_request
        if request is None:
            return server.auth_reply()  # the empty 334 challenge
        assert isinstance(request, sasl.CheckPassword) and request.authcid and request.password
        return server.auth_reply(True)
    return default_responder(server, event)


SERVER_CONFIGS = {
    "smtp": ServerConfig(),
    "auth": ServerConfig(auth_mechanisms=("PLAIN",), auth_plaintext=True),
    "lmtp": ServerConfig(lmtp=True),
    "no-chunking": ServerConfig(chunking=False),
}


@FEW
@given(SESSION_KINDS.flatmap(lambda kind: st.tuples(st.just(kind), sessions(utf8=True, **session_options(kind)))))
def test_session_transcripts_are_accepted_by_a_server(kind_and_session: tuple[str, list[object]]) -> None:
    kind, session = kind_and_session
    transcript = transcribe(session)  # type: ignore[arg-type]
    events, out = server_events(transcript, SERVER_CONFIGS[kind], responder=plain_verifier)
    assert not any(isinstance(e, (CommandRejected, MessageRejected)) for e in events)
    assert all(code < 400 for code in replies_of(out))
    ends = sum(isinstance(e, Data) or (isinstance(e, Bdat) and e.last) for e in events)
    assert ends == sum(isinstance(e, EndOfMessage) for e in events)
    assert [type(e) for e in events if not isinstance(e, (MessageData, ConnectionClosed))] == [
        type(e) for e in session if not isinstance(e, MessageData)
    ]


def test_sessions_draw_every_shape() -> None:
    # A BDAT chunk that is not the last, BODY=BINARYMIME, and AUTH answered
    # after the 334 each show up (the rest is common).
    find(sessions(max_steps=1), lambda s: any(isinstance(e, Bdat) and not e.last for e in s))
    find(sessions(max_steps=1), lambda s: any(
        isinstance(e, Mail) and e.parameters.get("BODY") == "BINARYMIME" for e in s
    ))
    find(sessions(auth=True, max_steps=1), lambda s: any(isinstance(e, AuthResponse) for e in s))


@SOME
@given(st.binary(max_size=40), st.data())
def test_single_mutation_is_a_single_edit(data: bytes, draw: st.DataObject) -> None:
    mutated = draw.draw(mutated_bytes(data, max_mutations=1))
    if len(mutated) == len(data):
        # a bit flip (or an empty delete/duplicate)
        diffs = [a ^ b for a, b in zip(data, mutated) if a != b]
        assert len(diffs) <= 1 and all(bin(d).count("1") == 1 for d in diffs)
    elif len(mutated) < len(data):
        assert len(data) - len(mutated) <= 8
    else:
        assert len(mutated) - len(data) <= 32


def test_mutations_insert_line_ending_traps() -> None:
    for trap in (b"\r\n.\r\n", b"\x00", b"\n.\n"):
        assert trap in find(mutated_bytes(b"hello world"), lambda m, t=trap: t in m)


@settings(deadline=None, max_examples=20)
@given(mutated_bytes(st.just(b"EHLO a\r\n")), mutated_bytes(session_transcripts(), max_mutations=1))
def test_mutated_bytes_accepts_a_strategy(data: bytes, transcript: bytes) -> None:
    assert 0 < len(data) <= 7 + 4 * 32
    assert transcript  # a transcript holds at least EHLO and loses at most 8 octets

