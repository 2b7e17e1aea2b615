# Theory of operation
# -------------------
# The attacks on command lines: STARTTLS injection (class 3), parser abuse
# (class 5), the server's side of downgrade (class 8), and the entries for
# the two classes that concern clients only (2 and 4).
#
# STARTTLS (RFC 3207 §4, §5; CVE-2011-0411 and its many relatives): the
# probe pipelines a command behind STARTTLS in the same packet.  A server
# may refuse the STARTTLS or close; if it answers 220, the probe completes
# the handshake and sends QUIT: any reply under TLS before the 221 answered
# the cleartext command as if it had come over TLS, which is unsafe.  A
# command sent between the 220 and the handshake, a second STARTTLS under
# TLS, and STARTTLS offered again after the handshake are checked too.
#
# Parser abuse: one hostile command line on a fresh session, then NOOP and
# QUIT (``judge_command``).  Lines the RFC grammar forbids must be refused
# (a 2xx is unsafe); over-long but well-formed values may be accepted or
# refused, but must be answered once; a line answered twice was split.
from __future__ import annotations

from collections.abc import Callable

from .._esmtp_events import StartTLS
from .._commands import format_command
from ..extensions import Capabilities
from ._probe_model import Attack, Finding, attack, inconclusive, offline, safe, unsafe
from ._probe_session import codes, ehlo, greet, hello, judge_command, ready, secure, stopped
from ._probe_wire import NotApplicable, ProbeTarget, Wire, describe, mail_line, rcpt_line

__all__ = ["STARTTLS_ATTACKS", "PARSER_ATTACKS", "DOWNGRADE_ATTACKS", "CLIENT_ONLY"]


def _needs_starttls(caps: Capabilities) -> None:
    if not caps.starttls:
        raise NotApplicable("the server does not offer STARTTLS")


def _pipelined(name: str, make: Callable[[ProbeTarget], bytes], label: str) -> Attack:
    def body(wire: Wire) -> Finding:
        _needs_starttls(hello(wire))
        wire.mark()
        wire.send(format_command(StartTLS()) + make(wire.target))
        first = wire.reply()
        if first is None:
            if wire.gone:
                return safe(f"closed the connection on STARTTLS with {label} behind it")
            return inconclusive(f"no reply to STARTTLS ({stopped(wire)})")
        if first.code != 220:
            return safe(f"refused STARTTLS with {label} pipelined behind it ({describe(first)})")
        problem = wire.start_tls()
        if problem is not None:
            if wire.gone:
                return safe(f"closed the connection after its 220 instead of running {label}")
            return inconclusive(problem)
        answers = wire.quit()
        if wire.quit_sent and answers and answers[-1].code == 221:
            answers = answers[:-1]
        if answers:
            return unsafe(f"answered {codes(answers)} under TLS to {label} sent in cleartext")
        return safe(f"discarded the cleartext {label}: under TLS only QUIT was answered")

    body.__doc__ = f"""STARTTLS injection: {label} pipelined behind STARTTLS.

    Both go in one packet.  RFC 3207 §4.2: the server must discard any
    knowledge obtained from the client before the handshake; a command
    read from the cleartext buffer after it runs with TLS's authority.
    Unsafe when the server, having answered 220, answers anything but
    QUIT under TLS.  Safe when it refuses the STARTTLS, closes, or
    answers only QUIT.
    """
    return attack(f"starttls-pipelined-{name}", 3, f"STARTTLS + {label} in one packet, TLS, QUIT")(body)


@attack("starttls-command-before-handshake", 3, "STARTTLS, then RSET in cleartext before the handshake")
def _before_handshake(wire: Wire) -> Finding:
    """STARTTLS injection: a command sent after the 220, before the handshake.

    The server's TLS layer must read those bytes as (bad) TLS, never as a
    command.  Unsafe when the handshake succeeds and the server answers
    the RSET under TLS.  Safe when the handshake fails or only QUIT is
    answered.
    """
    _needs_starttls(hello(wire))
    wire.mark()
    wire.send(format_command(StartTLS()))
    first = wire.reply()
    if first is None or first.code != 220:
        return inconclusive(f"STARTTLS was not answered 220 ({describe(first) if first else stopped(wire)})")
    wire.send(b"RSET\r\n")
    problem = wire.start_tls()
    if problem is not None:
        if wire.tls_untrusted:
            return inconclusive(problem)
        return safe(f"the handshake failed on the cleartext RSET ({problem})")
    answers = wire.quit()
    if wire.quit_sent and answers and answers[-1].code == 221:
        answers = answers[:-1]
    if answers:
        return unsafe(f"answered {codes(answers)} under TLS to an RSET sent in cleartext")
    return safe("ignored the cleartext RSET; under TLS only QUIT was answered")


@attack("starttls-twice", 3, "STARTTLS, TLS, EHLO, STARTTLS again")
def _twice(wire: Wire) -> Finding:
    """STARTTLS under TLS.

    RFC 3207 §4.2: after the handshake the server "MUST NOT return the
    STARTTLS extension in response to an EHLO command", and a second
    STARTTLS must be refused.  Unsafe when STARTTLS is offered again or a
    second one is answered 220.
    """
    caps = hello(wire)
    _needs_starttls(caps)
    again = secure(wire, caps)
    wire.mark()
    wire.send(format_command(StartTLS()))
    reply = wire.reply()
    if reply is not None and reply.code == 220:
        return unsafe("answered 220 to a second STARTTLS under TLS")
    if again.starttls:
        return unsafe("offers STARTTLS again in its EHLO reply under TLS (RFC 3207 §4.2)")
    if reply is None:
        return safe(f"does not offer STARTTLS under TLS, and the connection {stopped(wire)} on a second one")
    wire.quit()
    return safe(f"does not offer STARTTLS under TLS and refused a second one ({describe(reply)})")


STARTTLS_ATTACKS: tuple[Attack, ...] = (
    _pipelined("rset", lambda t: b"RSET\r\n", "RSET"),
    _pipelined("mail", mail_line, "MAIL FROM"),
    _pipelined("ehlo", lambda t: b"EHLO injected.example\r\n", "EHLO"),
    _before_handshake,
    _twice,
)


# -- parser abuse ----------------------------------------------------------------

Line = Callable[[ProbeTarget, Capabilities], bytes]


def _parser(name: str, make: Line, what: str, rfc: str, *, must_refuse: bool = True,
            needs: str | None = None, before_ehlo: bool = False) -> Attack:
    def body(wire: Wire) -> Finding:
        if before_ehlo:
            greet(wire)
            caps = Capabilities.none()
        else:
            caps = ready(wire)
        if needs is not None and needs not in caps:
            raise NotApplicable(f"the server does not offer {needs}")
        return judge_command(wire, make(wire.target, caps), must_refuse=must_refuse, what=what)

    rule = (
        "Unsafe when it is accepted (2xx), answered more than once (the line was "
        "split), or not answered at all."
        if must_refuse else
        "The server may accept or refuse it, but must answer it once: unsafe when it "
        "is not answered or answered more than once."
    )
    body.__doc__ = f"Parser abuse: {what}.\n\n{rfc} {rule}"
    sent = f"{what}, then NOOP and QUIT"
    return attack(f"parser-{name}", 5, sent)(body)


def _mail(tail: bytes) -> Line:
    return lambda target, caps: mail_line(target, tail)


def _mail_path(path: bytes, tail: bytes = b"") -> Line:
    return lambda target, caps: b"MAIL FROM:<" + path + b">" + tail + b"\r\n"


def _joined(separator: bytes) -> Line:
    return lambda target, caps: mail_line(target)[:-2] + separator + rcpt_line(target)


PARSER_ATTACKS: tuple[Attack, ...] = (
    _parser("bare-cr-in-command", _joined(b"\r"), "MAIL and RCPT joined by a bare CR",
            "RFC 5321 §2.3.8: CRLF is the only line ending; a bare CR inside a command is an error."),
    _parser("bare-lf-in-command", _joined(b"\n"), "MAIL and RCPT joined by a bare LF",
            "RFC 5321 §2.3.8: a bare LF does not end a command line."),
    _parser("nul-in-command", _joined(b"\x00"), "MAIL and RCPT joined by NUL",
            "RFC 5321 §4.1.2: no control character belongs in a command."),
    _parser("escape-in-address", _mail_path(b"probe\x1b[31m@example.org"),
            "an ANSI escape sequence in the MAIL address",
            "RFC 5321 §4.1.2: atext and qtextSMTP exclude control characters."),
    _parser("truncated-utf8", lambda t, caps: _mail_path(
                b"probe\xc3@example.org", b" SMTPUTF8" if caps.smtputf8 else b"")(t, caps),
            "a truncated UTF-8 sequence in the MAIL address",
            "RFC 6531 §3.3: addresses are valid UTF-8; without SMTPUTF8 they are ASCII."),
    _parser("ipv4-literal-out-of-range", _mail_path(b"probe@[300.0.0.1]"),
            "the address literal [300.0.0.1]",
            "RFC 5321 §4.1.3: Snum is a value from 0 to 255."),
    _parser("ipv6-literal-malformed", _mail_path(b"probe@[IPv6:1::2::3]"),
            "the address literal [IPv6:1::2::3]",
            "RFC 5321 §4.1.3: IPv6-comp allows one '::'."),
    _parser("unbalanced-quote", _mail_path(b'"probe@example.org'),
            "an unbalanced quote in the MAIL address",
            "RFC 5321 §4.1.2: Quoted-string = DQUOTE *QcontentSMTP DQUOTE."),
    _parser("unknown-parameter", _mail(b" XPROBE-UNKNOWN=1"), "an unknown MAIL parameter",
            "RFC 5321 §4.1.1.11: an unrecognised parameter gets 555."),
    _parser("duplicate-parameter", _mail(b" RET=FULL RET=HDRS"), "RET given twice on MAIL",
            "RFC 3461 §4: each DSN parameter may appear at most once.", needs="DSN"),
    _parser("xtext-decoding-to-crlf", _mail(b" ENVID=probe+0D+0AX-Injected:+20yes"),
            "an ENVID whose xtext decodes to CR LF",
            "RFC 3461 §4.4: the ENVID value is printable US-ASCII; CR LF in it would "
            "inject a header field into a DSN.", needs="DSN"),
    _parser("8bit-verb", lambda t, caps: b"\xff\xfeNOOP\r\n", "a command verb of 8-bit octets",
            "RFC 5321 §4.1.1: verbs are ASCII letters; the reply is 500."),
    _parser("rset-with-argument", lambda t, caps: b"RSET now\r\n", "RSET with an argument",
            "RFC 5321 §4.1.1.5: rset = \"RSET\" CRLF; an argument is a 501."),
    _parser("control-char-in-ehlo", lambda t, caps: b"EHLO probe\x01.example\r\n",
            "a control character in the EHLO name",
            "RFC 5321 §4.1.1.1: the EHLO argument is a Domain or address literal; a "
            "control character would reach the Received: field.", before_ehlo=True),
    _parser("long-local-part", _mail_path(b"a" * 300 + b"@example.org"),
            "a 300-octet local part",
            "RFC 5321 §4.5.3.1.1 sets 64 octets and lets servers allow more.", must_refuse=False),
    _parser("long-domain", _mail_path(b"probe@" + (b"a" * 63 + b".") * 5 + b"example"),
            "a 333-octet domain",
            "RFC 5321 §4.5.3.1.2 sets 255 octets and lets servers allow more.", must_refuse=False),
    _parser("shell-metacharacters", _mail_path(b'"|touch probe;$(id)`id`"@example.org'),
            "shell metacharacters in a quoted local part",
            "The address is valid (RFC 5321 §4.1.2 qtextSMTP); it must be treated as data. "
            "The probe cannot see whether the server expanded it, only that it answered.",
            must_refuse=False),
)


# -- downgrade, and the classes that concern clients ------------------------------------

_CLEARTEXT_MECHANISMS = ("PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER")


@attack("downgrade-auth-offered-in-cleartext", 8, "EHLO before STARTTLS")
def _cleartext_offer(wire: Wire) -> Finding:
    """Downgrade, the server's side: AUTH mechanisms that carry a password
    or token in the clear, offered before STARTTLS.

    RFC 4954 §4: a server must be able to refuse plaintext password
    mechanisms until STARTTLS.  A server that offers STARTTLS and also
    PLAIN or LOGIN over cleartext invites clients to leak their password.
    Not applicable when the server does not offer STARTTLS.
    """
    greet(wire)
    wire.mark()
    caps = ehlo(wire)
    _needs_starttls(caps)
    offered = [m for m in caps.auth_mechanisms if m in _CLEARTEXT_MECHANISMS]
    wire.quit()
    if offered:
        return unsafe(f"offers AUTH {' '.join(offered)} in cleartext although it offers STARTTLS")
    if caps.auth_mechanisms:
        return safe(f"offers only {' '.join(caps.auth_mechanisms)} before STARTTLS")
    return safe("offers no AUTH before STARTTLS")


DOWNGRADE_ATTACKS: tuple[Attack, ...] = (_cleartext_offer,)

CLIENT_ONLY: tuple[Attack, ...] = (
    offline(
        "outbound-smuggling", 2,
        "Outbound smuggling: a client must normalise or refuse bare CR and LF in a "
        "message and stuff every line.  This concerns what a client sends; a server "
        "probe has nothing to test (smtpproto's client is tested in its own suite).",
        "concerns clients: what they send, not what a server accepts",
    ),
    offline(
        "caller-command-injection", 4,
        "Command injection from the caller: a client library must refuse CR, LF and "
        "NUL in every argument before writing a byte.  This concerns client libraries; "
        "a server probe has nothing to test.",
        "concerns client libraries: their arguments, not a server",
    ),
)
