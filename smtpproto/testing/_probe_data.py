# Theory of operation
# -------------------
# The attacks on message content: inbound smuggling (class 1) and abrupt
# disconnects (class 9).
#
# Smuggling (RFC 5321 §4.1.1.4: "the end of mail data indication ... is
# <CRLF>.<CRLF>"; §2.3.8: CRLF is the only line ending).  After a 354 the
# probe sends one payload: a first message, a *fake* end made of bare CR,
# bare LF, NUL and a dot, a complete second transaction (MAIL, RCPT, DATA,
# a message) and finally the real ``CRLF.CRLF``.  A server that reads the
# fake end as data, or refuses the message, answers once.  A server that
# ends the data at the fake end answers the smuggled commands too: more
# than one reply before the 221 to QUIT (a 354 among them) is unsafe.  The
# fake ends are every pairing of CRLF, CR and LF around the dot except the
# real one, and the NUL variants that fooled servers in 2023-2024.
#
# Disconnects: the probe cannot see a server's storage, so it checks what
# it can see.  It cuts a message short (after the 354, mid-line, after
# ``CRLF.`` or ``CRLF.CR``, inside a BDAT chunk) with a half-close, so the
# server reads end of file while the probe still reads its answers.  A 2xx
# after that would mean the server took a message it never received whole
# as complete: unsafe.  Anything else is safe as far as the probe can tell,
# and the reason says so.
from __future__ import annotations

from .._events import Reply
from ._probe_model import Attack, Finding, attack, inconclusive, safe, unsafe
from ._probe_session import codes, open_data, stopped, transaction
from ._probe_wire import NotApplicable, ProbeTarget, Wire, describe, mail_line, rcpt_line

__all__ = ["SMUGGLING", "DISCONNECTS", "FIRST_MESSAGE", "SMUGGLED_MESSAGE"]

#: The message before the fake end.
FIRST_MESSAGE = b"Subject: smtpproto probe\r\n\r\nfirst message"
#: The message of the smuggled transaction (its header marks it).
SMUGGLED_MESSAGE = b"Subject: smtpproto probe, smuggled\r\n\r\nsmuggled message\r\n"

# (name, bytes, how the docs write it)
_FAKE_ENDS: tuple[tuple[str, bytes, str], ...] = (
    ("lf-dot-lf", b"\n.\n", "LF.LF"),
    ("lf-dot-crlf", b"\n.\r\n", "LF.CRLF"),
    ("crlf-dot-lf", b"\r\n.\n", "CRLF.LF"),
    ("cr-dot-cr", b"\r.\r", "CR.CR"),
    ("cr-dot-lf", b"\r.\n", "CR.LF"),
    ("lf-dot-cr", b"\n.\r", "LF.CR"),
    ("cr-dot-crlf", b"\r.\r\n", "CR.CRLF"),
    ("crlf-dot-cr", b"\r\n.\r", "CRLF.CR"),
    ("crcrlf-dot-crcrlf", b"\r\r\n.\r\r\n", "CR CRLF.CR CRLF"),
    ("crlf-nul-dot-crlf", b"\r\n\x00.\r\n", "CRLF NUL.CRLF"),
    ("crlf-dot-nul-crlf", b"\r\n.\x00\r\n", "CRLF.NUL CRLF"),
    ("lf-nul-dot-lf", b"\n\x00.\n", "LF NUL.LF"),
    ("lf-dot-nul-lf", b"\n.\x00\n", "LF.NUL LF"),
)


def _smuggled_transaction(target: ProbeTarget) -> bytes:
    return mail_line(target) + rcpt_line(target) + b"DATA\r\n" + SMUGGLED_MESSAGE + b".\r\n"


def _without_quit(wire: Wire, answers: list[Reply]) -> list[Reply]:
    if wire.quit_sent and len(answers) > 1 and answers[-1].code == 221:
        return answers[:-1]
    return answers


def _smuggle(name: str, fake: bytes, label: str) -> Attack:
    def body(wire: Wire) -> Finding:
        transaction(wire)
        open_data(wire)
        wire.mark()
        wire.send(FIRST_MESSAGE + fake + _smuggled_transaction(wire.target))
        first = wire.reply()
        if first is None:
            if wire.gone:
                return safe(f"closed the connection without ending the data at {label}")
            return inconclusive(f"no reply to the end of data ({stopped(wire)})")
        answers = _without_quit(wire, [first, *wire.quit()])
        if len(answers) > 1:
            return unsafe(
                f"ended the data at {label} and answered the smuggled commands: {codes(answers)}"
            )
        if first.is_success:
            return safe(f"read {label} as data: one reply ({describe(first)}) to the whole payload")
        return safe(f"refused the message ({describe(first)}); nothing after {label} was a command")

    body.__doc__ = f"""Inbound smuggling with the fake end of data {label}.

    After DATA's 354 the probe sends a message, then ``{label}``, then a
    whole second transaction (MAIL, RCPT, DATA, a message) and the real
    ``CRLF.CRLF`` (RFC 5321 §4.1.1.4).  Unsafe when the server answers more
    than once before QUIT: it ended the data at the fake end and ran the
    smuggled commands.  Safe when it answers once (the payload was one
    message, or it was refused) or closes the connection.
    """
    return attack(f"smuggle-{name}", 1, f"message, {label}, MAIL/RCPT/DATA/message, CRLF.CRLF")(body)


SMUGGLING: tuple[Attack, ...] = tuple(_smuggle(*end) for end in _FAKE_ENDS)


def _cut(name: str, tail: bytes, label: str, *, bdat: bool = False) -> Attack:
    def body(wire: Wire) -> Finding:
        caps = transaction(wire)
        if bdat:
            if not caps.chunking:
                raise NotApplicable("the server does not offer CHUNKING (RFC 3030)")
            wire.mark()
            wire.send(b"BDAT 1000 LAST\r\n" + tail)
        else:
            open_data(wire)
            wire.mark()
            wire.send(tail)
        wire.half_close()
        answers = wire.drain()
        accepted = [reply for reply in answers if reply.is_success]
        if accepted:
            return unsafe(
                f"answered {describe(accepted[0])} to a message cut off {label}: "
                "it took an incomplete message as complete"
            )
        if (wire.ended or "").startswith("timed out"):
            return inconclusive(f"neither answered nor closed after end of file ({stopped(wire)})")
        answered = f"answered {codes(answers)}; " if answers else ""
        return safe(
            f"{answered}the connection {stopped(wire)} and the message cut off {label} was not "
            "accepted (the probe cannot see whether the server stored anything)"
        )

    body.__doc__ = f"""Abrupt disconnect: a message cut off {label}.

    The probe half-closes the connection (the server reads end of file and
    can still answer).  Unsafe when the server answers 2xx: it took a
    message that never ended as complete (RFC 5321 §4.1.1.4: the end of
    data is ``CRLF.CRLF``).  The probe cannot see the server's storage: a
    server that stores the partial message without saying so is not caught.
    """
    return attack(f"disconnect-{name}", 9, f"MAIL, RCPT, DATA, {label}, end of file")(body)


DISCONNECTS: tuple[Attack, ...] = (
    _cut("after-354", b"", "right after the 354"),
    _cut("mid-line", b"Subject: smtpproto probe\r\n\r\nhalf a li", "in the middle of a line"),
    _cut("after-crlf-dot", b"Subject: smtpproto probe\r\n\r\nbody\r\n.", "after CRLF ."),
    _cut("after-crlf-dot-cr", b"Subject: smtpproto probe\r\n\r\nbody\r\n.\r", "after CRLF . CR"),
    _cut("mid-bdat", b"Subject: smtpproto probe\r\n\r\n" + b"x" * 100, "inside BDAT 1000 LAST", bdat=True),
)
