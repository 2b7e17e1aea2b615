"""Our client against real SMTP servers: Postfix, Exim, aiosmtpd (SMTP and
LMTP) and Postfix's smtp-sink, with each client adapter (blocking, asyncio,
trio).

Theory of operation
-------------------
Postfix, Exim and smtp-sink are the session fixtures of ``conftest.py``
(started once, on loopback, stopped by pid); aiosmtpd runs in this process,
one ``Controller`` thread per configuration, started once per module.  A
second Postfix with a small ``message_size_limit`` shows SIZE (RFC 1870).

:func:`drive` runs one session with one adapter: connect, send each
:class:`Job` (a refusal is kept as the result and the session goes on),
QUIT.  It keeps the protocol trace our client logs (``C:``/``S:`` lines,
SASL data redacted) as the transcript, and the adapter's ``session``,
whose negotiation record (``tls_method``, ``auth_mechanism``) and the
``SendResult`` flags (``pipelined``, ``chunked``, ``smtputf8``) are what
the test asserts and what it writes into the interoperability matrix
(``interop.record``) once everything passed.

Every delivered message is compared byte for byte with what was sent,
after ``peerlib.normalised`` (CRLF, final CRLF) and ``peerlib.body_of``
(the trace headers the server added, removed): Postfix and Exim store to a
Maildir, smtp-sink dumps each transaction to a file, aiosmtpd hands the
envelope to our handler.  Where the peer keeps its own record of the
session, the test reads it too, so that what our client says it negotiated
is checked against what the server saw: the ``with`` protocol of the
Received field (RFC 3848, RFC 6531 §3.7.3), Postfix's ``sasl_method=`` log
field, Exim's ``<=`` log line (``P=``, ``X=``, ``A=``, and ``K`` for
CHUNKING), smtp-sink's ``X-Mail-Args``/``X-Rcpt-Args``, aiosmtpd's
envelope.

Peer deviations found are kept as tests of their own (``test_peer_*``), each
with the transcript or stored text that shows it.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import email.utils
import functools
import logging
import re
import ssl
import subprocess
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio  # type: ignore[import-untyped, unused-ignore]

import certs
import interop
import peerlib
from smtpproto.flows import ClientOptions, ClientSession, DsnOptions, SendResult, Timeouts, TLSMode, errors
from smtpproto.sync import SMTPClient

T = TypeVar("T")

KINDS = ["sync", "asyncio", "trio"]
#: Generous: a loaded machine must not turn into a failure, and nothing hangs.
TIMEOUTS = Timeouts.all(30)
HELO = "client.test.example"
SENDER = "sender@test.example"
#: Refused unless authenticated, by both MTAs' configurations.
ELSEWHERE = "someone@elsewhere.example"
#: The Exim authenticator (tests/peers/exim.conf.in) that serves each mechanism.
EXIM_AUTHENTICATORS = {"PLAIN": "plain", "LOGIN": "login", "CRAM-MD5": "cram"}


# -- messages --------------------------------------------------------------------


def message(body: str, *, subject: str = "interop", to: str = "rcpt@test.example", eol: str = "\r\n") -> tuple[bytes, str]:
    """A message with a unique Message-ID (returned too), a Date and a
    From, so that the MTAs add no header of their own."""
    message_id = f"<{uuid.uuid4().hex}@{HELO}>"
    headers = [
        f"From: Sender <{SENDER}>",
        f"To: {to}",
        f"Subject: {subject}",
        f"Date: {email.utils.formatdate()}",
        f"Message-ID: {message_id}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    return (eol.join(headers) + eol + eol + body).encode(), message_id


#: Leading dots (each must be stuffed, RFC 5321 §4.5.2), lines that are a
#: lone dot, lines of 998 octets (the §4.5.3.1.6 limit; the stuffing dot is
#: not counted), bare LF line ends, and no line end at the very end.
DOTS_BODY = "\n".join(
    [".leading dot", "..two dots", ".", "..", "", ". space", "x" * 998, "." + "y" * 997, "last line, no line end"]
)
UTF8_RCPT = "j\u00fcrgen@test.example"
UTF8_BODY = "Gr\u00fc\u00dfe aus K\u00f6ln, \u4f60\u597d, \u0417\u0434\u0440\u0430\u0432\u0441\u0442\u0432\u0443\u0439\u0442\u0435.\r\n"


def big_body() -> str:
    """About 200 KB: four 64 KiB BDAT chunks, pipelined (RFC 3030 §4.2)."""
    return "".join(f"line {n:05d} " + "abcdefghij" * 7 + "\r\n" for n in range(2600))


# -- one session with one adapter --------------------------------------------------


@dataclass
class Job:
    """One message to send: bytes, or a list of chunks (size not declared)."""

    content: bytes | list[bytes]
    recipients: list[str]
    sender: str = SENDER
    dsn: DsnOptions | None = None


@dataclass
class Outcome:
    """What one session did."""

    session: ClientSession
    #: One per job: the result, or the refusal raised.
    results: list[SendResult | errors.SMTPError] = field(default_factory=list)
    #: What stopped connect(), if anything did.
    error: errors.SMTPError | None = None
    #: Our client's protocol trace (``C: ...`` and ``S: ...``).
    transcript: list[str] = field(default_factory=list)

    def sent(self) -> list[SendResult]:
        """The results of the jobs that were delivered (at least in part)."""
        return [r for r in self.results if isinstance(r, SendResult)]


class _Trace(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith(("C: ", "S: ")):
            self.lines.append(text)


@functools.cache
def client_context() -> ssl.SSLContext:
    """Trusts the test CA that signed every peer's certificate."""
    return certs.client_context()


def _over(exc: errors.SMTPError) -> bool:
    """Did *exc* end the session (the client closed the connection)?"""
    return isinstance(exc, (errors.Disconnected, errors.Timeout, errors.ProtocolFailure))


def drive(kind: str, address: tuple[str, int], options: ClientOptions, jobs: list[Job]) -> Outcome:
    """Run one session with the *kind* adapter: connect, send *jobs*, QUIT."""
    host, port = address
    lines: list[str] = []
    trace = _Trace(lines)
    logger = logging.getLogger("smtpproto")
    level = logger.level
    logger.addHandler(trace)
    logger.setLevel(logging.DEBUG)
    try:
        if kind == "sync":
            outcome = _drive_sync(host, port, options, jobs)
        elif kind == "asyncio":
            from smtpproto.asyncio import AsyncSMTPClient

            outcome = asyncio.run(_drive_async(AsyncSMTPClient, host, port, options, jobs))
        else:
            assert kind == "trio", kind
            from smtpproto.trio import TrioSMTPClient

            outcome = trio.run(_drive_async, TrioSMTPClient, host, port, options, jobs)
    finally:
        logger.removeHandler(trace)
        logger.setLevel(level)
    outcome.transcript = lines
    return outcome


def _drive_sync(host: str, port: int, options: ClientOptions, jobs: list[Job]) -> Outcome:
    client = SMTPClient(host, port, options=options, ssl_context=client_context())
    outcome = Outcome(client.session)
    try:
        client.connect()
    except errors.SMTPError as exc:
        outcome.error = exc
        return outcome
    try:
        for job in jobs:
            try:
                outcome.results.append(client.send_message(job.content, job.sender, job.recipients, dsn=job.dsn))
            except errors.SMTPError as exc:
                outcome.results.append(exc)
                if _over(exc):
                    break
    finally:
        client.quit()
    return outcome


async def _drive_async(client_class: Any, host: str, port: int, options: ClientOptions, jobs: list[Job]) -> Outcome:
    """The same for AsyncSMTPClient and TrioSMTPClient (one interface)."""
    client = client_class(host, port, options=options, ssl_context=client_context())
    outcome = Outcome(client.session)
    try:
        await client.connect()
    except errors.SMTPError as exc:
        outcome.error = exc
        return outcome
    try:
        for job in jobs:
            try:
                outcome.results.append(
                    await client.send_message(job.content, job.sender, job.recipients, dsn=job.dsn)
                )
            except errors.SMTPError as exc:
                outcome.results.append(exc)
                if _over(exc):
                    break
    finally:
        await client.quit()
    return outcome


def options(**kwargs: Any) -> ClientOptions:
    """ClientOptions with this file's EHLO name, certificate name and timeouts."""
    kwargs.setdefault("helo_name", HELO)
    kwargs.setdefault("server_hostname", "localhost")  # the name in the test certificate
    kwargs.setdefault("timeouts", TIMEOUTS)
    return ClientOptions(**kwargs)


def delivered(outcome: Outcome) -> list[SendResult]:
    """Every job's result, failing the test (with the transcript) when one raised."""
    assert outcome.error is None, (outcome.error, outcome.transcript)
    failures = [r for r in outcome.results if not isinstance(r, SendResult)]
    assert not failures, (failures, outcome.transcript)
    return outcome.sent()


def record(request: pytest.FixtureRequest, peer: str, kind: str, scenario: str, outcome: Outcome) -> None:
    """Write what this session was observed to negotiate into the matrix."""
    sent = outcome.sent()
    interop.record(
        peer=peer,
        direction=interop.CLIENT,
        ours=kind,
        scenario=scenario,
        test=request.node.nodeid,
        tls=outcome.session.tls_method or "",
        auth=outcome.session.auth_mechanism or "",
        pipelining=any(r.pipelined for r in sent),
        chunking=any(r.chunked for r in sent),
        smtputf8=any(r.smtputf8 for r in sent),
    )


# -- what the peers kept ----------------------------------------------------------


def poll(find: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    """Wait for *find* to return something (a peer writes asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        found = find()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(0.05)


def received_with(raw: bytes) -> str:
    """The protocol in the ``with`` clause of the newest Received field."""
    parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
    newest = str(parsed.get_all("Received", [""])[0])
    match = re.search(r"\bwith\s+(\S+)", newest)
    assert match is not None, newest
    return match.group(1).rstrip(";")


def registered_protocol(*, smtputf8: bool, tls: bool, auth: bool) -> str:
    """The IANA "Mail Transmission Types" name for a session (RFC 3848 §2:
    ESMTP[S][A]; RFC 6531 §3.7.3: UTF8SMTP[S][A])."""
    return ("UTF8SMTP" if smtputf8 else "ESMTP") + ("S" if tls else "") + ("A" if auth else "")


def exim_protocol(*, smtputf8: bool, tls: bool, auth: bool) -> str:
    """The name Exim gives the same session (``P=`` and Received): its own
    ``utf8esmtp...`` where RFC 6531 registers ``UTF8SMTP...``."""
    return ("utf8esmtp" if smtputf8 else "esmtp") + ("s" if tls else "") + ("a" if auth else "")


def stored(peer: peerlib.Peer, message_id: str) -> bytes:
    """The message the MTA stored, waited for."""
    return peer.find(message_id)


def log_line(path: Path, pattern: str) -> str:
    """The first line of the log at *path* matching *pattern* (waited for)."""
    regex = re.compile(pattern)

    def find() -> str | None:
        if not path.exists():
            return None
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if regex.search(line):
                return line
        return None

    return poll(find, f"log line /{pattern}/ in {path.name}")


def postfix_queue_id(result: SendResult) -> str:
    """Postfix's queue id, from its reply after the data (``queued as ID``)."""
    assert result.data_reply is not None
    match = re.search(r"queued as (\w+)", " ".join(result.data_reply.text))
    assert match is not None, result.data_reply
    return match.group(1)


def exim_id(result: SendResult) -> str:
    """Exim's message id, from its reply after the data (``OK id=ID``)."""
    assert result.data_reply is not None
    match = re.search(r"\bid=(\S+)", " ".join(result.data_reply.text))
    assert match is not None, result.data_reply
    return match.group(1)


def exim_arrival(peer: peerlib.Peer, result: SendResult) -> dict[str, str]:
    """Exim's ``<=`` log line for the message of *result*, as fields
    (``P``, ``X``, ``A``, ``S``...; a bare flag such as ``K`` maps to "")."""
    message = exim_id(result)
    line = log_line(peer.base / "log" / "mainlog", rf" {re.escape(message)} <= ")
    fields: dict[str, str] = {}
    for word in line.split(f" {message} <= ", 1)[1].split()[1:]:
        name, _, value = word.partition("=")
        fields.setdefault(name, value)
    return fields


@functools.cache
def postfix_version() -> str:
    """Postfix's ``mail_version`` (smtp-sink ships with it)."""
    result = subprocess.run(
        ["postconf", "-d", "-h", "mail_version"], capture_output=True, text=True, timeout=30, check=True
    )
    return result.stdout.strip()


def exim_name(outcome: Outcome) -> str:
    """``Exim 4.96``, from the greeting (``220 host ESMTP Exim 4.96 ...``)."""
    assert outcome.session.greeting is not None
    match = re.search(r"\bExim (\S+)", " ".join(outcome.session.greeting.text))
    assert match is not None, outcome.session.greeting
    return f"Exim {match.group(1)}"


def mail_line(outcome: Outcome, index: int = 0) -> str:
    """The *index*-th MAIL command of the transcript."""
    return [line for line in outcome.transcript if line.startswith("C: MAIL FROM:")][index]


# == Postfix ======================================================================


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_postfix_starttls_auth(
    postfix: peerlib.Peer, kind: str, mechanism: str, request: pytest.FixtureRequest
) -> None:
    first, first_id = message("First message.\r\nSecond line.\r\n")
    second, second_id = message("Second message, LF line ends.\nSecond line.\n", eol="\n")
    outcome = drive(
        kind,
        (postfix.host, postfix.port),
        options(tls=TLSMode.REQUIRED, username=postfix.user, password=postfix.password, mechanism=mechanism),
        [Job(first, ["rcpt@test.example", "other@test.example"]), Job(second, ["rcpt@test.example"])],
    )
    results = delivered(outcome)
    assert outcome.session.tls_method == "STARTTLS"
    assert outcome.session.auth_mechanism == mechanism
    assert [(r.pipelined, r.chunked, r.smtputf8) for r in results] == [(True, False, False)] * 2
    assert results[0].accepted == ("rcpt@test.example", "other@test.example")
    assert f"SIZE={len(first)}" in mail_line(outcome).split()  # declared (RFC 1870 §6)
    for sent, message_id in [(first, first_id), (second, second_id)]:
        raw = stored(postfix, message_id)
        assert peerlib.body_of(raw) == peerlib.normalised(sent)
        assert received_with(raw) == registered_protocol(smtputf8=False, tls=True, auth=True)
    # Postfix's own log names the mechanism it ran.
    line = log_line(postfix.base / "maillog", rf"{postfix_queue_id(results[0])}: client=")
    assert f"sasl_method={mechanism}," in line and f"sasl_username={postfix.user}" in line
    record(request, f"Postfix {postfix_version()}", kind, f"STARTTLS + AUTH {mechanism}, 2 messages", outcome)


@pytest.mark.parametrize("kind", KINDS)
def test_postfix_chunking_smtputf8(postfix: peerlib.Peer, kind: str, request: pytest.FixtureRequest) -> None:
    utf8, utf8_id = message(UTF8_BODY, subject="Gr\u00fc\u00dfe", to=UTF8_RCPT)
    big, big_id = message(big_body())
    outcome = drive(
        kind,
        (postfix.host, postfix.port),
        options(tls=TLSMode.REQUIRED, username=postfix.user, password=postfix.password, chunking=True),
        [Job(utf8, [UTF8_RCPT]), Job(big, ["rcpt@test.example"])],
    )
    results = delivered(outcome)
    assert outcome.session.tls_method == "STARTTLS"
    assert outcome.session.auth_mechanism == "CRAM-MD5"  # the strongest both offer
    assert [(r.pipelined, r.chunked, r.smtputf8) for r in results] == [(True, True, True), (True, True, False)]
    assert mail_line(outcome, 0).split()[-2:] == ["BODY=8BITMIME", "SMTPUTF8"]  # no BINARYMIME offered
    assert len([line for line in outcome.transcript if line.startswith("C: BDAT ")]) == 1 + 4
    raw = stored(postfix, utf8_id)
    assert peerlib.body_of(raw) == peerlib.normalised(utf8)
    assert received_with(raw) == registered_protocol(smtputf8=True, tls=True, auth=True)
    assert f"X-Original-To: {UTF8_RCPT}\n".encode() in raw  # the UTF-8 address, as it was
    raw = stored(postfix, big_id)
    assert peerlib.body_of(raw) == peerlib.normalised(big)
    assert received_with(raw) == registered_protocol(smtputf8=False, tls=True, auth=True)
    record(request, f"Postfix {postfix_version()}", kind, "STARTTLS + AUTH, BDAT, SMTPUTF8", outcome)


@pytest.mark.parametrize("kind", KINDS)
def test_postfix_dsn(postfix: peerlib.Peer, kind: str, request: pytest.FixtureRequest) -> None:
    # ENVID is xtext on the wire (RFC 3461 §4): "+" and "=" must be escaped.
    envid = f"env+{uuid.uuid4().hex[:12]}=id"
    sent, message_id = message("Tell me when it arrives.\r\n", to="dsn@test.example")
    dsn = DsnOptions(ret="HDRS", envid=envid, notify=("SUCCESS",))
    outcome = drive(
        kind, (postfix.host, postfix.port), options(), [Job(sent, ["dsn@test.example"], dsn=dsn)]
    )
    delivered(outcome)
    assert outcome.session.tls_method == "STARTTLS"  # opportunistic
    xtext = envid.replace("+", "+2B").replace("=", "+3D")
    assert mail_line(outcome).endswith(f" RET=HDRS ENVID={xtext}")
    assert "C: RCPT TO:<dsn@test.example> NOTIFY=SUCCESS" in outcome.transcript
    assert peerlib.body_of(stored(postfix, message_id)) == peerlib.normalised(sent)

    # NOTIFY=SUCCESS: Postfix reports the delivery to the sender (RFC 3464),
    # with our envelope identifier and, for RET=HDRS, the headers only.
    def report() -> email.message.Message | None:
        for raw in postfix.stored():
            if f"Original-Envelope-Id: {envid}".encode() in raw:
                return email.message_from_bytes(raw, policy=email.policy.compat32)
        return None

    dsn_report = poll(report, f"delivery report for ENVID {envid}")
    assert dsn_report.get_content_type() == "multipart/report"
    payload = dsn_report.get_payload()
    assert isinstance(payload, list)
    parts = [part for part in payload if isinstance(part, email.message.Message)]
    assert [part.get_content_type() for part in parts] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"
    ]
    status = parts[1].as_string()
    assert "Action: delivered" in status and "Final-Recipient: rfc822; dsn@test.example" in status
    returned = parts[2].as_string()
    assert f"Message-ID: {message_id}" in returned and "Tell me when it arrives" not in returned
    record(request, f"Postfix {postfix_version()}", kind, "STARTTLS, DSN (NOTIFY, RET, ENVID)", outcome)


@pytest.mark.parametrize("kind", KINDS)
def test_postfix_refusals_dots_and_several_messages(
    postfix: peerlib.Peer, kind: str, request: pytest.FixtureRequest
) -> None:
    dots, dots_id = message(DOTS_BODY, eol="\n")
    after, after_id = message("After the refusals.\r\n")
    outcome = drive(
        kind,
        (postfix.host, postfix.port),
        options(tls=TLSMode.NEVER),  # unauthenticated: relaying is refused
        [Job(dots, ["rcpt@test.example", ELSEWHERE]), Job(after, [ELSEWHERE]), Job(after, ["rcpt@test.example"])],
    )
    assert outcome.error is None, outcome.transcript
    partly, refused, last = outcome.results
    assert isinstance(partly, SendResult) and isinstance(last, SendResult)
    assert partly.accepted == ("rcpt@test.example",)
    relay = partly.refused[ELSEWHERE]
    assert (relay.code, relay.enhanced) == (554, "5.7.1") and "Relay access denied" in relay.text[0]
    assert isinstance(refused, errors.RecipientsRefused) and refused.replies[ELSEWHERE].code == 554
    assert outcome.session.tls_method is None and outcome.session.auth_mechanism is None
    raw = stored(postfix, dots_id)
    assert peerlib.body_of(raw) == peerlib.normalised(dots)
    assert received_with(raw) == registered_protocol(smtputf8=False, tls=False, auth=False)
    assert peerlib.body_of(stored(postfix, after_id)) == peerlib.normalised(after)
    record(request, f"Postfix {postfix_version()}", kind, "cleartext, refused recipients, dot-stuffing", outcome)


@pytest.fixture(scope="module")
def postfix_small(peer_root: Path, peer_certs: tuple[Path, Path, Path]) -> Iterator[peerlib.Peer]:
    """A second Postfix whose SIZE limit is 20000 octets."""
    peerlib.require("Postfix", executables=["postfix", "saslpasswd2"], root=True)
    ca, cert, key = peer_certs
    peer = peerlib.start_postfix(peer_root / "postfix-small", cert, key, ca, main_cf={"message_size_limit": "20000"})
    yield peer
    peer.stop()


@pytest.mark.parametrize("kind", KINDS)
def test_postfix_size_limit(postfix_small: peerlib.Peer, kind: str, request: pytest.FixtureRequest) -> None:
    peer = postfix_small
    body = "".join(f"{n:04d} " + "z" * 70 + "\r\n" for n in range(400))  # about 30 KB
    too_big, _ = message(body)
    small, small_id = message("Small enough.\r\n")
    undeclared, undeclared_id = message(body)
    chunks = [undeclared[i : i + 4096] for i in range(0, len(undeclared), 4096)]
    outcome = drive(
        kind,
        (peer.host, peer.port),
        options(tls=TLSMode.NEVER),
        [Job(too_big, ["rcpt@test.example"]), Job(small, ["rcpt@test.example"]), Job(chunks, ["rcpt@test.example"])],
    )
    assert outcome.error is None, outcome.transcript
    assert outcome.session.conn.capabilities.size == 20000
    up_front, fits, after_data = outcome.results
    # Declared too big: refused at MAIL (RFC 1870 §6.1), content never sent.
    assert isinstance(up_front, errors.SenderRefused), outcome.transcript
    assert (up_front.reply.code, up_front.reply.enhanced) == (552, "5.3.4")
    assert f"SIZE={len(too_big)}" in mail_line(outcome, 0).split()
    first_end = outcome.transcript.index(mail_line(outcome, 1))
    assert "C: <message content>" not in outcome.transcript[:first_end]
    # The session goes on.
    assert isinstance(fits, SendResult) and fits.accepted == ("rcpt@test.example",)
    assert peerlib.body_of(stored(peer, small_id)) == peerlib.normalised(small)
    # Size not declared (streamed chunks): refused after the data instead.
    assert "SIZE=" not in mail_line(outcome, 2)
    assert isinstance(after_data, errors.MessageRefused), outcome.transcript
    assert after_data.reply.code == 552 and after_data.step == "message"
    assert undeclared_id.encode() not in b"".join(peer.stored())
    record(request, f"Postfix {postfix_version()}", kind, "SIZE limit: refused at MAIL, or after undeclared data", outcome)


# == Exim =========================================================================


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_exim_starttls_auth(exim: peerlib.Peer, kind: str, mechanism: str, request: pytest.FixtureRequest) -> None:
    first, first_id = message("First message.\r\n")
    second, second_id = message("Second message, LF line ends.\n", eol="\n")
    outcome = drive(
        kind,
        (exim.host, exim.port),
        options(tls=TLSMode.REQUIRED, username=exim.user, password=exim.password, mechanism=mechanism),
        [Job(first, ["rcpt@test.example", "other@test.example"]), Job(second, ["rcpt@test.example"])],
    )
    results = delivered(outcome)
    assert outcome.session.tls_method == "STARTTLS"
    assert outcome.session.auth_mechanism == mechanism
    assert [(r.pipelined, r.chunked, r.smtputf8) for r in results] == [(True, False, False)] * 2
    for sent, message_id, result in [(first, first_id, results[0]), (second, second_id, results[1])]:
        raw = stored(exim, message_id)
        assert peerlib.body_of(raw) == peerlib.normalised(sent)
        assert received_with(raw).upper() == registered_protocol(smtputf8=False, tls=True, auth=True)
        arrival = exim_arrival(exim, result)
        assert arrival["P"] == "esmtpsa" and arrival["X"].startswith("TLS")
        assert arrival["A"] == f"{EXIM_AUTHENTICATORS[mechanism]}:{exim.user}"
        assert "K" not in arrival  # DATA, not BDAT
    record(request, exim_name(outcome), kind, f"STARTTLS + AUTH {mechanism}, 2 messages", outcome)


@pytest.mark.parametrize("kind", KINDS)
def test_exim_chunking_smtputf8(exim: peerlib.Peer, kind: str, request: pytest.FixtureRequest) -> None:
    utf8, utf8_id = message(UTF8_BODY, subject="Gr\u00fc\u00dfe", to=UTF8_RCPT)
    big, big_id = message(big_body())
    outcome = drive(
        kind,
        (exim.host, exim.port),
        options(tls=TLSMode.REQUIRED, username=exim.user, password=exim.password, chunking=True),
        [Job(utf8, [UTF8_RCPT]), Job(big, ["rcpt@test.example"])],
    )
    results = delivered(outcome)
    assert outcome.session.tls_method == "STARTTLS" and outcome.session.auth_mechanism == "CRAM-MD5"
    assert [(r.pipelined, r.chunked, r.smtputf8) for r in results] == [(True, True, True), (True, True, False)]
    raw = stored(exim, utf8_id)
    assert peerlib.body_of(raw) == peerlib.normalised(utf8)
    assert f"Envelope-to: {UTF8_RCPT}\n".encode() in raw
    arrival = exim_arrival(exim, results[0])
    assert arrival["P"] == exim_protocol(smtputf8=True, tls=True, auth=True)
    assert "K" in arrival  # Exim's flag: the message came by BDAT
    assert peerlib.body_of(stored(exim, big_id)) == peerlib.normalised(big)
    # (Its P= says utf8esmtpsa again: see the test_peer_exim_* tests below.)
    assert "K" in exim_arrival(exim, results[1])
    record(request, exim_name(outcome), kind, "STARTTLS + AUTH, BDAT, SMTPUTF8", outcome)


@pytest.mark.parametrize("kind", KINDS)
def test_exim_refusals_dots_and_several_messages(exim: peerlib.Peer, kind: str, request: pytest.FixtureRequest) -> None:
    dots, dots_id = message(DOTS_BODY, eol="\n")
    after, after_id = message("After the refusals.\r\n")
    outcome = drive(
        kind,
        (exim.host, exim.port),
        options(tls=TLSMode.NEVER),
        [Job(dots, ["rcpt@test.example", ELSEWHERE]), Job(after, [ELSEWHERE]), Job(after, ["rcpt@test.example"])],
    )
    assert outcome.error is None, outcome.transcript
    partly, refused, last = outcome.results
    assert isinstance(partly, SendResult) and isinstance(last, SendResult)
    assert partly.accepted == ("rcpt@test.example",)
    assert partly.refused[ELSEWHERE].code == 550 and "Relay access denied" in partly.refused[ELSEWHERE].text[0]
    assert isinstance(refused, errors.RecipientsRefused) and refused.replies[ELSEWHERE].code == 550
    raw = stored(exim, dots_id)
    assert peerlib.body_of(raw) == peerlib.normalised(dots)
    assert exim_arrival(exim, partly)["P"] == "esmtp"
    assert peerlib.body_of(stored(exim, after_id)) == peerlib.normalised(after)
    record(request, exim_name(outcome), kind, "cleartext, refused recipients, dot-stuffing", outcome)


# == aiosmtpd =====================================================================


@dataclass
class Arrival:
    """One envelope as aiosmtpd handed it to :class:`Mailbox`."""

    sender: str
    recipients: list[str]
    mail_options: list[str]
    content: bytes
    tls: bool
    authenticated: bool


class Mailbox:
    """An aiosmtpd handler: keeps each envelope; refuses ``unknown@`` at RCPT
    (550 5.1.1); in LMTP answers each recipient after the data (452 4.2.2
    for ``full@``) when *per_recipient*, or once, as aiosmtpd's own LMTP
    does, when not."""

    def __init__(self, *, lmtp: bool = False, per_recipient: bool = True) -> None:
        self.lmtp = lmtp
        self.per_recipient = per_recipient
        self.arrivals: list[Arrival] = []
        self.mechanisms: list[str] = []
        self.lock = threading.Lock()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
        if address.startswith("unknown@"):
            return f"550 5.1.1 <{address}>: no such user"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        arrival = Arrival(
            sender=envelope.mail_from,
            recipients=list(envelope.rcpt_tos),
            mail_options=list(envelope.mail_options),
            content=envelope.original_content,
            tls=server.transport.get_extra_info("ssl_object") is not None,
            authenticated=bool(session.authenticated),
        )
        with self.lock:
            self.arrivals.append(arrival)
        if self.lmtp and self.per_recipient:
            # RFC 2033 §4.2: one reply per accepted recipient, in order.
            return "\r\n".join(
                f"452 4.2.2 <{r}>: mailbox full" if r.startswith("full@") else f"250 2.0.0 <{r}> delivered"
                for r in envelope.rcpt_tos
            )
        return "250 2.0.0 OK"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"test", b"secret")
        if ok:
            with self.lock:
                self.mechanisms.append(mechanism)
        return AuthResult(success=ok)

    def take(self) -> list[Arrival]:
        with self.lock:
            arrivals, self.arrivals = self.arrivals, []
            return arrivals


@dataclass
class AioServer:
    """A running aiosmtpd controller and its handler."""

    host: str
    port: int
    mailbox: Mailbox
    name: str



def _aiosmtpd(mailbox: Mailbox, *, lmtp: bool = False, **kwargs: Any) -> Iterator[AioServer]:
    """Run an aiosmtpd controller (its own thread and event loop) around *mailbox*."""
    peerlib.require("aiosmtpd", modules=["aiosmtpd"])
    import aiosmtpd
    from aiosmtpd.controller import Controller
    from aiosmtpd.lmtp import LMTP

    class LMTPController(Controller):
        def factory(self) -> Any:
            return LMTP(self.handler, **self.SMTP_kwargs)

    port = peerlib.free_port()
    kind = LMTPController if lmtp else Controller
    controller = kind(
        mailbox, hostname="127.0.0.1", port=port, server_hostname="aiosmtpd.test.example", ready_timeout=30, **kwargs
    )
    controller.start()
    try:
        yield AioServer("127.0.0.1", port, mailbox, f"aiosmtpd {aiosmtpd.__version__}")
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def aiosmtpd_smtp() -> Iterator[AioServer]:
    """aiosmtpd's SMTP with STARTTLS, and AUTH PLAIN/LOGIN once under TLS."""
    mailbox = Mailbox()
    yield from _aiosmtpd(mailbox, tls_context=certs.server_context(), authenticator=mailbox.authenticate)


@pytest.fixture(scope="module")
def aiosmtpd_implicit() -> Iterator[AioServer]:
    """aiosmtpd's SMTP over TLS from the first byte."""
    yield from _aiosmtpd(Mailbox(), ssl_context=certs.server_context())


@pytest.fixture(scope="module")
def aiosmtpd_lmtp() -> Iterator[AioServer]:
    """aiosmtpd's LMTP, with a handler that answers each recipient."""
    yield from _aiosmtpd(Mailbox(lmtp=True), lmtp=True)


@pytest.fixture(scope="module")
def aiosmtpd_lmtp_single_reply() -> Iterator[AioServer]:
    """aiosmtpd's LMTP, with one reply after the data as aiosmtpd gives it."""
    yield from _aiosmtpd(Mailbox(lmtp=True, per_recipient=False), lmtp=True)


@pytest.mark.parametrize("kind", KINDS)
def test_aiosmtpd_cleartext(aiosmtpd_smtp: AioServer, kind: str, request: pytest.FixtureRequest) -> None:
    server = aiosmtpd_smtp
    server.mailbox.take()
    dots, _ = message(DOTS_BODY, eol="\n")
    utf8, _ = message(UTF8_BODY, subject="Gr\u00fc\u00dfe", to=UTF8_RCPT)
    outcome = drive(
        kind,
        (server.host, server.port),
        options(tls=TLSMode.NEVER, chunking=True),  # CHUNKING is not offered: DATA it is
        [Job(dots, ["rcpt@test.example", "unknown@test.example", "other@test.example"]), Job(utf8, [UTF8_RCPT])],
    )
    first, second = delivered(outcome)
    assert first.accepted == ("rcpt@test.example", "other@test.example")
    assert (first.refused["unknown@test.example"].code, first.refused["unknown@test.example"].enhanced) == (550, "5.1.1")
    # aiosmtpd answers pipelined input but does not offer PIPELINING: one at a time.
    assert [(r.pipelined, r.chunked, r.smtputf8) for r in (first, second)] == [(False, False, False), (False, False, True)]
    assert outcome.session.tls_method is None and outcome.session.auth_mechanism is None
    got_dots, got_utf8 = server.mailbox.take()
    assert got_dots.content == peerlib.normalised(dots)
    assert got_dots.recipients == ["rcpt@test.example", "other@test.example"]
    assert f"SIZE={len(dots)}" in got_dots.mail_options and "SMTPUTF8" not in got_dots.mail_options
    assert got_utf8.content == peerlib.normalised(utf8) and got_utf8.recipients == [UTF8_RCPT]
    assert {"SMTPUTF8", "BODY=8BITMIME"} <= set(got_utf8.mail_options)
    assert not got_dots.tls and not got_utf8.tls
    record(request, server.name, kind, "cleartext, SMTPUTF8, refused recipient, dot-stuffing", outcome)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_aiosmtpd_starttls_auth(
    aiosmtpd_smtp: AioServer, kind: str, mechanism: str, request: pytest.FixtureRequest
) -> None:
    server = aiosmtpd_smtp
    server.mailbox.take()
    server.mailbox.mechanisms.clear()
    sent, _ = message("Over STARTTLS, authenticated.\r\n")
    outcome = drive(
        kind,
        (server.host, server.port),
        options(tls=TLSMode.REQUIRED, username="test", password="secret", mechanism=mechanism),
        [Job(sent, ["rcpt@test.example"])],
    )
    (result,) = delivered(outcome)
    assert outcome.session.tls_method == "STARTTLS" and outcome.session.auth_mechanism == mechanism
    assert server.mailbox.mechanisms == [mechanism]  # what aiosmtpd ran
    (arrival,) = server.mailbox.take()
    assert arrival.content == peerlib.normalised(sent) and arrival.tls and arrival.authenticated
    assert (result.pipelined, result.chunked, result.smtputf8) == (False, False, False)
    record(request, server.name, kind, f"STARTTLS + AUTH {mechanism}", outcome)


@pytest.mark.parametrize("kind", KINDS)
def test_aiosmtpd_implicit_tls(aiosmtpd_implicit: AioServer, kind: str, request: pytest.FixtureRequest) -> None:
    server = aiosmtpd_implicit
    server.mailbox.take()
    sent, _ = message("TLS from the first byte.\r\n")
    outcome = drive(kind, (server.host, server.port), options(tls=TLSMode.IMPLICIT), [Job(sent, ["rcpt@test.example"])])
    delivered(outcome)
    assert outcome.session.tls_method == "implicit"
    assert "C: STARTTLS" not in outcome.transcript
    (arrival,) = server.mailbox.take()
    assert arrival.content == peerlib.normalised(sent) and arrival.tls
    record(request, server.name, kind, "implicit TLS", outcome)


@pytest.mark.parametrize("kind", KINDS)
def test_aiosmtpd_lmtp(aiosmtpd_lmtp: AioServer, kind: str, request: pytest.FixtureRequest) -> None:
    server = aiosmtpd_lmtp
    server.mailbox.take()
    first, _ = message(DOTS_BODY, eol="\n")
    second, _ = message(UTF8_BODY, subject="Gr\u00fc\u00dfe", to=UTF8_RCPT)
    everyone = ["a@test.example", "unknown@test.example", "full@test.example", "b@test.example"]
    outcome = drive(
        kind,
        (server.host, server.port),
        options(lmtp=True, tls=TLSMode.NEVER),
        [Job(first, everyone), Job(second, [UTF8_RCPT, "c@test.example"])],
    )
    one, two = delivered(outcome)
    assert "C: LHLO client.test.example" in outcome.transcript
    # Each recipient's own reply (RFC 2033 §4.2): at RCPT, or after the data.
    assert one.accepted == ("a@test.example", "b@test.example")
    assert [(r, one.replies[r].code) for r in everyone] == [
        ("a@test.example", 250), ("unknown@test.example", 550), ("full@test.example", 452), ("b@test.example", 250)
    ]
    assert one.replies["a@test.example"].text == ("<a@test.example> delivered",)
    assert one.replies["full@test.example"].enhanced == "4.2.2"
    assert set(one.refused) == {"unknown@test.example", "full@test.example"}
    assert two.accepted == (UTF8_RCPT, "c@test.example") and two.smtputf8
    got_one, got_two = server.mailbox.take()
    assert got_one.content == peerlib.normalised(first)
    assert got_one.recipients == ["a@test.example", "full@test.example", "b@test.example"]
    assert got_two.content == peerlib.normalised(second)
    record(request, server.name, kind, "LMTP, a reply per recipient (handler-made, see aiosmtpd#517)", outcome)


def test_peer_aiosmtpd_lmtp_gives_one_reply_for_all_recipients(aiosmtpd_lmtp_single_reply: AioServer) -> None:
    """aiosmtpd's LMTP server (1.4.6) answers the end of data once, whatever
    the number of accepted recipients; RFC 2033 §4.2 wants one reply per
    accepted RCPT, in order (aio-libs/aiosmtpd#517, open).  A client that
    counts the replies, as it must, waits for the second one until its
    timeout.  One recipient works: one reply is then the right count."""
    server = aiosmtpd_lmtp_single_reply
    server.mailbox.take()
    one, _ = message("One recipient.\r\n")
    two, _ = message("Two recipients.\r\n")
    patience = Timeouts(connect=30, greeting=30, command=30, data_start=30, data_block=30, data_end=5)
    outcome = drive(
        "sync",
        (server.host, server.port),
        options(lmtp=True, tls=TLSMode.NEVER, timeouts=patience),
        [Job(one, ["a@test.example"]), Job(two, ["a@test.example", "b@test.example"])],
    )
    assert outcome.error is None, outcome.transcript
    fine, stuck = outcome.results
    assert isinstance(fine, SendResult) and fine.accepted == ("a@test.example",)
    assert isinstance(stuck, errors.Timeout) and stuck.step == "message", outcome.transcript
    # The transcript: after the second message's final dot, a single reply.
    last_dot = len(outcome.transcript) - 1 - outcome.transcript[::-1].index("C: .")
    assert outcome.transcript[last_dot + 1 :] == ["S: 250 OK"]
    # aiosmtpd took the message for both recipients all the same.
    assert [a.recipients for a in server.mailbox.take()] == [["a@test.example"], ["a@test.example", "b@test.example"]]


# == smtp-sink ====================================================================


def sink_dump(peer: peerlib.Peer, message_id: str) -> tuple[dict[str, list[str]], bytes]:
    """The transaction smtp-sink dumped for *message_id*: its own header
    records (``X-Mail-Args``...) and the message as received."""

    def find() -> bytes | None:
        for dump in peerlib.smtp_sink_dumps(peer):
            # Complete once smtp-sink wrote the empty line that ends each dump.
            if f"Message-ID: {message_id}".encode() in dump and dump.endswith(b"\n\n"):
                return dump
        return None

    dump = poll(find, f"smtp-sink dump of {message_id}")
    records: dict[str, list[str]] = {}
    lines = dump.split(b"\n")
    while lines[0].startswith(b"X-"):
        name, _, value = lines.pop(0).decode().partition(": ")
        records.setdefault(name, []).append(value)
    return records, peerlib.body_of(b"\n".join(lines)[:-1])


@pytest.fixture(scope="module")
def sink_name() -> str:
    return f"smtp-sink (Postfix {postfix_version()})"


@pytest.mark.parametrize("kind", KINDS)
def test_smtp_sink(smtp_sink: peerlib.Peer, kind: str, sink_name: str, request: pytest.FixtureRequest) -> None:
    dots, dots_id = message(DOTS_BODY, eol="\n")
    plain, plain_id = message("Second message.\r\n")
    envid = f"sink+{uuid.uuid4().hex[:8]}=1"
    dsn = DsnOptions(ret="FULL", envid=envid, notify=("SUCCESS", "FAILURE"))
    outcome = drive(
        kind,
        (smtp_sink.host, smtp_sink.port),
        options(),  # opportunistic: smtp-sink offers no STARTTLS
        [Job(dots, ["r1@test.example", "r2@test.example"], dsn=dsn), Job(plain, ["r1@test.example"])],
    )
    results = delivered(outcome)
    assert outcome.session.tls_method is None
    assert [(r.pipelined, r.chunked, r.smtputf8) for r in results] == [(True, False, False)] * 2
    caps = outcome.session.conn.capabilities
    assert caps.pipelining and caps.dsn and caps.eightbitmime
    records, content = sink_dump(smtp_sink, dots_id)
    assert content == peerlib.normalised(dots)
    xtext = envid.replace("+", "+2B").replace("=", "+3D")
    assert records["X-Mail-Args"] == [f"<{SENDER}> RET=FULL ENVID={xtext}"]
    assert records["X-Rcpt-Args"] == [f"<r{n}@test.example> NOTIFY=SUCCESS,FAILURE" for n in (1, 2)]
    records, content = sink_dump(smtp_sink, plain_id)
    assert content == peerlib.normalised(plain)
    assert records["X-Mail-Args"] == [f"<{SENDER}>"] and records["X-Client-Proto"] == ["ESMTP"]
    record(request, sink_name, kind, "PIPELINING, DSN parameters, dot-stuffing, 2 messages", outcome)


@pytest.mark.parametrize("kind", KINDS)
def test_peer_smtp_sink_answers_auth_with_250(smtp_sink: peerlib.Peer, kind: str) -> None:
    """smtp-sink answers AUTH with ``250 2.0.0 Ok``, where RFC 4954 §4 says
    a successful exchange ends with 235.  Our client takes nothing but 235
    for success: it says QUIT and reports AuthFailed with the 250."""
    outcome = drive(
        kind,
        (smtp_sink.host, smtp_sink.port),
        options(tls=TLSMode.NEVER, username="test", password="secret", mechanism="PLAIN", allow_plaintext_auth=True),
        [],
    )
    assert isinstance(outcome.error, errors.AuthFailed), outcome.transcript
    assert outcome.error.reply is not None and outcome.error.reply.code == 250
    assert outcome.session.auth_mechanism is None
    assert outcome.transcript[3:] == ["C: AUTH PLAIN ****", "S: 250 Ok", "C: QUIT", "S: 221 Bye"]


def test_peer_smtp_sink_ends_ehlo_with_an_empty_line(smtp_sink: peerlib.Peer) -> None:
    """smtp-sink's EHLO reply ends with ``250 `` and nothing after: RFC 5321
    §4.1.1.1 has the last line carry an ehlo-line (a keyword), and §4.2
    puts text, never nothing, after the space.  Our client reads the line
    and ignores it: every real keyword is still seen."""
    with socket.create_connection((smtp_sink.host, smtp_sink.port), timeout=10) as sock, sock.makefile("rb") as reader:
        assert reader.readline().startswith(b"220 ")
        sock.sendall(b"EHLO client.test.example\r\n")
        lines = [reader.readline()]
        while lines[-1][3:4] == b"-":
            lines.append(reader.readline())
        sock.sendall(b"QUIT\r\n")
        assert reader.readline().startswith(b"221")
    assert lines[-1] == b"250 \r\n"
    outcome = drive("sync", (smtp_sink.host, smtp_sink.port), options(), [])
    assert outcome.error is None
    assert outcome.session.hello_reply is not None and outcome.session.hello_reply.text[-1] == ""
    keywords = outcome.session.conn.capabilities.keywords
    assert "" not in keywords and {"PIPELINING", "8BITMIME", "AUTH", "DSN", "ENHANCEDSTATUSCODES"} <= set(keywords)


# == peer deviations (MTAs) =========================================================


def test_peer_exim_names_smtputf8_sessions_outside_the_registry(exim: peerlib.Peer) -> None:
    """Exim 4.96 writes ``with utf8esmtpsa`` in the Received field of a
    message that came with SMTPUTF8 over TLS with AUTH.  RFC 6531 §3.7.3
    and the IANA "Mail Transmission Types" registry name that ``UTF8SMTPSA``
    (no E), and RFC 5321 §4.4 says servers SHOULD NOT use unregistered
    names.  Harmless for delivery; a parser of trace fields that knows only
    the registered names will not recognise it."""
    sent, message_id = message(UTF8_BODY, to=UTF8_RCPT)
    outcome = drive(
        "sync",
        (exim.host, exim.port),
        options(tls=TLSMode.REQUIRED, username=exim.user, password=exim.password),
        [Job(sent, [UTF8_RCPT])],
    )
    (result,) = delivered(outcome)
    assert result.smtputf8 and outcome.session.tls_method == "STARTTLS" and outcome.session.auth_mechanism
    raw = stored(exim, message_id)
    assert peerlib.body_of(raw) == peerlib.normalised(sent)
    protocol = received_with(raw)
    assert protocol == exim_protocol(smtputf8=True, tls=True, auth=True) == "utf8esmtpsa"
    assert protocol.upper() != registered_protocol(smtputf8=True, tls=True, auth=True)


def test_peer_exim_labels_later_messages_smtputf8(exim: peerlib.Peer) -> None:
    """Once a transaction of a session used SMTPUTF8, Exim 4.96 labels every
    later message of the same session ``utf8esmtp`` (Received field and
    ``P=`` in its log) although their MAIL did not carry SMTPUTF8.  RFC 6531
    §3.7.3 reserves the UTF8 names for messages that used the extension;
    the parameter is per transaction (§3.4).  Exim keeps the message flag
    right (``$message_smtputf8`` is "no" for them); only the label is
    stale.  Postfix gets it right (test_postfix_chunking_smtputf8)."""
    ascii_first, first_id = message("Before.\r\n")
    utf8, utf8_id = message(UTF8_BODY, to=UTF8_RCPT)
    ascii_after, after_id = message("After.\r\n")
    outcome = drive(
        "sync",
        (exim.host, exim.port),
        options(tls=TLSMode.NEVER),
        [Job(ascii_first, ["rcpt@test.example"]), Job(utf8, [UTF8_RCPT]), Job(ascii_after, ["rcpt@test.example"])],
    )
    results = delivered(outcome)
    assert [r.smtputf8 for r in results] == [False, True, False]
    assert ["SMTPUTF8" in mail_line(outcome, n).split() for n in range(3)] == [False, True, False]
    labels = [received_with(stored(exim, m)) for m in (first_id, utf8_id, after_id)]
    assert labels == ["esmtp", "utf8esmtp", "utf8esmtp"]  # the third should be "esmtp"
    assert [exim_arrival(exim, r)["P"] for r in results] == labels
    for sent, message_id in [(ascii_first, first_id), (utf8, utf8_id), (ascii_after, after_id)]:
        assert peerlib.body_of(stored(exim, message_id)) == peerlib.normalised(sent)
