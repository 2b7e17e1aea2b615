# Theory of operation
# -------------------
# The caller is checked before any byte is produced: nothing goes on the
# wire that a correct server would have to refuse, or that would leak a
# secret.  That means CR, LF and NUL in an argument (attack class 4),
# parameters of extensions the server did not offer, non-ASCII addresses
# without SMTPUTF8, 8-bit content without BODY=8BITMIME, PLAIN/LOGIN over
# cleartext (attack class 8), more RCPTs or MAILs than the server's LIMITS
# (RFC 9422), command lines over their limit, and content lines over 1000
# octets, over DATA and over BDAT alike unless the body is BINARYMIME (RFC
# 5321 §4.5.3.1.6, RFC 3030 §3).  The events check their own arguments
# when made, ``_client`` checks a command's place in the state table
# against the projected state, and ``_data`` counts the lines of content
# (``bdat_line_limit`` says which limit a BDAT body has).  The rest of what
# ``ClientConnection.send`` checks is here:
#
# * Pipelining (RFC 2920 §3.1): without PIPELINING one command at a time;
#   with it, a command that must end a batch gets its reply before the next
#   is sent, and at most ``max_pending`` are outstanding
#   (``check_pipelining``).  ``BATCH_GOES_ON`` lets ``send`` skip the whole
#   check behind the commands of a transaction.
# * MAIL and RCPT (``address_line``): each parameter against the server's
#   offer (an extension the core does not model is the caller's call), a
#   non-ASCII address only with SMTPUTF8 on MAIL (RFC 6531, ``check_path``),
#   and the line within its limit, which the offered extensions raise.  A
#   checked line is kept per event, and what a checked parameter adds to
#   the limit per (verb, name, value), until the capabilities change.
#   LIMITS MAILMAX and RCPTMAX (RFC 9422) are counted in ``send``;
#   ``over_mailmax`` and ``over_rcptmax`` are its errors.
# * The other commands (``CHECKS``, by exact type): LHLO only for LMTP and
#   EHLO/HELO only for SMTP (RFC 2033 §4.1), STARTTLS, CHUNKING and XCLIENT
#   only when offered, and AUTH once, with an offered mechanism, and PLAIN,
#   LOGIN or a bearer token only over TLS unless the configuration allows
#   it (attack class 8).  DATA is refused for a BINARYMIME body
#   (``check_data``), and 8-bit content needs BODY=8BITMIME (RFC 6152 §3,
#   ``check_8bit``).
#
# Every function takes the connection as its first argument and reads its
# private fields: this is part of ``ClientConnection``, in a module of its
# own so that each module stays small.  ``send`` calls the checks of the
# commands of every message (MAIL, RCPT, DATA) directly and the others
# through ``CHECKS``, with no layer between.  Only the type checker imports
# ``_client`` from here, so there is no import cycle.
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._data import LineLimit
from ._errors import LocalProtocolError
from ._esmtp_events import Auth, AuthCancel, AuthResponse, Bdat, Lhlo, StartTLS, Xclient
from ._events import (
    Command,
    Data,
    Ehlo,
    EndOfMessage,
    Expn,
    Helo,
    Help,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Rset,
    UnknownCommand,
    Vrfy,
)
from ._syntax import GrammarError
from .extensions import owner_of
from .extensions.eightbitmime import body_type

if TYPE_CHECKING:
    from ._client import ClientConnection, Outstanding

__all__ = [
    "BATCH_GOES_ON",
    "CHECKS",
    "address_line",
    "bdat_line_limit",
    "check_8bit",
    "check_data",
    "check_path",
    "check_pipelining",
    "command_name",
    "over_mailmax",
    "over_rcptmax",
]

# RFC 2920 §3.1: "The EHLO, DATA, VRFY, EXPN, TURN, QUIT, and NOOP commands
# can only appear as the last command in a group ... since their success or
# failure produces a change of state which the client SMTP must accommodate."
# RFC 3207 §4: STARTTLS likewise.  HELP, LHLO, XCLIENT and unmodelled
# commands are treated the same way, to be safe.
_END_OF_BATCH = (
    Ehlo, Helo, Lhlo, Data, Vrfy, Expn, Quit, Noop, Help, StartTLS, Xclient, UnknownCommand,
    AuthResponse, AuthCancel,
)
# RFC 4954 §4: AUTH must end a batch, except "when the AUTH command contains
# an initial response for a SASL mechanism that allows the client to send
# data first, the SASL mechanism is known to complete in one round-trip, and
# a security layer is not negotiated by the client" (PLAIN, EXTERNAL).
_ONE_ROUND_TRIP = ("PLAIN", "EXTERNAL")
# Mechanisms that put a reusable secret on the wire (attack class 8).
_CLEARTEXT_SECRETS = ("PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER")

_END_OF_BATCH_TYPES = frozenset(_END_OF_BATCH)
# Outstanding items a batch may go on after, whatever they are (others,
# AUTH among them, are judged by check_pipelining).
BATCH_GOES_ON = frozenset((type(None), Mail, Rcpt, Rset, EndOfMessage, Bdat))
# Most RCPT lines and checked parameters a connection keeps (see
# ``address_line``); past that it forgets them and starts again.
_LINE_CACHE = 256


# -- pipelining ---------------------------------------------------------------


def check_pipelining(conn: ClientConnection, verb: str) -> None:
    """Raise unless a command (*verb*) may be sent while replies are
    outstanding (RFC 2920 §3.1)."""
    if not conn._pipelining:
        raise LocalProtocolError(
            f"cannot send {verb} while a reply is outstanding: the server did not "
            "offer PIPELINING (RFC 2920)"
        )
    if len(conn._pending) >= conn.config.max_pending:
        raise LocalProtocolError(f"more than {conn.config.max_pending} commands outstanding")
    last = conn._pending[-1]
    kind = type(last)
    ends_batch = (kind in _END_OF_BATCH_TYPES or isinstance(last, _END_OF_BATCH)) or (
        kind is Auth
        and (last.initial_response is None or last.mechanism not in _ONE_ROUND_TRIP)  # type: ignore[union-attr]
    )
    if ends_batch:
        raise LocalProtocolError(
            f"{command_name(last)} must end a pipelined batch (RFC 2920 §3.1): wait for its "
            f"reply before sending {verb}"
        )


def command_name(command: Outstanding) -> str:
    """How errors name an outstanding *command*."""
    if command is None:
        return "the greeting"
    if isinstance(command, UnknownCommand):
        return command.name
    if isinstance(command, EndOfMessage):
        return "the end of data"
    if isinstance(command, (AuthResponse, AuthCancel)):
        return "the SASL response"
    return command.verb


# -- MAIL and RCPT ------------------------------------------------------------


def address_line(conn: ClientConnection, command: Mail | Rcpt, verb: str) -> bytes:
    """The checked line of a MAIL or RCPT.

    Events are immutable, and a sender may send the same RCPT (and
    MAIL) event message after message, so its line (checked against
    the server's offer and the length limit) is kept in ``_lines`` per
    event until the capabilities change (``_send_command`` looks there
    first).  The non-ASCII check of a RCPT depends on the MAIL of the
    transaction, so it is made every time.
    """
    limit = conn.config.max_command_line + _check_parameters(conn, command)
    line = _format_address(command)
    if len(line) > limit:
        raise LocalProtocolError(f"{verb} command line of {len(line)} octets exceeds {limit}")
    lines = conn._lines
    if len(lines) >= _LINE_CACHE:
        lines.clear()
    lines[id(command)] = (command, line)
    return line


def _format_address(command: Mail | Rcpt) -> bytes:
    """``format_command(command)`` for MAIL and RCPT, without its general
    dispatch: ``MAIL FROM:<path> params`` / ``RCPT TO:<path> params``."""
    if type(command) is Mail:
        head = f"MAIL FROM:<{command.reverse_path}>"
    else:
        head = f"RCPT TO:<{command.forward_path}>"  # type: ignore[union-attr]
    params = command.parameters
    if not params:
        return f"{head}\r\n".encode()
    tail = "".join(f" {k}" if v is None else f" {k}={v}" for k, v in params.items())
    return f"{head}{tail}\r\n".encode()


def _check_parameters(conn: ClientConnection, command: Mail | Rcpt) -> int:
    """Check parameters against the server's offer, then the path; return
    the octets the offered extensions add to the line limit."""
    extra = 0
    is_mail = type(command) is Mail
    known = conn._param_extra
    for name, value in command.parameters.items():
        key = (is_mail, name, value)
        found = known.get(key)
        if found is None:
            found = _check_parameter(conn, is_mail, name, value)
            if len(known) >= _LINE_CACHE:
                known.clear()
            known[key] = found
        extra += found
    check_path(conn, command)
    return extra


def _check_parameter(conn: ClientConnection, is_mail: bool, name: str, value: str | None) -> int:
    """Check one parameter against the server's offer; return the octets
    its extension adds to the line limit."""
    owner = owner_of(name)
    if owner is None:
        return 0  # an extension the core does not model: caller's call
    for keyword in owner.requirements(name, value):
        if keyword not in conn.capabilities:
            raise LocalProtocolError(
                f"parameter {name} needs the {keyword} extension, "
                "which the server did not offer"
            )
    try:
        owner.check_parameter(name, value)
    except GrammarError as exc:
        raise LocalProtocolError(str(exc)) from None
    return owner.mail_line_extra if is_mail else owner.rcpt_line_extra


def check_path(conn: ClientConnection, command: Mail | Rcpt) -> None:
    """RFC 6531 §3.4: a non-ASCII address needs SMTPUTF8 on MAIL."""
    path = command.reverse_path if type(command) is Mail else command.forward_path  # type: ignore[union-attr]
    if path.isascii():
        return
    mail = command if type(command) is Mail else conn._sent_mail
    if not (mail and "SMTPUTF8" in mail.parameters):
        raise LocalProtocolError(
            f"non-ASCII address {path!r} needs the SMTPUTF8 parameter on MAIL (RFC 6531)"
        )


def over_mailmax(conn: ClientConnection) -> LocalProtocolError:
    """The error for a MAIL over the server's LIMITS MAILMAX (RFC 9422 §4.1)."""
    return LocalProtocolError(
        f"the server's LIMITS MAILMAX={conn._mailmax} allows no more MAIL commands"
    )


def over_rcptmax(conn: ClientConnection) -> LocalProtocolError:
    """The error for a RCPT over the server's LIMITS RCPTMAX (RFC 9422 §4.1)."""
    return LocalProtocolError(
        f"the server's LIMITS RCPTMAX={conn._rcptmax} allows no more recipients"
    )


# -- the other commands, and message content ----------------------------------


def check_data(conn: ClientConnection, command: Data, verb: str) -> None:
    """Raise if the transaction's body is BINARYMIME, which needs BDAT."""
    mail = conn._sent_mail
    if mail is not None and mail.parameters:
        body = mail.parameters.get("BODY") or ""
        if body.upper() == "BINARYMIME":
            raise LocalProtocolError("BODY=BINARYMIME content must be sent with BDAT")


def _check_hello(conn: ClientConnection, command: Command, verb: str) -> None:
    if conn.config.lmtp:
        raise LocalProtocolError(f"an LMTP client sends LHLO, not {verb} (RFC 2033 §4.1)")


def _check_lhlo(conn: ClientConnection, command: Lhlo, verb: str) -> None:
    if not conn.config.lmtp:
        raise LocalProtocolError("LHLO is for LMTP clients (ClientConfig(lmtp=True))")


def _check_starttls(conn: ClientConnection, command: StartTLS, verb: str) -> None:
    if conn.tls:
        raise LocalProtocolError("STARTTLS sent on a connection that is already TLS")
    if not conn.capabilities.starttls:
        raise LocalProtocolError("the server did not offer STARTTLS")


def _check_bdat(conn: ClientConnection, command: Bdat, verb: str) -> None:
    if not conn.capabilities.chunking:
        raise LocalProtocolError("the server did not offer CHUNKING (RFC 3030)")


def _check_xclient(conn: ClientConnection, command: Xclient, verb: str) -> None:
    if "XCLIENT" not in conn.capabilities:
        raise LocalProtocolError("the server did not offer XCLIENT")


def _check_auth(conn: ClientConnection, command: Auth) -> None:
    if conn.authenticated:
        raise LocalProtocolError("already authenticated (RFC 4954 §4: AUTH only once)")
    offered = conn.capabilities.auth_mechanisms
    if command.mechanism not in offered:
        raise LocalProtocolError(
            f"the server did not offer AUTH {command.mechanism} (offered: "
            f"{' '.join(offered) or 'no AUTH'})"
        )
    if (
        command.mechanism in _CLEARTEXT_SECRETS
        and not conn.tls
        and not conn.config.allow_plaintext_auth
    ):
        raise LocalProtocolError(
            f"AUTH {command.mechanism} would send a secret over cleartext; use STARTTLS "
            "first or set ClientConfig(allow_plaintext_auth=True)"
        )


# Checks of a command beyond its place in the state table, before any byte
# (those of MAIL, RCPT and DATA are made inline, in _send_command).
CHECKS: dict[type[Command], Callable[[ClientConnection, Any, str], None]] = {
    Ehlo: _check_hello,
    Helo: _check_hello,
    Lhlo: _check_lhlo,
    StartTLS: _check_starttls,
    Auth: lambda conn, command, verb: _check_auth(conn, command),
    Bdat: _check_bdat,
    Xclient: _check_xclient,
}


def check_8bit(conn: ClientConnection) -> None:
    """Raise unless the transaction's MAIL allows 8-bit content
    (BODY=8BITMIME or BINARYMIME, RFC 6152 §3; or SMTPUTF8)."""
    mail = conn._sent_mail
    body = (mail.parameters.get("BODY") or "").upper() if mail else ""
    if body not in ("8BITMIME", "BINARYMIME") and not (mail and "SMTPUTF8" in mail.parameters):
        raise LocalProtocolError(
            "message content has 8-bit octets but MAIL did not declare BODY=8BITMIME "
            "(RFC 6152 §3)"
        )


def bdat_line_limit(conn: ClientConnection, mail: Mail | None) -> LineLimit | None:
    """The line limit for the BDAT content of *mail*'s transaction.

    RFC 3030 §3: "BINARYMIME ... the restrictions on line length ...
    do not apply"; any other body keeps the 1000-octet limit of RFC
    5321 §4.5.3.1.6, as over DATA.
    """
    limit = conn.config.max_line_length
    if limit is None or (mail is not None and body_type(mail) == "BINARYMIME"):
        return None
    return LineLimit(limit)
