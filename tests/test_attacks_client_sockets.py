"""The attack classes aimed at clients, over real loopback sockets.

Theory of operation
-------------------
``../shared/PROTOCOL.md`` section 3 lists nine attack classes; 2, 3, 4, 7,
8 and 9 concern a client: what it puts on the wire for a hostile caller or
body, and what it does when the server is hostile or broken.  The client
core and flow are tested against each in memory elsewhere
(``test_data.py``, ``test_events.py``, ``test_esmtp_attacks.py``...).
Here each of our three client adapters (blocking, asyncio, trio) talks to a
:class:`~scripted.ScriptedServer` on a loopback port: a thread that sends
scripted replies, byte for byte (a forged reply behind the 220 to
STARTTLS, a reply bomb, a hang-up in the middle of DATA), and records
every byte the client sent.  A test then compares the recorded bytes with
what the client may send (exactly, where the wire form is fixed by the
RFCs), and checks what the client returned or raised.

Tests are named ``test_attack_<class>_<what>``; every client runs with
short timeouts (and the scripted server's reads have their own), so a
client that waits for ever fails a test instead of hanging it.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence

import pytest

from smtpproto import LocalProtocolError
from smtpproto.flows import ClientOptions, Timeouts, TLSMode, errors

import certs
from scripted import (
    HANGUP, RESET, TLS, Flood, Lines, Mail, Octets, Outcome, ScriptedServer, Step, Until, run_client,
)
from test_adapter_matrix import KINDS

GREETING = b"220 scripted.example ESMTP\r\n"
EHLO_SENT = b"EHLO client.example\r\n"
EHLO_REPLY = b"250-scripted.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 10000000\r\n"
EHLO_STARTTLS = b"250-scripted.example\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n"
EHLO_CHUNKING = b"250-scripted.example\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 8BITMIME\r\n"
ENVELOPE_OK = b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n"
PASSWORD = "s3cret-Pa55"


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """The client adapter under attack."""
    value: str = request.param
    return value


def options(**changes: object) -> ClientOptions:
    """Cleartext client options with short timeouts (bounds, not measures)."""
    settings: dict[str, object] = {
        "helo_name": "client.example",
        "tls": TLSMode.NEVER,
        "server_hostname": "localhost",
        "timeouts": Timeouts.all(5.0),
    }
    settings.update(changes)
    return ClientOptions(**settings)  # type: ignore[arg-type]


def session(
    kind: str,
    script: Sequence[Step],
    client_options: ClientOptions,
    mails: Sequence[Mail] = (),
    *,
    tls: bool = False,
    guard: float = 30.0,
) -> tuple[Outcome, ScriptedServer]:
    """Run *kind*'s client against *script*; return what it did and the server."""
    server = ScriptedServer(script, ssl_context=certs.server_context() if tls else None)
    with server:
        outcome = run_client(
            kind, server.address, client_options, mails,
            ssl_context=certs.client_context() if tls else None, guard=guard,
        )
    return outcome, server


def password_forms(password: str = PASSWORD) -> list[bytes]:
    """The password as it would cross the wire: raw, or in a PLAIN or LOGIN
    base64 response."""
    raw = password.encode()
    return [raw, base64.b64encode(raw), base64.b64encode(b"\0bob\0" + raw)]


def assert_no_secret(data: bytes) -> None:
    for form in password_forms():
        assert form not in data, data


# =============================================================================
# Class 2: outbound smuggling
# =============================================================================


def data_wire(content: bytes) -> bytes:
    """RFC 5321 §2.3.8 and §4.5.2, written out independently of the library:
    every line end becomes CRLF, every line starting with a dot gets one
    more, a missing final CRLF is added, then "." CRLF."""
    normalised = re.sub(rb"\r\n|\r|\n", b"\r\n", content)
    if normalised and not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    lines = normalised.splitlines(keepends=True)
    return b"".join(b"." + line if line.startswith(b".") else line for line in lines) + b".\r\n"


HOSTILE_BODY = (
    b".first line starts with a dot\r\n"
    b"bare lf\nbare cr\rcr cr lf\r\r\nlf cr\n\r"
    b".\n"  # LF . LF
    b"x\r.\r"  # CR . CR
    b"y\n.\r\n"  # LF . CRLF
    b"z\r\n.\n"  # CRLF . LF
    b"MAIL FROM:<evil@attacker.example>\r\n"
    b"\r\n\0.\0\r\n"  # NULs around a dot
    b"..two dots\r\n"
    b". space\r\n"
    b"no final line end"
)
# The same body cut where a careless stuffer loses its state: between CR and
# LF, just before a line-leading dot, after a lone CR, after CRLF ".".
HOSTILE_CHUNKS = [
    b".a\r", b"\n.b\r", b"\r\n", b".", b".c\n", b".\r", b"\n", b"\r\n.", b"\r\n",
    b"\r", b".\r", b"\nend",
]


@pytest.mark.parametrize("form", ["bytes", "chunks"])
def test_attack_2_body_is_normalised_and_stuffed_on_the_wire(kind: str, form: str) -> None:
    """Every bare CR and LF goes out as CRLF, every line-leading dot (the
    first line's too) is doubled, across chunk boundaries as well; the only
    CRLF . CRLF on the wire is the real end."""
    body = HOSTILE_BODY if form == "bytes" else b"".join(HOSTILE_CHUNKS)
    content: bytes | list[bytes] = HOSTILE_BODY if form == "bytes" else list(HOSTILE_CHUNKS)
    script: list[Step] = [
        GREETING, Lines(1), EHLO_REPLY, Lines(3), ENVELOPE_OK + b"354 go ahead\r\n",
        Until(b"\r\n.\r\n"), b"250 2.0.0 queued\r\n",
    ]
    outcome, server = session(kind, script, options(), [Mail(content)])
    assert outcome.error is None, outcome.error
    assert [r.accepted for r in outcome.results] == [("bob@example.org",)]
    sent = bytes(server.received)
    head, data = sent.split(b"DATA\r\n", 1)
    assert data == data_wire(body) + b"QUIT\r\n"
    data = data[: -len(b"QUIT\r\n")]
    assert data.find(b"\r\n.\r\n") == len(data) - 5
    assert data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n")
    assert head.startswith(EHLO_SENT + b"MAIL FROM:<alice@example.org>")
    assert head.endswith(b"RCPT TO:<bob@example.org>\r\n")


def test_attack_2_bdat_content_is_sent_as_counted_octets(kind: str) -> None:
    """RFC 3030 §2: with CHUNKING the content is counted, so it goes out as
    given, after a BDAT line that counts it exactly; no dot handling."""
    body = b".first\r\n.\r\nMAIL FROM:<evil@attacker.example>\r\n..end\r\n"
    bdat = b"BDAT %d LAST\r\n" % len(body)
    script: list[Step] = [
        GREETING, Lines(1), EHLO_CHUNKING, Lines(2), ENVELOPE_OK,
        Octets(len(bdat) + len(body)), b"250 2.0.0 queued\r\n",
    ]
    outcome, server = session(kind, script, options(chunking=True), [Mail(body)])
    assert outcome.error is None, outcome.error
    assert [r.accepted for r in outcome.results] == [("bob@example.org",)]
    assert bytes(server.received).endswith(b"RCPT TO:<bob@example.org>\r\n" + bdat + body + b"QUIT\r\n")


# =============================================================================
# Class 3: STARTTLS injection
# =============================================================================


@pytest.mark.parametrize("mode", [TLSMode.OPPORTUNISTIC, TLSMode.REQUIRED], ids=lambda m: m.value)
def test_attack_3_reply_injected_behind_the_220_aborts(kind: str, mode: TLSMode) -> None:
    """RFC 3207 §6: "220 go ahead" and "250 injected" in one packet: the
    client aborts without a handshake and sends nothing more, not even in
    opportunistic mode."""
    script: list[Step] = [
        GREETING, Lines(1), EHLO_STARTTLS, Lines(1), b"220 go ahead\r\n250 injected\r\n",
    ]
    client_options = options(tls=mode, username="bob", password=PASSWORD)
    outcome, server = session(kind, script, client_options, [Mail(b"Subject: x\r\n\r\nx\r\n")], tls=True)
    assert isinstance(outcome.error, errors.ProtocolFailure), outcome.error
    assert not outcome.connected and outcome.results == []
    assert bytes(server.received) == EHLO_SENT + b"STARTTLS\r\n"
    assert server.client_gone


@pytest.mark.parametrize("answer", ["plaintext", "hangup", "reset"])
def test_attack_3_failed_handshake_never_falls_back_to_cleartext(
    kind: str, answer: str, request: pytest.FixtureRequest
) -> None:
    """Once the handshake began, a server that answers in cleartext, hangs
    up or resets ends the session, promptly: no EHLO, AUTH or MAIL follows
    in cleartext."""
    tails: dict[str, list[Step]] = {
        "plaintext": [b"250 injected\r\n"],
        "hangup": [HANGUP],
        "reset": [RESET],
    }
    tail = tails[answer]
    script: list[Step] = [
        GREETING, Lines(1), EHLO_STARTTLS, Lines(1), b"220 go ahead\r\n", Octets(1), *tail,
    ]
    client_options = options(tls=TLSMode.OPPORTUNISTIC, username="bob", password=PASSWORD)
    outcome, server = session(
        kind, script, client_options, [Mail(b"Subject: x\r\n\r\nx\r\n")], tls=True, guard=10.0
    )
    assert isinstance(outcome.error, (errors.ProtocolFailure, errors.Disconnected)), outcome.error
    assert not outcome.connected
    sent = bytes(server.received)
    assert sent.startswith(EHLO_SENT + b"STARTTLS\r\n\x16")  # then a TLS ClientHello
    after = sent[len(EHLO_SENT + b"STARTTLS\r\n") :]
    for command in (b"EHLO", b"AUTH", b"MAIL", b"QUIT"):
        assert command not in after
    assert_no_secret(sent)


# =============================================================================
# Class 4: command injection from the caller
# =============================================================================

INJECTIONS = {
    "sender_crlf": Mail(b"x\r\n", sender="alice@example.org>\r\nRCPT TO:<evil@attacker.example"),
    "sender_lf": Mail(b"x\r\n", sender="alice@example.org\nRCPT TO:<evil@attacker.example>"),
    "sender_nul": Mail(b"x\r\n", sender="alice\0@example.org"),
    "recipient_crlf": Mail(b"x\r\n", recipients=("bob@example.org>\r\nRCPT TO:<evil@attacker.example",)),
    "recipient_cr": Mail(b"x\r\n", recipients=("bob@example.org\rDATA",)),
    "second_recipient_lf": Mail(b"x\r\n", recipients=("bob@example.org", "carol@example.org\nRSET")),
    "recipient_nul": Mail(b"x\r\n", recipients=("bob\0@example.org",)),
}


@pytest.mark.parametrize("case", list(INJECTIONS))
def test_attack_4_control_characters_in_the_envelope_raise_before_writing(kind: str, case: str) -> None:
    """CR, LF or NUL in a sender or recipient raises ``LocalProtocolError``
    before any byte of that transaction is written; the session is left
    usable (the client quits normally)."""
    script: list[Step] = [GREETING, Lines(1), EHLO_REPLY]
    outcome, server = session(kind, script, options(), [INJECTIONS[case]])
    assert isinstance(outcome.error, LocalProtocolError), outcome.error
    assert outcome.connected
    assert bytes(server.received) == EHLO_SENT + b"QUIT\r\n"


@pytest.mark.parametrize(
    "name", ["client.example\r\nMAIL FROM:<evil@attacker.example>", "client\n.example", "client\0.example"]
)
def test_attack_4_control_characters_in_the_ehlo_name_raise_before_writing(kind: str, name: str) -> None:
    """RFC 5321 §4.1.1.1: the EHLO name is a domain; a CR, LF or NUL in it
    raises before anything is written (the greeting is read, EHLO never
    sent)."""
    script: list[Step] = [GREETING, Lines(1), EHLO_REPLY]
    outcome, server = session(kind, script, options(helo_name=name))
    assert isinstance(outcome.error, LocalProtocolError), outcome.error
    assert not outcome.connected
    assert bytes(server.received) == b""


@pytest.mark.parametrize(
    ("username", "password"), [("bob\0admin", PASSWORD), ("bob", PASSWORD + "\0"), ("", PASSWORD)],
    ids=["nul_in_user", "nul_in_password", "empty_user"],
)
def test_attack_4_malformed_auth_data_raises_before_writing(kind: str, username: str, password: str) -> None:
    """RFC 4616 §2: a NUL in the user name or password would move the
    field boundaries of PLAIN, and an empty user name is not one; PLAIN
    refuses such credentials, so AUTH is never written, and the error
    does not blame the (allowed) cleartext."""
    script: list[Step] = [GREETING, Lines(1), b"250-scripted.example\r\n250 AUTH PLAIN\r\n"]
    client_options = options(username=username, password=password, allow_plaintext_auth=True)
    outcome, server = session(kind, script, client_options)
    assert isinstance(outcome.error, errors.AuthFailed), outcome.error
    assert "credentials" in str(outcome.error) and "not encrypted" not in str(outcome.error)
    assert not outcome.connected
    assert bytes(server.received) == EHLO_SENT + b"QUIT\r\n"


def test_attack_4_line_ends_in_auth_data_stay_inside_base64(kind: str) -> None:
    """SASL data crosses the wire base64-encoded (RFC 4954 §4), so a CR LF
    in a password is one AUTH line, never a second command."""
    password = "secret\r\nMAIL FROM:<evil@attacker.example>"
    script: list[Step] = [
        GREETING, Lines(1), b"250-scripted.example\r\n250 AUTH PLAIN\r\n", Lines(1), b"235 2.7.0 ok\r\n",
    ]
    client_options = options(username="bob", password=password, allow_plaintext_auth=True)
    outcome, server = session(kind, script, client_options)
    assert outcome.error is None and outcome.connected, outcome.error
    lines = bytes(server.received).split(b"\r\n")
    assert lines[0] == EHLO_SENT.rstrip() and lines[2:] == [b"QUIT", b""]
    verb, mechanism, response = lines[1].split(b" ")
    assert (verb, mechanism) == (b"AUTH", b"PLAIN")
    assert base64.b64decode(response, validate=True) == b"\0bob\0" + password.encode()


# =============================================================================
# Class 7: resource exhaustion (reply bombs)
# =============================================================================

BOMB = 64 * 1024 * 1024  # far more than any bound; a client that reads it all fails


@pytest.mark.parametrize("where", ["greeting", "ehlo", "mail"])
def test_attack_7_endless_reply_line_is_cut(kind: str, where: str) -> None:
    """A reply line that never ends: the client gives up at its line bound
    (``ClientConfig.max_reply_line``) and closes, long before the end."""
    openings: dict[str, list[Step]] = {
        "greeting": [],
        "ehlo": [GREETING, Lines(1)],
        "mail": [GREETING, Lines(1), EHLO_REPLY, Lines(1)],
    }
    before = openings[where]
    script: list[Step] = [*before, b"250 ", Flood(b"a" * 65536, BOMB)]
    if where == "greeting":
        script[0] = b"220 "
    client_options = options(pipelining=False)
    outcome, server = session(kind, script, client_options, [Mail(b"x\r\n")])
    assert isinstance(outcome.error, errors.ProtocolFailure), outcome.error
    assert "longer than" in str(outcome.error)
    assert server.client_gone and server.sent < BOMB


@pytest.mark.parametrize("where", ["greeting", "ehlo"])
def test_attack_7_endless_continuation_lines_are_cut(kind: str, where: str) -> None:
    """Thousands of continuation lines: the client gives up at its line
    count bound (``ClientConfig.max_reply_lines``) and closes."""
    code = b"220" if where == "greeting" else b"250"
    before: list[Step] = [] if where == "greeting" else [GREETING, Lines(1)]
    bomb = 16 * 1024 * 1024
    script: list[Step] = [*before, Flood(code + b"-more and more\r\n", bomb)]
    outcome, server = session(kind, script, options())
    assert isinstance(outcome.error, errors.ProtocolFailure), outcome.error
    assert "lines" in str(outcome.error)
    assert server.client_gone and server.sent < bomb


def test_attack_7_silent_server_times_out(kind: str) -> None:
    """A server that never answers EHLO: the client's timeout ends the
    session with a temporary failure, and it closes the connection."""
    script: list[Step] = [GREETING, Lines(2)]  # the second line never comes
    client_options = options(timeouts=Timeouts(greeting=5.0, command=0.5))
    outcome, server = session(kind, script, client_options)
    assert isinstance(outcome.error, errors.Timeout), outcome.error
    assert outcome.error.temporary and not outcome.connected
    assert server.client_gone and bytes(server.received) == EHLO_SENT


# =============================================================================
# Class 8: downgrade
# =============================================================================

DOWNGRADES: dict[str, tuple[list[Step], type[errors.SMTPError], bytes]] = {
    # (script, error, every byte the client may send)
    "starttls_stripped": (
        [GREETING, Lines(1), b"250-scripted.example\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN\r\n"],
        errors.TLSRequired,
        EHLO_SENT + b"QUIT\r\n",
    ),
    "starttls_454": (
        [GREETING, Lines(1), EHLO_STARTTLS, Lines(1), b"454 4.7.0 TLS not available\r\n"],
        errors.TLSRequired,
        EHLO_SENT + b"STARTTLS\r\nQUIT\r\n",
    ),
    "starttls_554": (
        [GREETING, Lines(1), EHLO_STARTTLS, Lines(1), b"554 5.7.0 no\r\n"],
        errors.TLSRequired,
        EHLO_SENT + b"STARTTLS\r\nQUIT\r\n",
    ),
    "starttls_garbled": (
        [GREETING, Lines(1), EHLO_STARTTLS, Lines(1), b"22O ready\r\n"],
        errors.ProtocolFailure,
        EHLO_SENT + b"STARTTLS\r\n",
    ),
    "starttls_bare_lf": (
        [GREETING, Lines(1), EHLO_STARTTLS, Lines(1), b"220 ready\n"],
        errors.ProtocolFailure,
        EHLO_SENT + b"STARTTLS\r\n",
    ),
    "starttls_354": (
        [GREETING, Lines(1), EHLO_STARTTLS, Lines(1), b"354 go ahead\r\n"],
        errors.ProtocolFailure,
        EHLO_SENT + b"STARTTLS\r\n",
    ),
}


@pytest.mark.parametrize("case", list(DOWNGRADES))
def test_attack_8_tls_required_closes_before_auth_or_mail(kind: str, case: str) -> None:
    """RFC 3207 §4.1: with TLS required, STARTTLS missing, refused or
    garbled ends the session before AUTH or MAIL (QUIT at most)."""
    script, error, allowed = DOWNGRADES[case]
    client_options = options(tls=TLSMode.REQUIRED, username="bob", password=PASSWORD)
    outcome, server = session(kind, script, client_options, [Mail(b"Subject: x\r\n\r\nx\r\n")], tls=True)
    assert isinstance(outcome.error, error), outcome.error
    assert not outcome.connected and outcome.results == []
    assert bytes(server.received) == allowed
    assert_no_secret(bytes(server.received))


@pytest.mark.parametrize("mode", [TLSMode.OPPORTUNISTIC, TLSMode.NEVER], ids=lambda m: m.value)
def test_attack_8_plain_and_login_are_never_sent_in_cleartext(kind: str, mode: TLSMode) -> None:
    """A server (or a man in the middle) offering only PLAIN and LOGIN over
    cleartext gets no credentials: the client fails AUTH without sending it."""
    script: list[Step] = [GREETING, Lines(1), b"250-scripted.example\r\n250 AUTH PLAIN LOGIN\r\n"]
    client_options = options(tls=mode, username="bob", password=PASSWORD)
    outcome, server = session(kind, script, client_options, tls=mode is TLSMode.OPPORTUNISTIC)
    assert isinstance(outcome.error, errors.AuthFailed), outcome.error
    assert not outcome.connected
    assert bytes(server.received) == EHLO_SENT + b"QUIT\r\n"
    assert_no_secret(bytes(server.received))


def test_attack_8_cleartext_capabilities_are_forgotten_after_tls(kind: str) -> None:
    """RFC 3207 §4.2: what the cleartext EHLO offered (here a forged AUTH
    PLAIN) does not count once TLS is up; only the new EHLO reply does."""
    script: list[Step] = [
        GREETING, Lines(1), EHLO_STARTTLS, Lines(1), b"220 go ahead\r\n", TLS,
        Lines(1), b"250-scripted.example\r\n250 PIPELINING\r\n",
    ]
    client_options = options(tls=TLSMode.REQUIRED, username="bob", password=PASSWORD)
    outcome, server = session(kind, script, client_options, tls=True)
    assert isinstance(outcome.error, errors.AuthFailed), outcome.error
    assert server.cleartext == EHLO_SENT + b"STARTTLS\r\n"
    assert server.encrypted == EHLO_SENT + b"QUIT\r\n"


# =============================================================================
# Class 9: abrupt disconnects
# =============================================================================

LONG_BODY = b"Subject: long\r\n\r\n" + b"".join(b"line %06d of the body\r\n" % i for i in range(20000))
DATA_OPENING: list[Step] = [GREETING, Lines(1), EHLO_REPLY, Lines(3), ENVELOPE_OK + b"354 go ahead\r\n"]
DATA_CUTS: dict[str, list[Step]] = {
    "right_after_354": [HANGUP],
    "mid_content": [Until(b"line 000100"), HANGUP],
    "mid_content_reset": [Until(b"line 000100"), RESET],
    "before_the_final_reply": [Until(b"\r\n.\r\n"), HANGUP],
    "half_a_final_reply": [Until(b"\r\n.\r\n"), b"25", HANGUP],
    "mid_multiline_final_reply": [Until(b"\r\n.\r\n"), b"250-queued\r\n", HANGUP],
    "final_reply_reset": [Until(b"\r\n.\r\n"), RESET],
}


@pytest.mark.parametrize("cut", list(DATA_CUTS))
def test_attack_9_server_gone_during_data_is_a_temporary_failure(kind: str, cut: str) -> None:
    """RFC 5321 §3.8: a connection lost before the final reply is like a
    451: ``Disconnected`` (temporary), and no delivery is claimed."""
    outcome, server = session(kind, [*DATA_OPENING, *DATA_CUTS[cut]], options(), [Mail(LONG_BODY)])
    assert isinstance(outcome.error, errors.Disconnected), outcome.error
    assert outcome.error.temporary
    assert outcome.connected and outcome.results == []


BDAT_OPENING: list[Step] = [GREETING, Lines(1), EHLO_CHUNKING, Lines(2), ENVELOPE_OK]
BDAT_CUTS: dict[str, list[Step]] = {
    "mid_chunk": [Octets(5000), HANGUP],
    "mid_chunk_reset": [Octets(5000), RESET],
    "before_the_last_reply": [Until(b"line 019999 of the body\r\n"), HANGUP],
    "half_a_last_reply": [Until(b"line 019999 of the body\r\n"), b"250 2.0", HANGUP],
}


@pytest.mark.parametrize("cut", list(BDAT_CUTS))
def test_attack_9_server_gone_during_bdat_is_a_temporary_failure(kind: str, cut: str) -> None:
    outcome, server = session(
        kind, [*BDAT_OPENING, *BDAT_CUTS[cut]], options(chunking=True), [Mail(LONG_BODY)]
    )
    assert isinstance(outcome.error, errors.Disconnected), outcome.error
    assert outcome.error.temporary
    assert outcome.connected and outcome.results == []
