# Theory of operation
# -------------------
# Resource exhaustion (class 7).  Every bound a server keeps is probed from
# the outside, by what it answers:
#
# * a 1 MiB command line must be refused (500, RFC 5321 §4.5.3.1.4) or the
#   connection closed, and answered once: a server that cuts it into pieces
#   and answers each piece lets an attacker place a command at a cut;
# * a 1 MiB line of message data must not lose the end of data;
# * a flood of pipelined commands must be answered in order, or the
#   session closed: never stalled, never with replies dropped;
# * recipients past the server's bound get 452 (§4.5.3.1.10), and a server
#   that announced ``LIMITS RCPTMAX`` (RFC 9422) must keep to it;
# * a message over the SIZE limit (RFC 1870) is refused, declared or not,
#   and its content is read to the end, never as commands: its lines are
#   NOOPs, so a server that falls back into command mode mid-body answers
#   thousands of them;
# * mistakes are bounded: after enough errors the server answers 421 or
#   closes.
#
# Where the probe cannot tell (a server that accepts 2,000 recipients may
# still have a bound at 50,000), the verdict is inconclusive, not unsafe.
from __future__ import annotations

from .._events import Reply
from ._probe_model import Attack, Finding, attack, inconclusive, offline, safe, unsafe
from ._probe_session import codes, judge_command, open_data, ready, stopped, transaction
from ._probe_wire import NotApplicable, Wire, describe, mail_line, rcpt_line

__all__ = ["LIMIT_ATTACKS"]

_MIB = 1 << 20
_FLOOD = 5_000
_RECIPIENTS = 2_000
_ERRORS = 50


@attack("limits-long-command-line", 7, "NOOP with a 1 MiB argument, then NOOP and QUIT")
def _long_command(wire: Wire) -> Finding:
    """Resource exhaustion: a 1 MiB command line.

    RFC 5321 §4.5.3.1.4: command lines are at most 512 octets; a longer one
    gets "500 Line too long".  Unsafe when it is accepted, answered more
    than once (the server cut it into pieces it then read as commands), or
    not answered at all.  Safe when refused once, or when the server
    closes (and still accepts new connections).
    """
    ready(wire)
    line = b"NOOP " + b"x" * _MIB + b"\r\n"
    return judge_command(wire, line, must_refuse=True, what="a 1 MiB command line")


def _one_reply(wire: Wire, what: str, first: Reply | None) -> tuple[Finding | None, list[Reply]]:
    """Judge the replies to one end of data: None when exactly one came.
    A server that neither answers nor closes is stuck: unsafe."""
    if first is None:
        if wire.gone:
            return safe(f"closed the connection during {what}"), []
        if (wire.ended or "").startswith("timed out"):
            return unsafe(f"neither answered nor closed after {what} ({stopped(wire)})"), []
        return inconclusive(f"no reply to the end of {what} ({stopped(wire)})"), []
    answers = [first, *wire.quit()]
    if wire.quit_sent and len(answers) > 1 and answers[-1].code == 221:
        answers.pop()
    if len(answers) > 1:
        return unsafe(f"answered {codes(answers)} to {what}: part of it was read as commands"), answers
    return None, answers


@attack("limits-long-data-line", 7, "DATA with one 1 MiB line, then CRLF.CRLF")
def _long_data_line(wire: Wire) -> Finding:
    """Resource exhaustion: a 1 MiB line of message content.

    RFC 5321 §4.5.3.1.6 bounds text lines at 1000 octets and lets servers
    allow more.  The server may accept or refuse the message, but must
    answer its end of data once, or close.  Unsafe when it answers more
    than once, or neither answers nor closes (it lost the end of data).
    """
    transaction(wire)
    open_data(wire)
    wire.mark()
    wire.send(b"Subject: smtpproto probe, long line\r\n\r\n" + b"x" * _MIB + b"\r\n.\r\n")
    first = wire.reply()
    finding, answers = _one_reply(wire, "a message with a 1 MiB line", first)
    if finding is not None:
        return finding
    return safe(f"answered the end of data once ({describe(answers[0])})")


@attack("limits-pipeline-flood", 7, f"{_FLOOD} NOOPs and QUIT in one pipelined write")
def _flood(wire: Wire) -> Finding:
    """Resource exhaustion: a flood of pipelined commands.

    RFC 2920 §3.1: the server answers pipelined commands in order and
    never discards input it has read.  Safe when every NOOP and the QUIT
    are answered, or when the server closes early (it bounds queued work).
    Unsafe when it answers more replies than commands, or answers QUIT
    having dropped some of the NOOPs.
    """
    ready(wire)
    wire.mark()
    wire.send(b"NOOP\r\n" * _FLOOD + b"QUIT\r\n")
    answers = wire.drain(limit=_FLOOD + 2)
    quit_answered = bool(answers) and answers[-1].code == 221
    noops = answers[:-1] if quit_answered else answers
    if len(noops) > _FLOOD:
        return unsafe(f"answered {len(noops)} replies to {_FLOOD} NOOPs")
    if quit_answered and len(noops) < _FLOOD:
        return unsafe(f"answered QUIT after only {len(noops)} of {_FLOOD} NOOPs: it dropped pipelined input")
    if quit_answered:
        return safe(f"answered all {_FLOOD} NOOPs and QUIT in order")
    if wire.gone or any(reply.code == 421 for reply in noops):
        return safe(f"answered {len(noops)} of {_FLOOD} NOOPs, then ended the session ({stopped(wire)})")
    return inconclusive(f"answered {len(noops)} of {_FLOOD} NOOPs, then {stopped(wire)}")


@attack("limits-too-many-recipients", 7, f"RCPT after RCPT, up to RCPTMAX+1 or {_RECIPIENTS}")
def _recipients(wire: Wire) -> Finding:
    """Resource exhaustion: too many recipients in one transaction.

    RFC 5321 §4.5.3.1.8: at least 100 recipients must be accepted, and
    §4.5.3.1.10: past the server's bound the reply is 452.  The probe
    sends RCPT commands (pipelined in batches of 100 when offered) until
    one is refused, up to one more than the server's ``LIMITS RCPTMAX``
    (RFC 9422) or 2,000 recipients.  Unsafe when the server accepts more
    than the RCPTMAX it announced.  Inconclusive when it accepts all 2,000
    without announcing a limit (its bound may lie beyond).
    """
    caps = transaction(wire)
    limit = caps.limits.get("RCPTMAX")
    total = limit + 1 if limit is not None else _RECIPIENTS
    if total > 20_000:
        return inconclusive(f"LIMITS RCPTMAX={limit} is beyond what the probe sends")
    wire.mark()
    accepted = 1
    batch = 100 if caps.pipelining else 1
    line = rcpt_line(wire.target)
    while accepted < total:
        count = min(batch, total - accepted)
        wire.send(line * count)
        for reply in wire.replies(count):
            if not reply.is_success:
                return _refused(wire, accepted, reply)
            accepted += 1
        if wire.ended is not None:
            if wire.gone:
                return safe(f"accepted {accepted} recipients, then closed the connection")
            return inconclusive(f"accepted {accepted} recipients, then {stopped(wire)}")
    wire.quit()
    if limit is not None:
        return unsafe(f"announced LIMITS RCPTMAX={limit} but accepted {accepted} recipients")
    return inconclusive(f"accepted all {accepted} recipients; no bound seen so far")


def _refused(wire: Wire, accepted: int, reply: Reply) -> Finding:
    wire.quit()
    few = " (RFC 5321 §4.5.3.1.8 asks for at least 100)" if accepted < 100 else ""
    if reply.code == 452:
        return safe(f"accepted {accepted} recipients, then {describe(reply)}{few}")
    if reply.code == 552:
        prefer = " (RFC 5321 §4.5.3.1.10 prefers 452)"
        return safe(f"accepted {accepted} recipients, then {describe(reply)}{prefer}{few}")
    return safe(f"accepted {accepted} recipients, then refused one ({describe(reply)}){few}")


def _size_limit(size: int | None) -> int:
    if not size:
        raise NotApplicable("the server announces no SIZE limit (RFC 1870)")
    return size


@attack("limits-size-declared-over-limit", 7, "MAIL FROM with SIZE= one over the limit")
def _declared(wire: Wire) -> Finding:
    """Resource exhaustion: a MAIL that declares a size over the limit.

    RFC 1870 §6.2: a declared size over the server's fixed limit is refused
    with 552.  Unsafe when the MAIL is accepted.  Not applicable when SIZE
    announces no limit.
    """
    limit = _size_limit(ready(wire).size)
    line = mail_line(wire.target, f" SIZE={limit + 1}".encode())
    return judge_command(wire, line, must_refuse=True, what=f"MAIL with SIZE={limit + 1}")


def _oversized(limit: int, budget: int) -> bytes | None:
    """Content one line of NOOP per line, 64 KiB over *limit* (None when
    over the upload budget)."""
    size = limit + 65536
    if size > budget:
        return None
    header = b"Subject: smtpproto probe, oversized\r\n\r\n"
    return header + b"NOOP\r\n" * ((size - len(header)) // 6 + 1)


def _judge_oversized(wire: Wire, limit: int, size: int) -> Finding:
    what = f"a {size}-octet message (SIZE {limit})"
    first = wire.reply()
    if first is None and (wire.ended or "").startswith("timed out"):
        return inconclusive(f"stopped reading or answering during {what} ({stopped(wire)})")
    finding, answers = _one_reply(wire, what, first)
    if finding is not None:
        return finding
    if answers[0].is_success:
        return unsafe(f"accepted {what}: {describe(answers[0])}")
    return safe(f"read {what} to its end, then refused it ({describe(answers[0])})")


@attack("limits-size-exceeded-in-data", 7, "DATA with 64 KiB more than SIZE, every line a NOOP")
def _exceeded(wire: Wire) -> Finding:
    """Resource exhaustion: an oversized message that did not declare its size.

    The server must read it to its end and then refuse it (552, RFC 1870
    §6.3), never fall back into command mode in the middle: every line of
    the content is ``NOOP``, so a server that does answers thousands of
    them.  Unsafe when the message is accepted or its lines answered.
    Inconclusive when the limit is over the probe's upload budget.
    """
    limit = _size_limit(transaction(wire).size)
    content = _oversized(limit, wire.target.max_upload)
    if content is None:
        return inconclusive(f"SIZE {limit} is over the probe's upload budget ({wire.target.max_upload})")
    open_data(wire)
    wire.mark()
    wire.send(content + b".\r\n")
    return _judge_oversized(wire, limit, len(content))


@attack("limits-bdat-over-size", 7, "BDAT LAST with 64 KiB more than SIZE, every line a NOOP")
def _bdat(wire: Wire) -> Finding:
    """Resource exhaustion: an oversized BDAT chunk.

    RFC 3030 §2: a refused chunk's octets are still consumed, never read
    as commands.  Unsafe when the message is accepted or its lines are
    answered as commands.  Not applicable without CHUNKING or a SIZE limit.
    """
    caps = transaction(wire)
    if not caps.chunking:
        raise NotApplicable("the server does not offer CHUNKING (RFC 3030)")
    limit = _size_limit(caps.size)
    content = _oversized(limit, wire.target.max_upload)
    if content is None:
        return inconclusive(f"SIZE {limit} is over the probe's upload budget ({wire.target.max_upload})")
    wire.mark()
    wire.send(f"BDAT {len(content)} LAST\r\n".encode() + content)
    return _judge_oversized(wire, limit, len(content))


@attack("limits-too-many-errors", 7, f"up to {_ERRORS} unknown commands, one at a time")
def _errors(wire: Wire) -> Finding:
    """Resource exhaustion: a client that only makes mistakes.

    The server must bound them: after enough errors it answers 421 and
    closes (RFC 5321 §3.8 allows the 421), or just closes.  Unsafe when
    the session is still open after fifty errors.
    """
    ready(wire)
    wire.mark()
    for count in range(1, _ERRORS + 1):
        wire.send(b"XPROBE-BOGUS\r\n")
        reply = wire.reply()
        if reply is None:
            if wire.gone:
                return safe(f"closed the connection after {count - 1} errors")
            return inconclusive(f"after {count - 1} errors: {stopped(wire)}")
        if reply.code == 421:
            return safe(f"answered 421 after {count} errors")
        if reply.code < 400:
            return inconclusive(f"answered an unknown command with {describe(reply)}")
    wire.quit()
    return unsafe(f"still open after {_ERRORS} errors in a row")


LIMIT_ATTACKS: tuple[Attack, ...] = (
    _long_command,
    _long_data_line,
    _flood,
    _recipients,
    _declared,
    _exceeded,
    _bdat,
    _errors,
    offline(
        "limits-slow-sender", 7,
        "Slow senders: the server's idle timeout must be bounded (RFC 5321 "
        "§4.5.3.2 asks for at least 5 minutes per command).  Waiting that long "
        "is beyond a probe run.",
        "the probe does not wait for the server's idle timeout (minutes, RFC 5321 §4.5.3.2)",
    ),
)
