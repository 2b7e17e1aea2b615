"""Transcript conformance: every transcript against every server we have.

Theory of operation
-------------------
``tests/transcripts/*.txt`` are SMTP conversations (format: that
directory's ``README.rst``; runner: ``tests/transcript.py``).  Each one is
played over a real loopback socket against each of our three server
backends (sync, asyncio, trio), and every transcript that does not depend
on our policy against the private Postfix of ``tests/conftest.py`` too, so
the run shows where the two agree and where, and why, they do not.

Our servers are configured like the Postfix test instance
(``tests/peers/postfix-setup.sh``) wherever a shared transcript can see the
difference: STARTTLS with the test certificate, AUTH PLAIN, LOGIN and
CRAM-MD5 offered in cleartext too and accepting the same login, mail to
``test.example`` and ``discard.example`` accepted and any other domain
refused with Postfix's 554 5.7.1 unless the client authenticated, 1000
recipients per transaction and 20 mistakes before 421.  The message size
limit differs on purpose (1 MiB here, Postfix's 50 MiB there: the
transcripts read it from ``${MAX_SIZE}``), to keep the oversized-message
transcripts cheap against our three backends.

One server per backend serves every transcript (a module-scoped fixture);
each transcript opens its own connection.  The tests at the end check the
runner itself: that it fails on a wrong reply, a malformed one, a server
that does not close, and that the suite covers PROTOCOL.md §1-§3.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import certs
import peerlib
from smtpproto import Rcpt, Reply, ServerConfig, sasl
from smtpproto.flows import Handler, Reject, ServerTimeouts, Session
from test_adapter_matrix import KINDS, running
from transcript import (
    Target,
    Transcript,
    TranscriptError,
    TranscriptFailure,
    load_all,
    parse_text,
    run,
    standard_variables,
)

TRANSCRIPTS = load_all()

#: The login of our servers: the same as Postfix's (tests/peerlib.py).
USER = "test@test.example"
PASSWORD = "secret"
#: Our servers' message size limit (ServerConfig.max_message_size).
MAX_SIZE = 1_048_576
#: Postfix's message_size_limit in tests/peers/postfix-setup.sh.
POSTFIX_MAX_SIZE = 52_428_800
#: Domains the Postfix test instance accepts mail for without AUTH.
LOCAL_DOMAINS = ("test.example", "discard.example")


class PostfixLikeHandler(Handler):
    """The recipient and AUTH policy of the Postfix test instance."""

    def auth(self, session: Session, request: object) -> object:
        """Accept ``USER`` / ``PASSWORD`` for PLAIN, LOGIN and CRAM-MD5."""
        if isinstance(request, sasl.CheckPassword):
            return request.authcid == USER and request.password == PASSWORD
        if isinstance(request, sasl.LookupPassword):
            return PASSWORD if request.authcid == USER else None
        return None

    def rcpt(self, session: Session, rcpt: Rcpt) -> Reply | None:
        """Local domains and Postmaster always; elsewhere only after AUTH
        (Postfix: permit_sasl_authenticated, reject_unauth_destination)."""
        address = rcpt.forward_path
        domain = address.rpartition("@")[2].lower()
        if domain in LOCAL_DOMAINS or "@" not in address or session.auth_identity:
            return None
        raise Reject(Reply(code=554, enhanced="5.7.1", text=(f"<{address}>: Relay access denied",)))


CONFIG = ServerConfig(
    hostname="mx.test.example",
    starttls=True,
    auth_mechanisms=("PLAIN", "LOGIN", "CRAM-MD5"),
    auth_plaintext=True,  # Postfix: smtpd_tls_auth_only = no
    max_message_size=MAX_SIZE,
    max_recipients=1000,  # Postfix: smtpd_recipient_limit = 1000
    # Postfix: smtpd_hard_error_limit = 20, so the 21st mistake gets 421.
    max_errors=21,
)


@pytest.fixture(scope="module", params=KINDS)
def ours(request: pytest.FixtureRequest) -> Iterator[Target]:
    """One of our servers, configured like the Postfix test instance."""
    kind: str = request.param
    timeouts = ServerTimeouts(command=60.0, data=60.0)
    with running(
        kind, PostfixLikeHandler(), config=CONFIG, ssl_context=certs.server_context(), timeouts=timeouts
    ) as (host, port):
        yield Target(
            name=kind,
            family="ours",
            host=host,
            port=port,
            variables=standard_variables(USER, PASSWORD, MAX_SIZE),
            ssl_context=certs.client_context(),
        )


@pytest.fixture(scope="module")
def postfix_target(postfix: peerlib.Peer) -> Target:
    """The session's Postfix as a transcript target."""
    assert postfix.ca is not None
    return Target(
        name="postfix",
        family="postfix",
        host=postfix.host,
        port=postfix.port,
        variables=standard_variables(postfix.user, postfix.password, POSTFIX_MAX_SIZE),
        ssl_context=ssl.create_default_context(cafile=str(postfix.ca)),
    )


def _expect_failure(request: pytest.FixtureRequest, script: Transcript, target: Target) -> None:
    reason = script.xfail.get(target.name) or script.xfail.get(target.family)
    if reason is not None:
        request.applymarker(pytest.mark.xfail(reason=reason, raises=TranscriptFailure, strict=True))


@pytest.mark.parametrize("script", TRANSCRIPTS, ids=lambda t: t.name)
def test_transcript(request: pytest.FixtureRequest, ours: Target, script: Transcript) -> None:
    """The transcript holds against each of our server backends."""
    _expect_failure(request, script, ours)
    run(script, ours)


@pytest.mark.parametrize(
    "script", [t for t in TRANSCRIPTS if t.runs_against("postfix")], ids=lambda t: t.name
)
def test_transcript_postfix(
    request: pytest.FixtureRequest, postfix_target: Target, script: Transcript
) -> None:
    """The transcript holds against Postfix, with its recorded differences."""
    _expect_failure(request, script, postfix_target)
    run(script, postfix_target)


# -- the suite itself ---------------------------------------------------------------

#: PROTOCOL.md items the transcripts must cover (§1 paragraphs, §2 rows, §3
#: attack classes that apply to a server).
REQUIRED_COVERAGE = {
    "§1 Lines", "§1 Commands", "§1 Grammar", "§1 Replies", "§1 Order", "§1 Limits",
    "§1 Dot-stuffing",
    "§2 PIPELINING", "§2 SIZE", "§2 8BITMIME", "§2 SMTPUTF8", "§2 STARTTLS", "§2 AUTH",
    "§2 CHUNKING / BINARYMIME", "§2 DSN", "§2 ENHANCEDSTATUSCODES",
    "§3.1 Inbound smuggling", "§3.3 STARTTLS injection", "§3.5 Parser abuse",
    "§3.6 AUTH abuse", "§3.7 Resource exhaustion",
}  # fmt: skip


def test_suite_covers_protocol_sections() -> None:
    """At least 60 transcripts, covering every required PROTOCOL.md item."""
    assert len(TRANSCRIPTS) >= 60
    covered = {item for t in TRANSCRIPTS for item in t.protocol}
    assert REQUIRED_COVERAGE - covered == set()
    names = [t.name for t in TRANSCRIPTS]
    assert len(names) == len(set(names))
    assert all(t.name.split("-")[0] in ("core", "ext", "attack") for t in TRANSCRIPTS)


def test_suite_runs_most_transcripts_against_postfix() -> None:
    """Policy-only transcripts are the exception: most are shared with Postfix."""
    shared = [t for t in TRANSCRIPTS if t.shared]
    assert len(shared) >= 60
    assert all(t.differs for t in TRANSCRIPTS if t.xfail.get("postfix"))


def _parse(text: str) -> Transcript:
    return parse_text(text, Path("sample.txt"))


HEAD = "title: t\nprotocol: §1 Order\nrfc: RFC 5321 §4.1.4\n\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("protocol: §1 Order\nrfc: x\n\nS: 220 .*\n", "title: is missing"),
        (HEAD + "S: 220 .*\nsubject: late header\n", "not a header or a step"),
        (HEAD + "C: ${NO_SUCH}\n", "unknown variable"),
        (HEAD + "C> bad \\q escape\n", "unknown escape"),
        (HEAD + "S: (unbalanced\n", "bad pattern"),
        (HEAD + "S[postfix]: 250 .*\n", "need a <target>-differs"),
        (HEAD.replace("\n\n", "\npostfix-differs: x\n\n") + "S[ours]: 2.*\n", "needs [postfix] steps"),
        (HEAD + "X: dance\n", "X: takes"),
        (HEAD.replace("\n\n", "\ntags: tls nonsense\n\n") + "S: 220 .*\n", "unknown tags"),
        (HEAD.replace("§1 Order", "Order") + "S: 220 .*\n", "is not '§N Name'"),
        (HEAD + "S has*3: x\n", "not a header or a step"),
        (HEAD, "no steps"),
    ],
    ids=[
        "no-title", "late-header", "unknown-variable", "bad-escape", "bad-pattern",
        "restricted-without-reason", "postfix-reason-without-steps", "unknown-directive",
        "unknown-tag", "bad-protocol-item", "count-on-has", "no-steps",
    ],  # fmt: skip
)
def test_parser_rejects_malformed_transcripts(text: str, message: str) -> None:
    """A typo in a transcript fails loudly instead of testing less."""
    with pytest.raises(TranscriptError, match=message.replace("[", r"\[").replace("*", r"\*")):
        _parse(text)


def test_target_plays_ours_steps_unless_it_has_its_own() -> None:
    """Restricted steps: [ours] is the default for an MTA without own steps."""
    script = _parse(
        HEAD.replace("\n\n", "\npostfix-differs: why\n\n")
        + "C: NOOP\nS[ours]: 250 .*\nS[postfix]: 251 .*\nS[trio]: 252 .*\n"
    )
    def kinds(name: str, family: str) -> list[str]:
        target = Target(name=name, family=family, host="", port=0)
        return [step.text for step in script.steps if script.plays(step, target)]

    assert kinds("sync", "ours") == ["NOOP", "250 .*"]
    assert kinds("trio", "ours") == ["NOOP", "250 .*", "252 .*"]
    assert kinds("postfix", "postfix") == ["NOOP", "251 .*"]
    assert kinds("exim", "exim") == ["NOOP", "250 .*"]


class _ScriptedPeer:
    """A loopback server that sends fixed bytes after each line it reads."""

    def __init__(self, greeting: bytes, answers: list[bytes], close: bool = True) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.greeting = greeting
        self.answers = answers
        self.close = close
        self.thread = threading.Thread(target=self._serve)
        self.thread.start()

    @property
    def port(self) -> int:
        port: int = self.listener.getsockname()[1]
        return port

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(10)
            conn.sendall(self.greeting)
            reader = conn.makefile("rb")
            for answer in self.answers:
                if not reader.readline():
                    return
                conn.sendall(answer)
            if not self.close:
                reader.readline()  # hold the connection open until the client goes

    def stop(self) -> None:
        self.thread.join(15)
        self.listener.close()
        assert not self.thread.is_alive()


@pytest.mark.parametrize(
    ("greeting", "answers", "steps", "message"),
    [
        (b"220 ok\r\n", [b"250 2.0.0 OK\r\n"], "C: NOOP\nS: 251 .*\n", "does not match"),
        (b"220 ok\n", [], "", "bare LF"),
        (b"220-one\r\n221 two\r\n", [], "", "code changed"),
        (b"220 " + b"x" * 600 + b"\r\n", [], "", "RFC 5321 §4.5.3.1.5"),
        (b"2x0 ok\r\n", [], "", "malformed reply line"),
        (b"220 ok\r\n", [b"250 OK\r\n"], "C: NOOP\nS: 250 .*\nX: close\n", "did not close"),
        (b"220 ok\r\n", [b"250 OK\r\n250 again\r\n"], "C: NOOP\nS: 250 .*\n", "more than the transcript"),
        (b"220 ok\r\n", [b"250 OK\r\n"], "C: NOOP\nS: 250 .*\nS has: 250 STARTTLS\n", "no line of the last"),
    ],
    ids=["mismatch", "bare-lf", "code-change", "long-line", "malformed", "no-close", "extra-reply", "has"],
)
def test_runner_fails_on_wrong_replies(
    greeting: bytes, answers: list[bytes], steps: str, message: str
) -> None:
    """The runner fails on every kind of wrong server behaviour it checks."""
    holds_open = "X: close" in steps
    peer = _ScriptedPeer(greeting, answers, close=not holds_open)
    try:
        # The runner waits its whole timeout for a close that never comes:
        # shorter there, yet long enough for the scripted peer's first reply.
        timeout = 3.0 if holds_open else 10.0
        target = Target(name="scripted", family="ours", host="127.0.0.1", port=peer.port, timeout=timeout)
        with pytest.raises(TranscriptFailure, match=message):
            run(_parse(HEAD + "S: 220 .*\n" + steps), target)
    finally:
        peer.stop()
