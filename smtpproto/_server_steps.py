# Theory of operation
# -------------------
# The per-command work of ``ServerConnection``, as tables keyed by the
# event's type.  ``_server`` looks a command up once and calls what it
# finds, with no layer between:
#
# * ``HELLOS`` and ``COMMAND_CHECKS``, for judging a command (``_judge``):
#   after the sequence, the hello rule and the security policy, a command's
#   own rules.  A check gathers the session facts the pure judgements of
#   ``_server_checks`` need, and returns the refusal or None; for a MAIL or
#   RCPT in its plain form (ASCII path, no parameters, within the limits) it
#   finds, without calling them, what they would find.
# * ``ACCEPTED``, for ``send``: what a reply to the awaited event (by its
#   state-table key) changes besides the state (the hello, the transaction,
#   the AUTH state).
# * ``FIXED_DEFAULTS`` and ``DEFAULTS``, for ``default_reply()``: the usual
#   reply to an event, the same for every session or made from it.
#
# Every function takes the connection as its first argument and reads and
# sets its private fields: these tables are part of ``ServerConnection``,
# in a module of their own so that each module stays small.  Only the type
# checker imports ``_server`` from here, so there is no import cycle.
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _replies as R
from . import _server_checks as checks
from ._esmtp_events import Auth, AuthCancel, AuthResponse, Bdat, EndOfChunk, Lhlo, StartTLS, Xclient
from ._events import (
    Command,
    Data,
    Ehlo,
    EndOfMessage,
    Event,
    Expn,
    Helo,
    Help,
    Mail,
    Noop,
    Quit,
    Rcpt,
    Reply,
    Rset,
    UnknownCommand,
    Vrfy,
)
from ._server_auth import AUTH_CANCELLED
from ._state import Key

if TYPE_CHECKING:
    from ._server import ServerConnection

__all__ = ["HELLOS", "COMMAND_CHECKS", "ACCEPTED", "FIXED_DEFAULTS", "DEFAULTS"]

_STARTTLS_READY = R.preformat(R.rejection(220, "2.0.0", "Ready to start TLS"))

# -- tables of the per-command work ------------------------------------------
#
# Dispatch on the event's type through these dictionaries rather than a
# chain of isinstance tests: the type is known exactly (events are never
# subclassed by the parsers).

HELLOS = frozenset({Ehlo, Helo, Lhlo})


def _check_mail(server: ServerConnection, mail: Mail) -> Reply | None:
    limit = server.config.max_transactions
    if limit is not None and server._transactions >= limit:
        return checks.TOO_MANY_TRANSACTIONS
    offer = server._offer
    if mail.parameters:
        return checks.mail_reply(mail, offer.mail_checks, offer.by_parameter, server._esmtp)
    if offer.bare_mail_checks or not mail.reverse_path.isascii():
        return checks.mail_reply(mail, offer.bare_mail_checks, offer.by_parameter, server._esmtp)
    return None  # what mail_reply finds for a plain ASCII MAIL, without the calls


def _check_rcpt(server: ServerConnection, rcpt: Rcpt) -> Reply | None:
    mail = server._mail
    assert mail is not None
    if (
        not rcpt.parameters
        and rcpt.forward_path.isascii()
        and len(server._recipients) < server.config.max_recipients
    ):
        return None  # what rcpt_reply finds for a plain ASCII RCPT, without the call
    return checks.rcpt_reply(
        rcpt,
        mail,
        len(server._recipients),
        server.config.max_recipients,
        server._offer.by_parameter,
        server._esmtp,
    )


def _check_data(server: ServerConnection, data: Data) -> Reply | None:
    mail = server._mail
    assert mail is not None
    if (mail.parameters.get("BODY") or "").upper() == "BINARYMIME":
        return checks.BINARYMIME_NEEDS_BDAT
    return None


def _check_bdat(server: ServerConnection, bdat: Bdat) -> Reply | None:
    if not server.config.chunking:
        return checks.CHUNKING_UNAVAILABLE
    if server._message_size + bdat.size > server.config.max_message_size:
        return R.MESSAGE_TOO_BIG
    return None


def _check_starttls(server: ServerConnection, command: StartTLS) -> Reply | None:
    return checks.starttls_reply(available=server.config.starttls, tls=server.tls)


def _check_auth(server: ServerConnection, command: Auth) -> Reply | None:
    offer = server._offer.auth
    auth = server._sasl()
    return checks.auth_reply(
        command,
        offered=offer.mechanisms if offer is not None else None,
        configured=bool(server.config.auth_mechanisms),
        esmtp=server._esmtp,
        authenticated=server._authenticated,
        exhausted=auth.exhausted,
        too_many=auth.failure_reply(),
    )


def _check_xclient(server: ServerConnection, command: Xclient) -> Reply | None:
    return checks.xclient_reply(command, server.trusted)


COMMAND_CHECKS: dict[type[Command], Callable[[ServerConnection, Any], Reply | None]] = {
    Mail: _check_mail,
    Rcpt: _check_rcpt,
    Data: _check_data,
    Bdat: _check_bdat,
    StartTLS: _check_starttls,
    Auth: _check_auth,
    Xclient: _check_xclient,
}


def _accepted_hello(server: ServerConnection, event: Any, reply: Reply) -> None:
    if 200 <= reply.code < 300:  # reply.is_success, without the call
        server._esmtp = type(event) is not Helo
        server.client_name = event.domain


def _accepted_mail(server: ServerConnection, event: Any, reply: Reply) -> None:
    if 200 <= reply.code < 300:  # reply.is_success, without the call
        server._mail = event
        server._transactions += 1


def _accepted_rcpt(server: ServerConnection, event: Any, reply: Reply) -> None:
    if 200 <= reply.code < 300:  # reply.is_success, without the call
        recipients = server._recipients
        if isinstance(recipients, list):
            recipients.append(event)
        else:
            server._recipients = [event]


def _accepted_xclient(server: ServerConnection, event: Any, reply: Reply) -> None:
    if 200 <= reply.code < 300:  # reply.is_success, without the call
        # Postfix: XCLIENT starts the session over, as a new client.
        server._esmtp = False
        server.client_name = None
        if server._auth is not None:
            server._auth.reset()
        server._authenticated = False


def _answered_auth(server: ServerConnection, event: Any, reply: Reply) -> None:
    # Every reply in an AUTH exchange, not only a success, moves it on.
    server._sasl().finish(reply)
    if reply.code == 235:
        server._authenticated = True


# What a reply to the awaited event (by its table key) changes besides the
# state: the hello, the transaction, the AUTH state.
ACCEPTED: dict[Key, Callable[[ServerConnection, Any, Reply], None]] = {
    Ehlo: _accepted_hello,
    Helo: _accepted_hello,
    Lhlo: _accepted_hello,
    Mail: _accepted_mail,
    Rcpt: _accepted_rcpt,
    Xclient: _accepted_xclient,
    Auth: _answered_auth,
    AuthResponse: _answered_auth,
    AuthCancel: _answered_auth,
}


def _octets_received(server: ServerConnection) -> Reply:
    return R.rejection(250, "2.0.0", f"{server._message_size} octets received")


# The usual replies that are the same for every session, by event type...
FIXED_DEFAULTS: dict[type[Event], Reply] = {
    Mail: R.SENDER_OK,
    Rcpt: R.RECIPIENT_OK,
    Data: R.START_DATA,
    EndOfMessage: R.MESSAGE_ACCEPTED,
    Rset: R.RESET_OK,
    Noop: R.OK,
    Vrfy: R.VRFY_CANNOT,
    Expn: R.EXPN_DISABLED,
    Help: R.HELP_TEXT,
    Quit: R.CLOSING,
    UnknownCommand: R.UNRECOGNIZED,
    StartTLS: _STARTTLS_READY,
}
# ... and those that depend on it.
DEFAULTS: dict[type[Event], Callable[[ServerConnection], Reply]] = {
    Ehlo: lambda s: s.ehlo_reply(),
    Lhlo: lambda s: s.ehlo_reply(),
    Helo: lambda s: s._offer.helo,
    EndOfChunk: _octets_received,
    Auth: lambda s: s.auth_reply(),
    AuthResponse: lambda s: s.auth_reply(),
    AuthCancel: lambda s: s._sasl().limited(AUTH_CANCELLED),
    Xclient: lambda s: s.greeting(),
}
