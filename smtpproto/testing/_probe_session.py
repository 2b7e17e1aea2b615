# Theory of operation
# -------------------
# The well-behaved part of every probe connection: the steps that bring a
# session to the point where an attack begins (greeting, EHLO, STARTTLS,
# AUTH, MAIL, RCPT, DATA), and the judging helpers the attacks share.
#
# Set-up steps send well-formed commands made by the core's own events and
# ``format_command``, and raise ``SetupFailed`` when the server does not go
# along (no greeting, a refused recipient, a failed login...): the attack
# is then inconclusive, never unsafe.  Credentials go only over TLS: with a
# user name the session first does STARTTLS when offered, and the SASL
# mechanism is chosen by ``smtpproto.sasl.choose_client_mechanism``, which
# picks PLAIN or LOGIN only under TLS.
#
# Judging rests on counting.  Every command gets exactly one reply (RFC
# 5321 §4.2; §4.1.1.4 for the end of data), so after an attack the probe
# sends QUIT and reads until its 221 or the end of the stream: every reply
# beyond the expected number answered something the server should have
# read as data, or a line it should not have split; and nothing is judged
# by waiting for silence.
from __future__ import annotations

import base64
from collections.abc import Callable, Iterable

from .._esmtp_events import Auth, StartTLS
from .._events import Data, Ehlo, Noop, Reply, Rset
from .._commands import format_command
from ..extensions import Capabilities
from ..sasl import SASLError, choose_client_mechanism
from ._probe_model import Finding, compact, inconclusive, safe, unsafe
from ._probe_wire import SetupFailed, Wire, describe, mail_line, rcpt_line

__all__ = [
    "expect",
    "greet",
    "ehlo",
    "hello",
    "ready",
    "secure",
    "login",
    "transaction",
    "open_data",
    "sasl_exchange",
    "codes",
    "stopped",
    "judge_command",
]


def codes(replies: Iterable[Reply]) -> str:
    """Reply codes separated by spaces (``"250 250 354"``, runs written
    ``250x1000``, at most a dozen entries), or ``"none"``."""
    entries = compact([str(r.code) for r in replies])
    if len(entries) > 12:
        entries = (*entries[:12], "...")
    return " ".join(entries) or "none"


def stopped(wire: Wire) -> str:
    """How the stream ended, for a reason text ("closed", "timed out"...)."""
    return wire.ended or "still open"


def expect(wire: Wire, what: str, reply: Reply | None, ok: Callable[[Reply], bool] | None = None) -> Reply:
    """*reply* when it is a success (or passes *ok*), else :class:`SetupFailed`."""
    if reply is None:
        raise SetupFailed(f"{what}: the connection {stopped(wire)}")
    if not (ok(reply) if ok is not None else reply.is_success):
        raise SetupFailed(f"{what} refused: {describe(reply)}")
    return reply


def greet(wire: Wire) -> Reply:
    """Connect and read a 2xx greeting."""
    wire.connect()
    return expect(wire, "greeting", wire.reply())


def ehlo(wire: Wire) -> Capabilities:
    """Say EHLO; the capabilities offered."""
    wire.send(format_command(Ehlo(domain=wire.target.helo)))
    return Capabilities.from_reply(expect(wire, "EHLO", wire.reply()))


def hello(wire: Wire) -> Capabilities:
    """Connect, read the greeting and say EHLO; the capabilities offered."""
    greet(wire)
    return ehlo(wire)


def ready(wire: Wire) -> Capabilities:
    """Connect, greeting and EHLO; then, with credentials, a trial MAIL
    (taken back with RSET) and a login if the server requires one (530,
    RFC 4954 §6, RFC 3207 §4)."""
    caps = hello(wire)
    if not wire.target.has_credentials:
        return caps
    wire.send(mail_line(wire.target))
    trial = expect(wire, "MAIL", wire.reply(), lambda r: True)
    if trial.code == 530:
        return login(wire, caps)
    if trial.is_success:
        wire.send(format_command(Rset()))
        expect(wire, "RSET", wire.reply())
    return caps


def secure(wire: Wire, caps: Capabilities) -> Capabilities:
    """STARTTLS, the handshake and EHLO again (STARTTLS must be offered)."""
    wire.send(format_command(StartTLS()))
    expect(wire, "STARTTLS", wire.reply(), lambda r: r.code == 220)
    problem = wire.start_tls()
    if problem is not None:
        raise SetupFailed(problem)
    return ehlo(wire)


def sasl_exchange(wire: Wire, line: bytes, responses: Iterable[bytes], *, rounds: int = 8) -> Reply | None:
    """Send an AUTH *line*, answer each 334 with the next of *responses*
    (raw lines without CRLF; ``*`` once they run out), and return the final
    reply (None when the stream ended)."""
    pending = iter(responses)
    if not wire.send(line):
        return wire.reply()
    for _ in range(rounds):
        reply = wire.reply()
        if reply is None or reply.code != 334:
            return reply
        if not wire.send(next(pending, b"*") + b"\r\n"):
            return wire.reply()
    return wire.reply()


def login(wire: Wire, caps: Capabilities) -> Capabilities:
    """Authenticate with the target's credentials, over TLS when offered."""
    target = wire.target
    assert target.username is not None and target.password is not None
    if not wire.tls and caps.starttls:
        caps = secure(wire, caps)
    mechanism = choose_client_mechanism(
        caps.auth_mechanisms, username=target.username, password=target.password,
        allow_plaintext=wire.tls,
    )
    if mechanism is None:
        offered = " ".join(caps.auth_mechanisms) or "no AUTH"
        raise SetupFailed(f"no AUTH mechanism to log in with (offered: {offered}; TLS: {wire.tls})")
    first = mechanism.initial_response()
    wire.send(format_command(Auth(mechanism=mechanism.name, initial_response=first)))
    for _ in range(8):
        reply = expect(wire, "AUTH", wire.reply(), lambda r: r.code in (235, 334))
        if reply.code == 235:
            return caps
        try:
            challenge = base64.b64decode(reply.text[0].encode("ascii"), validate=True)
            answer = mechanism.respond(challenge)
        except (ValueError, UnicodeEncodeError, SASLError) as exc:
            raise SetupFailed(f"AUTH {mechanism.name}: unreadable challenge ({exc})") from None
        wire.send(base64.b64encode(answer) + b"\r\n")
    raise SetupFailed(f"AUTH {mechanism.name}: too many challenges")


def transaction(wire: Wire, *, mail_tail: bytes = b"") -> Capabilities:
    """Greeting, EHLO, MAIL (with *mail_tail* before its CRLF) and RCPT, all
    accepted; when MAIL gets 530 and credentials were given, a login first.

    The probe attacks as an unauthenticated peer where the server lets it
    (an MX), and logs in only where it must (a submission server)."""
    caps = hello(wire)
    line = mail_line(wire.target, mail_tail)
    wire.send(line)
    reply = expect(wire, "MAIL", wire.reply(), lambda r: r.is_success or r.code == 530)
    if reply.code == 530:
        if not wire.target.has_credentials:
            raise SetupFailed(f"MAIL refused: {describe(reply)} (the probe needs credentials)")
        caps = login(wire, caps)
        wire.send(line)
        expect(wire, "MAIL", wire.reply())
    wire.send(rcpt_line(wire.target))
    expect(wire, "RCPT", wire.reply())
    return caps


def open_data(wire: Wire) -> None:
    """DATA, answered 354."""
    wire.send(format_command(Data()))
    expect(wire, "DATA", wire.reply(), lambda r: r.code == 354)


def judge_command(wire: Wire, line: bytes, *, must_refuse: bool, what: str) -> Finding:
    """Send one hostile command *line*, then NOOP and QUIT, and judge.

    Unsafe: more replies than commands (the server split the line), no
    answer at all (the session is stuck), or, with *must_refuse*, a 2xx or
    3xx reply to the line.  Safe: a 4xx/5xx reply (or any reply without
    *must_refuse*) or a closed connection.
    """
    wire.mark()
    wire.send(line)
    first = wire.reply()
    if first is None:
        if wire.gone:
            return safe(f"closed the connection on {what}")
        if stopped(wire).startswith("timed out"):
            return unsafe(f"did not answer {what} ({stopped(wire)})")
        return inconclusive(f"{what}: {stopped(wire)}")
    answers = [first]
    if first.code == 421:
        answers += wire.drain()  # whatever comes before the close
    else:
        wire.send(format_command(Noop()))
        second = wire.reply()
        if second is not None:
            answers.append(second)
            answers += wire.quit()
    if answers[-1].code == 221 and wire.quit_sent:
        answers.pop()
    if len(answers) > 2:
        return unsafe(f"answered {codes(answers)} to {what} and one NOOP: it split the line")
    if must_refuse and first.code < 400:
        return unsafe(f"accepted {what}: {describe(first)}")
    if len(answers) == 2:
        survived = f"; the session went on (NOOP {answers[1].code})"
    else:
        survived = f"; then the connection {stopped(wire)}"
    return safe(f"{'refused' if first.code >= 400 else 'answered'} {what} ({describe(first)}){survived}")
