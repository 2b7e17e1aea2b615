# Theory of operation
# -------------------
# The server's judgement of a well-formed command, as pure functions of the
# command and the session facts they need.  ``_server`` calls them in a
# fixed order (sequence, then security policy, then the command's own
# rules) and turns the first refusal into a ``CommandRejected`` event whose
# reply the application sends.
#
# Every reply here is the RFC's: 503 for a bad sequence (RFC 5321 §4.1.4),
# 554 for DATA without recipients (§3.3), 530 5.7.0 while TLS (RFC 3207 §4)
# or AUTH (RFC 4954 §6) is required, 538 5.7.11 for AUTH over cleartext,
# 504 5.5.4 for an unknown SASL mechanism, 555 for unknown MAIL/RCPT
# parameters (§4.1.1.11), 553 5.6.7 for non-ASCII without SMTPUTF8
# (RFC 6531 §3.5), 452 4.5.3 for too many recipients (§4.5.3.1.10).
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from . import _replies as R
from ._esmtp_events import Auth, Bdat, Lhlo, StartTLS, Xclient
from ._events import Command, Data, Ehlo, Helo, Help, Mail, Noop, Quit, Rcpt, Reply, Rset
from ._state import State
from ._syntax import GrammarError, quoted
from .extensions import Extension

__all__ = [
    "sequence_reply",
    "parameters_reply",
    "mail_reply",
    "rcpt_reply",
    "NEEDS_TLS",
    "NEEDS_AUTH",
]

NEEDS_TLS = R.rejection(530, "5.7.0", "Must issue a STARTTLS command first")
NEEDS_AUTH = R.rejection(530, "5.7.0", "Authentication required")
AUTH_NEEDS_TLS = R.rejection(538, "5.7.11", "Encryption required for requested authentication mechanism")
AUTH_UNAVAILABLE = R.rejection(502, "5.5.1", "AUTH not available")
AUTH_UNKNOWN_MECHANISM = R.rejection(504, "5.5.4", "Unrecognized authentication type")
ALREADY_AUTHENTICATED = R.rejection(503, "5.5.1", "Already authenticated")
TLS_UNAVAILABLE = R.rejection(502, "5.5.1", "STARTTLS not available")
TLS_ACTIVE = R.rejection(503, "5.5.1", "TLS already active")
CHUNKING_UNAVAILABLE = R.rejection(502, "5.5.1", "BDAT not available")
BINARYMIME_NEEDS_BDAT = R.rejection(503, "5.5.1", "BODY=BINARYMIME requires BDAT")
USE_LHLO = R.rejection(500, "5.5.1", "This is an LMTP server: use LHLO")
XCLIENT_DENIED = R.rejection(550, "5.7.0", "Insufficient authorization")
TOO_MANY_TRANSACTIONS = R.rejection(452, "4.5.3", "Too many mail transactions in this session")

# RFC 3207 §4: "the server SHOULD reply to every command other than NOOP,
# EHLO, STARTTLS, or QUIT with 530"; HELO, LHLO, RSET and HELP are as
# harmless and are let through as well.
_ALLOWED_BEFORE_TLS = (Noop, Ehlo, Helo, Lhlo, StartTLS, Quit, Rset, Help)


def sequence_reply(state: State, command: Command) -> Reply:
    """The 503 (or 554) for *command* out of sequence in *state* (§4.1.4)."""
    if state is State.REFUSED:
        return R.NEED_QUIT
    if state is State.GREETED:
        return R.NEED_EHLO
    if isinstance(command, Mail):
        return R.NESTED_MAIL
    if isinstance(command, (Data, Bdat)) and state is State.MAIL:
        # RFC 2920 §3.1 / RFC 5321 §3.3: "no valid recipients".
        return R.NO_VALID_RECIPIENTS
    if state is State.READY:
        return R.NEED_MAIL
    return R.BAD_SEQUENCE


def security_reply(
    command: Command, *, require_tls: bool, tls: bool, require_auth: bool, authenticated: bool
) -> Reply | None:
    """530 while TLS or AUTH is required and missing."""
    if require_tls and not tls and not isinstance(command, _ALLOWED_BEFORE_TLS):
        return NEEDS_TLS
    if require_auth and not authenticated and isinstance(command, Mail):
        return NEEDS_AUTH
    return None


def parameters_reply(
    command: Mail | Rcpt, owned: str, by_parameter: Mapping[str, Extension], esmtp: bool
) -> Reply | None:
    """555 for parameters no offered extension owns, 501 for bad values.

    The name or value refused is shown through ``quoted`` (by the
    extension's own message for a value), so the reply stays ASCII (RFC
    5321 §4.2.1) and within 512 octets (§4.5.3.1.5).
    """
    for name, value in command.parameters.items():
        ext = by_parameter.get(name) if esmtp else None
        if ext is None or name not in getattr(ext, owned):
            return R.rejection(555, "5.5.4", f"Unsupported parameter {quoted(name)}")
        try:
            ext.check_parameter(name, value)
        except GrammarError as exc:
            return R.rejection(exc.code, exc.enhanced, R.reply_text(str(exc)))
    return None


def mail_reply(
    mail: Mail,
    mail_checks: Iterable[Callable[[Mail], Reply | None]],
    by_parameter: Mapping[str, Extension],
    esmtp: bool,
) -> Reply | None:
    """The refusal of a MAIL command, or None.

    *mail_checks* are the ``check_mail`` methods of the offered extensions
    that have a policy on a whole MAIL (``Offer.mail_checks``).
    """
    if mail.parameters:
        refusal = parameters_reply(mail, "mail_parameters", by_parameter, esmtp)
        if refusal is not None:
            return refusal
    if not mail.reverse_path.isascii() and "SMTPUTF8" not in mail.parameters:
        return R.NEEDS_SMTPUTF8
    for check in mail_checks:
        refusal = check(mail)
        if refusal is not None:
            return refusal
    return None


def rcpt_reply(
    rcpt: Rcpt,
    mail: Mail,
    recipients: int,
    max_recipients: int,
    by_parameter: Mapping[str, Extension],
    esmtp: bool,
) -> Reply | None:
    """The refusal of a RCPT command, or None."""
    if rcpt.parameters:
        refusal = parameters_reply(rcpt, "rcpt_parameters", by_parameter, esmtp)
        if refusal is not None:
            return refusal
    if not rcpt.forward_path.isascii() and "SMTPUTF8" not in mail.parameters:
        return R.NEEDS_SMTPUTF8
    if recipients >= max_recipients:
        return R.TOO_MANY_RECIPIENTS
    return None


def auth_reply(
    auth: Auth,
    *,
    offered: tuple[str, ...] | None,
    configured: bool,
    esmtp: bool,
    authenticated: bool,
    exhausted: bool,
    too_many: Reply,
) -> Reply | None:
    """The refusal of an AUTH command (RFC 4954 §4), or None.

    ``offered`` is the mechanisms in the EHLO reply, None when AUTH is not
    offered on this connection.
    """
    if not configured:
        return AUTH_UNAVAILABLE
    if offered is None:
        return AUTH_NEEDS_TLS
    if not esmtp:
        return R.NEED_EHLO
    if authenticated:
        return ALREADY_AUTHENTICATED
    if exhausted:
        return too_many
    if auth.mechanism not in offered:
        return AUTH_UNKNOWN_MECHANISM
    return None


def hello_reply(command: Command, lmtp: bool) -> Reply | None:
    """LMTP takes LHLO only; SMTP does not know LHLO (RFC 2033 §4.1)."""
    if lmtp and isinstance(command, (Ehlo, Helo)):
        return USE_LHLO
    if not lmtp and isinstance(command, Lhlo):
        return R.UNRECOGNIZED
    return None


def starttls_reply(*, available: bool, tls: bool) -> Reply | None:
    """The refusal of STARTTLS (RFC 3207 §4), or None."""
    if tls:
        return TLS_ACTIVE
    if not available:
        return TLS_UNAVAILABLE
    return None


def xclient_reply(command: Xclient, trusted: bool) -> Reply | None:
    """XCLIENT only from a peer the application trusts."""
    return None if trusted else XCLIENT_DENIED
